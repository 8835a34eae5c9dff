//! Freshness and revalidation (RFC 9111), as a shared cache.
//!
//! The rules themselves come from `http-cache-semantics`, which implements
//! RFC 9111 for shared caches (s-maxage, private, Authorization, heuristic
//! freshness, Vary matching, conditional request construction, 304 merging).
//! This module fixes the options Outpost runs it with, so every caller agrees.

use std::time::{Duration, SystemTime};

pub use http_cache_semantics::{AfterResponse, BeforeRequest, CacheOptions, CachePolicy};

/// The options of a shared (multi-user) cache.
pub fn shared_cache_options() -> CacheOptions {
    CacheOptions {
        shared: true,
        cache_heuristic: 0.1,
        immutable_min_time_to_live: Duration::from_secs(24 * 3600),
        ignore_cargo_cult: false,
    }
}

/// The policy of a response received at `now` for `req`.
pub fn policy_for(
    req: &http::request::Parts,
    res: &http::response::Parts,
    now: SystemTime,
) -> CachePolicy {
    match as_policy_reads_it(res, None, now) {
        Some(adjusted) => CachePolicy::new_options(req, &adjusted, now, shared_cache_options()),
        None => CachePolicy::new_options(req, res, now, shared_cache_options()),
    }
}

/// The targeted cache-control fields (RFC 9213) an edge obeys as the CDN of
/// its reverse origins, most specific first: the admin's own field name
/// (`server.targeted_cache_control`, e.g. `Outpost-Cache-Control`), then
/// `CDN-Cache-Control`. Not used in forward mode, where the edge is not
/// the origin's CDN.
#[derive(Debug, Clone)]
pub struct TargetedFields {
    names: Vec<http::HeaderName>,
}

/// The field every CDN obeys (RFC 9213 section 3).
pub const CDN_CACHE_CONTROL: &str = "cdn-cache-control";

impl TargetedFields {
    pub fn new(own: Option<http::HeaderName>) -> Self {
        let cdn = http::HeaderName::from_static(CDN_CACHE_CONTROL);
        let mut names: Vec<http::HeaderName> = own.into_iter().filter(|own| *own != cdn).collect();
        names.push(cdn);
        Self { names }
    }

    /// The directives of the first targeted field present with a valid,
    /// non-empty value, as a `Cache-Control` value (RFC 9213 section 2.2);
    /// `None` when no such field applies.
    pub fn directives(&self, headers: &http::HeaderMap) -> Option<String> {
        self.names
            .iter()
            .filter(|name| headers.contains_key(*name))
            .find_map(|name| crate::cache_control::targeted(headers.get_all(name)))
    }

    /// `headers` as the edge's own caching reads them (for the directives
    /// the policy library does not handle: stale-while-revalidate,
    /// stale-if-error, must-revalidate): when a targeted field applies, its
    /// directives replace `Cache-Control` and `Expires` is dropped.
    pub fn view<'h>(&self, headers: &'h http::HeaderMap) -> std::borrow::Cow<'h, http::HeaderMap> {
        // Without a targeted field, Surrogate-Control speaks to the edge,
        // as the policy reads it (`as_policy_reads_it`).
        match self
            .directives(headers)
            .or_else(|| surrogate_directives(headers))
        {
            None => std::borrow::Cow::Borrowed(headers),
            Some(directives) => {
                let mut view = headers.clone();
                replace_cache_control(&mut view, &directives);
                std::borrow::Cow::Owned(view)
            }
        }
    }

    /// Removes every targeted field: they are addressed to this edge, not
    /// to the clients behind it.
    pub fn strip(&self, headers: &mut http::HeaderMap) {
        for name in &self.names {
            headers.remove(name);
        }
    }
}

/// Puts `directives` in place of `Cache-Control` and `Expires` (a targeted
/// field overrides both, RFC 9213 section 2.2).
fn replace_cache_control(headers: &mut http::HeaderMap, directives: &str) {
    headers.remove(http::header::CACHE_CONTROL);
    headers.remove(http::header::EXPIRES);
    if !directives.is_empty()
        && let Ok(v) = http::HeaderValue::from_str(directives)
    {
        headers.insert(http::header::CACHE_CONTROL, v);
    }
}

/// The device token of `Surrogate-Control` directives meant for the edge
/// (`max-age=60;outpost`); directives with no token are meant for every
/// surrogate.
pub const SURROGATE_TOKEN: &str = "outpost";

