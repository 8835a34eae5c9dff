//! The edge side: enrolment, heartbeats, long polls, the desired config;
//! and the fleet views built from them (edge list, readiness).
//!
//! Enrolment policy: a site name belongs to one edge. Enrolling a name
//! that is already enrolled (revoked or not) is refused with 409; an admin
//! deletes the old edge first (`DELETE /api/v1/edges/{site}`), which is
//! the deliberate step that lets a reinstalled machine take the name. So a
//! leaked join token can never take over a running site.

use std::sync::Arc;

use outpost_protocol::{
    ActionOrder, ActionResult, DesiredConfig, EdgeList, EdgeState, EdgeSummary, EnrolReply,
    EnrolRequest, Heartbeat, HeartbeatReply, Readiness,
};
use rusqlite::OptionalExtension;

use super::{Actor, Manager, state_changed, unix_ms, unix_secs};
use crate::error::{DbContext, ManagerError, Result};
use crate::fleet::EdgeRecord;
use crate::model::events::events;
use crate::model::readiness::{SiteInput, readiness};
use crate::scope::check_name;
use crate::secret;

/// What the long poll waits for.
#[derive(Debug, Clone, Copy)]
pub struct WaitFor {
    pub config_version: u64,
    pub after_action: u64,
}

fn rfc3339(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Manager {
    pub fn approve_new_edges(&self) -> Result<bool> {
        Ok(self.setting("approve_new_edges")?.as_deref() == Some("true"))
    }

    pub fn set_approve_new_edges(&self, on: bool, actor: &Actor) -> Result<()> {
        self.set_setting("approve_new_edges", if on { "true" } else { "false" })?;
        self.audit(actor, "settings", &format!("approve_new_edges = {on}"))
    }

    /// `POST /edge/v1/enrol`.
    pub fn enrol(&self, request: &EnrolRequest, from: &str) -> Result<EnrolReply> {
        check_name("site", &request.site)?;
        let now = unix_secs();
        let hash = secret::digest(&request.join_token);
        let token: Option<(i64, String, Option<i64>, Option<i64>)> = self
            .db()
            .connection()
            .query_row(
                "SELECT id, label, expires, revoked FROM join_tokens WHERE hash = ?1",
                [&hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .db("read join token")?;
        let Some((token_id, label, expires, revoked)) = token else {
            return Err(ManagerError::Unauthorized("unknown join token".into()));
        };
        if let Some(at) = revoked {
            return Err(ManagerError::Unauthorized(format!(
                "join token {label:?} was revoked at {}",
                rfc3339(at)
            )));
        }
        if let Some(at) = expires.filter(|at| *at <= now) {
            return Err(ManagerError::Unauthorized(format!(
                "join token {label:?} expired at {}",
                rfc3339(at)
            )));
        }
        let approved = !self.approve_new_edges()?;
        let credential = secret::generate("oec")?;
        let credential_hash = secret::digest(&credential);
        let hostname: String = request.hostname.chars().take(253).collect();
        let taken = || {
            ManagerError::Conflict(format!(
                "site {} is already enrolled: delete it on the manager first \
                 (outpost manager edge delete {0}) to enrol a new edge under that name",
                request.site
            ))
        };
        // Checked under the read lock and written to SQLite without the
        // fleet lock, so heartbeats never wait on an enrolment's
        // transaction; the site's primary key settles a race of two.
        if self.read().edges.contains_key(&request.site) {
            return Err(taken());
        }
        let version: String = request.version.chars().take(64).collect();
        let state = if approved {
            EdgeState::Up
        } else {
            EdgeState::Pending
        };
        {
            let mut conn = self.db().connection();
            let tx = conn.transaction().db("begin enrol")?;
            let inserted = tx.execute(
                "INSERT INTO edges (site, hostname, credential_hash, enrolled, join_token_id,
                    approved, version, state, state_since)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?4)",
                rusqlite::params![
                    request.site,
                    hostname,
                    credential_hash,
                    now,
                    token_id,
                    approved,
                    version,
                    state.as_str()
                ],
            );
            match inserted {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    return Err(taken());
                }
                other => other.db("insert edge")?,
            };
            tx.execute(
                "UPDATE join_tokens SET uses = uses + 1 WHERE id = ?1",
                [token_id],
            )
            .db("count join token use")?;
            tx.execute(
                "INSERT INTO edge_states (site, at, state) VALUES (?1, ?2, ?3)",
                rusqlite::params![request.site, now, state.as_str()],
            )
            .db("record state")?;
            tx.execute(
                "INSERT INTO audit (at, who, from_addr, what, detail) VALUES (?1, ?2, ?3, 'enrol', ?4)",
                rusqlite::params![
                    now,
                    format!("join-token:{label}"),
                    from,
                    format!(
                        "site {} (host {hostname}, version {version}, approved {approved})",
                        request.site
                    )
                ],
            )
            .db("audit enrol")?;
            tx.commit().db("commit enrol")?;
        }
        {
            let mut fleet = self.write();
            fleet
                .by_credential
                .insert(credential_hash.clone(), request.site.clone());
            fleet.edges.insert(
                request.site.clone(),
                EdgeRecord {
                    site: request.site.clone(),
                    hostname,
                    credential_hash,
                    enrolled: now,
                    enrolled_ms: unix_ms(),
                    seen_floor_ms: 0,
                    approved,
                    revoked: None,
                    version: Some(version),
                    last_seen_ms: None,
                    config_applied: 0,
                    config_error: None,
                    report: None,
                    state,
                    state_since: now,
                    dirty: false,
                    state_dirty: false,
                    traffic_pending: Vec::new(),
                    report_changed: false,
                    report_written_ms: 0,
                    alert_basis: None,
                },
            );
            let _ = fleet.published.rendered_for(&request.site);
        }
        self.stats
            .enrolments_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(EnrolReply {
            site: request.site.clone(),
            credential,
            approved,
            heartbeat_ms: self.heartbeat_ms(),
        })
    }

    /// The site a bearer credential belongs to; revoked edges are refused
    /// with the time of their revocation.
    pub fn authenticate_edge(&self, credential: &str) -> Result<String> {
        let hash = secret::digest(credential);
        let fleet = self.read();
        let site = fleet
            .by_credential
            .get(&hash)
            .ok_or_else(|| ManagerError::Unauthorized("unknown edge credential".into()))?;
        let edge = fleet
            .edges
            .get(site)
            .ok_or_else(|| ManagerError::Unauthorized("unknown edge credential".into()))?;
        // The map lookup was by digest; compare again in constant time so
        // no path depends on how much of a digest matched.
        if !secret::constant_time_eq(edge.credential_hash.as_bytes(), hash.as_bytes()) {
            return Err(ManagerError::Unauthorized("unknown edge credential".into()));
        }
        if let Some(at) = edge.revoked {
            return Err(ManagerError::Forbidden(format!(
                "this edge was revoked at {}",
                rfc3339(at)
            )));
        }
        Ok(site.clone())
    }

    fn reply_for(&self, fleet: &crate::fleet::Fleet, site: &str) -> HeartbeatReply {
        let approved = fleet.edges.get(site).is_some_and(|e| e.approved);
        HeartbeatReply {
            desired_config_version: if approved { fleet.published.version } else { 0 },
            heartbeat_ms: self.heartbeat_ms(),
            approved,
            actions: if approved {
                fleet.pending.get(site).cloned().unwrap_or_default()
            } else {
                Vec::new()
            },
        }
    }

    /// `POST /edge/v1/heartbeat` from `site` (authenticated).
    ///
    /// The report is kept until the next one: 10,000 of them are most of
    /// the manager's memory.
    pub fn heartbeat(&self, site: &str, heartbeat: Heartbeat) -> Result<HeartbeatReply> {
        if let Some(problem) = crate::model::limits::heartbeat_problem(&heartbeat) {
            return Err(ManagerError::BadRequest(format!(
                "heartbeat refused: {problem}"
            )));
        }
        let now_ms = unix_ms();
        self.stats
            .heartbeats_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut finished: Vec<ActionResult> = Vec::new();
        let (reply, changed) = {
            let mut fleet = self.write();
            let fleet = &mut *fleet;
            let Some(edge) = fleet.edges.get_mut(site) else {
                return Err(ManagerError::Unauthorized("unknown edge".into()));
            };
            let before = outpost_protocol::AppliedConfig {
                applied_version: edge.config_applied,
                rejected: edge.config_error.clone(),
            };
            let news = events(
                site,
                now_ms / 1000,
                (edge.report.as_deref(), &before),
                (&heartbeat.report, &heartbeat.config),
            );
            edge.last_seen_ms = Some(now_ms);
            edge.version = Some(heartbeat.report.version.clone());
            let mut changed = edge.config_applied != heartbeat.config.applied_version
                || edge.config_error != heartbeat.config.rejected;
            edge.config_applied = heartbeat.config.applied_version;
            edge.config_error = heartbeat.config.rejected;
            let moved = crate::model::traffic::between(edge.report.as_deref(), &heartbeat.report);
            let today = crate::model::traffic::day(now_ms / 1000);
            match edge.traffic_pending.last_mut() {
                Some((day, traffic)) if *day == today => traffic.add(moved),
                _ => edge.traffic_pending.push((today, moved)),
            }
            edge.report_changed |= edge
                .report
                .as_ref()
                .is_none_or(|old| old.channels != heartbeat.report.channels);
            edge.report = Some(Arc::new(compact(heartbeat.report)));
            edge.dirty = true;
            let state = edge.compute_state(now_ms, self.heartbeat_ms());
            changed |= state_changed(now_ms / 1000, edge, state);
            if let Some(pending) = fleet.pending.get_mut(site) {
                for result in heartbeat.action_results {
                    if let Some(at) = pending.iter().position(|o| o.id == result.id) {
                        pending.remove(at);
                        finished.push(result);
                    }
                }
                if pending.is_empty() {
                    fleet.pending.remove(site);
                }
            }
            // Bounded: a stuck flusher must not grow memory without end.
            if fleet.events.len() < 100_000 {
                fleet.events.extend(news);
            }
            (self.reply_for(fleet, site), changed)
        };
        if !finished.is_empty() {
            self.record_action_results(site, &finished)?;
        }
        if changed {
            self.request_flush();
        }
        Ok(reply)
    }

    /// The reply a long poll gives now, if anything concerns it.
    fn wait_ready(&self, site: &str, wait: WaitFor) -> Result<Option<HeartbeatReply>> {
        let fleet = self.read();
        let edge = fleet
            .edges
            .get(site)
            .ok_or_else(|| ManagerError::Unauthorized("unknown edge".into()))?;
        if let Some(at) = edge.revoked {
            return Err(ManagerError::Forbidden(format!(
                "this edge was revoked at {}",
                rfc3339(at)
            )));
        }
        let reply = self.reply_for(&fleet, site);
        let news = reply.desired_config_version != wait.config_version
            || reply.actions.iter().any(|a| a.id > wait.after_action);
        Ok(news.then_some(reply))
    }

    /// `GET /edge/v1/wait`: answers as soon as the desired version differs
    /// from the edge's or an action after its last is waiting; else after
    /// [`Manager::long_poll_timeout`], or at once when the manager stops.
    pub async fn wait(&self, site: &str, wait: WaitFor) -> Result<HeartbeatReply> {
        let _open = super::Held::new(&self.stats.long_polls_open);
        // Subscribed before the first check, so a publish between the check
        // and the wait is not lost.
        let mut wake = self.subscribe_wake();
        let deadline = tokio::time::sleep(self.long_poll_timeout());
        tokio::pin!(deadline);
        loop {
            if let Some(reply) = self.wait_ready(site, wait)? {
                return Ok(reply);
            }
            tokio::select! {
                changed = wake.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                () = &mut deadline => break,
                () = self.shutdown_token().cancelled() => break,
            }
        }
        let fleet = self.read();
        Ok(self.reply_for(&fleet, site))
    }

    /// `GET /edge/v1/config`.
    pub fn desired_config(&self, site: &str) -> Result<DesiredConfig> {
        // After a publish every edge asks at once: the read lock serves
        // them all in parallel; only a site never rendered needs the write.
        {
            let fleet = self.read();
            let approved = fleet.edges.get(site).is_some_and(|e| e.approved);
            if let (true, Some(doc)) = (approved, fleet.published.rendered.get(site)) {
                return Ok(DesiredConfig {
                    version: fleet.published.version,
                    toml: doc.toml.clone(),
                });
            }
        }
        let mut fleet = self.write();
        let approved = fleet.edges.get(site).is_some_and(|e| e.approved);
        if !approved {
            return Err(ManagerError::Forbidden(
                "this edge is awaiting approval on the manager".into(),
            ));
        }
        let version = fleet.published.version;
        let doc = fleet
            .published
            .rendered_for(site)
            .map_err(|e| ManagerError::Internal(format!("rendering the config: {e}")))?;
        Ok(DesiredConfig {
            version,
            toml: doc.toml.clone(),
        })
    }

    /// Recomputes every edge's state at `now_ms`; records the changes.
    /// Returns the sites whose state changed.
    pub fn tick(&self, now_ms: i64) -> Vec<(String, EdgeState)> {
        let mut changes = Vec::new();
        {
            let mut fleet = self.write();
            for edge in fleet.edges.values_mut() {
                let state = edge.compute_state(now_ms, self.heartbeat_ms());
                if state_changed(now_ms / 1000, edge, state) {
                    changes.push((edge.site.clone(), state));
                }
            }
        }
        if !changes.is_empty() {
            self.request_flush();
        }
        changes
    }

    fn summary(&self, fleet: &crate::fleet::Fleet, edge: &EdgeRecord) -> EdgeSummary {
        let report = edge.report.as_deref();
        EdgeSummary {
            site: edge.site.clone(),
            groups: fleet
                .published
                .snapshot
                .groups_of(&edge.site)
                .into_iter()
                .map(str::to_string)
                .collect(),
            state: edge.state,
            state_since: edge.state_since,
            last_seen: edge.last_seen_ms.map(|ms| ms / 1000),
            version: edge.version.clone(),
            hostname: Some(edge.hostname.clone()),
            config_version_applied: edge.config_applied,
            config_error: edge
                .config_error
                .as_ref()
                .map(|r| format!("version {}: {}", r.version, r.error)),
            disk_used: report.map(|r| r.disk_used),
            disk_limit: report.map(|r| r.disk_limit),
            hit_ratio_bytes: report.map(|r| r.hit_ratio_bytes),
            traffic: None,
        }
    }

    /// `GET /api/v1/edges`.
    pub fn edge_list(&self) -> EdgeList {
        let fleet = self.read();
        EdgeList {
            edges: fleet
                .edges
                .values()
                .map(|e| self.summary(&fleet, e))
                .collect(),
        }
    }

    pub fn edge(&self, site: &str) -> Result<EdgeSummary> {
        let fleet = self.read();
        let edge = fleet
            .edges
            .get(site)
            .ok_or_else(|| ManagerError::NotFound(format!("no edge enrolled as {site}")))?;
        Ok(self.summary(&fleet, edge))
    }

    /// `GET /api/v1/readiness`: over the approved, unrevoked edges whose
    /// published config has the channel. From memory only.
    pub fn readiness(&self, channel: &str, path: Option<&str>) -> Readiness {
        let fleet = self.read();
        let inputs = fleet.edges.values().filter_map(|edge| {
            // Revoked and pending edges run no managed config: they are
            // not sites the channel is assigned to.
            if edge.revoked.is_some() || !edge.approved {
                return None;
            }
            let doc = fleet.published.rendered.get(&edge.site)?;
            if !doc.channels().any(|c| c == channel) {
                return None;
            }
            let report = edge.report.as_deref();
            Some(SiteInput {
                site: &edge.site,
                edge_state: edge.state,
                reported: report.is_some(),
                channel: report.and_then(|r| r.channels.iter().find(|c| c.name == channel)),
            })
        });
        readiness(channel, path, inputs)
    }

    /// Revokes an edge: its credential is refused from now on.
    pub fn revoke_edge(&self, site: &str, actor: &Actor) -> Result<()> {
        let now = unix_secs();
        {
            let mut fleet = self.write();
            let edge = fleet
                .edges
                .get_mut(site)
                .ok_or_else(|| ManagerError::NotFound(format!("no edge enrolled as {site}")))?;
            if edge.revoked.is_some() {
                return Ok(());
            }
            self.db()
                .connection()
                .execute(
                    "UPDATE edges SET revoked = ?2, state = 'revoked', state_since = ?2 WHERE site = ?1",
                    rusqlite::params![site, now],
                )
                .db("revoke edge")?;
            edge.revoked = Some(now);
            state_changed(now, edge, EdgeState::Revoked);
            fleet.pending.remove(site);
        }
        self.request_flush();
        self.abandon_actions(site, "the edge was revoked")?;
        self.audit(actor, "edge revoke", site)?;
        self.wake_long_polls();
        Ok(())
    }

    pub fn approve_edge(&self, site: &str, actor: &Actor) -> Result<()> {
        {
            let mut fleet = self.write();
            let edge = fleet
                .edges
                .get_mut(site)
                .ok_or_else(|| ManagerError::NotFound(format!("no edge enrolled as {site}")))?;
            self.db()
                .connection()
                .execute("UPDATE edges SET approved = 1 WHERE site = ?1", [site])
                .db("approve edge")?;
            edge.approved = true;
        }
        self.tick(unix_ms());
        self.audit(actor, "edge approve", site)?;
        self.wake_long_polls();
        Ok(())
    }

    /// Forgets an edge, so its site name can enrol again.
    pub fn delete_edge(&self, site: &str, actor: &Actor) -> Result<()> {
        {
            let mut fleet = self.write();
            let edge = fleet
                .edges
                .remove(site)
                .ok_or_else(|| ManagerError::NotFound(format!("no edge enrolled as {site}")))?;
            fleet.by_credential.remove(&edge.credential_hash);
            fleet.pending.remove(site);
            self.db()
                .connection()
                .execute("DELETE FROM edges WHERE site = ?1", [site])
                .db("delete edge")?;
        }
        // Its open alerts close at the next evaluation.
        self.alerts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sweep_next = true;
        self.abandon_actions(site, "the edge was deleted")?;
        self.audit(actor, "edge delete", site)?;
        self.wake_long_polls();
        Ok(())
    }

    /// Marks the site's pending action targets failed: it will never
    /// report them.
    fn abandon_actions(&self, site: &str, why: &str) -> Result<()> {
        self.db()
            .connection()
            .execute(
                "UPDATE action_targets SET state = 'failed', detail = ?2, finished = ?3
                 WHERE site = ?1 AND state = 'pending'",
                rusqlite::params![site, why, unix_secs()],
            )
            .db("abandon actions")?;
        Ok(())
    }

    /// The pending actions of a site (for tests and the dashboard).
    pub fn pending_actions(&self, site: &str) -> Vec<ActionOrder> {
        self.read().pending.get(site).cloned().unwrap_or_default()
    }
}

/// A report as kept: vectors decoded from JSON grow by doubling, so 20
/// channels would hold room for 32 until the next heartbeat.
fn compact(mut report: outpost_protocol::EdgeReport) -> outpost_protocol::EdgeReport {
    for channel in &mut report.channels {
        channel.missing.shrink_to_fit();
        channel.problems.shrink_to_fit();
    }
    report.channels.shrink_to_fit();
    report
}
