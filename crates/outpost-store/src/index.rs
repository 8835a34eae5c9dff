//! The SQLite index: one row per object.
//!
//! WAL mode with `synchronous = NORMAL`: a process crash loses nothing that
//! was committed; a power loss may lose the last transactions, which only
//! makes the edge refetch (body files are synced before the row that
//! describes them is written, never after).

use std::path::Path;

use outpost_http::RangeSet;
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::StoreError;

pub(crate) struct Row {
    pub key: String,
    pub id: u64,
    pub head: String,
    pub len: Option<u64>,
    pub complete: bool,
    pub extents: RangeSet,
    pub pinned: bool,
    pub last_access: i64,
    pub hits: u64,
    /// SHA-256 of the complete body, once computed.
    pub sha256: Option<String>,
}

pub(crate) struct Index {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS objects (
    key TEXT PRIMARY KEY,
    id INTEGER NOT NULL UNIQUE,
    head TEXT NOT NULL,
    len INTEGER,
    complete INTEGER NOT NULL,
    extents TEXT NOT NULL,
    size INTEGER NOT NULL,
    pinned INTEGER NOT NULL DEFAULT 0,
    last_access INTEGER NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS objects_eviction ON objects (pinned, hits, last_access);
-- Start-up reads these instead of every row (a million heads are a
-- gigabyte): the bytes stored, and the partial objects to reconcile.
CREATE INDEX IF NOT EXISTS objects_usage ON objects (size);
CREATE INDEX IF NOT EXISTS objects_partial ON objects (id) WHERE complete = 0;
";

fn extents_json(extents: &RangeSet) -> String {
    serde_json::to_string(extents.pairs()).unwrap_or_else(|_| "[]".into())
}

fn parse_extents(json: &str) -> RangeSet {
    let pairs: Vec<(u64, u64)> = serde_json::from_str(json).unwrap_or_default();
    RangeSet::from_pairs(pairs)
}

impl Index {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        // Added after the first schema; ignore "duplicate column" on indexes
        // that already have it.
        let _ = conn.execute("ALTER TABLE objects ADD COLUMN sha256 TEXT", []);
        Ok(Self { conn })
    }

    /// A transaction that takes the write lock at once (`BEGIN IMMEDIATE`):
    /// a deferred one that reads first and then writes fails at once, busy
    /// timeout or not, when another connection (`sqlite3` in an admin's
    /// shell, a store still closing) committed in between.
    fn write_transaction(&mut self) -> rusqlite::Result<rusqlite::Transaction<'_>> {
        self.conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
        let extents: String = r.get(5)?;
        Ok(Row {
            key: r.get(0)?,
            id: r.get::<_, i64>(1)? as u64,
            head: r.get(2)?,
            len: r.get::<_, Option<i64>>(3)?.map(|l| l as u64),
            complete: r.get::<_, i64>(4)? != 0,
            extents: parse_extents(&extents),
            pinned: r.get::<_, i64>(6)? != 0,
            last_access: r.get(7)?,
            hits: r.get::<_, i64>(8)? as u64,
            sha256: r.get(9)?,
        })
    }

    const COLUMNS: &'static str =
        "key, id, head, len, complete, extents, pinned, last_access, hits, sha256";

