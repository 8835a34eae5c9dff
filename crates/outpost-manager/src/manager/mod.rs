//! [`Manager`]: the fleet model over its store, with the operations the
//! HTTP layer exposes. Handlers stay thin: each calls one method here.
//!
//! Invariants: the in-memory [`Fleet`] is the truth for heartbeats and
//! reads; every change an admin makes is written to SQLite (and audited)
//! before the method returns; heartbeat data reaches SQLite within one
//! flush period (~2 s), state changes at once.

mod actions;
mod alerts;
mod config;
mod edges;
mod groups;
mod history;
mod tokens;

pub use alerts::{Alert, AlertEvent, MANAGER_VERSION};
pub use config::{DiffReply, HistoryEntry, ScopeDiff, SiteConfig};
pub use edges::WaitFor;
pub use groups::GroupInfo;
pub use history::{SiteTraffic, StateChange};
pub use tokens::{AuditEntry, NewToken, TokenInfo};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use rusqlite::OptionalExtension;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::error::{DbContext, ManagerError, Result};
use crate::fleet::{EdgeRecord, Fleet, Published};
use crate::model::merge::Snapshot;

/// Checks a managed TOML document (`text`, named `source` in messages);
/// `Err` holds the messages. The binary passes `outpost::config::
/// check_managed`, so the manager refuses exactly what `check-config`
/// refuses without linking the data plane.
pub type Validator = Arc<dyn Fn(&str, &str) -> Result<(), String> + Send + Sync>;

/// Who made a change, and from where: the audit log's columns.
#[derive(Debug, Clone)]
pub struct Actor {
    /// `token:LABEL`, `user:NAME`, `edge:SITE`, `cli`.
    pub who: String,
    /// The peer address, or `local` for the CLI on the data dir.
    pub from: String,
}

impl Actor {
    pub fn local_cli() -> Self {
        Self {
            who: "cli".into(),
            from: "local".into(),
        }
    }
}

pub struct ManagerOptions {
    pub data_dir: PathBuf,
    pub heartbeat: Duration,
    pub validator: Validator,
}

/// One in a gauge of [`Stats`] for as long as it lives.
pub(crate) struct Held<'a>(&'a AtomicI64);

impl<'a> Held<'a> {
    pub(crate) fn new(gauge: &'a AtomicI64) -> Self {
        gauge.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub heartbeats_total: AtomicU64,
    pub long_polls_open: AtomicI64,
    /// Edge sessions open (`/edge/v1/session`).
    pub sessions_open: AtomicI64,
    pub connections_open: AtomicI64,
    pub connections_accepted_total: AtomicU64,
    /// Connections that chose HTTP/2 by ALPN (edges over HTTPS).
    pub connections_http2_open: AtomicI64,
    pub enrolments_total: AtomicU64,
    pub webhook_delivered_total: AtomicU64,
    pub webhook_failed_total: AtomicU64,
    pub webhook_dropped_total: AtomicU64,
}

pub struct Manager {
    db: Db,
    data_dir: PathBuf,
    validator: Validator,
    heartbeat_ms: u64,
    fleet: RwLock<Fleet>,
    /// Bumped on every publish, action and approval: wakes long polls,
    /// which then check whether it concerns them.
    wake: watch::Sender<u64>,
    /// Asks the flusher to write now (a state change).
    flush_now: Notify,
    shutdown: CancellationToken,
    pub stats: Stats,
    alerts: std::sync::Mutex<alerts::OpenAlerts>,
    pub(crate) webhook: std::sync::OnceLock<tokio::sync::mpsc::Sender<AlertEvent>>,
    /// Site -> its open edge session (a number, and what ends it): one per
    /// site, a new one ends the old.
    pub(crate) sessions:
        std::sync::Mutex<std::collections::HashMap<String, (u64, CancellationToken)>>,
}

pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn unix_secs() -> i64 {
    unix_ms() / 1000
}

impl Manager {
    /// Opens an initialised data directory and loads the fleet.
    pub fn open(options: ManagerOptions) -> Result<Arc<Self>> {
        let db = Db::open(&options.data_dir, false)?;
        Self::with_db(db, options)
    }

