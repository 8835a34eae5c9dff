//! The edge's side of the fleet, with real `outpost serve` processes and a
//! fake manager over HTTPS (`fake_manager`): enrolment pinned by
//! fingerprint, restarts without the join token, managed configs applied
//! or refused, revocation, a restart while the manager is down, actions.

use std::path::Path;
use std::time::{Duration, Instant};

use outpost_protocol::{EdgeStatus, FleetAction, ManagerLink};
use outpost_testkit::{Client, Origin, Resource, content};

use crate::fake_manager::{FakeManager, JOIN_TOKEN};
use crate::support::*;

const SITE: &str = "branch-1";

/// An edge in `dir/outpost-cache` (reverse proxy for `origin`) that reports
/// to `manager`, with the join token when `join` and the pin `pin`.
fn edge(dir: &Path, origin: &Origin, manager: &FakeManager, join: bool, pin: &str) -> EdgeProcess {
    let mut args = vec![
        "--manager",
        &manager.url,
        "--site",
        SITE,
        "--manager-fingerprint",
        pin,
    ];
    if join {
        args.extend(["--join-token", JOIN_TOKEN]);
    }
    let config = loopback_allowed_config(dir);
    args.extend(["--config", config.to_str().unwrap()]);
    EdgeProcess::start(&dir.join("outpost-cache"), origin, &args)
}

