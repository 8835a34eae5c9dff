//! Where the edge may connect on a client's behalf.
//!
//! A PC on the LAN, or a web page it opens, chooses the destination of a
//! forward, transparent or CONNECT request. Left alone, it could make the
//! edge talk to itself (its admin API on loopback trusts nobody by token
//! alone, but the edge's own connections come *from* loopback), to other
//! services bound to loopback, or to link-local metadata endpoints. The
//! guard refuses those addresses after name resolution, and the connection
//! is then made to the very address that was checked: a name that resolves
//! to a public address at the check and to 127.0.0.1 at the connect (DNS
//! rebinding) cannot slip through, because there is no second resolution.
//!
//! Invariants:
//! - the edge's own listen and admin addresses are refused always, even
//!   when an admin allows loopback (`internal_destinations`);
//! - loopback, link-local, unspecified, multicast and broadcast addresses
//!   are refused unless an admin listed them;
//! - destinations the admin configured (reverse origins, channel sources)
//!   do not pass through the guard: they are the admin's own choice.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio::net::TcpStream;

/// Why a destination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0} is this edge's own listen or admin address")]
    OwnAddress(SocketAddr),
    #[error("{addr} is a {class} address")]
    Internal {
        addr: SocketAddr,
        class: &'static str,
    },
    #[error("{host} resolves to no address ({reason})")]
    Unresolved { host: String, reason: String },
    #[error("{host} resolves only to refused addresses: {first}")]
    AllRefused { host: String, first: Box<Refusal> },
}

/// The IPv4 address an IPv6 address carries and reaches through a
/// translation or tunnel: IPv4-mapped, IPv4-compatible (deprecated),
/// SIIT (`::ffff:0:a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`).
fn embedded_v4(v6: std::net::Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let seg = v6.segments();
    let low =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if seg[..6] == [0; 6] && !v6.is_unspecified() && !v6.is_loopback() {
        return Some(low(seg[6], seg[7]));
    }
    if seg[..6] == [0, 0, 0, 0, 0xffff, 0] || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low(seg[6], seg[7]));
    }
    if seg[0] == 0x2002 {
        return Some(low(seg[1], seg[2]));
    }
    None
}

/// The address class that makes `ip` internal to the edge's host, if any.
fn internal_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return internal_v4(v4);
            }
            if v6.segments()[..2] == [0xfd00, 0x0ec2] && v6.segments()[2..7] == [0; 5] {
                // fd00:ec2::254, a cloud's instance metadata.
                return Some("metadata");
            }
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if v6.is_unicast_link_local() {
                Some("link-local")
            } else {
                None
            }
        }
    }
}

fn internal_v4(v4: Ipv4Addr) -> Option<&'static str> {
    if v4.is_loopback() {
        Some("loopback")
    } else if v4.is_link_local() {
        Some("link-local")
    } else if v4.octets()[0] == 0 {
        // 0.0.0.0/8: Linux connects 0.0.0.0 to the local host.
        Some("unspecified")
    } else if v4.is_multicast() {
        Some("multicast")
    } else if v4.is_broadcast() {
        Some("broadcast")
    } else if v4 == Ipv4Addr::new(100, 100, 100, 200) {
        // A cloud's instance metadata outside link-local.
        Some("metadata")
    } else {
        None
    }
}

fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// How long the list of this host's addresses is trusted: they come and
/// go with DHCP and VPNs, and listing them is a netlink exchange.
const HOST_ADDRESSES_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// This host's interface addresses, as last listed.
#[derive(Debug, Default)]
struct HostAddresses {
    listed: Option<(std::time::Instant, Result<Vec<IpAddr>, String>)>,
}

/// The destination policy: the admin's allowlist of internal ranges and
/// the edge's own addresses (added as listeners bind).
#[derive(Debug, Default)]
pub struct DestinationGuard {
    internal_allowed: Vec<IpNet>,
    own: RwLock<Vec<SocketAddr>>,
    host: std::sync::Mutex<HostAddresses>,
    /// Names resolved through the admin's resolvers (DNS mode), never the
    /// system's.
    dns_mode: Option<crate::library::dns::DnsMode>,
}

impl DestinationGuard {
    pub fn new(internal_allowed: Vec<IpNet>) -> Self {
        Self {
            internal_allowed,
            own: RwLock::new(Vec::new()),
            host: Default::default(),
            dns_mode: None,
        }
    }

    /// Resolves DNS mode's names through `dns_mode`'s resolvers.
    pub fn with_dns_mode(mut self, dns_mode: Option<crate::library::dns::DnsMode>) -> Self {
        self.dns_mode = dns_mode;
        self
    }

