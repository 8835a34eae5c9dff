//! Configuration reload (SIGHUP, `POST /reload`, `outpost reload`, a fleet
//! manager's new config): re-reads the file with the managed overlay, and
//! applies what can change without dropping a connection —
//! who may use the edge (client ranges, CONNECT ports, destinations), the
//! admin's caching rules and bypass headers, WAN limits and windows,
//! channels (added, removed, replaced or re-paced), the log level. Every other difference is reported as
//! needing a restart, never half-applied.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context;
use outpost_channel::Channels;
use outpost_proxy::Engine;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{Overrides, Resolved};

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
        // Without a file the command line stays, and a fleet manager's
        // managed.toml may still have changed.
        let layered = crate::config::load_layered(self.path.as_deref(), &self.overrides)
            .with_context(|| match &self.path {
                Some(path) => format!("reloading {}", path.display()),
                None => "reloading".to_string(),
            })?;
        for name in &layered.replaced_channels {
            tracing::info!(channel = %name, "the managed config replaces the local channel of this name");
        }
        let next = layered.resolved;
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut report = ReloadReport {
            applied: Vec::new(),
            restart_needed: Vec::new(),
        };
        let (old, new) = (&current.proxy, &next.proxy);
        for (name, changed) in restart_only_changes(&current, &next) {
            if changed {
                report.restart_needed.push(name.to_string());
            }
        }
        let (old_rules, new_rules) = (
            outpost_proxy::LiveRules::from_config(old),
            outpost_proxy::LiveRules::from_config(new),
        );
        if old_rules != new_rules {
            self.engine.set_rules(new_rules);
            report.applied.push(
                "server.allowed_clients, connect_ports, allowed_destinations, \
                 [[override]], cache.bypass_request_headers (new connections and requests)"
                    .into(),
            );
        }
        if (&old.wan.site, &old.wan.interactive, &old.wan.prepos)
            != (&new.wan.site, &new.wan.interactive, &new.wan.prepos)
        {
            self.engine.fills.shaper.set_policy(new.wan.clone());
            report.applied.push("[wan] limits and rules".into());
        }
        report
            .applied
            .extend(self.channels.reconfigure(&next.channels));
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
        // The receive buffer size is not live: keep the running one, so
        // the next reload still reports it.
        let running_buffer = current.proxy.wan.bulk_receive_buffer;
        current.proxy.wan = new.wan.clone();
        current.proxy.wan.bulk_receive_buffer = running_buffer;
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

