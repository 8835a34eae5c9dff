//! The proxy's resolved configuration (the binary turns the TOML file and the
//! command line into this).

use std::net::SocketAddr;
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;

// Each part owns its settings; they are gathered here for the binary.
pub use crate::fill::{FillConfig, RangeMissPolicy};

/// A named reverse-proxy site: requests whose Host is `host` go to `origin`.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// Host name (without port) the clients use; `*` matches any host.
    pub host: String,
    /// Origin base URL: scheme, authority and an optional path prefix.
    pub origin: Uri,
}

/// An admin's caching rules for the URLs whose host and path match.
#[derive(Debug, Clone)]
pub struct CacheOverride {
    /// Glob on the host name (lower case, no port).
    pub host: globset::GlobMatcher,
    /// Glob on the path (without the query).
    pub path: globset::GlobMatcher,
    pub freshness: outpost_http::policy::FreshnessOverride,
    /// The query string is not part of the cache key.
    pub ignore_query: bool,
    /// Never store: every request goes to the origin.
    pub never_cache: bool,
}

/// Two rules are the same when their patterns and settings are (reload
/// compares rules by value).
impl PartialEq for CacheOverride {
    fn eq(&self, other: &Self) -> bool {
        self.host.glob() == other.host.glob()
            && self.path.glob() == other.path.glob()
            && self.freshness == other.freshness
            && self.ignore_query == other.ignore_query
            && self.never_cache == other.never_cache
    }
}

impl CacheOverride {
    pub fn matches(&self, host: &str, path: &str) -> bool {
        self.host.is_match(host) && self.path.is_match(path)
    }
}

/// A destination forward and transparent clients may reach: a host-name
/// glob (`*.corp.example`) or an address range (`10.0.0.0/8`).
#[derive(Debug, Clone)]
pub enum Destination {
    Host(globset::GlobMatcher),
    Net(ipnet::IpNet),
}

impl PartialEq for Destination {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Host(a), Self::Host(b)) => a.glob() == b.glob(),
            (Self::Net(a), Self::Net(b)) => a == b,
            _ => false,
        }
    }
}

impl Destination {
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Ok(net) = text.parse::<ipnet::IpNet>() {
            return Ok(Self::Net(net));
        }
        if let Ok(ip) = text.parse::<std::net::IpAddr>() {
            return Ok(Self::Net(ipnet::IpNet::from(ip)));
        }
        globset::GlobBuilder::new(text)
            .case_insensitive(true)
            .build()
            .map(|g| Self::Host(g.compile_matcher()))
            .map_err(|e| format!("invalid destination {text:?}: {e}"))
    }

    /// Whether `host` (a name, or an address literal, brackets removed)
    /// is this destination.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match self {
            Self::Host(glob) => host.parse::<std::net::IpAddr>().is_err() && glob.is_match(host),
            Self::Net(net) => host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| net.contains(&ip)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen: Vec<SocketAddr>,
    /// Clients allowed to use the edge; everyone else gets 403.
    pub allowed_clients: Vec<IpNet>,
    /// Ports CONNECT may reach.
    pub connect_ports: Vec<u16>,
    /// If set, forward, transparent and CONNECT requests may only reach
    /// these destinations (reverse sites are the admin's own choice).
    pub allowed_destinations: Option<Vec<Destination>>,
    /// A single-site reverse proxy: every request goes to this origin.
    pub origin: Option<Uri>,
    pub sites: Vec<Site>,
    pub fill: FillConfig,
    /// Client-side HTTP/1.1 limits (header size and count, timeouts).
    pub h1: crate::h1::H1Config,
    /// Maximum simultaneous client connections.
    pub max_connections: usize,
    /// WAN rate limits by class and time of day.
    pub wan: crate::wan::WanPolicy,
    /// The local wall clock the WAN windows follow.
    pub local_clock: crate::wan::LocalClock,
    /// Other host names of an origin (lower case, no port) mapped to the
    /// origin's authority (`host[:port]`), so every name hits the same copy.
    pub host_aliases: std::collections::HashMap<String, String>,
    /// Caching rules by host and path; the first match applies.
    pub overrides: Vec<CacheOverride>,
    /// CA certificates trusted for https origins beside the OS store.
    pub upstream_ca: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// Request headers, beside the built-in override headers
    /// (X-Forwarded-Host and the like), whose presence makes a request
    /// bypass the cache: the origin builds its answer from them and the
    /// key does not include them.
    pub bypass_request_headers: Vec<http::HeaderName>,
    /// Loopback, link-local and other internal ranges that forward and
    /// transparent clients may reach all the same (an admin who really
    /// proxies to a service on the edge's host). The edge's own listen
    /// and admin addresses stay refused.
    pub internal_destinations: Vec<IpNet>,
    /// Absolute-form requests for hosts other than the configured sites are
    /// proxied. `None`: only when no reverse origin or site is configured.
    pub forward: Option<bool>,
    /// Ports forward and transparent requests may reach (inclusive
    /// ranges): HTTP written to a mail or database port can be read as
    /// commands by a lenient service (cross-protocol requests).
    pub forward_ports: Vec<(u16, u16)>,
    /// On SIGTERM/SIGINT the edge stops accepting and lets responses in
    /// flight finish for this long before it stops (a second signal ends
    /// at once).
    pub drain: Duration,
    /// The edge's own targeted cache-control field (RFC 9213 section 2.2,
    /// e.g. `Outpost-Cache-Control`): for its reverse origins it takes
    /// precedence over `CDN-Cache-Control`, which takes precedence over
    /// `Cache-Control`; both are removed from what clients receive.
    pub targeted_cache_control: Option<http::HeaderName>,
    /// The library listener and what it serves (`[library]`).
    pub library: crate::library::config::LibraryConfig,
}

