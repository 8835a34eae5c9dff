//! Traffic by site and day: what the edges' counters grew by between
//! heartbeats, restarts of an edge counted right, kept across a manager
//! restart, and shown on the fleet page.

use std::time::Duration;

use outpost_protocol::{AppliedConfig, Heartbeat};

use crate::support::*;

fn heartbeat(uptime: u64, lan: u64, wan: u64, saved: u64, hit: f64) -> Heartbeat {
    let mut r = report(vec![]);
    r.uptime_seconds = uptime;
    r.lan_bytes_out = lan;
    r.wan_bytes_in = wan;
    r.bytes_saved = saved;
    r.hit_ratio_bytes = hit;
    Heartbeat {
        report: r,
        config: AppliedConfig::default(),
        action_results: vec![],
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn traffic_today_adds_what_the_counters_grew_by_across_edge_restarts() {
    let mut m = TestManager::start(false, Duration::from_secs(30)).await;
    let oslo = m.enrol("oslo").await;
    // The first report's totals say nothing of when they moved.
    oslo.heartbeat_with(heartbeat(5, 300, 100, 200, 0.5))
        .await
        .unwrap();
    // 1,000 bytes more to the LAN, all from the edge's copies.
    oslo.heartbeat_with(heartbeat(35, 1300, 100, 1200, 1150.0 / 1300.0))
        .await
        .unwrap();
    // The edge restarted: its counters start again.
    oslo.heartbeat_with(heartbeat(3, 50, 50, 0, 0.0))
        .await
        .unwrap();
    m.manager.flush().unwrap();
    let traffic = m.manager.site_traffic(now()).unwrap();
    let today = traffic["oslo"].today;
    assert_eq!(
        (today.lan_out, today.wan_in, today.saved),
        (1050, 50, 1000),
        "{today:?}"
    );
    assert_eq!(today.from_cache, 1000);
    assert_eq!(traffic["oslo"].last_30_days, today);

    // The automation API gives the same figures, for the fleet and for
    // the one site; a site with no traffic has none.
    m.enrol("bergen").await;
    let list: outpost_protocol::EdgeList = m.admin().get("/api/v1/edges").await.unwrap();
    let wire = |e: &outpost_protocol::EdgeSummary| e.traffic;
    let oslo_wire = list
        .edges
        .iter()
        .find(|e| e.site == "oslo")
        .and_then(wire)
        .unwrap();
    assert_eq!(
        (
            oslo_wire.today.lan_bytes_out,
            oslo_wire.today.wan_bytes_in,
            oslo_wire.today.bytes_saved,
            oslo_wire.today.bytes_from_cache
        ),
        (1050, 50, 1000, 1000)
    );
    assert_eq!(oslo_wire.last_30_days, oslo_wire.today);
    assert_eq!(
        list.edges
            .iter()
            .find(|e| e.site == "bergen")
            .and_then(wire),
        None
    );
    let one: outpost_protocol::EdgeSummary = m.admin().get("/api/v1/edges/oslo").await.unwrap();
    assert_eq!(one.traffic, Some(oslo_wire));

    // Kept across a manager restart.
    m.stop().await;
    m.serve(None).await;
    let after = m.manager.site_traffic(now()).unwrap();
    assert_eq!(after["oslo"], traffic["oslo"]);
    // Yesterday's traffic is in the 30 days, not in today.
    let tomorrow = now() + 86_400;
    let later = m.manager.site_traffic(tomorrow).unwrap();
    assert_eq!(later["oslo"].today, Default::default());
    assert_eq!(later["oslo"].last_30_days, today);
    let in_a_month = now() + 31 * 86_400;
    assert!(
        !m.manager
            .site_traffic(in_a_month)
            .unwrap()
            .contains_key("oslo")
    );
}
