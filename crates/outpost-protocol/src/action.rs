//! The answers to the admin API's listings and actions.

use serde::{Deserialize, Serialize};

/// `GET /cache`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheList {
    pub objects: Vec<CachedObject>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedObject {
    pub url: String,
    /// Body bytes on disk.
    pub size: u64,
    /// The body's full length, when known.
    pub length: Option<u64>,
    pub complete: bool,
    pub pinned: bool,
    pub hits: u64,
    pub sha256: Option<String>,
    /// Unix seconds.
    pub last_access: i64,
}

/// What `POST /purge`, `/pin` and `/unpin` do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectAction {
    Purge,
    Pin,
    Unpin,
}

crate::wire_display!(ObjectAction {
    Purge => "purge",
    Pin => "pin",
    Unpin => "unpin",
});

/// The answer to an object action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionOutcome {
    pub action: ObjectAction,
    /// The object's cache key.
    pub url: String,
    /// False when the edge holds no such object: nothing was done.
    pub done: bool,
}

/// `POST /verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub checked: u64,
    /// Objects with a recorded SHA-256 that was checked.
    pub digests_checked: u64,
    pub dropped: Vec<DroppedObject>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedObject {
    pub url: String,
    pub reason: String,
}

/// `POST /channels/sync`: the runs started, to wait for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStarted {
    pub runs: Vec<StartedRun>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedRun {
    pub channel: String,
    pub run: u64,
}

/// `POST /reload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// What took effect.
    pub applied: Vec<String>,
    /// What changed in the file but takes effect only after a restart.
    pub restart_needed: Vec<String>,
}
