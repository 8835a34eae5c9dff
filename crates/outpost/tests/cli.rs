//! The `outpost` binary as an admin runs it: real processes, signals
//! (SIGKILL mid-fill, SIGTERM), restarts on the same cache directory.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use outpost_testkit::{Client, Origin, Resource, content, wait_until};

struct EdgeProcess {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    cache: PathBuf,
    /// Every line the edge logged so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl EdgeProcess {
    /// Starts an edge on `dir/outpost-cache` with the config file `config`.
    fn with_config(dir: &Path, origin: &Origin, config: &Path) -> Self {
        let config = config.to_str().expect("a UTF-8 temporary path");
        Self::start(&dir.join("outpost-cache"), origin, &["--config", config])
    }

    /// Starts `outpost serve` on an ephemeral port and waits until it listens.
    fn start(cache: &Path, origin: &Origin, extra: &[&str]) -> Self {
        let mut args = vec!["--cache-dir", cache.to_str().expect("a UTF-8 path")];
        let origin_url = origin.url("/");
        args.extend(["--origin", &origin_url, "--admin", "127.0.0.1:0"]);
        args.extend(extra);
        let mut edge = Self::spawn(&args);
        edge.cache = cache.to_path_buf();
        edge
    }

    /// Runs `outpost serve --listen 127.0.0.1:0 ARGS` and waits until it
    /// listens.
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start outpost");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
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
                lines.lock().unwrap().push(line);
            }
        });
        let (mut addr, mut admin) = (None, None);
        while addr.is_none() || admin.is_none() {
            let (field, value) = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| {
                    panic!(
                        "outpost did not report its addresses:\n{}",
                        log.lock().unwrap().join("\n")
                    )
                });
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
            cache: PathBuf::new(),
            log,
        }
    }

    fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    /// Runs an admin command as a user would on the edge's machine: from
    /// the directory the edge was started in (its cache is the default
    /// ./outpost-cache there), with no token given.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        assert_eq!(
            self.cache.file_name().and_then(|n| n.to_str()),
            Some("outpost-cache"),
            "cli() needs the edge's cache at the default ./outpost-cache"
        );
        cli_command(self.cache.parent().unwrap())
            .args(args)
            .args(["--admin", &self.admin.to_string()])
            .output()
            .expect("run outpost")
    }

    /// The token the edge generated in its cache directory.
    fn token(&self) -> String {
        std::fs::read_to_string(self.cache.join("admin.token"))
            .expect("the edge's admin.token")
            .trim()
            .to_string()
    }
}

/// `outpost` run in `cwd`, with none of the variables that name an admin
/// address, token or token file (the developer's own must not leak in).
fn cli_command(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_outpost"));
    cmd.current_dir(cwd)
        .env_remove("OUTPOST_ADMIN")
        .env_remove("OUTPOST_ADMIN_TOKEN")
        .env_remove("OUTPOST_ADMIN_TOKEN_FILE");
    cmd
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
    assert!(
        err.contains(&format!(
            "{}:5:12: cache.max_size: expected a size like \"512 MiB\" or \"20 GB\", got \"lots\"",
            bad.display()
        )),
        "{err}"
    );
}

