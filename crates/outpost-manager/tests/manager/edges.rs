//! Enrolment, heartbeats, revocation, long polls, restart, actions.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use outpost_manager::http::client::ClientError;
use outpost_protocol::{
    ActionResult, ActionState, ActionStatus, AppliedConfig, EdgeList, EdgeState, EnrolRequest,
    FleetAction, Heartbeat, HeartbeatReply,
};

use crate::support::{TestManager, channel, eventually, report};

fn api_status(e: ClientError) -> (StatusCode, String) {
    match e {
        ClientError::Api { status, error } => (status, error),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn enrol_heartbeat_and_revoke_over_pinned_https() {
    let m = TestManager::start(true, Duration::from_secs(30)).await;
    let edge = m.enrol("oslo").await;
    assert!(edge.reply.approved);
    assert_eq!(edge.reply.heartbeat_ms, 30_000);
    assert!(edge.reply.credential.len() > 40);

    let reply = edge.heartbeat(vec![channel("apps", 2, 2)]).await.unwrap();
    assert!(reply.approved);
    assert_eq!(reply.desired_config_version, 0);

    let list: EdgeList = m.admin().get("/api/v1/edges").await.unwrap();
    assert_eq!(list.edges.len(), 1);
    let e = &list.edges[0];
    assert_eq!((e.site.as_str(), e.state), ("oslo", EdgeState::Up));
    assert_eq!(e.hostname.as_deref(), Some("oslo.example"));
    assert_eq!(e.disk_used, Some(500));
    assert!(e.last_seen.is_some());

    // The credential is stored hashed only.
    let db = std::fs::read(m.data_dir().join("manager.db")).unwrap();
    let wal = std::fs::read(m.data_dir().join("manager.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains(&edge.reply.credential));
        assert!(!text.contains(&m.init.admin_token));
        assert!(!text.contains(&m.init.join_token));
    }

    let _: serde_json::Value = m
        .admin()
        .send(Method::POST, "/api/v1/edges/oslo/revoke", &())
        .await
        .unwrap();
    let (status, error) = api_status(edge.heartbeat(vec![]).await.unwrap_err());
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(error.starts_with("this edge was revoked at "), "{error}");
    let list: EdgeList = m.admin().get("/api/v1/edges").await.unwrap();
    assert_eq!(list.edges[0].state, EdgeState::Revoked);
    let audit: serde_json::Value = m.admin().get("/api/v1/audit").await.unwrap();
    let whats: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["what"].as_str().unwrap())
        .collect();
    assert!(
        whats.contains(&"enrol") && whats.contains(&"edge revoke"),
        "{whats:?}"
    );
    assert_eq!(audit[0]["from"], "127.0.0.1");
}

#[tokio::test]
async fn a_wrong_fingerprint_is_refused_by_the_client() {
    let m = TestManager::start(true, Duration::from_secs(30)).await;
    let wrong = "00:".repeat(31) + "00";
    let client = outpost_manager::http::client::Client::new(&m.url, Some(&wrong))
        .unwrap()
        .bearer(&m.init.admin_token);
    let err = client.get::<EdgeList>("/api/v1/edges").await.unwrap_err();
    assert!(err.to_string().contains("fingerprint"), "{err}");
}

#[tokio::test]
async fn enrolment_refusals_say_why() {
    let m = TestManager::start(false, Duration::from_secs(30)).await;
    let request = |token: &str, site: &str| EnrolRequest {
        join_token: token.into(),
        site: site.into(),
        version: "1".into(),
        hostname: "h".into(),
    };
    let enrol = |r: EnrolRequest| {
        let c = m.anonymous_edge();
        async move {
            c.send::<serde_json::Value, _>(Method::POST, "/edge/v1/enrol", &r)
                .await
        }
    };
    let (s, e) = api_status(enrol(request("nope", "a")).await.unwrap_err());
    assert_eq!(
        (s, e.as_str()),
        (StatusCode::UNAUTHORIZED, "unknown join token")
    );
    let (s, _) = api_status(enrol(request(&m.init.join_token, "a/b")).await.unwrap_err());
    assert_eq!(s, StatusCode::BAD_REQUEST);
    m.enrol("a").await;
    let (s, e) = api_status(enrol(request(&m.init.join_token, "a")).await.unwrap_err());
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(e.contains("already enrolled"), "{e}");

    // A revoked join token enrols nobody.
    let tokens: serde_json::Value = m.admin().get("/api/v1/join-tokens").await.unwrap();
    let id = tokens[0]["id"].as_i64().unwrap();
    assert_eq!(tokens[0]["uses"], 1);
    let _: serde_json::Value = m
        .admin()
        .send(
            Method::POST,
            &format!("/api/v1/join-tokens/{id}/revoke"),
            &(),
        )
        .await
        .unwrap();
    let (s, e) = api_status(enrol(request(&m.init.join_token, "b")).await.unwrap_err());
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(e.contains("was revoked"), "{e}");

    // An expired one neither.
    let made: serde_json::Value = m
        .admin()
        .send(
            Method::POST,
            "/api/v1/join-tokens",
            &serde_json::json!({"label": "short", "expires_in": "1s"}),
        )
        .await
        .unwrap();
    let token = made["token"].as_str().unwrap().to_string();
    enrol(request(&token, "c")).await.unwrap();
    let mut attempt = 0;
    let e = eventually(Duration::from_secs(5), "the token to expire", || {
        attempt += 1;
        let f = enrol(request(&token, &format!("d{attempt}")));
        async move { f.await.err() }
    })
    .await;
    assert!(api_status(e).1.contains("expired"));

    // Answers name the protocol too, errors included.
    let (status, headers, _) = m
        .anonymous_edge()
        .request_full(Method::GET, "/edge/v1/config", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["outpost-fleet-protocol"], "1");
    // Without the protocol header: 400.
    let bare = outpost_manager::http::client::Client::new(&m.url, None).unwrap();
    let (s, e) = api_status(
        bare.send::<serde_json::Value, _>(Method::POST, "/edge/v1/enrol", &request("x", "y"))
            .await
            .unwrap_err(),
    );
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e.contains("outpost-fleet-protocol"), "{e}");
}

#[tokio::test]
async fn approval_mode_holds_config_back_until_approved() {
    let m = TestManager::start(false, Duration::from_secs(30)).await;
    let _: serde_json::Value = m
        .admin()
        .send(
            Method::PUT,
            "/api/v1/settings",
            &serde_json::json!({"approve_new_edges": true}),
        )
        .await
        .unwrap();
    let edge = m.enrol("lab").await;
    assert!(!edge.reply.approved);
    m.put_scope(
        "global",
        "[[channel]]\nname = \"apps\"\nsource = \"http://o/apps/\"\n",
    )
    .await;
    m.publish().await.unwrap();
    let reply = edge.heartbeat(vec![]).await.unwrap();
    assert!(!reply.approved);
    assert_eq!(reply.desired_config_version, 0);
    let (s, e) = api_status(
        edge.client
            .get::<serde_json::Value>("/edge/v1/config")
            .await
            .unwrap_err(),
    );
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(e.contains("awaiting approval"), "{e}");
    let list: EdgeList = m.admin().get("/api/v1/edges").await.unwrap();
    assert_eq!(list.edges[0].state, EdgeState::Pending);
    let ready: outpost_protocol::Readiness = m
        .admin()
        .get("/api/v1/readiness?channel=apps")
        .await
        .unwrap();
    assert!(ready.sites.is_empty(), "a pending edge runs no channel");

    let _: serde_json::Value = m
        .admin()
        .send(Method::POST, "/api/v1/edges/lab/approve", &())
        .await
        .unwrap();
    let reply = edge.heartbeat(vec![]).await.unwrap();
    assert!(reply.approved);
    assert_eq!(reply.desired_config_version, 1);
    let config: outpost_protocol::DesiredConfig = edge.client.get("/edge/v1/config").await.unwrap();
    assert!(config.toml.contains("http://o/apps/"), "{}", config.toml);
}

#[tokio::test]
async fn a_long_poll_is_woken_by_a_publish_within_two_seconds() {
    let m = TestManager::start(false, Duration::from_secs(20)).await;
    let edge = m.enrol("oslo").await;
    let client = edge.client.clone();
    let poll = tokio::spawn(async move {
        let reply: HeartbeatReply = client
            .get("/edge/v1/wait?config_version=0&after_action=0")
            .await
            .unwrap();
        (reply, Instant::now())
    });
    // The poll must be waiting before the publish to prove the wake-up.
    eventually(Duration::from_secs(5), "the long poll to open", || async {
        (m.manager
            .stats
            .long_polls_open
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1)
            .then_some(())
    })
    .await;
    m.put_scope(
        "global",
        "[[channel]]\nname = \"apps\"\nsource = \"http://o/apps/\"\n",
    )
    .await;
    let published = Instant::now();
    m.publish().await.unwrap();
    let (reply, answered) = poll.await.unwrap();
    assert_eq!(reply.desired_config_version, 1);
    let latency = answered.duration_since(published);
    assert!(latency < Duration::from_secs(2), "{latency:?}");
}

#[tokio::test]
async fn a_long_poll_with_nothing_new_answers_at_the_heartbeat_interval() {
    let m = TestManager::start(false, Duration::from_millis(800)).await;
    let edge = m.enrol("oslo").await;
    let start = Instant::now();
    let reply: HeartbeatReply = edge
        .client
        .get("/edge/v1/wait?config_version=0&after_action=0")
        .await
        .unwrap();
    let waited = start.elapsed();
    assert_eq!(reply.desired_config_version, 0);
    assert!(waited >= Duration::from_millis(700), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

#[tokio::test]
async fn shutdown_answers_open_long_polls() {
    let mut m = TestManager::start(false, Duration::from_secs(20)).await;
    let edge = m.enrol("oslo").await;
    let client = edge.client.clone();
    let poll = tokio::spawn(async move {
        client
            .get::<HeartbeatReply>("/edge/v1/wait?config_version=0")
            .await
    });
    eventually(Duration::from_secs(5), "the long poll to open", || async {
        (m.manager
            .stats
            .long_polls_open
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1)
            .then_some(())
    })
    .await;
    let start = Instant::now();
    m.stop().await;
    let reply = poll.await.unwrap().unwrap();
    assert_eq!(reply.desired_config_version, 0);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_restarted_manager_loses_nothing() {
    let mut m = TestManager::start(false, Duration::from_secs(30)).await;
    let edge = m.enrol("oslo").await;
    m.put_scope(
        "global",
        "[[channel]]\nname = \"apps\"\nsource = \"http://o/apps/\"\n",
    )
    .await;
    m.publish().await.unwrap();
    let mut hb = Heartbeat {
        report: report(vec![channel("apps", 3, 3)]),
        config: AppliedConfig {
            applied_version: 1,
            rejected: None,
        },
        action_results: vec![],
    };
    hb.report.disk_used = 777;
    edge.heartbeat_with(hb).await.unwrap();
    let before: EdgeList = m.admin().get("/api/v1/edges").await.unwrap();
    let status: outpost_protocol::ActionStatus = m
        .admin()
        .call(Method::POST, "/api/v1/actions/sync?channel=apps", None)
        .await
        .unwrap();

    m.stop().await;
    let addr = m.url.trim_start_matches("http://").parse().unwrap();
    m.serve(Some(addr)).await;

    let after: EdgeList = m.admin().get("/api/v1/edges").await.unwrap();
    assert_eq!(before, after);
    assert_eq!(after.edges[0].disk_used, Some(777));
    assert_eq!(after.edges[0].config_version_applied, 1);
    let ready: outpost_protocol::Readiness = m
        .admin()
        .get("/api/v1/readiness?channel=apps")
        .await
        .unwrap();
    assert!(ready.ready, "{ready:?}");
    // The edge's credential still works, and the pending action survived.
    let reply = edge.heartbeat(vec![]).await.unwrap();
    assert_eq!(reply.desired_config_version, 1);
    assert_eq!(reply.actions.len(), 1);
    assert_eq!(reply.actions[0].id, status.id);
    let history: serde_json::Value = m.admin().get("/api/v1/config/history").await.unwrap();
    assert_eq!(history.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_action_reaches_its_sites_and_reports_per_site() {
    let m = TestManager::start(false, Duration::from_secs(20)).await;
    let a = m.enrol("a").await;
    let b = m.enrol("b").await;
    // The long poll of `a` wakes for the action.
    let client = a.client.clone();
    let poll = tokio::spawn(async move {
        client
            .get::<HeartbeatReply>("/edge/v1/wait?config_version=0&after_action=0")
            .await
            .unwrap()
    });
    eventually(Duration::from_secs(5), "the long poll to open", || async {
        (m.manager
            .stats
            .long_polls_open
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1)
            .then_some(())
    })
    .await;
    let status: ActionStatus = m
        .admin()
        .call(
            Method::POST,
            "/api/v1/actions/sync?channel=apps&scope=global",
            None,
        )
        .await
        .unwrap();
    assert_eq!(status.sites.len(), 2);
    assert!(status.sites.iter().all(|s| s.state == ActionState::Pending));
    let woke = tokio::time::timeout(Duration::from_secs(2), poll)
        .await
        .expect("the long poll answers within 2 s")
        .unwrap();
    assert_eq!(
        woke.actions[0].action,
        FleetAction::Sync {
            channel: "apps".into()
        }
    );

    for (edge, ok) in [(&a, true), (&b, false)] {
        let reply = edge.heartbeat(vec![]).await.unwrap();
        assert_eq!(reply.actions.len(), 1);
        let mut hb = Heartbeat {
            report: report(vec![]),
            config: AppliedConfig::default(),
            action_results: vec![ActionResult {
                id: status.id,
                ok,
                detail: if ok {
                    "run 7 finished: ok"
                } else {
                    "no such channel"
                }
                .into(),
            }],
        };
        let reply = edge.heartbeat_with(hb.clone()).await.unwrap();
        assert!(reply.actions.is_empty());
        // Sent again (the edge did not see the answer): harmless.
        hb.report.uptime_seconds += 1;
        edge.heartbeat_with(hb).await.unwrap();
    }
    let done: ActionStatus = m
        .admin()
        .get(&format!("/api/v1/actions/{}", status.id))
        .await
        .unwrap();
    assert_eq!(done.sites[0].state, ActionState::Done);
    assert_eq!(done.sites[0].detail.as_deref(), Some("run 7 finished: ok"));
    assert_eq!(done.sites[1].state, ActionState::Failed);

    let err = m
        .admin()
        .call::<ActionStatus>(Method::POST, "/api/v1/actions/purge?scope=site:a", None)
        .await
        .unwrap_err();
    assert_eq!(api_status(err).0, StatusCode::BAD_REQUEST);
    let one: ActionStatus = m
        .admin()
        .call(
            Method::POST,
            "/api/v1/actions/purge?scope=site:b&url=http://o/x.msi",
            None,
        )
        .await
        .unwrap();
    assert_eq!(one.sites.len(), 1);
    assert!(a.heartbeat(vec![]).await.unwrap().actions.is_empty());
    // A revoked edge will never report: its part fails, saying why.
    let _: serde_json::Value = m
        .admin()
        .send(Method::POST, "/api/v1/edges/b/revoke", &())
        .await
        .unwrap();
    let one: ActionStatus = m
        .admin()
        .get(&format!("/api/v1/actions/{}", one.id))
        .await
        .unwrap();
    assert_eq!(one.sites[0].state, ActionState::Failed);
    assert_eq!(one.sites[0].detail.as_deref(), Some("the edge was revoked"));
}

#[tokio::test]
async fn a_silent_edge_goes_stale_then_down() {
    let m = TestManager::start(false, Duration::from_secs(1)).await;
    let edge = m.enrol("oslo").await;
    edge.heartbeat(vec![]).await.unwrap();
    let state = || async {
        let list: EdgeList = m.admin().get("/api/v1/edges").await.unwrap();
        list.edges[0].state
    };
    assert_eq!(state().await, EdgeState::Up);
    // Down as the API shows it and as the state ticker recorded it (the
    // API computes the state at the call, the history at each tick).
    eventually(Duration::from_secs(10), "down", || async {
        let recorded = m.manager.state_history("oslo", 10).unwrap();
        (state().await == EdgeState::Down
            && recorded.first().map(|c| c.state) == Some(EdgeState::Down))
        .then_some(())
    })
    .await;
    edge.heartbeat(vec![]).await.unwrap();
    assert_eq!(state().await, EdgeState::Up);
    // The changes are kept for the site's page.
    let history = eventually(Duration::from_secs(10), "the history", || async {
        let h = m.manager.state_history("oslo", 10).unwrap();
        (h.first().map(|c| c.state) == Some(EdgeState::Up) && h.len() >= 3).then_some(h)
    })
    .await;
    let states: Vec<EdgeState> = history.iter().map(|c| c.state).collect();
    assert!(states.contains(&EdgeState::Down), "{states:?}");
}

#[tokio::test]
async fn the_api_wants_a_valid_token() {
    let m = TestManager::start(false, Duration::from_secs(30)).await;
    let anon = outpost_manager::http::client::Client::new(&m.url, None).unwrap();
    let (s, _) = api_status(anon.get::<EdgeList>("/api/v1/edges").await.unwrap_err());
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = api_status(
        anon.bearer("oat_nope")
            .get::<EdgeList>("/api/v1/edges")
            .await
            .unwrap_err(),
    );
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // An edge credential is not an admin token.
    let edge = m.enrol("x").await;
    let as_admin = outpost_manager::http::client::Client::new(&m.url, None)
        .unwrap()
        .bearer(&edge.reply.credential);
    assert!(as_admin.get::<EdgeList>("/api/v1/edges").await.is_err());
}

#[tokio::test]
async fn a_manager_outage_does_not_turn_edges_down() {
    let mut m = TestManager::start(false, Duration::from_secs(1)).await;
    let up = m.enrol("up").await;
    let gone = m.enrol("gone").await;
    up.heartbeat(vec![]).await.unwrap();
    gone.heartbeat(vec![]).await.unwrap();
    m.stop().await;
    // A long outage, as the database sees it: the last heartbeats are a
    // minute old, and `gone` was already down when the manager stopped.
    {
        let db = outpost_manager::db::Db::open(&m.data_dir(), false).unwrap();
        let conn = db.connection();
        conn.execute("UPDATE edges SET last_seen = last_seen - 60000", [])
            .unwrap();
        conn.execute("UPDATE edges SET state = 'down' WHERE site = 'gone'", [])
            .unwrap();
    }
    let addr = m.url.trim_start_matches("http://").parse().unwrap();
    m.serve(Some(addr)).await;
    let list: EdgeList = m.admin().get("/api/v1/edges").await.unwrap();
    let state = |site: &str| list.edges.iter().find(|e| e.site == site).unwrap().state;
    assert_eq!(state("gone"), EdgeState::Down);
    // One tick later `up` is still up: it has an interval to check in.
    m.manager.tick(outpost_manager::manager::unix_ms());
    assert_eq!(m.manager.edge("up").unwrap().state, EdgeState::Up);
    assert_eq!(m.manager.edge("gone").unwrap().state, EdgeState::Down);
    up.heartbeat(vec![]).await.unwrap();
    assert_eq!(m.manager.edge("up").unwrap().state, EdgeState::Up);
}

#[tokio::test]
async fn a_sites_history_keeps_config_and_sync_events() {
    let m = TestManager::start(false, Duration::from_secs(30)).await;
    let edge = m.enrol("oslo").await;
    let mut ch = channel("apps", 2, 2);
    ch.last_finished = Some(100);
    edge.heartbeat(vec![ch.clone()]).await.unwrap();
    ch.last_finished = Some(200);
    let hb = Heartbeat {
        report: report(vec![ch]),
        config: AppliedConfig {
            applied_version: 1,
            rejected: Some(outpost_protocol::ConfigRejection {
                version: 2,
                error: "site:oslo:3: unknown key".into(),
            }),
        },
        action_results: vec![],
    };
    edge.heartbeat_with(hb).await.unwrap();
    let events = eventually(Duration::from_secs(10), "the events", || async {
        let e = m.manager.site_events("oslo", 10).unwrap();
        (e.len() == 3).then_some(e)
    })
    .await;
    let details: Vec<&str> = events.iter().map(|e| e.detail.as_str()).collect();
    assert!(details.contains(&"applied version 1"), "{details:?}");
    assert!(
        details.contains(&"refused version 2: site:oslo:3: unknown key"),
        "{details:?}"
    );
    assert!(details.contains(&"apps: ok (2/2 files)"), "{details:?}");
}

#[tokio::test]
async fn a_sites_history_is_bounded_and_old_history_is_pruned() {
    let m = TestManager::start(false, Duration::from_secs(30)).await;
    m.enrol("oslo").await;
    let extra = outpost_manager::flush::EVENTS_PER_SITE + 40;
    let mut ch = channel("apps", 2, 2);
    for finished in 0..=extra {
        ch.last_finished = Some(1_000 + finished);
        ch.files_present = finished as u64;
        m.manager
            .heartbeat(
                "oslo",
                Heartbeat {
                    report: report(vec![ch.clone()]),
                    config: AppliedConfig::default(),
                    action_results: vec![],
                },
            )
            .unwrap();
        if finished % 100 == 0 {
            m.manager.flush().unwrap();
        }
    }
    m.manager.flush().unwrap();
    let kept = m.manager.site_events("oslo", 10_000).unwrap();
    assert_eq!(kept.len() as i64, outpost_manager::flush::EVENTS_PER_SITE);
    assert!(
        kept.iter()
            .any(|e| e.detail == format!("apps: ok ({extra}/2 files)")),
        "the newest event is kept: {:?}",
        &kept[..3]
    );
    assert!(!kept.iter().any(|e| e.detail == "apps: ok (1/2 files)"));

    // Ninety days on, the events are gone; the edge itself is not.
    let later = outpost_manager::manager::unix_ms() + 91 * 86_400 * 1000;
    assert!(m.manager.prune_history(later).unwrap() >= kept.len());
    assert!(m.manager.site_events("oslo", 10).unwrap().is_empty());
    assert!(m.manager.edge("oslo").is_ok());
}

#[tokio::test]
async fn an_unchanged_report_is_not_rewritten_at_every_flush_but_a_changed_one_is() {
    let mut m = TestManager::start(false, Duration::from_secs(30)).await;
    let edge = m.enrol("oslo").await;
    let beat = |disk_used: u64, present: u64| {
        let mut hb = Heartbeat {
            report: report(vec![channel("apps", 3, present)]),
            config: AppliedConfig::default(),
            action_results: vec![],
        };
        hb.report.disk_used = disk_used;
        hb
    };
    edge.heartbeat_with(beat(777, 3)).await.unwrap();
    m.manager.flush().unwrap();
    // Only a counter moved: the stored report stays (it is rewritten
    // within REPORT_WRITE_EVERY), what is shown live is the new one.
    edge.heartbeat_with(beat(888, 3)).await.unwrap();
    assert_eq!(m.manager.edge("oslo").unwrap().disk_used, Some(888));
    let addr = m.url.trim_start_matches("http://").parse().unwrap();
    m.stop().await;
    m.serve(Some(addr)).await;
    assert_eq!(m.manager.edge("oslo").unwrap().disk_used, Some(777));

    // A channel changed: written at the next flush.
    edge.heartbeat_with(beat(999, 2)).await.unwrap();
    m.stop().await;
    m.serve(Some(addr)).await;
    assert_eq!(m.manager.edge("oslo").unwrap().disk_used, Some(999));
}
