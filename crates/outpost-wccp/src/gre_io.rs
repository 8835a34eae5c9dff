//! The userspace GRE data path's I/O (`wccp.datapath = "outpost"`): a raw
//! IPv4 socket for protocol 47 bound to the edge's WCCP address, a TUN
//! interface the inner packets are written to, and one dedicated thread
//! that reads the socket and applies [`crate::datapath::Datapath`]'s
//! verdicts. The kernel does the rest: nftables redirects port 80 arriving
//! on the TUN to the transparent listener.
//!
//! A thread rather than tokio's `AsyncFd`: the work per packet is a parse
//! and a write, the raw socket and the TUN are plain blocking fds (no
//! `unsafe` beyond the TUN's setup ioctls), and the loop never competes
//! with the proxy's runtime workers. The read has a timeout so the thread
//! sees its stop flag; errors are counted and followed by a pause, never
//! retried in a busy loop.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::datapath::{Datapath, DatapathConfig, DatapathCounters, DropReason, Verdict};
use crate::group::Method;
use crate::udp::WccpStatus;

/// What to start.
#[derive(Debug, Clone)]
pub struct GreConfig {
    /// The edge's WCCP address: the raw socket is bound to it (GRE to
    /// other local addresses is not ours) and returned packets leave from
    /// it. The TUN gets it too, as a /32, for nftables' `redirect`.
    pub address: Ipv4Addr,
    /// The TUN interface's name (`wccp0`).
    pub tunnel: String,
    pub datapath: DatapathConfig,
}

/// The `datapath` block of the WCCP status.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DatapathStatus {
    pub mode: String,
    pub tunnel: String,
    pub address: Ipv4Addr,
    pub bypass_destinations: Vec<String>,
    pub bypass_clients: Vec<String>,
    pub max_redirected_flows: Option<usize>,
    /// Service ids whose negotiated return method is GRE (only those can
    /// be returned).
    pub gre_return_services: Vec<u8>,
    pub counters: DatapathCounters,
}

/// A running data path; stops its thread on drop.
pub struct GreHandle {
    status: Arc<Mutex<DatapathStatus>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl GreHandle {
    pub fn status_cell(&self) -> Arc<Mutex<DatapathStatus>> {
        self.status.clone()
    }

    pub fn status(&self) -> DatapathStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for GreHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Also how stale the published counters can be when traffic stops.
const READ_TIMEOUT: Duration = Duration::from_millis(50);
const PUBLISH_EVERY: Duration = Duration::from_millis(50);
const ERROR_PAUSE: Duration = Duration::from_millis(100);
const TUN_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Opens the raw GRE socket bound to `address` (needs CAP_NET_RAW).
pub fn raw_gre_socket(address: Ipv4Addr) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(i32::from(crate::gre::IPPROTO_GRE))),
    )
    .map_err(|e| io::Error::new(e.kind(), format!("raw GRE socket (needs CAP_NET_RAW): {e}")))?;
    s.bind(&SockAddr::from(SocketAddrV4::new(address, 0)))
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("bind the raw GRE socket to {address}: {e}"),
            )
        })?;
    // Bursts of redirected packets must not be dropped while the thread
    // writes to the TUN; the kernel caps this at rmem_max.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.set_read_timeout(Some(READ_TIMEOUT))?;
    Ok(s)
}

/// Creates (or reuses) a TUN interface and sets it up, nothing else (the
/// test router's redirect and return interfaces).
pub fn open_plain_tun(name: &str) -> io::Result<File> {
    let tun = crate::sys::open_tun(name)?;
    crate::sys::set_up(name)?;
    Ok(tun)
}

/// Creates (or reuses) the TUN interface, gives it `address`/32, sets it
/// up and turns reverse-path filtering off on it.
pub fn open_tunnel(name: &str, address: Ipv4Addr) -> io::Result<File> {
    let tun = crate::sys::open_tun(name)?;
    match crate::sys::set_address(name, address) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(17) => {} // EEXIST: already there
        Err(e) => return Err(e),
    }
    crate::sys::set_up(name)?;
    // Reverse-path filtering off on the TUN: the PCs' packets arrive on it
    // while the route back to them is on the LAN interface. Already 0
    // (set by the admin, or a reused TUN): nothing to write, so a
    // read-only /proc/sys is fine then.
    let conf = format!("/proc/sys/net/ipv4/conf/{name}/rp_filter");
    if std::fs::read_to_string(&conf).map_or(true, |v| v.trim() != "0") {
        std::fs::write(&conf, "0").map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{conf}: {e} (under systemd: ProtectKernelTunables=no, docs/wccp.md)"),
            )
        })?;
    }
    // The kernel filters with max(conf/all, conf/NAME): strict (1) in
    // `all` drops every redirected packet (its source, the PC, is routed
    // through another interface). Loose (2) passes. We do not weaken the
    // host's setting ourselves: the admin is told.
    if std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter")
        .is_ok_and(|v| v.trim() == "1")
    {
        tracing::warn!(
            target: "wccp",
            "net.ipv4.conf.all.rp_filter is 1 (strict): the kernel drops the redirected packets written to {name}; set it to 0 or 2 (docs/wccp.md)"
        );
    }
    Ok(tun)
}

