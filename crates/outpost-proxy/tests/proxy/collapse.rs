//! Collapsing: many clients of one object make one origin request, a late
//! joiner streams what the fill has committed, and the limits on fills.

use std::time::Duration;

use outpost_testkit::{Origin, Resource, content, wait_until};

use crate::common::{Edge, key, reverse};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_concurrent_clients_cause_one_origin_request() {
    let origin = Origin::start().await;
    let body = content(8 << 20, 1);
    origin.put("/pkg.msi", Resource::new(body.clone()).rate(16 << 20));
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), reverse(&origin)).await;
    let client = edge.client();
    let replies =
        futures_util::future::join_all((0..40).map(|_| client.get("/pkg.msi", &[]))).await;
    for reply in replies {
        let reply = reply.unwrap();
        assert_eq!(reply.status, 200);
        assert!(reply.body == body, "a client received wrong bytes");
    }
    assert_eq!(origin.count("/pkg.msi"), 1, "{:?}", origin.requests());
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_gets_first_byte_before_fill_ends() {
    let origin = Origin::start().await;
    let body = content(4 << 20, 2);
    // 4 MiB at 2 MiB/s: the fill takes about two seconds.
    origin.put("/slow.bin", Resource::new(body.clone()).rate(2 << 20));
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), reverse(&origin)).await;
    let client = edge.client();
    let first = tokio::spawn(async move { client.get("/slow.bin", &[]).await });
    assert!(wait_until(Duration::from_secs(10), || origin.sent_bytes() >= 1 << 20).await);
    let (head, mut late_body) = client.send("GET", "/slow.bin", &[]).await.unwrap();
    assert_eq!(head.status, 200);
    use http_body_util::BodyExt;
    let mut late = late_body
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap()
        .to_vec();
    assert!(!late.is_empty());
    assert!(
        origin.sent_bytes() < body.len() as u64,
        "the late joiner's first byte came only after the fill ended"
    );
    while let Some(f) = late_body.frame().await {
        late.extend_from_slice(&f.unwrap().into_data().unwrap());
    }
    assert!(late[..] == body[..], "the late joiner received wrong bytes");
    let first = first.await.unwrap().unwrap();
    assert!(first.body == body);
    assert_eq!(origin.count("/slow.bin"), 1);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_on_cold_object_fetches_that_range_at_once_and_fills_the_rest_once() {
    let origin = Origin::start().await;
    let len = 16 << 20;
    let body = content(len, 3);
    origin.put("/bits.cab", Resource::new(body.clone()).rate(32 << 20));
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), reverse(&origin)).await;
    let client = edge.client();
    let start = 12 << 20;
    let reply = client
        .get(
            "/bits.cab",
            &[("range", &format!("bytes={}-{}", start, start + 65535))],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 206);
    assert_eq!(
        reply.header("content-range").unwrap(),
        format!("bytes {}-{}/{}", start, start + 65535, len)
    );
    assert!(reply.body == body.slice(start..start + 65536));
    let first = &origin.requests_for("/bits.cab")[0];
    assert_eq!(
        first.range(),
        Some(format!("bytes={}-{}", start, start + 65535).as_str()),
        "the range was not fetched on its own"
    );
    // Multiple range requests from different clients, then the whole object.
    let replies = futures_util::future::join_all((0..8u64).map(|i| {
        let s = (i as usize) * (2 << 20) + 1000;
        async move {
            (
                s,
                client
                    .get(
                        "/bits.cab",
                        &[("range", &format!("bytes={}-{}", s, s + 99_999))],
                    )
                    .await
                    .unwrap(),
            )
        }
    }))
    .await;
    for (s, r) in replies {
        assert_eq!(r.status, 206);
        assert!(r.body == body.slice(s..s + 100_000));
    }
    let full = client.get("/bits.cab", &[]).await.unwrap();
    assert_eq!(full.status, 200);
    assert!(full.body == body);
    // Every byte crossed the "WAN" once: the origin planned at most the object plus
    // the overlap of concurrently requested ranges.
    let planned: u64 = origin
        .requests_for("/bits.cab")
        .iter()
        .map(|r| r.body_bytes_planned)
        .sum();
    assert!(
        planned <= len as u64 + (1 << 20),
        "origin sent {planned} bytes for a {len}-byte object"
    );
    assert!(
        origin
            .requests_for("/bits.cab")
            .iter()
            .all(|r| r.status == 206),
        "a full-object fetch was made"
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_after_a_stale_on_arrival_response_is_not_served_from_its_fill() {
    // RFC 9111 section 4: a response with no freshness lifetime is never
    // reused without validation. Requests that arrive while it streams share
    // it (collapsed forwarding); one that arrives after the whole body was
    // delivered, while the edge still records the object, must not.
    let origin = Origin::start().await;
    let body = content(64 << 10, 43);
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), reverse(&origin)).await;
    let client = edge.client();
    for i in 0..40 {
        let path = format!("/stale-on-arrival-{i}");
        origin.put(
            &path,
            Resource::new(body.clone()).header("cache-control", "max-age=0"),
        );
        let first = client.get(&path, &[]).await.unwrap();
        assert!(first.body == body);
        let second = client.get(&path, &[]).await.unwrap();
        assert!(second.body == body);
        assert_eq!(
            origin.count(&path),
            2,
            "request {i}: the second client was served the first one's response"
        );
    }
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fill_goes_on_when_the_first_client_hangs_up() {
    let origin = Origin::start().await;
    let body = content(4 << 20, 6);
    origin.put("/abort.msi", Resource::new(body.clone()).rate(8 << 20));
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), reverse(&origin)).await;
    let (head, incoming) = edge.client().send("GET", "/abort.msi", &[]).await.unwrap();
    assert_eq!(head.status, 200);
    drop(incoming);
    let k = key(&origin, "/abort.msi");
    assert!(
        edge.completes(&k, Duration::from_secs(10)).await,
        "fill stopped with its client"
    );
    let reply = edge.client().get("/abort.msi", &[]).await.unwrap();
    assert!(reply.body == body);
    assert_eq!(origin.count("/abort.msi"), 1);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_revalidation_sends_one_conditional_request() {
    let origin = Origin::start().await;
    let body = content(200_000, 11);
    origin.put(
        "/stale.dat",
        Resource::new(body.clone())
            .header("cache-control", "max-age=0")
            .latency(Duration::from_millis(300)),
    );
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), reverse(&origin)).await;
    let c = edge.client();
    assert!(c.get("/stale.dat", &[]).await.unwrap().body == body);
    assert!(
        edge.completes(&key(&origin, "/stale.dat"), Duration::from_secs(5))
            .await
    );
    let replies = futures_util::future::join_all((0..20).map(|_| c.get("/stale.dat", &[]))).await;
    for r in replies {
        let r = r.unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body == body);
    }
    let reqs = origin.requests_for("/stale.dat");
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(reqs[1].is_conditional());
    assert_eq!(reqs[1].status, 304);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_beyond_max_fills_gets_503_with_retry_after() {
    let origin = Origin::start().await;
    let slow = content(2 << 20, 9);
    origin.put("/slow.iso", Resource::new(slow.clone()).rate(2 << 20));
    origin.put("/other.msi", Resource::new(content(1000, 10)));
    let dir = tempfile::tempdir().unwrap();
    let mut config = reverse(&origin);
    config.fill.max_fills = 1;
    let edge = Edge::start(dir.path(), config).await;
    let client = edge.client();
    let first = tokio::spawn(async move { client.get("/slow.iso", &[]).await });
    assert!(wait_until(Duration::from_secs(10), || origin.sent_bytes() > 100_000).await);
    let busy = edge.client().get("/other.msi", &[]).await.unwrap();
    assert_eq!(busy.status, 503);
    assert_eq!(busy.header("retry-after"), Some("5"));
    assert_eq!(
        origin.count("/other.msi"),
        0,
        "refused before asking the origin"
    );
    assert!(first.await.unwrap().unwrap().body == slow);
    let key = outpost_http::CacheKey::from_uri(&origin.url("/slow.iso").parse().unwrap()).unwrap();
    assert!(edge.completes(&key, Duration::from_secs(10)).await);
    assert!(
        wait_until(Duration::from_secs(10), || edge.engine.fills.active_count()
            == 0)
        .await
    );
    let later = edge.client().get("/other.msi", &[]).await.unwrap();
    assert_eq!(later.status, 200);
    edge.stop().await;
}
