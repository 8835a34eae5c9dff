//! The userspace GRE data path's decisions, sans-io: for each GRE packet
//! a raw socket received, deliver the inner packet (to the TUN interface),
//! return it to the router it came from (bypass list, overload), or drop
//! it (not from a router, malformed). Fed bytes and `now`; answers with a
//! [`Verdict`]. The adapter in [`crate::gre_io`] moves the bytes.
//!
//! Flows: a table keyed by the inner 5-tuple (TCP only: that is what WCCP
//! redirects for a web cache) remembers whether a flow was accepted or
//! returned, so every later packet of a returned flow goes back too and a
//! flow accepted before an overload keeps coming in. A new flow is a TCP
//! SYN without ACK. Entries expire after [`FLOW_IDLE`] without a packet,
//! or [`FLOW_CLOSING`] after the client's FIN or RST or while the client
//! has sent nothing but its SYN (a bare SYN must not hold a place under
//! the flow limit for two minutes); the table holds at
//! most [`FLOW_TABLE_SIZE`] entries (a new flow that finds it full is
//! returned as overload: the table is a resource like any other).
//!
//! A packet that is not the start of a flow and is not in the table (the
//! edge restarted, or an entry expired) is delivered: the edge's kernel
//! answers it, as it would without a flow table.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::gre::{self, Decapsulated, GreError, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

/// A flow with no packet for this long is forgotten.
pub const FLOW_IDLE: Duration = Duration::from_secs(120);
/// A flow is forgotten this long after the client's FIN or RST (late
/// ACKs and retransmissions still follow the flow's decision).
pub const FLOW_CLOSING: Duration = Duration::from_secs(10);
/// At most this many flows are tracked.
pub const FLOW_TABLE_SIZE: usize = 65_536;

/// An IPv4 prefix (`10.0.0.0/8`; a bare address is a /32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Prefix {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Ipv4Prefix {
    fn mask(self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len))
        }
    }

    pub fn contains(self, ip: Ipv4Addr) -> bool {
        (u32::from(ip) & self.mask()) == (u32::from(self.addr) & self.mask())
    }
}

impl FromStr for Ipv4Prefix {
    type Err = String;

    /// Refuses host bits set below the prefix length (`10.0.0.1/8`): an
    /// admin who wrote it probably meant something else.
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: Ipv4Addr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IPv4 prefix (like \"10.0.0.0/8\")"))?;
        let len = match l {
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= 32)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to 32"))?,
            None => 32,
        };
        let p = Ipv4Prefix { addr, len };
        if u32::from(addr) & !p.mask() != 0 {
            return Err(format!(
                "{s:?} has host bits set: did you mean {}/{len}?",
                Ipv4Addr::from(u32::from(addr) & p.mask())
            ));
        }
        Ok(p)
    }
}

impl std::fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// What the data path decides.
#[derive(Debug, Clone)]
pub struct DatapathConfig {
    /// GRE from any other source is dropped.
    pub routers: Vec<Ipv4Addr>,
    /// Destinations (origins) never served by the edge.
    pub bypass_destinations: Vec<Ipv4Prefix>,
    /// Clients (PCs) never served by the edge.
    pub bypass_clients: Vec<Ipv4Prefix>,
    /// New flows beyond this many accepted at once are returned.
    pub max_redirected_flows: Option<usize>,
    /// The services this edge joined: an inner packet must be one they
    /// redirect (protocol and port), else it is dropped. GRE is taken only
    /// from a router's address, but a PC on the router's segment can forge
    /// that address one way; this keeps what it could inject to what the
    /// router itself would send.
    pub services: Vec<RedirectedService>,
    /// The edge's own address: never an inner source or destination.
    pub local: Ipv4Addr,
}

/// What a joined service redirects (from its [`crate::ServiceInfo`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectedService {
    pub id: u8,
    /// A dynamic service (the redirect header's D bit), not the standard
    /// web-cache.
    pub dynamic: bool,
    /// IP protocol (6: TCP).
    pub protocol: u8,
    /// The ports it redirects; `None`: every port of the protocol.
    pub ports: Option<Vec<u16>>,
    /// The ports are source ports (else destination ports).
    pub source_ports: bool,
}

