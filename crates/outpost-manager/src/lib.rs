//! The fleet manager: one place that knows and steers every edge.
//!
//! Owns enrolment (join tokens, per-edge credentials, revocation, approval),
//! the fleet state in SQLite (WAL) under the data directory, scoped
//! configuration (global, group, site) with versions, diff, history and
//! rollback, readiness of channels and files per site, actions, alerts and
//! their webhook, the automation API (`/api/v1`), the edge protocol
//! (`/edge/v1`, see `outpost_protocol`'s fleet types), `/metrics` for the
//! whole fleet, and the dashboard.
//!
//! Never links the data plane (proxy, store, channel): the edge's config
//! checks reach it as a validator function the binary passes in, so the
//! manager refuses exactly what `check-config` refuses.
//!
//! Invariants:
//! - edges pull: the manager never opens a connection to an edge;
//! - a secret (edge credential, API token, password, session) is stored
//!   only as a hash;
//! - every change of desired config, enrolment, revocation and action is
//!   in the audit log with who, when, what and from where.
//!
//! Layout: [`model`] is the sans-io fleet model (states, precedence,
//! readiness); [`manager::Manager`] holds the fleet in memory over [`db`];
//! [`http`] is the thin axum layer; [`init`] makes a data directory.

pub mod auth;
pub mod dashboard;
pub mod db;
pub mod error;
pub mod fleet;
pub mod flush;
pub mod http;
pub mod init;
pub mod manager;
pub mod metrics;
pub mod model;
pub mod pinned_tls;
pub mod scope;
pub mod secret;
pub mod tls;
pub mod webhook;

pub use error::ManagerError;
pub use manager::{Actor, Manager, ManagerOptions, Validator};
pub use scope::Scope;
