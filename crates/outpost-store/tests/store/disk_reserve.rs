//! The free space the store leaves on its file system: proportional by
//! default, configurable, and small enough that a small file system still
//! caches.

use crate::common::{head, key};

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use outpost_store::{DiskReserve, Store, StoreConfig};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

#[test]
fn the_automatic_reserve_is_one_percent_within_bounds() {
    let auto = |fs| DiskReserve::Auto.bytes_for(fs);
    // Floor: 16 MiB...
    assert_eq!(auto(GIB), 16 * MIB);
    assert_eq!(auto(64 * MIB), 16 * MIB);
    // ... but never half of a tiny file system or more.
    assert_eq!(auto(32 * MIB), 16 * MIB);
    assert_eq!(auto(20 * MIB), 10 * MIB);
    assert_eq!(auto(0), 0);
    // 1 % in between.
    assert_eq!(auto(10 * GIB), 10 * GIB / 100);
    assert_eq!(auto(50_000_000_000), 500_000_000);
    assert_eq!(auto(400 * GIB), 4 * GIB);
    // Ceiling: 4 GiB.
    assert_eq!(auto(4096 * GIB), 4 * GIB);
}

#[test]
fn a_configured_reserve_is_taken_as_given() {
    assert_eq!(DiskReserve::Bytes(2 * GIB).bytes_for(50 * GIB), 2 * GIB);
    assert_eq!(DiskReserve::Bytes(0).bytes_for(50 * GIB), 0);
    assert_eq!(DiskReserve::Percent(5.0).bytes_for(200 * GIB), 10 * GIB);
    assert_eq!(DiskReserve::Percent(100.0).bytes_for(GIB), GIB);
}

fn store_with(dir: &Path, reserve: DiskReserve) -> Store {
    let mut config = StoreConfig::new(dir, 1 << 40);
    config.disk_reserve = reserve;
    Store::open(config).unwrap()
}

/// Stores `len` bytes under `url`; the error if the store refuses.
async fn put(store: &Store, url: &str, len: usize) -> Result<(), outpost_store::StoreError> {
    let obj = store.create(&key(url), head(), Some(len as u64))?;
    let added = obj.write(0, Bytes::from(vec![7u8; len])).await?;
    store.account(added);
    assert!(store.finish(&obj).await?);
    Ok(())
}

#[tokio::test]
async fn the_configured_reserve_decides_what_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    // The whole file system reserved: nothing is stored, and the refusal
    // says it is the disk.
    let all = store_with(&tmp.path().join("a"), DiskReserve::Percent(100.0));
    let err = put(&all, "http://origin.example/a", 4096)
        .await
        .unwrap_err();
    assert!(err.is_disk_full(), "{err}");
    assert!(all.list(10).unwrap().is_empty());
    // No reserve: stored.
    let none = store_with(&tmp.path().join("b"), DiskReserve::Bytes(0));
    put(&none, "http://origin.example/a", 4096).await.unwrap();
    assert_eq!(none.list(10).unwrap().len(), 1);
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "outpost-test"])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: the store's background tasks may still hold a file.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
#[ignore = "needs root: mounts a tmpfs"]
async fn a_small_file_system_still_caches() {
    let tmp = tempfile::tempdir().unwrap();
    // 48 MiB: with a fixed 64 MiB reserve nothing would ever be stored.
    let fs = Tmpfs::mount(&tmp.path().join("fs"), "48m");
    let store = store_with(&fs.0.join("cache"), DiskReserve::Auto);
    for i in 0..3 {
        put(
            &store,
            &format!("http://origin.example/{i}"),
            (8 * MIB) as usize,
        )
        .await
        .unwrap_or_else(|e| panic!("object {i} refused: {e}"));
    }
    assert_eq!(store.list(10).unwrap().len(), 3);
    // The reserve still holds: a 12 MiB object would leave less than
    // 16 MiB free.
    let err = put(&store, "http://origin.example/3", (12 * MIB) as usize)
        .await
        .unwrap_err();
    assert!(err.is_disk_full(), "{err}");
    drop(store);
}
