//! Edge <-> manager: the fleet protocol (issue 13), and the answers of the
//! manager's automation API (`/api/v1/...`) that `outpost fleet` reads.
//!
//! The edge always calls the manager, never the reverse (NAT, firewalls):
//!
//! | call | body | answer |
//! |---|---|---|
//! | `POST /edge/v1/enrol` | [`EnrolRequest`] (join token) | [`EnrolReply`] (the edge's own credential) |
//! | `POST /edge/v1/heartbeat` | [`Heartbeat`] | [`HeartbeatReply`] |
//! | `GET /edge/v1/wait?config_version=N&after_action=M` | - | [`HeartbeatReply`], as soon as the desired config version differs from N or an action after M is waiting, else when the long poll times out |
//! | `GET /edge/v1/config` | - | [`DesiredConfig`] |
//!
//! | `GET /edge/v1/session` (HTTP/1.1 upgrade) | - | `101`, then the three calls above on one connection: see [`crate::session`] |
//!
//! Every call after enrolment carries `Authorization: Bearer <credential>`.
//! A revoked edge is answered 403 with an [`crate::ApiError`] that says so.
//! [`FLEET_PROTOCOL`] goes in the `Outpost-Fleet-Protocol` header both
//! ways; a manager refuses a version it does not speak with 400.

use serde::{Deserialize, Serialize};

use crate::{FileProblem, SyncResult};

/// The protocol version this build speaks.
pub const FLEET_PROTOCOL: u32 = 1;
/// The header that carries [`FLEET_PROTOCOL`].
pub const FLEET_PROTOCOL_HEADER: &str = "outpost-fleet-protocol";
/// At most this many missing file paths per channel in a heartbeat; the
/// rest is counted in `files_missing` and flagged by `missing_truncated`.
pub const MAX_MISSING_LISTED: usize = 1000;

/// `POST /edge/v1/enrol`: the first contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolRequest {
    pub join_token: String,
    /// The site's name: unique in the fleet, `[A-Za-z0-9._-]{1,64}`.
    pub site: String,
    /// The edge's software version.
    pub version: String,
    /// The machine's host name, for the dashboard.
    pub hostname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolReply {
    pub site: String,
    /// The edge's own secret: sent as a bearer token on every later call,
    /// kept in the edge's state directory. The manager keeps only a hash.
    pub credential: String,
    /// False in "approve new edges" mode until an admin approves the edge:
    /// heartbeats are accepted, no config is handed out.
    pub approved: bool,
    pub heartbeat_ms: u64,
}

/// `POST /edge/v1/heartbeat`: the edge's state, at the manager's interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub report: EdgeReport,
    pub config: AppliedConfig,
    /// Results of actions finished since the last heartbeat that carried
    /// them; the edge sends each until a heartbeat with it was answered.
    #[serde(default)]
    pub action_results: Vec<ActionResult>,
}

/// Which managed config the edge runs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AppliedConfig {
    /// The version the edge runs now (0: none yet, its local file only).
    pub applied_version: u64,
    /// The last version the edge refused, and why (the `check-config`
    /// messages). Cleared when a later version applies.
    pub rejected: Option<ConfigRejection>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRejection {
    pub version: u64,
    pub error: String,
}

/// The answer to a heartbeat and to a long poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// The managed config version the edge should run; fetch
    /// `/edge/v1/config` when it differs from the applied one.
    pub desired_config_version: u64,
    pub heartbeat_ms: u64,
    pub approved: bool,
    /// Actions for this edge not yet reported done, oldest first.
    pub actions: Vec<ActionOrder>,
}

/// `GET /edge/v1/config`: the managed part of the edge's configuration, as
/// edge TOML (only `[[channel]]`, `[[override]]`, `[wan]` and
/// `server.allowed_clients` / `server.allowed_destinations`). The edge
/// lays it over its own file: see docs/manager.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredConfig {
    pub version: u64,
    pub toml: String,
}

/// What the edge holds and does, for the fleet view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeReport {
    pub version: String,
    pub uptime_seconds: u64,
    pub disk_used: u64,
    pub disk_limit: u64,
    /// Bytes served from the edge's copies over all bytes served since
    /// start (0 before the first).
    pub hit_ratio_bytes: f64,
    /// Body bytes fetched over the WAN since start.
    pub wan_bytes_in: u64,
    /// Body bytes written to LAN clients since start.
    pub lan_bytes_out: u64,
    /// LAN bytes served from copies minus the WAN bytes they cost, since
    /// start.
    pub bytes_saved: u64,
    pub active_fills: u64,
    pub channels: Vec<ChannelReport>,
}

/// One channel at one edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelReport {
    pub name: String,
    /// A sync run is going on now.
    pub syncing: bool,
    /// Files the last listing named (0 before the first listing).
    pub files_total: u64,
    pub files_present: u64,
    /// Files the running sync has still to fetch.
    pub files_syncing: u64,
    pub files_failed: u64,
    pub files_quarantined: u64,
    pub bytes_total: u64,
    pub bytes_present: u64,
    pub last_result: Option<SyncResult>,
    /// Unix seconds.
    pub last_finished: Option<i64>,
    /// Paths (relative to the channel's source) listed but not present,
    /// at most [`MAX_MISSING_LISTED`].
    pub missing: Vec<String>,
    pub missing_truncated: bool,
    /// Files that failed or were quarantined in the last run, the first
    /// few.
    pub problems: Vec<FileProblem>,
}