    pub fn get(&self, key: &str) -> Result<Option<Row>, StoreError> {
        let sql = format!("SELECT {} FROM objects WHERE key = ?1", Self::COLUMNS);
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row([key], Self::row)
            .optional()?)
    }

    pub fn all(&self) -> Result<Vec<Row>, StoreError> {
        let sql = format!("SELECT {} FROM objects", Self::COLUMNS);
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt
            .query_map([], Self::row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Every object id, ascending (from the id index, not the rows).
    pub fn ids(&self) -> Result<Vec<u64>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT id FROM objects ORDER BY id")?;
        let ids = stmt
            .query_map([], |r| r.get::<_, i64>(0).map(|id| id as u64))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ids)
    }

    /// The rows of objects not complete.
    pub fn partial(&self) -> Result<Vec<Row>, StoreError> {
        let sql = format!("SELECT {} FROM objects WHERE complete = 0", Self::COLUMNS);
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt
            .query_map([], Self::row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Removes each (key, id) row that still belongs to its object, in one
    /// transaction.
    pub fn remove_all(&mut self, rows: &[(String, u64)]) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM objects WHERE key = ?1 AND id = ?2")?;
            for (key, id) in rows {
                stmt.execute(params![key, *id as i64])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes the rows of these object ids, in one transaction.
    pub fn remove_ids(&mut self, ids: &[u64]) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM objects WHERE id = ?1")?;
            for id in ids {
                stmt.execute([*id as i64])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Bytes the objects hold on disk, by the index.
    pub fn used_bytes(&self) -> Result<u64, StoreError> {
        let used: i64 =
            self.conn
                .query_row("SELECT COALESCE(SUM(size), 0) FROM objects", [], |r| {
                    r.get(0)
                })?;
        Ok(used as u64)
    }

    pub fn max_id(&self) -> Result<u64, StoreError> {
        let id: Option<i64> = self
            .conn
            .query_row("SELECT MAX(id) FROM objects", [], |r| r.get(0))?;
        Ok(id.unwrap_or(0) as u64)
    }

    /// Inserts or replaces the row of `key`; returns the id of the object it
    /// replaced, if any, so its file can be removed.
    pub fn put(&mut self, row: &Row) -> Result<Option<u64>, StoreError> {
        let tx = self.write_transaction()?;
        let old: Option<i64> = tx
            .query_row("SELECT id FROM objects WHERE key = ?1", [&row.key], |r| {
                r.get(0)
            })
            .optional()?;
        tx.execute(
            "INSERT OR REPLACE INTO objects (key, id, head, len, complete, extents, size, pinned, last_access, hits)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                row.key,
                row.id as i64,
                row.head,
                row.len.map(|l| l as i64),
                row.complete as i64,
                extents_json(&row.extents),
                row.extents.covered() as i64,
                row.pinned as i64,
                row.last_access,
                row.hits as i64
            ],
        )?;
        tx.commit()?;
        Ok(old.map(|id| id as u64).filter(|&id| id != row.id))
    }

    /// Records progress of object `id` (only if the row still belongs to it).
    pub fn update_extents(
        &self,
        key: &str,
        id: u64,
        len: Option<u64>,
        complete: bool,
        extents: &RangeSet,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE objects SET len = ?3, complete = ?4, extents = ?5, size = ?6 WHERE key = ?1 AND id = ?2")?
            .execute(params![
                key,
                id as i64,
                len.map(|l| l as i64),
                complete as i64,
                extents_json(extents),
                extents.covered() as i64
            ])?;
        Ok(())
    }

    pub fn set_digest(&self, key: &str, id: u64, sha256: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE objects SET sha256 = ?3 WHERE key = ?1 AND id = ?2")?
            .execute(params![key, id as i64, sha256])?;
        Ok(())
    }

    pub fn update_head(&self, key: &str, id: u64, head: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE objects SET head = ?3 WHERE key = ?1 AND id = ?2")?
            .execute(params![key, id as i64, head])?;
        Ok(())
    }

    pub fn set_pinned(&self, key: &str, pinned: bool) -> Result<bool, StoreError> {
        let n = self
            .conn
            .prepare_cached("UPDATE objects SET pinned = ?2 WHERE key = ?1")?
            .execute(params![key, pinned as i64])?;
        Ok(n > 0)
    }

    pub fn record_access(&mut self, updates: &[(String, u64, i64, u64)]) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE objects SET last_access = ?3, hits = hits + ?4 WHERE key = ?1 AND id = ?2",
            )?;
            for (key, id, at, hits) in updates {
                stmt.execute(params![key, *id as i64, at, *hits as i64])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes the row of `key` if it still belongs to object `id`.
    pub fn remove(&self, key: &str, id: u64) -> Result<bool, StoreError> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM objects WHERE key = ?1 AND id = ?2")?
            .execute(params![key, id as i64])?;
        Ok(n > 0)
    }

    /// Eviction candidates, best first: unpinned, objects hit at most once
    /// before those hit more often (a one-off scan cannot push out the
    /// working set), least recently used first within each group.
    pub fn eviction_candidates(&self, limit: usize) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT key, id, size FROM objects WHERE pinned = 0 ORDER BY (hits > 1), last_access LIMIT ?1",
        )?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn totals(&self) -> Result<(u64, u64, u64), StoreError> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(CASE WHEN pinned = 1 THEN size ELSE 0 END), 0) FROM objects",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64)),
        )?)
    }

    pub fn list(&self, limit: usize) -> Result<Vec<Row>, StoreError> {
        let sql = format!(
            "SELECT {} FROM objects ORDER BY key LIMIT ?1",
            Self::COLUMNS
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt
            .query_map([limit as i64], Self::row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Keys that contain `needle` (variant keys, at startup), without
    /// reading the rest of each row.
    pub fn keys_containing(&self, needle: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT key FROM objects WHERE instr(key, ?1) > 0")?;
        let keys = stmt
            .query_map([needle], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(keys)
    }
}
