//! The export shared by Debian's real Samba: `smbd` started by the test on
//! a loopback port with a config of its own, `smbclient` listing and
//! fetching files, bytes compared with the origin's; after a sync that
//! changed a file, a new connection sees the new tree.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use outpost_testkit::content;

use crate::support::*;

const PASSWORD: &str = "Outpost-test-1";

/// A running `smbd` sharing one folder as `packages`; stopped when dropped.
struct Samba {
    child: Child,
    port: u16,
    conf: PathBuf,
    user: String,
}

impl Samba {
    fn start(state: &Path, share: &Path) -> Self {
        let port = free_port();
        let user = current_user();
        for d in ["private", "lock", "state", "cache", "pid", "ncalrpc"] {
            std::fs::create_dir_all(state.join(d)).unwrap();
        }
        let s = state.display();
        let conf = state.join("smb.conf");
        std::fs::write(
            &conf,
            format!(
                "[global]
  server role = standalone server
  netbios name = OUTPOSTTEST
  security = user
  map to guest = never
  server min protocol = SMB2
  server signing = mandatory
  smb ports = {port}
  interfaces = lo
  bind interfaces only = yes
  disable netbios = yes
  private dir = {s}/private
  lock directory = {s}/lock
  state directory = {s}/state
  cache directory = {s}/cache
  pid directory = {s}/pid
  ncalrpc dir = {s}/ncalrpc
  passdb backend = tdbsam:{s}/private/passdb.tdb
  log file = {s}/smbd.log
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
[packages]
  path = {share}
  read only = yes
  valid users = {user}
",
                share = share.display()
            ),
        )
        .unwrap();
        let mut smbpasswd = Command::new("smbpasswd")
            .args(["-c", conf.to_str().unwrap(), "-s", "-a", &user])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("smbpasswd (Debian package samba-common-bin)");
        {
            use std::io::Write;
            let stdin = smbpasswd.stdin.as_mut().unwrap();
            writeln!(stdin, "{PASSWORD}\n{PASSWORD}").unwrap();
        }
        let out = smbpasswd.wait_with_output().unwrap();
        assert!(out.status.success(), "smbpasswd: {out:?}");
        // Not `--no-process-group`: smbd signals its whole process group
        // when it stops, which would then be the test runner's.
        let child = Command::new("smbd")
            .args(["--foreground", "-s"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smbd (Debian package samba)");
        let samba = Self {
            child,
            port,
            conf,
            user,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "smbd never listened on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        samba
    }

    /// Runs `smbclient` commands on a new connection to the share.
    fn client(&self, commands: &str) -> Output {
        let out = Command::new("smbclient")
            .arg("//127.0.0.1/packages")
            .args(["-p", &self.port.to_string()])
            .args(["-U", &format!("{}%{PASSWORD}", self.user)])
            .args(["-s", self.conf.to_str().unwrap()])
            .args(["-c", commands])
            .output()
            .expect("smbclient (Debian package smbclient)");
        assert!(
            out.status.success(),
            "smbclient {commands}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn get(&self, remote: &str, local: &Path) -> Bytes {
        self.client(&format!("get {remote} {}", local.display()));
        Bytes::from(std::fs::read(local).unwrap())
    }
}

impl Drop for Samba {
    fn drop(&mut self) {
        // SIGTERM: smbd stops its helpers on the way out (SIGKILL would
        // leave them behind).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: smbd switches to the authenticated user"]
async fn samba_shares_the_export_and_a_new_connection_sees_the_next_sync() {
    let origin = outpost_testkit::Origin::start().await;
    let mut lib = sample_library(Style::Nginx);
    lib.publish(&origin, &[]);
    let cache = tempfile::tempdir().unwrap();
    let share_parent = tempfile::tempdir().unwrap();
    let dir = share_parent.path().join("packages");
    let mut config = channel(&origin, "/lib/");
    config.export = Some(dir.clone());
    let site = Site::start(cache.path(), vec![config], 1 << 30).await;
    assert_eq!(site.sync("lib").await.result, "ok");

    let state = tempfile::tempdir().unwrap();
    let samba = tokio::task::block_in_place(|| Samba::start(state.path(), &dir));
    let got = tempfile::tempdir().unwrap();
    let listing = tokio::task::block_in_place(|| samba.client("ls; cd drivers; ls"));
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    for name in ["setup.msi", "drivers", "net.cab", "gpu"] {
        assert!(listing.contains(name), "{name} not listed:\n{listing}");
    }
    for (path, (body, _)) in &lib.files {
        let remote = path.strip_prefix("/lib/").unwrap().replace('/', "\\");
        let local = got.path().join(remote.replace('\\', "_"));
        let fetched = tokio::task::block_in_place(|| samba.get(&remote, &local));
        assert!(
            fetched == *body,
            "{path}: the share's bytes differ from the origin's"
        );
    }
    // Writes are refused.
    std::fs::write(got.path().join("up.txt"), b"x").unwrap();
    let put = tokio::task::block_in_place(|| {
        Command::new("smbclient")
            .arg("//127.0.0.1/packages")
            .args(["-p", &samba.port.to_string()])
            .args(["-U", &format!("{}%{PASSWORD}", samba.user)])
            .args(["-s", samba.conf.to_str().unwrap()])
            .args([
                "-c",
                &format!("put {} up.txt", got.path().join("up.txt").display()),
            ])
            .output()
            .unwrap()
    });
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&put.stdout),
        String::from_utf8_lossy(&put.stderr)
    );
    assert!(said.contains("NT_STATUS_ACCESS_DENIED"), "{said}");
    assert!(!dir.join("up.txt").exists());

    // The origin changes a package; the next sync's tree is what a new
    // connection sees.
    let new = content(720_000, 77);
    lib.add("/lib/setup.msi", new.clone(), "a2");
    lib.publish(&origin, &[]);
    assert_eq!(site.sync("lib").await.result, "ok");
    let fetched =
        tokio::task::block_in_place(|| samba.get("setup.msi", &got.path().join("setup-2.msi")));
    assert!(fetched == new, "the share still serves the old package");
}
