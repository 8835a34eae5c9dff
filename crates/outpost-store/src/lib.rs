//! The Outpost edge's disk store.
//!
//! Owns the object files, the SQLite index that describes them, the in-memory
//! state of objects being filled (which byte extents are on disk, who waits
//! for more), size accounting and eviction. It knows nothing of sockets or of
//! where bytes come from: the proxy writes fetched bytes in, readers wait for
//! extents and read them back.
//!
//! Invariants:
//! - a byte is readable (in an object's `present` extents) only after it has
//!   been written to the object's file;
//! - the index records an extent only after the file has been synced up to it,
//!   and marks an object complete only after its whole length is present and
//!   synced: after a crash or `kill -9`, nothing the index calls complete is
//!   torn, and partial objects resume from their last checkpoint;
//! - on open, index and files are reconciled: rows without a sound file and
//!   files without a row are dropped;
//! - one process at a time uses a cache directory: the store holds an
//!   exclusive `flock` on its `lock` file (with the holder's pid) while open;
//! - pinned objects are never evicted; eviction prefers objects that were
//!   used once (scan resistance) and skips objects being filled or read;
//! - a complete object's body file is never written again: a new version
//!   of a URL is a new object with a new id and file, and eviction, purge
//!   or replacement only unlink the old file (readers holding it keep its
//!   bytes). Channel exports hard-link body files on this promise.

mod error;
mod head;
mod index;
mod layout;
mod lock;
mod object;
mod reconcile;
mod small_body;
mod store;

pub use error::StoreError;
pub use head::StoredHead;
pub use object::{Availability, HeadAndLen, Object, ObjectSnapshot, Phase};
pub use store::{DiskReserve, EntryInfo, Store, StoreConfig, StoreStats, VerifyReport};
