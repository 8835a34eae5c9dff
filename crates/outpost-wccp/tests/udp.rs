//! Over the wire: the tokio adapter and the testkit's router simulator on
//! real UDP sockets on loopback (127.0.0.x addresses, ports from the
//! kernel), with a 0.5 s interval (WCCP fast timers' minimum) so a
//! protocol minute takes seconds.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use outpost_testkit::wait_until;
use outpost_testkit::wccp_router::{RouterConfig, SimRouter};
use outpost_wccp::*;

const INTERVAL: Duration = Duration::from_millis(500);

fn lo(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

async fn router(n: u8, password: Option<&str>) -> SimRouter {
    let mut cfg = RouterConfig::new(lo(n));
    cfg.interval = INTERVAL;
    cfg.password = password.map(|p| Password::new(p).unwrap());
    SimRouter::start(cfg, SocketAddr::new(lo(n).into(), 0))
        .await
        .unwrap()
}

async fn edge(n: u8, routers: &[&SimRouter], password: Option<&str>) -> WccpHandle {
    let mut g = GroupConfig::web_cache(
        lo(n),
        routers.iter().map(|r| r.with(|c| c.cfg.ip)).collect(),
    );
    g.interval = INTERVAL;
    spawn(AdapterConfig {
        listen: SocketAddr::new(lo(n).into(), 0),
        routers: routers.iter().map(|r| r.addr).collect(),
        password: password.map(|p| Password::new(p).unwrap()),
        groups: vec![g],
    })
    .await
    .unwrap()
}

fn counts(r: &SimRouter) -> Vec<usize> {
    r.with(|c| c.bucket_counts().values().copied().collect())
}

#[tokio::test]
async fn one_router_one_edge_over_udp() {
    let r = router(1, Some("s3cret")).await;
    let e = edge(11, &[&r], Some("s3cret")).await;
    assert!(wait_until(Duration::from_secs(10), || counts(&r) == vec![256]).await);
    let s = e.status();
    assert!(s.groups[0].designated);
    assert_eq!(s.groups[0].buckets_owned, 256);
    assert!(s.counters.sent["here_i_am"] >= 2);
    assert!(s.counters.sent["redirect_assign"] >= 1);
    assert!(s.counters.received["i_see_you"] >= 2);
    assert_eq!(s.counters.refused, 0);
    // The status serialises for /status.
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["groups"][0]["negotiated"]["forwarding"], "gre");
    e.stop().await;
    // Graceful stop: the router drops us at once.
    assert!(wait_until(Duration::from_secs(2), || r.with(|c| c.view().is_empty())).await);
    assert_eq!(r.with(|c| c.counters.shutdowns), 1);
}

#[tokio::test]
async fn two_routers_over_udp() {
    let r1 = router(1, None).await;
    let r2 = router(2, None).await;
    let _e1 = edge(11, &[&r1, &r2], None).await;
    let _e2 = edge(12, &[&r1, &r2], None).await;
    assert!(
        wait_until(Duration::from_secs(10), || counts(&r1) == vec![128, 128]
            && counts(&r2) == vec![128, 128])
        .await
    );
    assert_eq!(
        r1.with(|c| c.bucket_owners()),
        r2.with(|c| c.bucket_owners())
    );
}

#[tokio::test]
async fn a_password_mismatch_is_refused_both_ways() {
    // The router has one, the edge another: the router refuses the edge.
    let r = router(1, Some("routerpw")).await;
    let e = edge(11, &[&r], Some("edgepw")).await;
    assert!(
        wait_until(Duration::from_secs(5), || r
            .with(|c| c.counters.refused_datagrams)
            >= 2)
        .await
    );
    assert!(r.with(|c| c.view().is_empty()));
    // The edge refuses a router message signed with the wrong password
    // (sent from the router's own address, as a spoofer on the LAN would).
    let mut see = Message::new(MessageType::ISeeYou, ServiceInfo::web_cache());
    see.router_identity = Some(RouterIdentityInfo {
        router: RouterId {
            ip: lo(1),
            receive_id: 1,
        },
        sent_to: lo(11),
        received_from: vec![lo(11)],
    });
    see.router_view = Some(RouterViewInfo {
        member_change: 1,
        key: AssignmentKey {
            ip: Ipv4Addr::UNSPECIFIED,
            change: 0,
        },
        routers: vec![lo(1)],
        caches: vec![WebCacheIdentity::new(lo(11), 0)],
    });
    let spoofer = tokio::net::UdpSocket::bind(SocketAddr::new(lo(1).into(), 0))
        .await
        .unwrap();
    for pw in [Some("routerpw"), None] {
        let bytes = encode(&see, pw.map(|p| Password::new(p).unwrap()).as_ref());
        spoofer.send_to(&bytes, e.local_addr).await.unwrap();
    }
    assert!(wait_until(Duration::from_secs(5), || e.status().counters.refused >= 2).await);
    let s = e.status();
    assert!(
        !s.groups[0].routers[0].live,
        "a router we cannot authenticate is not live"
    );
    assert!(s.counters.last_refusal.is_some());

    // No password on the edge, one on the router: refused too.
    let r2 = router(2, Some("routerpw")).await;
    let _e2 = edge(12, &[&r2], None).await;
    assert!(
        wait_until(Duration::from_secs(5), || r2
            .with(|c| c.counters.refused_datagrams)
            >= 2)
        .await
    );
    assert!(r2.with(|c| c.view().is_empty()));
}

