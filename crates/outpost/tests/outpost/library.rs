//! `[library]` / `--library`: the edge's own web listener as the binary
//! runs it, its configuration checks, and the PAC file as a real PAC
//! engine (Debian's pacparser) reads it.

use std::process::Command;

use outpost_testkit::{Client, Origin};

use crate::support::{EdgeProcess, assert_check_config_refuses, outpost};

#[test]
fn check_config_refuses_bad_library_settings() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[server]\nlisten = [\"0.0.0.0:3128\"]\n[library]\nlisten = \"0.0.0.0:80\"\n",
            ":4:10: library.listen: the proxy listens only on wildcard or loopback addresses, so the PAC file cannot name it: set library.pac_proxy",
        ),
        (
            "[server]\nlisten = [\"127.0.0.1:3128\"]\n[library]\nlisten = \"10.9.8.7:80\"\n",
            ":4:10: library.listen: the proxy listens only on wildcard or loopback addresses",
        ),
        (
            "[server]\nlisten = [\"0.0.0.0:3128\"]\n[library]\nlisten = \"10.1.1.1:3128\"\npac_proxy = \"edge:3128\"\n",
            ":4:10: library.listen: 10.1.1.1:3128 is also a proxy listen address (server.listen)",
        ),
        (
            "[library]\ndo_hosts = [\"*.windowsupdate.com\", \"a b\"]\n",
            ":2:12: library.do_hosts: \"a b\" is not a host name",
        ),
        (
            "[library]\npac_proxy = \"0.0.0.0:3128\"\n",
            ":2:13: library.pac_proxy: \"0.0.0.0:3128\" is not host:port",
        ),
        (
            "[library]\npac_direct = [\"10.0.0.0/8\", \"no way\"]\n",
            ":2:14: library.pac_direct: \"no way\" is not a host name",
        ),
        (
            "[library]\nallowed_hosts = [\"edge.example\", \"edge.example:80\"]\n",
            ":2:17: library.allowed_hosts: \"edge.example:80\" must be a bare host name",
        ),
        (
            "[library.dns]\nnames = [\"*.steamcontent.com\"]\n",
            ":2:9: library.dns.names: needs library.dns.upstreams",
        ),
        (
            "[library.dns]\nnames = [\"*.steamcontent.com\"]\nupstreams = [\"0.0.0.0:53\"]\n",
            ":3:13: library.dns.upstreams: 0.0.0.0:53 is not a resolver's address",
        ),
        (
            "[library]\nlisten = \"127.0.0.1:80\"\npac = \"x\"\n",
            ":3:1: unknown key \"library.pac\"",
        ),
    ];
    for (text, expected) in cases {
        assert_check_config_refuses(dir.path(), text, expected);
    }
    // A wildcard proxy is fine once the PAC's proxy is named.
    let file = dir.path().join("outpost.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = [\"0.0.0.0:3128\"]\n[library]\nlisten = \"0.0.0.0:80\"\npac_proxy = \"edge.branch.example:3128\"\n",
    )
    .unwrap();
    let checked = outpost(&["check-config", file.to_str().unwrap()]);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// Evaluates `pac` for each `(url, host)` with pacparser and returns what
