//! The `[wccp]` table and its `[[wccp.service]]` tables: the routers that
//! redirect web traffic here by WCCPv2 (docs/wccp.md). Absent: no WCCP.
//!
//! Every value is checked here, so `check-config` catches what the
//! protocol would otherwise refuse at run time: a password longer than the
//! 8 bytes the MD5 security can carry, a mask with no bits or more than 7,
//! an interval outside WCCP fast timers' 0.5-60 s, duplicate service ids, a
//! dynamic service without a protocol, a bypass prefix with host bits
//! set, a bypass list or flow limit without the userspace data path that
//! applies them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use outpost_wccp::datapath::Ipv4Prefix;
use outpost_wccp::{
    ASSIGN_HASH, ASSIGN_MASK, FLAG_DST_IP_HASH, FLAG_DST_PORT_HASH, FLAG_PORTS_DEFINED,
    FLAG_PORTS_SOURCE, FLAG_SRC_IP_HASH, FLAG_SRC_PORT_HASH, METHOD_GRE, METHOD_L2, MaskElement,
    ServiceInfo, ServiceType, WCCP_PORT,
};
use serde::Deserialize;
use toml::Spanned;

use super::resolver::Resolver;
use super::values::{Dur, Setting};

type S<T> = Option<Setting<T>>;

#[derive(Debug, Default, Deserialize)]
pub struct WccpSection {
    pub routers: S<Vec<String>>,
    pub password: S<String>,
    pub forwarding: S<String>,
    #[serde(rename = "return")]
    pub return_method: S<String>,
    pub assignment: S<String>,
    pub weight: S<u16>,
    pub mask_source: S<u32>,
    pub mask_destination: S<u32>,
    pub listen: S<SocketAddr>,
    pub address: S<Ipv4Addr>,
    pub interval: S<Dur>,
    pub tunnel: S<String>,
    pub datapath: S<String>,
    pub bypass_destinations: S<Vec<String>>,
    pub bypass_clients: S<Vec<String>>,
    pub max_redirected_flows: S<u32>,
    #[serde(default, rename = "service")]
    pub services: Vec<Spanned<WccpServiceSection>>,
}

#[derive(Debug, Deserialize)]
pub struct WccpServiceSection {
    pub id: S<u8>,
    pub protocol: S<String>,
    pub ports: S<Vec<u16>>,
    pub priority: S<u8>,
    pub flags: S<Vec<String>>,
}

/// The resolved `[wccp]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WccpConfig {
    pub listen: SocketAddr,
    /// Our address as the routers know it; `None`: the address the kernel
    /// would use towards the first router.
    pub address: Option<Ipv4Addr>,
    pub routers: Vec<SocketAddr>,
    pub password: Option<String>,
    /// Allowed method bits (`auto` allows both).
    pub forwarding: u32,
    pub return_method: u32,
    pub assignment: u32,
    pub mask: MaskElement,
    pub weight: u16,
    pub interval: Duration,
    /// The interface redirected packets arrive on (`wccp0` for GRE), whose
    /// kernel counters `/status` and `/metrics` show.
    pub tunnel: Option<String>,
    /// Who decapsulates GRE: the kernel (an `ip tunnel` the admin set
    /// up) or the edge itself (raw socket + TUN).
    pub datapath: Datapath,
    /// Returned to the router instead of served (the edge's data path
    /// only).
    pub bypass_destinations: Vec<Ipv4Prefix>,
    pub bypass_clients: Vec<Ipv4Prefix>,
    /// New flows beyond this many accepted at once are returned.
    pub max_redirected_flows: Option<usize>,
    pub services: Vec<ServiceInfo>,
}

/// `wccp.datapath`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datapath {
    /// The admin's `ip tunnel ... mode gre` (or L2): the edge only counts.
    Kernel,
    /// The edge decapsulates GRE itself and can return packets.
    Outpost,
}

/// The tunnel name the edge's own data path uses unless `wccp.tunnel`
/// says otherwise.
pub const DEFAULT_TUNNEL: &str = "wccp0";

