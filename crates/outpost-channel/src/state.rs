//! What the edge remembers of its channels across restarts (SQLite, beside
//! the store's index): the files each channel holds, quarantined files, and
//! each sync run, so that a run cut short by a crash is resumed.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::ChannelError;

pub(crate) struct ChannelDb {
    conn: Connection,
}

/// A channel's rows counted: see [`ChannelDb::totals`].
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ChannelTotals {
    pub files: u64,
    pub bytes: u64,
    /// Unix seconds of the newest row's `updated`.
    pub newest: Option<i64>,
}

/// A file a channel has synced (or tried to).
#[derive(Debug, Clone)]
pub(crate) struct FileRow {
    pub url: String,
    pub key: String,
    pub len: Option<u64>,
    pub sha256: Option<String>,
    /// The digest the channel's manifest gives (with `verify`): every copy
    /// of the file the edge stores must match it, not only the sync's.
    pub expected_sha256: Option<String>,
    /// "ok", "error" or "quarantined".
    pub state: String,
    pub detail: Option<String>,
    pub updated: i64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS channel_files (
    channel TEXT NOT NULL,
    url TEXT NOT NULL,
    key TEXT NOT NULL,
    len INTEGER,
    sha256 TEXT,
    state TEXT NOT NULL,
    detail TEXT,
    updated INTEGER NOT NULL,
    PRIMARY KEY (channel, url)
);
CREATE TABLE IF NOT EXISTS channel_exports (
    channel TEXT PRIMARY KEY,
    status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS channel_runs (
    channel TEXT NOT NULL,
    run INTEGER NOT NULL,
    started INTEGER NOT NULL,
    finished INTEGER,
    summary TEXT,
    PRIMARY KEY (channel, run)
);
";

impl ChannelDb {
    pub fn open(path: &Path) -> Result<Self, ChannelError> {
        let conn = Connection::open(path)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
        // The channels' URLs (query tokens included) are the edge's own,
        // like the store's index.
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
        }
        conn.execute_batch(SCHEMA)?;
        // Added after the first release; fails harmlessly once it exists.
        let _ = conn.execute(
            "ALTER TABLE channel_files ADD COLUMN expected_sha256 TEXT",
            [],
        );
        Ok(Self { conn })
    }

    /// The channel's files, the bytes they hold, its newest `updated`.
    pub fn totals(&self, channel: &str) -> Result<ChannelTotals, ChannelError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(len), 0), MAX(updated) FROM channel_files WHERE channel = ?1",
        )?;
        Ok(stmt.query_row(params![channel], |r| {
            Ok(ChannelTotals {
                files: r.get::<_, i64>(0)? as u64,
                bytes: r.get::<_, i64>(1)? as u64,
                newest: r.get(2)?,
            })
        })?)
    }

    pub fn files(&self, channel: &str) -> Result<Vec<FileRow>, ChannelError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT url, key, len, sha256, state, detail, updated, expected_sha256 FROM channel_files WHERE channel = ?1 ORDER BY url",
        )?;
        let rows = stmt
            .query_map(params![channel], |r| {
                Ok(FileRow {
                    url: r.get(0)?,
                    key: r.get(1)?,
                    len: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                    sha256: r.get(3)?,
                    state: r.get(4)?,
                    detail: r.get(5)?,
                    updated: r.get(6)?,
                    expected_sha256: r.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn put_file(&self, channel: &str, row: &FileRow) -> Result<(), ChannelError> {
        self.conn.prepare_cached(
            "INSERT OR REPLACE INTO channel_files (channel, url, key, len, sha256, state, detail, updated, expected_sha256)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            channel,
            row.url,
            row.key,
            row.len.map(|v| v as i64),
            row.sha256,
            row.state,
            row.detail,
            row.updated,
            row.expected_sha256
        ])?;
        Ok(())
    }

    pub fn remove_file(&self, channel: &str, url: &str) -> Result<(), ChannelError> {
        self.conn
            .prepare_cached("DELETE FROM channel_files WHERE channel = ?1 AND url = ?2")?
            .execute(params![channel, url])?;
        Ok(())
    }

    /// Records the channel's last export (an `ExportStatus` as JSON).
    pub fn put_export(&self, channel: &str, status: &str) -> Result<(), ChannelError> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO channel_exports (channel, status) VALUES (?1, ?2)",
            )?
            .execute(params![channel, status])?;
        Ok(())
    }

    pub fn last_export(&self, channel: &str) -> Result<Option<String>, ChannelError> {
        Ok(self
            .conn
            .prepare_cached("SELECT status FROM channel_exports WHERE channel = ?1")?
            .query_row(params![channel], |r| r.get(0))
            .optional()?)
    }

    /// Deletes every row of a channel: its files, its runs and its last
    /// export.
    pub fn forget_channel(&self, channel: &str) -> Result<(), ChannelError> {
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "DELETE FROM channel_files WHERE channel = ?1",
            params![channel],
        )?;
        tx.execute(
            "DELETE FROM channel_runs WHERE channel = ?1",
            params![channel],
        )?;
        tx.execute(
            "DELETE FROM channel_exports WHERE channel = ?1",
            params![channel],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Whether a channel other than `channel` holds `key`.
    pub fn held_elsewhere(&self, channel: &str, key: &str) -> Result<bool, ChannelError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM channel_files WHERE key = ?1 AND channel != ?2 AND state = 'ok' LIMIT 1")?
            .query_row(params![key, channel], |_| Ok(()))
            .optional()?
            .is_some())
    }

    pub fn start_run(&self, channel: &str, started: i64) -> Result<u64, ChannelError> {
        let last: Option<i64> = self
            .conn
            .prepare_cached("SELECT MAX(run) FROM channel_runs WHERE channel = ?1")?
            .query_row(params![channel], |r| r.get(0))?;
        let run = last.unwrap_or(0) + 1;
        self.conn
            .prepare_cached("INSERT INTO channel_runs (channel, run, started) VALUES (?1, ?2, ?3)")?
            .execute(params![channel, run, started])?;
        Ok(run as u64)
    }

    pub fn finish_run(
        &self,
        channel: &str,
        run: u64,
        finished: i64,
        summary: &str,
    ) -> Result<(), ChannelError> {
        self.conn
            .prepare_cached("UPDATE channel_runs SET finished = ?3, summary = ?4 WHERE channel = ?1 AND run = ?2")?
            .execute(params![channel, run as i64, finished, summary])?;
        Ok(())
    }

    /// The last finished run's summary (JSON), if any.
    pub fn last_summary(&self, channel: &str) -> Result<Option<String>, ChannelError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT summary FROM channel_runs WHERE channel = ?1 AND finished IS NOT NULL ORDER BY run DESC LIMIT 1",
            )?
            .query_row(params![channel], |r| r.get(0))
            .optional()?
            .flatten())
    }

    /// Runs that started and never finished (the edge stopped during them).
    /// They are marked finished as interrupted, with a whole summary (so
    /// status shows the run as interrupted rather than "never synced");
    /// returns whether any was.
    pub fn take_interrupted(&self, channel: &str, now: i64) -> Result<bool, ChannelError> {
        let unfinished: Vec<(i64, i64)> = self
            .conn
            .prepare_cached(
                "SELECT run, started FROM channel_runs WHERE channel = ?1 AND finished IS NULL",
            )?
            .query_map(params![channel], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for &(run, started) in &unfinished {
            let summary = outpost_protocol::RunSummary {
                run: u64::try_from(run).unwrap_or(0),
                started,
                finished: now,
                result: outpost_protocol::SyncResult::Interrupted,
                message: Some("the edge stopped during this sync".to_string()),
                ..Default::default()
            };
            // Plain numbers and strings: encoding cannot fail.
            let json = serde_json::to_string(&summary).unwrap_or_default();
            self.finish_run(channel, summary.run, now, &json)?;
        }
        Ok(!unfinished.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run cut short by a stop reads back as an interrupted run with its
    /// number, not as an undecodable row that status shows as "never
    /// synced".
    #[test]
    fn an_interrupted_run_reads_back_as_a_whole_summary() {
        let dir = tempfile::tempdir().unwrap();
        let db = ChannelDb::open(&dir.path().join("channels.sqlite")).unwrap();
        let run = db.start_run("pkgs", 100).unwrap();
        assert!(db.take_interrupted("pkgs", 200).unwrap());
        assert!(!db.take_interrupted("pkgs", 300).unwrap());
        let json = db.last_summary("pkgs").unwrap().unwrap();
        let summary: outpost_protocol::RunSummary = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (
                summary.run,
                summary.started,
                summary.finished,
                summary.result
            ),
            (run, 100, 200, outpost_protocol::SyncResult::Interrupted)
        );
    }
}
