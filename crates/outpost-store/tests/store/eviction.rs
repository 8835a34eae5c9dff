//! Eviction order as docs/design.md states it: pinned objects never go;
//! objects hit at most once go before the others; least recently used
//! first within each group; objects in use are skipped.

use std::path::Path;

use outpost_store::{Store, StoreConfig};

use crate::common::{index_sql, key, object_files, put};

const KIB: usize = 1024;

fn url(name: &str) -> String {
    format!("http://origin.example/{name}")
}

/// Stores a to e (1 KiB each) and gives them hit counts, access times and
/// pins as if they had been used; returns a store limited to `max_bytes`
/// that must evict down to `low_watermark` of it.
async fn used_store(dir: &Path, max_bytes: u64, low_watermark: f64) -> Store {
    {
        let store = crate::common::open(dir);
        for name in ["a", "b", "c", "d", "e"] {
            put(&store, &url(name), &[0u8; KIB]).await;
        }
    }
    // (name, hits, last access, pinned)
    let usage = [
        ("a", 5, 100, false),
        ("b", 0, 300, false),
        ("c", 1, 200, false),
        ("d", 2, 400, false),
        ("e", 0, 50, true),
    ];
    for (name, hits, at, pinned) in usage {
        index_sql(
            dir,
            &format!(
                "UPDATE objects SET hits = {hits}, last_access = {at}, pinned = {} WHERE key = '{}'",
                pinned as i32,
                key(&url(name))
            ),
        );
    }
    let mut config = StoreConfig::new(dir, max_bytes);
    config.low_watermark = low_watermark;
    Store::open(config).unwrap()
}

fn stored(store: &Store) -> Vec<String> {
    let mut keys: Vec<String> = store
        .list(100)
        .unwrap()
        .into_iter()
        .map(|e| {
            e.key
                .trim_start_matches("http://origin.example/")
                .to_string()
        })
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn once_used_objects_go_first_then_least_recently_used_and_pinned_never() {
    let tmp = tempfile::tempdir().unwrap();
    // 5 KiB stored, 3 KiB allowed after eviction: two must go.
    let store = used_store(tmp.path(), 5 * KIB as u64, 0.6).await;
    let freed = store.evict().unwrap();
    assert_eq!(freed, 2 * KIB as u64);
    // c (1 hit, t=200) and b (0 hits, t=300) go; a stays although it was
    // used longest ago (5 hits: the working set, not a one-off scan), and
    // e is pinned although the oldest and never hit.
    assert_eq!(stored(&store), ["a", "d", "e"]);
    assert_eq!(object_files(tmp.path()).len(), 3);
    assert_eq!(store.stats().unwrap().bytes, 3 * KIB as u64);
    assert_eq!(store.stats().unwrap().evictions, 2);
    assert!(store.get(&key(&url("c"))).unwrap().is_none());
}

#[tokio::test]
async fn an_object_in_use_is_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let store = used_store(tmp.path(), 5 * KIB as u64, 0.6).await;
    // A reader holds c, the first candidate: b and then a go instead.
    let reading = store.get(&key(&url("c"))).unwrap().unwrap();
    store.evict().unwrap();
    assert_eq!(stored(&store), ["c", "d", "e"]);
    assert_eq!(&reading.read(0, KIB).await.unwrap()[..], &[0u8; KIB][..]);
}

#[tokio::test]
async fn nothing_goes_when_everything_is_pinned() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let store = used_store(tmp.path(), 1 << 40, 0.9).await;
        for name in ["a", "b", "c", "d"] {
            assert!(store.set_pinned(&key(&url(name)), true).unwrap());
        }
    }
    let mut config = StoreConfig::new(tmp.path(), KIB as u64);
    config.low_watermark = 0.5;
    let store = Store::open(config).unwrap();
    assert_eq!(store.evict().unwrap(), 0);
    assert_eq!(stored(&store), ["a", "b", "c", "d", "e"]);
    assert_eq!(object_files(tmp.path()).len(), 5);
}

#[tokio::test]
async fn storing_past_the_high_watermark_evicts_in_the_background() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(tmp.path(), 4 * KIB as u64);
    config.high_watermark = 0.9;
    config.low_watermark = 0.5;
    let store = Store::open(config).unwrap();
    for name in ["a", "b", "c", "d"] {
        put(&store, &url(name), &[0u8; KIB]).await;
    }
    // The fourth put crossed 3.6 KiB; eviction runs on a blocking task.
    // Files go first, their rows right after: wait for both.
    let evicted = wait_for(|| {
        store.stats().unwrap().bytes <= 2 * KIB as u64
            && object_files(tmp.path()).len() == stored(&store).len()
    })
    .await;
    assert!(
        evicted,
        "usage {}, files {}, rows {}",
        store.stats().unwrap().bytes,
        object_files(tmp.path()).len(),
        stored(&store).len()
    );
    assert!(stored(&store).len() <= 2);
}

/// Waits up to 10 s for `check` to hold.
async fn wait_for(mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    check()
}
