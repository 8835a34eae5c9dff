//! The wire types between an edge's admin API and whoever reads it (the
//! `outpost` CLI), and between an edge and the fleet manager (the `fleet`
//! module: enrolment, heartbeats, desired config, actions). The edge
//! serializes these structs and its readers deserialize the same ones, so
//! a renamed or missing field is a compile error on the edge's side and a
//! decoding error on the reader's, never a silent 0.
//!
//! Invariants: every type is `Serialize + Deserialize`; fields are
//! required unless marked `#[serde(default)]` for a stated reason (an
//! older document that lacks them); enums are `snake_case` on the wire
//! and their `Display` is that same word, so the CLI and the JSON speak
//! one vocabulary. This crate depends on serde only: the manager can use
//! it without linking the proxy or the store.

mod action;
mod channel;
mod fleet;
pub mod session;
mod status;

pub use action::{
    ActionOutcome, CacheList, CachedObject, DroppedObject, ObjectAction, ReloadReport, StartedRun,
    SyncStarted, VerifyReport,
};
pub use channel::{
    ActiveFile, ChannelStatus, ExportStatus, FileOutcome, FileProblem, LimitHit, RunPhase,
    RunProgress, RunSummary, SourceKind, SyncResult,
};
pub use fleet::{
    ActionOrder, ActionResult, ActionSiteStatus, ActionState, ActionStatus, AppliedConfig,
    ChannelReport, ConfigRejection, DesiredConfig, EdgeList, EdgeReport, EdgeState, EdgeSummary,
    EnrolReply, EnrolRequest, FLEET_PROTOCOL, FLEET_PROTOCOL_HEADER, FleetAction, Heartbeat,
    HeartbeatReply, MAX_MISSING_LISTED, ManagerInit, Readiness, ReadinessState, SiteReadiness,
    SiteTraffic, TrafficTotals,
};
pub use status::{
    ActiveFill, CacheUsage, EdgeStatus, ManagerLink, ManagerStatus, ModeTraffic, ProxyMode,
    RequestCounts, ServedBytes, WanClass,
};

/// Every error the admin API answers: the reason, for a person.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// Implements `Display` as the enum's wire name.
macro_rules! wire_display {
    ($ty:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The word the JSON and the CLI use.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name),+
                }
            }
        }

        /// Compares with a wire name: `result == "ok"`.
        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use wire_display;
