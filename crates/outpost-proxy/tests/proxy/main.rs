//! The proxy's one integration-test binary: the edge end to end, with a
//! real listener, a real disk store, fake origins in-process and clients
//! over loopback sockets. One module per concern; `common` holds the only
//! harness. Tests that need root are `#[ignore = "needs root: ..."]` and
//! fail, never skip, when their setup cannot be made.

mod common;

mod client_limits;
mod collapse;
mod library;
mod lookup;
mod modes;
mod resume;
mod rfc9111;
mod security_destinations;
mod security_integrity;
mod security_sharing;
mod serving;
