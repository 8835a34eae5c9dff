//! The service-group state machine against the testkit's router simulator,
//! sans-io: virtual time, every message encoded and decoded on the way, so
//! minutes of protocol run in milliseconds.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use outpost_testkit::wccp_router::{RouterConfig, RouterCore};
use outpost_wccp::*;

fn edge_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 20, 0, 10 + n)
}
fn router_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 20, 0, n)
}

struct Net {
    now: Instant,
    start: Instant,
    edges: Vec<(ServiceGroup, bool)>,
    routers: Vec<RouterCore>,
    password: Option<Password>,
}

impl Net {
    fn new(edges: usize, routers: usize, tweak: impl Fn(&mut GroupConfig)) -> Net {
        let now = Instant::now();
        let router_ips: Vec<Ipv4Addr> = (1..=routers as u8).map(router_ip).collect();
        let edges = (1..=edges as u8)
            .map(|n| {
                let mut cfg = GroupConfig::web_cache(edge_ip(n), router_ips.clone());
                tweak(&mut cfg);
                (ServiceGroup::new(cfg, now), true)
            })
            .collect();
        let routers = router_ips
            .iter()
            .map(|&ip| RouterCore::new(RouterConfig::new(ip)))
            .collect();
        Net {
            now,
            start: now,
            edges,
            routers,
            password: None,
        }
    }

    fn wire(&self, m: &Message) -> Message {
        decode(&encode(m, self.password.as_ref()), self.password.as_ref())
            .expect("own message parses")
    }

    fn deliver(&mut self, from_edge: usize, outs: Vec<Outgoing>) {
        let mut queue: Vec<(usize, Outgoing)> = outs.into_iter().map(|o| (from_edge, o)).collect();
        while let Some((e, o)) = queue.pop() {
            let edge_addr = self.edges[e].0.config().cache_ip;
            let msg = self.wire(&o.message);
            let Some(r) = self.routers.iter().position(|r| r.cfg.ip == o.to) else {
                continue;
            };
            let replies = self.routers[r].handle(edge_addr, &msg, self.now);
            for (to, reply) in replies {
                let reply = self.wire(&reply);
                let Some(t) = self
                    .edges
                    .iter()
                    .position(|(g, alive)| *alive && g.config().cache_ip == to)
                else {
                    continue;
                };
                let router_addr = self.routers[r].cfg.ip;
                let more = self.edges[t].0.handle(router_addr, &reply, self.now);
                queue.extend(more.into_iter().map(|o| (t, o)));
            }
        }
    }

    fn run(&mut self, secs: f64) {
        let end = self.now + Duration::from_secs_f64(secs);
        while self.now < end {
            self.now += Duration::from_millis(100);
            for r in &mut self.routers {
                r.poll(self.now);
            }
            for e in 0..self.edges.len() {
                if self.edges[e].1 {
                    let outs = self.edges[e].0.poll(self.now);
                    self.deliver(e, outs);
                }
            }
        }
    }

    /// Runs until `check` holds; returns the virtual seconds it took.
    fn run_until(&mut self, limit: f64, check: impl Fn(&Net) -> bool) -> Option<f64> {
        let begin = self.now;
        while self.now < begin + Duration::from_secs_f64(limit) {
            if check(self) {
                return Some((self.now - begin).as_secs_f64());
            }
            self.run(0.1);
        }
        None
    }

    fn counts(&self, r: usize) -> Vec<usize> {
        self.routers[r].bucket_counts().values().copied().collect()
    }
}

#[test]
fn one_router_one_edge_reach_a_stable_view_and_assignment() {
    let mut net = Net::new(1, 1, |_| {});
    let took = net
        .run_until(30.0, |n| n.counts(0) == vec![256])
        .expect("assigned");
    // The designated cache waits 1.5 x 10 s after the view settles.
    assert!((15.0..=17.0).contains(&took), "assignment after {took} s");
    let s = net.edges[0].0.status(net.now);
    assert!(s.designated);
    assert_eq!(s.buckets_owned, 256);
    assert_eq!(
        s.negotiated,
        Some(Negotiated {
            forwarding: Method::Gre,
            return_method: Method::Gre,
            assignment: AssignMethod::Hash
        })
    );
    assert_eq!(net.routers[0].assignment_key().ip, edge_ip(1));
    // Stable: an hour later the same assignment, the same key, the router
    // still seeing us (HERE_I_AM keeps coming).
    let key = net.routers[0].assignment_key();
    net.run(3600.0);
    assert_eq!(net.routers[0].assignment_key(), key);
    assert_eq!(net.counts(0), vec![256]);
    assert_eq!(net.routers[0].view(), vec![edge_ip(1)]);
    let _ = net.start;
}

