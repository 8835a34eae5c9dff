//! `outpost manager init|serve|token` and `outpost fleet ...` as a user
//! runs them: a real manager process over HTTPS pinned by fingerprint, an
//! edge spoken by the test with the protocol client.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use http::Method;
use outpost_manager::http::client::Client;
use outpost_protocol::{
    ActionResult, AppliedConfig, ChannelReport, EdgeList, EdgeReport, EnrolReply, EnrolRequest,
    Heartbeat, HeartbeatReply, ManagerInit, SyncResult,
};

use crate::support::{Serve, stderr, stdout};

fn outpost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("OUTPOST_MANAGER")
        .env_remove("OUTPOST_MANAGER_TOKEN")
        .output()
        .unwrap()
}

fn init(dir: &Path) -> ManagerInit {
    let out = outpost(&[
        "manager",
        "init",
        "--data-dir",
        dir.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn serve(dir: &Path, extra: &[&str]) -> (Serve, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_outpost"));
    cmd.args(["manager", "serve", "--data-dir"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--heartbeat", "1s"])
        .args(extra);
    let serve = Serve::run(cmd);
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let found = serve.log.lock().unwrap().iter().find_map(|l| {
            l.contains("manager listening")
                .then(|| {
                    l.split("addr=")
                        .nth(1)?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
                .flatten()
        });
        if let Some(addr) = found {
            break addr;
        }
        assert!(
            Instant::now() < deadline,
            "no listening line:\n{}",
            serve.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    (serve, addr)
}

fn channel(total: u64, present: u64) -> ChannelReport {
    ChannelReport {
        name: "apps".into(),
        syncing: present < total,
        files_total: total,
        files_present: present,
        files_syncing: total - present,
        files_failed: 0,
        files_quarantined: 0,
        bytes_total: total,
        bytes_present: present,
        last_result: Some(SyncResult::Ok),
        last_finished: None,
        missing: vec![],
        missing_truncated: false,
        problems: vec![],
    }
}

fn heartbeat(channels: Vec<ChannelReport>, results: Vec<ActionResult>) -> Heartbeat {
    Heartbeat {
        report: EdgeReport {
            version: "0.1.0".into(),
            uptime_seconds: 1,
            disk_used: 1,
            disk_limit: 10,
            hit_ratio_bytes: 0.0,
            wan_bytes_in: 0,
            lan_bytes_out: 0,
            bytes_saved: 0,
            active_fills: 0,
            channels,
        },
        config: AppliedConfig::default(),
        action_results: results,
    }
}

#[test]
fn init_refuses_an_existing_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("m");
    let made = init(&data);
    assert_eq!(made.fingerprint.len(), 95);
    let out = outpost(&["manager", "init", "--data-dir", data.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already holds a manager"),
        "{}",
        stderr(&out)
    );
    use std::os::unix::fs::PermissionsExt;
    for file in ["manager.db", "tls/key.pem"] {
        let mode = std::fs::metadata(data.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{file} is readable by others");
    }
    // The human form prints the join command with the fingerprint.
    let other = dir.path().join("n");
    let out = outpost(&["manager", "init", "--data-dir", other.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(
        text.contains("--join-token ojt_") && text.contains("--manager-fingerprint "),
        "{text}"
    );
}

#[test]
fn fleet_commands_gate_on_readiness_and_follow_a_sync() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("m");
    let made = init(&data);
    let (mut server, addr) = serve(&data, &[]);
    let url = format!("https://{addr}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let pinned = || Client::new(&url, Some(&made.fingerprint)).unwrap();
    let admin = pinned().bearer(&made.admin_token);

    let reply: EnrolReply = runtime
        .block_on(pinned().fleet_protocol().send(
            Method::POST,
            "/edge/v1/enrol",
            &EnrolRequest {
                join_token: made.join_token.clone(),
                site: "oslo".into(),
                version: "0.1.0".into(),
                hostname: "h".into(),
            },
        ))
        .unwrap();
    let edge = pinned().fleet_protocol().bearer(&reply.credential);
    let _: serde_json::Value = runtime
        .block_on(admin.send(
            Method::PUT,
            "/api/v1/channels/apps?scope=global",
            &serde_json::json!({"source": "http://origin.example/apps/"}),
        ))
        .unwrap();
    let _: serde_json::Value = runtime
        .block_on(admin.call(Method::POST, "/api/v1/config/publish", None))
        .unwrap();

    let base = [
        "--manager",
        url.as_str(),
        "--token",
        made.admin_token.as_str(),
        "--fingerprint",
        made.fingerprint.as_str(),
    ];
    let fleet = |args: &[&str]| {
        let mut all: Vec<&str> = vec!["fleet"];
        all.extend_from_slice(args);
        all.extend_from_slice(&base);
        outpost(&all)
    };
    let _: HeartbeatReply = runtime
        .block_on(edge.send(
            Method::POST,
            "/edge/v1/heartbeat",
            &heartbeat(vec![channel(2, 1)], vec![]),
        ))
        .unwrap();
    let out = fleet(&["ready", "apps"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("oslo") && stdout(&out).contains("syncing"),
        "{}",
        stdout(&out)
    );
    let _: HeartbeatReply = runtime
        .block_on(edge.send(
            Method::POST,
            "/edge/v1/heartbeat",
            &heartbeat(vec![channel(2, 2)], vec![]),
        ))
        .unwrap();
    let out = fleet(&["ready", "apps"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = fleet(&["ls", "--json"]);
    let list: EdgeList = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.edges[0].site, "oslo");

    // A wrong fingerprint is an error (exit 2), not "not ready".
    let wrong = "00:".repeat(31) + "00";
    let out = outpost(&[
        "fleet",
        "ready",
        "apps",
        "--manager",
        &url,
        "--token",
        &made.admin_token,
        "--fingerprint",
        &wrong,
    ]);
    assert_eq!(out.status.code(), Some(2));

    // `fleet sync --wait` returns when the edge reports.
    let sync = std::thread::spawn({
        let base: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        move || {
            let mut args = vec![
                "fleet".to_string(),
                "sync".into(),
                "apps".into(),
                "--wait".into(),
                "--timeout".into(),
                "30s".into(),
            ];
            args.extend(base);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            outpost(&args)
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let order = loop {
        let reply: HeartbeatReply = runtime
            .block_on(edge.send(
                Method::POST,
                "/edge/v1/heartbeat",
                &heartbeat(vec![channel(2, 2)], vec![]),
            ))
            .unwrap();
        if let Some(order) = reply.actions.first() {
            break order.clone();
        }
        assert!(Instant::now() < deadline, "no action reached the edge");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _: HeartbeatReply = runtime
        .block_on(edge.send(
            Method::POST,
            "/edge/v1/heartbeat",
            &heartbeat(
                vec![channel(2, 2)],
                vec![ActionResult {
                    id: order.id,
                    ok: true,
                    detail: "run 3 finished: ok".into(),
                }],
            ),
        ))
        .unwrap();
    let out = sync.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("run 3 finished: ok"),
        "{}",
        stdout(&out)
    );

    // A new API token from the data dir works at once; revoked, it stops.
    let out = outpost(&[
        "manager",
        "token",
        "create",
        "--data-dir",
        data.to_str().unwrap(),
        "--label",
        "ci",
    ]);
    let token = stdout(&out).trim().to_string();
    assert!(token.starts_with("oat_"), "{token}");
    let out = outpost(&[
        "fleet",
        "ls",
        "--manager",
        &url,
        "--token",
        &token,
        "--fingerprint",
        &made.fingerprint,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = outpost(&[
        "manager",
        "token",
        "revoke",
        "--data-dir",
        data.to_str().unwrap(),
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = outpost(&[
        "fleet",
        "ls",
        "--manager",
        &url,
        "--token",
        &token,
        "--fingerprint",
        &made.fingerprint,
    ]);
    assert_eq!(out.status.code(), Some(2));

    // `manager edge revoke` through the API: the edge is refused.
    let mut args = vec!["manager", "edge", "revoke", "oslo"];
    args.extend_from_slice(&base);
    let out = outpost(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = runtime
        .block_on(edge.send::<HeartbeatReply, _>(
            Method::POST,
            "/edge/v1/heartbeat",
            &heartbeat(vec![], vec![]),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");

    server.signal(rustix::process::Signal::TERM);
    let status = server
        .exits_within(Duration::from_secs(15))
        .expect("stops on SIGTERM");
    assert!(status.success(), "{}", server.stderr());
    assert!(server.stderr().contains("stopped"));
}
