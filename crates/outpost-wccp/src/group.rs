//! One service group, the cache's side, sans-io.
//!
//! Fed what routers send and `now`; answers with messages to send. The
//! adapter calls [`ServiceGroup::poll`] at [`ServiceGroup::next_deadline`].
//!
//! The protocol as the drafts give it, and as this machine does it:
//! - HERE_I_AM to every configured router every `interval` (10 s), and at
//!   once whenever an I_SEE_YOU changes our view: that is the rapid first
//!   exchange (the router's first I_SEE_YOU gives its receive id, which our
//!   next HERE_I_AM must echo before the router counts us usable).
//! - A router not heard from in 2.5 x interval leaves our view.
//! - The usable caches are those every live router lists; the designated
//!   web-cache is the lowest address among them. When that is us, we wait
//!   1.5 x interval after a cache joined the usable set (so that every
//!   router has seen it), then send REDIRECT_ASSIGN to each router, and
//!   again every interval while designated. A cache leaving is reassigned
//!   at once: routers drop a silent cache after 2.5 x interval and we hear
//!   of it at our next exchange; while the group has other caches we
//!   exchange every interval / 4, so its buckets move within 2.75 x
//!   interval (27.5 s) of its death (see `here_i_am_period`). Every
//!   recomputation moves as few buckets as the new quotas allow.
//! - Capabilities: until every router has answered we offer all methods we
//!   allow; then we choose, across all live routers, the first method
//!   (GRE before L2; hash before mask) that all support, and advertise only
//!   that. A router that sends no capabilities supports GRE, hash and GRE
//!   return (the draft's defaults). No common method: no assignment is
//!   sent, and the status says which capability failed.
//! - Graceful stop: a last HERE_I_AM carrying the shutdown command, so the
//!   routers drop us at once instead of after 2.5 x interval.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::assign::{self, Member};
use crate::component::*;
use crate::message::{Message, MessageType};

mod status;
pub use status::{GroupStatus, RouterStatus};

/// A forwarding or return method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Gre,
    L2,
}

/// An assignment method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssignMethod {
    Hash,
    Mask,
}

/// What both sides agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Negotiated {
    pub forwarding: Method,
    #[serde(rename = "return")]
    pub return_method: Method,
    pub assignment: AssignMethod,
}

#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub service: ServiceInfo,
    /// Our address as the routers see it (the identity we announce).
    pub cache_ip: Ipv4Addr,
    pub routers: Vec<Ipv4Addr>,
    pub weight: u16,
    /// Allowed method bits: [`METHOD_GRE`] | [`METHOD_L2`].
    pub forwarding: u32,
    pub return_method: u32,
    /// Allowed assignment bits: [`ASSIGN_HASH`] | [`ASSIGN_MASK`].
    pub assignment: u32,
    pub mask: MaskElement,
    /// HERE_I_AM_T; 10 s unless the routers run WCCP fast timers.
    pub interval: Duration,
}

impl GroupConfig {
    /// The standard web-cache service with the drafts' defaults.
    pub fn web_cache(cache_ip: Ipv4Addr, routers: Vec<Ipv4Addr>) -> Self {
        GroupConfig {
            service: ServiceInfo::web_cache(),
            cache_ip,
            routers,
            weight: 0,
            forwarding: METHOD_GRE | METHOD_L2,
            return_method: METHOD_GRE | METHOD_L2,
            assignment: ASSIGN_HASH | ASSIGN_MASK,
            mask: MaskElement {
                src_ip: assign::DEFAULT_SOURCE_MASK,
                dst_ip: 0,
                src_port: 0,
                dst_port: 0,
            },
            interval: Duration::from_secs(10),
        }
    }
}

/// A message the adapter should send to a router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub to: Ipv4Addr,
    pub message: Message,
}