impl RedirectedService {
    pub fn of(service: &crate::ServiceInfo) -> Self {
        if service.kind == crate::ServiceType::Standard {
            // The standard web-cache: TCP to port 80.
            return RedirectedService {
                id: service.id,
                dynamic: false,
                protocol: 6,
                ports: Some(vec![80]),
                source_ports: false,
            };
        }
        let defined = service.flags & crate::FLAG_PORTS_DEFINED != 0;
        RedirectedService {
            id: service.id,
            dynamic: true,
            protocol: service.protocol,
            ports: defined.then(|| service.ports.iter().copied().filter(|p| *p != 0).collect()),
            source_ports: service.flags & crate::FLAG_PORTS_SOURCE != 0,
        }
    }

    fn redirects(&self, protocol: u8, src_port: Option<u16>, dst_port: Option<u16>) -> bool {
        if protocol != self.protocol {
            return false;
        }
        match &self.ports {
            None => true,
            Some(ports) => {
                let port = if self.source_ports {
                    src_port
                } else {
                    dst_port
                };
                port.is_some_and(|p| ports.contains(&p))
            }
        }
    }
}

/// An address no redirected packet has as source or destination: the
/// edge's own, loopback, multicast, broadcast, link-local, "this network".
fn unroutable(ip: Ipv4Addr, local: Ipv4Addr) -> bool {
    ip == local
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_link_local()
        || ip.octets()[0] == 0
}

/// Why a packet goes back to the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnReason {
    Bypass,
    Overload,
}

impl ReturnReason {
    pub fn name(self) -> &'static str {
        match self {
            ReturnReason::Bypass => "bypass",
            ReturnReason::Overload => "overload",
        }
    }
}

/// Why a packet is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    NotFromRouter,
    Malformed,
    /// An inner packet no joined service redirects, or with an address no
    /// redirected packet has (forged, or a router misconfigured).
    NotRedirectable,
    TunWrite,
    ReturnSend,
}

impl DropReason {
    pub fn name(self) -> &'static str {
        match self {
            DropReason::NotFromRouter => "not_from_router",
            DropReason::Malformed => "malformed",
            DropReason::NotRedirectable => "not_redirectable",
            DropReason::TunWrite => "tun_write",
            DropReason::ReturnSend => "return_send",
        }
    }
}

/// The decision for one received packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Write the inner packet to the TUN interface.
    Deliver(&'a [u8]),
    /// Send this GRE payload back to `router`.
    Return {
        router: Ipv4Addr,
        gre: Vec<u8>,
        reason: ReturnReason,
    },
    Drop(DropReason),
}

/// Packets and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
}

impl Traffic {
    fn add(&mut self, bytes: usize) {
        self.packets += 1;
        self.bytes += bytes as u64;
    }
}

/// The data path's counters since start (the `datapath` block of the
/// WCCP status).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DatapathCounters {
    /// Inner packets written to the TUN interface.
    pub delivered: Traffic,
    /// Inner packets sent back to their router, by reason.
    pub returned: BTreeMap<String, Traffic>,
    /// Packets dropped, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Packets that would have been returned but were delivered because
    /// the negotiated return method is not GRE, by reason.
    pub kept_no_gre_return: BTreeMap<String, u64>,
    /// Flows accepted and open (what `max_redirected_flows` limits).
    pub flows_accepted: u64,
    /// Flows being returned.
    pub flows_returned: u64,
    /// The last malformed packet's source and error.
    pub last_drop: Option<String>,
}

