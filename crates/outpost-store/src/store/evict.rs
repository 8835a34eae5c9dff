//! Eviction: which objects go when the cache is over its limit or the disk
//! is full, and in what order (docs/design.md: once-hit objects first, least
//! recently used first within each group, pinned and in-use objects never).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use outpost_http::CacheKey;

use super::{Store, lock};
use crate::error::StoreError;

/// Rows an eviction deletes per index transaction: few enough that a
/// lookup waiting for the index lock waits a few milliseconds at most.
const EVICT_ROWS_PER_TRANSACTION: usize = 256;

impl Store {
    /// Evicts until usage is under the low watermark. Blocking.
    pub fn evict(&self) -> Result<u64, StoreError> {
        let cfg = &self.inner.config;
        let low = (cfg.max_bytes as f64 * cfg.low_watermark) as u64;
        let freed = self.evict_while(|| self.inner.used.load(Ordering::Relaxed) > low)?;
        if self.inner.used.load(Ordering::Relaxed) > low {
            tracing::warn!(
                used = self.inner.used.load(Ordering::Relaxed),
                limit = cfg.max_bytes,
                "cache over its limit but nothing evictable (pinned or in use)"
            );
        }
        Ok(freed)
    }

    /// Evicts until the file system has `needed` bytes free, for a fill that
    /// hit a full disk (the cache's own limit may be set above what the
    /// disk really has, or something else filled it). Returns the bytes
    /// freed; 0 when nothing could go (pinned or in use). Blocking.
    pub fn make_room(&self, needed: u64) -> Result<u64, StoreError> {
        let free = || {
            rustix::fs::statvfs(&self.inner.objects_dir)
                .map(|v| v.f_bavail.saturating_mul(v.f_frsize))
                .unwrap_or(u64::MAX)
        };
        let freed = self.evict_while(|| free() < needed)?;
        tracing::warn!(
            needed,
            freed,
            available = free(),
            "disk full: evicted to make room"
        );
        Ok(freed)
    }

    /// Evicts the least valuable objects that no one is using while `more`
    /// says so. Returns the bytes freed.
    fn evict_while(&self, more: impl Fn() -> bool) -> Result<u64, StoreError> {
        // Bring counts and access times up to date so the order is right
        // (best effort: on a full disk the index may not take the write).
        if let Err(e) = self.flush_access() {
            tracing::warn!(error = %e, "could not record access times before evicting");
        }
        let mut skipped: HashSet<String> = HashSet::new();
        let mut rows_to_remove = Vec::new();
        let mut freed = 0;
        while more() {
            let candidates = lock(&self.inner.index).eviction_candidates(skipped.len() + 64)?;
            let mut progressed = false;
            for (key, id, size) in candidates {
                if skipped.contains(&key) {
                    continue;
                }
                let ckey = CacheKey::from_stored(key.clone());
                {
                    let mut live = lock(&self.inner.live);
                    if let Some(obj) = live.get(&ckey) {
                        // In use (a reader or a fill holds it) or being filled:
                        // not now.
                        if Arc::strong_count(obj) > 1 {
                            skipped.insert(key);
                            continue;
                        }
                        live.remove(&ckey);
                    }
                }
                // The file first: that is what frees the disk. A row the
                // index cannot delete now (a full disk can refuse SQLite
                // too) points at a vanished file, which the next lookup or
                // start-up drops.
                self.drop_file(id, Some(size));
                self.inner.evictions.fetch_add(1, Ordering::Relaxed);
                freed += size;
                tracing::debug!(key, size, "evicted");
                skipped.insert(key.clone());
                rows_to_remove.push((key, id));
                if rows_to_remove.len() >= EVICT_ROWS_PER_TRANSACTION {
                    self.remove_rows(&mut rows_to_remove);
                }
                progressed = true;
                if !more() {
                    break;
                }
            }
            self.remove_rows(&mut rows_to_remove);
            if !progressed {
                break;
            }
        }
        Ok(freed)
    }

    /// Removes evicted objects' rows in one transaction (one commit per
    /// row made evicting 100,000 small objects write gigabytes of WAL and
    /// tripled the p99 of concurrent hits; bench/evict.py).
    fn remove_rows(&self, rows: &mut Vec<(String, u64)>) {
        if rows.is_empty() {
            return;
        }
        if let Err(e) = lock(&self.inner.index).remove_all(rows) {
            tracing::warn!(rows = rows.len(), error = %e, "index rows kept for now; their files are gone");
        }
        rows.clear();
    }
}