#[derive(Debug, Clone)]
struct RouterState {
    addr: Ipv4Addr,
    id: Option<RouterId>,
    last_heard: Option<Instant>,
    member_change: u32,
    caches: Vec<WebCacheIdentity>,
    key: Option<AssignmentKey>,
    capabilities: Option<Capabilities>,
    assignment_map: Option<Vec<MaskValueSet>>,
}

#[derive(Debug, Clone)]
enum Assignment {
    Hash(HashAssignment),
    Mask(Vec<MaskValueSet>),
}

pub struct ServiceGroup {
    cfg: GroupConfig,
    routers: Vec<RouterState>,
    change: u32,
    view: (BTreeSet<Ipv4Addr>, BTreeSet<Ipv4Addr>),
    usable: Vec<Member>,
    usable_since: Instant,
    assignment: Option<Assignment>,
    assignment_change: u32,
    next_here_i_am: Instant,
    /// When the designated cache next re-sends the assignment unasked.
    next_refresh: Instant,
    next_assign: Option<Instant>,
    negotiated: Result<Option<Negotiated>, String>,
    stopped: bool,
}

impl ServiceGroup {
    pub fn new(cfg: GroupConfig, now: Instant) -> Self {
        let routers = cfg
            .routers
            .iter()
            .map(|&addr| RouterState {
                addr,
                id: None,
                last_heard: None,
                member_change: 0,
                caches: Vec::new(),
                key: None,
                capabilities: None,
                assignment_map: None,
            })
            .collect();
        ServiceGroup {
            cfg,
            routers,
            change: 1,
            view: (BTreeSet::new(), BTreeSet::new()),
            usable: Vec::new(),
            usable_since: now,
            assignment: None,
            assignment_change: 0,
            next_here_i_am: now,
            next_refresh: now,
            next_assign: None,
            negotiated: Ok(None),
            stopped: false,
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.cfg
    }

    fn timeout(&self) -> Duration {
        self.cfg.interval * 5 / 2
    }

    fn live(&self, r: &RouterState, now: Instant) -> bool {
        r.last_heard
            .is_some_and(|t| now.saturating_duration_since(t) < self.timeout())
    }

    /// Handles one message from `from` (the datagram's source address).
    pub fn handle(&mut self, from: Ipv4Addr, msg: &Message, now: Instant) -> Vec<Outgoing> {
        if self.stopped || !msg.service.same_group(&self.cfg.service) {
            return Vec::new();
        }
        let Some(idx) = self.routers.iter().position(|r| r.addr == from) else {
            // Only configured routers may steer this group: a PC on the LAN
            // can send UDP to port 2048 too.
            return Vec::new();
        };
        match msg.kind {
            MessageType::ISeeYou => {
                let (Some(identity), Some(view)) = (&msg.router_identity, &msg.router_view) else {
                    return Vec::new();
                };
                if identity.sent_to != self.cfg.cache_ip
                    && identity.sent_to != Ipv4Addr::UNSPECIFIED
                {
                    return Vec::new();
                }
                let r = &mut self.routers[idx];
                r.id = Some(identity.router);
                r.last_heard = Some(now);
                r.member_change = view.member_change;
                r.caches = view.caches.clone();
                r.key = Some(view.key);
                r.capabilities = msg.capabilities.clone();
                r.assignment_map = msg.assignment_map.clone();
                let changed = self.refresh(now);
                if changed {
                    self.here_i_am_all(now)
                } else {
                    Vec::new()
                }
            }
            MessageType::RemovalQuery => match &msg.query {
                Some(q) if q.target == self.cfg.cache_ip => vec![Outgoing {
                    to: from,
                    message: self.here_i_am(false),
                }],
                _ => Vec::new(),
            },
            MessageType::HereIAm | MessageType::RedirectAssign => Vec::new(),
        }
    }

    /// Recomputes view, usable set, negotiation; true when our view changed.
    fn refresh(&mut self, now: Instant) -> bool {
        let live: Vec<&RouterState> = self.routers.iter().filter(|r| self.live(r, now)).collect();
        let routers: BTreeSet<Ipv4Addr> = live.iter().map(|r| r.addr).collect();
        let mut caches: BTreeSet<Ipv4Addr> = live
            .iter()
            .flat_map(|r| r.caches.iter().map(|c| c.ip))
            .collect();
        caches.insert(self.cfg.cache_ip);
        let changed = (&routers, &caches) != (&self.view.0, &self.view.1);
        if changed {
            self.view = (routers, caches);
            self.change = self.change.wrapping_add(1);
        }

        let mut usable: Vec<Member> = Vec::new();
        if let Some(first) = live.first() {
            for c in &first.caches {
                if live.iter().all(|r| r.caches.iter().any(|x| x.ip == c.ip)) {
                    usable.push(Member {
                        ip: c.ip,
                        weight: c.weight,
                    });
                }
            }
        }
        usable.sort_by_key(|m| m.ip);
        if usable != self.usable {
            // The wait lets every router see a newcomer before it is given
            // buckets; a departure needs no such wait, and every second
            // spent waiting is a second its buckets go unserved by a cache.
            let only_leaves = usable.iter().all(|m| self.usable.contains(m));
            let wait = if only_leaves {
                Duration::ZERO
            } else {
                self.cfg.interval * 3 / 2
            };
            self.usable = usable;
            self.usable_since = now;
            self.next_assign = Some(now + wait);
        }
        self.negotiated = self.negotiate(&live);
        changed
    }

    fn negotiate(&self, live: &[&RouterState]) -> Result<Option<Negotiated>, String> {
        if live.is_empty() {
            return Ok(None);
        }
        let mut fwd = self.cfg.forwarding;
        let mut ret = self.cfg.return_method;
        let mut asg = self.cfg.assignment;
        for r in live {
            let caps = r.capabilities.clone().unwrap_or_default();
            fwd &= caps.get(CAP_FORWARDING).unwrap_or(METHOD_GRE);
            ret &= caps.get(CAP_RETURN).unwrap_or(METHOD_GRE);
            asg &= caps.get(CAP_ASSIGNMENT).unwrap_or(ASSIGN_HASH);
        }
        let pick = |bits: u32, what: &str| -> Result<Method, String> {
            if bits & METHOD_GRE != 0 {
                Ok(Method::Gre)
            } else if bits & METHOD_L2 != 0 {
                Ok(Method::L2)
            } else {
                Err(format!("no {what} method both sides support"))
            }
        };
        let forwarding = pick(fwd, "forwarding")?;
        let return_method = pick(ret, "return")?;
        let assignment = if asg & ASSIGN_HASH != 0 {
            AssignMethod::Hash
        } else if asg & ASSIGN_MASK != 0 {
            AssignMethod::Mask
        } else {
            return Err("no assignment method both sides support".into());
        };
        Ok(Some(Negotiated {
            forwarding,
            return_method,
            assignment,
        }))
    }

    /// How often HERE_I_AM goes out: every interval alone, and a quarter
    /// of it while the group has other usable caches. A router drops a
    /// silent cache 2.5 intervals after its last HERE_I_AM, and a cache
    /// learns of that only from the I_SEE_YOU that answers its own next
    /// HERE_I_AM: at the drafts' pace the survivors take the dead cache's
    /// buckets 2.5 to 3.5 intervals (25-35 s) after its death, at this one
    /// within 2.75 (27.5 s). The drafts set how often a cache must send,
    /// not a limit; the extra messages are a few hundred bytes a second.
    fn here_i_am_period(&self) -> Duration {
        if self.usable.len() > 1 {
            self.cfg.interval / 4
        } else {
            self.cfg.interval
        }
    }

    fn designated_cache(&self) -> Option<Ipv4Addr> {
        self.usable.first().map(|m| m.ip)
    }

    fn capabilities(&self) -> Capabilities {
        let (fwd, asg, ret) = match &self.negotiated {
            Ok(Some(n)) => (
                method_bit(n.forwarding),
                match n.assignment {
                    AssignMethod::Hash => ASSIGN_HASH,
                    AssignMethod::Mask => ASSIGN_MASK,
                },
                method_bit(n.return_method),
            ),
            _ => (
                self.cfg.forwarding,
                self.cfg.assignment,
                self.cfg.return_method,
            ),
        };
        let mut elements = vec![
            Capability {
                kind: CAP_FORWARDING,
                value: fwd,
            },
            Capability {
                kind: CAP_ASSIGNMENT,
                value: asg,
            },
            Capability {
                kind: CAP_RETURN,
                value: ret,
            },
        ];
        if self.cfg.interval != Duration::from_secs(10) {
            let ms = u32::try_from(self.cfg.interval.as_millis()).unwrap_or(u32::MAX) & 0xffff;
            elements.push(Capability {
                kind: CAP_TRANSMIT_T,
                value: ms,
            });
        }
        Capabilities { elements }
    }

    /// Our identity element: what we hold under the assignment in force.
    fn identity(&self) -> WebCacheIdentity {
        let mut id = WebCacheIdentity::new(self.cfg.cache_ip, self.cfg.weight);
        let mask_mode =
            matches!(&self.negotiated, Ok(Some(n)) if n.assignment == AssignMethod::Mask);
        if mask_mode {
            id.data = CacheAssignmentData::Mask {
                sets: self.held_mask_sets(),
            };
        } else {
            let mut block = [0u8; 32];
            for b in 0..=255u8 {
                if self.owner_of_bucket(b) == Some(self.cfg.cache_ip) {
                    set_bucket_bit(&mut block, b);
                }
            }
            id.data = CacheAssignmentData::Hash { buckets: block };
        }
        id
    }

    fn owner_of_bucket(&self, b: u8) -> Option<Ipv4Addr> {
        if let Some(Assignment::Hash(h)) = &self.assignment {
            return h.owner(b);
        }
        // Not designated: the routers' views say what we were given.
        self.routers
            .iter()
            .flat_map(|r| r.caches.iter())
            .find(|c| c.holds_bucket(b))
            .map(|c| c.ip)
    }

    fn held_mask_sets(&self) -> Vec<MaskValueSet> {
        let sets: Option<&Vec<MaskValueSet>> = match &self.assignment {
            Some(Assignment::Mask(s)) => Some(s),
            _ => self.routers.iter().find_map(|r| r.assignment_map.as_ref()),
        };
        sets.map(|sets| {
            sets.iter()
                .map(|s| MaskValueSet {
                    mask: s.mask,
                    values: s
                        .values
                        .iter()
                        .filter(|v| v.cache == self.cfg.cache_ip)
                        .copied()
                        .collect(),
                })
                .collect()
        })
        .unwrap_or_default()
    }

    fn here_i_am(&self, shutdown: bool) -> Message {
        let mut m = Message::new(MessageType::HereIAm, self.cfg.service.clone());
        m.wc_identity = Some(self.identity());
        m.wc_view = Some(WebCacheViewInfo {
            change: self.change,
            routers: self.routers.iter().filter_map(|r| r.id).collect(),
            caches: self.view.1.iter().copied().collect(),
        });
        m.capabilities = Some(self.capabilities());
        if shutdown {
            m.command = Some(CommandExtension::shutdown(self.cfg.cache_ip));
        }
        m
    }

    fn here_i_am_all(&self, _now: Instant) -> Vec<Outgoing> {
        (0..self.routers.len())
            .map(|i| Outgoing {
                to: self.routers[i].addr,
                message: self.here_i_am(false),
            })
            .collect()
    }

    fn redirect_assign(&mut self, now: Instant) -> Vec<Outgoing> {
        let Ok(Some(negotiated)) = self.negotiated else {
            return Vec::new();
        };
        let live: Vec<RouterState> = self
            .routers
            .iter()
            .filter(|r| self.live(r, now) && r.id.is_some())
            .cloned()
            .collect();
        let routers: Vec<RouterAssignment> = live
            .iter()
            .filter_map(|r| {
                r.id.map(|id| RouterAssignment {
                    router: id,
                    change: r.member_change,
                })
            })
            .collect();
        let next = match (negotiated.assignment, &self.assignment) {
            (AssignMethod::Hash, prev) => {
                let prev = match prev {
                    Some(Assignment::Hash(h)) => Some(h),
                    _ => None,
                };
                Assignment::Hash(assign::hash_assignment(&self.usable, prev))
            }
            (AssignMethod::Mask, prev) => {
                let prev = match prev {
                    Some(Assignment::Mask(s)) => Some(s.as_slice()),
                    _ => None,
                };
                Assignment::Mask(assign::mask_assignment(self.cfg.mask, &self.usable, prev))
            }
        };
        let same = match (&next, &self.assignment) {
            (Assignment::Hash(a), Some(Assignment::Hash(b))) => a == b,
            (Assignment::Mask(a), Some(Assignment::Mask(b))) => a == b,
            _ => false,
        };
        if !same {
            self.assignment_change = self.assignment_change.wrapping_add(1);
        }
        self.assignment = Some(next.clone());
        let key = AssignmentKey {
            ip: self.cfg.cache_ip,
            change: self.assignment_change,
        };
        let mut m = Message::new(MessageType::RedirectAssign, self.cfg.service.clone());
        match next {
            Assignment::Hash(hash) => {
                m.assignment = Some(AssignmentInfo { key, routers, hash });
            }
            Assignment::Mask(sets) => {
                m.alt_assignment = Some(AltAssignment {
                    key,
                    routers,
                    body: AltAssignmentBody::Mask(sets),
                });
            }
        }
        live.iter()
            .map(|r| Outgoing {
                to: r.addr,
                message: m.clone(),
            })
            .collect()
    }

    /// Timers: HERE_I_AM, router expiry, REDIRECT_ASSIGN.
    pub fn poll(&mut self, now: Instant) -> Vec<Outgoing> {
        if self.stopped {
            return Vec::new();
        }
        let mut out = Vec::new();
        if self.refresh(now) {
            out.extend(self.here_i_am_all(now));
        }
        if now >= self.next_here_i_am {
            out.extend(self.here_i_am_all(now));
            self.next_here_i_am = now + self.here_i_am_period();
            if self.designated_cache() == Some(self.cfg.cache_ip)
                && self.next_assign.is_none_or(|t| t <= now)
                && self.assignment.is_some()
                && now >= self.next_refresh
            {
                // Keep the routers' copy fresh while designated.
                out.extend(self.redirect_assign(now));
                self.next_refresh = now + self.cfg.interval;
            }
        }
        if let Some(t) = self.next_assign
            && now >= t
        {
            self.next_assign = None;
            if self.designated_cache() == Some(self.cfg.cache_ip) {
                out.extend(self.redirect_assign(now));
            } else {
                // Someone else assigns; forget ours so status reads theirs.
                self.assignment = None;
            }
        }
        out
    }

    /// When [`poll`](Self::poll) next has something to do.
    pub fn next_deadline(&self, now: Instant) -> Instant {
        let mut t = self.next_here_i_am;
        if let Some(a) = self.next_assign {
            t = t.min(a);
        }
        for r in &self.routers {
            if let Some(h) = r.last_heard {
                let expiry = h + self.timeout();
                if expiry > now {
                    t = t.min(expiry);
                }
            }
        }
        t.max(now)
    }

    /// Graceful stop: tell every router we are leaving.
    pub fn shutdown(&mut self, _now: Instant) -> Vec<Outgoing> {
        let out = (0..self.routers.len())
            .map(|i| Outgoing {
                to: self.routers[i].addr,
                message: self.here_i_am(true),
            })
            .collect();
        self.stopped = true;
        out
    }
}

fn method_bit(m: Method) -> u32 {
    match m {
        Method::Gre => METHOD_GRE,
        Method::L2 => METHOD_L2,
    }
}
