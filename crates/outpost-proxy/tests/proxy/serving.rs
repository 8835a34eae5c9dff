//! Serving what is stored: ranges from disk, refetch after expiry, what
//! passes through uncached, what a POST invalidates.

use std::time::Duration;

use outpost_testkit::{Origin, Resource, content};

use crate::common::{Edge, key, reverse};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_on_a_complete_object_come_from_disk() {
    let origin = Origin::start().await;
    let body = content(50_000, 10);
    origin.put(
        "/r.bin",
        Resource::new(body.clone()).header("content-type", "application/x-msi"),
    );
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), reverse(&origin)).await;
    let c = edge.client();
    assert!(c.get("/r.bin", &[]).await.unwrap().body == body);
    assert!(
        edge.completes(&key(&origin, "/r.bin"), Duration::from_secs(5))
            .await
    );
    let r = c.get("/r.bin", &[("range", "bytes=-100")]).await.unwrap();
    assert_eq!(r.status, 206);
    assert!(r.body == body.slice(49_900..));
    let r = c
        .get("/r.bin", &[("range", "bytes=0-9,100-109")])
        .await
        .unwrap();
    assert_eq!(r.status, 206);
    let ct = r.header("content-type").unwrap().to_string();
    assert!(ct.starts_with("multipart/byteranges; boundary="), "{ct}");
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(
        text.contains("Content-Range: bytes 0-9/50000")
            && text.contains("Content-Range: bytes 100-109/50000")
    );
    assert!(r.body.windows(10).any(|w| w == &body[100..110]));
    assert_eq!(
        r.body.len(),
        r.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
    );
    let r = c.get("/r.bin", &[("range", "bytes=60000-")]).await.unwrap();
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */50000"));
    // If-Range with another validator: the whole object.
    let r = c
        .get("/r.bin", &[("range", "bytes=0-9"), ("if-range", "\"v0\"")])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(origin.count("/r.bin"), 1);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_object_is_refetched_after_expiry() {
    let origin = Origin::start().await;
    origin.put(
        "/av.dat",
        Resource::new(content(1000, 12))
            .header("cache-control", "max-age=0")
            .etag("\"a\""),
    );
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), reverse(&origin)).await;
    let c = edge.client();
    c.get("/av.dat", &[]).await.unwrap();
    let new = content(1200, 13);
    origin.put(
        "/av.dat",
        Resource::new(new.clone())
            .header("cache-control", "max-age=0")
            .etag("\"b\""),
    );
    assert!(
        edge.completes(&key(&origin, "/av.dat"), Duration::from_secs(5))
            .await
    );
    let r = c.get("/av.dat", &[]).await.unwrap();
    assert!(r.body == new, "served the old version");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncacheable_responses_pass_through() {
    let origin = Origin::start().await;
    origin.put(
        "/private",
        Resource::new(content(1000, 14)).header("cache-control", "private"),
    );
    origin.put(
        "/missing-ok",
        // An error without explicit freshness (with it, RFC 9111 lets it be
        // stored; the rfc9111 module covers that).
        Resource::new(content(10, 1))
            .no_cache_headers()
            .status(http::StatusCode::INTERNAL_SERVER_ERROR),
    );
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), reverse(&origin)).await;
    let c = edge.client();
    for _ in 0..2 {
        assert_eq!(c.get("/private", &[]).await.unwrap().status, 200);
        assert_eq!(c.get("/missing-ok", &[]).await.unwrap().status, 500);
    }
    assert_eq!(origin.count("/private"), 2);
    assert_eq!(origin.count("/missing-ok"), 2);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_origin_response_is_cached_with_its_final_length() {
    let origin = Origin::start().await;
    let body = content(300_000, 15);
    origin.put("/chunked", Resource::new(body.clone()).chunked());
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), reverse(&origin)).await;
    let c = edge.client();
    assert!(c.get("/chunked", &[]).await.unwrap().body == body);
    assert!(
        edge.completes(&key(&origin, "/chunked"), Duration::from_secs(5))
            .await
    );
    let r = c.get("/chunked", &[]).await.unwrap();
    assert_eq!(r.header("content-length"), Some("300000"));
    assert!(r.body == body);
    assert_eq!(origin.count("/chunked"), 1);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_forwarded_and_invalidates() {
    let origin = Origin::start().await;
    origin.put("/form", Resource::new(content(100, 16)));
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), reverse(&origin)).await;
    let c = edge.client();
    c.get("/form", &[]).await.unwrap();
    assert!(
        edge.completes(&key(&origin, "/form"), Duration::from_secs(5))
            .await
    );
    assert_eq!(c.request("POST", "/form", &[]).await.unwrap().status, 200);
    let r = c.get("/form", &[]).await.unwrap();
    assert_eq!(r.header("x-cache"), Some("MISS"));
    assert_eq!(origin.count("/form"), 3);
    edge.stop().await;
}
