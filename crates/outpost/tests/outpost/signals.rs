//! The edge's life as a process: SIGKILL mid-fill and SIGTERM on the same
//! cache directory, SIGHUP and `outpost reload`, SIGUSR1 for logrotate,
//! and the packaged systemd unit.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use outpost_testkit::{Client, Origin, Resource, content, wait_until};

use crate::support::{EdgeProcess, admin_get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_fill_never_serves_a_wrong_byte_and_keeps_completed_objects() {
    let origin = Origin::start().await;
    let done = content(2 << 20, 1);
    let big = content(8 << 20, 2);
    origin.put("/done.msi", Resource::new(done.clone()));
    origin.put("/big.iso", Resource::new(big.clone()).rate(2 << 20));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.toml");
    std::fs::write(&config, "[fill]\ncheckpoint_every = \"1 MiB\"\n").unwrap();
    let cache = dir.path().join("cache");
    let args = ["--config", config.to_str().unwrap()];

    let edge = EdgeProcess::start(&cache, &origin, &args);
    let client = Client::new(edge.addr);
    assert!(client.get("/done.msi", &[]).await.unwrap().body == done);
    // Completed once a later request is a hit.
    let mut hit = false;
    for _ in 0..100 {
        if client
            .get("/done.msi", &[])
            .await
            .unwrap()
            .header("x-cache")
            == Some("HIT")
        {
            hit = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(hit, "completed object never became a hit");

    // Start the big fill and kill the edge in the middle of it.
    let (head, mut body) = client.send("GET", "/big.iso", &[]).await.unwrap();
    assert_eq!(head.status, 200);
    let mut received = Vec::new();
    use http_body_util::BodyExt;
    while received.len() < 3 << 20 {
        let frame = body
            .frame()
            .await
            .expect("body ended early")
            .expect("body error");
        received.extend_from_slice(&frame.into_data().unwrap());
    }
    edge.signal(rustix::process::Signal::KILL);
    // Whatever the client got before the kill is the origin's bytes.
    while let Some(Ok(frame)) = body.frame().await {
        received.extend_from_slice(&frame.into_data().unwrap_or_default());
    }
    assert!(received.len() < big.len());
    assert!(
        received[..] == big[..received.len()],
        "a client received a wrong byte before the kill"
    );
    drop(edge);

    let edge = EdgeProcess::start(&cache, &origin, &args);
    let client = Client::new(edge.addr);
    let before = origin.count("/done.msi");
    let reply = client.get("/done.msi", &[]).await.unwrap();
    assert_eq!(reply.header("x-cache"), Some("HIT"));
    assert!(reply.body == done);
    assert_eq!(
        origin.count("/done.msi"),
        before,
        "a completed object was fetched again after the crash"
    );

    let reply = client.get("/big.iso", &[]).await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.body_error.is_none());
    assert!(
        reply.body == big,
        "object resumed after a crash differs from the origin's"
    );
    let requests = origin.requests_for("/big.iso");
    let resumed = requests.last().unwrap();
    let range = resumed
        .range()
        .expect("the fill restarted from zero instead of resuming");
    let from: u64 = range
        .trim_start_matches("bytes=")
        .split('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        from >= 1 << 20,
        "resumed from {from}: checkpoints were lost"
    );
    assert_eq!(resumed.headers.get("if-range").unwrap(), "\"v1\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly() {
    let origin = Origin::start().await;
    origin.put("/x", Resource::new(content(1000, 3)));
    let dir = tempfile::tempdir().unwrap();
    let mut edge = EdgeProcess::start(&dir.path().join("cache"), &origin, &[]);
    assert_eq!(
        Client::new(edge.addr).get("/x", &[]).await.unwrap().status,
        200
    );
    edge.signal(rustix::process::Signal::TERM);
    let mut status = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            status = edge.child.try_wait().unwrap();
            status.is_some()
        })
        .await,
        "outpost did not stop on SIGTERM"
    );
    assert!(status.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_reload_apply_wan_and_channel_limits_and_name_the_rest() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.toml");
    let write = |prepos: &str, channel: &str, max_connections: u32| {
        std::fs::write(
            &config,
            format!(
                "[server]\nmax_connections = {max_connections}\n[wan]\nprepos_rate = \"{prepos}\"\n[[channel]]\nname = \"pkgs\"\nsource = \"{}\"\nrate = \"{channel}\"\n",
                origin.url("/pkgs/")
            ),
        )
        .unwrap();
    };
    write("unlimited", "40 Mbit/s", 1000);
    let edge = EdgeProcess::with_config(dir.path(), &origin, &config);
    let prepos_limit = || {
        let out = edge.cli(&["status", "--json"]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let wan = status["wan"].as_array().cloned().unwrap_or_default();
        let prepos = wan.iter().find(|c| c["class"] == "prepos").cloned();
        (
            prepos.and_then(|c| c["limit"].as_f64()),
            status["channels"][0]["rate"].as_str().map(str::to_string),
        )
    };
    assert_eq!(prepos_limit(), (None, Some("40.000 Mbit/s".into())));

    write("2 Mbit/s", "8 Mbit/s", 1000);
    edge.signal(rustix::process::Signal::HUP);
    assert!(
        wait_until(Duration::from_secs(10), || prepos_limit()
            == (Some(250_000.0), Some("8.000 Mbit/s".into())))
        .await,
        "SIGHUP applied the new limits: {:?}",
        prepos_limit()
    );

    write("2 Mbit/s", "8 Mbit/s", 2000);
    let out = edge.cli(&["reload"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("needs a restart: server limits and timeouts"),
        "{text}"
    );

    std::fs::write(&config, "[wan]\nprepos_rate = \"fast\"\n").unwrap();
    let out = edge.cli(&["reload"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid rate"));
    assert_eq!(
        prepos_limit().0,
        Some(250_000.0),
        "a bad file leaves the running configuration"
    );
    let health = admin_get(&edge.admin, "/healthz").await;
    assert_eq!(health, "ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_caching_rules_and_client_ranges_to_new_requests() {
    let origin = Origin::start().await;
    origin.put("/pkg/a.msi", Resource::new(content(10_000, 1)));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.toml");
    std::fs::write(
        &config,
        "[[override]]\npath = \"/pkg/*\"\nnever_cache = true\n",
    )
    .unwrap();
    let edge = EdgeProcess::with_config(dir.path(), &origin, &config);
    let client = Client::new(edge.addr);
    let x_cache = |r: &outpost_testkit::Reply| r.header("x-cache").map(str::to_string);
    let first = client.get("/pkg/a.msi", &[]).await.unwrap();
    assert_eq!(x_cache(&first).as_deref(), Some("PASS"));

    // The rule is dropped: the same URL is cached from the next request on.
    std::fs::write(&config, "").unwrap();
    let out = edge.cli(&["reload"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("[[override]]"), "{text}");
    assert!(!text.contains("needs a restart"), "{text}");
    assert_eq!(
        x_cache(&client.get("/pkg/a.msi", &[]).await.unwrap()).as_deref(),
        Some("MISS")
    );
    // Once its fill has completed, the copy is a hit (a request racing the
    // completion joins the fill instead; either way the origin is not asked).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut hit = false;
    while !hit && std::time::Instant::now() < deadline {
        hit = x_cache(&client.get("/pkg/a.msi", &[]).await.unwrap()).as_deref() == Some("HIT");
        if !hit {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert!(hit, "the copy stored after the reload is never a hit");

    // Loopback is no longer an allowed client: new connections get 403.
    std::fs::write(&config, "[server]\nallowed_clients = [\"10.0.0.0/8\"]\n").unwrap();
    let out = edge.cli(&["reload"]);
    assert!(out.status.success());
    let refused = Client::new(edge.addr).get("/pkg/a.msi", &[]).await.unwrap();
    assert_eq!(refused.status, 403);
    assert_eq!(origin.count("/pkg/a.msi"), 2);
}

/// The value of `key=` in a systemd unit file.
fn unit_value(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().to_string())
        .next_back()
}

fn contrib(name: &str) -> String {
    let path = format!("{}/../../contrib/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_packaged_unit_reloads_with_sighup_and_keeps_the_cache_private() {
    let unit = contrib("outpost.service");
    let reload = unit_value(&unit, "ExecReload").expect("ExecReload");
    let argv: Vec<&str> = reload.split_whitespace().collect();
    assert_eq!(argv, ["/bin/kill", "-HUP", "$MAINPID"], "{reload}");
    assert_eq!(
        unit_value(&unit, "CacheDirectoryMode").as_deref(),
        Some("0700")
    );
    // logrotate reopens the access log with SIGUSR1, to the main process.
    let rotate = contrib("outpost.logrotate");
    assert!(
        rotate.contains("--signal=USR1") && rotate.contains("--kill-whom=main"),
        "{rotate}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemctl_reload_as_packaged_applies_the_changed_config() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.toml");
    std::fs::write(&config, "[wan]\nprepos_rate = \"unlimited\"\n").unwrap();
    let edge = EdgeProcess::with_config(dir.path(), &origin, &config);
    let prepos_limit = || {
        let out = edge.cli(&["status", "--json"]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        status["wan"]
            .as_array()
            .and_then(|w| w.iter().find(|c| c["class"] == "prepos").cloned())
            .and_then(|c| c["limit"].as_f64())
    };
    assert_eq!(prepos_limit(), None);

    std::fs::write(&config, "[wan]\nprepos_rate = \"2 Mbit/s\"\n").unwrap();
    // What `systemctl reload outpost` runs: the unit's ExecReload, with
    // $MAINPID the edge's pid.
    let unit = contrib("outpost.service");
    let reload = unit_value(&unit, "ExecReload").expect("ExecReload");
    let pid = edge.child.id().to_string();
    let argv: Vec<String> = reload
        .split_whitespace()
        .map(|a| a.replace("$MAINPID", &pid))
        .collect();
    let status = Command::new(&argv[0]).args(&argv[1..]).status().unwrap();
    assert!(status.success(), "{reload}");
    assert!(
        wait_until(Duration::from_secs(10), || prepos_limit()
            == Some(250_000.0))
        .await,
        "the edge did not apply the new config after `{reload}`: {:?}",
        prepos_limit()
    );
    assert!(
        edge.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("SIGHUP")),
        "no reload in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_reopens_the_access_log_for_logrotate() {
    let origin = Origin::start().await;
    origin.put("/a", Resource::new(content(1000, 1)));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let edge = EdgeProcess::start(
        &dir.path().join("outpost-cache"),
        &origin,
        &["--access-log", log.to_str().unwrap()],
    );
    let client = Client::new(edge.addr);
    let lines = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!(client.get("/a", &[]).await.unwrap().status, 200);
    assert!(wait_until(Duration::from_secs(10), || lines(&log) == 1).await);
    // logrotate renames the file, then signals the edge.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    edge.signal(rustix::process::Signal::USR1);
    // The reopen is asynchronous: a request at a time (with a deadline)
    // until one is logged in a new file at the configured path.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lines(&log) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the access log was not reopened after SIGUSR1"
        );
        assert_eq!(client.get("/a", &[]).await.unwrap().status, 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(lines(&rotated) >= 1);
}
