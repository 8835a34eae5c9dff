//! `GET /channels` (and the `channels` of `/status`): each
//! pre-positioning channel's state, its running sync and its last one.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A folder whose HTML directory listings are crawled.
    Listing,
    /// A JSON or text file naming the files.
    Manifest,
}

/// How a sync run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncResult {
    /// Every file is present and matches.
    Ok,
    /// Some files failed, or a folder could not be listed.
    Errors,
    /// A limit or a symlink loop stopped part of the sync (see `limits`).
    Limit,
    /// The source could not be listed.
    Failed,
    /// The edge stopped during the run.
    #[default]
    Interrupted,
}

crate::wire_display!(SyncResult {
    Ok => "ok",
    Errors => "errors",
    Limit => "limit",
    Failed => "failed",
    Interrupted => "interrupted",
});

/// What a running sync is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunPhase {
    /// Reading the source's listings or manifest; totals not known yet.
    Listing,
    /// Fetching files.
    Syncing,
    /// Outside the channel's window: waiting to fetch.
    WaitingForWindow,
}

crate::wire_display!(RunPhase {
    Listing => "listing",
    Syncing => "syncing",
    WaitingForWindow => "waiting_for_window",
});

/// A limit a sync ran into, or a folder it took for a symlink loop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitHit {
    /// The `[[channel]]` key ("max_depth", "max_pages", "max_page_links",
    /// "max_files", "max_bytes"), or "loop".
    pub limit: String,
    /// The key's value in force.
    pub value: Option<u64>,
    /// The first folder or file it kept out (for "max_page_links", the
    /// page that was cut).
    pub url: String,
    /// How many folders, pages or files it kept out.
    pub times: u64,
}

/// "max_depth = 16 reached 3 times, first at URL": the URL comes last,
/// because `outpost channels` shortens a long message from its start.
impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.limit.as_str(), self.value) {
            ("loop", _) => write!(
                f,
                "a folder lists the same entries as one above it (a symlink loop?), not followed"
            )?,
            ("max_page_links", Some(v)) => write!(
                f,
                "max_page_links = {v} reached, only the first {v} entries of a page read"
            )?,
            (limit, Some(v)) => write!(f, "{limit} = {v} reached")?,
            (limit, None) => write!(f, "{limit} reached")?,
        }
        if self.times > 1 {
            write!(f, " {} times, first at {}", self.times, self.url)
        } else {
            write!(f, " at {}", self.url)
        }
    }
}

/// A file a sync could not bring in, or refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileProblem {
    pub url: String,
    pub error: String,
    /// Unix seconds.
    pub at: i64,
}

/// A finished run. Also what the channel database keeps of it, so the
/// fields later versions added default when an older row lacks them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunSummary {
    pub run: u64,
    pub started: i64,
    pub finished: i64,
    pub result: SyncResult,
    pub message: Option<String>,
    pub files: u64,
    pub fetched: u64,
    /// Files the source answered 304 for: the edge's copy was current.
    pub not_modified: u64,
    /// Files whose stored copy needed no request (it matched the
    /// manifest's digest, or was still fresh).
    pub unchanged: u64,
    pub failed: u64,
    pub quarantined: u64,
    pub removed: u64,
    /// Body bytes brought over the WAN by this run.
    pub fetched_bytes: u64,
    /// Files listed but not fetched, or fetched but not kept, because of
    /// max_files or max_bytes.
    #[serde(default)]
    pub skipped: u64,
    #[serde(default)]
    pub limits: Vec<LimitHit>,
}

/// What a sync did with a file, as a [`RunSummary`] counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOutcome {
    /// Brought over the WAN (whole, or the part that was missing).
    Fetched,
    /// The source answered 304: the edge's copy was current.
    NotModified,
    /// No request needed: the copy matched the manifest's digest, or was
    /// still fresh.
    Unchanged,
    Failed,
    /// Refused for a digest mismatch.
    Quarantined,
    /// Gone from the source, so dropped from the channel.
    Removed,
    /// Kept out by max_files or max_bytes.
    Skipped,
}

crate::wire_display!(FileOutcome {
    Fetched => "fetched",
    NotModified => "not_modified",
    Unchanged => "unchanged",
    Failed => "failed",
    Quarantined => "quarantined",
    Removed => "removed",
    Skipped => "skipped",
});

impl RunSummary {
    /// Each outcome with its count; the names are the summary's keys.
    pub fn outcomes(&self) -> [(FileOutcome, u64); 7] {
        [
            (FileOutcome::Fetched, self.fetched),
            (FileOutcome::NotModified, self.not_modified),
            (FileOutcome::Unchanged, self.unchanged),
            (FileOutcome::Failed, self.failed),
            (FileOutcome::Quarantined, self.quarantined),
            (FileOutcome::Removed, self.removed),
            (FileOutcome::Skipped, self.skipped),
        ]
    }
}

/// A file being fetched now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveFile {
    pub url: String,
    pub bytes: u64,
    pub len: Option<u64>,
}

/// A running sync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunProgress {
    pub run: u64,
    pub started: i64,
    pub phase: RunPhase,
    pub files_total: u64,
    pub files_done: u64,
    pub bytes_total: u64,
    pub bytes_done: u64,
    /// Bytes per second fetched since the run started.
    pub rate: f64,
    pub eta_secs: Option<u64>,
    pub active: Vec<ActiveFile>,
}

/// One channel as `outpost channels` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelStatus {
    pub name: String,
    pub source: String,
    pub kind: SourceKind,
    pub schedule: Option<String>,
    pub rate: String,
    pub window: Option<String>,
    /// The limit in force now (bytes/s; `None` = unlimited; 0 = outside
    /// the window).
    pub limit_now: Option<f64>,
    pub files_total: u64,
    pub files_present: u64,
    pub bytes_total: u64,
    pub bytes_present: u64,
    pub pinned_files: u64,
    pub quarantined: Vec<FileProblem>,
    pub errors: Vec<FileProblem>,
    pub running: Option<RunProgress>,
    pub last_run: Option<RunSummary>,
    /// Local time of the next scheduled run.
    pub next_run: Option<String>,
    /// The last export of the channel's files to a plain tree
    /// (`outpost export`, `[[channel]] export`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportStatus>,
}

/// One export of a channel's files to a plain read-only tree (for a Samba
/// share): where, when, and how the files got there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportStatus {
    /// The tree's path (a symbolic link to the current version).
    pub dir: String,
    /// Unix time the export finished (or failed).
    pub finished: i64,
    pub files: u64,
    pub bytes: u64,
    /// Files hard-linked to the store's body files (no extra disk space).
    pub linked: u64,
    /// Files copied (the tree is on another file system than the cache).
    pub copied: u64,
    /// Files of the channel left out (a path that cannot be a file name,
    /// two URLs for one path, a body gone meanwhile), with why.
    #[serde(default)]
    pub skipped: Vec<String>,
    /// Why the export failed; the previous tree stays in place.
    pub error: Option<String>,
}