fn prefixes(r: &mut Resolver<'_>, key: &str, s: &S<Vec<String>>) -> Vec<Ipv4Prefix> {
    let mut out = Vec::new();
    let Some(list) = r.get(key, s) else {
        return out;
    };
    for text in &list {
        match text.parse::<Ipv4Prefix>() {
            Ok(p) => out.push(p),
            Err(e) => {
                if let Some(setting) = s {
                    r.error_at(&setting.span, format!("{key}: {e}"));
                }
            }
        }
    }
    out
}

fn methods(r: &mut Resolver<'_>, key: &str, s: &S<String>) -> u32 {
    let Some(text) = r.checked(key, s, |v| match v.as_str() {
        "auto" | "gre" | "l2" => Ok(()),
        other => Err(format!(
            "expected \"gre\", \"l2\" or \"auto\", got {other:?}"
        )),
    }) else {
        return METHOD_GRE | METHOD_L2;
    };
    match text.as_str() {
        "gre" => METHOD_GRE,
        "l2" => METHOD_L2,
        _ => METHOD_GRE | METHOD_L2,
    }
}

fn router_addr(text: &str) -> Result<SocketAddr, String> {
    let addr = text
        .parse::<SocketAddr>()
        .or_else(|_| {
            text.parse::<IpAddr>()
                .map(|ip| SocketAddr::new(ip, WCCP_PORT))
        })
        .map_err(|_| format!("{text:?} is not an IPv4 address (optionally with :port)"))?;
    match addr.ip() {
        IpAddr::V4(v) if !v.is_unspecified() && !v.is_broadcast() && !v.is_multicast() => Ok(addr),
        _ => Err(format!(
            "{text:?}: a router is a unicast IPv4 address (WCCP over IPv6 is not supported)"
        )),
    }
}

fn protocol(text: &str) -> Result<u8, String> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        n => n.parse::<u8>().map_err(|_| {
            format!("expected \"tcp\", \"udp\" or an IP protocol number, got {text:?}")
        }),
    }
}

fn flag(text: &str) -> Result<u32, String> {
    Ok(match text {
        "src_ip_hash" => FLAG_SRC_IP_HASH,
        "dst_ip_hash" => FLAG_DST_IP_HASH,
        "src_port_hash" => FLAG_SRC_PORT_HASH,
        "dst_port_hash" => FLAG_DST_PORT_HASH,
        "ports_source" => FLAG_PORTS_SOURCE,
        other => {
            return Err(format!(
                "unknown flag {other:?}: expected src_ip_hash, dst_ip_hash, src_port_hash, dst_port_hash or ports_source"
            ));
        }
    })
}

fn service(r: &mut Resolver<'_>, t: &Spanned<WccpServiceSection>) -> Option<ServiceInfo> {
    let span = t.span();
    let s = t.get_ref();
    let id = r.required(&span, "wccp.service.id", &s.id)?;
    let dynamic =
        s.protocol.is_some() || s.ports.is_some() || s.priority.is_some() || s.flags.is_some();
    if !dynamic {
        if id != 0 {
            r.error_at(
                &span,
                format!("wccp.service: service {id} is dynamic: it needs protocol (and usually ports); id = 0 alone is the standard web-cache"),
            );
            return None;
        }
        return Some(ServiceInfo::web_cache());
    }
    // Every key is checked before giving up, so one run shows every error.
    let protocol = match r.required(&span, "wccp.service.protocol", &s.protocol) {
        Some(p) => match protocol(&p) {
            Ok(p) => Some(p),
            Err(e) => {
                let at = s
                    .protocol
                    .as_ref()
                    .map(|x| x.span.clone())
                    .unwrap_or(span.clone());
                r.error_at(&at, format!("wccp.service.protocol: {e}"));
                None
            }
        },
        None => None,
    };
    let ports = r
        .checked("wccp.service.ports", &s.ports, |p| {
            if p.is_empty() || p.len() > 8 || p.contains(&0) {
                Err(format!("expected 1 to 8 ports from 1 to 65535, got {p:?}"))
            } else {
                Ok(())
            }
        })
        .unwrap_or_default();
    let mut flags = 0;
    if let Some(list) = r.get("wccp.service.flags", &s.flags) {
        for f in &list {
            match flag(f) {
                Ok(b) => flags |= b,
                Err(e) => {
                    let at = s
                        .flags
                        .as_ref()
                        .map(|x| x.span.clone())
                        .unwrap_or(span.clone());
                    r.error_at(&at, format!("wccp.service.flags: {e}"));
                }
            }
        }
    }
    if flags & (FLAG_SRC_IP_HASH | FLAG_DST_IP_HASH | FLAG_SRC_PORT_HASH | FLAG_DST_PORT_HASH) == 0
    {
        flags |= FLAG_DST_IP_HASH;
    }
    let mut port_fields = [0u16; 8];
    if !ports.is_empty() {
        flags |= FLAG_PORTS_DEFINED;
        port_fields[..ports.len()].copy_from_slice(&ports);
    }
    let priority = r.get("wccp.service.priority", &s.priority).unwrap_or(0);
    Some(ServiceInfo {
        kind: ServiceType::Dynamic,
        id,
        priority,
        protocol: protocol?,
        flags,
        ports: port_fields,
    })
}