/// Squid's `Safe_ports`, less the ports of protocols the edge does not
/// speak (FTP, gopher, WAIS): HTTP, HTTPS, the registered HTTP variants
/// and every unprivileged port.
pub fn default_forward_ports() -> Vec<(u16, u16)> {
    vec![
        (80, 80),
        (443, 443),
        (280, 280),
        (488, 488),
        (591, 591),
        (777, 777),
        (1025, 65535),
    ]
}

/// The rules a reload replaces while the edge runs: who may use the edge
/// and the admin's caching rules. They start as `ProxyConfig`'s; every
/// other setting needs a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveRules {
    pub allowed_clients: Vec<IpNet>,
    pub connect_ports: Vec<u16>,
    pub allowed_destinations: Option<Vec<Destination>>,
    pub overrides: Vec<std::sync::Arc<CacheOverride>>,
    pub bypass_request_headers: Vec<http::HeaderName>,
}

impl LiveRules {
    pub fn from_config(config: &ProxyConfig) -> Self {
        Self {
            allowed_clients: config.allowed_clients.clone(),
            connect_ports: config.connect_ports.clone(),
            allowed_destinations: config.allowed_destinations.clone(),
            overrides: config
                .overrides
                .iter()
                .cloned()
                .map(std::sync::Arc::new)
                .collect(),
            bypass_request_headers: config.bypass_request_headers.clone(),
        }
    }
}

/// Loopback and the private ranges: the LAN of a branch office.
pub fn default_allowed_clients() -> Vec<IpNet> {
    [
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    ]
    .iter()
    .filter_map(|n| n.parse().ok())
    .collect()
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 3128))],
            allowed_clients: default_allowed_clients(),
            connect_ports: vec![443],
            allowed_destinations: None,
            origin: None,
            sites: Vec::new(),
            fill: FillConfig::default(),
            h1: crate::h1::H1Config::default(),
            max_connections: 10_000,
            wan: crate::wan::WanPolicy::default(),
            local_clock: crate::wan::WanShaper::utc_clock(),
            host_aliases: std::collections::HashMap::new(),
            overrides: Vec::new(),
            upstream_ca: Vec::new(),
            bypass_request_headers: Vec::new(),
            internal_destinations: Vec::new(),
            forward: None,
            forward_ports: default_forward_ports(),
            drain: Duration::from_secs(30),
            targeted_cache_control: None,
            library: crate::library::config::LibraryConfig::default(),
        }
    }
}

impl ProxyConfig {
    /// Whether absolute-form requests for any host are forward-proxied: by
    /// default only on an edge with no reverse configuration, so that a
    /// reverse deployment is never an open proxy.
    /// The reverse site for requests naming `host`; `*` sites match any
    /// host only when `wildcard` (a Host header), not for absolute-form
    /// requests, which name a host of their own choice.
    pub fn site_for(&self, host: &str, wildcard: bool) -> Option<&Site> {
        self.sites
            .iter()
            .find(|s| (wildcard && s.host == "*") || s.host.eq_ignore_ascii_case(host))
    }

    /// Whether forward and transparent requests may reach `port`.
    pub fn forward_port_allowed(&self, port: u16) -> bool {
        self.forward_ports
            .iter()
            .any(|&(low, high)| (low..=high).contains(&port))
    }

    /// The targeted cache-control fields the edge obeys for its reverse
    /// origins, most specific first.
    pub fn targeted_fields(&self) -> outpost_http::policy::TargetedFields {
        outpost_http::policy::TargetedFields::new(self.targeted_cache_control.clone())
    }

    pub fn forward_enabled(&self) -> bool {
        self.forward
            .unwrap_or(self.origin.is_none() && self.sites.is_empty())
    }
}