    /// Whether `ip` is assigned to one of this host's interfaces.
    fn is_local_address(&self, ip: IpAddr) -> bool {
        if internal_class(ip).is_some_and(|c| c == "loopback" || c == "unspecified") {
            return true;
        }
        let mut host = self.host.lock().unwrap_or_else(|p| p.into_inner());
        let stale = host
            .listed
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() > HOST_ADDRESSES_TTL);
        if stale {
            let listed = if_addrs::get_if_addrs()
                .map(|all| all.iter().map(|i| unmapped(i.ip())).collect())
                .map_err(|e| e.to_string());
            host.listed = Some((std::time::Instant::now(), listed));
        }
        match host.listed.as_ref().map(|(_, l)| l) {
            Some(Ok(addresses)) => addresses.contains(&ip),
            Some(Err(e)) => {
                // Cannot tell: refuse, as for the edge's own addresses.
                tracing::warn!(error = %e, "cannot list this host's addresses");
                true
            }
            None => true,
        }
    }

    /// Records an address the edge listens on (proxy or admin).
    pub fn add_own_address(&self, addr: SocketAddr) {
        let mut own = self.own.write().unwrap_or_else(|p| p.into_inner());
        if !own.contains(&addr) {
            own.push(addr);
        }
    }

    fn is_own(&self, addr: SocketAddr) -> bool {
        let ip = unmapped(addr.ip());
        let own = self.own.read().unwrap_or_else(|p| p.into_inner());
        own.iter().any(|o| {
            o.port() == addr.port()
                && (unmapped(o.ip()) == ip
                    || (o.ip().is_unspecified() && self.is_local_address(ip)))
        })
    }

    /// Whether the edge may connect to `addr` for a client.
    pub fn check(&self, addr: SocketAddr) -> Result<(), Refusal> {
        if self.is_own(addr) {
            return Err(Refusal::OwnAddress(addr));
        }
        let ip = unmapped(addr.ip());
        if self.internal_allowed.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        // The host's own addresses on any port: a service bound to the
        // LAN address (or 0.0.0.0) is as much inside as one on loopback.
        let class =
            internal_class(ip).or_else(|| self.is_local_address(ip).then_some("this host's"));
        match class {
            Some(class) => Err(Refusal::Internal { addr, class }),
            None => Ok(()),
        }
    }

    /// Resolves `host` (a name or an address literal, brackets allowed) and
    /// keeps the addresses the edge may connect to, in resolver order.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) if let Some(dns) = self.dns_mode.as_ref().filter(|d| d.covers(bare, port)) => {
                dns.resolve(bare, port)
                    .await
                    .map_err(|reason| Refusal::Unresolved {
                        host: bare.to_string(),
                        reason: format!("DNS mode upstreams: {reason}"),
                    })?
            }
            Err(_) => tokio::net::lookup_host((bare, port))
                .await
                .map_err(|e| Refusal::Unresolved {
                    host: bare.to_string(),
                    reason: e.to_string(),
                })?
                .collect(),
        };
        let mut first_refusal = None;
        let mut allowed = Vec::with_capacity(addrs.len());
        for addr in addrs {
            match self.check(addr) {
                Ok(()) => allowed.push(addr),
                Err(r) => {
                    first_refusal.get_or_insert(r);
                }
            }
        }
        if allowed.is_empty() {
            return Err(match first_refusal {
                Some(r @ (Refusal::OwnAddress(_) | Refusal::Internal { .. }))
                    if bare.parse::<IpAddr>().is_ok() =>
                {
                    r
                }
                Some(r) => Refusal::AllRefused {
                    host: bare.to_string(),
                    first: Box::new(r),
                },
                None => Refusal::Unresolved {
                    host: bare.to_string(),
                    reason: "no address".into(),
                },
            });
        }
        Ok(allowed)
    }
}

/// The default port of `uri`'s scheme.
pub fn port_of(uri: &Uri) -> u16 {
    uri.port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        })
}

/// A connector that resolves the destination itself, refuses what the
/// guard refuses, and connects only to the addresses it checked.
#[derive(Clone)]
pub struct GuardedConnector {
    pub(crate) http: HttpConnector,
    pub(crate) guard: Arc<DestinationGuard>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut http = self.http.clone();
        let guard = self.guard.clone();
        Box::pin(async move {
            let host = uri.host().ok_or("URL without a host")?.to_string();
            let addrs = guard.resolve(&host, port_of(&uri)).await?;
            let mut last: Option<BoxError> = None;
            for addr in addrs {
                // An address literal: the inner connector does no lookup.
                let checked: Uri = format!("http://{addr}/").parse()?;
                match http.call(checked).await {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last = Some(e.into()),
                }
            }
            Err(last.unwrap_or_else(|| "no address to connect to".into()))
        })
    }
}

