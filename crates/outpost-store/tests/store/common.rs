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
    obj
}
