//! The store's tests, one module per concern, in one test binary (cheap to
//! link). Each asserts what a reader of the store, or a look at the cache
//! directory, observes.

mod common;
mod digest_hold;
mod disk_reserve;
mod lock;
mod open_errors;
mod private_files;
