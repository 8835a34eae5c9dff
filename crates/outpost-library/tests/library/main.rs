//! The library crate's one integration-test binary: an edge whose channel
//! synced a package folder from the fake origin, its library listener, and
//! what browsers, WebDAV clients (Debian's rclone and cadaver, the Windows
//! WebClient's recorded requests) and hostile paths get from it. One module
//! per concern; `support` holds the only harness.

mod support;

mod browse;
mod clients;
mod traversal;
mod webdav;
