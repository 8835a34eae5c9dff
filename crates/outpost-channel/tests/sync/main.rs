//! The channel crate's one integration-test binary: channel syncs against
//! an in-process origin that serves a package folder with directory
//! listings (IIS, nginx and Apache styles) or a manifest. One module per
//! concern; `support` holds the only harness.

mod support;

mod export;
mod fresh;
mod integrity;
mod limits;
mod listings;
mod live;
mod smb;
