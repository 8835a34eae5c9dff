//! DNS mode's name resolution: the names the site's DNS points at the
//! edge are resolved through the admin's upstream resolvers only. The
//! system resolver (and /etc/hosts) would answer the edge itself for them.
//!
//! The answers go through the destination guard like any other client
//! destination, so an upstream that also answers the edge's own address
//! (or loopback, link-local) is refused, never fetched: that is the loop
//! guard.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use super::config::{DnsModeConfig, HostPattern};

/// The DNS-mode names and the resolver that knows their real addresses.
pub struct DnsMode {
    names: Vec<HostPattern>,
    resolver: Option<hickory_resolver::TokioResolver>,
}

impl std::fmt::Debug for DnsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsMode")
            .field("names", &self.names)
            .finish()
    }
}

impl DnsMode {
    /// `None` when no name is in DNS mode.
    pub fn new(config: &DnsModeConfig) -> Option<Self> {
        if config.names.is_empty() {
            return None;
        }
        let servers = config
            .upstreams
            .iter()
            .map(|addr| {
                let connection = |mut c: ConnectionConfig| {
                    c.port = addr.port();
                    c
                };
                NameServerConfig::new(
                    addr.ip(),
                    true,
                    vec![
                        connection(ConnectionConfig::udp()),
                        connection(ConnectionConfig::tcp()),
                    ],
                )
            })
            .collect();
        let mut builder = hickory_resolver::Resolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        );
        let options = builder.options_mut();
        options.use_hosts_file = ResolveHosts::Never;
        options.timeout = Duration::from_secs(3);
        options.attempts = 2;
        options.ndots = 0;
        let resolver = match builder.build() {
            Ok(r) => Some(r),
            Err(e) => {
                // Without it the names resolve to nothing: refused, never
                // sent to the system resolver.
                tracing::error!(error = %e, "DNS mode: cannot build the resolver");
                None
            }
        };
        Some(Self {
            names: config.names.clone(),
            resolver,
        })
    }

    /// Whether `host` on `port` is one of the DNS-mode names.
    pub fn covers(&self, host: &str, port: u16) -> bool {
        self.names.iter().any(|n| n.matches(host, port))
    }

    /// The addresses the upstream resolvers give for `host`.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let resolver = self.resolver.as_ref().ok_or("DNS mode has no resolver")?;
        // Fully qualified: no search domain is appended.
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        let lookup = resolver
            .lookup_ip(fqdn.as_str())
            .await
            .map_err(|e| e.to_string())?;
        let addrs: Vec<SocketAddr> = lookup
            .iter()
            .map(|ip: IpAddr| SocketAddr::new(ip, port))
            .collect();
        if addrs.is_empty() {
            return Err("no address".into());
        }
        Ok(addrs)
    }
}
