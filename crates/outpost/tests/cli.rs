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
}

impl EdgeProcess {
    /// Starts `outpost serve` on an ephemeral port and waits until it listens.
    fn start(cache: &Path, origin: &Origin, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(["serve", "--listen", "127.0.0.1:0", "--cache-dir"])
            .arg(cache)
            .args(["--origin", &origin.url("/")])
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
                if let Some(addr) = line
                    .split("addr=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                {
                    let _ = tx.send(strip_ansi(addr));
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("outpost did not report its address");
        Self {
            child,
            addr: addr.parse().expect("address"),
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