/// A copy of `res` as the policy library should read it, when it differs:
///
/// - `Cache-Control` in canonical form: names in lower case (the library
///   compares exactly, and `No-Cache` must still forbid reuse without
///   revalidation), `max-age = 5` and the like dropped as not the syntax;
/// - `Age` (RFC 9111 section 5.1) as its first member: a list-valued
///   `Age: 10, 20` (or two field lines) is 10; a first member that is not
///   delta-seconds (`abc`, `-5`, `1.5`, `+5`, empty) is ignored as if the
///   field were absent; a huge one is 2^31 (section 1.2.2);
/// - `Expires` and `Date` as strict HTTP-dates ([`crate::date`]): a valid
///   one in another form is rewritten as IMF-fixdate (the library reads
///   only that), an invalid `Expires` becomes `0`, "already expired"
///   (RFC 9111 section 5.3), an invalid `Date` is dropped (the library then
///   uses the time of receipt);
/// - for a reverse proxy (`targeted` given), the first targeted field that
///   applies (the admin's own, then `CDN-Cache-Control`, RFC 9213) replaces
///   `Cache-Control` and `Expires`; without one, `Surrogate-Control`
///   directives meant for the edge do (W3C Edge Architecture). Either way
///   an origin can give its CDN a lifetime that browsers do not see.
fn as_policy_reads_it(
    res: &http::response::Parts,
    targeted: Option<&TargetedFields>,
    now: SystemTime,
) -> Option<http::response::Parts> {
    use http::header::{AGE, CACHE_CONTROL, EXPIRES};
    let mut adjusted: Option<http::response::Parts> = None;
    let needs_canonical_form = res.headers.get_all(CACHE_CONTROL).iter().any(|v| {
        v.to_str()
            .map_or(true, |v| crate::cache_control::canonical(v) != v.trim())
    });
    if needs_canonical_form {
        let copy = adjusted.get_or_insert_with(|| res.clone());
        let lowered: Vec<String> = res
            .headers
            .get_all(CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(crate::cache_control::canonical)
            .collect();
        copy.headers.remove(CACHE_CONTROL);
        for v in lowered {
            if let Ok(v) = http::HeaderValue::from_str(&v) {
                copy.headers.append(CACHE_CONTROL, v);
            }
        }
    }
    let targeted_directives = targeted.and_then(|t| t.directives(&res.headers));
    if let Some(directives) = targeted_directives {
        let copy = adjusted.get_or_insert_with(|| res.clone());
        replace_cache_control(&mut copy.headers, &directives);
    } else if targeted.is_some()
        && let Some(directives) = surrogate_directives(&res.headers)
    {
        let copy = adjusted.get_or_insert_with(|| res.clone());
        copy.headers.remove(CACHE_CONTROL);
        copy.headers.remove(EXPIRES);
        if let Ok(v) = http::HeaderValue::from_str(&directives) {
            copy.headers.insert(CACHE_CONTROL, v);
        }
    }
    if let Some(stand_in) = status_stand_in(res.status, adjusted.as_ref().unwrap_or(res)) {
        adjusted.get_or_insert_with(|| res.clone()).status = stand_in;
    }
    if let Some(age) = age_as_read(&res.headers) {
        let copy = adjusted.get_or_insert_with(|| res.clone());
        copy.headers.remove(AGE);
        if let Some(secs) = age {
            copy.headers.insert(AGE, http::HeaderValue::from(secs));
        }
    }
    for name in [EXPIRES, http::header::DATE] {
        let current = adjusted.as_ref().unwrap_or(res);
        if let Some(date) = date_as_read(&current.headers, &name, now) {
            let copy = adjusted.get_or_insert_with(|| res.clone());
            copy.headers.remove(&name);
            match date {
                Some(v) => {
                    copy.headers.insert(name, v);
                }
                None if name == EXPIRES => {
                    copy.headers
                        .insert(name, http::HeaderValue::from_static("0"));
                }
                None => {}
            }
        }
    }
    adjusted
}

/// The largest delta-seconds a cache must handle; larger ones mean this
/// (RFC 9111 section 1.2.2).
const DELTA_SECONDS_MAX: u64 = 2_147_483_648;

/// The `Age` the policy should see, when it differs from what the response
/// says as written: `Some(None)` to drop it, `Some(Some(n))` to replace it,
/// `None` when the single field line is already plain delta-seconds.
fn age_as_read(headers: &http::HeaderMap) -> Option<Option<u64>> {
    use http::header::AGE;
    let mut lines = headers.get_all(AGE).iter();
    let first_line = lines.next()?;
    let several_lines = lines.next().is_some();
    let first_member = first_line
        .to_str()
        .ok()
        .and_then(|v| crate::cache_control::split_list(v).into_iter().next());
    let secs = first_member
        .filter(|m| m.bytes().all(|b| b.is_ascii_digit()))
        .map(|m| {
            m.parse::<u64>()
                .map_or(DELTA_SECONDS_MAX, |n| n.min(DELTA_SECONDS_MAX))
        });
    let as_written = !several_lines
        && first_member.is_some_and(|m| m.len() == first_line.len())
        && secs.is_some_and(|n| n < DELTA_SECONDS_MAX);
    (!as_written).then_some(secs)
}

/// The value of the date field `name` the policy should see, when it
/// differs from what is written: `Some(Some(v))` a valid date rewritten as
/// IMF-fixdate, `Some(None)` an invalid one, `None` absent or already
/// IMF-fixdate. Several lines are invalid unless they are all the same.
fn date_as_read(
    headers: &http::HeaderMap,
    name: &http::HeaderName,
    now: SystemTime,
) -> Option<Option<http::HeaderValue>> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?;
    if lines.any(|other| other != first) {
        return Some(None);
    }
    let Some(when) = first
        .to_str()
        .ok()
        .and_then(|v| crate::date::parse_http_date(v, now))
    else {
        return Some(None);
    };
    let canonical = crate::date::format_http_date(when);
    if headers.get_all(name).iter().count() == 1 && first.as_bytes() == canonical.as_bytes() {
        return None;
    }
    Some(http::HeaderValue::from_str(&canonical).ok())
}

