//! Join tokens, admin API tokens, and the audit log's reading side.
//! Tokens are shown once, when made; the database holds their SHA-256.

use serde::{Deserialize, Serialize};

use super::{Actor, Manager, unix_secs};
use crate::error::{DbContext, ManagerError, Result};
use crate::secret;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: i64,
    pub label: String,
    pub created: i64,
    /// Join tokens only: unix seconds after which it enrols nobody.
    pub expires: Option<i64>,
    pub revoked: Option<i64>,
    /// Join tokens only: edges enrolled with it.
    pub uses: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub who: String,
    pub from: String,
    pub what: String,
    pub detail: String,
}

/// A token just made: the secret is in here and nowhere else.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewToken {
    pub id: i64,
    pub label: String,
    pub token: String,
    pub expires: Option<i64>,
}

fn check_label(label: &str) -> Result<()> {
    if label.is_empty() || label.len() > 100 || label.chars().any(char::is_control) {
        return Err(ManagerError::BadRequest(
            "label: 1 to 100 printable characters".into(),
        ));
    }
    Ok(())
}

impl Manager {
    pub fn create_join_token(
        &self,
        label: &str,
        expires: Option<i64>,
        actor: &Actor,
    ) -> Result<NewToken> {
        check_label(label)?;
        let token = secret::generate("ojt")?;
        let conn = self.db().connection();
        conn.execute(
            "INSERT INTO join_tokens (label, hash, created, expires) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![label, secret::digest(&token), unix_secs(), expires],
        )
        .db("write join token")?;
        let id = conn.last_insert_rowid();
        drop(conn);
        self.audit(actor, "join-token create", &format!("#{id} {label}"))?;
        Ok(NewToken {
            id,
            label: label.to_string(),
            token,
            expires,
        })
    }

    pub fn join_tokens(&self) -> Result<Vec<TokenInfo>> {
        let conn = self.db().connection();
        let mut stmt = conn
            .prepare(
                "SELECT id, label, created, expires, revoked, uses FROM join_tokens ORDER BY id",
            )
            .db("read join tokens")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(TokenInfo {
                    id: r.get(0)?,
                    label: r.get(1)?,
                    created: r.get(2)?,
                    expires: r.get(3)?,
                    revoked: r.get(4)?,
                    uses: Some(r.get::<_, i64>(5)? as u64),
                })
            })
            .db("read join tokens")?;
        rows.collect::<Result<_, _>>().db("read join tokens")
    }

    pub fn revoke_join_token(&self, id: i64, actor: &Actor) -> Result<()> {
        self.revoke_token("join_tokens", "join token", "join-token revoke", id, actor)
    }

    pub fn create_api_token(&self, label: &str, actor: &Actor) -> Result<NewToken> {
        check_label(label)?;
        let token = secret::generate("oat")?;
        let conn = self.db().connection();
        conn.execute(
            "INSERT INTO api_tokens (label, hash, created) VALUES (?1, ?2, ?3)",
            rusqlite::params![label, secret::digest(&token), unix_secs()],
        )
        .db("write api token")?;
        let id = conn.last_insert_rowid();
        drop(conn);
        self.audit(actor, "api-token create", &format!("#{id} {label}"))?;
        Ok(NewToken {
            id,
            label: label.to_string(),
            token,
            expires: None,
        })
    }

    pub fn api_tokens(&self) -> Result<Vec<TokenInfo>> {
        let conn = self.db().connection();
        let mut stmt = conn
            .prepare("SELECT id, label, created, revoked FROM api_tokens ORDER BY id")
            .db("read api tokens")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(TokenInfo {
                    id: r.get(0)?,
                    label: r.get(1)?,
                    created: r.get(2)?,
                    expires: None,
                    revoked: r.get(3)?,
                    uses: None,
                })
            })
            .db("read api tokens")?;
        rows.collect::<Result<_, _>>().db("read api tokens")
    }

    pub fn revoke_api_token(&self, id: i64, actor: &Actor) -> Result<()> {
        self.revoke_token("api_tokens", "API token", "api-token revoke", id, actor)
    }

    /// Marks token `id` of `table` revoked now; an unknown or already
    /// revoked one is NotFound, saying which `noun`.
    fn revoke_token(
        &self,
        table: &'static str,
        noun: &str,
        audited_as: &str,
        id: i64,
        actor: &Actor,
    ) -> Result<()> {
        let n = self
            .db()
            .connection()
            .execute(
                &format!("UPDATE {table} SET revoked = ?2 WHERE id = ?1 AND revoked IS NULL"),
                rusqlite::params![id, unix_secs()],
            )
            .db("revoke token")?;
        if n == 0 {
            return Err(ManagerError::NotFound(format!("no unrevoked {noun} #{id}")));
        }
        self.audit(actor, audited_as, &format!("#{id}"))
    }

    /// The label of the unrevoked API token `token`, if it is one.
    pub fn authenticate_api_token(&self, token: &str) -> Result<Option<String>> {
        let hash = secret::digest(token);
        let conn = self.db().connection();
        let mut stmt = conn
            .prepare_cached("SELECT label, hash FROM api_tokens WHERE revoked IS NULL")
            .db("read api tokens")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .db("read api tokens")?;
        let mut found = None;
        // Every row compared, in constant time: no timing tells which
        // token (or how much of a digest) matched.
        for row in rows {
            let (label, stored) = row.db("read api token")?;
            if secret::constant_time_eq(stored.as_bytes(), hash.as_bytes()) {
                found = Some(label);
            }
        }
        Ok(found)
    }

    /// `GET /api/v1/audit`: newest first, at most `limit`.
    pub fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>> {
        let conn = self.db().connection();
        let mut stmt = conn
            .prepare(
                "SELECT id, at, who, from_addr, what, detail FROM audit ORDER BY id DESC LIMIT ?1",
            )
            .db("read audit")?;
        let rows = stmt
            .query_map([limit], |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    who: r.get(2)?,
                    from: r.get(3)?,
                    what: r.get(4)?,
                    detail: r.get(5)?,
                })
            })
            .db("read audit")?;
        rows.collect::<Result<_, _>>().db("read audit")
    }
}
