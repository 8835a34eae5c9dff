//! The fleet as an admin runs it: one `outpost manager serve` and three
//! `outpost serve` edges, each with its own cache directory and origin, all
//! real processes over pinned HTTPS. The story of issue 13's tests in one
//! run: enrol, publish a channel to a group, readiness complete everywhere,
//! a changed file syncing then complete, a killed edge down and back up, a
//! refused config, a revoked edge, manager and edge restarts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use outpost_manager::http::client::{Client, ClientError};
use outpost_protocol::{EdgeList, EdgeState, ManagerInit, Readiness, ReadinessState};
use outpost_testkit::{Origin, Resource};

use crate::support::*;

const SITES: [&str; 3] = ["oslo", "bergen", "tromso"];
const HEARTBEAT: Duration = Duration::from_secs(1);

/// `outpost manager serve` on `listen`, and the address it listens on.
fn serve_manager(data: &Path, listen: &str) -> (Serve, SocketAddr) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_outpost"));
    cmd.args(["manager", "serve", "--data-dir"])
        .arg(data)
        .args(["--listen", listen, "--heartbeat", "1s"]);
    let serve = Serve::run(cmd);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = serve.log.lock().unwrap().iter().find_map(|l| {
            let rest = l.split("manager listening").nth(1)?;
            rest.split("addr=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        });
        if let Some(addr) = found {
            return (serve, addr);
        }
        assert!(Instant::now() < deadline, "{}", serve.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Fleet {
    url: String,
    made: ManagerInit,
    admin: Client,
    package_origin: Origin,
    /// Each site's own origin (the edges are reverse proxies for them).
    site_origins: Vec<Origin>,
    dir: PathBuf,
}

impl Fleet {
    fn edge_args(&self, join: bool, site: &str, config: &Path) -> Vec<String> {
        let mut args = vec![
            "--manager".to_string(),
            self.url.clone(),
            "--site".into(),
            site.into(),
            "--manager-fingerprint".into(),
            self.made.fingerprint.clone(),
            "--config".into(),
            config.to_str().unwrap().into(),
        ];
        if join {
            args.extend(["--join-token".into(), self.made.join_token.clone()]);
        }
        args
    }

    fn start_edge(&self, i: usize, join: bool) -> EdgeProcess {
        let site_dir = self.dir.join(SITES[i]);
        std::fs::create_dir_all(&site_dir).unwrap();
        let args = self.edge_args(join, SITES[i], &loopback_allowed_config(&site_dir));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let cache = site_dir.join("outpost-cache");
        EdgeProcess::start(&cache, &self.site_origins[i], &args)
    }

    async fn edges(&self) -> EdgeList {
        self.admin.get("/api/v1/edges").await.unwrap()
    }

    async fn state_of(&self, site: &str) -> Option<EdgeState> {
        let list = self.edges().await;
        list.edges.iter().find(|e| e.site == site).map(|e| e.state)
    }

    /// Polls the edge list until `site` is in `state`; how long it took.
    async fn wait_state(&self, site: &str, state: EdgeState, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let now = self.state_of(site).await;
            if now == Some(state) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "{site} is {now:?}, not {state} after {limit:?}: {:?}",
                self.edges().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn readiness(&self) -> Readiness {
        self.admin
            .get("/api/v1/readiness?channel=apps")
            .await
            .unwrap()
    }

    /// Polls readiness until `check` holds for it.
    async fn wait_readiness(&self, what: &str, check: impl Fn(&Readiness) -> bool) -> Readiness {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.readiness().await;
            if check(&r) {
                return r;
            }
            assert!(Instant::now() < deadline, "never {what}: {r:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One sample of the manager's own counters from `/metrics` (the
    /// admin client opens one connection for it).
    async fn manager_metric(&self, name: &str) -> i64 {
        let (status, body) = self
            .admin
            .request(http::Method::GET, "/metrics", None)
            .await
            .unwrap();
        assert!(status.is_success(), "{status}");
        let text = String::from_utf8_lossy(&body);
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    }

    async fn publish(&self) -> Result<serde_json::Value, ClientError> {
        self.admin
            .send(
                http::Method::POST,
                "/api/v1/config/publish",
                &serde_json::json!({ "comment": "fleet test" }),
            )
            .await
    }
}

fn package(body: &'static [u8], etag: &str) -> Resource {
    Resource::new(Bytes::from_static(body)).etag(etag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_and_three_edges_through_a_rollout() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("manager");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["manager", "init", "--json", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let made: ManagerInit = serde_json::from_slice(&out.stdout).unwrap();
    let (manager, addr) = serve_manager(&data, "127.0.0.1:0");
    let url = format!("https://{addr}");
    let admin = Client::new(&url, Some(&made.fingerprint))
        .unwrap()
        .bearer(&made.admin_token);

    let package_origin = Origin::start().await;
    package_origin.put(
        "/apps/",
        Resource::new(Bytes::from_static(
            b"<a href=\"setup.msi\">setup.msi</a> <a href=\"tool.exe\">tool.exe</a>",
        ))
        .no_cache_headers(),
    );
    package_origin.put("/apps/setup.msi", package(b"setup version 1", "\"s1\""));
    package_origin.put("/apps/tool.exe", package(b"tool version 1", "\"t1\""));
    let mut site_origins = Vec::new();
    for _ in SITES {
        site_origins.push(Origin::start().await);
    }
    let fleet = Fleet {
        url,
        made,
        admin,
        package_origin,
        site_origins,
        dir: dir.path().to_path_buf(),
    };

    // Enrol: every edge joins with the join token and shows up.
    let mut edges: Vec<Option<EdgeProcess>> =
        (0..3).map(|i| Some(fleet.start_edge(i, true))).collect();
    for site in SITES {
        fleet
            .wait_state(site, EdgeState::Up, Duration::from_secs(20))
            .await;
    }

    // Publish a channel to a group holding the three sites.
    let _: serde_json::Value = fleet
        .admin
        .send(
            http::Method::PUT,
            "/api/v1/groups/north",
            &serde_json::json!({ "priority": 10 }),
        )
        .await
        .unwrap();
    for site in SITES {
        let _: serde_json::Value = fleet
            .admin
            .send(
                http::Method::PUT,
                &format!("/api/v1/edges/{site}/groups"),
                &serde_json::json!({ "groups": ["north"] }),
            )
            .await
            .unwrap();
    }
    let _: serde_json::Value = fleet
        .admin
        .send(
            http::Method::PUT,
            "/api/v1/channels/apps?scope=group:north",
            &serde_json::json!({ "source": fleet.package_origin.url("/apps/") }),
        )
        .await
        .unwrap();
    fleet.publish().await.unwrap();
    let ready = fleet
        .wait_readiness("complete everywhere", |r| r.ready)
        .await;
    assert_eq!(ready.sites.len(), 3, "{ready:?}");
    for site in &ready.sites {
        assert_eq!(site.state, ReadinessState::Complete, "{ready:?}");
        assert_eq!((site.files_present, site.files_total), (2, 2), "{ready:?}");
    }
    // Each site brought the package over the WAN once.
    assert_eq!(fleet.package_origin.count("/apps/setup.msi"), 3);

    // Each edge keeps one session (an upgraded connection) for its long
    // poll, heartbeats and fetches: heartbeats go on, and no edge connects
    // again (only the admin client's own requests, one connection each,
    // are accepted).
    let deadline = Instant::now() + Duration::from_secs(10);
    while fleet.manager_metric("outpost_manager_sessions_open").await != 3 {
        assert!(
            Instant::now() < deadline,
            "edges are not on one session each"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let accepted_before = fleet
        .manager_metric("outpost_manager_connections_accepted_total")
        .await;
    let heartbeats_before = fleet
        .manager_metric("outpost_manager_heartbeats_total")
        .await;
    let mut admin_requests = 2;
    loop {
        admin_requests += 1;
        let heartbeats = fleet
            .manager_metric("outpost_manager_heartbeats_total")
            .await;
        if heartbeats >= heartbeats_before + 9 {
            break;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(10),
            "heartbeats stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let accepted = fleet
        .manager_metric("outpost_manager_connections_accepted_total")
        .await;
    assert_eq!(
        accepted - accepted_before,
        admin_requests,
        "edges opened new connections"
    );
    assert_eq!(
        fleet.manager_metric("outpost_manager_sessions_open").await,
        3
    );

    // A changed file, slow on the WAN: the sync the manager orders shows
    // as syncing at the sites, then complete again.
    fleet.package_origin.put(
        "/apps/setup.msi",
        Resource::new(Bytes::from(vec![b'2'; 600 * 1024]))
            .etag("\"s2\"")
            .rate(150 * 1024),
    );
    let _: serde_json::Value = fleet
        .admin
        .call(
            http::Method::POST,
            "/api/v1/actions/sync?channel=apps&scope=group:north",
            None,
        )
        .await
        .unwrap();
    fleet
        .wait_readiness("syncing", |r| {
            !r.ready && r.sites.iter().any(|s| s.state == ReadinessState::Syncing)
        })
        .await;
    fleet
        .wait_readiness("complete again", |r| {
            r.ready && r.sites.iter().all(|s| s.bytes_present >= 600 * 1024)
        })
        .await;

    // A config that check-config refuses is refused at publish, with its
    // message, and the published version does not move.
    let before: serde_json::Value = fleet.admin.get("/api/v1/config/history").await.unwrap();
    let bad =
        "[[channel]]\nname = \"extra\"\nsource = \"http://files.example/x/\"\nrate = \"fast\"\n";
    let (status, _) = fleet
        .admin
        .request(
            http::Method::PUT,
            "/api/v1/scopes/global",
            Some(Bytes::from_static(bad.as_bytes())),
        )
        .await
        .unwrap();
    assert!(status.is_success(), "{status}");
    match fleet.publish().await {
        Err(ClientError::Api { status, error }) => {
            assert_eq!(status, http::StatusCode::UNPROCESSABLE_ENTITY);
            assert!(error.contains("invalid rate \"fast\""), "{error}");
        }
        other => panic!("a bad config was published: {other:?}"),
    }
    let after: serde_json::Value = fleet.admin.get("/api/v1/config/history").await.unwrap();
    assert_eq!(before, after);
    let (status, _) = fleet
        .admin
        .request(
            http::Method::PUT,
            "/api/v1/scopes/global",
            Some(Bytes::new()),
        )
        .await
        .unwrap();
    assert!(status.is_success(), "{status}");

    // A killed edge is down within two missed heartbeats, up after restart
    // (without the join token: its credential is in its state dir).
    drop(edges[2].take());
    let down = fleet
        .wait_state("tromso", EdgeState::Down, Duration::from_secs(10))
        .await;
    eprintln!("tromso shown down {down:?} after it was killed");
    assert!(
        down <= HEARTBEAT * 4,
        "down after {down:?}, heartbeat {HEARTBEAT:?}"
    );
    edges[2] = Some(fleet.start_edge(2, false));
    fleet
        .wait_state("tromso", EdgeState::Up, Duration::from_secs(20))
        .await;

    // A revoked edge is refused and says so.
    let _: serde_json::Value = fleet
        .admin
        .call(http::Method::POST, "/api/v1/edges/bergen/revoke", None)
        .await
        .unwrap();
    let bergen = edges[1].as_ref().unwrap();
    assert!(
        bergen.logged("revoked"),
        "the revoked edge did not say so:\n{}",
        bergen.stderr()
    );
    assert_eq!(fleet.state_of("bergen").await, Some(EdgeState::Revoked));

    // A manager restart loses nothing: same edges, groups and version.
    let edges_before = fleet.edges().await;
    let history_before: serde_json::Value =
        fleet.admin.get("/api/v1/config/history").await.unwrap();
    manager.signal(rustix::process::Signal::TERM);
    let mut manager = manager;
    assert!(
        manager.exits_within(Duration::from_secs(10)).is_some(),
        "the manager did not stop on SIGTERM"
    );

    // While it is down, an edge restarts and runs its last managed config.
    drop(edges[0].take());
    let oslo = fleet.start_edge(0, false);
    let status = oslo.cli(&["status", "--json"]);
    let status: outpost_protocol::EdgeStatus = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        status.channels.iter().any(|c| c.name == "apps"),
        "the restarted edge lost its managed channel: {:?}",
        status.channels
    );
    edges[0] = Some(oslo);

    let (_manager, again) = serve_manager(&data, &addr.to_string());
    assert_eq!(again, addr);
    let edges_after = fleet.edges().await;
    let history_after: serde_json::Value = fleet.admin.get("/api/v1/config/history").await.unwrap();
    assert_eq!(history_before, history_after);
    let summary = |l: &EdgeList| {
        let mut v: Vec<_> = l
            .edges
            .iter()
            .map(|e| (e.site.clone(), e.groups.clone(), e.config_version_applied))
            .collect();
        v.sort();
        v
    };
    assert_eq!(summary(&edges_before), summary(&edges_after));
    assert_eq!(fleet.state_of("bergen").await, Some(EdgeState::Revoked));
    for site in ["oslo", "tromso"] {
        fleet
            .wait_state(site, EdgeState::Up, Duration::from_secs(20))
            .await;
    }
    let r = fleet
        .wait_readiness("complete after the restarts", |r| {
            r.sites
                .iter()
                .filter(|s| s.site != "bergen")
                .all(|s| s.state == ReadinessState::Complete)
        })
        .await;
    assert!(r.sites.iter().any(|s| s.site == "oslo"), "{r:?}");
}
