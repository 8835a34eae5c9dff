//! `GET /status`: what the edge holds and does, in one document.

use serde::{Deserialize, Serialize};

use crate::ChannelStatus;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeStatus {
    pub version: String,
    pub uptime_seconds: u64,
    /// The proxy's listen addresses.
    pub listeners: Vec<String>,
    /// The origin of a single-site reverse edge (`--origin`).
    pub reverse_origin: Option<String>,
    pub cache: CacheUsage,
    pub requests: RequestCounts,
    /// Hits over requests that could have been hits (errors aside); 0
    /// before the first request.
    pub hit_ratio: f64,
    /// Body bytes fetched from origins.
    pub wan_bytes: u64,
    pub served_bytes: ServedBytes,
    pub modes: Vec<ModeTraffic>,
    /// What clients got from the edge's copies minus what those copies
    /// cost on the WAN.
    pub wan_saved_bytes: u64,
    pub active_fills: Vec<ActiveFill>,
    pub wan: Vec<WanClass>,
    pub channels: Vec<ChannelStatus>,
    /// The fleet manager link; absent without a manager (and in documents
    /// of edges older than the fleet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<ManagerStatus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheUsage {
    pub bytes_used: u64,
    pub bytes_limit: u64,
    pub objects: u64,
    pub pinned_bytes: u64,
    pub evictions: u64,
}

/// Client requests by how the cache answered them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    pub hit: u64,
    pub miss: u64,
    /// Joined a fill another request had started.
    pub collapsed: u64,
    pub revalidated: u64,
    pub stale: u64,
    pub passthrough: u64,
    pub error: u64,
}

/// Bytes written to clients, by where they came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedBytes {
    /// From disk: hits, revalidated, stale.
    pub cache: u64,
    /// Streamed from a fill as it arrived.
    pub fills: u64,
    /// Passthrough, errors.
    pub other: u64,
}

/// How requests reached the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyMode {
    Forward,
    Transparent,
    Reverse,
}

crate::wire_display!(ProxyMode {
    Forward => "forward",
    Transparent => "transparent",
    Reverse => "reverse",
});

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeTraffic {
    pub mode: ProxyMode,
    pub requests: u64,
    pub bytes: u64,
}

/// A fill running now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveFill {
    pub url: String,
    /// Bytes stored so far.
    pub bytes: u64,
    /// The body's length, when the origin said it.
    pub length: Option<u64>,
}

/// One WAN traffic class (interactive, prepos) as the shaper sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WanClass {
    pub class: String,
    /// The limit in force now, bytes per second (`None`: unlimited).
    pub limit: Option<f64>,
    /// Measured over the last few seconds, bytes per second.
    pub rate: f64,
    pub bytes_total: u64,
    pub queued_reads: u64,
    pub queued_bytes: u64,
}

/// The edge's link to its fleet manager, as `/status` shows it (absent on
/// an edge that has no manager).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerStatus {
    pub url: String,
    pub site: String,
    pub state: ManagerLink,
    /// Unix seconds of the last answer from the manager.
    pub last_contact: Option<i64>,
    /// The managed config version the edge runs (0: none).
    pub applied_version: u64,
    /// The last thing that went wrong (unreachable, refused, a rejected
    /// config), for a person; cleared by the next success.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManagerLink {
    /// Not enrolled yet (or enrolling).
    Enrolling,
    /// Enrolled, and the manager answers.
    Enrolled,
    /// Enrolled in "approve new edges" mode, not approved yet.
    Pending,
    /// The manager refuses the edge's credential: revoked.
    Revoked,
    /// The manager does not answer (or its certificate is not the pinned
    /// one); the edge goes on serving what it runs.
    Unreachable,
}

crate::wire_display!(ManagerLink {
    Enrolling => "enrolling",
    Enrolled => "enrolled",
    Pending => "pending",
    Revoked => "revoked",
    Unreachable => "unreachable",
});
