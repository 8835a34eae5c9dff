//! `Cache-Control` directives (RFC 9111 section 5.2), as the edge reads them
//! beside the policy library: stale-while-revalidate, stale-if-error,
//! only-if-cached and the revalidation directives.
//!
//! Tolerant like the RFC asks: unknown directives are skipped, names are
//! case-insensitive, quoted values are unquoted, a malformed value counts as
//! absent.
//!
//! Targeted fields (`CDN-Cache-Control`, RFC 9213) are Structured Field
//! Dictionaries instead, and strict: [`targeted`] refuses a whole field
//! that does not parse or gives a known directive a value of the wrong
//! type, and the caller then ignores it.

use std::time::Duration;

use http::HeaderMap;
use http::header::CACHE_CONTROL;

/// Every directive of every `Cache-Control` field: lower-case name and raw
/// value, in order.
pub fn directives(headers: &HeaderMap) -> impl Iterator<Item = (String, Option<&str>)> {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(split_list)
        .filter_map(|d| {
            let d = d.trim();
            if d.is_empty() {
                return None;
            }
            Some(match d.split_once('=') {
                // `max-age = 5` is not the syntax (RFC 9111 section 5.2):
                // such a directive is not recognised at all.
                Some((k, v))
                    if k.ends_with(char::is_whitespace) || v.starts_with(char::is_whitespace) =>
                {
                    return None;
                }
                Some((k, v)) => (k.to_ascii_lowercase(), Some(v.trim_matches('"'))),
                None => (d.to_ascii_lowercase(), None),
            })
        })
}

/// The members of a comma-separated field value, trimmed and without empty
/// ones; commas inside quoted strings do not split.
pub fn split_list(value: &str) -> Vec<&str> {
    let mut members = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                members.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    members.push(value[start..].trim());
    members.retain(|m| !m.is_empty());
    members
}

