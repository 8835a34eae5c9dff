//! The `outpost` binary as an admin runs it: real processes, signals
//! (SIGKILL mid-fill, SIGTERM), restarts on the same cache directory.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use outpost_testkit::{Client, Origin, Resource, content, wait_until};

struct EdgeProcess {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl EdgeProcess {
    /// Starts an edge on `dir/cache` with the config file `config`.
    fn with_config(dir: &Path, origin: &Origin, config: &Path) -> Self {
        let config = config.to_str().expect("a UTF-8 temporary path");
        Self::start(&dir.join("cache"), origin, &["--config", config])
    }

    /// Starts `outpost serve` on an ephemeral port and waits until it listens.
    fn start(cache: &Path, origin: &Origin, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(["serve", "--listen", "127.0.0.1:0", "--cache-dir"])
            .arg(cache)
            .args(["--origin", &origin.url("/")])
            .args(["--admin", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start outpost");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                for field in ["admin=", "addr="] {
                    if let Some(addr) = line
                        .split(field)
                        .nth(1)
                        .and_then(|r| r.split_whitespace().next())
                    {
                        let _ = tx.send((field, strip_ansi(addr)));
                    }
                }
            }
        });
        let (mut addr, mut admin) = (None, None);
        while addr.is_none() || admin.is_none() {
            let (field, value) = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("outpost did not report its addresses");
            let parsed: SocketAddr = value.parse().expect("address");
            if field == "admin=" {
                admin = Some(parsed)
            } else {
                addr = Some(parsed)
            }
        }
        Self {
            child,
            addr: addr.unwrap(),
            admin: admin.unwrap(),
        }
    }

    fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

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

#[test]
fn check_config_reports_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = env!("CARGO_MANIFEST_DIR").to_string() + "/../../outpost.example.toml";
    let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["check-config", &good])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = [\"127.0.0.1:3128\"]\n\n[cache]\nmax_size = \"lots\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["check-config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 5") && err.contains("max_size"), "{err}");
}

fn outpost(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(args)
        .output()
        .expect("run outpost")
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
}

/// GET on the admin API.
async fn admin_get(addr: &SocketAddr, path: &str) -> String {
    let reply = Client::new(*addr).get(path, &[]).await.unwrap();
    assert_eq!(reply.status, 200);
    String::from_utf8(reply.body.to_vec()).unwrap()
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
        &dir.path().join("cache"),
        &origin,
        &["--access-log", log_path.to_str().unwrap()],
    );
    let client = Client::new(edge.addr);
    let admin = edge.admin.to_string();

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
    let status = outpost(&["status", "--json", "--admin", &admin]);
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
    let out = outpost(&["status", "--admin", &admin]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("hits") && text.contains("cache"), "{text}");
    assert!(
        text.lines().all(|l| l.chars().count() <= 80),
        "status wider than 80 columns:\n{text}"
    );
    let out = outpost(&["cache", "ls", "*/a.msi", "--admin", &admin]);
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listing.contains("/a.msi") && listing.contains("complete") && !listing.contains("/b.cab"),
        "{listing}"
    );

    // purge through the CLI: the next request is a miss again.
    let out = outpost(&["purge", &origin.url("/a.msi"), "--admin", &admin]);
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

#[test]
fn admin_api_off_loopback_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "0.0.0.0:0",
            "--cache-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("token_file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_verify_finds_and_drops_a_corrupted_body() {
    let origin = Origin::start().await;
    let body = content(500_000, 6);
    origin.put("/v.msi", Resource::new(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let edge = EdgeProcess::start(&cache, &origin, &[]);
    let client = Client::new(edge.addr);
    let admin = edge.admin.to_string();
    assert!(client.get("/v.msi", &[]).await.unwrap().body == body);
    // Wait until the digest is recorded.
    let mut recorded = false;
    for _ in 0..300 {
        let out = outpost(&["cache", "ls", "--json", "--admin", &admin]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["objects"][0]["sha256"].is_string() {
            recorded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(recorded, "digest never recorded");
    let clean = outpost(&["cache", "verify", "--admin", &admin]);
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

    let out = outpost(&["cache", "verify", "--admin", &admin]);
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
            "[[channel]]\nname = \"pkgs\"\nsource = \"{}\"\nrate = \"40 Mbit/s\"\naliases = [\"fileserver\"]\n",
            origin.url("/pkgs/")
        ),
    )
    .unwrap();
    let edge = EdgeProcess::with_config(dir.path(), &origin, &config);
    let admin = edge.admin.to_string();

    let out = outpost(&["sync", "pkgs", "--admin", &admin]);
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

    let out = outpost(&["channels", "--json", "--admin", &admin]);
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
    let out = outpost(&["channels", "--admin", &admin]);
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

    let out = outpost(&["sync", "nosuch", "--admin", &admin]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no channel named"));
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
    let admin = edge.admin.to_string();
    let prepos_limit = || {
        let out = outpost(&["status", "--json", "--admin", &admin]);
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
    let out = outpost(&["reload", "--admin", &admin]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("needs a restart: server limits and timeouts"),
        "{text}"
    );

    std::fs::write(&config, "[wan]\nprepos_rate = \"fast\"\n").unwrap();
    let out = outpost(&["reload", "--admin", &admin]);
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
    let admin = edge.admin.to_string();
    let client = Client::new(edge.addr);
    let x_cache = |r: &outpost_testkit::Reply| r.header("x-cache").map(str::to_string);
    let first = client.get("/pkg/a.msi", &[]).await.unwrap();
    assert_eq!(x_cache(&first).as_deref(), Some("PASS"));

    // The rule is dropped: the same URL is cached from the next request on.
    std::fs::write(&config, "").unwrap();
    let out = outpost(&["reload", "--admin", &admin]);
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
    let out = outpost(&["reload", "--admin", &admin]);
    assert!(out.status.success());
    let refused = Client::new(edge.addr).get("/pkg/a.msi", &[]).await.unwrap();
    assert_eq!(refused.status, 403);
    assert_eq!(origin.count("/pkg/a.msi"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_on_a_busy_edge_shows_fills_with_progress_and_the_savings() {
    let origin = Origin::start().await;
    let small = content(400_000, 6);
    let big = content(6 << 20, 7);
    origin.put("/small.msi", Resource::new(small.clone()));
    origin.put("/big.iso", Resource::new(big.clone()).rate(2 << 20));
    let dir = tempfile::tempdir().unwrap();
    let edge = EdgeProcess::start(&dir.path().join("cache"), &origin, &[]);
    let admin = edge.admin.to_string();
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
    let out = outpost(&["status", "--admin", &admin]);
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
            serde_json::from_slice(&outpost(&["status", "--json", "--admin", &admin]).stdout)
                .unwrap();
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
    let out = outpost(&["status", "--admin", &admin]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let saved_line = text
        .lines()
        .find(|l| l.contains("saved"))
        .unwrap_or_else(|| panic!("no savings line:\n{text}"));
    assert!(!saved_line.contains("saved 0 B"), "{saved_line}");
    let status: serde_json::Value =
        serde_json::from_slice(&outpost(&["status", "--json", "--admin", &admin]).stdout).unwrap();
    let served = status["served_bytes"]["cache"].as_u64().unwrap()
        + status["served_bytes"]["fills"].as_u64().unwrap();
    // 5 small + 2 big delivered; one copy of each fetched.
    assert!(served >= 5 * 400_000 + 2 * (6 << 20), "{status}");
    assert_eq!(
        status["wan_saved_bytes"].as_u64().unwrap(),
        served - status["wan_bytes"].as_u64().unwrap()
    );
}
