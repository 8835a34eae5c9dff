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
    CachePolicy::new_options(req, res, now, shared_cache_options())
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
/// The headers clients receive are not changed.
pub fn policy_with_override(
    req: &http::request::Parts,
    res: &http::response::Parts,
    now: SystemTime,
    ov: Option<&FreshnessOverride>,
) -> CachePolicy {
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
        .chain(wanted.map(|d| format!("s-maxage={}", d.as_secs())))
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

    fn ttl(cc: Option<&str>, ov: &FreshnessOverride) -> Duration {
        let now = SystemTime::now();
        let (req, res) = parts(cc);
        policy_with_override(&req, &res, now, Some(ov)).time_to_live(now)
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
    fn private_and_no_store_only_when_asked() {
        let now = SystemTime::now();
        let (req, res) = parts(Some("private, max-age=600"));
        let plain = FreshnessOverride::default();
        assert!(!policy_with_override(&req, &res, now, Some(&plain)).is_storable());
        let forced = FreshnessOverride {
            cache_private: true,
            ..Default::default()
        };
        let policy = policy_with_override(&req, &res, now, Some(&forced));
        assert!(policy.is_storable());
        assert_eq!(policy.time_to_live(now), Duration::from_secs(600));
    }
}