impl DatapathCounters {
    pub fn drop(&mut self, reason: DropReason) {
        *self.dropped.entry(reason.name().into()).or_default() += 1;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlowState {
    Accepted,
    Returned(ReturnReason),
}

#[derive(Debug, Clone, Copy)]
struct Flow {
    state: FlowState,
    last_seen: Instant,
    closing: bool,
    /// The client sent more than its SYN (an ACK): a connection, not a
    /// bare SYN that would hold a place under the flow limit for long.
    confirmed: bool,
}

impl Flow {
    fn expired(&self, now: Instant) -> bool {
        let idle = if self.closing || !self.confirmed {
            FLOW_CLOSING
        } else {
            FLOW_IDLE
        };
        now.saturating_duration_since(self.last_seen) >= idle
    }
}

/// The decision engine.
#[derive(Debug)]
pub struct Datapath {
    cfg: DatapathConfig,
    flows: HashMap<FlowKey, Flow>,
    /// Accepted flows not closing: what the limit counts.
    accepted_open: usize,
    /// Returned flows in the table (kept up to date, never counted by a
    /// scan: this runs per packet).
    returned_flows: usize,
    last_sweep: Option<Instant>,
    pub counters: DatapathCounters,
}

impl Datapath {
    pub fn new(cfg: DatapathConfig) -> Datapath {
        Datapath {
            cfg,
            flows: HashMap::new(),
            accepted_open: 0,
            returned_flows: 0,
            last_sweep: None,
            counters: DatapathCounters::default(),
        }
    }

    pub fn config(&self) -> &DatapathConfig {
        &self.cfg
    }

    /// Decides what to do with `packet`, a whole IPv4 datagram as a raw
    /// socket returns it. `gre_return(service)` says whether packets of
    /// that service may be returned (the negotiated return method is GRE);
    /// `None` is a packet without a redirect header.
    pub fn handle<'a>(
        &mut self,
        packet: &'a [u8],
        now: Instant,
        gre_return: impl Fn(Option<u8>) -> bool,
    ) -> Verdict<'a> {
        self.sweep(now);
        let (outer, payload) = match gre::parse_outer(packet) {
            Ok(x) => x,
            Err(e) => return self.malformed(None, e),
        };
        if !self.cfg.routers.contains(&outer.src) {
            self.counters.last_drop = Some(format!("{}: not a configured router", outer.src));
            self.counters.drop(DropReason::NotFromRouter);
            return Verdict::Drop(DropReason::NotFromRouter);
        }
        let d = match gre::decapsulate(payload) {
            Ok(d) => d,
            Err(e) => return self.malformed(Some(outer.src), e),
        };
        let s = d.summary;
        // The joined service this packet belongs to: the one the router
        // named (which must also redirect it), or for a packet without a
        // redirect header the first that redirects it.
        let service = self.cfg.services.iter().find(|sv| {
            d.redirect.is_none_or(|r| r.service_id == sv.id)
                && sv.redirects(s.protocol, s.src_port, s.dst_port)
        });
        // Only its id and kind are kept: no copy of its ports per packet.
        let Some((service_id, dynamic)) = service.map(|sv| (sv.id, sv.dynamic)) else {
            return self.not_redirectable(outer.src, &s);
        };
        if unroutable(s.src, self.cfg.local) || unroutable(s.dst, self.cfg.local) {
            return self.not_redirectable(outer.src, &s);
        }
        let may_return = gre_return(Some(service_id));
        // What a returned packet carries: the router's own header, or ours
        // for the service the packet belongs to.
        let header = d.redirect.unwrap_or(gre::RedirectHeader {
            dynamic,
            service_id,
            ..Default::default()
        });
        let key = match (s.protocol, s.src_port, s.dst_port) {
            (6, Some(src_port), Some(dst_port)) => Some(FlowKey {
                src: s.src,
                dst: s.dst,
                src_port,
                dst_port,
            }),
            _ => None,
        };
        let flags = s.tcp_flags.unwrap_or(0);
        let closes = flags & (TCP_FIN | TCP_RST) != 0;
        let new_flow = flags & TCP_SYN != 0 && flags & TCP_ACK == 0;

        // A flow already decided keeps its decision (a SYN retransmitted
        // included).
        if let Some(k) = key
            && let Some(f) = self.flows.get_mut(&k)
        {
            f.last_seen = now;
            if flags & TCP_ACK != 0 {
                f.confirmed = true;
            }
            if closes && !f.closing {
                f.closing = true;
                if f.state == FlowState::Accepted {
                    self.accepted_open = self.accepted_open.saturating_sub(1);
                }
            }
            let state = f.state;
            self.publish_flows();
            return match state {
                FlowState::Returned(reason) if may_return => {
                    self.give_back(outer.src, &d, header, reason)
                }
                FlowState::Returned(reason) => self.keep(&d, reason),
                FlowState::Accepted => self.deliver(&d),
            };
        }

        let bypass = self
            .cfg
            .bypass_destinations
            .iter()
            .any(|p| p.contains(s.dst))
            || self.cfg.bypass_clients.iter().any(|p| p.contains(s.src));
        let verdict_reason = if bypass {
            Some(ReturnReason::Bypass)
        } else if new_flow && key.is_some() {
            let over_limit = self
                .cfg
                .max_redirected_flows
                .is_some_and(|max| self.accepted_open >= max);
            let table_full = self.flows.len() >= FLOW_TABLE_SIZE;
            (over_limit || table_full).then_some(ReturnReason::Overload)
        } else {
            None
        };
        // Only the start of a flow is recorded: a stray mid-flow packet
        // must not create state.
        if let Some(k) = key
            && new_flow
            && self.flows.len() < FLOW_TABLE_SIZE
        {
            let state = match verdict_reason {
                Some(reason) if may_return => FlowState::Returned(reason),
                _ => FlowState::Accepted,
            };
            self.flows.insert(
                k,
                Flow {
                    state,
                    last_seen: now,
                    closing: closes,
                    confirmed: false,
                },
            );
            match state {
                FlowState::Accepted if !closes => self.accepted_open += 1,
                FlowState::Accepted => {}
                FlowState::Returned(_) => self.returned_flows += 1,
            }
            self.publish_flows();
        }
        match verdict_reason {
            Some(reason) if may_return => self.give_back(outer.src, &d, header, reason),
            Some(reason) => self.keep(&d, reason),
            None => self.deliver(&d),
        }
    }

