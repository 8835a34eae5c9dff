//! Sans-io HTTP semantics for the Outpost edge.
//!
//! This crate owns the rules that do not depend on sockets or disks: how a
//! request maps to a cache key, how `Range` and `Content-Range` are parsed and
//! resolved, which headers are hop-by-hop, and the freshness policy (RFC 9111,
//! through `http-cache-semantics`, configured as a shared cache).
//!
//! Invariants:
//! - nothing here panics on input that came from the network: every parser
//!   returns an error or `None` instead;
//! - nothing here reads the clock: callers pass `now`.

pub mod cache_control;
pub mod date;
pub mod headers;
pub mod key;
pub mod path;
pub mod policy;
pub mod range;
pub mod vary;

pub use key::{CacheKey, KeyError};
pub use range::{ByteRange, ContentRange, RangeSet, RangeSpec};
