//! The manager's SQLite database (`<data-dir>/manager.db`, WAL).
//!
//! The core schema is migrated by `PRAGMA user_version`: [`CORE_MIGRATIONS`]
//! entry `i` takes the schema from version `i` to `i + 1`, and entries are
//! only ever appended. Other modules (the dashboard's users and sessions)
//! keep their own tables in the same file with [`Db::migrate_module`],
//! which records each module's version in `module_versions`, so the
//! modules evolve independently of the core and of each other.
//!
//! One connection behind a mutex: the manager's writes are small and
//! batched (heartbeats are flushed every ~2 s, see `crate::flush`), so one
//! writer is plenty and there is no pool to size.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

use crate::error::{DbContext, ManagerError, Result};

pub const DB_FILE_NAME: &str = "manager.db";

/// The core schema, one step per entry; append only.
pub const CORE_MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY, label TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL, revoked INTEGER);
CREATE TABLE join_tokens (
    id INTEGER PRIMARY KEY, label TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL, expires INTEGER, revoked INTEGER,
    uses INTEGER NOT NULL DEFAULT 0);
CREATE TABLE edges (
    site TEXT PRIMARY KEY, hostname TEXT NOT NULL,
    credential_hash TEXT NOT NULL UNIQUE, enrolled INTEGER NOT NULL,
    join_token_id INTEGER, approved INTEGER NOT NULL, revoked INTEGER,
    version TEXT, last_seen INTEGER,
    config_applied INTEGER NOT NULL DEFAULT 0, config_error TEXT,
    config_error_version INTEGER, report TEXT,
    state TEXT NOT NULL, state_since INTEGER NOT NULL);
CREATE TABLE groups (name TEXT PRIMARY KEY, priority INTEGER NOT NULL);
CREATE TABLE group_members (
    group_name TEXT NOT NULL REFERENCES groups(name) ON DELETE CASCADE,
    site TEXT NOT NULL, PRIMARY KEY (group_name, site));
CREATE TABLE scope_drafts (scope TEXT PRIMARY KEY, toml TEXT NOT NULL);
CREATE TABLE config_versions (
    version INTEGER PRIMARY KEY, created INTEGER NOT NULL,
    created_by TEXT NOT NULL, comment TEXT NOT NULL, snapshot TEXT NOT NULL);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY, at INTEGER NOT NULL, who TEXT NOT NULL,
    from_addr TEXT NOT NULL, what TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE actions (
    id INTEGER PRIMARY KEY, action TEXT NOT NULL, scope TEXT NOT NULL,
    created INTEGER NOT NULL, created_by TEXT NOT NULL);
CREATE TABLE action_targets (
    action_id INTEGER NOT NULL REFERENCES actions(id) ON DELETE CASCADE,
    site TEXT NOT NULL, state TEXT NOT NULL, detail TEXT, finished INTEGER,
    PRIMARY KEY (action_id, site));
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY, site TEXT NOT NULL, kind TEXT NOT NULL,
    subject TEXT NOT NULL, detail TEXT NOT NULL,
    opened INTEGER NOT NULL, closed INTEGER);
CREATE INDEX alerts_open ON alerts(closed);
CREATE TABLE edge_states (site TEXT NOT NULL, at INTEGER NOT NULL, state TEXT NOT NULL);
CREATE INDEX edge_states_site ON edge_states(site, at);
CREATE TABLE module_versions (module TEXT PRIMARY KEY, version INTEGER NOT NULL);
"#,
    r#"
CREATE TABLE site_events (
    id INTEGER PRIMARY KEY, site TEXT NOT NULL, at INTEGER NOT NULL,
    kind TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX site_events_site ON site_events(site, at);
"#,
    r#"
CREATE TABLE site_traffic (
    site TEXT NOT NULL, day INTEGER NOT NULL,
    lan_out INTEGER NOT NULL, wan_in INTEGER NOT NULL,
    saved INTEGER NOT NULL, from_cache INTEGER NOT NULL,
    PRIMARY KEY (site, day)) WITHOUT ROWID;
CREATE INDEX site_traffic_day ON site_traffic(day);
"#,
];

pub struct Db {
    conn: Mutex<Connection>,
}

