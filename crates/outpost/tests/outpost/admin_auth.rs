//! Who may use the admin API: the token (generated, found by the CLI,
//! kept private), loopback and proxied requests, and clients that try to
//! hold the admin port.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use outpost_testkit::{Client, Origin, wait_until};

use crate::support::{EdgeProcess, cli_command};

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