    /// Counts a delivery that failed at the TUN: the verdict was
    /// `Deliver`, the write did not happen.
    pub fn delivery_failed(&mut self, len: usize) {
        self.counters.delivered.packets = self.counters.delivered.packets.saturating_sub(1);
        self.counters.delivered.bytes = self.counters.delivered.bytes.saturating_sub(len as u64);
        self.counters.drop(DropReason::TunWrite);
    }

    /// Counts a return that failed at the socket.
    pub fn return_failed(&mut self, reason: ReturnReason, inner_len: usize) {
        if let Some(t) = self.counters.returned.get_mut(reason.name()) {
            t.packets = t.packets.saturating_sub(1);
            t.bytes = t.bytes.saturating_sub(inner_len as u64);
        }
        self.counters.drop(DropReason::ReturnSend);
    }

    fn malformed<'a>(&mut self, from: Option<Ipv4Addr>, e: GreError) -> Verdict<'a> {
        self.counters.last_drop = Some(match from {
            Some(ip) => format!("{ip}: {e}"),
            None => e.to_string(),
        });
        self.counters.drop(DropReason::Malformed);
        Verdict::Drop(DropReason::Malformed)
    }

    fn deliver<'a>(&mut self, d: &Decapsulated<'a>) -> Verdict<'a> {
        self.counters.delivered.add(d.inner.len());
        Verdict::Deliver(d.inner)
    }

    fn keep<'a>(&mut self, d: &Decapsulated<'a>, reason: ReturnReason) -> Verdict<'a> {
        *self
            .counters
            .kept_no_gre_return
            .entry(reason.name().into())
            .or_default() += 1;
        self.deliver(d)
    }

    fn not_redirectable<'a>(&mut self, from: Ipv4Addr, s: &gre::InnerSummary) -> Verdict<'a> {
        self.counters.last_drop = Some(format!(
            "{from}: inner {} -> {} (protocol {}) is nothing a joined service redirects",
            s.src, s.dst, s.protocol
        ));
        self.counters.drop(DropReason::NotRedirectable);
        Verdict::Drop(DropReason::NotRedirectable)
    }

    fn give_back<'a>(
        &mut self,
        router: Ipv4Addr,
        d: &Decapsulated<'a>,
        rh: gre::RedirectHeader,
        reason: ReturnReason,
    ) -> Verdict<'a> {
        // The drafts: a returned packet is GRE-encapsulated with protocol
        // 0x883E and a redirect header, so the router knows it for a
        // return and does not redirect it again. We echo the header the
        // router sent (its service id and buckets); a packet that came
        // without one is returned as the service it belongs to.
        self.counters
            .returned
            .entry(reason.name().into())
            .or_default()
            .add(d.inner.len());
        Verdict::Return {
            router,
            gre: gre::encapsulate(Some(rh), d.inner),
            reason,
        }
    }

    fn publish_flows(&mut self) {
        self.counters.flows_accepted = self.accepted_open as u64;
        self.counters.flows_returned = self.returned_flows as u64;
        debug_assert_eq!(
            self.returned_flows,
            self.flows
                .values()
                .filter(|f| matches!(f.state, FlowState::Returned(_)))
                .count(),
            "the returned-flow count drifted from the table"
        );
    }

    /// Forgets expired flows, at most once a second, full table or not: a
    /// scan of 65,536 flows for every packet would let a SYN flood that
    /// fills the table cap the whole data path (new flows meanwhile are
    /// returned as overload, not recorded).
    fn sweep(&mut self, now: Instant) {
        let due = self
            .last_sweep
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
        if !due {
            return;
        }
        self.last_sweep = Some(now);
        let before = self.flows.len();
        let (mut freed, mut returned) = (0, 0);
        self.flows.retain(|_, f| {
            let keep = !f.expired(now);
            if !keep {
                match f.state {
                    FlowState::Accepted if !f.closing => freed += 1,
                    FlowState::Accepted => {}
                    FlowState::Returned(_) => returned += 1,
                }
            }
            keep
        });
        self.accepted_open = self.accepted_open.saturating_sub(freed);
        self.returned_flows = self.returned_flows.saturating_sub(returned);
        if self.flows.len() != before {
            self.publish_flows();
        }
    }

    /// How many flows are tracked.
    pub fn tracked_flows(&self) -> usize {
        self.flows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gre::{RedirectHeader, encapsulate};

    const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);

    fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], flags: u8) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&80u16.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        p
    }

    fn outer(from: Ipv4Addr, inner: &[u8]) -> Vec<u8> {
        let gre = encapsulate(
            Some(RedirectHeader {
                service_id: 0,
                primary_bucket: 9,
                ..Default::default()
            }),
            inner,
        );
        let total = (20 + gre.len()) as u16;
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 47, 0, 0];
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&from.octets());
        p.extend_from_slice(&[10, 2, 0, 2]);
        p.extend_from_slice(&gre);
        p
    }

    fn dp(max: Option<usize>) -> Datapath {
        Datapath::new(DatapathConfig {
            routers: vec![ROUTER],
            bypass_destinations: vec!["10.9.0.0/16".parse().unwrap()],
            bypass_clients: vec!["10.1.0.66".parse().unwrap()],
            max_redirected_flows: max,
            services: vec![RedirectedService::of(&crate::ServiceInfo::web_cache())],
            local: Ipv4Addr::new(10, 2, 0, 2),
        })
    }

    const CLIENT: [u8; 4] = [10, 1, 0, 2];
    const ORIGIN: [u8; 4] = [10, 3, 0, 2];

    #[test]
    fn prefixes() {
        let p: Ipv4Prefix = "10.9.0.0/16".parse().unwrap();
        assert!(p.contains(Ipv4Addr::new(10, 9, 200, 1)));
        assert!(!p.contains(Ipv4Addr::new(10, 10, 0, 1)));
        assert!(
            "0.0.0.0/0"
                .parse::<Ipv4Prefix>()
                .unwrap()
                .contains(Ipv4Addr::BROADCAST)
        );
        assert!("10.0.0.1/8".parse::<Ipv4Prefix>().is_err());
        assert!("10.0.0.0/33".parse::<Ipv4Prefix>().is_err());
        assert!("fe80::/10".parse::<Ipv4Prefix>().is_err());
        assert_eq!(
            "10.0.0.7".parse::<Ipv4Prefix>().unwrap().to_string(),
            "10.0.0.7/32"
        );
    }

    #[test]
    fn delivers_from_a_router_and_drops_from_anyone_else() {
        let mut d = dp(None);
        let now = Instant::now();
        let inner = tcp(CLIENT, 40000, ORIGIN, TCP_SYN);
        let pkt = outer(ROUTER, &inner);
        assert_eq!(d.handle(&pkt, now, |_| true), Verdict::Deliver(&inner[..]));
        let hostile = outer(Ipv4Addr::new(10, 1, 0, 2), &inner);
        assert_eq!(
            d.handle(&hostile, now, |_| true),
            Verdict::Drop(DropReason::NotFromRouter)
        );
        assert_eq!(
            d.handle(&pkt[..30], now, |_| true),
            Verdict::Drop(DropReason::Malformed)
        );
        assert_eq!(d.counters.delivered.packets, 1);
        assert_eq!(d.counters.dropped["not_from_router"], 1);
        assert_eq!(d.counters.dropped["malformed"], 1);
        assert_eq!(d.counters.flows_accepted, 1);
    }

    #[test]
    fn bypassed_destination_goes_back_to_its_router_with_the_redirect_header() {
        let mut d = dp(None);
        let now = Instant::now();
        let inner = tcp(CLIENT, 40000, [10, 9, 1, 1], TCP_SYN);
        let Verdict::Return {
            router,
            gre,
            reason,
        } = d.handle(&outer(ROUTER, &inner), now, |_| true)
        else {
            panic!("not returned")
        };
        assert_eq!((router, reason), (ROUTER, ReturnReason::Bypass));
        let back = gre::decapsulate(&gre).unwrap();
        assert_eq!(back.redirect.unwrap().primary_bucket, 9);
        assert_eq!(back.inner, &inner[..]);
        // The rest of the flow goes back too.
        let ack = tcp(CLIENT, 40000, [10, 9, 1, 1], TCP_ACK);
        assert!(matches!(
            d.handle(&outer(ROUTER, &ack), now, |_| true),
            Verdict::Return { .. }
        ));
        assert_eq!(d.counters.returned["bypass"].packets, 2);
        // A bypassed client.
        let from_bypassed = tcp([10, 1, 0, 66], 1, ORIGIN, TCP_SYN);
        assert!(matches!(
            d.handle(&outer(ROUTER, &from_bypassed), now, |_| true),
            Verdict::Return {
                reason: ReturnReason::Bypass,
                ..
            }
        ));
    }

    #[test]
    fn without_gre_return_a_bypass_is_served_and_counted() {
        let mut d = dp(None);
        let inner = tcp(CLIENT, 40000, [10, 9, 1, 1], TCP_SYN);
        assert_eq!(
            d.handle(&outer(ROUTER, &inner), Instant::now(), |_| false),
            Verdict::Deliver(&inner[..])
        );
        assert_eq!(d.counters.kept_no_gre_return["bypass"], 1);
    }

    #[test]
    fn overload_returns_new_flows_and_keeps_accepted_ones() {
        let mut d = dp(Some(1));
        let now = Instant::now();
        let first = tcp(CLIENT, 1000, ORIGIN, TCP_SYN);
        assert!(matches!(
            d.handle(&outer(ROUTER, &first), now, |_| true),
            Verdict::Deliver(_)
        ));
        let second = tcp(CLIENT, 1001, ORIGIN, TCP_SYN);
        assert!(matches!(
            d.handle(&outer(ROUTER, &second), now, |_| true),
            Verdict::Return {
                reason: ReturnReason::Overload,
                ..
            }
        ));
        // The accepted flow's data still comes in, the returned one's goes
        // back, even a retransmitted SYN.
        let data = tcp(CLIENT, 1000, ORIGIN, TCP_ACK);
        assert!(matches!(
            d.handle(&outer(ROUTER, &data), now, |_| true),
            Verdict::Deliver(_)
        ));
        assert!(matches!(
            d.handle(&outer(ROUTER, &second), now, |_| true),
            Verdict::Return { .. }
        ));
        assert_eq!(
            (d.counters.flows_accepted, d.counters.flows_returned),
            (1, 1)
        );
        // The first flow closes: a new one is accepted.
        let fin = tcp(CLIENT, 1000, ORIGIN, TCP_FIN | TCP_ACK);
        assert!(matches!(
            d.handle(&outer(ROUTER, &fin), now, |_| true),
            Verdict::Deliver(_)
        ));
        let third = tcp(CLIENT, 1002, ORIGIN, TCP_SYN);
        assert!(matches!(
            d.handle(&outer(ROUTER, &third), now, |_| true),
            Verdict::Deliver(_)
        ));
        // Flows expire.
        let later = now + FLOW_IDLE + Duration::from_secs(1);
        let fourth = tcp(CLIENT, 1003, ORIGIN, TCP_SYN);
        assert!(matches!(
            d.handle(&outer(ROUTER, &fourth), later, |_| true),
            Verdict::Deliver(_)
        ));
        assert_eq!(d.tracked_flows(), 1);
        assert_eq!(
            (d.counters.flows_accepted, d.counters.flows_returned),
            (1, 0)
        );
    }

    #[test]
    fn a_bare_syn_holds_its_place_only_briefly_a_connection_for_long() {
        let mut d = dp(Some(1));
        let now = Instant::now();
        // A SYN and nothing more (a flood's SYN, or a PC that gave up).
        let bare = tcp(CLIENT, 2000, ORIGIN, TCP_SYN);
        assert!(matches!(
            d.handle(&outer(ROUTER, &bare), now, |_| true),
            Verdict::Deliver(_)
        ));
        let soon = now + FLOW_CLOSING + Duration::from_secs(1);
        let next = tcp(CLIENT, 2001, ORIGIN, TCP_SYN);
        assert!(
            matches!(
                d.handle(&outer(ROUTER, &next), soon, |_| true),
                Verdict::Deliver(_)
            ),
            "a bare SYN still held the only place after {FLOW_CLOSING:?}"
        );
        // This one is a connection: its place holds well past that.
        let ack = tcp(CLIENT, 2001, ORIGIN, TCP_ACK);
        assert!(matches!(
            d.handle(&outer(ROUTER, &ack), soon, |_| true),
            Verdict::Deliver(_)
        ));
        let later = soon + Duration::from_secs(60);
        let third = tcp(CLIENT, 2002, ORIGIN, TCP_SYN);
        assert!(matches!(
            d.handle(&outer(ROUTER, &third), later, |_| true),
            Verdict::Return {
                reason: ReturnReason::Overload,
                ..
            }
        ));
    }

    #[test]
    fn only_what_a_joined_service_redirects_reaches_the_tun() {
        let mut d = dp(None);
        let now = Instant::now();
        let not_redirectable = |d: &mut Datapath, packet: Vec<u8>| {
            matches!(
                d.handle(&packet, now, |_| true),
                Verdict::Drop(DropReason::NotRedirectable)
            )
        };
        // Another port than the web-cache's 80 (here 22), or UDP.
        let mut ssh = tcp(CLIENT, 3000, ORIGIN, TCP_SYN);
        ssh[22..24].copy_from_slice(&22u16.to_be_bytes());
        assert!(not_redirectable(&mut d, outer(ROUTER, &ssh)));
        let mut udp = tcp(CLIENT, 3000, ORIGIN, 0);
        udp[9] = 17;
        assert!(not_redirectable(&mut d, outer(ROUTER, &udp)));
        // Addresses no redirected packet has: the edge itself, loopback,
        // multicast, broadcast, link-local, as destination or source.
        for dst in [
            [10, 2, 0, 2],
            [127, 0, 0, 1],
            [224, 0, 0, 1],
            [255, 255, 255, 255],
            [169, 254, 169, 254],
            [0, 0, 0, 0],
        ] {
            assert!(
                not_redirectable(&mut d, outer(ROUTER, &tcp(CLIENT, 3001, dst, TCP_SYN))),
                "{dst:?}"
            );
            assert!(
                not_redirectable(&mut d, outer(ROUTER, &tcp(dst, 3001, ORIGIN, TCP_SYN))),
                "{dst:?}"
            );
        }
        // A redirect header naming a service this edge did not join.
        let gre = encapsulate(
            Some(RedirectHeader {
                service_id: 90,
                ..Default::default()
            }),
            &tcp(CLIENT, 3002, ORIGIN, TCP_SYN),
        );
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 47, 0, 0];
        p[2..4].copy_from_slice(&((20 + gre.len()) as u16).to_be_bytes());
        p.extend_from_slice(&ROUTER.octets());
        p.extend_from_slice(&[10, 2, 0, 2]);
        p.extend_from_slice(&gre);
        assert!(not_redirectable(&mut d, p));
        assert_eq!(d.counters.dropped.get("not_redirectable"), Some(&15));
        assert_eq!(d.tracked_flows(), 0, "a dropped packet made state");
        // And the web-cache's own traffic still comes in.
        assert!(matches!(
            d.handle(
                &outer(ROUTER, &tcp(CLIENT, 3003, ORIGIN, TCP_SYN)),
                now,
                |_| true
            ),
            Verdict::Deliver(_)
        ));
    }

    #[test]
    fn a_packet_without_a_redirect_header_goes_back_as_the_service_it_belongs_to() {
        let web = crate::ServiceInfo::web_cache();
        let mut dynamic = crate::ServiceInfo::web_cache();
        dynamic.kind = crate::ServiceType::Dynamic;
        dynamic.id = 90;
        dynamic.protocol = 6;
        dynamic.flags = crate::FLAG_PORTS_DEFINED;
        dynamic.ports = [8080, 0, 0, 0, 0, 0, 0, 0];
        let mut d = Datapath::new(DatapathConfig {
            routers: vec![ROUTER],
            bypass_destinations: vec!["10.9.0.0/16".parse().unwrap()],
            bypass_clients: vec![],
            max_redirected_flows: None,
            services: vec![RedirectedService::of(&web), RedirectedService::of(&dynamic)],
            local: Ipv4Addr::new(10, 2, 0, 2),
        });
        let headerless = |inner: &[u8]| {
            let gre = encapsulate(None, inner);
            let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 47, 0, 0];
            p[2..4].copy_from_slice(&((20 + gre.len()) as u16).to_be_bytes());
            p.extend_from_slice(&ROUTER.octets());
            p.extend_from_slice(&[10, 2, 0, 2]);
            p.extend_from_slice(&gre);
            p
        };
        let mut to_8080 = tcp(CLIENT, 4000, [10, 9, 0, 1], TCP_SYN);
        to_8080[22..24].copy_from_slice(&8080u16.to_be_bytes());
        let asked = std::cell::Cell::new(None);
        let packet = headerless(&to_8080);
        let verdict = d.handle(&packet, Instant::now(), |id| {
            asked.set(id);
            true
        });
        assert_eq!(
            asked.get(),
            Some(90),
            "the return method asked for another service"
        );
        let Verdict::Return { gre, .. } = verdict else {
            panic!("not returned: {verdict:?}")
        };
        let back = gre::decapsulate(&gre).unwrap();
        let rh = back.redirect.expect("a return carries a redirect header");
        assert_eq!((rh.service_id, rh.dynamic), (90, true));
        // Port 80: the standard web-cache's, not dynamic.
        let to_80 = tcp(CLIENT, 4001, [10, 9, 0, 1], TCP_SYN);
        let Verdict::Return { gre, .. } = d.handle(&headerless(&to_80), Instant::now(), |_| true)
        else {
            panic!("not returned")
        };
        let rh = gre::decapsulate(&gre).unwrap().redirect.unwrap();
        assert_eq!((rh.service_id, rh.dynamic), (0, false));
        // Neither service redirects port 8081.
        let mut to_8081 = tcp(CLIENT, 4002, [10, 9, 0, 1], TCP_SYN);
        to_8081[22..24].copy_from_slice(&8081u16.to_be_bytes());
        assert!(matches!(
            d.handle(&headerless(&to_8081), Instant::now(), |_| true),
            Verdict::Drop(DropReason::NotRedirectable)
        ));
    }

    #[test]
    fn a_stray_mid_flow_packet_is_delivered_without_state() {
        let mut d = dp(Some(0));
        let ack = tcp(CLIENT, 5, ORIGIN, TCP_ACK);
        assert!(matches!(
            d.handle(&outer(ROUTER, &ack), Instant::now(), |_| true),
            Verdict::Deliver(_)
        ));
        assert_eq!(d.tracked_flows(), 0);
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let mut d = dp(Some(1));
        let now = Instant::now();
        let good = outer(ROUTER, &tcp(CLIENT, 1, ORIGIN, TCP_SYN));
        for i in 0..good.len() {
            for v in [0u8, 0xFF, 0x40, 0x0F] {
                let mut b = good.clone();
                b[i] = v;
                let _ = d.handle(&b, now, |_| true);
                let _ = d.handle(&b[..i], now, |_| true);
            }
        }
    }
}