/// The settings a running edge cannot change (they own sockets, files and
/// running tasks), each with whether it differs between two configurations.
pub fn restart_only_changes(old: &Resolved, new: &Resolved) -> Vec<(&'static str, bool)> {
    let (p, q) = (&old.proxy, &new.proxy);
    vec![
        ("server.listen", p.listen != q.listen),
        (
            "server.origin / [[site]]",
            (&p.origin, &p.sites) != (&q.origin, &q.sites),
        ),
        (
            "server limits and timeouts",
            (&p.h1, p.max_connections, p.drain) != (&q.h1, q.max_connections, q.drain),
        ),
        (
            "server.forward, forward_ports, internal_destinations, upstream_ca_file",
            (
                &p.forward,
                &p.forward_ports,
                &p.internal_destinations,
                &p.upstream_ca,
            ) != (
                &q.forward,
                &q.forward_ports,
                &q.internal_destinations,
                &q.upstream_ca,
            ),
        ),
        (
            "server.targeted_cache_control",
            p.targeted_cache_control != q.targeted_cache_control,
        ),
        ("[fill]", p.fill != q.fill),
        ("channel aliases", p.host_aliases != q.host_aliases),
        (
            "receive buffers of pre-positioning connections",
            p.wan.bulk_receive_buffer != q.wan.bulk_receive_buffer,
        ),
        ("[cache]", old.store != new.store),
        ("[admin]", old.admin != new.admin),
        ("[manager]", old.manager != new.manager),
        ("[library]", p.library != q.library),
        ("log.access_log", old.access_log != new.access_log),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::resolve_text;

    fn resolved(text: &str) -> Resolved {
        resolve_text(text, "t.toml", &Overrides::default())
            .unwrap_or_else(|e| panic!("{e}"))
            .1
    }

    fn restart_needed(old: &str, new: &str) -> Vec<&'static str> {
        restart_only_changes(&resolved(old), &resolved(new))
            .into_iter()
            .filter_map(|(name, changed)| changed.then_some(name))
            .collect()
    }

    const BASE: &str = "[server]\nlisten = [\"127.0.0.1:3128\"]\nallowed_clients = [\"10.0.0.0/8\"]\n[[override]]\npath = \"/pkgs/*\"\nmin_fresh = \"1day\"\n[wan]\nrate = \"10 Mbit/s\"\n";

    #[test]
    fn the_same_settings_written_differently_change_nothing() {
        let moved = "# comments and order do not matter\n[wan]\nrate = \"10Mbit/s\"\n[[override]]\nmin_fresh = \"24h\"\npath = \"/pkgs/*\"\n\n[server]\nallowed_clients = [\"10.0.0.0/8\"]\nlisten = [\"127.0.0.1:3128\"]\n";
        assert!(restart_needed(BASE, moved).is_empty());
        let (old, new) = (resolved(BASE), resolved(moved));
        assert_eq!(
            outpost_proxy::LiveRules::from_config(&old.proxy),
            outpost_proxy::LiveRules::from_config(&new.proxy)
        );
        assert_eq!(old.proxy.wan, new.proxy.wan);
    }

    #[test]
    fn live_rules_differ_by_value_and_need_no_restart() {
        let changed = BASE
            .replace("10.0.0.0/8", "192.168.0.0/16")
            .replace("/pkgs/*", "/packages/*")
            .replace("[wan]\n", "[wan]\ninteractive_rate = \"5 Mbit/s\"\n");
        assert!(restart_needed(BASE, &changed).is_empty());
        let (old, new) = (resolved(BASE), resolved(&changed));
        assert_ne!(
            outpost_proxy::LiveRules::from_config(&old.proxy),
            outpost_proxy::LiveRules::from_config(&new.proxy)
        );
        assert_ne!(old.proxy.wan.interactive, new.proxy.wan.interactive);
    }

    #[test]
    fn sockets_files_and_tasks_need_a_restart() {
        for (edit, expected) in [
            ("[server]\nlisten = [\"127.0.0.1:3129\"]\n", "server.listen"),
            ("[library]\nlisten = \"127.0.0.1:8080\"\n", "[library]"),
            (
                "[server]\norigin = \"http://o/\"\n",
                "server.origin / [[site]]",
            ),
            (
                "[server]\nidle_timeout = \"5s\"\n",
                "server limits and timeouts",
            ),
            ("[server]\ndrain = \"5s\"\n", "server limits and timeouts"),
            (
                "[server]\nforward_ports = [80]\n",
                "server.forward, forward_ports, internal_destinations, upstream_ca_file",
            ),
            (
                "[server]\ntargeted_cache_control = \"Outpost-Cache-Control\"\n",
                "server.targeted_cache_control",
            ),
            ("[fill]\nmax_fills = 8\n", "[fill]"),
            ("[cache]\nmax_size = \"2 GiB\"\n", "[cache]"),
            ("[admin]\nmax_connections = 8\n", "[admin]"),
            ("[admin]\nallowed_hosts = [\"edge\"]\n", "[admin]"),
            ("[log]\naccess_log = \"-\"\n", "log.access_log"),
            (
                "[[channel]]\nname = \"c\"\nsource = \"http://h/c/\"\naliases = [\"h2\"]\n",
                "channel aliases",
            ),
        ] {
            assert_eq!(restart_needed("", edit), vec![expected], "{edit}");
        }
    }
}
