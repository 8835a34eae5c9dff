//! The tokio adapter: one UDP socket (port 2048 by default), the service
//! groups it drives, counters and a status snapshot. All protocol
//! decisions are the groups'; this file only moves datagrams and time.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::group::{GroupConfig, GroupStatus, ServiceGroup};
use crate::message::{MAX_MESSAGE_LEN, Password, decode, encode};

/// What the adapter runs.
#[derive(Debug, Clone)]
pub struct AdapterConfig {
    /// Where to bind: `0.0.0.0:2048` in production, a loopback address in
    /// tests.
    pub listen: SocketAddr,
    /// Each router's address; the group configs name routers by IP.
    pub routers: Vec<SocketAddr>,
    pub password: Option<Password>,
    pub groups: Vec<GroupConfig>,
}

/// Counters since start.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Counters {
    /// Messages received and accepted, by type.
    pub received: BTreeMap<String, u64>,
    /// Messages sent, by type.
    pub sent: BTreeMap<String, u64>,
    /// Datagrams refused: malformed, wrong password, wrong version.
    pub refused: u64,
    /// Well-formed messages from an address that is not a configured router.
    pub foreign: u64,
    pub send_errors: u64,
    pub last_refusal: Option<String>,
}

/// The `wccp` block of `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct WccpStatus {
    pub listen: SocketAddr,
    pub groups: Vec<GroupStatus>,
    pub counters: Counters,
}

/// A running adapter.
pub struct WccpHandle {
    status: Arc<Mutex<WccpStatus>>,
    stop: Arc<Notify>,
    task: Option<JoinHandle<()>>,
    pub local_addr: SocketAddr,
}

impl WccpHandle {
    pub fn status(&self) -> WccpStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A cheap clone of the status cell, for the admin API.
    pub fn status_cell(&self) -> Arc<Mutex<WccpStatus>> {
        self.status.clone()
    }

    /// Graceful stop: the groups announce their removal, then the task ends.
    pub async fn stop(mut self) {
        self.stop.notify_one();
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
    }

    /// Ungraceful stop, as a crash would: nothing more is sent.
    pub fn abort(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for WccpHandle {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

fn v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v) => Some(v),
        IpAddr::V6(v) => v.to_ipv4_mapped(),
    }
}

/// Binds the socket and starts the groups.
pub async fn spawn(cfg: AdapterConfig) -> std::io::Result<WccpHandle> {
    let socket = UdpSocket::bind(cfg.listen).await?;
    let local_addr = socket.local_addr()?;
    let now = Instant::now().into_std();
    let groups: Vec<ServiceGroup> = cfg
        .groups
        .iter()
        .map(|g| ServiceGroup::new(g.clone(), now))
        .collect();
    let status = Arc::new(Mutex::new(WccpStatus {
        listen: local_addr,
        groups: groups.iter().map(|g| g.status(now)).collect(),
        counters: Counters::default(),
    }));
    let stop = Arc::new(Notify::new());
    let task = tokio::spawn(run(socket, cfg, groups, status.clone(), stop.clone()));
    Ok(WccpHandle {
        status,
        stop,
        task: Some(task),
        local_addr,
    })
}

async fn run(
    socket: UdpSocket,
    cfg: AdapterConfig,
    mut groups: Vec<ServiceGroup>,
    status: Arc<Mutex<WccpStatus>>,
    stop: Arc<Notify>,
) {
    let router_addr: BTreeMap<Ipv4Addr, SocketAddr> = cfg
        .routers
        .iter()
        .filter_map(|a| v4(a.ip()).map(|ip| (ip, *a)))
        .collect();
    let mut counters = Counters::default();
    let mut buf = vec![0u8; 65536];
    let mut last_log: Option<Instant> = None;
    loop {
        let now = Instant::now().into_std();
        let deadline = groups
            .iter()
            .map(|g| g.next_deadline(now))
            .min()
            .unwrap_or(now + Duration::from_secs(3600));
        let mut out = Vec::new();
        // Whether the groups moved (a router's message, a timer): else only
        // the refusal counters changed, and a flood of refused datagrams
        // must not cost a rebuild of every group's status each.
        let mut groups_moved = true;
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let now = Instant::now().into_std();
                let data = &buf[..n.min(MAX_MESSAGE_LEN + 1)];
                match decode(data, cfg.password.as_ref()) {
                    Ok(msg) => {
                        let Some(ip) = v4(from.ip()) else { continue };
                        if !router_addr.contains_key(&ip) {
                            counters.foreign += 1;
                            groups_moved = false;
                        } else {
                            *counters.received.entry(msg.kind.name().to_string()).or_default() += 1;
                            for g in &mut groups {
                                out.extend(g.handle(ip, &msg, now));
                            }
                        }
                    }
                    Err(e) => {
                        counters.refused += 1;
                        groups_moved = false;
                        let text = format!("{from}: {e}");
                        // One line per second at most: a flood must not
                        // become a log flood.
                        if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                            tracing::warn!(target: "wccp", "refused datagram from {text}");
                            last_log = Some(Instant::now());
                        }
                        counters.last_refusal = Some(text);
                    }
                }
            }
            _ = tokio::time::sleep_until(Instant::from_std(deadline)) => {
                let now = Instant::now().into_std();
                for g in &mut groups {
                    out.extend(g.poll(now));
                }
            }
            _ = stop.notified() => {
                let now = Instant::now().into_std();
                for g in &mut groups {
                    for o in g.shutdown(now) {
                        send(&socket, &router_addr, &cfg, &o, &mut counters).await;
                    }
                }
                publish(&status, &groups, &counters, now);
                return;
            }
        }
        for o in &out {
            send(&socket, &router_addr, &cfg, o, &mut counters).await;
        }
        if groups_moved {
            publish(&status, &groups, &counters, Instant::now().into_std());
        } else {
            publish_refusals(&status, &counters);
        }
    }
}

/// Only the refusal counters, after a datagram that changed nothing else.
fn publish_refusals(status: &Mutex<WccpStatus>, counters: &Counters) {
    let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
    s.counters.refused = counters.refused;
    s.counters.foreign = counters.foreign;
    s.counters.last_refusal.clone_from(&counters.last_refusal);
}

async fn send(
    socket: &UdpSocket,
    router_addr: &BTreeMap<Ipv4Addr, SocketAddr>,
    cfg: &AdapterConfig,
    o: &crate::group::Outgoing,
    counters: &mut Counters,
) {
    let Some(addr) = router_addr.get(&o.to) else {
        return;
    };
    let bytes = encode(&o.message, cfg.password.as_ref());
    match socket.send_to(&bytes, addr).await {
        Ok(_) => {
            *counters
                .sent
                .entry(o.message.kind.name().to_string())
                .or_default() += 1
        }
        Err(e) => {
            counters.send_errors += 1;
            tracing::debug!(target: "wccp", "send to {addr}: {e}");
        }
    }
}

fn publish(
    status: &Mutex<WccpStatus>,
    groups: &[ServiceGroup],
    counters: &Counters,
    now: std::time::Instant,
) {
    let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
    s.groups = groups.iter().map(|g| g.status(now)).collect();
    s.counters = counters.clone();
}