/// Opens the socket and the TUN, then starts the thread. `wccp` is the
/// WCCP adapter's status: which services negotiated GRE return.
pub fn start(cfg: GreConfig, wccp: Option<Arc<Mutex<WccpStatus>>>) -> io::Result<GreHandle> {
    let socket = raw_gre_socket(cfg.address)?;
    let tun = open_tunnel(&cfg.tunnel, cfg.address)?;
    let status = Arc::new(Mutex::new(DatapathStatus {
        mode: "outpost".into(),
        tunnel: cfg.tunnel.clone(),
        address: cfg.address,
        bypass_destinations: cfg
            .datapath
            .bypass_destinations
            .iter()
            .map(|p| p.to_string())
            .collect(),
        bypass_clients: cfg
            .datapath
            .bypass_clients
            .iter()
            .map(|p| p.to_string())
            .collect(),
        max_redirected_flows: cfg.datapath.max_redirected_flows,
        gre_return_services: Vec::new(),
        counters: DatapathCounters::default(),
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = std::thread::Builder::new().name("wccp-gre".into()).spawn({
        let (status, stop) = (status.clone(), stop.clone());
        move || run(socket, tun, cfg, wccp, status, stop)
    })?;
    Ok(GreHandle {
        status,
        stop,
        thread: Some(thread),
    })
}

/// Services whose negotiated return method is GRE.
fn gre_return_services(wccp: &Option<Arc<Mutex<WccpStatus>>>) -> BTreeMap<u8, bool> {
    let Some(cell) = wccp else {
        return BTreeMap::new();
    };
    let s = cell.lock().unwrap_or_else(|e| e.into_inner());
    s.groups
        .iter()
        .map(|g| {
            (
                g.service_id,
                g.negotiated
                    .as_ref()
                    .is_some_and(|n| n.return_method == Method::Gre),
            )
        })
        .collect()
}

fn run(
    socket: Socket,
    mut tun: File,
    cfg: GreConfig,
    wccp: Option<Arc<Mutex<WccpStatus>>>,
    status: Arc<Mutex<DatapathStatus>>,
    stop: Arc<AtomicBool>,
) {
    let mut dp = Datapath::new(cfg.datapath);
    let mut buf = vec![0u8; 65_536];
    let mut returns = gre_return_services(&wccp);
    let mut refreshed = Instant::now();
    let mut published = Instant::now();
    let mut last_log: Option<Instant> = None;
    let mut log = |what: String| {
        if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            tracing::warn!(target: "wccp", "GRE data path: {what}");
            last_log = Some(Instant::now());
        }
    };
    let publish = |dp: &Datapath, returns: &BTreeMap<u8, bool>| {
        let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
        s.counters = dp.counters.clone();
        s.gre_return_services = returns
            .iter()
            .filter(|(_, gre)| **gre)
            .map(|(id, _)| *id)
            .collect();
    };
    publish(&dp, &returns);
    while !stop.load(Ordering::Relaxed) {
        if refreshed.elapsed() >= Duration::from_millis(500) {
            returns = gre_return_services(&wccp);
            refreshed = Instant::now();
        }
        let n = match (&socket).read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                publish(&dp, &returns);
                published = Instant::now();
                continue;
            }
            Err(e) => {
                log(format!("reading the raw GRE socket: {e}"));
                std::thread::sleep(ERROR_PAUSE);
                continue;
            }
        };
        let gre_return = |service: Option<u8>| match service {
            Some(id) => returns.get(&id).copied().unwrap_or(false),
            None => returns.values().any(|g| *g),
        };
        let verdict = dp.handle(&buf[..n], Instant::now(), gre_return);
        tracing::trace!(target: "wccp", len = n, ?verdict, "GRE packet");
        match verdict {
            Verdict::Deliver(inner) => {
                let len = inner.len();
                if let Err(e) = tun.write(inner) {
                    dp.delivery_failed(len);
                    log(format!("writing to {}: {e}", cfg.tunnel));
                    // A TUN that refuses writes (taken down by hand) must
                    // not turn the loop into a spin: at most 100 packets
                    // a second are tried until it recovers.
                    std::thread::sleep(TUN_ERROR_PAUSE);
                }
            }
            Verdict::Return {
                router,
                gre,
                reason,
            } => {
                let to = SockAddr::from(SocketAddrV4::new(router, 0));
                if let Err(e) = socket.send_to(&gre, &to) {
                    dp.return_failed(reason, gre.len().saturating_sub(8));
                    log(format!("returning a packet to {router}: {e}"));
                }
            }
            Verdict::Drop(DropReason::NotFromRouter) | Verdict::Drop(DropReason::Malformed) => {
                if let Some(why) = &dp.counters.last_drop {
                    tracing::debug!(target: "wccp", "GRE packet dropped: {why}");
                }
            }
            Verdict::Drop(_) => {}
        }
        if published.elapsed() >= PUBLISH_EVERY {
            publish(&dp, &returns);
            published = Instant::now();
        }
    }
    publish(&dp, &returns);
}
