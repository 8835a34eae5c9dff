//! The admin API and the CLI as an operator meets them: a real `outpost
//! serve` process, the `outpost` commands run against it, and raw HTTP to
//! the admin port where the point is what the API answers.

use std::process::Command;
use std::time::Duration;

use outpost_testkit::{Client, Origin, Reply, Resource, content};

use crate::support::{EdgeProcess, stderr, stdout};

/// DNS rebinding: a page whose name now resolves to the edge sends
/// `Host: its-own-name`. The admin API answers only Host values that name
/// this machine, so such a page reads neither the open `/metrics` nor,
/// with a leaked token, anything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_answers_only_host_names_of_this_machine() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let edge = EdgeProcess::in_dir(dir.path(), &origin, None);
    let port = edge.admin.port();
    let hostname = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    for host in [
        edge.admin.to_string(),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        format!("{hostname}:{port}"),
    ] {
        for path in ["/metrics", "/status"] {
            let r = edge.admin_request("GET", path, &host).await;
            assert_eq!(r.status, 200, "GET {path} with Host {host}");
        }
    }
    for host in [
        format!("rebind.attacker.example:{port}"),
        "rebind.attacker.example".to_string(),
        format!("localhost.attacker.example:{port}"),
    ] {
        for path in ["/metrics", "/healthz", "/status"] {
            let r = edge.admin_request("GET", path, &host).await;
            assert_eq!(r.status, 421, "GET {path} with Host {host}");
            let body = String::from_utf8_lossy(&r.body);
            assert!(body.contains("admin.allowed_hosts"), "{body}");
            assert!(!body.contains("outpost_requests"), "{body}");
        }
    }
    let log = edge.log.lock().unwrap().join("\n");
    assert!(log.contains("DNS rebinding"), "{log}");
    // The CLI names the edge by its address: unaffected.
    let out = edge.cli(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `outpost status` says where the proxy listens: the bound address, not
/// the configured `127.0.0.1:0`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_address_the_proxy_is_bound_to() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let edge = EdgeProcess::in_dir(dir.path(), &origin, None);
    let out = edge.cli(&["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        status["listeners"],
        serde_json::json!([edge.addr.to_string()])
    );
    let out = edge.cli(&["status"]);
    assert!(
        stdout(&out).contains(&format!("listening {}", edge.addr)),
        "{}",
        stdout(&out)
    );
}

/// Every error the admin API gives is JSON with the reason, queries are
/// form-decoded (`+` is a space), and every answer says `no-store`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_errors_are_json_and_queries_are_form_decoded() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let edge = EdgeProcess::in_dir(dir.path(), &origin, None);
    let host = edge.admin.to_string();
    let error_of = |r: &Reply| -> String {
        let v: serde_json::Value = serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", r.body));
        v["error"].as_str().expect("an error message").to_string()
    };
    let cases = [
        ("GET", "/nothing-here", 404, "not found"),
        ("POST", "/status", 405, "method not allowed"),
        (
            "POST",
            "/channels/sync?name=no+such%2Bchannel",
            404,
            "no such+channel",
        ),
        ("POST", "/pin", 400, "?url="),
        ("POST", "/pin?url=a&url=b", 400, "url"),
    ];
    for (method, target, status, says) in cases {
        let r = edge.admin_request(method, target, &host).await;
        assert_eq!(r.status, status, "{method} {target}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let error = error_of(&r);
        assert!(error.contains(says), "{method} {target}: {error}");
    }
    let unauthorized = Client::new(edge.admin)
        .get("/status", &[("host", &host)])
        .await
        .unwrap();
    assert_eq!(unauthorized.status, 401);
    assert!(error_of(&unauthorized).contains("Bearer"));
    let metrics = edge.admin_request("GET", "/metrics", &host).await;
    assert_eq!(metrics.header("cache-control"), Some("no-store"));
    // The CLI shows the edge's reason, not a JSON document.
    let out = edge.cli(&["sync", "no such"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("no channel named") && !err.contains('{'),
        "{err}"
    );
}

/// docs/metrics.md's table and `/metrics` agree both ways: every
/// documented metric is served with its type and labels, and nothing is
/// served that the table does not name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_the_docs_is_served_with_its_type_and_labels_and_no_other() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[log]\naccess_log = \"access.log\"\n[[channel]]\nname = \"pkgs\"\nsource = \"{}\"\n",
        origin.url("/pkgs/")
    );
    origin.put(
        "/pkgs/",
        Resource::new(bytes::Bytes::from_static(b"<a href=\"a.msi\">a.msi</a>")).no_cache_headers(),
    );
    origin.put(
        "/pkgs/a.msi",
        Resource::new(content(1000, 1)).no_cache_headers(),
    );
    let edge = EdgeProcess::in_dir(dir.path(), &origin, Some(&config));
    // A finished sync, so that the per-channel families have samples.
    let out = edge.cli(&["sync", "pkgs"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let host = edge.admin.to_string();
    let reply = edge.admin_request("GET", "/metrics", &host).await;
    assert_eq!(reply.status, 200);
    let text = String::from_utf8(reply.body.to_vec()).unwrap();

    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/metrics.md"
    ))
    .unwrap();
    let table = docs
        .split("Metrics (all prefixed `outpost_`")
        .nth(1)
        .and_then(|t| t.split_once("\n\n"))
        .map(|(_, t)| t)
        .expect("the metrics table in docs/metrics.md");
    let mut documented = Vec::new();
    for row in table.lines().skip_while(|l| !l.starts_with("| `")) {
        if !row.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (names, kind) = (cells[1], cells[2]);
        for name in names.split(", ") {
            let name = name.trim_matches('`');
            let (name, labels) = match name.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}').split(',').collect::<Vec<_>>()),
                None => (name, Vec::new()),
            };
            let family = name.strip_suffix("_total").unwrap_or(name);
            let type_line = format!("# TYPE outpost_{family} {kind}");
            assert!(text.contains(&type_line), "{type_line} missing:\n{text}");
            if !labels.is_empty() {
                let sample = text
                    .lines()
                    .find(|l| l.starts_with(&format!("outpost_{name}{{")))
                    .unwrap_or_else(|| panic!("no sample of outpost_{name}:\n{text}"));
                let found: Vec<&str> = sample
                    .split_once('{')
                    .and_then(|(_, rest)| rest.split_once('}'))
                    .map(|(l, _)| {
                        l.split(',')
                            .filter_map(|kv| kv.split_once('='))
                            .map(|(k, _)| k)
                            .collect()
                    })
                    .unwrap_or_default();
                assert_eq!(found, labels, "{sample}");
            }
            documented.push(format!("outpost_{family}"));
        }
    }
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let family = line.split(' ').nth(2).unwrap();
        assert!(
            documented.iter().any(|d| d == family),
            "{family} is served but not in docs/metrics.md"
        );
    }
}