/// What check-config accepts, serve starts with, and what serve refuses,
/// check-config refuses with the same message (and a line and column).
#[test]
fn check_config_refuses_what_serve_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[admin]\nlisten = \"0.0.0.0:3180\"\n",
            ":2:10: admin.listen 0.0.0.0:3180 is not loopback: set admin.token_file",
        ),
        (
            "[log]\nlevel = \"verbose\"\n",
            ":2:9: log.level: \"verbose\" is not a log level: expected a level (trace, debug, info, warn, error, off)",
        ),
        (
            "[[channel]]\nname = \"a\"\nsource = \"http://h/a/\"\n\n[[channel]]\nname = \"a\"\nsource = \"http://h/b/\"\n",
            ":6:8: channel.name \"a\" is used twice: on line 2 and line 6",
        ),
        (
            "[cache]\nmax_size = \"lots\"\n",
            ":2:12: cache.max_size: expected a size like \"512 MiB\" or \"20 GB\", got \"lots\"",
        ),
    ];
    for (text, expected) in cases {
        let file = dir.path().join("outpost.toml");
        std::fs::write(&file, text).unwrap();
        let path = file.to_str().unwrap();
        let checked = outpost(&["check-config", path]);
        let err = String::from_utf8_lossy(&checked.stderr);
        assert_eq!(checked.status.code(), Some(1), "{text}: {err}");
        assert!(err.contains(&format!("{path}{expected}")), "{text}: {err}");
        let served = cli_command(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--config", path])
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&served.stderr);
        assert_eq!(served.status.code(), Some(1), "{text}: {err}");
        assert!(err.contains(&format!("{path}{expected}")), "{text}: {err}");
    }
    // Every error at once, not the first only.
    let file = dir.path().join("outpost.toml");
    std::fs::write(
        &file,
        "[log]\nlevel = \"verbose\"\n[cache]\nmax_size = \"lots\"\n",
    )
    .unwrap();
    let checked = outpost(&["check-config", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&checked.stderr);
    assert!(
        err.contains(":2:9: log.level") && err.contains(":4:12: cache.max_size"),
        "{err}"
    );
}

