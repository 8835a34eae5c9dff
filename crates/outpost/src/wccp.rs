//! Wiring of `[wccp]`: builds the service groups from the resolved config
//! and starts the WCCP adapter (crate `outpost-wccp`), and with
//! `datapath = "outpost"` the edge's own GRE data path (raw socket + TUN).
//! A `[wccp]` change needs a restart.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Context;
use outpost_wccp::datapath::DatapathConfig;
use outpost_wccp::gre_io::{self, GreConfig, GreHandle};
use outpost_wccp::{AdapterConfig, GroupConfig, Password, WccpHandle};

use crate::config::{WccpConfig, WccpDatapath};

/// The running WCCP pieces.
pub struct Wccp {
    pub handle: WccpHandle,
    /// The edge's own GRE data path, with `datapath = "outpost"`.
    pub datapath: Option<GreHandle>,
}

/// The address the kernel would use towards `router`: our identity in the
/// group when `wccp.address` is not set and `wccp.listen` is a wildcard.
fn source_towards(router: SocketAddr) -> std::io::Result<Ipv4Addr> {
    let probe = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    probe.connect(router)?;
    match probe.local_addr()?.ip() {
        IpAddr::V4(v) => Ok(v),
        IpAddr::V6(_) => Err(std::io::Error::other("no IPv4 route to the router")),
    }
}

pub async fn start(cfg: &WccpConfig) -> anyhow::Result<Wccp> {
    let address = match (cfg.address, cfg.listen.ip()) {
        (Some(a), _) => a,
        (None, IpAddr::V4(v)) if !v.is_unspecified() => v,
        _ => {
            let first = cfg.routers.first().context("wccp.routers is empty")?;
            source_towards(*first).with_context(|| {
                format!("cannot find our address towards router {first}: set wccp.address")
            })?
        }
    };
    if cfg.password.is_none() {
        // Allowed (some sites start that way), but a host on the LAN can
        // then join the group, or spoof a router's messages, unchecked.
        tracing::warn!(
            "wccp.password is not set: any host on the LAN can join the service group or spoof the router; set the same password on both sides"
        );
    }
    let routers: Vec<Ipv4Addr> = cfg
        .routers
        .iter()
        .filter_map(|a| match a.ip() {
            IpAddr::V4(v) => Some(v),
            IpAddr::V6(_) => None,
        })
        .collect();
    let groups = cfg
        .services
        .iter()
        .map(|service| GroupConfig {
            service: service.clone(),
            cache_ip: address,
            routers: routers.clone(),
            weight: cfg.weight,
            forwarding: cfg.forwarding,
            return_method: cfg.return_method,
            assignment: cfg.assignment,
            mask: cfg.mask,
            interval: cfg.interval,
        })
        .collect();
    let handle = outpost_wccp::spawn(AdapterConfig {
        listen: cfg.listen,
        routers: cfg.routers.clone(),
        password: cfg.password.as_deref().and_then(Password::new),
        groups,
    })
    .await
    .with_context(|| format!("cannot listen for WCCP on {} (wccp.listen)", cfg.listen))?;
    tracing::info!(
        listen = %handle.local_addr,
        %address,
        routers = ?cfg.routers,
        services = cfg.services.len(),
        "WCCP: joining the service groups"
    );
    let datapath = match cfg.datapath {
        WccpDatapath::Kernel => None,
        WccpDatapath::Outpost => {
            let tunnel = cfg
                .tunnel
                .clone()
                .unwrap_or_else(|| crate::config::wccp_default_tunnel().to_string());
            let gre = gre_io::start(
                GreConfig {
                    address,
                    tunnel: tunnel.clone(),
                    datapath: DatapathConfig {
                        routers: routers.clone(),
                        bypass_destinations: cfg.bypass_destinations.clone(),
                        bypass_clients: cfg.bypass_clients.clone(),
                        max_redirected_flows: cfg.max_redirected_flows,
                        services: cfg
                            .services
                            .iter()
                            .map(outpost_wccp::datapath::RedirectedService::of)
                            .collect(),
                        local: address,
                    },
                },
                Some(handle.status_cell()),
            );
            let gre = match gre {
                Ok(gre) => gre,
                Err(e) => {
                    // Leave the groups at once (a removal, not silence):
                    // the routers must not redirect to an edge whose data
                    // path never opened until they time it out.
                    handle.stop().await;
                    return Err(anyhow::Error::new(e).context(format!(
                        "cannot start the GRE data path (wccp.datapath = \"outpost\": needs CAP_NET_RAW and CAP_NET_ADMIN, /dev/net/tun; docs/wccp.md) on {address}, tunnel {tunnel}"
                    )));
                }
            };
            tracing::info!(
                %address,
                %tunnel,
                bypass_destinations = cfg.bypass_destinations.len(),
                bypass_clients = cfg.bypass_clients.len(),
                max_redirected_flows = ?cfg.max_redirected_flows,
                "WCCP: decapsulating GRE in the edge (raw socket + TUN)"
            );
            Some(gre)
        }
    };
    Ok(Wccp { handle, datapath })
}

/// The kernel's counters of the interface redirected packets arrive on:
/// received = redirected to us, sent = returned (or answered) through it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TunnelCounters {
    pub interface: String,
    pub rx_packets: Option<u64>,
    pub rx_bytes: Option<u64>,
    pub tx_packets: Option<u64>,
    pub tx_bytes: Option<u64>,
}

/// Reads `/sys/class/net/NAME/statistics`; `None` fields when the
/// interface is missing (the tunnel is not set up).
pub fn tunnel_counters(name: &str) -> TunnelCounters {
    let read = |what: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{name}/statistics/{what}"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
    };
    TunnelCounters {
        interface: name.to_string(),
        rx_packets: read("rx_packets"),
        rx_bytes: read("rx_bytes"),
        tx_packets: read("tx_packets"),
        tx_bytes: read("tx_bytes"),
    }
}
