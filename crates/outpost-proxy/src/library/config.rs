//! The library listener's settings, as the binary resolves them from
//! `[library]`: where it listens, what the PAC file says, which Delivery
//! Optimization origins and DNS-mode names it serves.

use std::net::SocketAddr;

use ipnet::IpNet;

/// A host name, or every name under a suffix (`*.example.com`), with the
/// port requests for it use (80 unless given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lower case, no trailing dot; for a suffix, without the `*.`.
    name: String,
    suffix: bool,
    port: u16,
}

/// Why a host pattern does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a host name, `*.suffix` or either with `:port`")]
pub struct BadHostPattern(pub String);

impl HostPattern {
    pub fn parse(text: &str) -> Result<Self, BadHostPattern> {
        let bad = || BadHostPattern(text.to_string());
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().map_err(|_| bad())?),
            None => (text, 80),
        };
        if port == 0 {
            return Err(bad());
        }
        let (suffix, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if !is_host_name(&name) {
            return Err(bad());
        }
        Ok(Self { name, suffix, port })
    }

    /// Whether a request for `host` on `port` is covered. `*.example.com`
    /// covers `a.example.com` and `a.b.example.com`, not `example.com`.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if port != self.port {
            return false;
        }
        let host = host.trim_end_matches('.');
        if self.suffix {
            host.len() > self.name.len() + 1
                && host
                    .get(host.len() - self.name.len()..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(&self.name))
                && host.as_bytes()[host.len() - self.name.len() - 1] == b'.'
        } else {
            host.eq_ignore_ascii_case(&self.name)
        }
    }
}

impl std::str::FromStr for HostPattern {
    type Err = BadHostPattern;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl std::str::FromStr for PacDirect {
    type Err = BadHostPattern;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.suffix {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)?;
        if self.port != 80 {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// A DNS name as origins use them: labels of letters, digits, `-` and `_`.
pub fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Where PCs should not use the edge, in the PAC file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacDirect {
    /// Addresses in this network (a host given by address, or one whose
    /// name resolves into it).
    Net(IpNet),
    /// This name and every name under it (`corp.example`).
    Domain(String),
}

impl PacDirect {
    pub fn parse(text: &str) -> Result<Self, BadHostPattern> {
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(Self::Net(net));
        }
        if let Ok(ip) = text.parse::<std::net::IpAddr>() {
            return Ok(Self::Net(IpNet::from(ip)));
        }
        let name = text.trim_start_matches('.').trim_end_matches('.');
        let name = name.strip_prefix("*.").unwrap_or(name).to_ascii_lowercase();
        if is_host_name(&name) {
            Ok(Self::Domain(name))
        } else {
            Err(BadHostPattern(text.to_string()))
        }
    }
}

/// The PAC file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacConfig {
    /// Destinations PCs reach directly.
    pub direct: Vec<PacDirect>,
    /// The proxy listener as PCs reach it (`host:port`); `None`: the
    /// proxy's own listen address (which the binary only allows when it
    /// is a specific address).
    pub proxy: Option<String>,
}

impl Default for PacConfig {
    fn default() -> Self {
        Self {
            direct: default_pac_direct(),
            proxy: None,
        }
    }
}

/// RFC 1918, loopback, link-local and the unique-local IPv6 range, plus
/// plain names (no dot), which PACs send direct by `isPlainHostName`.
pub fn default_pac_direct() -> Vec<PacDirect> {
    [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    ]
    .iter()
    .filter_map(|n| n.parse().ok().map(PacDirect::Net))
    .collect()
}

/// DNS mode: names the site's DNS points at the edge, served as origins
/// `http://NAME/...` resolved through `upstreams` only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsModeConfig {
    pub names: Vec<HostPattern>,
    /// Resolvers (`IP:port`) asked for the real addresses of `names`; never
    /// the system resolver, which points them back at the edge.
    pub upstreams: Vec<SocketAddr>,
}

/// `[library]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryConfig {
    /// The library listener; none unless set.
    pub listen: Option<SocketAddr>,
    pub pac: PacConfig,
    /// Origins Delivery Optimization clients may have the edge fetch from.
    pub do_hosts: Vec<HostPattern>,
    pub dns: DnsModeConfig,
    /// The `Host` values the site library answers (IP literals, single-label
    /// names, this machine's hostname, `library.allowed_hosts`): a page that
    /// rebinds a name of its own to the edge gets 421.
    pub allowed_hosts: crate::allowed_hosts::AllowedHosts,
}

impl Default for LibraryConfig {
    fn default() -> Self {
        Self {
            listen: None,
            pac: PacConfig::default(),
            do_hosts: default_do_hosts(),
            dns: DnsModeConfig::default(),
            allowed_hosts: crate::allowed_hosts::AllowedHosts::default().with_single_label_names(),
        }
    }
}

/// The content hosts Microsoft's own cache servers (Connected Cache in
/// Configuration Manager) forward for: Windows Update, Microsoft 365
/// Apps, Intune Win32 apps, the Store and Xbox. See docs/windows.md.
pub const DEFAULT_DO_HOSTS: &[&str] = &[
    "*.windowsupdate.com",
    "*.delivery.mp.microsoft.com",
    "*.dl.delivery.mp.microsoft.com",
    "officecdn.microsoft.com",
    "officecdn.microsoft.com.edgesuite.net",
    "*.manage.microsoft.com",
    "*.manage-selfhost.microsoft.com",
    "emdl.ws.microsoft.com",
    "*.xboxlive.com",
];

pub fn default_do_hosts() -> Vec<HostPattern> {
    DEFAULT_DO_HOSTS
        .iter()
        .filter_map(|p| HostPattern::parse(p).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_match_names_suffixes_and_ports() {
        let exact = HostPattern::parse("Dl.Example.com").unwrap();
        assert!(exact.matches("dl.example.COM", 80));
        assert!(exact.matches("dl.example.com.", 80));
        assert!(!exact.matches("dl.example.com", 8080));
        assert!(!exact.matches("x.dl.example.com", 80));
        let suffix = HostPattern::parse("*.example.com:8080").unwrap();
        assert!(suffix.matches("a.example.com", 8080));
        assert!(suffix.matches("a.b.example.com", 8080));
        assert!(!suffix.matches("example.com", 8080));
        assert!(!suffix.matches("badexample.com", 8080));
        assert!(!suffix.matches("a.example.com", 80));
        for bad in [
            "",
            "*",
            "a b",
            "a:0",
            "a:99999",
            "*.",
            "a..b",
            "user@host",
            "[::1]",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(default_do_hosts().len(), DEFAULT_DO_HOSTS.len());
    }

    #[test]
    fn pac_direct_entries_are_networks_or_domains() {
        assert_eq!(
            PacDirect::parse("10.1.0.0/16").unwrap(),
            PacDirect::Net("10.1.0.0/16".parse().unwrap())
        );
        assert_eq!(
            PacDirect::parse(".Corp.Example").unwrap(),
            PacDirect::Domain("corp.example".into())
        );
        assert!(PacDirect::parse("not a name").is_err());
    }
}
