//! The admin commands on a running edge agree with what the origin and
//! the clients saw: metrics, access log, status, cache verify, sync and
//! channels.

use std::time::Duration;

use outpost_testkit::{Client, Origin, Resource, content, wait_until};

use crate::support::{EdgeProcess, admin_get, outpost};

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_access_log_and_admin_commands_agree_with_the_origin() {
    let origin = Origin::start().await;
    origin.put("/a.msi", Resource::new(content(300_000, 4)));
    origin.put(
        "/b.cab",
        Resource::new(content(100_000, 5)).header("cache-control", "max-age=0"),
    );
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("access.log");
    let edge = EdgeProcess::start(
        &dir.path().join("outpost-cache"),
        &origin,
        &["--access-log", log_path.to_str().unwrap()],
    );
    let client = Client::new(edge.addr);

    // A miss, then two hits once the object is complete, then revalidations.
    assert_eq!(
        client.get("/a.msi", &[]).await.unwrap().header("x-cache"),
        Some("MISS")
    );
    let mut hits = 0;
    for _ in 0..200 {
        if client.get("/a.msi", &[]).await.unwrap().header("x-cache") == Some("HIT") {
            hits += 1;
            if hits == 2 {
                break;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_eq!(hits, 2);
    client.get("/b.cab", &[]).await.unwrap();
    let mut revalidated = false;
    for _ in 0..200 {
        if client.get("/b.cab", &[]).await.unwrap().header("x-cache") == Some("REVALIDATED") {
            revalidated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(revalidated);

    let metrics = admin_get(&edge.admin, "/metrics").await;
    let status = edge.cli(&["status", "--json"]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let hit = metric(&metrics, "outpost_requests_total{result=\"hit\"}");
    let miss = metric(&metrics, "outpost_requests_total{result=\"miss\"}");
    let reval = metric(&metrics, "outpost_requests_total{result=\"revalidated\"}");
    let collapsed = metric(&metrics, "outpost_requests_total{result=\"collapsed\"}");
    assert_eq!(status["requests"]["hit"].as_u64().unwrap(), hit);
    assert!(hit >= 2 && reval >= 1);
    // Each origin request for the objects is one miss or one revalidation.
    let origin_requests = (origin.count("/a.msi") + origin.count("/b.cab")) as u64;
    assert_eq!(origin_requests, miss + reval, "{metrics}");

    // The access log says the same, line by line.
    let total = hit + miss + reval + collapsed;
    assert!(
        wait_until(
            Duration::from_secs(5),
            || std::fs::read_to_string(&log_path)
                .unwrap_or_default()
                .lines()
                .count() as u64
                >= total
        )
        .await,
        "access log incomplete"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    let count = |code: &str| log.lines().filter(|l| l.contains(code)).count() as u64;
    assert_eq!(count(" TCP_HIT/200 "), hit, "{log}");
    assert_eq!(count(" TCP_MISS/200 "), miss + collapsed, "{log}");
    assert_eq!(count(" TCP_REFRESH_UNMODIFIED/200 "), reval, "{log}");
    assert!(
        log.contains(&format!("GET {}", origin.url("/a.msi"))),
        "{log}"
    );

    // The human status fits an 80-column terminal; cache ls filters by glob.
    let out = edge.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("hits") && text.contains("cache"), "{text}");
    assert!(
        text.lines().all(|l| l.chars().count() <= 80),
        "status wider than 80 columns:\n{text}"
    );
    let out = edge.cli(&["cache", "ls", "*/a.msi"]);
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listing.contains("/a.msi") && listing.contains("complete") && !listing.contains("/b.cab"),
        "{listing}"
    );

    // purge through the CLI: the next request is a miss again.
    let out = edge.cli(&["purge", &origin.url("/a.msi")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        client.get("/a.msi", &[]).await.unwrap().header("x-cache"),
        Some("MISS")
    );
    // A command with no edge behind it says so.
    let out = outpost(&["status", "--admin", "127.0.0.1:9"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_verify_finds_and_drops_a_corrupted_body() {
    let origin = Origin::start().await;
    let body = content(500_000, 6);
    origin.put("/v.msi", Resource::new(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("outpost-cache");
    let edge = EdgeProcess::start(&cache, &origin, &[]);
    let client = Client::new(edge.addr);
    assert!(client.get("/v.msi", &[]).await.unwrap().body == body);
    // Wait until the digest is recorded.
    let mut recorded = false;
    for _ in 0..300 {
        let out = edge.cli(&["cache", "ls", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["objects"][0]["sha256"].is_string() {
            recorded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(recorded, "digest never recorded");
    let clean = edge.cli(&["cache", "verify"]);
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );

    // Flip one byte of the stored body behind the edge's back.
    let file = std::fs::read_dir(cache.join("objects"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .next()
        .expect("an object file");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[1234] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();

    let out = edge.cli(&["cache", "verify"]);
    assert!(!out.status.success(), "verify missed the corruption");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("dropped") && report.contains("/v.msi") && report.contains("SHA-256"),
        "{report}"
    );
    let reply = client.get("/v.msi", &[]).await.unwrap();
    assert_eq!(reply.header("x-cache"), Some("MISS"));
    assert!(reply.body == body);
    assert_eq!(origin.count("/v.msi"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_and_channels_commands_drive_a_channel_on_the_running_edge() {
    let origin = Origin::start().await;
    let a = content(300_000, 1);
    let b = content(500_000, 2);
    origin.put("/pkgs/a.msi", Resource::new(a.clone()).no_cache_headers());
    origin.put(
        "/pkgs/sub/b.msi",
        Resource::new(b.clone()).no_cache_headers(),
    );
    origin.put(
        "/pkgs/",
        Resource::new(bytes::Bytes::from_static(
            b"<pre><a href=\"../\">../</a>\n<a href=\"a.msi\">a.msi</a>\n<a href=\"sub/\">sub/</a></pre>",
        ))
        .no_cache_headers(),
    );
    origin.put(
        "/pkgs/sub/",
        Resource::new(bytes::Bytes::from_static(b"<a href=\"b.msi\">b.msi</a>")).no_cache_headers(),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.toml");
    std::fs::write(
        &config,
        format!(
            // A reverse edge (--origin) that PCs also use as their proxy
            // for the file server's alias name: forward is the admin's call.
            "[server]\nforward = true\n[[channel]]\nname = \"pkgs\"\nsource = \"{}\"\nrate = \"40 Mbit/s\"\naliases = [\"fileserver\"]\n",
            origin.url("/pkgs/")
        ),
    )
    .unwrap();
    let edge = EdgeProcess::with_config(dir.path(), &origin, &config);

    let out = edge.cli(&["sync", "pkgs"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("sync #1 ok") && stdout.contains("2 fetched"),
        "{stdout}"
    );

    let out = edge.cli(&["channels", "--json"]);
    assert!(out.status.success());
    let channels: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ch = &channels[0];
    assert_eq!(ch["name"], "pkgs");
    assert_eq!(
        (ch["files_present"].as_u64(), ch["files_total"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(ch["bytes_present"].as_u64(), Some(800_000));
    assert_eq!(ch["pinned_files"].as_u64(), Some(2));
    assert_eq!(ch["last_run"]["result"], "ok");

    // Served at the files' own URLs, also by the alias name, from disk.
    let client = Client::new(edge.addr);
    let reply = client.get("/pkgs/sub/b.msi", &[]).await.unwrap();
    assert_eq!(
        (reply.body == b, reply.header("x-cache")),
        (true, Some("HIT"))
    );
    let proxied = client
        .get("http://fileserver/pkgs/a.msi", &[])
        .await
        .unwrap();
    assert_eq!(
        (proxied.body == a, proxied.header("x-cache")),
        (true, Some("HIT"))
    );
    assert_eq!(origin.count("/pkgs/a.msi"), 1);

    // Human output fits a terminal and names the state.
    let out = edge.cli(&["channels"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("files 2/2") && text.contains("last sync #1 ok"),
        "{text}"
    );
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");

    let metrics = admin_get(&edge.admin, "/metrics").await;
    assert!(
        metrics.contains("outpost_channel_files{channel=\"pkgs\",state=\"present\"} 2"),
        "{metrics}"
    );

    let out = edge.cli(&["sync", "nosuch"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no channel named"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_on_a_busy_edge_shows_fills_with_progress_and_the_savings() {
    let origin = Origin::start().await;
    let small = content(400_000, 6);
    let big = content(6 << 20, 7);
    origin.put("/small.msi", Resource::new(small.clone()));
    origin.put("/big.iso", Resource::new(big.clone()).rate(2 << 20));
    let dir = tempfile::tempdir().unwrap();
    let edge = EdgeProcess::start(&dir.path().join("outpost-cache"), &origin, &[]);
    let client = Client::new(edge.addr);
    for _ in 0..5 {
        assert!(client.get("/small.msi", &[]).await.unwrap().body == small);
    }
    // A long fill with two clients on it.
    let downloads: Vec<_> = (0..2)
        .map(|_| {
            let client = Client::new(edge.addr);
            tokio::spawn(async move { client.get("/big.iso", &[]).await })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(10), || origin.sent_bytes() >= 3_000_000).await);
    let out = edge.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let fill_line = text
        .lines()
        .find(|l| l.starts_with("fill") && l.contains("big.iso"))
        .unwrap_or_else(|| panic!("no active fill shown:\n{text}"));
    let percent: u32 = fill_line
        .split('%')
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no progress in {fill_line:?}"));
    assert!((1..100).contains(&percent), "{fill_line}");
    assert!(
        text.lines().all(|l| l.chars().count() <= 80),
        "status wider than 80 columns:\n{text}"
    );
    for d in downloads {
        assert!(d.await.unwrap().unwrap().body == big);
    }
    // Served bytes count when a response's last write returns, which can
    // be just after the client has read it: wait (with a deadline) until
    // the 5 small and 2 big deliveries are counted.
    let served_now = || {
        let status: serde_json::Value =
            serde_json::from_slice(&edge.cli(&["status", "--json"]).stdout).unwrap();
        status["served_bytes"]["cache"].as_u64().unwrap_or(0)
            + status["served_bytes"]["fills"].as_u64().unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(10), || served_now()
            >= 5 * 400_000 + 2 * (6 << 20))
        .await,
        "served bytes never reached the deliveries"
    );
    // Now both big downloads and four of the five small ones came from the
    // edge's copies.
    let out = edge.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let saved_line = text
        .lines()
        .find(|l| l.contains("saved"))
        .unwrap_or_else(|| panic!("no savings line:\n{text}"));
    assert!(!saved_line.contains("saved 0 B"), "{saved_line}");
    let status: serde_json::Value =
        serde_json::from_slice(&edge.cli(&["status", "--json"]).stdout).unwrap();
    let served = status["served_bytes"]["cache"].as_u64().unwrap()
        + status["served_bytes"]["fills"].as_u64().unwrap();
    // 5 small + 2 big delivered; one copy of each fetched.
    assert!(served >= 5 * 400_000 + 2 * (6 << 20), "{status}");
    assert_eq!(
        status["wan_saved_bytes"].as_u64().unwrap(),
        served - status["wan_bytes"].as_u64().unwrap()
    );
}
