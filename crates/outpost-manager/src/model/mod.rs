//! The fleet model: plain functions over plain data, no I/O, `now` passed
//! in. The HTTP handlers and the store only feed them.

pub mod alerts;
pub mod events;
pub mod limits;
pub mod merge;
pub mod readiness;
pub mod state;
pub mod traffic;
