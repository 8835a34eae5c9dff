//! Background work of a serving manager: writes heartbeat data to SQLite
//! in batches (one transaction every [`FLUSH_EVERY`], or at once when a
//! state changes), and recomputes edge states every second so a silent
//! edge turns stale and down on time.

use std::sync::Arc;
use std::time::Duration;

use outpost_protocol::EdgeState;

use crate::error::{DbContext, Result};
use crate::manager::{Manager, unix_ms};
use crate::model::events::SiteEvent;

pub const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// A report whose channels did not change is written at most this often:
/// it is kept only so a restarted manager shows each site as it was, and
/// rewriting 10,000 reports of a few kB every interval was a good part of
/// the manager's CPU and of the WAL's churn.
pub const REPORT_WRITE_EVERY: Duration = Duration::from_secs(300);

/// The newest events kept per site; a site whose syncs flap does not grow
/// the database without end.
pub const EVENTS_PER_SITE: i64 = 500;

/// Site events, state changes and closed alerts older than this are
/// deleted; daily traffic is kept [`TRAFFIC_DAYS`].
pub const HISTORY: Duration = Duration::from_secs(90 * 86_400);
pub const TRAFFIC_DAYS: i64 = 400;
/// How often the old history is pruned.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

struct Row {
    site: String,
    version: Option<String>,
    last_seen: Option<i64>,
    applied: u64,
    error: Option<(u64, String)>,
    /// `None`: leave the stored report as it is.
    report: Option<Arc<outpost_protocol::EdgeReport>>,
    state: EdgeState,
    state_since: i64,
    state_changed: bool,
    traffic: Vec<(i64, crate::model::traffic::Traffic)>,
}

