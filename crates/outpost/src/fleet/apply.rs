//! Doing what the manager asks: apply a managed config (check it exactly as
//! `check-config` would with the edge's file, persist it, reload), and run
//! an action (sync a channel, purge, pin, unpin: what the admin API does).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use outpost_channel::Channels;
use outpost_http::CacheKey;
use outpost_protocol::{ActionOrder, ActionResult, FleetAction};
use outpost_proxy::Engine;

use crate::config::{MANAGED_FILE_NAME, Overrides, resolve_layered};
use crate::reload::Reloader;

/// What applying a config needs to know of the edge.
pub struct ConfigTarget {
    /// The edge's own file (`None`: command line only).
    pub config_path: Option<PathBuf>,
    pub overrides: Overrides,
    pub cache_dir: PathBuf,
    pub reloader: Arc<Reloader>,
}

impl ConfigTarget {
    fn managed_path(&self) -> PathBuf {
        self.cache_dir.join(MANAGED_FILE_NAME)
    }

    /// Checks `text` (config `version`) laid over the edge's file, writes it
    /// as managed.toml and reloads. On any error the running configuration
    /// and the managed.toml it came from stay; the error is the
    /// `check-config` text.
    pub fn apply(&self, version: u64, text: &str) -> Result<Vec<String>, String> {
        let (local, local_source) = match &self.config_path {
            Some(path) => (
                std::fs::read_to_string(path)
                    .map_err(|e| format!("{}: cannot read the config file: {e}", path.display()))?,
                path.display().to_string(),
            ),
            None => (String::new(), "command line".to_string()),
        };
        let source = format!("managed config version {version}");
        resolve_layered(&local, &local_source, text, &source, &self.overrides)
            .map_err(|e| e.to_string())?;
        let path = self.managed_path();
        let previous = std::fs::read(&path).ok();
        let document = format!(
            "# Written by the outpost edge: managed config version {version} from its fleet\n# manager. Edits here are replaced by the next version.\n{text}"
        );
        super::state::write_atomic(&path, document.as_bytes(), 0o644)?;
        match self.reloader.reload() {
            Ok(report) => {
                if !report.restart_needed.is_empty() {
                    tracing::warn!(version, restart_needed = ?report.restart_needed, "part of the managed config takes effect only after a restart");
                }
                Ok(report.applied)
            }
            Err(e) => {
                restore(&path, previous.as_deref());
                Err(format!("{e:#}"))
            }
        }
    }
}

/// Puts back the managed.toml that ran before a failed reload.
fn restore(path: &Path, previous: Option<&[u8]>) {
    let restored = match previous {
        Some(bytes) => super::state::write_atomic(path, bytes, 0o644),
        None => std::fs::remove_file(path).map_err(|e| e.to_string()),
    };
    if let Err(e) = restored {
        tracing::error!(file = %path.display(), error = %e, "cannot restore the previous managed config");
    }
}

/// Runs one action to its end (a sync: until the run finishes).
pub async fn run_action(
    engine: &Engine,
    channels: &Arc<Channels>,
    order: &ActionOrder,
) -> ActionResult {
    let (ok, detail) = match &order.action {
        FleetAction::Sync { channel } => match channels.sync(channel) {
            Ok(run) => {
                let _ = channels.wait(channel, run).await;
                let last = channels
                    .status()
                    .into_iter()
                    .find(|c| &c.name == channel)
                    .and_then(|c| c.last_run)
                    .filter(|r| r.run >= run);
                match last {
                    Some(summary) => {
                        let mut detail =
                            format!("run {} finished: {}", summary.run, summary.result);
                        if let Some(message) = &summary.message {
                            detail.push_str(&format!(" ({message})"));
                        }
                        (summary.result == "ok", detail)
                    }
                    None => (false, format!("run {run} did not finish")),
                }
            }
            Err(e) => (false, e.to_string()),
        },
        FleetAction::Purge { url } | FleetAction::Pin { url } | FleetAction::Unpin { url } => {
            match url
                .parse::<http::Uri>()
                .map_err(|e| e.to_string())
                .and_then(|u| CacheKey::from_uri(&u).map_err(|e| e.to_string()))
            {
                Err(e) => (false, format!("{url}: {e}")),
                Ok(key) => {
                    let done = match &order.action {
                        FleetAction::Purge { .. } => engine.purge(&key),
                        FleetAction::Pin { .. } => engine.store.set_pinned(&key, true),
                        _ => engine.store.set_pinned(&key, false),
                    };
                    match done {
                        Ok(true) => (true, format!("{}: done", order.action)),
                        Ok(false) => (true, format!("{}: not stored here", order.action)),
                        Err(e) => (false, format!("{}: {e}", order.action)),
                    }
                }
            }
        }
    };
    ActionResult {
        id: order.id,
        ok,
        detail,
    }
}