/// Statuses the policy library knows; it refuses to store any other.
const LIBRARY_UNDERSTANDS: &[u16] = &[
    200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501,
];

/// The status the library should judge `res` by. RFC 9111 section 3 lets a
/// cache store any final status when the response carries explicit
/// freshness (a 503 with `max-age=30`, a 400 with `Expires`) or is marked
/// `public` (which also allows heuristic freshness, section 4.2.2); the
/// library stores only the statuses it knows, so such a response is shown
/// to it as a 200, which is then judged the same way. Not with
/// `must-understand` for a status HTTP does not define (section 5.2.2.3),
/// and never for 206 and 304, which have rules of their own.
fn status_stand_in(
    status: http::StatusCode,
    res: &http::response::Parts,
) -> Option<http::StatusCode> {
    let code = status.as_u16();
    if code < 200 || code == 206 || code == 304 || LIBRARY_UNDERSTANDS.contains(&code) {
        return None;
    }
    let mut explicit = res.headers.contains_key(http::header::EXPIRES);
    let mut must_understand = false;
    for (name, _) in crate::cache_control::directives(&res.headers) {
        match name.as_str() {
            "max-age" | "s-maxage" | "public" => explicit = true,
            "must-understand" => must_understand = true,
            _ => {}
        }
    }
    let defined = status.canonical_reason().is_some();
    (explicit && (defined || !must_understand)).then_some(http::StatusCode::OK)
}

/// The `Surrogate-Control` directives meant for the edge, as a
/// `Cache-Control` value: `max-age` and `no-store` as they are. `None` when
/// there are none.
///
/// Surrogate-Control speaks of freshness and storage, not of who may see a
/// response: the origin's `private` stays, so a per-user answer is never
/// made shared. Nor does the lifetime become `s-maxage` or `public`, which
/// would count as the origin sharing a response to a request with
/// credentials (RFC 9111 section 3.5); those must come from the origin.
fn surrogate_directives(headers: &http::HeaderMap) -> Option<String> {
    let mut out = Vec::new();
    for value in headers.get_all("surrogate-control") {
        let Ok(value) = value.to_str() else { continue };
        for member in crate::cache_control::split_list(value) {
            let (directive, target) = match member.split_once(';') {
                Some((d, t)) => (d.trim(), t.trim()),
                None => (member, ""),
            };
            if !(target.is_empty() || target.eq_ignore_ascii_case(SURROGATE_TOKEN)) {
                continue;
            }
            let (name, arg) = match directive.split_once('=') {
                Some((n, a))
                    if n.ends_with(char::is_whitespace) || a.starts_with(char::is_whitespace) =>
                {
                    continue;
                }
                Some((n, a)) => (n.to_ascii_lowercase(), Some(a.trim_matches('"'))),
                None => (directive.to_ascii_lowercase(), None),
            };
            match (name.as_str(), arg) {
                ("no-store", _) => out.push("no-store".to_string()),
                ("max-age", Some(secs)) if secs.bytes().all(|b| b.is_ascii_digit()) => {
                    out.push(format!("max-age={secs}"))
                }
                _ => {}
            }
        }
    }
    if !out.is_empty() && crate::cache_control::has(headers, "private") {
        out.push("private".to_string());
    }
    (!out.is_empty()).then(|| out.join(", "))
}