#[test]
fn three_edges_share_256_buckets_evenly_and_the_lowest_is_designated() {
    let mut net = Net::new(3, 1, |_| {});
    net.run_until(40.0, |n| n.counts(0).len() == 3)
        .expect("three caches assigned");
    assert_eq!(net.counts(0), vec![86, 85, 85]);
    // The others learn their share from the router's view at their next
    // exchange, within one interval.
    net.run(10.5);
    assert_eq!(net.routers[0].assignment_key().ip, edge_ip(1));
    for (i, (g, _)) in net.edges.iter().enumerate() {
        let s = g.status(net.now);
        assert_eq!(s.designated, i == 0);
        assert_eq!(s.designated_cache, Some(edge_ip(1)));
        assert_eq!(s.buckets_owned, [86, 85, 85][i], "edge {i} status");
    }
}

#[test]
fn a_killed_edge_s_buckets_are_reassigned_within_30_s_and_it_can_rejoin() {
    let mut net = Net::new(3, 1, |_| {});
    net.run_until(40.0, |n| n.counts(0).len() == 3)
        .expect("assigned");
    let before = net.routers[0].bucket_owners();
    net.edges[1].1 = false; // killed: silent from now on
    // The router stops redirecting to it after 2.5 x 10 s (its buckets then
    // go to the origin directly, never into a black hole) ...
    let dropped = net
        .run_until(26.0, |n| n.routers[0].bucket_counts().len() == 2)
        .expect("router drops the dead cache after 25 s");
    assert!(dropped <= 25.5, "dropped after {dropped} s");
    // ... and the designated edge hands them to the survivors at its next
    // exchange (a quarter interval while it shares the group): within
    // 27.5 s of the death in all phases.
    let took = net
        .run_until(12.0, |n| n.counts(0) == vec![128, 128])
        .map(|t| t + dropped)
        .expect("reassigned");
    assert!(took <= 27.6, "reassigned {took} s after the kill");
    // Only the dead cache's buckets moved.
    let after = net.routers[0].bucket_owners();
    for b in 0..256 {
        if before[b] != Some(edge_ip(2)) {
            assert_eq!(before[b], after[b], "bucket {b} moved needlessly");
        }
    }
    // It comes back: a fresh process, same address.
    let cfg = net.edges[1].0.config().clone();
    net.edges[1] = (ServiceGroup::new(cfg, net.now), true);
    net.run_until(40.0, |n| n.counts(0) == vec![86, 85, 85])
        .expect("rejoined");
}

#[test]
fn the_designated_edge_dying_hands_the_assignment_to_the_next_lowest() {
    let mut net = Net::new(2, 1, |_| {});
    net.run_until(40.0, |n| n.counts(0).len() == 2)
        .expect("assigned");
    net.edges[0].1 = false;
    net.run_until(27.6, |n| n.counts(0) == vec![256])
        .expect("taken over within 27.5 s");
    assert_eq!(net.routers[0].assignment_key().ip, edge_ip(2));
    assert!(net.edges[1].0.status(net.now).designated);
}

#[test]
fn two_routers_get_the_same_assignment() {
    let mut net = Net::new(2, 2, |_| {});
    net.run_until(40.0, |n| n.counts(0).len() == 2 && n.counts(1).len() == 2)
        .expect("both assigned");
    assert_eq!(
        net.routers[0].bucket_owners(),
        net.routers[1].bucket_owners()
    );
    let s = net.edges[0].0.status(net.now);
    assert_eq!(s.routers.len(), 2);
    assert!(s.routers.iter().all(|r| r.live && r.receive_id > 0));
}

#[test]
fn weights_are_honoured() {
    let mut net = Net::new(2, 1, |_| {});
    for (i, w) in [(0usize, 300u16), (1, 100)] {
        let mut cfg = net.edges[i].0.config().clone();
        cfg.weight = w;
        net.edges[i].0 = ServiceGroup::new(cfg, net.now);
    }
    net.run_until(40.0, |n| n.counts(0).len() == 2)
        .expect("assigned");
    assert_eq!(net.counts(0), vec![192, 64]);
}

