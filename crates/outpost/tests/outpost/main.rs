//! The `outpost` binary's one integration-test binary: the binary as an
//! admin runs it, real `outpost serve` processes, signals, restarts on the
//! same cache directory, and the CLI against a running edge. One module per
//! concern; `support` holds the only process harness.

mod fake_manager;
mod support;

mod admin_auth;
mod admin_cli;
mod cache_lock;
mod check_config;
mod commands;
mod drain;
mod export_cli;
mod fleet_cli;
mod fleet_e2e;
mod fleet_edge;
mod library;
mod signals;
mod wccp;
mod wccp_datapath;
mod wccp_gre;