    pub fn with_db(db: Db, options: ManagerOptions) -> Result<Arc<Self>> {
        let heartbeat_ms = (options.heartbeat.as_millis() as u64).max(100);
        let fleet = load_fleet(&db)?;
        let open_alerts = alerts::load_open(&db.connection())?;
        let (wake, _) = watch::channel(0);
        Ok(Arc::new(Self {
            db,
            data_dir: options.data_dir,
            validator: options.validator,
            heartbeat_ms,
            fleet: RwLock::new(fleet),
            wake,
            flush_now: Notify::new(),
            shutdown: CancellationToken::new(),
            stats: Stats::default(),
            alerts: std::sync::Mutex::new(open_alerts),
            webhook: std::sync::OnceLock::new(),
            sessions: std::sync::Mutex::default(),
        }))
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn heartbeat_ms(&self) -> u64 {
        self.heartbeat_ms
    }

    /// The long poll's longest wait: the heartbeat interval, at most 25 s
    /// (under common proxies' idle timeouts).
    pub fn long_poll_timeout(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.min(25_000))
    }

    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    pub fn published_version(&self) -> u64 {
        self.read().published.version
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Fleet> {
        self.fleet.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Fleet> {
        self.fleet.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn wake_long_polls(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn subscribe_wake(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    pub(crate) fn request_flush(&self) {
        self.flush_now.notify_one();
    }

    pub(crate) async fn flush_requested(&self) {
        self.flush_now.notified().await;
    }

    /// A read of the whole fleet for the dashboard and metrics: a closure
    /// under the read lock, so callers cannot hold it across an await.
    pub fn with_fleet<T>(&self, f: impl FnOnce(&Fleet) -> T) -> T {
        f(&self.read())
    }

    pub(crate) fn audit(&self, actor: &Actor, what: &str, detail: &str) -> Result<()> {
        self.db
            .connection()
            .execute(
                "INSERT INTO audit (at, who, from_addr, what, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![unix_secs(), actor.who, actor.from, what, detail],
            )
            .db("write audit")?;
        Ok(())
    }

    pub(crate) fn setting(&self, key: &str) -> Result<Option<String>> {
        self.db
            .connection()
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
            .db("read setting")
    }

    pub(crate) fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.db
            .connection()
            .execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
            .db("write setting")?;
        Ok(())
    }
}

fn load_fleet(db: &Db) -> Result<Fleet> {
    let started_ms = unix_ms();
    let conn = db.connection();
    let mut fleet = Fleet::default();
    let latest: Option<(i64, String)> = conn
        .query_row(
            "SELECT version, snapshot FROM config_versions ORDER BY version DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .db("read published config")?;
    if let Some((version, snapshot)) = latest {
        let snapshot: Snapshot = serde_json::from_str(&snapshot).map_err(|e| {
            ManagerError::Internal(format!("config version {version} is unreadable: {e}"))
        })?;
        fleet.published = Published::new(version as u64, snapshot);
    }
    let mut stmt = conn
        .prepare(
            "SELECT site, hostname, credential_hash, enrolled, approved, revoked, version,
                    last_seen, config_applied, config_error, config_error_version, report,
                    state, state_since FROM edges",
        )
        .db("read edges")?;
    let rows = stmt
        .query_map([], |r| {
            let error: Option<String> = r.get(9)?;
            let error_version: Option<i64> = r.get(10)?;
            let report: Option<String> = r.get(11)?;
            let state: String = r.get(12)?;
            Ok(EdgeRecord {
                site: r.get(0)?,
                hostname: r.get(1)?,
                credential_hash: r.get(2)?,
                enrolled: r.get(3)?,
                enrolled_ms: r.get::<_, i64>(3)? * 1000,
                seen_floor_ms: if state == "down" { 0 } else { started_ms },
                approved: r.get(4)?,
                revoked: r.get(5)?,
                version: r.get(6)?,
                last_seen_ms: r.get(7)?,
                config_applied: r.get::<_, i64>(8)? as u64,
                config_error: error.map(|error| outpost_protocol::ConfigRejection {
                    version: error_version.unwrap_or(0) as u64,
                    error,
                }),
                // A report this build cannot read is dropped, not fatal:
                // the next heartbeat brings a fresh one.
                report: report
                    .and_then(|r| serde_json::from_str(&r).ok())
                    .map(Arc::new),
                state: parse_state(&state),
                state_since: r.get(13)?,
                dirty: false,
                state_dirty: false,
                traffic_pending: Vec::new(),
                report_changed: false,
                report_written_ms: 0,
                alert_basis: None,
            })
        })
        .db("read edges")?;
    for edge in rows {
        let edge = edge.db("read edge")?;
        fleet
            .by_credential
            .insert(edge.credential_hash.clone(), edge.site.clone());
        fleet.edges.insert(edge.site.clone(), edge);
    }
    drop(stmt);
    let sites: Vec<String> = fleet.edges.keys().cloned().collect();
    // A published version that no longer renders (it was checked when
    // published) must not keep the manager from starting: the fleet view,
    // tokens and a rollback still work; edges asking for it get the error.
    if let Err(e) = fleet.published.render_all(sites.iter().map(String::as_str)) {
        tracing::error!(
            "published config version {} does not render: {e}; publish or roll back",
            fleet.published.version
        );
    }
    // Pending actions: targets not yet done.
    let mut stmt = conn
        .prepare(
            "SELECT a.id, a.action, t.site FROM actions a JOIN action_targets t
             ON t.action_id = a.id WHERE t.state = 'pending' ORDER BY a.id",
        )
        .db("read actions")?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .db("read actions")?;
    for row in rows {
        let (id, action, site) = row.db("read action")?;
        if let Ok(action) = serde_json::from_str(&action) {
            fleet
                .pending
                .entry(site)
                .or_default()
                .push(outpost_protocol::ActionOrder {
                    id: id as u64,
                    action,
                });
        }
    }
    Ok(fleet)
}

pub(crate) fn parse_state(text: &str) -> outpost_protocol::EdgeState {
    use outpost_protocol::EdgeState::*;
    match text {
        "up" => Up,
        "stale" => Stale,
        "revoked" => Revoked,
        "pending" => Pending,
        _ => Down,
    }
}

pub(crate) fn state_changed(
    now_secs: i64,
    edge: &mut EdgeRecord,
    state: outpost_protocol::EdgeState,
) -> bool {
    if edge.state == state {
        return false;
    }
    edge.state = state;
    edge.state_since = now_secs;
    edge.dirty = true;
    edge.state_dirty = true;
    true
}
