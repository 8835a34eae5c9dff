//! What the site library's view ([`crate::library_view`]) reads of a
//! channel: its configuration, its file rows and the files its running
//! sync is fetching. Kept apart so the view never reaches into the sync's
//! state beyond these copies.

use std::collections::HashMap;

use outpost_http::CacheKey;

use super::{ChannelConfig, Channels, lock};
use crate::state::{ChannelTotals, FileRow};

/// A copy of one channel's state, taken under its locks and released.
pub(crate) struct ChannelRows {
    pub config: ChannelConfig,
    pub rows: Vec<FileRow>,
    /// The running sync's files in flight: URL -> (key, size if known).
    pub active: HashMap<String, (CacheKey, Option<u64>)>,
}

impl Channels {
    pub(crate) fn channel_rows(&self, name: &str) -> Option<ChannelRows> {
        let ch = self.channel(name).ok()?;
        let rows = lock(&self.db).files(name).unwrap_or_default();
        let active = lock(&ch.run)
            .as_ref()
            .map(|r| r.active.clone())
            .unwrap_or_default();
        Some(ChannelRows {
            config: ch.config.clone(),
            rows,
            active,
        })
    }

    /// Channel `name`'s configuration and its rows' totals (files, bytes,
    /// newest sync), counted by SQLite: the library's root lists every
    /// channel and needs no row of any.
    pub(crate) fn channel_totals(&self, name: &str) -> Option<(ChannelConfig, ChannelTotals)> {
        let ch = self.channel(name).ok()?;
        let totals = lock(&self.db).totals(name).unwrap_or_default();
        Some((ch.config.clone(), totals))
    }

    pub(crate) fn engine_store(&self) -> &outpost_store::Store {
        &self.engine.store
    }
}