/// The guard's refusal inside an upstream error, if that is what it was.
pub fn refusal_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refusal> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(r) = e.downcast_ref::<Refusal>() {
            return Some(r);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_unless_listed() {
        let guard = DestinationGuard::new(Vec::new());
        for refused in [
            "127.0.0.1:80",
            "127.0.0.2:80",
            "[::1]:80",
            "169.254.169.254:80",
            "[fe80::1]:80",
            "0.0.0.0:80",
            "[::]:80",
            "224.0.0.1:80",
            "255.255.255.255:80",
            "[::ffff:127.0.0.1]:80",
            "[::ffff:169.254.169.254]:80",
            "[::127.0.0.1]:80",
        ] {
            assert!(guard.check(addr(refused)).is_err(), "{refused} allowed");
        }
        for refused in [
            "[64:ff9b::7f00:1]:80",
            "[2002:a9fe:a9fe::]:80",
            "[::ffff:0:127.0.0.1]:80",
            "[fd00:ec2::254]:80",
            "100.100.100.200:80",
        ] {
            assert!(guard.check(addr(refused)).is_err(), "{refused} allowed");
        }
        for allowed in ["10.1.2.3:80", "192.168.1.10:8080", "93.184.216.34:443"] {
            assert_eq!(guard.check(addr(allowed)), Ok(()), "{allowed} refused");
        }
        let listed = DestinationGuard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert_eq!(listed.check(addr("127.0.0.1:8080")), Ok(()));
        assert!(listed.check(addr("[::1]:8080")).is_err());
    }

    #[test]
    fn own_addresses_are_refused_even_when_loopback_is_allowed() {
        let guard = DestinationGuard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        guard.add_own_address(addr("127.0.0.1:3180"));
        guard.add_own_address(addr("0.0.0.0:3128"));
        assert!(matches!(
            guard.check(addr("127.0.0.1:3180")),
            Err(Refusal::OwnAddress(_))
        ));
        // A wildcard listener is reachable on every local address.
        assert!(matches!(
            guard.check(addr("127.0.0.5:3128")),
            Err(Refusal::OwnAddress(_))
        ));
        assert!(matches!(
            guard.check(addr("[::ffff:127.0.0.1]:3180")),
            Err(Refusal::OwnAddress(_))
        ));
        assert_eq!(guard.check(addr("127.0.0.1:8080")), Ok(()));
        // Not a local address: someone else's port 3128.
        assert_eq!(guard.check(addr("10.200.3.4:3128")), Ok(()));
    }

    #[test]
    fn the_hosts_own_addresses_are_refused_on_every_port() {
        let guard = DestinationGuard::new(Vec::new());
        // As if the host's LAN interface had 192.0.2.2 (whatever this
        // test machine's interfaces are).
        guard.host.lock().unwrap().listed = Some((
            std::time::Instant::now() + std::time::Duration::from_secs(3600),
            Ok(vec!["192.0.2.2".parse().unwrap()]),
        ));
        for port in [80, 6379] {
            assert_eq!(
                guard.check(SocketAddr::new("192.0.2.2".parse().unwrap(), port)),
                Err(Refusal::Internal {
                    addr: SocketAddr::new("192.0.2.2".parse().unwrap(), port),
                    class: "this host's"
                })
            );
        }
        assert_eq!(guard.check(addr("192.0.2.3:6379")), Ok(()));
        // The kernel's own list includes loopback, so listing works here.
        let listed = if_addrs::get_if_addrs().unwrap();
        assert!(listed.iter().any(|i| i.ip().is_loopback()));
    }

    #[tokio::test]
    async fn names_are_checked_after_resolution() {
        let guard = DestinationGuard::new(Vec::new());
        let refused = guard.resolve("localhost", 80).await.unwrap_err();
        assert!(matches!(refused, Refusal::AllRefused { .. }), "{refused:?}");
        assert!(matches!(
            guard.resolve("[::1]", 80).await,
            Err(Refusal::Internal { .. })
        ));
        assert_eq!(
            guard.resolve("10.0.0.1", 80).await,
            Ok(vec![addr("10.0.0.1:80")])
        );
    }
}
