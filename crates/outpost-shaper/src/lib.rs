//! WAN bandwidth policy, without I/O.
//!
//! This crate owns three things:
//! - [`Rate`]: a bandwidth as admins write it (`"2 Mbit/s"`, `"256 kbit/s"`,
//!   `"unlimited"`), kept in bytes per second;
//! - [`TimeWindow`] and [`RateSchedule`]: "this rate on weekdays 08:00-18:00,
//!   that one otherwise", evaluated at a local time the caller supplies;
//! - [`Shaper`]: token buckets (site, class, group) that grant upstream reads
//!   to waiting flows, higher-priority classes first and flows of one class
//!   in fair (byte-weighted) turns.
//!
//! Invariants: nothing here reads a clock; every operation takes `now`. Over
//! any interval the bytes granted through a bucket never exceed its rate times
//! the interval plus its burst plus one grant (grants are charged after the
//! bytes are read, so a bucket may run into debt by one read, never more).

mod rate;
mod shaper;
mod window;

pub use rate::{Rate, RateError};
pub use shaper::{BucketId, Class, Shaper, Ticket};
pub use window::{LocalTime, RateRule, RateSchedule, TimeWindow, WindowError};