impl Manager {
    /// Writes every changed edge in one transaction. Returns how many.
    pub fn flush(&self) -> Result<usize> {
        let now_ms = unix_ms();
        let report_every = REPORT_WRITE_EVERY.as_millis() as i64;
        let (rows, events): (Vec<Row>, Vec<SiteEvent>) = {
            let mut fleet = self.write();
            let events = std::mem::take(&mut fleet.events);
            let rows = fleet
                .edges
                .values_mut()
                .filter(|e| e.dirty)
                .map(|e| {
                    e.dirty = false;
                    let state_changed = std::mem::take(&mut e.state_dirty);
                    let write_report = e.report.is_some()
                        && (e.report_changed || now_ms - e.report_written_ms >= report_every);
                    if write_report {
                        e.report_changed = false;
                        e.report_written_ms = now_ms;
                    }
                    Row {
                        state_changed,
                        traffic: std::mem::take(&mut e.traffic_pending),
                        site: e.site.clone(),
                        version: e.version.clone(),
                        last_seen: e.last_seen_ms,
                        applied: e.config_applied,
                        error: e
                            .config_error
                            .as_ref()
                            .map(|r| (r.version, r.error.clone())),
                        report: e.report.clone().filter(|_| write_report),
                        state: e.state,
                        state_since: e.state_since,
                    }
                })
                .collect();
            (rows, events)
        };
        if rows.is_empty() && events.is_empty() {
            return Ok(0);
        }
        // Serialised outside the fleet lock: heartbeats never wait on it.
        let encoded: Vec<Option<String>> = rows
            .iter()
            .map(|r| {
                r.report
                    .as_ref()
                    .and_then(|r| serde_json::to_string(&**r).ok())
            })
            .collect();
        let mut conn = self.db().connection();
        let tx = conn.transaction().db("begin flush")?;
        {
            let mut update = tx
                .prepare_cached(
                    "UPDATE edges SET version = ?2, last_seen = ?3, config_applied = ?4,
                        config_error_version = ?5, config_error = ?6,
                        report = coalesce(?7, report), state = ?8, state_since = ?9
                     WHERE site = ?1",
                )
                .db("prepare flush")?;
            let mut history = tx
                .prepare_cached("INSERT INTO edge_states (site, at, state) VALUES (?1, ?2, ?3)")
                .db("prepare history")?;
            let mut traffic = tx
                .prepare_cached(
                    "INSERT INTO site_traffic (site, day, lan_out, wan_in, saved, from_cache)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (site, day) DO UPDATE SET
                        lan_out = lan_out + excluded.lan_out,
                        wan_in = wan_in + excluded.wan_in,
                        saved = saved + excluded.saved,
                        from_cache = from_cache + excluded.from_cache",
                )
                .db("prepare traffic")?;
            for (row, report) in rows.iter().zip(&encoded) {
                update
                    .execute(rusqlite::params![
                        row.site,
                        row.version,
                        row.last_seen,
                        row.applied as i64,
                        row.error.as_ref().map(|e| e.0 as i64),
                        row.error.as_ref().map(|e| e.1.as_str()),
                        report,
                        row.state.as_str(),
                        row.state_since
                    ])
                    .db("flush edge")?;
                for (day, moved) in &row.traffic {
                    if *moved == crate::model::traffic::Traffic::default() {
                        continue;
                    }
                    // SQLite integers are i64: a counter past that is a
                    // broken edge, not traffic.
                    let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                    traffic
                        .execute(rusqlite::params![
                            row.site,
                            day,
                            signed(moved.lan_out),
                            signed(moved.wan_in),
                            signed(moved.saved),
                            signed(moved.from_cache)
                        ])
                        .db("record traffic")?;
                }
                if row.state_changed {
                    history
                        .execute(rusqlite::params![
                            row.site,
                            row.state_since,
                            row.state.as_str()
                        ])
                        .db("record state")?;
                }
            }
        }
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO site_events (site, at, kind, detail) VALUES (?1, ?2, ?3, ?4)",
                )
                .db("prepare events")?;
            let mut trim = tx
                .prepare_cached(
                    "DELETE FROM site_events WHERE id IN (
                        SELECT id FROM site_events WHERE site = ?1
                        ORDER BY at DESC, id DESC LIMIT -1 OFFSET ?2)",
                )
                .db("prepare event trim")?;
            let mut sites = std::collections::BTreeSet::new();
            for e in &events {
                insert
                    .execute(rusqlite::params![e.site, e.at, e.kind, e.detail])
                    .db("write event")?;
                sites.insert(e.site.as_str());
            }
            for site in sites {
                trim.execute(rusqlite::params![site, EVENTS_PER_SITE])
                    .db("trim events")?;
            }
        }
        tx.commit().db("commit flush")?;
        Ok(rows.len())
    }

    /// Deletes history older than [`HISTORY`] (site events, state changes,
    /// closed alerts, ended sessions) and daily traffic older than
    /// [`TRAFFIC_DAYS`]. Returns the rows deleted.
    pub fn prune_history(&self, now_ms: i64) -> Result<usize> {
        let before = now_ms / 1000 - HISTORY.as_secs() as i64;
        let first_day = crate::model::traffic::day(now_ms / 1000) - TRAFFIC_DAYS;
        let conn = self.db().connection();
        let mut deleted = 0;
        for (sql, bound) in [
            ("DELETE FROM site_events WHERE at < ?1", before),
            ("DELETE FROM edge_states WHERE at < ?1", before),
            (
                "DELETE FROM alerts WHERE closed IS NOT NULL AND closed < ?1",
                before,
            ),
            ("DELETE FROM site_traffic WHERE day < ?1", first_day),
        ] {
            deleted += conn.execute(sql, [bound]).db("prune history")?;
        }
        Ok(deleted)
    }

    /// Runs until shutdown: the state ticker and the flusher; flushes once
    /// more on the way out.
    pub async fn run_background(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Not at once: a start is busy enough.
        let mut prune = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(60),
            PRUNE_EVERY,
        );
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let flush_now = tokio::select! {
                _ = tick.tick() => {
                    let changes = self.tick(unix_ms());
                    self.on_state_changes(&changes);
                    let me = self.clone();
                    // SQLite work off the async workers.
                    match tokio::task::spawn_blocking(move || me.evaluate_alerts()).await {
                        Ok(Err(e)) => tracing::error!("evaluating alerts: {e}"),
                        Err(e) => tracing::error!("alert task: {e}"),
                        Ok(Ok(_)) => {}
                    }
                    false
                }
                _ = flush.tick() => true,
                _ = prune.tick() => {
                    let me = self.clone();
                    match tokio::task::spawn_blocking(move || me.prune_history(unix_ms())).await {
                        Ok(Ok(n)) if n > 0 => tracing::info!("pruned {n} rows of old history"),
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::error!("pruning old history: {e}"),
                        Err(e) => tracing::error!("prune task: {e}"),
                    }
                    false
                }
                () = self.flush_requested() => true,
                () = self.shutdown_token().cancelled() => break,
            };
            if flush_now {
                self.flush_blocking().await;
            }
        }
        self.flush_blocking().await;
    }

    async fn flush_blocking(self: &Arc<Self>) {
        let me = self.clone();
        match tokio::task::spawn_blocking(move || me.flush()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!("writing heartbeats to the database: {e}"),
            Err(e) => tracing::error!("flush task: {e}"),
        }
    }

    fn on_state_changes(&self, changes: &[(String, EdgeState)]) {
        for (site, state) in changes {
            tracing::info!(site = %site, state = %state, "edge state changed");
        }
    }
}
