//! WCCPv2, the cache side (draft-wilson-wrec-wccp-v2, draft-mclaggan-wccp-
//! v2rev1): the branch router redirects web traffic to the edge, and spreads
//! it over several edges of one site by hash buckets or mask values.
//!
//! This crate owns:
//! - the codec ([`message`], [`component`]): every WCCPv2 message and the
//!   components they carry, MD5 security, strict parsing that checks every
//!   length, bounds every count by the bytes left and never panics;
//! - the per-service-group state machine ([`group`]), sans-io: it is fed
//!   received messages and `now`, and answers with messages to send and the
//!   next time it wants to be polled; the assignment arithmetic
//!   ([`assign`]) is pure;
//! - a thin tokio UDP adapter ([`udp`]) that drives one socket and its
//!   groups;
//! - the userspace GRE data path (`wccp.datapath = "outpost"`): WCCP's GRE
//!   and redirect-header codec ([`gre`]) and the per-packet decisions
//!   (deliver, return to the router, drop; flow table) ([`datapath`]),
//!   both sans-io, and their I/O on a raw socket and a TUN interface
//!   ([`gre_io`], with the TUN ioctls in the crate's one `unsafe` module).
//!
//! It never touches the proxy or the store: it decides which traffic the
//! router sends here, and which packets go back, not what the proxy does
//! with a connection. IPv4 only (WCCP 2.01's
//! address table, used for IPv6, is refused).

pub mod assign;
pub mod component;
pub mod datapath;
pub mod gre;
pub mod gre_io;
pub mod group;
pub mod message;
mod sys;
pub mod udp;
mod wire;

pub use component::*;
pub use group::{
    AssignMethod, GroupConfig, GroupStatus, Method, Negotiated, Outgoing, RouterStatus,
    ServiceGroup,
};
pub use message::{MAX_MESSAGE_LEN, Message, MessageType, Password, WCCP_PORT, decode, encode};
pub use udp::{AdapterConfig, Counters, WccpHandle, WccpStatus, spawn};

/// Why a datagram was refused. None of these is fatal: the adapter counts
/// and logs them and carries on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated: {what} needs {need} bytes, {have} left")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("{what} of {count} cannot fit in the {room} elements' worth of bytes left")]
    CountTooLarge {
        what: &'static str,
        count: usize,
        room: usize,
    },
    #[error("{what}: {extra} bytes left over")]
    TrailingBytes { what: &'static str, extra: usize },
    #[error("header length {header} but {actual} bytes follow the header")]
    LengthMismatch { header: usize, actual: usize },
    #[error("datagram of {0} bytes is larger than any WCCP message")]
    TooLong(usize),
    #[error("not a WCCPv2 message type: {0}")]
    UnknownMessage(u32),
    #[error("not WCCP version 2: {0:#06x}")]
    Version(u16),
    #[error("bad {0}: {1}")]
    BadValue(&'static str, u32),
    #[error("unsupported {0}: {1}")]
    Unsupported(&'static str, u32),
    #[error("component {0} appears twice")]
    DuplicateComponent(u16),
    #[error("missing {0} component")]
    MissingComponent(&'static str),
    #[error("security option does not match ours (password set on one side only)")]
    SecurityMismatch,
    #[error("MD5 digest does not match (wrong password)")]
    BadDigest,
}