/// `value` as a strict parser should see it: every directive name in lower
/// case (RFC 9111 section 5.2: names are case-insensitive), values
/// untouched, and directives with white space around `=` dropped (not the
/// syntax, so not recognised). For parsers that compare names exactly.
pub fn canonical(value: &str) -> String {
    split_list(value)
        .into_iter()
        .filter_map(|d| match d.split_once('=') {
            Some((name, v))
                if name.ends_with(char::is_whitespace) || v.starts_with(char::is_whitespace) =>
            {
                None
            }
            Some((name, v)) => Some(format!("{}={v}", name.to_ascii_lowercase())),
            None => Some(d.to_ascii_lowercase()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether the directive `name` (lower case) is present.
pub fn has(headers: &HeaderMap, name: &str) -> bool {
    directives(headers).any(|(k, _)| k == name)
}

/// The delta-seconds value of `name` (lower case), if present and valid.
pub fn seconds(headers: &HeaderMap, name: &str) -> Option<u64> {
    directives(headers).find_map(|(k, v)| (k == name).then(|| v?.parse().ok()).flatten())
}

/// Whether a stored response forbids serving it stale (RFC 9111 section
/// 4.2.4): must-revalidate, proxy-revalidate, no-cache or no-store.
pub fn forbids_stale(headers: &HeaderMap) -> bool {
    directives(headers).any(|(k, _)| {
        matches!(
            k.as_str(),
            "must-revalidate" | "proxy-revalidate" | "no-cache" | "no-store"
        )
    })
}

/// Whether a stored response that has been stale for `staleness` may be
/// served at once while it is revalidated in the background (RFC 5861
/// section 3): within its `stale-while-revalidate` window, counted from the
/// end of its freshness, and not against an explicit prohibition
/// (`must-revalidate`, `proxy-revalidate`, `no-cache`, `no-store`: RFC 9111
/// section 4.2.4 makes them a MUST NOT, which a MAY does not lift).
/// `s-maxage` implies proxy-revalidate only; an origin that also sends
/// `stale-while-revalidate` has said what it wants, and
/// `s-maxage=60, stale-while-revalidate=600` is how CDNs are told to do it.
pub fn stale_while_revalidate_allows(response: &HeaderMap, staleness: Duration) -> bool {
    !forbids_stale(response)
        && seconds(response, "stale-while-revalidate")
            .is_some_and(|window| staleness <= Duration::from_secs(window))
}

/// Whether a stored response that has been stale for `staleness` may be
/// served because the origin failed (unreachable, or a 5xx):
///
/// - never against `must-revalidate`, `proxy-revalidate`, `no-cache` or
///   `no-store`;
/// - within a `stale-if-error` window of the response or the request
///   (RFC 5861 section 4), counted from the end of freshness;
/// - else by the admin's default (`serve_on_error`, RFC 9111 section 4.2.4
///   lets a disconnected cache serve stale), unless the origin or the
///   client closed that door: an explicit `stale-if-error` window that has
///   passed, or `s-maxage`, which carries proxy-revalidate's semantics for
///   a shared cache (RFC 9111 section 5.2.2.10).
pub fn stale_on_error_allows(
    response: &HeaderMap,
    request: &HeaderMap,
    staleness: Duration,
    serve_on_error: bool,
) -> bool {
    if forbids_stale(response) {
        return false;
    }
    let windows = [
        seconds(response, "stale-if-error"),
        seconds(request, "stale-if-error"),
    ];
    if windows
        .iter()
        .flatten()
        .any(|&w| staleness <= Duration::from_secs(w))
    {
        return true;
    }
    let origin_said_how_long = windows.iter().any(Option::is_some);
    serve_on_error && !origin_said_how_long && seconds(response, "s-maxage").is_none()
}

/// The largest delta-seconds a cache must handle (RFC 9111 section 1.2.2).
const DELTA_SECONDS_MAX: i64 = 2_147_483_648;

/// A targeted cache-control field (RFC 9213 section 2.1) read as the
/// `Cache-Control` value it stands for: known directives only, lifetimes as
/// delta-seconds (capped at 2^31). `None` when the field is absent, empty,
/// not a Dictionary, or gives a directive a value of the wrong type: the
/// field is then ignored as a whole (section 2.1).
///
/// "Dictionary-ish": keys are read case-insensitively (Structured Fields
/// allow only lower case; `MaX-aGe` is accepted as `max-age`), everything
/// else follows RFC 8941: `OWS "," OWS` between members, no white space
/// around `=`, parameters allowed and ignored.
pub fn targeted<'a>(lines: impl IntoIterator<Item = &'a http::HeaderValue>) -> Option<String> {
    let mut joined = String::new();
    for line in lines {
        if !joined.is_empty() {
            joined.push_str(", ");
        }
        joined.push_str(line.to_str().ok()?);
    }
    let members = sf::dictionary(&joined)?;
    let mut out = Vec::new();
    for (key, item) in members {
        match key.as_str() {
            "max-age" | "s-maxage" | "stale-while-revalidate" | "stale-if-error" => {
                let sf::Item::Integer(n) = item else {
                    return None;
                };
                if n < 0 {
                    return None;
                }
                out.push(format!("{key}={}", n.min(DELTA_SECONDS_MAX)));
            }
            "no-store" | "no-cache" | "private" | "public" | "must-revalidate"
            | "proxy-revalidate" | "immutable" | "must-understand" | "no-transform" => {
                match item {
                    sf::Item::Boolean(true) => out.push(key),
                    sf::Item::Boolean(false) => {}
                    // `private="set-cookie"`: the field-name form of
                    // Cache-Control; a cache may read it as the whole
                    // directive, which is the safe side.
                    sf::Item::String | sf::Item::InnerList
                        if matches!(key.as_str(), "no-cache" | "private") =>
                    {
                        out.push(key)
                    }
                    _ => return None,
                }
            }
            // Extensions: not for the edge.
            _ => {}
        }
    }
    Some(out.join(", "))
}

/// A minimal Structured Field Dictionary parser (RFC 8941 section 4.2.2):
/// enough to tell a valid targeted field from an invalid one and read its
/// directive values. Parameters are checked for syntax and dropped.
mod sf {
    pub enum Item {
        Integer(i64),
        Decimal,
        String,
        Token,
        ByteSequence,
        Boolean(bool),
        InnerList,
    }

    struct Input<'a> {
        bytes: &'a [u8],
        pos: usize,
    }

    impl Input<'_> {
        fn peek(&self) -> Option<u8> {
            self.bytes.get(self.pos).copied()
        }
        fn eat(&mut self, b: u8) -> bool {
            let hit = self.peek() == Some(b);
            if hit {
                self.pos += 1;
            }
            hit
        }
        fn skip_sp(&mut self) {
            while self.eat(b' ') {}
        }
        fn skip_ows(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\t')) {
                self.pos += 1;
            }
        }
    }

    /// The members of `value` in order, a later duplicate key replacing an
    /// earlier one (RFC 8941); `None` when it is not a Dictionary or has no
    /// member.
    pub fn dictionary(value: &str) -> Option<Vec<(String, Item)>> {
        let mut input = Input {
            bytes: value.as_bytes(),
            pos: 0,
        };
        input.skip_sp();
        let mut members: Vec<(String, Item)> = Vec::new();
        while input.peek().is_some() {
            let key = key(&mut input)?;
            let item = if input.eat(b'=') {
                member_value(&mut input)?
            } else {
                Item::Boolean(true)
            };
            parameters(&mut input)?;
            members.retain(|(k, _)| *k != key);
            members.push((key, item));
            input.skip_ows();
            if input.peek().is_none() {
                break;
            }
            if !input.eat(b',') {
                return None;
            }
            input.skip_ows();
            // Nothing after a comma: a trailing comma is not a Dictionary.
            input.peek()?;
        }
        (!members.is_empty()).then_some(members)
    }

    fn key(input: &mut Input) -> Option<String> {
        let start = input.pos;
        match input.peek() {
            Some(b) if b.is_ascii_alphabetic() || b == b'*' => input.pos += 1,
            _ => return None,
        }
        while let Some(b) = input.peek() {
            if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'*') {
                input.pos += 1;
            } else {
                break;
            }
        }
        Some(String::from_utf8_lossy(&input.bytes[start..input.pos]).to_ascii_lowercase())
    }

    fn member_value(input: &mut Input) -> Option<Item> {
        if input.eat(b'(') {
            loop {
                input.skip_sp();
                if input.eat(b')') {
                    parameters(input)?;
                    return Some(Item::InnerList);
                }
                bare_item(input)?;
                parameters(input)?;
                if !matches!(input.peek(), Some(b' ' | b')')) {
                    return None;
                }
            }
        }
        bare_item(input)
    }

    fn parameters(input: &mut Input) -> Option<()> {
        while input.eat(b';') {
            input.skip_sp();
            key(input)?;
            if input.eat(b'=') {
                bare_item(input)?;
            }
        }
        Some(())
    }

    fn bare_item(input: &mut Input) -> Option<Item> {
        match input.peek()? {
            b'-' | b'0'..=b'9' => number(input),
            b'"' => string(input),
            b':' => {
                input.pos += 1;
                while let Some(b) = input.peek() {
                    input.pos += 1;
                    match b {
                        b':' => return Some(Item::ByteSequence),
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' | b'=' => {}
                        _ => return None,
                    }
                }
                None
            }
            b'?' => {
                input.pos += 1;
                let value = match input.peek()? {
                    b'0' => false,
                    b'1' => true,
                    _ => return None,
                };
                input.pos += 1;
                Some(Item::Boolean(value))
            }
            b if b.is_ascii_alphabetic() || b == b'*' => {
                input.pos += 1;
                while let Some(b) = input.peek() {
                    let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b);
                    if !tchar {
                        break;
                    }
                    input.pos += 1;
                }
                Some(Item::Token)
            }
            _ => None,
        }
    }

    fn number(input: &mut Input) -> Option<Item> {
        let negative = input.eat(b'-');
        let start = input.pos;
        while input.peek().is_some_and(|b| b.is_ascii_digit()) {
            input.pos += 1;
        }
        let int_digits = input.pos - start;
        if int_digits == 0 {
            return None;
        }
        if input.eat(b'.') {
            let frac_start = input.pos;
            while input.peek().is_some_and(|b| b.is_ascii_digit()) {
                input.pos += 1;
            }
            let frac_digits = input.pos - frac_start;
            return (int_digits <= 12 && (1..=3).contains(&frac_digits)).then_some(Item::Decimal);
        }
        if int_digits > 15 {
            return None;
        }
        let digits = std::str::from_utf8(&input.bytes[start..input.pos]).ok()?;
        let n: i64 = digits.parse().ok()?;
        Some(Item::Integer(if negative { -n } else { n }))
    }

    fn string(input: &mut Input) -> Option<Item> {
        input.pos += 1;
        loop {
            let b = input.peek()?;
            input.pos += 1;
            match b {
                b'"' => return Some(Item::String),
                b'\\' => {
                    let escaped = input.peek()?;
                    if !matches!(escaped, b'"' | b'\\') {
                        return None;
                    }
                    input.pos += 1;
                }
                0x20..=0x7e => {}
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(values: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for v in values {
            m.append(CACHE_CONTROL, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn reads_names_values_and_several_fields() {
        let m = h(&[
            "Max-Age=60, stale-while-revalidate=\"30\"",
            "no-cache=\"set-cookie\", ,public",
        ]);
        assert_eq!(seconds(&m, "max-age"), Some(60));
        assert_eq!(seconds(&m, "stale-while-revalidate"), Some(30));
        assert!(has(&m, "public") && has(&m, "no-cache"));
        assert!(forbids_stale(&m));
        assert_eq!(seconds(&h(&["max-age=soon"]), "max-age"), None);
        assert_eq!(seconds(&h(&["max-age"]), "max-age"), None);
        assert!(!has(&h(&["no-cacheable"]), "no-cache"));
        let quoted = h(&["no-cache=\"set-cookie, x-a\", max-age=5"]);
        assert_eq!(seconds(&quoted, "max-age"), Some(5), "comma in quotes");
        assert!(!has(&quoted, "x-a\""));
        assert!(!forbids_stale(&h(&["public, max-age=5"])));
    }

    #[test]
    fn canonical_lowercases_names_not_values_and_drops_bad_syntax() {
        assert_eq!(canonical("max-age =5, public, s-maxage= 9"), "public");
        assert_eq!(seconds(&h(&["max-age =5"]), "max-age"), None);
        assert_eq!(
            canonical("MaX-AgE=10, No-CaChE=\"Set-Cookie, X\",,"),
            "max-age=10, no-cache=\"Set-Cookie, X\""
        );
    }

    fn targeted_of(values: &[&str]) -> Option<String> {
        let values: Vec<http::HeaderValue> = values.iter().map(|v| v.parse().unwrap()).collect();
        targeted(values.iter())
    }

    #[test]
    fn a_targeted_field_reads_as_the_cache_control_it_stands_for() {
        for (field, read_as, why) in [
            (&["max-age=3600"][..], "max-age=3600", "a plain value"),
            (
                &["foobar, max-age=3600"],
                "max-age=3600",
                "extensions are skipped",
            ),
            (&["MaX-aGe=60"], "max-age=60", "keys are case-insensitive"),
            (
                &["max-age=99999999999"],
                "max-age=2147483648",
                "a delta past 2^31 is 2^31",
            ),
            (
                &["private", "no-cache, must-revalidate;x=1"],
                "private, no-cache, must-revalidate",
                "two lines are one dictionary; parameters are dropped",
            ),
            (
                &["max-age=10, stale-while-revalidate=30, stale-if-error=60"],
                "max-age=10, stale-while-revalidate=30, stale-if-error=60",
                "the stale extensions are kept",
            ),
            (
                &["no-store=?0, public"],
                "public",
                "a false boolean is absent",
            ),
            (
                &["max-age=1, max-age=20"],
                "max-age=20",
                "the last of a repeated key wins (RFC 8941)",
            ),
        ] {
            assert_eq!(targeted_of(field).as_deref(), Some(read_as), "{why}");
        }
    }

    #[test]
    fn an_invalid_targeted_field_is_ignored_whole() {
        for v in [
            "",
            "max-age=10000, &&&&&",
            "max-age=\"10000\"",
            "max-age =100",
            "max-age= 100",
            "max-age=-1",
            "max-age=1.5",
            "max-age=abc",
            "max-age=1234567890123456",
            "no-store=1",
            "max-age=10,",
            "max-age=10;",
            "max-age=10 public",
            "private=\"unterminated",
        ] {
            assert_eq!(targeted_of(&[v]), None, "{v:?}");
        }
        assert_eq!(targeted_of(&[]), None, "absent");
    }

    #[test]
    fn stale_while_revalidate_only_where_nothing_forbids_stale() {
        let secs = Duration::from_secs;
        let swr = |cc: &str, stale: u64| stale_while_revalidate_allows(&h(&[cc]), secs(stale));
        assert!(swr("max-age=1, stale-while-revalidate=60", 30));
        assert!(
            !swr("max-age=1, stale-while-revalidate=60", 61),
            "past the window"
        );
        assert!(!swr("max-age=1", 0), "no window");
        for forbidding in FORBID_STALE {
            assert!(
                !swr(
                    &format!("max-age=1, {forbidding}, stale-while-revalidate=60"),
                    1
                ),
                "{forbidding}"
            );
        }
        assert!(
            swr("s-maxage=1, stale-while-revalidate=60", 1),
            "an explicit window with s-maxage"
        );
    }

    /// Directives with which a response may never be served stale.
    const FORBID_STALE: [&str; 4] = [
        "must-revalidate",
        "proxy-revalidate",
        "no-cache",
        "no-store",
    ];

    #[test]
    fn stale_on_error_follows_the_windows_and_the_prohibitions() {
        let secs = Duration::from_secs;
        let none = HeaderMap::new();
        let on_error = |cc: &str, req: &HeaderMap, stale: u64, switch: bool| {
            stale_on_error_allows(&h(&[cc]), req, secs(stale), switch)
        };
        assert!(on_error("max-age=1", &none, 9999, true), "the admin switch");
        assert!(!on_error("max-age=1", &none, 1, false));
        assert!(on_error("max-age=1, stale-if-error=60", &none, 30, false));
        assert!(
            !on_error("max-age=1, stale-if-error=60", &none, 61, true),
            "an elapsed window closes the switch"
        );
        let asks = h(&["stale-if-error=60"]);
        assert!(on_error("max-age=1", &asks, 30, false));
        assert!(!on_error("max-age=1", &asks, 61, true));
        assert!(
            !on_error("max-age=1, s-maxage=1", &none, 1, true),
            "s-maxage"
        );
        assert!(
            on_error("s-maxage=1, stale-if-error=60", &none, 30, true),
            "explicit permission"
        );
        for forbidding in FORBID_STALE {
            assert!(
                !on_error(
                    &format!("max-age=1, {forbidding}, stale-if-error=60"),
                    &none,
                    1,
                    true
                ),
                "{forbidding}"
            );
        }
    }
}
