//! A channel's exports (see [`crate::export`]): the files as of the last
//! complete sync, written as a tree after each complete sync of a channel
//! with `export = "DIR"`, or once on request (`outpost export`); the
//! last export's result is kept for status.

use std::path::Path;
use std::sync::Arc;

use outpost_http::CacheKey;
use outpost_protocol::{ExportStatus, RunSummary, SyncResult};

use super::{Channel, Channels, lock, now_secs};
use crate::export::{ExportEntry, ExportError, tree_path, write_tree};

impl Channels {
    /// Writes the files `name` holds as a tree at `dir`, once no sync of
    /// the channel is running.
    pub async fn export(&self, name: &str, dir: &Path) -> Result<ExportStatus, ExportError> {
        let ch = self.channel(name)?;
        ch.idle().await;
        self.export_channel(&ch, dir).await
    }

    /// After a run: a channel with `export` exports what a complete sync
    /// left; after any other result the previous tree stays, since it is
    /// the last complete one.
    pub(super) async fn export_after(&self, ch: &Arc<Channel>, summary: &RunSummary) {
        let Some(dir) = ch.config.export.clone() else {
            return;
        };
        if summary.result != SyncResult::Ok {
            tracing::info!(channel = %ch.config.name, result = %summary.result, "sync incomplete: the export keeps its previous tree");
            return;
        }
        let _ = self.export_channel(ch, &dir).await;
    }

    async fn export_channel(
        &self,
        ch: &Arc<Channel>,
        dir: &Path,
    ) -> Result<ExportStatus, ExportError> {
        let name = ch.config.name.clone();
        let (entries, mut skipped) = self.export_entries(ch)?;
        let cache_dir = self.engine.store.config().dir.clone();
        let dir_owned = dir.to_path_buf();
        let now = now_secs();
        let written =
            tokio::task::spawn_blocking(move || write_tree(&entries, &dir_owned, &cache_dir, now))
                .await
                .unwrap_or_else(|e| {
                    Err(ExportError::Io {
                        path: dir.to_path_buf(),
                        source: std::io::Error::other(e.to_string()),
                    })
                });
        let status = match &written {
            Ok(status) => {
                let mut status = status.clone();
                skipped.append(&mut status.skipped);
                status.skipped = skipped;
                tracing::info!(channel = %name, dir = %status.dir, files = status.files, linked = status.linked, copied = status.copied, skipped = status.skipped.len(), "channel exported");
                if status.copied > 0 {
                    tracing::warn!(channel = %name, dir = %status.dir, copied = status.copied, "export copies files (not on the cache's file system): it takes disk space of its own");
                }
                status
            }
            Err(e) => {
                tracing::error!(channel = %name, dir = %dir.display(), error = %e, "export failed; the previous tree stays");
                ExportStatus {
                    dir: dir.display().to_string(),
                    finished: now,
                    files: 0,
                    bytes: 0,
                    linked: 0,
                    copied: 0,
                    skipped,
                    error: Some(e.to_string()),
                }
            }
        };
        let json = serde_json::to_string(&status).unwrap_or_default();
        if let Err(e) = lock(&self.db).put_export(&name, &json) {
            tracing::error!(channel = %name, error = %e, "cannot record the export");
        }
        written.map(|_| status)
    }

    /// The channel's files held complete in the store, with their tree
    /// paths; and those left out, with why.
    fn export_entries(&self, ch: &Channel) -> Result<(Vec<ExportEntry>, Vec<String>), ExportError> {
        let base = ch.config.base();
        let rows = lock(&self.db).files(&ch.config.name)?;
        let mut entries = Vec::new();
        let mut skipped = Vec::new();
        for row in rows {
            if row.state != "ok" {
                continue;
            }
            let url = match url::Url::parse(&row.url) {
                Ok(url) => url,
                Err(e) => {
                    skipped.push(format!("{}: {e}", row.url));
                    continue;
                }
            };
            let path = match tree_path(&base, &url) {
                Ok(path) => path,
                Err(why) => {
                    skipped.push(format!("{}: {why}", row.url));
                    continue;
                }
            };
            let key = CacheKey::from_stored(row.key.clone());
            match self.engine.store.get(&key).ok().flatten() {
                Some(obj) if obj.is_complete() => entries.push(ExportEntry {
                    path,
                    body: obj.path().to_path_buf(),
                    len: obj.len().unwrap_or(0),
                }),
                _ => skipped.push(format!("{}: not stored complete", row.url)),
            }
        }
        Ok((entries, skipped))
    }

    /// The last export's result, for status.
    pub(super) fn last_export(&self, name: &str) -> Option<ExportStatus> {
        let json = lock(&self.db).last_export(name).ok().flatten()?;
        serde_json::from_str(&json).ok()
    }
}