/// `pin` (and `purge`, `unpin`) of a URL the edge does not hold did
/// nothing: it exits non-zero and says so, instead of exiting 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_of_an_uncached_url_fails_and_says_why() {
    let origin = Origin::start().await;
    origin.put("/a.msi", Resource::new(content(10_000, 1)));
    let dir = tempfile::tempdir().unwrap();
    let edge = EdgeProcess::in_dir(dir.path(), &origin, None);
    let missing = origin.url("/never-fetched.msi");
    for verb in ["pin", "unpin", "purge"] {
        let out = edge.cli(&[verb, &missing]);
        assert!(!out.status.success(), "{verb}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(
            err.contains("not in the edge's cache") && err.contains(&format!("nothing to {verb}")),
            "{verb}: {err}"
        );
    }
    // --json still prints the edge's answer, and fails the same way.
    let out = edge.cli(&["pin", &missing, "--json"]);
    assert!(!out.status.success());
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (answer["action"].as_str(), answer["done"].as_bool()),
        (Some("pin"), Some(false))
    );

    // A stored object is pinned, exit 0.
    let body = Client::new(edge.addr).get("/a.msi", &[]).await.unwrap();
    assert_eq!(body.status, 200);
    let stored = origin.url("/a.msi");
    let pinned = || {
        let out = edge.cli(&["cache", "ls", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        list["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["url"] == stored.as_str() && o["pinned"] == true)
    };
    // The object is indexed once its fill completes.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = edge.cli(&["pin", &stored]);
        if out.status.success() || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), format!("pin {stored}: done"));
    assert!(pinned());
}

