//! A router's WCCP GRE redirect and packet return, in userspace, for root
//! tests on kernels without `ip_gre` (CI's): what a Cisco router does in
//! its forwarding path, reduced to one service group.
//!
//! Inside the router's network namespace it opens two TUN interfaces and
//! a raw GRE socket bound to the router's address:
//! - `redirect` TUN: the test policy-routes the client's port-80 packets
//!   into it (nftables mark on the LAN ingress, `ip rule fwmark`, a
//!   default route via the TUN in that table). A thread reads each packet,
//!   wraps it in GRE 0x883E with a WCCP redirect header and sends it to
//!   the edge: WCCP GRE forwarding.
//! - `return` TUN: a thread reads GRE from the edge on the raw socket,
//!   decapsulates it (0x883E with a redirect header: a returned packet)
//!   and writes the inner packet into this TUN, whose ingress is not
//!   redirected, so the kernel forwards it to the origin: WCCP GRE return.
//!
//! Counters say how many packets went each way.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use outpost_wccp::gre::{self, RedirectHeader};
use outpost_wccp::gre_io;
use socket2::{SockAddr, Socket};

#[derive(Debug, Clone)]
pub struct RedirectorConfig {
    /// The router's network namespace (`ip netns` name).
    pub netns: String,
    /// The router's address: the GRE source (its WCCP router id).
    pub router: Ipv4Addr,
    /// The edge the packets are redirected to.
    pub edge: Ipv4Addr,
    pub redirect_tun: String,
    pub return_tun: String,
    pub service_id: u8,
}

/// What went through the redirector.
#[derive(Debug, Default)]
pub struct RedirectorCounters {
    /// Packets encapsulated and sent to the edge.
    pub redirected: AtomicU64,
    /// Returned packets decapsulated and handed to the kernel.
    pub returned: AtomicU64,
    /// GRE from the edge that was not a WCCP return (refused).
    pub refused: AtomicU64,
}

pub struct GreRedirector {
    pub counters: Arc<RedirectorCounters>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for GreRedirector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Waits up to 200 ms for `file` to be readable.
fn readable(file: &File) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::new(file, PollFlags::IN)];
    let timeout = Timespec {
        tv_sec: 0,
        tv_nsec: 200_000_000,
    };
    matches!(poll(&mut fds, Some(&timeout)), Ok(n) if n > 0)
}

impl GreRedirector {
    /// Creates the TUNs and the socket inside the namespace and starts the
    /// two threads. The TUNs exist (up, without addresses) when this
    /// returns: the test adds its routes after.
    pub fn start(cfg: RedirectorConfig) -> io::Result<GreRedirector> {
        let (redirect, ret, socket) = crate::netns::in_netns(&cfg.netns, {
            let cfg = cfg.clone();
            move || {
                let redirect = gre_io::open_plain_tun(&cfg.redirect_tun)?;
                let ret = gre_io::open_plain_tun(&cfg.return_tun)?;
                let socket = gre_io::raw_gre_socket(cfg.router)?;
                Ok((redirect, ret, socket))
            }
        })?;
        let socket = Arc::new(socket);
        let counters = Arc::new(RedirectorCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        {
            let (socket, counters, stop, cfg) =
                (socket.clone(), counters.clone(), stop.clone(), cfg.clone());
            threads.push(std::thread::spawn(move || {
                redirect_loop(redirect, &socket, &counters, &stop, &cfg)
            }));
        }
        {
            let (counters, stop, cfg) = (counters.clone(), stop.clone(), cfg.clone());
            threads.push(std::thread::spawn(move || {
                return_loop(&socket, ret, &counters, &stop, &cfg)
            }));
        }
        Ok(GreRedirector {
            counters,
            stop,
            threads,
        })
    }

    pub fn redirected(&self) -> u64 {
        self.counters.redirected.load(Ordering::Relaxed)
    }

    pub fn returned(&self) -> u64 {
        self.counters.returned.load(Ordering::Relaxed)
    }
}

fn redirect_loop(
    mut tun: File,
    socket: &Socket,
    counters: &RedirectorCounters,
    stop: &AtomicBool,
    cfg: &RedirectorConfig,
) {
    let mut buf = vec![0u8; 65_536];
    let to = SockAddr::from(SocketAddrV4::new(cfg.edge, 0));
    while !stop.load(Ordering::Relaxed) {
        if !readable(&tun) {
            continue;
        }
        let n = match tun.read(&mut buf) {
            Ok(n) => n,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let Ok((inner, s)) = gre::inner_ipv4(&buf[..n]) else {
            continue;
        };
        // The hash bucket from the destination address, as the standard
        // web-cache service hashes (the value only has to be plausible).
        let bucket = s.dst.octets().iter().fold(0u8, |a, b| a ^ b);
        let rh = RedirectHeader {
            service_id: cfg.service_id,
            primary_bucket: bucket,
            ..Default::default()
        };
        if socket
            .send_to(&gre::encapsulate(Some(rh), inner), &to)
            .is_ok()
        {
            counters.redirected.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn return_loop(
    socket: &Socket,
    mut tun: File,
    counters: &RedirectorCounters,
    stop: &AtomicBool,
    cfg: &RedirectorConfig,
) {
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        // The socket has a read timeout (gre_io::raw_gre_socket).
        let n = match (&*socket).read(&mut buf) {
            Ok(n) => n,
            Err(_) => continue,
        };
        let accepted = gre::parse_outer(&buf[..n])
            .ok()
            .and_then(|(outer, payload)| {
                if outer.src != cfg.edge {
                    return None;
                }
                let d = gre::decapsulate(payload).ok()?;
                // A WCCP return carries the redirect header.
                d.redirect?;
                Some(d.inner.to_vec())
            });
        match accepted {
            Some(inner) => {
                if tun.write(&inner).is_ok() {
                    counters.returned.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Sends one GRE payload from `from` to `to` with a raw socket opened
/// inside `netns`: a host that is not the router injecting GRE.
pub fn send_gre_from(netns: &str, from: Ipv4Addr, to: Ipv4Addr, gre: Vec<u8>) -> io::Result<()> {
    crate::netns::in_netns(netns, move || {
        let s = gre_io::raw_gre_socket(from)?;
        s.send_to(&gre, &SockAddr::from(SocketAddrV4::new(to, 0)))?;
        Ok(())
    })
}