impl Db {
    /// Opens (creating if `create`) the database in `data_dir` and brings
    /// the core schema up to date.
    pub fn open(data_dir: &Path, create: bool) -> Result<Self> {
        let path = data_dir.join(DB_FILE_NAME);
        if !create && !path.exists() {
            return Err(ManagerError::BadRequest(format!(
                "{} does not exist: run `outpost manager init --data-dir {}` first",
                path.display(),
                data_dir.display()
            )));
        }
        let conn = Connection::open(&path).db(&format!("open {}", path.display()))?;
        Self::from_connection(conn)
    }

    /// An in-memory database, for unit tests.
    pub fn in_memory() -> Result<Self> {
        Self::from_connection(Connection::open_in_memory().db("open in memory")?)
    }

    fn from_connection(conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")
            .db("set WAL")?;
        // WAL with synchronous=NORMAL survives a process crash; a power
        // loss may drop the last batch of heartbeats, never corrupt.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .db("set synchronous")?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .db("enable foreign keys")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .db("set busy timeout")?;
        let db = Self {
            conn: Mutex::new(conn),
        };
        db.migrate_core()?;
        Ok(db)
    }

    /// The connection, for modules with their own tables. Hold it briefly:
    /// every writer of the manager shares it.
    pub fn connection(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves a consistent connection
        // (SQLite rolls back an unfinished transaction), so poison is moot.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn migrate_core(&self) -> Result<()> {
        let mut conn = self.connection();
        let current: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .db("read user_version")?;
        let known = CORE_MIGRATIONS.len() as i64;
        if current > known {
            return Err(ManagerError::Internal(format!(
                "manager.db has schema version {current}, this build knows up to {known}: \
                 run a newer outpost"
            )));
        }
        for (step, sql) in CORE_MIGRATIONS.iter().enumerate().skip(current as usize) {
            let tx = conn.transaction().db("begin migration")?;
            tx.execute_batch(sql)
                .db(&format!("migrate to schema {}", step + 1))?;
            tx.pragma_update(None, "user_version", step as i64 + 1)
                .db("set user_version")?;
            tx.commit().db("commit migration")?;
        }
        Ok(())
    }

    /// Brings `module`'s own tables up to date: `steps[i]` takes the module
    /// from version `i` to `i + 1`; append only. Idempotent.
    pub fn migrate_module(&self, module: &str, steps: &[&str]) -> Result<()> {
        let mut conn = self.connection();
        let current: i64 = conn
            .query_row(
                "SELECT version FROM module_versions WHERE module = ?1",
                [module],
                |r| r.get(0),
            )
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(0),
                e => Err(e),
            })
            .db("read module version")?;
        if current > steps.len() as i64 {
            return Err(ManagerError::Internal(format!(
                "manager.db has {module} schema version {current}, this build knows up to {}",
                steps.len()
            )));
        }
        for (step, sql) in steps.iter().enumerate().skip(current as usize) {
            let tx = conn.transaction().db("begin migration")?;
            tx.execute_batch(sql)
                .db(&format!("migrate {module} to schema {}", step + 1))?;
            tx.execute(
                "INSERT INTO module_versions (module, version) VALUES (?1, ?2)
                 ON CONFLICT(module) DO UPDATE SET version = excluded.version",
                rusqlite::params![module, step as i64 + 1],
            )
            .db("record module version")?;
            tx.commit().db("commit migration")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_and_module_migrations_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Db::open(dir.path(), true).unwrap();
            db.migrate_module("dash", &["CREATE TABLE dash_users (name TEXT)"])
                .unwrap();
        }
        let db = Db::open(dir.path(), false).unwrap();
        db.migrate_module(
            "dash",
            &[
                "CREATE TABLE dash_users (name TEXT)",
                "ALTER TABLE dash_users ADD COLUMN role TEXT",
            ],
        )
        .unwrap();
        let conn = db.connection();
        conn.execute(
            "INSERT INTO dash_users (name, role) VALUES ('a', 'admin')",
            [],
        )
        .unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, CORE_MIGRATIONS.len() as i64);
    }

    #[test]
    fn opening_a_missing_database_without_create_says_to_init() {
        let dir = tempfile::tempdir().unwrap();
        let err = Db::open(dir.path(), false).err().unwrap().to_string();
        assert!(err.contains("outpost manager init"), "{err}");
    }
}
