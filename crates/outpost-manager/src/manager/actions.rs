//! Actions: sync a channel, purge/pin/unpin a URL, for the whole fleet, a
//! group or a site. Each target site gets the order in its next heartbeat
//! reply (or its long poll, at once) and reports the result; the status
//! shows each site's progress.

use outpost_protocol::{
    ActionOrder, ActionResult, ActionSiteStatus, ActionState, ActionStatus, FleetAction,
};

use super::{Actor, Manager, unix_secs};
use crate::error::{DbContext, ManagerError, Result};
use crate::scope::Scope;

fn action_state(text: &str) -> ActionState {
    match text {
        "done" => ActionState::Done,
        "failed" => ActionState::Failed,
        _ => ActionState::Pending,
    }
}

impl Manager {
    /// The enrolled, approved, unrevoked sites a scope names (published
    /// group membership).
    pub fn sites_in_scope(&self, scope: &Scope) -> Vec<String> {
        let fleet = self.read();
        let eligible = |site: &str| {
            fleet
                .edges
                .get(site)
                .is_some_and(|e| e.approved && e.revoked.is_none())
        };
        match scope {
            Scope::Global => fleet
                .edges
                .keys()
                .filter(|s| eligible(s))
                .cloned()
                .collect(),
            Scope::Group(g) => fleet
                .published
                .snapshot
                .groups
                .get(g)
                .map(|g| g.sites.iter().filter(|s| eligible(s)).cloned().collect())
                .unwrap_or_default(),
            Scope::Site(s) if eligible(s) => vec![s.clone()],
            Scope::Site(_) => Vec::new(),
        }
    }

    pub fn create_action(
        &self,
        action: FleetAction,
        scope: &Scope,
        actor: &Actor,
    ) -> Result<ActionStatus> {
        let sites = self.sites_in_scope(scope);
        if sites.is_empty() {
            return Err(ManagerError::BadRequest(format!(
                "{scope} holds no enrolled, approved edge: nothing to do"
            )));
        }
        let json =
            serde_json::to_string(&action).map_err(|e| ManagerError::Internal(e.to_string()))?;
        let created = unix_secs();
        let id = {
            let mut conn = self.db().connection();
            let tx = conn.transaction().db("begin action")?;
            tx.execute(
                "INSERT INTO actions (action, scope, created, created_by) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![json, scope.to_string(), created, actor.who],
            )
            .db("write action")?;
            let id = tx.last_insert_rowid();
            for site in &sites {
                tx.execute(
                    "INSERT INTO action_targets (action_id, site, state) VALUES (?1, ?2, 'pending')",
                    rusqlite::params![id, site],
                )
                .db("write action target")?;
            }
            tx.execute(
                "INSERT INTO audit (at, who, from_addr, what, detail) VALUES (?1, ?2, ?3, 'action', ?4)",
                rusqlite::params![
                    created,
                    actor.who,
                    actor.from,
                    format!("#{id} {action} on {scope} ({} sites)", sites.len())
                ],
            )
            .db("audit action")?;
            tx.commit().db("commit action")?;
            id as u64
        };
        {
            let mut fleet = self.write();
            for site in &sites {
                fleet
                    .pending
                    .entry(site.clone())
                    .or_default()
                    .push(ActionOrder {
                        id,
                        action: action.clone(),
                    });
            }
        }
        self.wake_long_polls();
        self.action_status(id)
    }

    /// `GET /api/v1/actions/{id}`.
    pub fn action_status(&self, id: u64) -> Result<ActionStatus> {
        let conn = self.db().connection();
        let head: (String, String, i64, String) = conn
            .query_row(
                "SELECT action, scope, created, created_by FROM actions WHERE id = ?1",
                [id as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => {
                    ManagerError::NotFound(format!("no action {id}"))
                }
                e => ManagerError::Db {
                    context: "read action".into(),
                    source: e,
                },
            })?;
        let action: FleetAction = serde_json::from_str(&head.0)
            .map_err(|e| ManagerError::Internal(format!("action {id}: {e}")))?;
        let mut stmt = conn
            .prepare(
                "SELECT site, state, detail FROM action_targets WHERE action_id = ?1 ORDER BY site",
            )
            .db("read action targets")?;
        let sites = stmt
            .query_map([id as i64], |r| {
                Ok(ActionSiteStatus {
                    site: r.get(0)?,
                    state: action_state(&r.get::<_, String>(1)?),
                    detail: r.get(2)?,
                })
            })
            .db("read action targets")?
            .collect::<Result<Vec<_>, _>>()
            .db("read action targets")?;
        Ok(ActionStatus {
            id,
            action,
            scope: head.1,
            created: head.2,
            created_by: head.3,
            sites,
        })
    }

    pub(crate) fn record_action_results(&self, site: &str, results: &[ActionResult]) -> Result<()> {
        let now = unix_secs();
        let mut conn = self.db().connection();
        let tx = conn.transaction().db("begin action results")?;
        for result in results {
            let state = if result.ok { "done" } else { "failed" };
            let detail: String = result.detail.chars().take(2000).collect();
            tx.execute(
                "UPDATE action_targets SET state = ?3, detail = ?4, finished = ?5
                 WHERE action_id = ?1 AND site = ?2",
                rusqlite::params![result.id as i64, site, state, detail, now],
            )
            .db("write action result")?;
        }
        tx.commit().db("commit action results")
    }

    /// Recent actions, newest first (for the dashboard and the API list).
    pub fn recent_actions(&self, limit: u32) -> Result<Vec<ActionStatus>> {
        let ids: Vec<i64> = {
            let conn = self.db().connection();
            let mut stmt = conn
                .prepare("SELECT id FROM actions ORDER BY id DESC LIMIT ?1")
                .db("read actions")?;
            stmt.query_map([limit], |r| r.get(0))
                .db("read actions")?
                .collect::<Result<_, _>>()
                .db("read actions")?
        };
        ids.into_iter()
            .map(|id| self.action_status(id as u64))
            .collect()
    }
}
