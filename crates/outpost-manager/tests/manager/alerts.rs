//! Alerts open and close from the reports; the webhook gets each change,
//! retried until the receiver takes it; /metrics has per-site series.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use outpost_manager::manager::{Alert, AlertEvent};
use outpost_manager::model::alerts::AlertKind;
use outpost_manager::webhook::WebhookOptions;

use crate::support::{TestManager, channel, eventually, report};

/// A webhook receiver that fails the first `fail_first` attempts.
#[derive(Clone, Default)]
struct Receiver {
    attempts: Arc<Mutex<u32>>,
    accepted: Arc<Mutex<Vec<AlertEvent>>>,
}

async fn receiver(fail_first: u32) -> (Receiver, String) {
    let state = Receiver::default();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let state = state.clone();
            move |body: bytes::Bytes| {
                let state = state.clone();
                async move {
                    let mut attempts = state.attempts.lock().unwrap();
                    *attempts += 1;
                    if *attempts <= fail_first {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let event: AlertEvent = serde_json::from_slice(&body).unwrap();
                    state.accepted.lock().unwrap().push(event);
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (state, url)
}

#[tokio::test]
async fn a_full_disk_opens_an_alert_the_webhook_gets_after_retries_and_closes() {
    let m = TestManager::start(false, Duration::from_secs(30)).await;
    let (hook, url) = receiver(2).await;
    m.manager
        .start_webhook(WebhookOptions {
            first_backoff: Duration::from_millis(50),
            ..WebhookOptions::new(url)
        })
        .unwrap();
    let edge = m.enrol("oslo").await;
    let mut hb = outpost_protocol::Heartbeat {
        report: report(vec![]),
        config: Default::default(),
        action_results: vec![],
    };
    hb.report.disk_used = 95;
    hb.report.disk_limit = 100;
    edge.heartbeat_with(hb.clone()).await.unwrap();

    let open = eventually(Duration::from_secs(5), "the disk alert", || async {
        let alerts: Vec<Alert> = m.admin().get("/api/v1/alerts").await.unwrap();
        (!alerts.is_empty()).then_some(alerts)
    })
    .await;
    assert_eq!(open.len(), 1);
    assert_eq!(
        (open[0].site.as_str(), open[0].kind),
        ("oslo", AlertKind::DiskFull)
    );
    assert!(open[0].detail.contains("95 %"), "{}", open[0].detail);

    let delivered = eventually(Duration::from_secs(5), "the webhook delivery", || async {
        let got = hook.accepted.lock().unwrap().clone();
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(delivered[0].event, "open");
    assert_eq!(delivered[0].alert.id, open[0].id);
    assert_eq!(
        *hook.attempts.lock().unwrap(),
        3,
        "two refusals, then accepted"
    );

    hb.report.disk_used = 10;
    edge.heartbeat_with(hb).await.unwrap();
    eventually(Duration::from_secs(5), "the close event", || async {
        let got = hook.accepted.lock().unwrap().clone();
        (got.len() == 2).then_some(())
    })
    .await;
    let closed = hook.accepted.lock().unwrap()[1].clone();
    assert_eq!(closed.event, "close");
    assert!(closed.alert.closed.is_some());
    let open: Vec<Alert> = m.admin().get("/api/v1/alerts").await.unwrap();
    assert!(open.is_empty());
    let all: Vec<Alert> = m.admin().get("/api/v1/alerts?all=true").await.unwrap();
    assert_eq!(all.len(), 1);
    assert!(all[0].closed.is_some());
}

#[tokio::test]
async fn a_down_site_and_a_failed_sync_are_alerts() {
    let m = TestManager::start(false, Duration::from_millis(300)).await;
    let edge = m.enrol("oslo").await;
    let mut failed = channel("apps", 2, 1);
    failed.syncing = false;
    failed.last_result = Some(outpost_protocol::SyncResult::Failed);
    edge.heartbeat(vec![failed]).await.unwrap();
    let kinds = eventually(Duration::from_secs(10), "down and sync failed", || async {
        let alerts: Vec<Alert> = m.admin().get("/api/v1/alerts").await.unwrap();
        let kinds: Vec<AlertKind> = alerts.iter().map(|a| a.kind).collect();
        (kinds.contains(&AlertKind::SiteDown) && kinds.contains(&AlertKind::SyncFailed))
            .then_some(alerts)
    })
    .await;
    let sync = kinds
        .iter()
        .find(|a| a.kind == AlertKind::SyncFailed)
        .unwrap();
    assert_eq!(sync.subject, "apps");
}

#[tokio::test]
async fn metrics_have_per_site_series() {
    let m = TestManager::start(false, Duration::from_secs(30)).await;
    let a = m.enrol("a").await;
    let b = m.enrol("b").await;
    a.heartbeat(vec![channel("apps", 4, 3)]).await.unwrap();
    b.heartbeat(vec![]).await.unwrap();
    let (status, body) = m
        .admin()
        .request(http::Method::GET, "/metrics", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body.to_vec()).unwrap();
    for line in [
        "outpost_fleet_edge_up{site=\"a\"} 1",
        "outpost_fleet_edge_state{site=\"b\",state=\"up\"} 1",
        "outpost_fleet_disk_used_bytes{site=\"a\"} 500",
        "outpost_fleet_wan_bytes_in_total{site=\"b\"} 100",
        "outpost_fleet_channel_files_present{site=\"a\",channel=\"apps\"} 3",
        "outpost_fleet_channel_files_total{site=\"a\",channel=\"apps\"} 4",
        "outpost_manager_edges{state=\"up\"} 2",
        "outpost_manager_heartbeats_total 2",
        "# TYPE outpost_fleet_bytes_saved_total counter",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let anon = outpost_manager::http::client::Client::new(&m.url, None).unwrap();
    let (status, _) = anon
        .request(http::Method::GET, "/metrics", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn alerts_follow_each_heartbeat_and_close_when_the_edge_is_deleted() {
    let m = TestManager::start(false, Duration::from_secs(30)).await;
    let edge = m.enrol("oslo").await;
    let open_kinds = || async {
        let alerts: Vec<Alert> = m.admin().get("/api/v1/alerts?site=oslo").await.unwrap();
        alerts.into_iter().map(|a| a.kind).collect::<Vec<_>>()
    };
    let mut failed = channel("apps", 2, 1);
    failed.last_result = Some(outpost_protocol::SyncResult::Failed);
    edge.heartbeat(vec![failed]).await.unwrap();
    eventually(Duration::from_secs(10), "sync failed opens", || async {
        open_kinds()
            .await
            .contains(&AlertKind::SyncFailed)
            .then_some(())
    })
    .await;
    // Well inside a full sweep's period: the heartbeat alone closes it.
    edge.heartbeat(vec![channel("apps", 2, 2)]).await.unwrap();
    eventually(Duration::from_secs(10), "sync failed closes", || async {
        (!open_kinds().await.contains(&AlertKind::SyncFailed)).then_some(())
    })
    .await;
    let mut failed = channel("apps", 2, 1);
    failed.last_result = Some(outpost_protocol::SyncResult::Failed);
    edge.heartbeat(vec![failed]).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "sync failed opens again",
        || async {
            open_kinds()
                .await
                .contains(&AlertKind::SyncFailed)
                .then_some(())
        },
    )
    .await;
    let (status, _) = m
        .admin()
        .request(http::Method::DELETE, "/api/v1/edges/oslo", None)
        .await
        .unwrap();
    assert!(status.is_success(), "{status}");
    eventually(
        Duration::from_secs(10),
        "a deleted edge's alerts close",
        || async { open_kinds().await.is_empty().then_some(()) },
    )
    .await;
}
