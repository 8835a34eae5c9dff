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