/// FindProxyForURL answered.
fn evaluate_pac(dir: &std::path::Path, pac: &str, urls: &[(&str, &str)]) -> Vec<String> {
    let pac_file = dir.join("served.pac");
    std::fs::write(&pac_file, pac).unwrap();
    let script = "import sys, pacparser\n\
                  pacparser.init()\n\
                  pacparser.parse_pac_file(sys.argv[1])\n\
                  for pair in sys.argv[2:]:\n\
                  \x20   url, host = pair.split(' ')\n\
                  \x20   print(pacparser.find_proxy(url, host))\n";
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(&pac_file)
        .args(urls.iter().map(|(u, h)| format!("{u} {h}")))
        .output()
        .expect("run python3 with pacparser (.ci/run installs python3-pacparser)");
    assert!(
        out.status.success(),
        "pacparser failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pac_file_sends_internal_hosts_direct_and_the_rest_to_the_proxy() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.toml");
    std::fs::write(
        &config,
        "[library]\npac_direct = [\"10.0.0.0/8\", \"192.168.0.0/16\", \"corp.example\"]\n",
    )
    .unwrap();
    let edge = EdgeProcess::start(
        &dir.path().join("outpost-cache"),
        &origin,
        &[
            "--config",
            config.to_str().unwrap(),
            "--library",
            "127.0.0.1:0",
        ],
    );
    let library = Client::new(edge.library_listening());
    let wpad = library.get("/wpad.dat", &[("host", "wpad")]).await.unwrap();
    assert_eq!(wpad.status, 200);
    assert_eq!(
        wpad.header("content-type"),
        Some("application/x-ns-proxy-autoconfig")
    );
    let pac = library.get("/proxy.pac", &[]).await.unwrap();
    assert_eq!(pac.body, wpad.body);
    let proxy = format!("PROXY {}; DIRECT", edge.addr);
    let answers = evaluate_pac(
        dir.path(),
        std::str::from_utf8(&wpad.body).unwrap(),
        &[
            ("http://10.20.30.40/pkg.msi", "10.20.30.40"),
            ("http://192.168.1.9/", "192.168.1.9"),
            ("http://fileserver/share/x", "fileserver"),
            ("http://pkgs.corp.example/app.msi", "pkgs.corp.example"),
            ("http://corp.example/", "corp.example"),
            ("http://203.0.113.7/update.cab", "203.0.113.7"),
            ("https://198.51.100.1/", "198.51.100.1"),
            ("http://172.16.0.1/", "172.16.0.1"),
        ],
    );
    assert_eq!(
        answers,
        [
            "DIRECT", "DIRECT", "DIRECT", "DIRECT", "DIRECT", &proxy, &proxy,
            // Not in this pac_direct (which replaces the default list).
            &proxy,
        ]
    );
}

/// `outpost serve --library`: a Delivery Optimization client and a proxy
/// client share one copy, and /metrics counts the DO hit and miss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_optimization_through_the_binary_is_counted_in_metrics() {
    use outpost_testkit::{Resource, content};
    let origin = Origin::start().await;
    let body = content(120_000, 31);
    origin.put("/c/msdownload/kb1.cab", Resource::new(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.toml");
    let host = origin.addr().to_string();
    std::fs::write(
        &config,
        format!(
            "[server]\ninternal_destinations = [\"127.0.0.0/8\"]\n[library]\ndo_hosts = [\"{host}\"]\n"
        ),
    )
    .unwrap();
    let edge = EdgeProcess::start(
        &dir.path().join("outpost-cache"),
        &origin,
        &[
            "--config",
            config.to_str().unwrap(),
            "--library",
            "127.0.0.1:0",
        ],
    );
    let library = Client::new(edge.library_listening());
    let target = format!("/c/msdownload/kb1.cab?cacheHostOrigin={host}");
    let miss = library.get(&target, &[]).await.unwrap();
    assert_eq!(miss.status, 200);
    assert!(miss.body == body);
    // Asked again once the store lists the object complete: a hit.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let listing = crate::support::stdout(&edge.cli(&["cache", "ls", "*kb1.cab"]));
        if listing.contains("complete") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never complete: {listing}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let hit = library.get(&target, &[]).await.unwrap();
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert!(hit.body == body);
    // The reverse proxy (--origin) reaches the same URL: the same copy.
    let proxied = Client::new(edge.addr)
        .get("/c/msdownload/kb1.cab", &[])
        .await
        .unwrap();
    assert_eq!(proxied.header("x-cache"), Some("HIT"));
    assert_eq!(origin.count("/c/msdownload/kb1.cab"), 1);
    let metrics = crate::support::admin_get(&edge.admin, "/metrics").await;
    let value = |series: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{series} in\n{metrics}"))
    };
    assert_eq!(
        value("outpost_library_requests_total{way=\"delivery_optimization\",source=\"fill\"}"),
        1
    );
    assert_eq!(
        value("outpost_library_requests_total{way=\"delivery_optimization\",source=\"cache\"}"),
        1
    );
    assert_eq!(
        value("outpost_library_served_bytes_total{way=\"delivery_optimization\",source=\"fill\"}"),
        120_000
    );
    assert_eq!(
        value("outpost_library_requests_total{way=\"dns_mode\",source=\"cache\"}"),
        0
    );
}
