//! The one harness of the binary's tests: `outpost serve` as a real
//! process (stderr collected line by line, addresses read from its log),
//! the edge an admin talks to, and `outpost` commands run the way a user
//! runs them. Every wait has a deadline.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outpost_testkit::{Client, Origin, Reply};

/// An `outpost serve` process, not yet known to listen.
pub struct Serve {
    pub child: Child,
    /// Every line the process wrote to stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    /// Runs `outpost serve` on ephemeral ports over `cache`, reverse proxy
    /// for `origin`, with `extra` arguments; does not wait for it.
    pub fn spawn(cache: &Path, origin: &str, extra: &[&str]) -> Self {
        let mut cmd = serve_command();
        cmd.args(["--admin", "127.0.0.1:0"])
            .arg("--cache-dir")
            .arg(cache)
            .args(["--origin", origin])
            .args(extra);
        Self::run(cmd)
    }

    /// Starts `cmd` (an `outpost serve` command) with its stderr collected.
    pub fn run(mut cmd: Command) -> Self {
        let mut child = cmd
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start outpost");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Self { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits (up to 30 s) for the line saying it listens; its address.
    pub fn listening(&self) -> SocketAddr {
        self.logged_address("listening (", "addr=")
    }

    /// Waits (up to 30 s) for the line saying the admin API listens; its
    /// address.
    pub fn admin_listening(&self) -> SocketAddr {
        self.logged_address("admin API listening", "admin=")
    }

    /// Waits (up to 30 s) for the line saying the library listener
    /// listens; its address.
    pub fn library_listening(&self) -> SocketAddr {
        self.logged_address("library listener", "addr=")
    }

    /// The address after `field` on the first line containing `marker`.
    fn logged_address(&self, marker: &str, field: &str) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self.log.lock().unwrap().iter().find_map(|line| {
                if !line.contains(marker) {
                    return None;
                }
                line.split(field)
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|a| strip_ansi(a).parse().ok())
            });
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "outpost did not report its {field} address:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `deadline` for the process to end.
    pub fn exits_within(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (up to 10 s) until the process has logged a line containing `text`.
    pub fn logged(&self, text: &str) -> bool {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if self.log.lock().unwrap().iter().any(|l| l.contains(text)) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `outpost serve --listen 127.0.0.1:0`, to which a test adds the rest.
fn serve_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_outpost"));
    cmd.args(["serve", "--listen", "127.0.0.1:0"]);
    cmd
}

/// An `outpost serve` that listens, with its proxy and admin addresses.
pub struct EdgeProcess {
    serve: Serve,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub cache: PathBuf,
}

impl EdgeProcess {
    /// Starts an edge on `dir/outpost-cache` with the config file `config`.
    pub fn with_config(dir: &Path, origin: &Origin, config: &Path) -> Self {
        let config = config.to_str().expect("a UTF-8 temporary path");
        Self::start(&dir.join("outpost-cache"), origin, &["--config", config])
    }

    /// Starts `outpost serve` on an ephemeral port and waits until it listens.
    pub fn start(cache: &Path, origin: &Origin, extra: &[&str]) -> Self {
        let mut args = vec!["--cache-dir", cache.to_str().expect("a UTF-8 path")];
        let origin_url = origin.url("/");
        args.extend(["--origin", &origin_url, "--admin", "127.0.0.1:0"]);
        args.extend(extra);
        let mut edge = Self::spawn(&args);
        edge.cache = cache.to_path_buf();
        edge
    }

    /// `outpost serve` run in `dir` (cache ./outpost-cache) as a reverse
    /// proxy for `origin`, with `config` as its config file if given.
    pub fn in_dir(dir: &Path, origin: &Origin, config: Option<&str>) -> Self {
        let mut cmd = serve_command();
        cmd.current_dir(dir)
            .args(["--admin", "127.0.0.1:0"])
            .args(["--origin", &origin.url("/")]);
        if let Some(text) = config {
            std::fs::write(dir.join("outpost.toml"), text).unwrap();
            cmd.args(["--config", "outpost.toml"]);
        }
        let mut edge = Self::listening(Serve::run(cmd));
        edge.cache = dir.join("outpost-cache");
        edge
    }

    /// Runs `outpost serve --listen 127.0.0.1:0 ARGS` and waits until it
    /// listens.
    pub fn spawn(args: &[&str]) -> Self {
        let mut cmd = serve_command();
        cmd.args(args);
        Self::listening(Serve::run(cmd))
    }

    fn listening(serve: Serve) -> Self {
        Self {
            addr: serve.listening(),
            admin: serve.admin_listening(),
            cache: PathBuf::new(),
            serve,
        }
    }

    /// Runs an admin command as a user would on the edge's machine: from
    /// the directory the edge was started in (its cache is the default
    /// ./outpost-cache there), with no token given.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
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
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.cache.join("admin.token"))
            .expect("the edge's admin.token")
            .trim()
            .to_string()
    }

    /// A request to the admin API with the token and `Host: host`.
    pub async fn admin_request(&self, method: &str, target: &str, host: &str) -> Reply {
        let bearer = format!("Bearer {}", self.token());
        Client::new(self.admin)
            .request(
                method,
                target,
                &[("authorization", &bearer), ("host", host)],
            )
            .await
            .unwrap()
    }
}

impl Deref for EdgeProcess {
    type Target = Serve;
    fn deref(&self) -> &Serve {
        &self.serve
    }
}

impl DerefMut for EdgeProcess {
    fn deref_mut(&mut self) -> &mut Serve {
        &mut self.serve
    }
}

/// `outpost` run in `cwd`, with none of the variables that name an admin
/// address, token or token file (the developer's own must not leak in).
pub fn cli_command(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_outpost"));
    cmd.current_dir(cwd)
        .env_remove("OUTPOST_ADMIN")
        .env_remove("OUTPOST_ADMIN_TOKEN")
        .env_remove("OUTPOST_ADMIN_TOKEN_FILE");
    cmd
}

/// `outpost ARGS` from the current directory.
pub fn outpost(args: &[&str]) -> std::process::Output {
    cli_command(Path::new("."))
        .args(args)
        .output()
        .expect("run outpost")
}

/// Writes `text` as `DIR/outpost.toml`, runs `outpost check-config` on it,
/// and asserts it fails (status 1) with `PATH` + `expected` (a
/// `:line:col: message`) in its stderr. Returns the file's path.
pub fn assert_check_config_refuses(dir: &Path, text: &str, expected: &str) -> String {
    let file = dir.join("outpost.toml");
    std::fs::write(&file, text).unwrap();
    let path = file.to_str().unwrap().to_string();
    let checked = outpost(&["check-config", &path]);
    let err = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(1), "{text}: {err}");
    assert!(err.contains(&format!("{path}{expected}")), "{text}: {err}");
    path
}

pub fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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

/// GET on the admin API.
pub async fn admin_get(addr: &SocketAddr, path: &str) -> String {
    let host = addr.to_string();
    let reply = Client::new(*addr)
        .get(path, &[("host", &host)])
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    String::from_utf8(reply.body.to_vec()).unwrap()
}

/// An edge's own config file in `dir` that lets it fetch from loopback:
/// the tests' origins are there, and a channel a fleet manager sends is
/// fetched through the destination guard, which refuses loopback unless
/// the edge's own file lists it.
pub fn loopback_allowed_config(dir: &Path) -> PathBuf {
    let path = dir.join("edge.toml");
    std::fs::write(
        &path,
        "[server]\ninternal_destinations = [\"127.0.0.0/8\"]\n",
    )
    .unwrap();
    path
}
