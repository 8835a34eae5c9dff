//! What the store's tests share: keys, a stored head, a complete object.

use std::sync::Arc;

use bytes::Bytes;
use outpost_http::CacheKey;
use outpost_store::{Object, Store, StoredHead};

pub fn key(url: &str) -> CacheKey {
    CacheKey::from_uri(&url.parse().unwrap()).unwrap()
}

/// The head of a plain 200, fresh for an hour.
pub fn head() -> StoredHead {
    let (req, ()) = http::Request::get("http://origin.example/x")
        .body(())
        .unwrap()
        .into_parts();
    let (res, ()) = http::Response::builder()
        .status(200)
        .header("cache-control", "max-age=3600")
        .body(())
        .unwrap()
        .into_parts();
    let policy = outpost_http::policy::policy_for(&req, &res, std::time::SystemTime::now());
    StoredHead::new(res.status, res.headers, policy)
}

/// Stores `body` under `url` as a complete object.
pub async fn put(store: &Store, url: &str, body: &[u8]) -> Arc<Object> {
    let obj = store
        .create(&key(url), head(), Some(body.len() as u64))
        .unwrap();
    let added = obj.write(0, Bytes::copy_from_slice(body)).await.unwrap();
    store.account(added);
    assert!(store.finish(&obj).await.unwrap());
    // `finish` records the body's digest from a background task that holds
    // the store: wait for it, so that a test reopening the store after
    // this never has the old one writing the index behind it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.digest(&key(url)).unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "digest never recorded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    obj
}

/// Opens the store in `dir` with room for everything. A test that
/// "restarts" in its own process may find the dropped store's background
/// work (digesting, eviction) still holding the directory's lock for a
/// moment: wait for it, up to a deadline.
pub fn open(dir: &std::path::Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(outpost_store::StoreConfig::new(dir, 1 << 40)) {
            Err(outpost_store::StoreError::InUse { .. })
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other.unwrap(),
        }
    }
}

/// Every object file under `dir/objects`, as (name, length).
pub fn object_files(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut files = Vec::new();
    for sub in std::fs::read_dir(dir.join("objects")).unwrap() {
        let sub = sub.unwrap().path();
        if !sub.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&sub).unwrap() {
            let f = f.unwrap();
            files.push((
                f.file_name().to_string_lossy().into_owned(),
                f.metadata().unwrap().len(),
            ));
        }
    }
    files.sort();
    files
}

/// The path of the file of the object stored under `url`.
pub fn file_of(store: &Store, url: &str) -> std::path::PathBuf {
    store
        .get(&key(url))
        .unwrap()
        .expect("stored")
        .path()
        .to_path_buf()
}

/// Runs `sql` on the index of the store in `dir` (the store itself closed
/// or not: the index is in WAL mode), as an earlier crash or another
/// version could have left it.
pub fn index_sql(dir: &std::path::Path, sql: &str) {
    let conn = rusqlite::Connection::open(dir.join("index.sqlite")).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn.execute_batch(sql).unwrap();
}
