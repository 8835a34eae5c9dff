//! `[wccp]`: check-config catches every bad value with its place; a real
//! `outpost serve` joins the testkit's simulated router over loopback UDP,
//! shows the group in `/status`, `/metrics` and `outpost wccp status`, and
//! leaves the group when stopped.

use std::time::Duration;

use outpost_testkit::wccp_router::{RouterConfig, SimRouter};
use outpost_testkit::{Origin, wait_until};
use outpost_wccp::Password;

use crate::support::{EdgeProcess, outpost, stderr, stdout};

#[test]
fn check_config_reports_every_bad_wccp_value_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        r#"[wccp]
routers = ["10.0.0.1", "not-an-address"]
password = "muchtoolong"
forwarding = "carrier-pigeon"
return = "l2"
assignment = "random"
mask_source = 0xffff
interval = "100ms"
frobnicate = 1
tunnel = "../etc"

[[wccp.service]]
id = 90

[[wccp.service]]
id = 91
protocol = "sctp?"
ports = [80, 0]
flags = ["src_ip_hash", "sideways"]
"#,
    )
    .unwrap();
    let out = outpost(&["check-config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    let f = bad.display();
    for want in [
        format!("{f}:2:11: wccp.routers: \"not-an-address\" is not an IPv4 address"),
        format!("{f}:3:12: wccp.password: must be 1 to 8 bytes"),
        format!(
            "{f}:4:14: wccp.forwarding: expected \"gre\", \"l2\" or \"auto\", got \"carrier-pigeon\""
        ),
        format!(
            "{f}:6:14: wccp.assignment: expected \"hash\", \"mask\" or \"auto\", got \"random\""
        ),
        format!("{f}:7:15: wccp.mask_source/mask_destination: the mask must have 1 to 7 bits"),
        format!("{f}:8:12: wccp.interval: must be from 500ms to 60s"),
        format!("{f}:9:1: unknown key"),
        format!("{f}:10:10: wccp.tunnel: \"../etc\" is not an interface name"),
        format!("{f}:12:1: wccp.service: service 90 is dynamic: it needs protocol"),
        format!(
            "{f}:17:12: wccp.service.protocol: expected \"tcp\", \"udp\" or an IP protocol number"
        ),
        format!("{f}:18:9: wccp.service.ports: expected 1 to 8 ports"),
        format!("{f}:19:9: wccp.service.flags: unknown flag \"sideways\""),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }

    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[wccp]\nrouters = [\"10.0.0.1\", \"10.0.0.2:2048\"]\npassword = \"s3cret\"\nforwarding = \"gre\"\nassignment = \"mask\"\nweight = 200\n\n[[wccp.service]]\nid = 0\n\n[[wccp.service]]\nid = 90\nprotocol = \"tcp\"\nports = [80, 8080]\npriority = 240\nflags = [\"src_ip_hash\"]\n",
    )
    .unwrap();
    let out = outpost(&["check-config", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_joins_the_router_and_reports_the_group() {
    let origin = Origin::start().await;
    let mut cfg = RouterConfig::new("127.0.0.1".parse().unwrap());
    cfg.interval = Duration::from_millis(500);
    cfg.password = Password::new("s3cret");
    let router = SimRouter::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[wccp]\nrouters = [\"{}\"]\npassword = \"s3cret\"\nlisten = \"127.0.0.41:0\"\ninterval = \"500ms\"\ntunnel = \"lo\"\n",
        router.addr
    );
    let edge = EdgeProcess::in_dir(dir.path(), &origin, Some(&config));
    let edge_ip: std::net::Ipv4Addr = "127.0.0.41".parse().unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || router
            .with(|c| c.bucket_counts().get(&edge_ip) == Some(&256)))
        .await,
        "the router never got a full assignment from the edge: {}",
        edge.stderr()
    );

    let reply = edge.admin_request("GET", "/status", "localhost").await;
    assert_eq!(reply.status, 200);
    let status: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    let group = &status["wccp"]["groups"][0];
    assert_eq!(group["designated"], true, "{status:#}");
    assert_eq!(group["buckets_owned"], 256);
    assert_eq!(group["routers"][0]["live"], true);
    assert_eq!(group["negotiated"]["assignment"], "hash");
    // The tunnel's kernel counters (loopback stands in for wccp0 here: the
    // WCCP messages themselves cross it).
    assert_eq!(status["wccp"]["tunnel"]["interface"], "lo");
    assert!(
        status["wccp"]["tunnel"]["rx_packets"].as_u64().unwrap() > 0,
        "{status:#}"
    );

    let out = edge.cli(&["wccp", "status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("service 0 (standard), as 127.0.0.41: designated web-cache"),
        "{text}"
    );
    assert!(text.contains("256 of 256 buckets"), "{text}");
    assert!(text.contains("LIVE"), "{text}");
    assert!(text.contains("tunnel   lo: "), "{text}");

    let metrics = edge.admin_request("GET", "/metrics", "localhost").await;
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        metrics.contains("outpost_wccp_buckets_owned{service=\"0\"} 256"),
        "{metrics}"
    );
    assert!(
        metrics.contains("outpost_wccp_messages_total{direction=\"sent\",type=\"here_i_am\"}"),
        "{metrics}"
    );

    // SIGTERM: the edge leaves the group before draining.
    edge.signal(rustix::process::Signal::TERM);
    assert!(
        wait_until(Duration::from_secs(5), || router
            .with(|c| c.view().is_empty()))
        .await,
        "the router still lists the stopped edge"
    );
    assert_eq!(router.with(|c| c.counters.shutdowns), 1);
}

#[test]
fn wccp_status_says_when_wccp_is_not_configured() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let origin = rt.block_on(Origin::start());
    let dir = tempfile::tempdir().unwrap();
    let edge = EdgeProcess::in_dir(dir.path(), &origin, None);
    let out = edge.cli(&["wccp", "status"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("WCCP is not configured on this edge"),
        "{}",
        stderr(&out)
    );
}

/// Writes `text` as `name` in `dir`, runs check-config on it and returns
/// its file name (as the messages print it) and, when it was refused, the
/// messages; `None` when it passed.
fn check(dir: &std::path::Path, name: &str, text: &str) -> (String, Option<String>) {
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    let out = outpost(&["check-config", file.to_str().unwrap()]);
    let shown = file.display().to_string();
    (shown, (!out.status.success()).then(|| stderr(&out)))
}

/// Asserts that check-config refused `text` with every message of `want`
/// (each after the file's name).
fn refused_with(dir: &std::path::Path, name: &str, text: &str, want: &[&str]) {
    let (file, err) = check(dir, name, text);
    let err = err.unwrap_or_else(|| panic!("{name} passed check-config"));
    for want in want {
        let want = format!("{file}:{want}");
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn check_config_reports_bad_data_path_keys_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    refused_with(
        dir.path(),
        "bad.toml",
        r#"[wccp]
routers = ["10.0.0.1"]
datapath = "ebpf"
bypass_destinations = ["10.0.0.1/8", "not-a-prefix"]
bypass_clients = ["10.0.0.0/33"]
max_redirected_flows = -1
"#,
        &[
            "3:12: wccp.datapath: expected \"kernel\"",
            "4:23: wccp.bypass_destinations: \"10.0.0.1/8\" has host bits set: did you mean 10.0.0.0/8?",
            "4:23: wccp.bypass_destinations: \"not-a-prefix\" is not an IPv4 prefix",
            "5:18: wccp.bypass_clients: \"10.0.0.0/33\": the prefix length must be 0 to 32",
            "6:24: wccp.max_redirected_flows:",
        ],
    );

    // Returning packets needs the edge's own data path: with the kernel's
    // tunnel the keys would silently do nothing.
    refused_with(
        dir.path(),
        "kernel.toml",
        "[wccp]\nrouters = [\"10.0.0.1\"]\nbypass_clients = [\"10.1.0.0/16\"]\nmax_redirected_flows = 500\n",
        &[
            "3:18: wccp.bypass_clients: packets are returned only by the edge's own data path: set wccp.datapath = \"outpost\"",
            "4:24: wccp.max_redirected_flows: packets are returned only",
        ],
    );

    // The edge's data path reads GRE: with L2 forwarding none arrives.
    refused_with(
        dir.path(),
        "l2.toml",
        "[wccp]\nrouters = [\"10.0.0.1\"]\nforwarding = \"l2\"\ndatapath = \"outpost\"\n",
        &["4:12: wccp.datapath: \"outpost\" decapsulates GRE, but wccp.forwarding = \"l2\""],
    );

    // Returns to a router at a loopback (or the edge's own) address would
    // come straight back.
    refused_with(
        dir.path(),
        "loop.toml",
        "[wccp]\nrouters = [\"127.0.0.1\"]\ndatapath = \"outpost\"\n",
        &[
            "3:12: wccp.datapath: \"outpost\" with router 127.0.0.1: GRE from a loopback or the edge's own address would loop",
        ],
    );
    refused_with(
        dir.path(),
        "own.toml",
        "[wccp]\nrouters = [\"10.0.0.5\"]\naddress = \"10.0.0.5\"\ndatapath = \"outpost\"\n",
        &["4:12: wccp.datapath: \"outpost\" with router 10.0.0.5"],
    );

    let (_, err) = check(
        dir.path(),
        "good.toml",
        "[wccp]\nrouters = [\"10.0.0.1\"]\ndatapath = \"outpost\"\ntunnel = \"wccp7\"\nbypass_destinations = [\"192.0.2.0/24\", \"198.51.100.7\"]\nbypass_clients = [\"10.1.2.0/24\"]\nmax_redirected_flows = 2000\n",
    );
    assert_eq!(err, None);
}