#[test]
fn check_config_reports_a_bad_disk_reserve_or_admin_limit_with_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key, line) in [
        (
            "[server]\nlisten = [\"127.0.0.1:3128\"]\n\n[cache]\ndisk_reserve = \"80%\"\n",
            "disk_reserve",
            ":5:16:",
        ),
        (
            "[cache]\ndisk_reserve = \"plenty\"\n",
            "disk_reserve",
            ":2:16:",
        ),
        (
            "[server]\nmax_connections = 10\n[admin]\nmax_connections = 0\n",
            "admin.max_connections",
            ":4:19:",
        ),
    ] {
        let file = dir.path().join("outpost.toml");
        std::fs::write(&file, text).unwrap();
        let out = outpost(&["check-config", file.to_str().unwrap()]);
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key) && err.contains(line), "{text}: {err}");
    }
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[cache]\ndisk_reserve = \"2GiB\"\n").unwrap();
    let out = outpost(&["check-config", good.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn outpost(args: &[&str]) -> std::process::Output {
    cli_command(Path::new("."))
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
    let host = addr.to_string();
    let reply = Client::new(*addr)
        .get(path, &[("host", &host)])
        .await
        .unwrap();
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

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_the_token_on_loopback_too_and_keeps_it_across_restarts() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("outpost-cache");
    let edge = EdgeProcess::start(&cache, &origin, &[]);
    let token_file = cache.join("admin.token");
    let token = edge.token();
    assert!(
        token.len() >= 32 && token.chars().all(|c| c.is_ascii_hexdigit()),
        "{token:?}"
    );
    assert_eq!(mode(&token_file), 0o600);
    assert_eq!(mode(&cache), 0o700);
    let log = edge.log.lock().unwrap().join("\n");
    assert!(
        log.contains(token_file.to_str().unwrap()),
        "the log does not say where the token is:\n{log}"
    );
    assert!(!log.contains(&token), "the log shows the token:\n{log}");

    // From loopback, as the edge's own proxy connections come, every
    // action needs the token.
    let admin = Client::new(edge.admin);
    let host = edge.admin.to_string();
    let purge = format!("/purge?url={}", origin.url("/x"));
    let actions = [
        ("GET", "/status"),
        ("GET", "/cache"),
        ("GET", "/channels"),
        ("POST", "/reload"),
        ("POST", "/verify"),
        ("POST", purge.as_str()),
        ("POST", "/channels/sync"),
    ];
    for (method, path) in actions {
        let r = admin
            .request(method, path, &[("host", &host)])
            .await
            .unwrap();
        assert_eq!(r.status, 401, "{method} {path} without a token");
        let wrong = format!("Bearer {}", "0".repeat(64));
        let r = admin
            .request(method, path, &[("authorization", &wrong), ("host", &host)])
            .await
            .unwrap();
        assert_eq!(r.status, 401, "{method} {path} with a wrong token");
    }
    let bearer = format!("Bearer {token}");
    let r = admin
        .get("/status", &[("authorization", &bearer), ("host", &host)])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    // Health, readiness and metrics stay open for monitoring.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = admin.get(path, &[("host", &host)]).await.unwrap();
        assert_eq!(r.status, 200, "{path}");
    }

    // The next start keeps the token: scripts holding it go on working.
    drop(edge);
    let edge = EdgeProcess::start(&cache, &origin, &[]);
    assert_eq!(edge.token(), token);
    let out = edge.cli(&["status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_finds_the_token_from_flags_env_or_config_and_says_where_it_looked() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("elsewhere");
    let admin_addr = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("outpost.toml");
    std::fs::write(
        &config,
        format!(
            "[cache]\ndir = \"{}\"\n[admin]\nlisten = \"{admin_addr}\"\n",
            cache.display()
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let origin_url = origin.url("/");
    let edge = EdgeProcess::spawn(&["--config", config_arg, "--origin", &origin_url]);
    assert_eq!(edge.admin.to_string(), admin_addr);
    let token_file = cache.join("admin.token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    // A directory with no ./outpost-cache, as a user's home.
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = cli_command(home.path());
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run outpost");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let ok = |(success, stderr): (bool, String)| assert!(success, "{stderr}");

    // --config alone: the address and the token's place both come from it.
    ok(run(&["status", "--config", config_arg], &[]));
    // The token file by flag and by variable, the token by variable.
    let token_path = token_file.to_str().unwrap();
    ok(run(
        &["status", "--admin", &admin_addr, "--token-file", token_path],
        &[],
    ));
    ok(run(
        &["status", "--admin", &admin_addr],
        &[("OUTPOST_ADMIN_TOKEN_FILE", token_path)],
    ));
    ok(run(
        &["status", "--admin", &admin_addr],
        &[("OUTPOST_ADMIN_TOKEN", token.trim())],
    ));
    // A config whose admin.token_file names the file.
    let with_file = dir.path().join("with-token-file.toml");
    std::fs::write(
        &with_file,
        format!("[admin]\nlisten = \"{admin_addr}\"\ntoken_file = \"{token_path}\"\n"),
    )
    .unwrap();
    ok(run(
        &["status", "--config", with_file.to_str().unwrap()],
        &[],
    ));

    // Nowhere to find it: the error lists where the CLI looked.
    let (success, stderr) = run(&["status", "--admin", &admin_addr], &[]);
    assert!(!success);
    for place in [
        "no admin API token found",
        "OUTPOST_ADMIN_TOKEN_FILE",
        "outpost-cache/admin.token",
        "--config",
    ] {
        assert!(stderr.contains(place), "{place} missing in: {stderr}");
    }
    // A named file that is not there.
    let (success, stderr) = run(
        &[
            "status",
            "--admin",
            &admin_addr,
            "--token-file",
            "/nonexistent/t",
        ],
        &[],
    );
    assert!(!success && stderr.contains("/nonexistent/t"), "{stderr}");
    // A wrong token: refused, and the message says which token.
    let (success, stderr) = run(
        &["status", "--admin", &admin_addr, "--token", "not-the-token"],
        &[],
    );
    assert!(!success, "a wrong token was accepted");
    assert!(
        stderr.contains("refused") && stderr.contains("401") && stderr.contains("--token"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_requests_that_came_through_a_proxy_are_refused() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.toml");
    std::fs::write(&config, "[wan]\nprepos_rate = \"unlimited\"\n").unwrap();
    let edge = EdgeProcess::with_config(dir.path(), &origin, &config);
    let bearer = format!("Bearer {}", edge.token());
    let admin = Client::new(edge.admin);
    let host = edge.admin.to_string();
    let ok = admin
        .get("/status", &[("authorization", &bearer), ("host", &host)])
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    // Even with the token (say it leaked into a script on a PC).
    let relayed = admin
        .get(
            "/status",
            &[
                ("authorization", &bearer),
                ("host", &host),
                ("via", "1.1 squid"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(relayed.status, 403);
    assert!(
        String::from_utf8_lossy(&relayed.body).contains("through a proxy"),
        "{relayed:?}"
    );
    // Through the edge's own forward proxy, which connects from loopback.
    let proxy = Client::new(edge.addr);
    for (method, path) in [("GET", "/status"), ("POST", "/reload")] {
        let url = format!("http://{host}{path}");
        let r = proxy
            .request(method, &url, &[("authorization", &bearer), ("host", &host)])
            .await
            .unwrap();
        assert_eq!(r.status, 403, "{method} {url} through the proxy: {r:?}");
    }
}

/// Reads from `stream` until it is closed; the bytes it sent before.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_or_idle_clients_cannot_hold_the_admin_port() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.toml");
    std::fs::write(
        &config,
        "[admin]\nheader_read_timeout = \"3s\"\nmax_connections = 4\n",
    )
    .unwrap();
    let edge = EdgeProcess::with_config(dir.path(), &origin, &config);
    let token = edge.token();
    let request =
        format!("GET /status HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\n\r\n");

    // Four connections take every slot: one says nothing, three send half
    // a head and stop.
    let mut slow = Vec::new();
    slow.push(TcpStream::connect(edge.admin).await.unwrap());
    for _ in 0..3 {
        let mut s = TcpStream::connect(edge.admin).await.unwrap();
        s.write_all(b"GET /status HTTP/1.1\r\nhost: 127.0.0.1\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    let started = std::time::Instant::now();

    // A fifth, even a well-formed one with the token, is closed at once,
    // unanswered (not after the header timeout).
    let mut fifth = TcpStream::connect(edge.admin).await.unwrap();
    let _ = fifth.write_all(request.as_bytes()).await;
    let answer = tokio::time::timeout(Duration::from_secs(20), read_until_closed(&mut fifth))
        .await
        .expect("the connection over the limit was kept open");
    assert!(
        answer.is_empty(),
        "answered over the connection limit: {}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed only after {:?}",
        started.elapsed()
    );

    // The edge cuts the four within the header timeout (with a margin for
    // a loaded machine) ...
    for (i, s) in slow.iter_mut().enumerate() {
        let got = tokio::time::timeout(Duration::from_secs(20), read_until_closed(s))
            .await
            .unwrap_or_else(|_| panic!("slow connection {i} still open after 20 s"));
        assert!(
            !String::from_utf8_lossy(&got).contains("200 OK"),
            "connection {i}"
        );
    }
    // ... and the port serves again.
    assert!(
        wait_until(Duration::from_secs(10), || edge
            .cli(&["status"])
            .status
            .success())
        .await,
        "the admin API did not come back after the slow clients were cut"
    );

    // A connection serves one request and is closed: a client that
    // pipelines requests and never reads the answers cannot keep it open,
    // nor can one that idles after an answer.
    let mut piped = TcpStream::connect(edge.admin).await.unwrap();
    piped
        .write_all(
            b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\nGET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n",
        )
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), read_until_closed(&mut piped))
        .await
        .expect("the pipelining connection was kept open");
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 1, "{text}");
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

/// A token the CLI finds by itself is used only if nobody else could have
/// planted it, and only for this host's edge.
#[test]
fn the_cli_uses_a_found_token_only_if_it_is_private_and_only_for_this_hosts_edge() {
    use std::net::TcpListener;
    use std::os::unix::fs::PermissionsExt;
    // Something listening where the CLI would send the token: it counts
    // connections and closes them unanswered.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = listener.local_addr().unwrap().to_string();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let connections = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(stream);
            }
        });
    }
    let accepted = || connections.load(std::sync::atomic::Ordering::SeqCst);
    let run = |dir: &Path, args: &[&str]| {
        let out = cli_command(dir).args(args).output().expect("run outpost");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };

    // A symbolic link planted as ./outpost-cache/admin.token, pointing at
    // another secret.
    let planted = tempfile::tempdir().unwrap();
    let secret = planted.path().join("secret");
    std::fs::write(&secret, "not-a-token-but-a-secret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir(planted.path().join("outpost-cache")).unwrap();
    std::os::unix::fs::symlink(&secret, planted.path().join("outpost-cache/admin.token")).unwrap();
    let (ok, stderr) = run(planted.path(), &["status", "--admin", &admin]);
    assert!(!ok && stderr.contains("symbolic link"), "{stderr}");
    assert_eq!(accepted(), 0, "the planted link's target was sent");

    // A token file others can read (or write).
    let loose = tempfile::tempdir().unwrap();
    std::fs::create_dir(loose.path().join("outpost-cache")).unwrap();
    let token = loose.path().join("outpost-cache/admin.token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, stderr) = run(loose.path(), &["status", "--admin", &admin]);
    assert!(!ok && stderr.contains("not a private file"), "{stderr}");
    assert_eq!(accepted(), 0, "a token that is not private was sent");

    // A private one, but for an address off this host.
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, stderr) = run(loose.path(), &["status", "--admin", "192.0.2.1:3180"]);
    assert!(!ok && stderr.contains("not sent to"), "{stderr}");
    // Named explicitly, it is the user's call (nothing listens there: the
    // CLI gets as far as trying to connect).
    let closed = format!("127.0.0.1:{}", free_port());
    let (ok, stderr) = run(
        loose.path(),
        &[
            "status",
            "--admin",
            &closed,
            "--token-file",
            token.to_str().unwrap(),
        ],
    );
    assert!(!ok && stderr.contains("cannot reach"), "{stderr}");
    assert_eq!(accepted(), 0);
}

/// One client address cannot take every admin slot: monitoring and the
/// CLI from elsewhere still get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_take_every_admin_connection() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpSocket, TcpStream};
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.toml");
    std::fs::write(&config, "[admin]\nheader_read_timeout = \"30s\"\n").unwrap();
    let edge = EdgeProcess::with_config(dir.path(), &origin, &config);
    let token = edge.token();
    let connect_from = |from: &'static str| async move {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        socket.connect(edge.admin).await.unwrap()
    };
    // One address opens many idle connections.
    let mut idle: Vec<TcpStream> = Vec::new();
    for _ in 0..20 {
        idle.push(connect_from("127.0.0.1").await);
    }
    // Past its share, that address's connections are closed at once.
    let mut over = connect_from("127.0.0.1").await;
    let request =
        format!("GET /status HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\n\r\n");
    let _ = over.write_all(request.as_bytes()).await;
    let answer = tokio::time::timeout(Duration::from_secs(5), read_until_closed(&mut over))
        .await
        .expect("closed at once");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    // Another address is served.
    let mut other = connect_from("127.0.0.2").await;
    other.write_all(request.as_bytes()).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), read_until_closed(&mut other))
        .await
        .expect("answered");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(idle);
}

/// A configured admin token file that others could rewrite is refused:
/// whoever can write it would choose the admin token.
#[test]
fn the_edge_refuses_an_admin_token_file_others_can_write() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o666)).unwrap();
    let config = dir.path().join("outpost.toml");
    std::fs::write(
        &config,
        format!(
            "[cache]\ndir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n[server]\nlisten = [\"127.0.0.1:0\"]\n",
            dir.path().join("cache").display(),
            token.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the edge started with a token file others can write");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("writable by group or others"), "{stderr}");
}
