//! A WCCPv2 router simulator: the router side of one service group, from
//! the drafts, for tests. [`RouterCore`] is sans-io (drive it with injected
//! time); [`SimRouter`] runs it on a real UDP socket.
//!
//! What it does, as a router would: answers each valid HERE_I_AM with an
//! I_SEE_YOU (its identity and receive id, its view of the group, its
//! capabilities); admits a cache only if their capabilities intersect;
//! drops a cache not heard from in 2.5 x interval, or at once on its
//! shutdown command; accepts REDIRECT_ASSIGN only from the designated
//! (lowest-address) cache of its view, naming only caches in its view; and
//! reports where each bucket or mask value would be redirected. It refuses
//! every datagram the codec refuses (wrong password, malformed) and counts
//! it.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outpost_wccp::*;
use tokio::net::UdpSocket;

#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// The router's identity (its address in the caches' views).
    pub ip: Ipv4Addr,
    pub service: ServiceInfo,
    pub password: Option<Password>,
    /// Supported methods (bits), or `None` to send no Capabilities
    /// component (an old router: GRE, hash, GRE return only).
    pub capabilities: Option<(u32, u32, u32)>,
    pub interval: Duration,
}

impl RouterConfig {
    pub fn new(ip: Ipv4Addr) -> Self {
        RouterConfig {
            ip,
            service: ServiceInfo::web_cache(),
            password: None,
            capabilities: Some((
                METHOD_GRE | METHOD_L2,
                ASSIGN_HASH | ASSIGN_MASK,
                METHOD_GRE | METHOD_L2,
            )),
            interval: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
struct Cache {
    identity: WebCacheIdentity,
    last_heard: Instant,
}

#[derive(Debug, Clone, Default)]
pub struct RouterCounters {
    pub here_i_am: u64,
    pub i_see_you: u64,
    pub assignments_accepted: u64,
    pub assignments_refused: u64,
    pub capability_mismatch: u64,
    pub shutdowns: u64,
    pub refused_datagrams: u64,
}

#[derive(Debug, Clone)]
enum Held {
    Hash(HashAssignment),
    Mask(Vec<MaskValueSet>),
}

pub struct RouterCore {
    pub cfg: RouterConfig,
    receive_id: u32,
    member_change: u32,
    caches: BTreeMap<Ipv4Addr, Cache>,
    key: AssignmentKey,
    held: Option<Held>,
    pub counters: RouterCounters,
}

impl RouterCore {
    pub fn new(cfg: RouterConfig) -> Self {
        RouterCore {
            cfg,
            receive_id: 0,
            member_change: 0,
            caches: BTreeMap::new(),
            key: AssignmentKey {
                ip: Ipv4Addr::UNSPECIFIED,
                change: 0,
            },
            held: None,
            counters: RouterCounters::default(),
        }
    }

    fn timeout(&self) -> Duration {
        self.cfg.interval * 5 / 2
    }

    fn compatible(&self, caps: Option<&Capabilities>) -> bool {
        let (fwd, asg, ret) =
            self.cfg
                .capabilities
                .unwrap_or((METHOD_GRE, ASSIGN_HASH, METHOD_GRE));
        let Some(c) = caps else {
            return fwd & METHOD_GRE != 0 && asg & ASSIGN_HASH != 0 && ret & METHOD_GRE != 0;
        };
        c.get(CAP_FORWARDING).unwrap_or(METHOD_GRE) & fwd != 0
            && c.get(CAP_ASSIGNMENT).unwrap_or(ASSIGN_HASH) & asg != 0
            && c.get(CAP_RETURN).unwrap_or(METHOD_GRE) & ret != 0
    }

    /// Handles one message from `from`; returns the replies.
    pub fn handle(
        &mut self,
        from: Ipv4Addr,
        msg: &Message,
        now: Instant,
    ) -> Vec<(Ipv4Addr, Message)> {
        if !msg.service.same_group(&self.cfg.service) {
            return Vec::new();
        }
        match msg.kind {
            MessageType::HereIAm => {
                let Some(id) = &msg.wc_identity else {
                    return Vec::new();
                };
                // A cache speaks for itself only.
                if id.ip != from {
                    return Vec::new();
                }
                self.counters.here_i_am += 1;
                if msg
                    .command
                    .as_ref()
                    .is_some_and(|c| c.has(COMMAND_SHUTDOWN))
                {
                    self.counters.shutdowns += 1;
                    if self.caches.remove(&from).is_some() {
                        self.member_change += 1;
                    }
                    return Vec::new();
                }
                if !self.compatible(msg.capabilities.as_ref()) {
                    self.counters.capability_mismatch += 1;
                    return Vec::new();
                }
                let new = !self.caches.contains_key(&from);
                self.caches.insert(
                    from,
                    Cache {
                        identity: id.clone(),
                        last_heard: now,
                    },
                );
                if new {
                    self.member_change += 1;
                }
                vec![(from, self.i_see_you(from))]
            }
            MessageType::RedirectAssign => {
                let designated = self.caches.keys().next().copied();
                let (key, held) = match (&msg.assignment, &msg.alt_assignment) {
                    (Some(a), _) => (a.key, Held::Hash(a.hash.clone())),
                    (None, Some(alt)) => (
                        alt.key,
                        match &alt.body {
                            AltAssignmentBody::Hash(h) => Held::Hash(h.clone()),
                            AltAssignmentBody::Mask(s) => Held::Mask(s.clone()),
                        },
                    ),
                    _ => return Vec::new(),
                };
                let named: Vec<Ipv4Addr> = match &held {
                    Held::Hash(h) => h.caches.clone(),
                    Held::Mask(s) => s
                        .iter()
                        .flat_map(|s| s.values.iter().map(|v| v.cache))
                        .collect(),
                };
                if designated != Some(from)
                    || key.ip != from
                    || named.iter().any(|c| !self.caches.contains_key(c))
                {
                    self.counters.assignments_refused += 1;
                    return Vec::new();
                }
                self.counters.assignments_accepted += 1;
                self.key = key;
                self.held = Some(held);
                Vec::new()
            }
            MessageType::ISeeYou | MessageType::RemovalQuery => Vec::new(),
        }
    }

    /// Expires silent caches.
    pub fn poll(&mut self, now: Instant) {
        let timeout = self.timeout();
        let before = self.caches.len();
        self.caches
            .retain(|_, c| now.saturating_duration_since(c.last_heard) < timeout);
        if self.caches.len() != before {
            self.member_change += 1;
        }
    }

    fn i_see_you(&mut self, to: Ipv4Addr) -> Message {
        self.receive_id = self.receive_id.wrapping_add(1);
        self.counters.i_see_you += 1;
        let owners = self.bucket_owners();
        let mask = self.mask_sets();
        let caches: Vec<WebCacheIdentity> = self
            .caches
            .values()
            .map(|c| {
                let mut id = c.identity.clone();
                match &mask {
                    Some(sets) => {
                        id.data = CacheAssignmentData::Mask {
                            sets: sets
                                .iter()
                                .map(|s| MaskValueSet {
                                    mask: s.mask,
                                    values: s
                                        .values
                                        .iter()
                                        .filter(|v| v.cache == id.ip)
                                        .copied()
                                        .collect(),
                                })
                                .collect(),
                        }
                    }
                    None => {
                        let mut block = [0u8; 32];
                        for (b, o) in owners.iter().enumerate() {
                            if *o == Some(id.ip) {
                                set_bucket_bit(&mut block, b as u8);
                            }
                        }
                        id.data = CacheAssignmentData::Hash { buckets: block };
                    }
                }
                id
            })
            .collect();
        let mut m = Message::new(MessageType::ISeeYou, self.cfg.service.clone());
        m.router_identity = Some(RouterIdentityInfo {
            router: RouterId {
                ip: self.cfg.ip,
                receive_id: self.receive_id,
            },
            sent_to: to,
            received_from: self.caches.keys().copied().collect(),
        });
        m.router_view = Some(RouterViewInfo {
            member_change: self.member_change,
            key: self.key,
            routers: vec![self.cfg.ip],
            caches,
        });
        m.capabilities = self.cfg.capabilities.map(|(f, a, r)| Capabilities {
            elements: vec![
                Capability {
                    kind: CAP_FORWARDING,
                    value: f,
                },
                Capability {
                    kind: CAP_ASSIGNMENT,
                    value: a,
                },
                Capability {
                    kind: CAP_RETURN,
                    value: r,
                },
            ],
        });
        m.assignment_map = mask;
        m
    }

    /// The caches in the router's view, lowest first.
    pub fn view(&self) -> Vec<Ipv4Addr> {
        self.caches.keys().copied().collect()
    }

    /// Where each of the 256 buckets is redirected now (`None`: not
    /// redirected, because unassigned or its cache left the view).
    pub fn bucket_owners(&self) -> Vec<Option<Ipv4Addr>> {
        match &self.held {
            Some(Held::Hash(h)) => (0..=255u8)
                .map(|b| h.owner(b).filter(|ip| self.caches.contains_key(ip)))
                .collect(),
            _ => vec![None; 256],
        }
    }

    /// The mask assignment in force, with departed caches' values removed.
    pub fn mask_sets(&self) -> Option<Vec<MaskValueSet>> {
        match &self.held {
            Some(Held::Mask(sets)) => Some(
                sets.iter()
                    .map(|s| MaskValueSet {
                        mask: s.mask,
                        values: s
                            .values
                            .iter()
                            .filter(|v| self.caches.contains_key(&v.cache))
                            .copied()
                            .collect(),
                    })
                    .collect(),
            ),
            _ => None,
        }
    }

    /// Buckets per cache, from [`bucket_owners`](Self::bucket_owners).
    pub fn bucket_counts(&self) -> BTreeMap<Ipv4Addr, usize> {
        let mut m = BTreeMap::new();
        for ip in self.bucket_owners().into_iter().flatten() {
            *m.entry(ip).or_insert(0) += 1;
        }
        m
    }

    pub fn assignment_key(&self) -> AssignmentKey {
        self.key
    }
}

/// [`RouterCore`] on a UDP socket. Replies go to the socket address the
/// HERE_I_AM came from, so several caches can share one host in tests.
pub struct SimRouter {
    pub addr: SocketAddr,
    pub core: Arc<Mutex<RouterCore>>,
    task: tokio::task::JoinHandle<()>,
}

impl SimRouter {
    /// Binds `bind` (a loopback address with port 0 in tests) and runs.
    pub async fn start(cfg: RouterConfig, bind: SocketAddr) -> std::io::Result<SimRouter> {
        let socket = UdpSocket::bind(bind).await?;
        let addr = socket.local_addr()?;
        let core = Arc::new(Mutex::new(RouterCore::new(cfg)));
        let task = tokio::spawn(run(socket, core.clone()));
        Ok(SimRouter { addr, core, task })
    }

    /// Runs on a socket bound elsewhere, e.g. inside a network namespace
    /// ([`crate::netns::in_netns`]): the router's WCCP address is then the
    /// one its GRE packets come from, as on a real router.
    pub fn start_on(cfg: RouterConfig, socket: std::net::UdpSocket) -> std::io::Result<SimRouter> {
        socket.set_nonblocking(true)?;
        let socket = UdpSocket::from_std(socket)?;
        let addr = socket.local_addr()?;
        let core = Arc::new(Mutex::new(RouterCore::new(cfg)));
        let task = tokio::spawn(run(socket, core.clone()));
        Ok(SimRouter { addr, core, task })
    }

    pub fn with<T>(&self, f: impl FnOnce(&RouterCore) -> T) -> T {
        f(&self.core.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for SimRouter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(socket: UdpSocket, core: Arc<Mutex<RouterCore>>) {
    let (password, interval) = {
        let c = core.lock().unwrap_or_else(|e| e.into_inner());
        (c.cfg.password.clone(), c.cfg.interval)
    };
    let mut tick = tokio::time::interval(interval / 4);
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let std::net::IpAddr::V4(ip) = from.ip() else { continue };
                let replies = {
                    let mut c = core.lock().unwrap_or_else(|e| e.into_inner());
                    match decode(&buf[..n], password.as_ref()) {
                        Ok(msg) => c.handle(ip, &msg, Instant::now()),
                        Err(_) => {
                            c.counters.refused_datagrams += 1;
                            Vec::new()
                        }
                    }
                };
                for (_, m) in replies {
                    let _ = socket.send_to(&encode(&m, password.as_ref()), from).await;
                }
            }
            _ = tick.tick() => {
                core.lock().unwrap_or_else(|e| e.into_inner()).poll(Instant::now());
            }
        }
    }
}
