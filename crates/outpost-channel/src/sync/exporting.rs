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
    pub async fn export(
        self: &Arc<Self>,
        name: &str,
        dir: &Path,
    ) -> Result<ExportStatus, ExportError> {
        let ch = self.channel(name)?;
        ch.idle().await;
        self.export_channel(&ch, dir).await
    }

    /// After a run: a channel with `export` exports what a complete sync
    /// left; after any other result the previous tree stays, since it is
    /// the last complete one.
    pub(super) async fn export_after(self: &Arc<Self>, ch: &Arc<Channel>, summary: &RunSummary) {
        let Some(dir) = ch.config.export.clone() else {
            return;
        };
        if summary.result != SyncResult::Ok {
            tracing::info!(channel = %ch.config.name, result = %summary.result, "sync incomplete: the export keeps its previous tree");
            return;
        }
        let _ = self.export_channel(ch, &dir).await;
    }

    /// Runs the export on the blocking pool: it reads the channel's rows
    /// and the store's index (SQLite), links or copies every file and
    /// records the result, none of which may hold a runtime worker (the
    /// edge serves PCs' hits on the same runtime).
    async fn export_channel(
        self: &Arc<Self>,
        ch: &Arc<Channel>,
        dir: &Path,
    ) -> Result<ExportStatus, ExportError> {
        let now = now_secs();
        let work = {
            let (this, ch, dir) = (Arc::clone(self), Arc::clone(ch), dir.to_path_buf());
            move || this.export_blocking(&ch, &dir, now)
        };
        match tokio::task::spawn_blocking(work).await {
            Ok(done) => done,
            // The export panicked (a bug): recorded as a failed export, so
            // status does not go on showing the previous one as the last
            // (one row, written here as sync/ writes its rows).
            Err(source) => {
                let failed = Err(ExportError::Task {
                    dir: dir.to_path_buf(),
                    source,
                });
                self.record_export(&ch.config.name, dir, now, &failed, Vec::new());
                failed
            }
        }
    }

    /// The export itself, on a blocking thread.
    fn export_blocking(
        &self,
        ch: &Channel,
        dir: &Path,
        now: i64,
    ) -> Result<ExportStatus, ExportError> {
        let (entries, skipped) = self.export_entries(ch)?;
        let cache_dir = &self.engine.store.config().dir;
        let written = write_tree(&entries, dir, cache_dir, now);
        let status = self.record_export(&ch.config.name, dir, now, &written, skipped);
        written.map(|_| status)
    }

    /// Logs and records an export's result (`skipped`: the files left out
    /// before the tree was written), and returns the status recorded.
    fn record_export(
        &self,
        name: &str,
        dir: &Path,
        now: i64,
        written: &Result<ExportStatus, ExportError>,
        mut skipped: Vec<String>,
    ) -> ExportStatus {
        let status = match written {
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
        if let Err(e) = lock(&self.db).put_export(name, &json) {
            tracing::error!(channel = %name, error = %e, "cannot record the export");
        }
        status
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
