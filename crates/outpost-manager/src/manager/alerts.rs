//! Open and closed alerts: the evaluator's findings kept in SQLite (with
//! open and close times), and handed to the webhook when they change.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Manager, unix_secs};
use crate::error::{DbContext, Result};
use crate::model::alerts::{AlertKey, AlertKind, EdgeView, changes, conditions};

/// The manager's version: an edge running another is "version skew".
pub const MANAGER_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub id: i64,
    pub site: String,
    pub kind: AlertKind,
    /// A channel's name, or empty.
    pub subject: String,
    pub detail: String,
    pub opened: i64,
    pub closed: Option<i64>,
}

/// What the webhook receives: one POST per change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// `open` or `close`.
    pub event: String,
    pub alert: Alert,
}

#[derive(Debug, Default)]
pub(crate) struct OpenAlerts {
    pub(crate) by_key: BTreeMap<AlertKey, Alert>,
    /// Evaluations so far.
    pub(crate) rounds: u64,
    /// The next evaluation looks at every edge (one was deleted).
    pub(crate) sweep_next: bool,
}

/// Every this many evaluations (seconds), all edges are looked at, not
/// only those heard from.
pub const FULL_SWEEP_EVERY: u64 = 60;

pub(crate) fn load_open(conn: &rusqlite::Connection) -> Result<OpenAlerts> {
    let mut stmt = conn
        .prepare("SELECT id, site, kind, subject, detail, opened FROM alerts WHERE closed IS NULL")
        .db("read alerts")?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })
        .db("read alerts")?;
    let mut open = OpenAlerts::default();
    for row in rows {
        let (id, site, kind, subject, detail, opened) = row.db("read alert")?;
        let Some(kind) = AlertKind::parse(&kind) else {
            continue;
        };
        let key = AlertKey {
            site: site.clone(),
            kind,
            subject: subject.clone(),
        };
        open.by_key.insert(
            key,
            Alert {
                id,
                site,
                kind,
                subject,
                detail,
                opened,
                closed: None,
            },
        );
    }
    Ok(open)
}

impl Manager {
    /// Evaluates the alert conditions of every edge heard from or changed
    /// since the last evaluation (and of the whole fleet every
    /// [`FULL_SWEEP_EVERY`] calls, or after an edge was deleted); opens and
    /// closes alerts in the database; returns the changes (also sent to
    /// the webhook). Called every second: at 10,000 edges a full pass
    /// each time was most of the manager's steady-state CPU.
    pub fn evaluate_alerts(&self) -> Result<Vec<AlertEvent>> {
        let mut open = self.alerts.lock().unwrap_or_else(|p| p.into_inner());
        open.rounds += 1;
        let everything =
            open.rounds % FULL_SWEEP_EVERY == 1 || std::mem::take(&mut open.sweep_next);
        let (keys, now_true) = {
            let mut fleet = self.write();
            let mut sites: Vec<String> = Vec::new();
            for edge in fleet.edges.values_mut() {
                let basis = (edge.last_seen_ms, edge.state);
                if everything || edge.alert_basis != Some(basis) {
                    edge.alert_basis = Some(basis);
                    sites.push(edge.site.clone());
                }
            }
            let now_true = conditions(
                sites
                    .iter()
                    .filter_map(|site| fleet.edges.get(site))
                    .map(|e| EdgeView {
                        site: &e.site,
                        state: e.state,
                        version: e.version.as_deref(),
                        config_error: e.config_error.as_ref().map(|r| r.error.as_str()),
                        report: e.report.as_deref(),
                    }),
                MANAGER_VERSION,
            );
            let keys: BTreeSet<AlertKey> = if everything {
                open.by_key.keys().cloned().collect()
            } else {
                let by_key = &open.by_key;
                sites
                    .into_iter()
                    .flat_map(|site| {
                        let first = AlertKey {
                            site: site.clone(),
                            kind: AlertKind::SiteDown,
                            subject: String::new(),
                        };
                        by_key
                            .range(first..)
                            .take_while(move |(k, _)| k.site == site)
                            .map(|(k, _)| k.clone())
                    })
                    .collect()
            };
            (keys, now_true)
        };
        let (to_open, to_close) = changes(&keys, &now_true);
        if to_open.is_empty() && to_close.is_empty() {
            return Ok(Vec::new());
        }
        let now = unix_secs();
        let mut events = Vec::new();
        {
            let mut conn = self.db().connection();
            let tx = conn.transaction().db("begin alerts")?;
            for (key, detail) in to_open {
                tx.execute(
                    "INSERT INTO alerts (site, kind, subject, detail, opened) VALUES (?1, ?2, ?3, ?4, ?5)",
                    rusqlite::params![key.site, key.kind.as_str(), key.subject, detail, now],
                )
                .db("open alert")?;
                let alert = Alert {
                    id: tx.last_insert_rowid(),
                    site: key.site.clone(),
                    kind: key.kind,
                    subject: key.subject.clone(),
                    detail,
                    opened: now,
                    closed: None,
                };
                events.push(AlertEvent {
                    event: "open".into(),
                    alert: alert.clone(),
                });
                open.by_key.insert(key, alert);
            }
            for key in to_close {
                if let Some(mut alert) = open.by_key.remove(&key) {
                    tx.execute(
                        "UPDATE alerts SET closed = ?2 WHERE id = ?1",
                        rusqlite::params![alert.id, now],
                    )
                    .db("close alert")?;
                    alert.closed = Some(now);
                    events.push(AlertEvent {
                        event: "close".into(),
                        alert,
                    });
                }
            }
            tx.commit().db("commit alerts")?;
        }
        drop(open);
        for event in &events {
            tracing::info!(site = %event.alert.site, kind = event.alert.kind.as_str(), subject = %event.alert.subject, "alert {}: {}", event.event, event.alert.detail);
            self.send_webhook(event.clone());
        }
        Ok(events)
    }

    /// Open alerts, oldest first (from memory).
    pub fn open_alerts(&self) -> Vec<Alert> {
        let open = self.alerts.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<Alert> = open.by_key.values().cloned().collect();
        list.sort_by_key(|a| a.id);
        list
    }

    /// Open and closed alerts, newest first, at most `limit`; for one
    /// site if given.
    pub fn alert_history(&self, site: Option<&str>, limit: u32) -> Result<Vec<Alert>> {
        let conn = self.db().connection();
        let mut stmt = conn
            .prepare(
                "SELECT id, site, kind, subject, detail, opened, closed FROM alerts
                 WHERE ?1 IS NULL OR site = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .db("read alerts")?;
        let rows = stmt
            .query_map(rusqlite::params![site, limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                ))
            })
            .db("read alerts")?;
        let mut out = Vec::new();
        for row in rows {
            let (id, site, kind, subject, detail, opened, closed) = row.db("read alert")?;
            if let Some(kind) = AlertKind::parse(&kind) {
                out.push(Alert {
                    id,
                    site,
                    kind,
                    subject,
                    detail,
                    opened,
                    closed,
                });
            }
        }
        Ok(out)
    }
}