/// Something the manager asks one edge to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionOrder {
    /// Increasing per manager; the long poll's `after_action`.
    pub id: u64,
    pub action: FleetAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FleetAction {
    /// Start a sync of the channel now.
    Sync {
        channel: String,
    },
    Purge {
        url: String,
    },
    Pin {
        url: String,
    },
    Unpin {
        url: String,
    },
}

impl std::fmt::Display for FleetAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sync { channel } => write!(f, "sync {channel}"),
            Self::Purge { url } => write!(f, "purge {url}"),
            Self::Pin { url } => write!(f, "pin {url}"),
            Self::Unpin { url } => write!(f, "unpin {url}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    pub id: u64,
    pub ok: bool,
    /// What happened, for a person ("run 7 finished: ok", "no such
    /// object").
    pub detail: String,
}

// --- The automation API's answers ---------------------------------------

/// How the manager sees an edge, from its heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeState {
    /// A heartbeat came within 1.5 intervals.
    Up,
    /// One heartbeat is late.
    Stale,
    /// Two heartbeats (or more) are missing.
    Down,
    /// An admin revoked it: its calls are refused.
    Revoked,
    /// Enrolled in "approve new edges" mode, not approved yet.
    Pending,
}

crate::wire_display!(EdgeState {
    Up => "up",
    Stale => "stale",
    Down => "down",
    Revoked => "revoked",
    Pending => "pending",
});

/// `GET /api/v1/edges`: one row per edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeSummary {
    pub site: String,
    pub groups: Vec<String>,
    pub state: EdgeState,
    /// Unix seconds of the state's start.
    pub state_since: i64,
    /// Unix seconds of the last heartbeat.
    pub last_seen: Option<i64>,
    pub version: Option<String>,
    pub hostname: Option<String>,
    pub config_version_applied: u64,
    pub config_error: Option<String>,
    pub disk_used: Option<u64>,
    pub disk_limit: Option<u64>,
    pub hit_ratio_bytes: Option<f64>,
    /// Traffic today and over the last 30 UTC days (today included), as
    /// the manager has written it (at most a few seconds behind the
    /// heartbeats); absent where no traffic was reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<SiteTraffic>,
}

/// A site's traffic by UTC day, summed from its heartbeats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteTraffic {
    pub today: TrafficTotals,
    pub last_30_days: TrafficTotals,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficTotals {
    /// Body bytes written to LAN clients.
    pub lan_bytes_out: u64,
    /// Body bytes fetched over the WAN.
    pub wan_bytes_in: u64,
    /// LAN bytes served from the edge's copies minus the WAN bytes they
    /// cost.
    pub bytes_saved: u64,
    /// LAN bytes served from the edge's copies (over `lan_bytes_out`: the
    /// hit ratio by bytes).
    pub bytes_from_cache: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeList {
    pub edges: Vec<EdgeSummary>,
}

/// A channel's (or one file's) state at one site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadinessState {
    Complete,
    Syncing,
    Failed,
    Missing,
    Quarantined,
}

crate::wire_display!(ReadinessState {
    Complete => "complete",
    Syncing => "syncing",
    Failed => "failed",
    Missing => "missing",
    Quarantined => "quarantined",
});

/// `GET /api/v1/readiness?channel=NAME[&path=P]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Readiness {
    pub channel: String,
    pub path: Option<String>,
    /// Every site the channel is assigned to is complete (and there is at
    /// least one).
    pub ready: bool,
    pub sites: Vec<SiteReadiness>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteReadiness {
    pub site: String,
    pub state: ReadinessState,
    pub edge_state: EdgeState,
    pub files_present: u64,
    pub files_total: u64,
    pub bytes_present: u64,
    pub bytes_total: u64,
    /// Why it is failed, quarantined or missing, for a person.
    pub detail: Option<String>,
}

/// `POST /api/v1/actions/...`: the action and its progress per site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionStatus {
    pub id: u64,
    pub action: FleetAction,
    /// `global`, `group:G` or `site:S`.
    pub scope: String,
    pub created: i64,
    pub created_by: String,
    pub sites: Vec<ActionSiteStatus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    Pending,
    Done,
    Failed,
}

crate::wire_display!(ActionState {
    Pending => "pending",
    Done => "done",
    Failed => "failed",
});

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionSiteStatus {
    pub site: String,
    pub state: ActionState,
    pub detail: Option<String>,
}

/// `outpost manager init --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerInit {
    pub join_token: String,
    pub admin_token: String,
    /// SHA-256 of the manager's certificate (DER), lower-case hex pairs
    /// joined by ':'.
    pub fingerprint: String,
}