/// `outpost reload` speaks to people: a summary on success, the edge's
/// reason as plain lines on failure (never a JSON document with literal
/// `\n`), and indented JSON with `--json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_prints_a_summary_or_the_reason_and_json_only_when_asked() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let edge = EdgeProcess::in_dir(
        dir.path(),
        &origin,
        Some("[wan]\nprepos_rate = \"unlimited\"\n"),
    );
    let config = dir.path().join("outpost.toml");

    std::fs::write(&config, "[wan]\nprepos_rate = \"2 Mbit/s\"\n").unwrap();
    let out = edge.cli(&["reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("applied: "), "{text}");
    assert!(!text.contains('{') && !text.contains("\\n"), "{text}");

    let out = edge.cli(&["reload", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(report["applied"].is_array() && report["restart_needed"].is_array());
    assert!(text.lines().count() > 1, "not indented: {text}");

    std::fs::write(&config, "[wan]\nprepos_rate = \"fast\"\n").unwrap();
    let out = edge.cli(&["reload"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("invalid rate"), "{err}");
    assert!(!err.contains("\\n") && !err.contains("\"error\""), "{err}");
}

/// `outpost sync` draws no progress until the totals are known: while the
/// source is being listed it says so, instead of `0 B / 0 B`. Its summary
/// counts files under the JSON's own names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_says_listing_instead_of_an_empty_bar_and_counts_in_the_jsons_words() {
    let origin = Origin::start().await;
    // A listing slow enough that the CLI's first look finds the run listing.
    origin.put(
        "/pkgs/",
        Resource::new(bytes::Bytes::from_static(b"<a href=\"a.msi\">a.msi</a>"))
            .no_cache_headers()
            .latency(Duration::from_millis(1500)),
    );
    origin.put(
        "/pkgs/a.msi",
        Resource::new(content(300_000, 1)).no_cache_headers(),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[[channel]]\nname = \"pkgs\"\nsource = \"{}\"\n",
        origin.url("/pkgs/")
    );
    let edge = EdgeProcess::in_dir(dir.path(), &origin, Some(&config));
    let out = edge.cli(&["sync", "pkgs"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let progress = stderr(&out);
    assert!(progress.contains("pkgs: listing the source"), "{progress}");
    assert!(!progress.contains("0 B / 0 B"), "{progress}");
    let summary = stdout(&out);
    assert!(
        summary.contains("sync #1 ok: 1 files: 1 fetched;"),
        "{summary}"
    );

    // A second sync finds the file current: the text uses the word the
    // JSON has for it.
    let out = edge.cli(&["sync", "pkgs", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let last: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let word = ["not_modified", "unchanged"]
        .into_iter()
        .find(|k| last[k].as_u64() == Some(1))
        .unwrap_or_else(|| panic!("the file is neither not_modified nor unchanged: {last}"));
    let out = edge.cli(&["channels"]);
    let text = stdout(&out);
    assert!(
        text.contains(&format!("last sync #2 ok: 1 {word}")),
        "{text}"
    );
}

/// README's CLI examples work as written on a fresh clone: the commands
/// they run are `outpost`, so the README says how to get it on PATH
/// before the first one.
#[test]
fn readme_says_how_to_get_outpost_on_path_before_using_it() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let install = "cargo install --path crates/outpost";
    let mut in_code = false;
    let mut installed = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        installed |= line.contains(install);
        if in_code && line.trim_start().starts_with("outpost ") {
            assert!(installed, "README runs `{line}` before saying `{install}`");
        }
    }
    assert!(installed, "README never says how to install outpost");
    // The path the command names builds the `outpost` binary.
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    assert!(manifest.contains("name = \"outpost\"\npath = \"src/main.rs\""));
}

/// The bug the shared status model removes: an edge whose status
/// document lacks a field (a renamed key, another version) made
/// `outpost status` print 0. Now the CLI refuses the document and names
/// the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_from_an_edge_with_a_renamed_field_is_an_error_not_a_zero() {
    let fixture: serde_json::Value = serde_json::from_str(include_str!(
        "../../../outpost-protocol/tests/fixtures/status.json"
    ))
    .unwrap();
    let mut renamed = fixture.clone();
    let cache = renamed["cache"].as_object_mut().unwrap();
    let used = cache.remove("bytes_used").unwrap();
    cache.insert("used_bytes".into(), used);
    // A stand-in edge: the fake origin answers /status with the documents.
    let edge = Origin::start().await;
    edge.put(
        "/status",
        Resource::new(bytes::Bytes::from(renamed.to_string())).no_cache_headers(),
    );
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_outpost"))
            .env_remove("OUTPOST_ADMIN")
            .env_remove("OUTPOST_ADMIN_TOKEN")
            .env_remove("OUTPOST_ADMIN_TOKEN_FILE")
            .args(["status", "--admin", &edge.addr().to_string()])
            .args(["--token", "0123456789abcdef0123456789abcdef"])
            .output()
            .unwrap()
    };
    let out = run();
    assert!(!out.status.success(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("bytes_used") && err.contains("same version"),
        "{err}"
    );
    // The same document with the field is shown.
    edge.put(
        "/status",
        Resource::new(bytes::Bytes::from(fixture.to_string())).no_cache_headers(),
    );
    let out = run();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("1.0 MiB / 10.0 GiB"),
        "{}",
        stdout(&out)
    );
}
