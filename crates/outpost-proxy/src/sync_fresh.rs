//! Freshness granted by pre-positioning (`revalidate = "sync"`): a file a
//! channel holds is fresh at the edge until the channel's next scheduled
//! sync plus a grace period, whatever the origin's headers say, so PCs'
//! requests for it never reach the origin (not even conditionally). The
//! channel's sync is the one that asks the origin.
//!
//! This module only keeps the grants; the lookup ([`crate::lookup`])
//! honours them and the channel crate sets them.
//!
//! Invariants:
//! - a grant is for one exact stored key (the variant the sync stored): a
//!   PC selecting another variant is judged by the origin's headers;
//! - a grant makes only a complete, successful (2xx) stored response fresh;
//!   a copy that is being replaced is shared through its running fill;
//! - a purge, a quarantine, or the channel letting go of the file ends it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use outpost_http::CacheKey;

/// Until when a channel vouches for its copy of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreshUntil {
    /// A channel without a schedule: until its next (manual) sync replaces
    /// the copy, a purge, or the channel's removal.
    NextSync,
    /// The channel's next scheduled sync plus its grace.
    At(SystemTime),
}

impl FreshUntil {
    /// Whether the grant still holds at `now`.
    pub fn covers(self, now: SystemTime) -> bool {
        match self {
            FreshUntil::NextSync => true,
            FreshUntil::At(until) => now < until,
        }
    }
}

/// The grants, by URL then by stored key (a URL's variants), so that a
/// purge, which every invalidating POST/PUT/DELETE through the proxy
/// makes, ends a URL's grants without looking at anyone else's.
#[derive(Default)]
pub(crate) struct SyncFreshness {
    grants: Mutex<HashMap<String, HashMap<CacheKey, FreshUntil>>>,
}

type Grants = HashMap<String, HashMap<CacheKey, FreshUntil>>;

fn url_of(key: &CacheKey) -> &str {
    outpost_http::vary::url_part(key.as_str())
}

impl SyncFreshness {
    fn grants(&self) -> std::sync::MutexGuard<'_, Grants> {
        self.grants.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set(&self, key: &CacheKey, until: Option<FreshUntil>) {
        let mut grants = self.grants();
        match until {
            Some(until) => {
                grants
                    .entry(url_of(key).to_string())
                    .or_default()
                    .insert(key.clone(), until);
            }
            None => {
                if let Some(variants) = grants.get_mut(url_of(key)) {
                    variants.remove(key);
                    if variants.is_empty() {
                        grants.remove(url_of(key));
                    }
                }
            }
        }
    }

    pub(crate) fn get(&self, key: &CacheKey) -> Option<FreshUntil> {
        self.grants().get(url_of(key))?.get(key).copied()
    }

    /// Ends the grants of every variant of `url_key`'s URL.
    pub(crate) fn end_url(&self, url_key: &str) {
        self.grants().remove(url_key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_dated_grant_ends_at_its_instant_and_an_open_one_never() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let until = FreshUntil::At(t);
        assert!(until.covers(t - Duration::from_secs(1)));
        assert!(!until.covers(t));
        assert!(FreshUntil::NextSync.covers(t + Duration::from_secs(1 << 40)));
    }

    #[test]
    fn ending_a_url_ends_every_variant_and_nothing_else() {
        let fresh = SyncFreshness::default();
        let a = CacheKey::from_stored("http://o/a".into());
        let b = CacheKey::from_stored("http://o/b".into());
        fresh.set(&a, Some(FreshUntil::NextSync));
        fresh.set(&b, Some(FreshUntil::NextSync));
        fresh.end_url("http://o/a");
        assert_eq!(fresh.get(&a), None);
        assert_eq!(fresh.get(&b), Some(FreshUntil::NextSync));
    }
}