/// An admin's freshness rules for some URLs, applied on top of what the
/// origin says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FreshnessOverride {
    /// Fresh for at least this long (when the origin says less or nothing).
    pub min_fresh: Option<Duration>,
    /// Fresh for at most this long.
    pub max_fresh: Option<Duration>,
    /// Store responses marked `private` or `no-store` anyway.
    pub cache_private: bool,
}

/// [`policy_for`] with an admin override: the policy is computed from a
/// copy of the response whose `Cache-Control` says what the override wants.
/// `targeted`: the edge is the origin's reverse proxy (its CDN), so the
/// targeted fields and `Surrogate-Control` apply; `None` in forward mode.
/// The headers clients receive are not changed.
pub fn policy_with_override(
    req: &http::request::Parts,
    res: &http::response::Parts,
    now: SystemTime,
    ov: Option<&FreshnessOverride>,
    targeted: Option<&TargetedFields>,
) -> CachePolicy {
    let surrogate_view = if targeted.is_some() {
        as_policy_reads_it(res, targeted, now)
    } else {
        None
    };
    let res = surrogate_view.as_ref().unwrap_or(res);
    let policy = policy_for(req, res, now);
    let Some(ov) = ov else { return policy };
    let lifetime = policy.time_to_live(now) + policy.age(now);
    let wanted = match (ov.min_fresh, ov.max_fresh) {
        (Some(min), _) if lifetime < min && !forbids_reuse_without_check(&res.headers) => Some(min),
        (_, Some(max)) if lifetime > max => Some(max),
        _ => None,
    };
    if wanted.is_none() && !(ov.cache_private && private_or_no_store(&res.headers)) {
        return policy;
    }
    let mut adjusted = res.clone();
    let kept: Vec<String> = crate::cache_control::directives(&res.headers)
        .filter(|(name, _)| {
            let lifetime_directive = matches!(name.as_str(), "max-age" | "s-maxage");
            let private = matches!(name.as_str(), "private" | "no-store");
            let replaced = wanted.is_some() && lifetime_directive;
            let dropped = ov.cache_private && private;
            !(replaced || dropped)
        })
        .map(|(name, value)| match value {
            Some(v) => format!("{name}={v}"),
            None => name,
        })
        // `max-age`, not `s-maxage`: s-maxage would also make a response
        // to a request with Authorization shareable (RFC 9111 section 3.5),
        // which only the origin may decide. Kept as s-maxage only when the
        // origin's own response said s-maxage.
        .chain(wanted.map(|d| {
            let directive = if crate::cache_control::directives(&res.headers)
                .any(|(name, _)| name == "s-maxage")
            {
                "s-maxage"
            } else {
                "max-age"
            };
            format!("{directive}={}", d.as_secs())
        }))
        .collect();
    adjusted.headers.remove(http::header::CACHE_CONTROL);
    if wanted.is_some() {
        adjusted.headers.remove(http::header::EXPIRES);
    }
    if !kept.is_empty()
        && let Ok(v) = http::HeaderValue::from_str(&kept.join(", "))
    {
        adjusted.headers.insert(http::header::CACHE_CONTROL, v);
    }
    policy_for(req, &adjusted, now)
}

/// no-cache and must-revalidate mean "check before each use" (or once
/// stale): a minimum freshness must not turn that into "never check".
fn forbids_reuse_without_check(headers: &http::HeaderMap) -> bool {
    crate::cache_control::directives(headers).any(|(name, _)| name == "no-cache")
}

