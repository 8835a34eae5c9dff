//! Configuration reload (SIGHUP, `POST /reload`, `outpost reload`): re-reads
//! the file, and applies what can change without dropping a connection —
//! who may use the edge (client ranges, CONNECT ports, destinations), the
//! admin's caching rules and bypass headers, WAN limits and windows, channel
//! limits and windows, the log level. Every other difference is reported as
//! needing a restart, never half-applied.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context;
use outpost_channel::Channels;
use outpost_proxy::Engine;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{FileConfig, Overrides, Resolved};

/// Set once by `init_logging`: lets a reload change the log filter.
pub static LOG_FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

#[derive(Debug, serde::Serialize)]
pub struct ReloadReport {
    /// What took effect.
    pub applied: Vec<String>,
    /// What changed in the file but only takes effect after a restart.
    pub restart_needed: Vec<String>,
}

pub struct Reloader {
    path: Option<PathBuf>,
    overrides: Overrides,
    current: Mutex<Resolved>,
    engine: Arc<Engine>,
    channels: Arc<Channels>,
}

fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

impl Reloader {
    pub fn new(
        path: Option<PathBuf>,
        overrides: Overrides,
        current: Resolved,
        engine: Arc<Engine>,
        channels: Arc<Channels>,
    ) -> Self {
        Self {
            path,
            overrides,
            current: Mutex::new(current),
            engine,
            channels,
        }
    }

    pub fn reload(&self) -> anyhow::Result<ReloadReport> {
        let Some(path) = &self.path else {
            anyhow::bail!("the edge was started without --config: nothing to reload");
        };
        let next = FileConfig::load(path)
            .with_context(|| format!("reloading {}", path.display()))?
            .resolve(&self.overrides);
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut report = ReloadReport {
            applied: Vec::new(),
            restart_needed: Vec::new(),
        };
        let (old, new) = (&current.proxy, &next.proxy);
        for (name, changed) in [
            ("server.listen", differs(&old.listen, &new.listen)),
            (
                "server.origin / [[site]]",
                differs(&(&old.origin, &old.sites), &(&new.origin, &new.sites)),
            ),
            (
                "server limits and timeouts",
                differs(
                    &(&old.h1, old.max_connections),
                    &(&new.h1, new.max_connections),
                ),
            ),
            ("[fill]", differs(&old.fill, &new.fill)),
            (
                "channel aliases",
                differs(&old.host_aliases, &new.host_aliases),
            ),
            (
                "receive buffers of pre-positioning connections",
                differs(&old.wan.bulk_receive_buffer, &new.wan.bulk_receive_buffer),
            ),
            ("[cache]", differs(&current.store, &next.store)),
            ("[admin]", differs(&current.admin, &next.admin)),
            (
                "log.access_log",
                differs(&current.access_log, &next.access_log),
            ),
        ] {
            if changed {
                report.restart_needed.push(name.to_string());
            }
        }
        let (old_rules, new_rules) = (
            outpost_proxy::LiveRules::from_config(old),
            outpost_proxy::LiveRules::from_config(new),
        );
        if differs(&old_rules, &new_rules) {
            self.engine.set_rules(new_rules);
            report.applied.push(
                "server.allowed_clients, connect_ports, allowed_destinations, \
                 [[override]], cache.bypass_request_headers (new connections and requests)"
                    .into(),
            );
        }
        if differs(
            &(&old.wan.site, &old.wan.interactive, &old.wan.prepos),
            &(&new.wan.site, &new.wan.interactive, &new.wan.prepos),
        ) {
            self.engine.fills.shaper.set_policy(new.wan.clone());
            report.applied.push("[wan] limits and rules".into());
        }
        let before = report.restart_needed.len();
        report
            .restart_needed
            .extend(self.channels.reconfigure(&next.channels));
        if differs(&current.channels, &next.channels) && report.restart_needed.len() == before {
            report.applied.push("channel limits and windows".into());
        }
        if current.log_level != next.log_level && std::env::var_os("RUST_LOG").is_none() {
            let level = next.log_level.clone().unwrap_or_else(|| "info".into());
            let reloaded = match (EnvFilter::try_new(&level), LOG_FILTER.get()) {
                (Ok(filter), Some(handle)) => handle.reload(filter).is_ok(),
                _ => false,
            };
            if reloaded {
                report.applied.push(format!("log.level = {level:?}"));
            } else {
                report.restart_needed.push("log.level".into());
            }
        }
        // Keep what was applied; what needs a restart is compared against
        // the running values again next time.
        current.proxy.wan = new.wan.clone();
        current.proxy.allowed_clients = new.allowed_clients.clone();
        current.proxy.connect_ports = new.connect_ports.clone();
        current.proxy.allowed_destinations = new.allowed_destinations.clone();
        current.proxy.overrides = new.overrides.clone();
        current.proxy.bypass_request_headers = new.bypass_request_headers.clone();
        current.log_level = next.log_level.clone();
        current.channels = next.channels.clone();
        tracing::info!(applied = ?report.applied, restart_needed = ?report.restart_needed, "configuration reloaded");
        Ok(report)
    }
}
