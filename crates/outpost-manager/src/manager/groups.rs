//! Groups in the draft: names, priorities, which sites belong. Published
//! with the scopes (see `config`), so they change nothing until then.

use serde::{Deserialize, Serialize};

use super::{Actor, Manager};
use crate::error::{DbContext, ManagerError, Result};
use crate::scope::check_name;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupInfo {
    pub name: String,
    pub priority: i64,
    pub sites: Vec<String>,
}

impl Manager {
    pub fn groups(&self) -> Result<Vec<GroupInfo>> {
        Ok(self
            .draft()?
            .groups
            .into_iter()
            .map(|(name, g)| GroupInfo {
                name,
                priority: g.priority,
                sites: g.sites.into_iter().collect(),
            })
            .collect())
    }

    /// Creates a group or changes its priority (in the draft).
    pub fn put_group(&self, name: &str, priority: i64, actor: &Actor) -> Result<()> {
        check_name("group", name)?;
        self.db()
            .connection()
            .execute(
                "INSERT INTO groups (name, priority) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET priority = excluded.priority",
                rusqlite::params![name, priority],
            )
            .db("write group")?;
        self.audit(actor, "group put", &format!("{name} priority {priority}"))
    }

    /// Deletes a group, its membership and its scope draft.
    pub fn delete_group(&self, name: &str, actor: &Actor) -> Result<()> {
        let mut conn = self.db().connection();
        let tx = conn.transaction().db("begin")?;
        let n = tx
            .execute("DELETE FROM groups WHERE name = ?1", [name])
            .db("delete group")?;
        if n == 0 {
            return Err(ManagerError::NotFound(format!("no group {name}")));
        }
        tx.execute("DELETE FROM group_members WHERE group_name = ?1", [name])
            .db("delete members")?;
        tx.execute(
            "DELETE FROM scope_drafts WHERE scope = ?1",
            [format!("group:{name}")],
        )
        .db("delete group draft")?;
        tx.commit().db("commit")?;
        drop(conn);
        self.audit(actor, "group delete", name)
    }

    /// Sets the groups `site` belongs to (in the draft).
    pub fn set_site_groups(&self, site: &str, groups: &[String], actor: &Actor) -> Result<()> {
        check_name("site", site)?;
        let known = self.draft()?.groups;
        if let Some(unknown) = groups.iter().find(|g| !known.contains_key(*g)) {
            return Err(ManagerError::BadRequest(format!(
                "no group {unknown}: create it first (PUT /api/v1/groups/{unknown})"
            )));
        }
        let mut conn = self.db().connection();
        let tx = conn.transaction().db("begin")?;
        tx.execute("DELETE FROM group_members WHERE site = ?1", [site])
            .db("clear membership")?;
        for group in groups {
            tx.execute(
                "INSERT OR IGNORE INTO group_members (group_name, site) VALUES (?1, ?2)",
                [group, site],
            )
            .db("write membership")?;
        }
        tx.commit().db("commit")?;
        drop(conn);
        self.audit(
            actor,
            "site groups",
            &format!("{site}: [{}]", groups.join(", ")),
        )
    }
}
