//! One process per cache directory: a second one is refused with the
//! holder's pid, and the lock goes with the process that held it.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use outpost_store::{Store, StoreConfig, StoreError};

/// Whether another process could take the directory's lock now.
fn lockable_by_another_process(cache: &Path) -> bool {
    Command::new("flock")
        .args(["--nonblock", "--exclusive"])
        .arg(cache.join("lock"))
        .arg("true")
        .status()
        .expect("run flock(1)")
        .success()
}

/// A process that holds `cache`'s lock the way a store does: its pid in
/// the file, an exclusive flock on it. Killed when dropped.
struct Holder(Child);

impl Holder {
    fn start(cache: &Path) -> Self {
        std::fs::create_dir_all(cache).unwrap();
        let child = Command::new("sh")
            .arg("-c")
            .arg("exec flock --exclusive --close \"$1\" sh -c 'echo $PPID > \"$1\"; exec sleep 60' sh \"$1\"")
            .arg("sh")
            .arg(cache.join("lock"))
            .spawn()
            .expect("spawn the holder");
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = child.id().to_string();
        while std::fs::read_to_string(cache.join("lock"))
            .map(|s| s.trim().to_string())
            .ok()
            != Some(pid.clone())
        {
            assert!(Instant::now() < deadline, "the holder never took the lock");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self(child)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_open_store_holds_the_lock_with_its_pid_and_releases_it_when_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let store = Store::open(StoreConfig::new(&cache, 1 << 30)).unwrap();
    assert_eq!(
        std::fs::read_to_string(cache.join("lock")).unwrap().trim(),
        std::process::id().to_string()
    );
    assert!(
        !lockable_by_another_process(&cache),
        "another process could lock a directory in use"
    );
    // A clone is the same store: the lock stays until the last one goes.
    let clone = store.clone();
    drop(store);
    assert!(!lockable_by_another_process(&cache));
    drop(clone);
    assert!(
        lockable_by_another_process(&cache),
        "the lock outlived the store"
    );
}

#[test]
fn a_directory_another_process_holds_is_refused_naming_its_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let holder = Holder::start(&cache);
    let pid = holder.0.id();

    let err = Store::open(StoreConfig::new(&cache, 1 << 30))
        .err()
        .expect("a directory in use by another process is refused");
    assert!(
        matches!(err, StoreError::InUse { holder: Some(p), .. } if p == pid),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "cache directory {} is in use by outpost pid {pid}; stop it or use another --cache-dir",
            cache.display()
        )
    );
    // The refusal neither took the file from its holder nor created
    // anything else in the directory.
    assert_eq!(
        std::fs::read_to_string(cache.join("lock")).unwrap().trim(),
        pid.to_string()
    );
    assert!(!cache.join("index.sqlite").exists());
    assert!(!cache.join("objects").exists());

    // Once the holder is gone (however it ended), the directory is free.
    drop(holder);
    let store = Store::open(StoreConfig::new(&cache, 1 << 30)).unwrap();
    assert_eq!(
        std::fs::read_to_string(cache.join("lock")).unwrap().trim(),
        std::process::id().to_string()
    );
    drop(store);
}

#[test]
fn a_store_reopened_in_the_same_process_shares_the_lock() {
    // How the edge's own tests restart it in place: the old store may live
    // on in a task for a moment.
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let first = Store::open(StoreConfig::new(&cache, 1 << 30)).unwrap();
    let second = Store::open(StoreConfig::new(&cache, 1 << 30)).unwrap();
    drop(first);
    assert!(!lockable_by_another_process(&cache));
    drop(second);
    assert!(lockable_by_another_process(&cache));
}
