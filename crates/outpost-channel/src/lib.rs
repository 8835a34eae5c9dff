//! Pre-positioning channels: a folder (directory listings) or a manifest of
//! packages that the edge copies to its disk on a schedule, before any PC
//! asks, keeps pinned, and serves at the packages' own URLs.
//!
//! This crate owns the channel configuration, the source parsers
//! ([`listing`]), cron schedules ([`cron`]), which files a channel takes
//! ([`filter`]), exports of its files as a plain tree ([`export`]), what
//! the edge remembers of each
//! channel across restarts (`state`), and the sync runs ([`Channels`]).
//!
//! Invariants:
//! - every byte a sync brings in goes through the engine's store and fill
//!   machinery ([`outpost_proxy::Engine::prefetch`]): one copy per URL, a PC
//!   asking meanwhile attaches to the running fill, and partial fills resume;
//! - a channel pins what it holds and unpins only what left a source that
//!   was listed completely (a listing error, or a listing cut by a limit,
//!   never unpins anything);
//! - a sync stays within its channel's [`ChannelLimits`] whatever the
//!   source serves (loops, huge pages, huge manifests): it lists, fetches
//!   and pins nothing beyond them, and says which limit stopped it;
//! - a body whose SHA-256 differs from the manifest's is never completed in
//!   the store and is refused to clients until a later sync finds it right.

pub mod cron;
pub mod export;
pub mod filter;
mod library_view;
pub mod listing;
mod state;
mod sync;

pub use cron::{CronError, CronSchedule};
pub use export::{ExportError, ExportStatus};
pub use filter::PathFilter;
pub use library_view::{
    FileState, LibraryChannel, LibraryEntry, LibraryFile, LibraryFolder, LibraryNode, LibraryPath,
    LibraryPathError, library_path_of, parse_library_path,
};
pub use sync::{
    ActiveFile, ChannelConfig, ChannelLimits, ChannelStatus, Channels, DEFAULT_GRACE, FileProblem,
    LimitHit, Revalidate, RunProgress, RunSummary, SourceKind,
};

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("channel database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("no channel named {0:?}")]
    Unknown(String),
    #[error("invalid include/exclude pattern: {0}")]
    Glob(#[from] globset::Error),
}