pub(super) fn wccp_config(r: &mut Resolver<'_>, w: &WccpSection) -> Option<WccpConfig> {
    let routers_setting = w.routers.as_ref()?;
    let mut routers = Vec::new();
    if let Some(list) = r.get("wccp.routers", &w.routers) {
        if list.is_empty() {
            r.error_at(
                &routers_setting.span,
                "wccp.routers: list at least one router",
            );
        }
        for text in &list {
            match router_addr(text) {
                Ok(a) => routers.push(a),
                Err(e) => r.error_at(&routers_setting.span, format!("wccp.routers: {e}")),
            }
        }
    }
    let password = r.checked("wccp.password", &w.password, |p| {
        if outpost_wccp::Password::new(p).is_some() {
            Ok(())
        } else {
            Err("must be 1 to 8 bytes (WCCP's MD5 security pads or cuts to 8)".into())
        }
    });
    let forwarding = methods(r, "wccp.forwarding", &w.forwarding);
    let return_method = methods(r, "wccp.return", &w.return_method);
    let assignment = match r
        .checked("wccp.assignment", &w.assignment, |v| match v.as_str() {
            "auto" | "hash" | "mask" => Ok(()),
            other => Err(format!(
                "expected \"hash\", \"mask\" or \"auto\", got {other:?}"
            )),
        })
        .as_deref()
    {
        Some("hash") => ASSIGN_HASH,
        Some("mask") => ASSIGN_MASK,
        _ => ASSIGN_HASH | ASSIGN_MASK,
    };
    let mask = MaskElement {
        src_ip: r.get("wccp.mask_source", &w.mask_source).unwrap_or(
            if w.mask_destination.is_some() {
                0
            } else {
                outpost_wccp::assign::DEFAULT_SOURCE_MASK
            },
        ),
        dst_ip: r
            .get("wccp.mask_destination", &w.mask_destination)
            .unwrap_or(0),
        src_port: 0,
        dst_port: 0,
    };
    if !outpost_wccp::assign::mask_is_valid(mask) {
        let at = w
            .mask_source
            .as_ref()
            .or(w.mask_destination.as_ref())
            .map(|s| s.span.clone())
            .unwrap_or(routers_setting.span.clone());
        r.error_at(
            &at,
            format!(
                "wccp.mask_source/mask_destination: the mask must have 1 to {} bits set in all",
                outpost_wccp::assign::MAX_MASK_BITS
            ),
        );
    }
    let interval = r
        .checked("wccp.interval", &w.interval, |d| {
            if (Duration::from_millis(500)..=Duration::from_secs(60)).contains(&d.0) {
                Ok(())
            } else {
                Err(format!(
                    "must be from 500ms to 60s (WCCP fast timers), got {:?}",
                    d.0
                ))
            }
        })
        .map_or(Duration::from_secs(10), |d| d.0);
    let mut services = Vec::new();
    for t in &w.services {
        if let Some(s) = service(r, t) {
            if services.iter().any(|x: &ServiceInfo| x.same_group(&s)) {
                r.error_at(
                    &t.span(),
                    format!("wccp.service: service {} appears twice", s.id),
                );
                continue;
            }
            services.push(s);
        }
    }
    if w.services.is_empty() {
        services.push(ServiceInfo::web_cache());
    }
    let datapath = match r
        .checked("wccp.datapath", &w.datapath, |v| match v.as_str() {
            "kernel" | "outpost" => Ok(()),
            other => Err(format!(
                "expected \"kernel\" (an ip tunnel you set up) or \"outpost\" (the edge decapsulates GRE itself), got {other:?}"
            )),
        })
        .as_deref()
    {
        Some("outpost") => Datapath::Outpost,
        _ => Datapath::Kernel,
    };
    let bypass_destinations = prefixes(r, "wccp.bypass_destinations", &w.bypass_destinations);
    let bypass_clients = prefixes(r, "wccp.bypass_clients", &w.bypass_clients);
    let max_redirected_flows = r
        .get("wccp.max_redirected_flows", &w.max_redirected_flows)
        .map(|n| n as usize);
    if datapath == Datapath::Outpost
        && forwarding == METHOD_L2
        && let Some(setting) = &w.datapath
    {
        r.error_at(
            &setting.span,
            "wccp.datapath: \"outpost\" decapsulates GRE, but wccp.forwarding = \"l2\": no GRE would arrive (use \"auto\" or \"gre\")",
        );
    }
    if datapath == Datapath::Outpost
        && let Some(setting) = &w.datapath
    {
        // The edge's own data path reads GRE from the routers and returns
        // packets to them: a router at a loopback address or at the edge's
        // own would feed its returns back to itself, for ever.
        let own = r.get("wccp.address", &w.address);
        for router in &routers {
            let ip = router.ip();
            if ip.is_loopback() || ip.is_unspecified() || Some(ip) == own.map(IpAddr::V4) {
                r.error_at(
                    &setting.span,
                    format!(
                        "wccp.datapath: \"outpost\" with router {ip}: GRE from a loopback or the edge's own address would loop returned packets (name the router's real address)"
                    ),
                );
            }
        }
    }
    if datapath == Datapath::Kernel {
        // Returning packets is a per-packet decision the kernel's tunnel
        // cannot make: these keys would silently do nothing.
        for (key, span) in [
            (
                "wccp.bypass_destinations",
                w.bypass_destinations.as_ref().map(|s| s.span.clone()),
            ),
            (
                "wccp.bypass_clients",
                w.bypass_clients.as_ref().map(|s| s.span.clone()),
            ),
            (
                "wccp.max_redirected_flows",
                w.max_redirected_flows.as_ref().map(|s| s.span.clone()),
            ),
        ] {
            if let Some(span) = span {
                r.error_at(
                    &span,
                    format!("{key}: packets are returned only by the edge's own data path: set wccp.datapath = \"outpost\""),
                );
            }
        }
    }
    Some(WccpConfig {
        listen: r
            .get("wccp.listen", &w.listen)
            .unwrap_or_else(|| SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), WCCP_PORT)),
        address: r.get("wccp.address", &w.address),
        routers,
        password,
        forwarding,
        return_method,
        assignment,
        mask,
        weight: r.get("wccp.weight", &w.weight).unwrap_or(0),
        interval,
        tunnel: tunnel(r, w)
            .or_else(|| (datapath == Datapath::Outpost).then(|| DEFAULT_TUNNEL.to_string())),
        datapath,
        bypass_destinations,
        bypass_clients,
        max_redirected_flows,
        services,
    })
}

fn tunnel(r: &mut Resolver<'_>, w: &WccpSection) -> Option<String> {
    r.checked("wccp.tunnel", &w.tunnel, |name| {
        // It becomes a path under /sys/class/net: no separators, no dots alone.
        let ok = (1..=15).contains(&name.len())
            && name != "."
            && name != ".."
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{name:?} is not an interface name (1 to 15 letters, digits, '.', '_', '-')"
            ))
        }
    })
}
