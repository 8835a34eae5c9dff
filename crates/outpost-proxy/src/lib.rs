//! The Outpost edge's proxy: listeners and modes (forward, transparent,
//! reverse), the upstream client, fill orchestration and the hit path.
//!
//! A request's life: [`server`] accepts the connection, checks the client
//! against the ACL and decides the mode; [`engine`] maps the request to a
//! cache key, reads its [`clock`] once, and acts on what the one lookup
//! (`lookup::decide`, sans-io, shared with [`prefetch`]) says: serve from
//! the store, attach to a running fill, revalidate, or start a fill
//! ([`fill`]); [`serve`] turns a stored or filling object into a response
//! (ranges, conditionals, HEAD) whose body streams from disk as bytes land.
//! Every response the engine makes carries its [`CacheStatus`], which
//! [`h1`] counts and [`access_log`] logs.
//!
//! It never buffers a whole body in memory: fills write in batches of at most
//! a few hundred KiB and readers read in chunks of the same order.

pub mod access_log;
pub mod allowed_hosts;
pub mod cache_status;
pub mod clock;
pub mod config;
pub mod destination;
pub mod engine;
pub mod fill;
pub mod h1;
pub mod interim;
pub mod library;
pub mod local;
mod lookup;
pub mod prefetch;
pub mod serve;
pub mod server;
pub mod sync_fresh;
mod sys;
pub mod upstream;
pub mod wan;

pub use cache_status::CacheStatus;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{CacheOverride, FillConfig, LiveRules, ProxyConfig, RangeMissPolicy, Site};
pub use engine::Engine;
pub use library::LibraryConfig;
pub use local::{LocalAnswer, LocalSite};
pub use server::Server;
