//! The store's tests, one module per concern, in one test binary (cheap to
//! link). Each asserts what a reader of the store, or a look at the cache
//! directory, observes.

mod common;
mod digest_hold;
mod disk_reserve;
mod eviction;
mod extents;
mod lock;
mod open_errors;
mod pins;
mod private_files;
mod reconcile;