#[tokio::test]
async fn three_edges_share_evenly_and_a_killed_one_is_reassigned_then_rejoins() {
    let r = router(1, None).await;
    let e1 = edge(11, &[&r], None).await;
    let e2 = edge(12, &[&r], None).await;
    let e3 = edge(13, &[&r], None).await;
    assert!(wait_until(Duration::from_secs(10), || counts(&r) == vec![86, 85, 85]).await);
    // Killed: no goodbye. The bound is 2.75 intervals (27.5 s at 10 s; the
    // sans-io tests hold it exactly); 6 here leave room for a loaded
    // machine's scheduling.
    e2.abort();
    let start = tokio::time::Instant::now();
    assert!(wait_until(Duration::from_secs(10), || counts(&r) == vec![128, 128]).await);
    assert!(
        start.elapsed() <= INTERVAL * 6,
        "took {:?}",
        start.elapsed()
    );
    assert!(!r.with(|c| c.view().contains(&lo(12))));
    // It rejoins.
    let _e2 = edge(12, &[&r], None).await;
    assert!(wait_until(Duration::from_secs(10), || counts(&r) == vec![86, 85, 85]).await);
    assert_eq!(e1.status().groups[0].shares.len(), 3);
    drop(e3);
}

#[tokio::test]
async fn mask_assignment_over_udp() {
    let mut cfg = RouterConfig::new(lo(1));
    cfg.interval = INTERVAL;
    cfg.capabilities = Some((METHOD_GRE, ASSIGN_MASK, METHOD_GRE));
    let r = SimRouter::start(cfg, SocketAddr::new(lo(1).into(), 0))
        .await
        .unwrap();
    let _e1 = edge(11, &[&r], None).await;
    let e2 = edge(12, &[&r], None).await;
    assert!(
        wait_until(Duration::from_secs(10), || r.with(|c| c
            .mask_sets()
            .is_some_and(|s| s[0]
                .values
                .iter()
                .filter(|v| v.cache == lo(12))
                .count()
                == 32)))
        .await
    );
    assert!(
        wait_until(Duration::from_secs(5), || e2.status().groups[0]
            .mask_values_owned
            == 32)
        .await
    );
}

#[tokio::test]
async fn hostile_datagrams_are_counted_and_ignored() {
    let r = router(1, None).await;
    let e = edge(11, &[&r], None).await;
    assert!(wait_until(Duration::from_secs(10), || counts(&r) == vec![256]).await);
    let hostile = tokio::net::UdpSocket::bind(SocketAddr::new(lo(1).into(), 0))
        .await
        .unwrap();
    let mut valid = Message::new(MessageType::RemovalQuery, ServiceInfo::web_cache());
    valid.query = Some(QueryInfo {
        router: RouterId {
            ip: lo(1),
            receive_id: 1,
        },
        sent_to: lo(11),
        target: lo(11),
    });
    let good = encode(&valid, None);
    let mut huge_count = good.clone();
    huge_count.truncate(good.len() - 20); // the query component
    huge_count.extend_from_slice(&[0, 5, 0, 12, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    let len = (huge_count.len() - 8) as u16;
    huge_count[6..8].copy_from_slice(&len.to_be_bytes());
    let mut wrong_len = good.clone();
    wrong_len[7] = wrong_len[7].wrapping_add(3);
    let junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![0; 3],
        vec![0xff; 1500],
        wrong_len,
        huge_count,
        good[..good.len() - 1].to_vec(),
        vec![0, 0, 0, 10, 2, 0, 0xff, 0xff],
    ];
    for j in &junk {
        hostile.send_to(j, e.local_addr).await.unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(5), || e.status().counters.refused
            >= junk.len() as u64)
        .await,
        "refused {}",
        e.status().counters.refused
    );
    // Still alive and in the group: HERE_I_AMs keep flowing.
    let before = r.with(|c| c.counters.here_i_am);
    assert!(
        wait_until(Duration::from_secs(5), || r.with(|c| c.counters.here_i_am)
            > before + 2)
        .await
    );
    assert_eq!(counts(&r), vec![256]);
}