#[test]
fn mask_assignment_when_the_router_only_does_mask() {
    let mut net = Net::new(2, 1, |_| {});
    net.routers[0].cfg.capabilities = Some((METHOD_L2, ASSIGN_MASK, METHOD_L2));
    net.run_until(40.0, |n| {
        n.routers[0]
            .mask_sets()
            .is_some_and(|s| s[0].values.len() == 64)
    })
    .expect("mask assigned");
    let sets = net.routers[0].mask_sets().unwrap();
    assert_eq!(sets[0].mask.src_ip, 0x1741);
    let first = sets[0]
        .values
        .iter()
        .filter(|v| v.cache == edge_ip(1))
        .count();
    assert_eq!(first, 32);
    net.run(10.5);
    let s = net.edges[1].0.status(net.now);
    assert_eq!(
        s.negotiated,
        Some(Negotiated {
            forwarding: Method::L2,
            return_method: Method::L2,
            assignment: AssignMethod::Mask
        })
    );
    // The non-designated edge learns its share from the router's view.
    assert_eq!(s.mask_values_owned, 32);
    // Every client address goes to one of the two edges.
    let target = assign::mask_target(
        &sets,
        Ipv4Addr::new(192, 168, 7, 9),
        Ipv4Addr::new(1, 1, 1, 1),
        40000,
        80,
    );
    assert!(target == Some(edge_ip(1)) || target == Some(edge_ip(2)));
}

#[test]
fn a_configured_mask_is_used() {
    let mut net = Net::new(1, 1, |c| {
        c.assignment = ASSIGN_MASK;
        c.mask = MaskElement {
            src_ip: 0,
            dst_ip: 0x3,
            src_port: 0,
            dst_port: 0,
        };
    });
    net.run_until(40.0, |n| n.routers[0].mask_sets().is_some())
        .expect("mask assigned");
    let sets = net.routers[0].mask_sets().unwrap();
    assert_eq!(sets[0].mask.dst_ip, 3);
    assert_eq!(sets[0].values.len(), 4);
}

#[test]
fn routers_without_a_common_method_get_no_assignment_and_status_says_why() {
    let mut net = Net::new(1, 2, |_| {});
    net.routers[0].cfg.capabilities = Some((METHOD_GRE, ASSIGN_HASH, METHOD_GRE));
    net.routers[1].cfg.capabilities = Some((METHOD_L2, ASSIGN_HASH, METHOD_GRE));
    net.run(40.0);
    let s = net.edges[0].0.status(net.now);
    assert_eq!(s.negotiated, None);
    assert_eq!(
        s.negotiation_error.as_deref(),
        Some("no forwarding method both sides support")
    );
    assert_eq!(
        net.routers[0].assignment_key().change,
        0,
        "no assignment was sent"
    );
}

#[test]
fn an_old_router_without_capabilities_means_gre_and_hash() {
    let mut net = Net::new(1, 1, |_| {});
    net.routers[0].cfg.capabilities = None;
    net.run_until(30.0, |n| n.counts(0) == vec![256])
        .expect("assigned");
    let s = net.edges[0].0.status(net.now);
    assert_eq!(s.negotiated.map(|n| n.forwarding), Some(Method::Gre));
}

#[test]
fn an_edge_allowing_only_l2_is_refused_by_a_gre_only_router() {
    let mut net = Net::new(1, 1, |c| c.forwarding = METHOD_L2);
    net.routers[0].cfg.capabilities = Some((METHOD_GRE, ASSIGN_HASH, METHOD_GRE));
    net.run(30.0);
    assert!(net.routers[0].view().is_empty());
    assert!(net.routers[0].counters.capability_mismatch > 0);
    assert!(!net.edges[0].0.status(net.now).routers[0].live);
}

#[test]
fn a_graceful_stop_leaves_the_router_view_at_once() {
    let mut net = Net::new(2, 1, |_| {});
    net.run_until(40.0, |n| n.counts(0).len() == 2)
        .expect("assigned");
    let outs = net.edges[1].0.shutdown(net.now);
    net.deliver(1, outs);
    net.edges[1].1 = false;
    assert_eq!(net.routers[0].view(), vec![edge_ip(1)]);
    // The survivor takes every bucket after the draft's wait, well before
    // a timeout would have noticed.
    let took = net
        .run_until(30.0, |n| n.counts(0) == vec![256])
        .expect("reassigned");
    assert!(took <= 10.5, "took {took} s");
}

#[test]
fn a_removal_query_is_answered_with_a_here_i_am() {
    let mut net = Net::new(1, 1, |_| {});
    net.run(5.0);
    let mut q = Message::new(MessageType::RemovalQuery, ServiceInfo::web_cache());
    q.query = Some(QueryInfo {
        router: RouterId {
            ip: router_ip(1),
            receive_id: 3,
        },
        sent_to: edge_ip(1),
        target: edge_ip(1),
    });
    let now = net.now;
    let out = net.edges[0].0.handle(router_ip(1), &q, now);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].message.kind, MessageType::HereIAm);
    // From an address that is not a configured router: ignored.
    assert!(
        net.edges[0]
            .0
            .handle(Ipv4Addr::new(10, 20, 0, 99), &q, now)
            .is_empty()
    );
}