fn private_or_no_store(headers: &http::HeaderMap) -> bool {
    crate::cache_control::directives(headers)
        .any(|(name, _)| name == "private" || name == "no-store")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(cc: Option<&str>) -> (http::request::Parts, http::response::Parts) {
        let req = http::Request::builder()
            .uri("http://h/p")
            .header("host", "h")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let mut res = http::Response::builder().status(200);
        if let Some(cc) = cc {
            res = res.header("cache-control", cc);
        }
        (req, res.body(()).unwrap().into_parts().0)
    }

    /// A fixed instant: the rules under test depend on `now` only through
    /// what the caller passes, so no test reads the clock.
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000)
    }

    fn ttl(cc: Option<&str>, ov: &FreshnessOverride) -> Duration {
        let now = now();
        let (req, res) = parts(cc);
        policy_with_override(&req, &res, now, Some(ov), None).time_to_live(now)
    }

    #[test]
    fn minimum_and_maximum_freshness() {
        let days = |d: u64| Duration::from_secs(d * 86_400);
        let ov = FreshnessOverride {
            min_fresh: Some(days(2)),
            max_fresh: Some(days(7)),
            cache_private: false,
        };
        assert_eq!(ttl(None, &ov), days(2), "no cache headers: kept two days");
        assert_eq!(ttl(Some("max-age=60"), &ov), days(2));
        assert_eq!(
            ttl(Some("max-age=259200"), &ov),
            days(3),
            "within bounds: origin's"
        );
        assert_eq!(ttl(Some("max-age=9999999"), &ov), days(7));
        assert_eq!(
            ttl(Some("no-cache"), &ov),
            Duration::ZERO,
            "no-cache still checks"
        );
    }

    #[test]
    fn a_minimum_freshness_does_not_share_responses_to_authorized_requests() {
        let now = now();
        let ov = FreshnessOverride {
            min_fresh: Some(Duration::from_secs(86_400)),
            ..Default::default()
        };
        let (mut req, res) = parts(Some("max-age=60"));
        req.headers
            .insert("authorization", "Basic YWxpY2U6cHc=".parse().unwrap());
        assert!(
            !policy_with_override(&req, &res, now, Some(&ov), None).is_storable(),
            "RFC 9111 section 3.5: only the origin makes it shareable"
        );
        let (mut req, res) = parts(Some("s-maxage=60"));
        req.headers
            .insert("authorization", "Basic YWxpY2U6cHc=".parse().unwrap());
        let policy = policy_with_override(&req, &res, now, Some(&ov), None);
        assert!(policy.is_storable(), "the origin's s-maxage shares it");
        assert_eq!(policy.time_to_live(now), Duration::from_secs(86_400));
    }

    #[test]
    fn private_and_no_store_only_when_asked() {
        let now = now();
        let (req, res) = parts(Some("private, max-age=600"));
        let plain = FreshnessOverride::default();
        assert!(!policy_with_override(&req, &res, now, Some(&plain), None).is_storable());
        let forced = FreshnessOverride {
            cache_private: true,
            ..Default::default()
        };
        let policy = policy_with_override(&req, &res, now, Some(&forced), None);
        assert!(policy.is_storable());
        assert_eq!(policy.time_to_live(now), Duration::from_secs(600));
    }

    #[test]
    fn cdn_cache_control_counts_only_for_an_edge_that_is_the_cdn() {
        let now = now();
        let (req, mut res) = parts(Some("no-store"));
        res.headers
            .insert("cdn-cache-control", "max-age=600".parse().unwrap());
        let forward = policy_with_override(&req, &res, now, None, None);
        assert!(!forward.is_storable(), "forward mode: Cache-Control rules");
        let targeted = TargetedFields::new(None);
        let reverse = policy_with_override(&req, &res, now, None, Some(&targeted));
        assert!(reverse.is_storable());
        assert_eq!(reverse.time_to_live(now), Duration::from_secs(600));
        let own = TargetedFields::new(Some(http::HeaderName::from_static("outpost-cache-control")));
        res.headers
            .insert("outpost-cache-control", "max-age=60".parse().unwrap());
        let mine = policy_with_override(&req, &res, now, None, Some(&own));
        assert_eq!(
            mine.time_to_live(now),
            Duration::from_secs(60),
            "most specific wins"
        );
        let mut stripped = res.headers.clone();
        own.strip(&mut stripped);
        assert!(!stripped.contains_key("outpost-cache-control"));
        assert!(!stripped.contains_key("cdn-cache-control"));
        assert!(stripped.contains_key("cache-control"));
    }
}
