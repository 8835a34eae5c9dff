//! `Cache-Control` directives (RFC 9111 section 5.2), as the edge reads them
//! beside the policy library: stale-while-revalidate, stale-if-error,
//! only-if-cached and the revalidation directives.
//!
//! Tolerant like the RFC asks: unknown directives are skipped, names are
//! case-insensitive, quoted values are unquoted, a malformed value counts as
//! absent.

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
}
