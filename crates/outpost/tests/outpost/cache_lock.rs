//! One `outpost serve` per cache directory, and a cache directory the edge
//! cannot use said once, with the path and the cause: real processes.

use std::time::Duration;

use outpost_testkit::{Client, Origin, Resource, content};

use crate::support::Serve;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_the_same_cache_dir_exits_naming_the_first_ones_pid() {
    let origin = Origin::start().await;
    origin.put("/big.iso", Resource::new(content(4 << 20, 1)).rate(1 << 20));
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let first = Serve::spawn(&cache, &origin.url("/"), &[]);
    let addr = first.listening();
    // The first one is filling an object when the second one starts.
    let (head, _body) = Client::new(addr)
        .send("GET", "/big.iso", &[])
        .await
        .unwrap();
    assert_eq!(head.status, 200);

    let mut second = Serve::spawn(&cache, &origin.url("/"), &[]);
    let status = second
        .exits_within(Duration::from_secs(30))
        .expect("the second outpost exits");
    assert!(!status.success(), "{}", second.stderr());
    let stderr = second.stderr();
    let expected = format!(
        "cache directory {} is in use by outpost pid {}; stop it or use another --cache-dir",
        cache.display(),
        first.pid()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
    // It never reached the origin: one fetch of the object in all.
    assert_eq!(origin.count("/big.iso"), 1);
}

#[test]
fn a_file_as_cache_dir_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cache");
    std::fs::write(&file, b"").unwrap();
    let mut serve = Serve::spawn(&file, "http://127.0.0.1:9/", &[]);
    let status = serve.exits_within(Duration::from_secs(30)).expect("exits");
    assert!(!status.success());
    let stderr = serve.stderr();
    let said = format!(
        "cache directory {} is a file, not a directory",
        file.display()
    );
    assert_eq!(stderr.matches(&said).count(), 1, "{stderr}");
    assert!(!stderr.contains("File exists"), "{stderr}");
}

#[test]
#[ignore = "needs root: runs the edge as another user (setpriv)"]
fn a_cache_dir_the_edge_user_cannot_write_says_so_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // Others may pass through the temporary directory, not write the cache.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_outpost"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--cache-dir")
        .arg(&cache)
        .env("NO_COLOR", "1")
        .output()
        .expect("run setpriv");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = format!(
        "cannot create {}: permission denied (running as uid 65534)",
        cache.join("lock").display()
    );
    assert_eq!(stderr.matches(&said).count(), 1, "{stderr}");
    assert_eq!(
        stderr.to_lowercase().matches("permission denied").count(),
        1,
        "{stderr}"
    );
}