fn status(edge: &EdgeProcess) -> EdgeStatus {
    let out = edge.cli(&["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Polls the edge's status until `check` holds (up to `limit`).
async fn status_where(
    edge: &EdgeProcess,
    limit: Duration,
    check: impl Fn(&EdgeStatus) -> bool,
) -> EdgeStatus {
    let deadline = Instant::now() + limit;
    loop {
        let s = status(edge);
        if check(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "the edge's status never got there: {:?}\n{}",
            s.manager,
            edge.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn link(s: &EdgeStatus) -> Option<ManagerLink> {
    s.manager.as_ref().map(|m| m.state)
}

fn channel_config(origin: &Origin) -> String {
    format!(
        "[[channel]]\nname = \"apps\"\nsource = \"{}\"\n",
        origin.url("/apps/")
    )
}

fn publish_apps(origin: &Origin) {
    origin.put(
        "/apps/",
        Resource::new(bytes::Bytes::from_static(
            b"<a href=\"setup.msi\">setup.msi</a>",
        ))
        .no_cache_headers(),
    );
    origin.put(
        "/apps/setup.msi",
        Resource::new(content(200_000, 5)).no_cache_headers(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrols_with_the_pinned_fingerprint_and_refuses_a_wrong_one_with_a_clear_error() {
    let manager = FakeManager::start(200).await;
    let origin = Origin::start().await;

    let wrong_dir = tempfile::tempdir().unwrap();
    let wrong_pin = vec!["00"; 32].join(":");
    let impostor = edge(wrong_dir.path(), &origin, &manager, true, &wrong_pin);
    let s = status_where(&impostor, Duration::from_secs(20), |s| {
        s.manager.as_ref().is_some_and(|m| m.last_error.is_some())
    })
    .await;
    let m = s.manager.unwrap();
    assert_eq!(m.state, ManagerLink::Enrolling);
    let error = m.last_error.unwrap();
    assert!(
        error.contains(&format!(
            "has fingerprint {}, not the pinned one",
            manager.fingerprint
        )),
        "{error}"
    );
    assert!(impostor.logged("not the pinned"), "{}", impostor.stderr());
    assert_eq!(manager.enrolments(), 0);
    assert!(!wrong_dir.path().join("outpost-cache/manager.json").exists());

    let dir = tempfile::tempdir().unwrap();
    let edge = edge(dir.path(), &origin, &manager, true, &manager.fingerprint);
    let s = status_where(&edge, Duration::from_secs(20), |s| {
        link(s) == Some(ManagerLink::Enrolled) && s.manager.as_ref().unwrap().last_contact.is_some()
    })
    .await;
    assert_eq!(s.manager.as_ref().unwrap().site, SITE);
    assert_eq!(manager.enrolments(), 1);
    let beat = manager
        .heartbeat_where(Duration::from_secs(10), |_| true)
        .await
        .expect("a heartbeat");
    assert_eq!(beat.report.version, env!("CARGO_PKG_VERSION"));
    assert!(beat.report.disk_limit > 0);
    let stored = dir.path().join("outpost-cache/manager.json");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&stored).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = stdout(&edge.cli(&["status"]));
    assert!(
        text.contains(&format!("manager {} site {SITE}  enrolled", manager.url)),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_without_the_join_token_keeps_its_enrolment() {
    let manager = FakeManager::start(200).await;
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let first = edge(dir.path(), &origin, &manager, true, &manager.fingerprint);
    status_where(&first, Duration::from_secs(20), |s| {
        link(s) == Some(ManagerLink::Enrolled)
    })
    .await;
    drop(first);

    let again = edge(dir.path(), &origin, &manager, false, &manager.fingerprint);
    let before = manager.heartbeats();
    status_where(&again, Duration::from_secs(20), |s| {
        link(s) == Some(ManagerLink::Enrolled)
    })
    .await;
    manager
        .heartbeat_where(Duration::from_secs(10), |_| manager.heartbeats() > before)
        .await
        .expect("the restarted edge sends heartbeats");
    assert_eq!(manager.enrolments(), 1, "no second enrolment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_config_is_applied_and_an_invalid_one_is_refused_while_the_old_one_runs() {
    // Heartbeats every 30 s: only the long poll can bring the change in
    // time.
    let manager = FakeManager::start(30_000).await;
    let origin = Origin::start().await;
    publish_apps(&origin);
    let dir = tempfile::tempdir().unwrap();
    let edge = edge(dir.path(), &origin, &manager, true, &manager.fingerprint);
    status_where(&edge, Duration::from_secs(20), |s| {
        link(s) == Some(ManagerLink::Enrolled)
    })
    .await;

    let published = Instant::now();
    let v1 = manager.publish(&channel_config(&origin));
    let s = status_where(&edge, Duration::from_secs(10), |s| {
        s.manager.as_ref().is_some_and(|m| m.applied_version == v1)
    })
    .await;
    let applied_in = published.elapsed();
    assert!(
        applied_in < Duration::from_secs(5),
        "applied after {applied_in:?}"
    );
    assert_eq!(s.channels.len(), 1, "{:?}", s.channels);
    assert_eq!(s.channels[0].name, "apps");
    let managed = std::fs::read_to_string(dir.path().join("outpost-cache/managed.toml")).unwrap();
    assert!(managed.contains("name = \"apps\""), "{managed}");
    // A new channel syncs at once.
    status_where(&edge, Duration::from_secs(20), |s| {
        s.channels.first().is_some_and(|c| c.files_present == 1)
    })
    .await;
    let beat = manager
        .heartbeat_where(Duration::from_secs(10), |b| b.config.applied_version == v1)
        .await
        .expect("the next heartbeat reports the applied version");
    assert_eq!(beat.config.rejected, None);

    let v2 = manager.publish(&format!("{}rate = \"fast\"\n", channel_config(&origin)));
    let beat = manager
        .heartbeat_where(Duration::from_secs(10), |b| b.config.rejected.is_some())
        .await
        .expect("the rejection is reported");
    assert_eq!(beat.config.applied_version, v1);
    let rejection = beat.config.rejected.unwrap();
    assert_eq!(rejection.version, v2);
    assert!(
        rejection.error.starts_with("managed config version 2:4:")
            && rejection.error.contains("rate"),
        "{}",
        rejection.error
    );
    let s = status(&edge);
    let m = s.manager.unwrap();
    assert_eq!(m.applied_version, v1);
    assert!(m.last_error.unwrap().contains("config version 2 rejected"));
    assert_eq!(s.channels[0].name, "apps", "the old config still runs");
    let managed_now =
        std::fs::read_to_string(dir.path().join("outpost-cache/managed.toml")).unwrap();
    assert_eq!(managed_now, managed, "the refused config was not written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_edge_says_so_and_stops_heartbeating() {
    let manager = FakeManager::start(100).await;
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let edge = edge(dir.path(), &origin, &manager, true, &manager.fingerprint);
    status_where(&edge, Duration::from_secs(20), |s| {
        link(s) == Some(ManagerLink::Enrolled)
    })
    .await;
    manager.revoke(SITE);
    let s = status_where(&edge, Duration::from_secs(10), |s| {
        link(s) == Some(ManagerLink::Revoked)
    })
    .await;
    assert!(
        s.manager.unwrap().last_error.unwrap().contains("revoked"),
        "the reason is shown"
    );
    assert!(edge.logged("revoked this edge"), "{}", edge.stderr());
    let text = stdout(&edge.cli(&["status"]));
    assert!(text.contains("revoked"), "{text}");
    // Ten intervals later it has not asked again.
    let asked = manager.heartbeats();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(manager.heartbeats(), asked);
    // It still serves.
    origin.put("/x", Resource::new(content(1000, 1)));
    let reply = Client::new(edge.addr).get("/x", &[]).await.unwrap();
    assert_eq!(reply.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_restarted_while_the_manager_is_down_runs_its_last_managed_config() {
    let manager = FakeManager::start(200).await;
    let origin = Origin::start().await;
    publish_apps(&origin);
    let dir = tempfile::tempdir().unwrap();
    let first = edge(dir.path(), &origin, &manager, true, &manager.fingerprint);
    status_where(&first, Duration::from_secs(20), |s| {
        link(s) == Some(ManagerLink::Enrolled)
    })
    .await;
    let version = manager.publish(&format!(
        "{}[[override]]\npath = \"/never/*\"\nnever_cache = true\n",
        channel_config(&origin)
    ));
    status_where(&first, Duration::from_secs(10), |s| {
        s.manager
            .as_ref()
            .is_some_and(|m| m.applied_version == version)
    })
    .await;
    manager.stop();
    drop(first);

    let edge = edge(dir.path(), &origin, &manager, false, &manager.fingerprint);
    let s = status_where(&edge, Duration::from_secs(20), |s| {
        link(s) == Some(ManagerLink::Unreachable)
    })
    .await;
    let m = s.manager.unwrap();
    assert_eq!(m.applied_version, version);
    assert!(m.last_error.unwrap().contains("manager unreachable"));
    assert_eq!(s.channels.len(), 1);
    assert_eq!(s.channels[0].name, "apps");
    assert!(
        edge.logged("fleet manager unreachable"),
        "{}",
        edge.stderr()
    );
    // The managed override still decides: never cached.
    origin.put("/never/a.bin", Resource::new(content(1000, 2)));
    let client = Client::new(edge.addr);
    for _ in 0..2 {
        let reply = client.get("/never/a.bin", &[]).await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-cache"), Some("PASS"));
    }
    assert_eq!(origin.count("/never/a.bin"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_action_runs_and_its_result_comes_back() {
    let manager = FakeManager::start(200).await;
    let origin = Origin::start().await;
    publish_apps(&origin);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.toml");
    std::fs::write(&config, channel_config(&origin)).unwrap();
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--manager",
        &manager.url,
        "--site",
        SITE,
        "--join-token",
        JOIN_TOKEN,
        "--manager-fingerprint",
        &manager.fingerprint,
    ];
    let edge = EdgeProcess::start(&dir.path().join("outpost-cache"), &origin, &args);
    status_where(&edge, Duration::from_secs(20), |s| {
        link(s) == Some(ManagerLink::Enrolled)
    })
    .await;
    let id = manager.order(FleetAction::Sync {
        channel: "apps".into(),
    });
    let unknown = manager.order(FleetAction::Sync {
        channel: "nope".into(),
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while (manager.result(id).is_none() || manager.result(unknown).is_none())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let result = manager.result(id).expect("the sync's result");
    assert!(result.ok, "{result:?}");
    assert_eq!(result.detail, "run 1 finished: ok");
    let failed = manager
        .result(unknown)
        .expect("the unknown channel's result");
    assert!(
        !failed.ok && failed.detail.contains("no channel named \"nope\""),
        "{failed:?}"
    );
    let beat = manager
        .heartbeat_where(Duration::from_secs(10), |b| {
            b.report
                .channels
                .first()
                .is_some_and(|c| c.files_present == 1)
        })
        .await
        .expect("the report shows the synced file");
    let apps = &beat.report.channels[0];
    assert_eq!(
        (apps.name.as_str(), apps.files_total, apps.bytes_present),
        ("apps", 1, 200_000)
    );
    assert!(apps.missing.is_empty());
}

/// `outpost manager init` + `serve` (heartbeat 1 s) in `data`: the
/// process, its URL and what init printed.
fn real_manager(data: &Path) -> (Serve, String, outpost_protocol::ManagerInit) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["manager", "init", "--json", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let made: outpost_protocol::ManagerInit = serde_json::from_slice(&out.stdout).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_outpost"));
    cmd.args(["manager", "serve", "--data-dir"])
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--heartbeat", "1s"]);
    let serve = Serve::run(cmd);
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let found = serve.log.lock().unwrap().iter().find_map(|l| {
            let rest = l.split("manager listening").nth(1)?;
            rest.split("addr=")
                .nth(1)?
                .split_whitespace()
                .next()
                .map(str::to_string)
        });
        if let Some(addr) = found {
            break addr;
        }
        assert!(Instant::now() < deadline, "{}", serve.stderr());
        std::thread::sleep(Duration::from_millis(20));
    };
    (serve, format!("https://{addr}"), made)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_the_real_manager_a_published_channel_becomes_ready() {
    let dir = tempfile::tempdir().unwrap();
    let (_manager, url, made) = real_manager(&dir.path().join("manager"));
    let origin = Origin::start().await;
    publish_apps(&origin);
    let edge = EdgeProcess::start(
        &dir.path().join("outpost-cache"),
        &origin,
        &[
            "--manager",
            &url,
            "--site",
            "oslo",
            "--join-token",
            &made.join_token,
            "--manager-fingerprint",
            &made.fingerprint,
            "--config",
            loopback_allowed_config(dir.path()).to_str().unwrap(),
        ],
    );
    status_where(&edge, Duration::from_secs(20), |s| {
        link(s) == Some(ManagerLink::Enrolled)
    })
    .await;

    let admin = outpost_manager::http::client::Client::new(&url, Some(&made.fingerprint))
        .unwrap()
        .bearer(&made.admin_token);
    let _: serde_json::Value = admin
        .send(
            http::Method::PUT,
            "/api/v1/channels/apps?scope=global",
            &serde_json::json!({ "source": origin.url("/apps/") }),
        )
        .await
        .unwrap();
    let _: serde_json::Value = admin
        .call(http::Method::POST, "/api/v1/config/publish", None)
        .await
        .unwrap();

    let fleet_ready = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(["fleet", "ready", "apps", "--manager", &url])
            .args([
                "--token",
                &made.admin_token,
                "--fingerprint",
                &made.fingerprint,
            ])
            .env_remove("OUTPOST_MANAGER")
            .env_remove("OUTPOST_MANAGER_TOKEN")
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        let out = fleet_ready();
        if out.status.code() == Some(0) {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "never ready: {} {}\nedge: {}",
            stdout(&out),
            stderr(&out),
            edge.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(stdout(&ready).contains("oslo"), "{}", stdout(&ready));
    let s = status(&edge);
    assert!(s.manager.unwrap().applied_version >= 1);
    assert_eq!(s.channels[0].name, "apps");
    assert_eq!(s.channels[0].files_present, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_edge_takes_no_config_until_approved() {
    let manager = FakeManager::start(200).await;
    manager.approve(false);
    let origin = Origin::start().await;
    publish_apps(&origin);
    let version = manager.publish(&channel_config(&origin));
    let dir = tempfile::tempdir().unwrap();
    let edge = edge(dir.path(), &origin, &manager, true, &manager.fingerprint);
    status_where(&edge, Duration::from_secs(20), |s| {
        link(s) == Some(ManagerLink::Pending)
    })
    .await;
    assert!(
        edge.logged("waiting for an admin to approve"),
        "{}",
        edge.stderr()
    );
    // Heartbeats go on; the published config is not taken.
    let seen = manager.heartbeats();
    manager
        .heartbeat_where(Duration::from_secs(10), |_| {
            manager.heartbeats() >= seen + 3
        })
        .await
        .expect("a pending edge sends heartbeats");
    let s = status(&edge);
    assert_eq!(s.manager.unwrap().applied_version, 0);
    assert!(s.channels.is_empty());
    assert!(!dir.path().join("outpost-cache/managed.toml").exists());

    manager.approve(true);
    let s = status_where(&edge, Duration::from_secs(10), |s| {
        s.manager
            .as_ref()
            .is_some_and(|m| m.applied_version == version)
    })
    .await;
    assert_eq!(link(&s), Some(ManagerLink::Enrolled));
    assert_eq!(s.channels[0].name, "apps");
}
