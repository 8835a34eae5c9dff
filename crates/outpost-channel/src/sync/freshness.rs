//! `revalidate = "sync"`: how long a channel vouches for the files it
//! synced, and handing those grants to the engine (after each file's
//! sync, at startup from the database, and when a file or the channel
//! leaves). See [`outpost_proxy::sync_fresh`] for what a grant does.
//!
//! A file synced at `t` is fresh until the channel's next scheduled sync
//! after `t` plus `revalidate_grace`; a channel without a schedule vouches
//! until its next sync (manual, or after a restart) replaces the copy. A
//! file whose sync failed keeps its earlier grant, which then runs out: a
//! channel that cannot reach its origin does not vouch for ever.

use std::time::{Duration, UNIX_EPOCH};

use chrono::TimeZone;
use outpost_http::CacheKey;
use outpost_proxy::sync_fresh::FreshUntil;

use super::{ChannelConfig, Channels, lock};
use crate::state::FileRow;

/// Who a PC's request for a channel file is checked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Revalidate {
    /// The channel's sync: fresh until the next sync plus the grace.
    #[default]
    Sync,
    /// The origin, as its headers say (the edge's behaviour for any URL).
    Origin,
}

/// The grace after the next scheduled sync, by default: a sync that runs
/// a little late, or takes a while to reach a file, does not send PCs to
/// the origin meanwhile.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

impl ChannelConfig {
    /// Until when a file this channel synced at `synced_at` (Unix seconds)
    /// is fresh; `None`: the origin's headers decide.
    pub fn fresh_until(&self, synced_at: i64) -> Option<FreshUntil> {
        if self.revalidate == Revalidate::Origin {
            return None;
        }
        let Some(schedule) = &self.schedule else {
            return Some(FreshUntil::NextSync);
        };
        // Schedules are in local time, as `schedule_loop` runs them.
        let synced = chrono::Local.timestamp_opt(synced_at, 0).earliest()?;
        let Some(next) = schedule.next_after(synced.naive_local()) else {
            // A schedule that never fires again: like no schedule.
            return Some(FreshUntil::NextSync);
        };
        let next = chrono::Local
            .from_local_datetime(&next)
            .earliest()
            .map(|t| t.timestamp())
            // A local time a DST jump skips: an hour later exists.
            .or_else(|| {
                chrono::Local
                    .from_local_datetime(&(next + chrono::Duration::hours(1)))
                    .earliest()
                    .map(|t| t.timestamp())
            })?;
        let next = UNIX_EPOCH + Duration::from_secs(u64::try_from(next).ok()?);
        Some(FreshUntil::At(next + self.revalidate_grace))
    }
}

impl Channels {
    /// Grants (or, for `revalidate = "origin"`, ends) freshness for every
    /// file the channel holds, from the time each was last synced, when a
    /// channel is added or replaced (start-up, which also needs the rows
    /// for quarantines, reads them once and calls
    /// [`Channels::restore_freshness_from`]).
    pub(super) fn restore_freshness(&self, config: &ChannelConfig) {
        let rows = lock(&self.db).files(&config.name).unwrap_or_default();
        self.restore_freshness_from(config, &rows);
    }

    /// [`Channels::restore_freshness`] from the channel's rows, already
    /// read.
    pub(super) fn restore_freshness_from(&self, config: &ChannelConfig, rows: &[FileRow]) {
        for row in rows.iter().filter(|r| r.state == "ok") {
            let key = CacheKey::from_stored(row.key.clone());
            self.engine
                .set_sync_fresh(&key, config.fresh_until(row.updated));
        }
    }

    /// The channel's grant for `key`, synced just now.
    pub(super) fn vouch(&self, config: &ChannelConfig, key: &CacheKey, now: i64) {
        self.engine.set_sync_fresh(key, config.fresh_until(now));
    }
}
