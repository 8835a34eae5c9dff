//! The manager over real HTTP(S): a manager on a real socket, edges and
//! admins as protocol clients in the test.

mod alerts;
mod config;
mod edges;
mod limits;
mod support;
