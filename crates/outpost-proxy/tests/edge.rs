//! The edge end to end: a real listener, a real disk store, a fake origin,
//! clients over loopback sockets.

mod common;
use common::Edge;

use std::net::SocketAddr;
use std::time::Duration;

use outpost_proxy::ProxyConfig;
use outpost_store::StoreConfig;
use outpost_testkit::{Client, Origin, Resource, content, wait_until};

impl Edge {
    async fn start(dir: &std::path::Path, config: ProxyConfig) -> Self {
        Self::start_sized(dir, config, 1 << 34).await
    }

    async fn start_sized(dir: &std::path::Path, mut config: ProxyConfig, max_bytes: u64) -> Self {
        // The fake origins are on loopback, which the destination guard
        // refuses by default (tests/security.rs checks that).
        if config.internal_destinations.is_empty() {
            config.internal_destinations = vec!["127.0.0.0/8".parse().unwrap()];
        }
        Self::start_with_store(config, StoreConfig::new(dir, max_bytes)).await
    }
}

fn reverse(origin: &Origin) -> ProxyConfig {
    ProxyConfig {
        origin: Some(origin.url("/").parse().unwrap()),
        ..ProxyConfig::default()
    }
}

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
async fn fill_resumes_after_the_origin_drops_the_connection() {
    let origin = Origin::start().await;
    let body = content(3 << 20, 4);
    origin.put(
        "/flaky.iso",
        Resource::new(body.clone()).drop_after(1 << 20, 2),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut config = reverse(&origin);
    config.fill.retry_backoff_initial = Duration::from_millis(10);
    let edge = Edge::start(dir.path(), config).await;
    let reply = edge.client().get("/flaky.iso", &[]).await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.body_error.is_none(), "{:?}", reply.body_error);
    assert!(reply.body == body, "resumed body differs");
    let reqs = origin.requests_for("/flaky.iso");
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert_eq!(reqs[1].range(), Some("bytes=1048576-3145727"));
    assert_eq!(reqs[1].headers.get("if-range").unwrap(), "\"v1\"");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_outlasts_an_origin_outage_longer_than_its_retry_count() {
    let origin = Origin::start().await;
    let body = content(2 << 20, 41);
    // The first response is cut after 512 KiB; then the origin answers 503
    // (a WAN outage, as far as the edge can tell) until it comes back.
    origin.put(
        "/outage.iso",
        Resource::new(body.clone())
            .rate(1 << 20)
            .drop_after(512 << 10, 1),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut config = reverse(&origin);
    config.fill.max_retries = 2;
    config.fill.retry_backoff_initial = Duration::from_millis(20);
    config.fill.retry_backoff_max = Duration::from_millis(50);
    config.fill.retry_for = Duration::from_secs(30);
    let edge = Edge::start(dir.path(), config).await;
    let client = edge.client();
    let download = tokio::spawn(async move { client.get("/outage.iso", &[]).await });
    assert!(wait_until(Duration::from_secs(10), || origin.count("/outage.iso") >= 1).await);
    origin.put(
        "/outage.iso",
        Resource::new(body.clone()).status(http::StatusCode::SERVICE_UNAVAILABLE),
    );
    // Well past max_retries failed attempts in a row...
    assert!(
        wait_until(Duration::from_secs(10), || origin.count("/outage.iso") >= 8).await,
        "the fill stopped retrying"
    );
    // ... and the origin is back.
    origin.put("/outage.iso", Resource::new(body.clone()));
    let reply = download.await.unwrap().unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.body_error.is_none(), "{:?}", reply.body_error);
    assert!(reply.body == body, "body after the outage differs");
    let last = origin.requests_for("/outage.iso").pop().unwrap();
    assert_eq!(last.status, http::StatusCode::PARTIAL_CONTENT);
    assert!(last.range().is_some_and(|r| r.starts_with("bytes=")));
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
async fn restart_with_a_warm_cache_makes_no_origin_request() {
    let origin = Origin::start().await;
    let body = content(1 << 20, 5);
    origin.put("/warm.exe", Resource::new(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), reverse(&origin)).await;
    assert!(edge.client().get("/warm.exe", &[]).await.unwrap().body == body);
    assert!(
        edge.completes(&key(&origin, "/warm.exe"), Duration::from_secs(5))
            .await
    );
    edge.stop().await;
    let edge = Edge::start(dir.path(), reverse(&origin)).await;
    let reply = edge.client().get("/warm.exe", &[]).await.unwrap();
    assert_eq!(reply.header("x-cache"), Some("HIT"));
    assert!(reply.body == body);
    assert_eq!(origin.count("/warm.exe"), 1);
    edge.stop().await;
}

fn key(origin: &Origin, path: &str) -> outpost_http::CacheKey {
    outpost_http::CacheKey::from_uri(&origin.url(path).parse().unwrap()).unwrap()
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
async fn forward_and_reverse_modes_share_one_cache_entry() {
    let origin = Origin::start().await;
    let body = content(100_000, 7);
    origin.put("/shared.bin", Resource::new(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), ProxyConfig::default()).await;
    let url = origin.url("/shared.bin");
    let reply = edge.client().get(&url, &[]).await.unwrap();
    assert!(reply.body == body);
    edge.stop().await;
    let edge = Edge::start(dir.path(), reverse(&origin)).await;
    let reply = edge
        .client()
        .get("/shared.bin", &[("host", "whatever.example")])
        .await
        .unwrap();
    assert_eq!(reply.header("x-cache"), Some("HIT"));
    assert!(reply.body == body);
    assert_eq!(origin.count("/shared.bin"), 1);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_an_open_proxy() {
    let origin = Origin::start().await;
    origin.put("/x", Resource::new(content(10, 8)));
    let dir = tempfile::tempdir().unwrap();
    // Origin-form request on a plain forward listener: refused.
    let edge = Edge::start(dir.path(), ProxyConfig::default()).await;
    let reply = edge.client().get("/x", &[]).await.unwrap();
    assert_eq!(reply.status, 400);
    // CONNECT to a port that is not allowed.
    let reply = edge
        .client()
        .request("CONNECT", &origin.addr().to_string(), &[])
        .await
        .unwrap();
    assert_eq!(reply.status, 403);
    edge.stop().await;
    // A client outside allowed_clients.
    let config = ProxyConfig {
        allowed_clients: vec!["10.0.0.0/8".parse().unwrap()],
        ..reverse(&origin)
    };
    let edge = Edge::start(dir.path(), config).await;
    let reply = edge.client().get("/x", &[]).await.unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(origin.count("/x"), 0);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnels_to_allowed_ports() {
    let origin = Origin::start().await;
    origin.put("/t", Resource::new(content(1000, 9)));
    let dir = tempfile::tempdir().unwrap();
    let config = ProxyConfig {
        connect_ports: vec![origin.addr().port()],
        ..ProxyConfig::default()
    };
    let edge = Edge::start(dir.path(), config).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    s.write_all(format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", origin.addr()).as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    s.write_all(b"GET /t HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    assert!(String::from_utf8_lossy(&resp).starts_with("HTTP/1.1 200"));
    assert_eq!(origin.count("/t"), 1);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_is_closed_and_a_busy_one_kept() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An echo server stands for the TLS site behind the tunnel.
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let idle = Duration::from_millis(600);
    let mut config = ProxyConfig {
        connect_ports: vec![echo_addr.port()],
        ..ProxyConfig::default()
    };
    config.h1.tunnel_idle_timeout = idle;
    let edge = Edge::start(dir.path(), config).await;
    let open = || async {
        let mut s = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
        s.write_all(
            format!("CONNECT {echo_addr} HTTP/1.1\r\nHost: {echo_addr}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = [0u8; 39];
        s.read_exact(&mut buf).await.unwrap();
        assert!(buf.starts_with(b"HTTP/1.1 200"));
        s
    };
    let mut busy = open().await;
    let mut quiet = open().await;
    let started = std::time::Instant::now();
    // The busy tunnel moves a few bytes every 100 ms for four idle periods.
    while started.elapsed() < idle * 4 {
        busy.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        busy.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping", "the busy tunnel was cut");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The quiet one has been closed by the edge by now.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), quiet.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the idle tunnel was not closed: {closed:?}"
    );
    edge.stop().await;
}

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
        // stored; tests/rfc9111.rs covers that).
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_pinned_objects() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    // 4 MiB cache: eviction above 3.8 MiB, down to 3.6 MiB.
    let edge = Edge::start_sized(dir.path(), reverse(&origin), 4 << 20).await;
    let c = edge.client();
    let pinned = content(1 << 20, 100);
    origin.put("/pinned", Resource::new(pinned.clone()));
    c.get("/pinned", &[]).await.unwrap();
    let pk = key(&origin, "/pinned");
    assert!(edge.completes(&pk, Duration::from_secs(5)).await);
    assert!(edge.engine.store.set_pinned(&pk, true).unwrap());
    for i in 0..8 {
        let path = format!("/filler{i}");
        origin.put(&path, Resource::new(content(1 << 20, 200 + i)));
        c.get(&path, &[]).await.unwrap();
        let k = key(&origin, &path);
        assert!(
            wait_until(Duration::from_secs(5), || edge
                .engine
                .store
                .get(&k)
                .unwrap()
                .is_none_or(|o| o.is_complete()))
            .await
        );
    }
    assert!(
        wait_until(Duration::from_secs(5), || edge
            .engine
            .store
            .stats()
            .unwrap()
            .bytes
            <= 4 << 20)
        .await,
        "cache never went under its limit"
    );
    assert!(edge.engine.store.stats().unwrap().evictions > 0);
    let r = c.get("/pinned", &[]).await.unwrap();
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert!(r.body == pinned);
    edge.stop().await;
}

/// An nftables table that redirects this test's traffic; deleted on drop.
struct NftRedirect(String);

impl NftRedirect {
    fn install(to_port: u16) -> Option<Self> {
        let table = format!("outpost_test_{}", std::process::id());
        let script = format!(
            "table ip {table} {{\n chain out {{\n  type nat hook output priority -100; policy accept;\n  ip daddr 127.0.0.2 tcp dport 80 redirect to :{to_port}\n }}\n}}\n"
        );
        let ok = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .ok()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take()?.write_all(script.as_bytes()).ok()?;
                child.wait().ok()
            });
        ok.filter(|s| s.success()).map(|_| Self(table))
    }
}

impl Drop for NftRedirect {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "ip", &self.0])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: installs an nftables redirect"]
async fn transparent_connections_are_proxied_by_host_and_share_the_cache() {
    let origin = Origin::start().await;
    let body = content(200_000, 17);
    origin.put("/t.msi", Resource::new(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), ProxyConfig::default()).await;
    let _redirect = NftRedirect::install(edge.addr.port()).expect(
        "cannot install an nftables redirect (needs root and nft; .ci/run installs nftables)",
    );
    // The PC talks to "the origin" at 127.0.0.2:80; the firewall hands the
    // connection to the edge, which proxies by the Host header.
    let host = origin.addr().to_string();
    let pc = Client::new("127.0.0.2:80".parse().unwrap());
    let reply = pc.get("/t.msi", &[("host", &host)]).await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.body == body);
    assert_eq!(
        reply.header("via"),
        Some("1.1 outpost"),
        "the request did not go through the edge"
    );
    assert!(
        edge.completes(&key(&origin, "/t.msi"), Duration::from_secs(5))
            .await
    );
    // The same URL through forward mode is the same entry.
    let reply = edge.client().get(&origin.url("/t.msi"), &[]).await.unwrap();
    assert_eq!(reply.header("x-cache"), Some("HIT"));
    assert_eq!(origin.count("/t.msi"), 1);
    edge.stop().await;
}

/// Sends raw bytes and returns everything the edge answers until it closes
/// the connection (or `wait` passes).
async fn raw_exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> (String, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_or_oversized_requests_are_refused_and_the_edge_keeps_serving() {
    let origin = Origin::start().await;
    origin.put("/ok", Resource::new(content(100, 18)));
    let dir = tempfile::tempdir().unwrap();
    let mut config = reverse(&origin);
    config.h1.header_read_timeout = Duration::from_millis(300);
    config.h1.max_head_bytes = 8 * 1024;
    config.h1.max_headers = 20;
    let edge = Edge::start(dir.path(), config).await;
    let many_headers: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("CL and TE together", b"POST /ok HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("differing Content-Length", b"POST /ok HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde".to_vec(), "HTTP/1.1 400"),
        ("Content-Length list that disagrees", b"POST /ok HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 5\r\n\r\nabcde".to_vec(), "HTTP/1.1 400"),
        ("chunked not final", b"POST /ok HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("unknown coding", b"POST /ok HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec(), "HTTP/1.1 501"),
        ("TE in HTTP/1.0", b"POST /ok HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("obs-fold", b"GET /ok HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("space before colon", b"GET /ok HTTP/1.1\r\nHost : a\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("bare LF inside a header value", b"GET /ok HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("no Host in HTTP/1.1", b"GET /ok HTTP/1.1\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("two Host headers", b"GET /ok HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("oversized head", format!("GET /ok HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "x".repeat(9000)).into_bytes(), "HTTP/1.1 431"),
        ("too many headers", format!("GET /ok HTTP/1.1\r\nHost: a\r\n{many_headers}\r\n").into_bytes(), "HTTP/1.1 431"),
        ("slow head (slowloris)", b"GET /ok HTTP/1.1\r\nHost: a\r\n".to_vec(), "HTTP/1.1 408"),
    ];
    for (name, request, expected) in cases {
        let (answer, closed) = raw_exchange(edge.addr, &request, Duration::from_secs(3)).await;
        assert!(
            answer.starts_with(expected),
            "{name}: expected {expected}, got {answer:?}"
        );
        assert!(
            closed,
            "{name}: connection left open after a refused request"
        );
    }
    assert_eq!(
        origin.count("/ok"),
        0,
        "a refused request reached the origin"
    );
    // Invalid chunk sizes in a body: the request never completes upstream.
    let (answer, closed) = raw_exchange(
        edge.addr,
        b"POST /ok HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(closed, "connection kept after a bad chunk: {answer:?}");
    assert_eq!(
        origin.count("/ok"),
        0,
        "a request with a malformed chunked body reached the origin whole"
    );
    // And the edge still serves others, on keep-alive connections too.
    let (answer, closed) = raw_exchange(edge.addr, b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\nGET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", Duration::from_secs(3)).await;
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
    assert!(closed);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_request_bodies_are_forwarded_and_100_continue_answered() {
    let origin = Origin::start().await;
    origin.put("/upload", Resource::new(content(10, 19)).no_cache_headers());
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), reverse(&origin)).await;
    let (answer, _) = raw_exchange(
        edge.addr,
        b"POST /upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"),
        "{answer:?}"
    );
    let posted = origin.requests_for("/upload");
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].method, http::Method::POST);
    assert_eq!(&posted[0].body[..], b"hello world");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_requests_reach_only_allowed_destinations() {
    use outpost_proxy::config::Destination;
    let origin = Origin::start().await;
    origin.put("/pkg.msi", Resource::new(content(1000, 3)));
    let dir = tempfile::tempdir().unwrap();
    let config = ProxyConfig {
        allowed_destinations: Some(vec![
            Destination::parse("*.corp.example").unwrap(),
            Destination::parse("10.0.0.0/8").unwrap(),
        ]),
        connect_ports: vec![origin.addr().port()],
        ..ProxyConfig::default()
    };
    let edge = Edge::start(dir.path(), config).await;
    let client = edge.client();
    let denied = client.get(&origin.url("/pkg.msi"), &[]).await.unwrap();
    assert_eq!(denied.status, 403);
    let tunnel = client
        .request("CONNECT", &origin.addr().to_string(), &[])
        .await
        .unwrap();
    assert_eq!(tunnel.status, 403);
    assert_eq!(origin.count("/pkg.msi"), 0, "nothing reached the origin");
    edge.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let config = ProxyConfig {
        allowed_destinations: Some(vec![Destination::parse("127.0.0.0/8").unwrap()]),
        ..ProxyConfig::default()
    };
    let edge = Edge::start(dir.path(), config).await;
    let allowed = edge
        .client()
        .get(&origin.url("/pkg.msi"), &[])
        .await
        .unwrap();
    assert_eq!(allowed.status, 200);
    assert_eq!(origin.count("/pkg.msi"), 1);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_origin_is_verified_against_the_configured_ca_and_cached() {
    use rustls_pki_types::pem::PemObject;
    let (origin, ca_pem) = Origin::start_tls().await;
    let body = content(300_000, 8);
    origin.put("/secure.msi", Resource::new(body.clone()));
    let ca = rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();

    // Without the CA the origin's certificate is refused: 502, nothing
    // stored.
    let dir = tempfile::tempdir().unwrap();
    let config = ProxyConfig {
        origin: Some(origin.https_url("/").parse().unwrap()),
        ..ProxyConfig::default()
    };
    let edge = Edge::start(dir.path(), config).await;
    let reply = edge.client().get("/secure.msi", &[]).await.unwrap();
    assert_eq!(reply.status, 502);
    assert_eq!(origin.count("/secure.msi"), 0);
    edge.stop().await;

    // Trusting it: fetched once over TLS, then served from disk.
    let dir = tempfile::tempdir().unwrap();
    let config = ProxyConfig {
        origin: Some(origin.https_url("/").parse().unwrap()),
        upstream_ca: ca,
        ..ProxyConfig::default()
    };
    let edge = Edge::start(dir.path(), config).await;
    let client = edge.client();
    let first = client.get("/secure.msi", &[]).await.unwrap();
    assert_eq!((first.status.as_u16(), first.body == body), (200, true));
    let key = outpost_http::CacheKey::from_uri(&origin.https_url("/secure.msi").parse().unwrap())
        .unwrap();
    assert!(edge.completes(&key, Duration::from_secs(10)).await);
    let second = client.get("/secure.msi", &[]).await.unwrap();
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert!(second.body == body);
    assert_eq!(origin.count("/secure.msi"), 1);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_beyond_max_connections_gets_503_and_a_freed_slot_serves_again() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start().await;
    origin.put("/a.msi", Resource::new(content(1000, 12)));
    let dir = tempfile::tempdir().unwrap();
    let mut config = reverse(&origin);
    config.max_connections = 2;
    let edge = Edge::start(dir.path(), config).await;
    // Two PCs hold keep-alive connections open after a first request.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
        s.write_all(b"GET /a.msi HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(&content(1000, 12)) {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed early");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    let busy = edge.client().get("/a.msi", &[]).await.unwrap();
    assert_eq!(busy.status, 503);
    assert_eq!(busy.header("retry-after"), Some("5"));
    // One PC leaves: its slot serves the next connection.
    drop(held.pop());
    let mut served = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(r) = edge.client().get("/a.msi", &[]).await
            && r.status == 200
        {
            served = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let served = served.expect("a freed slot was not reused");
    assert!(served.body == content(1000, 12));
    assert_eq!(origin.count("/a.msi"), 1);
    drop(held);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_bytes_are_counted_by_mode() {
    use outpost_proxy::h1::Mode;
    use std::sync::atomic::Ordering::Relaxed;
    let origin = Origin::start().await;
    origin.put("/a.msi", Resource::new(content(5000, 11)));
    let dir = tempfile::tempdir().unwrap();
    let config = ProxyConfig {
        sites: vec![outpost_proxy::Site {
            host: "packages.branch".into(),
            origin: origin.url("/").parse().unwrap(),
        }],
        // Sites and a forward proxy on one edge: the admin says so.
        forward: Some(true),
        ..ProxyConfig::default()
    };
    let edge = Edge::start(dir.path(), config).await;
    let client = edge.client();
    for _ in 0..2 {
        let reply = client.get(&origin.url("/a.msi"), &[]).await.unwrap();
        assert_eq!(reply.status, 200);
    }
    let reply = client
        .get("/a.msi", &[("host", "packages.branch")])
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let served = &edge.engine.served;
    let requests = |m: Mode| served.mode_requests[m as usize].load(Relaxed);
    let bytes = |m: Mode| served.mode_bytes[m as usize].load(Relaxed);
    let counts = || {
        (
            requests(Mode::Forward),
            requests(Mode::Reverse),
            requests(Mode::Transparent),
        )
    };
    // A request is counted once its response is written, which may be just
    // after the client has read it.
    wait_until(Duration::from_secs(5), || counts() == (2, 1, 0)).await;
    assert_eq!(counts(), (2, 1, 0));
    assert!(bytes(Mode::Forward) >= 2 * 5000 && bytes(Mode::Reverse) >= 5000);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_bodies_and_stalled_readers_are_cut_off_while_others_are_served() {
    use std::sync::atomic::Ordering::Relaxed;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BIG: usize = 32 << 20;
    let origin = Origin::start().await;
    origin.put("/form", Resource::new(content(100, 21)));
    origin.put("/big.iso", Resource::new(content(BIG, 22)));
    let dir = tempfile::tempdir().unwrap();
    let mut config = reverse(&origin);
    config.h1.body_timeout = Duration::from_millis(500);
    config.h1.body_min_rate = 1000;
    config.h1.send_timeout = Duration::from_millis(500);
    let edge = Edge::start(dir.path(), config).await;

    // An upload at a fair rate (40 KB/s, 20 KB) goes through.
    let mut fair = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    fair.write_all(
        b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 20000\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    for _ in 0..10 {
        fair.write_all(&[b'x'; 2000]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), fair.read_to_end(&mut answer))
        .await
        .expect("fair upload answered")
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "fair upload: {:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(200)])
    );

    // A body trickled at 100 B/s, each piece well inside the stall limit,
    // is cut off once it falls behind 1000 B/s.
    let trickle = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    let (mut rd, mut wr) = trickle.into_split();
    wr.write_all(b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n")
        .await
        .unwrap();
    let dripping = tokio::spawn(async move {
        for _ in 0..1000 {
            if wr.write_all(b"0123456789").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    let mut sink = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(20), rd.read_to_end(&mut sink)).await;
    assert!(
        ended.is_ok(),
        "a trickled body held its connection for 20 s"
    );
    dripping.abort();

    // A client that asks for a big object and reads nothing is cut off:
    // its response ends (the edge counts it served) with most bytes unsent.
    let warm = edge.client().get("/big.iso", &[]).await.unwrap();
    assert_eq!(warm.body.len(), BIG);
    let served = || {
        let s = &edge.engine.served;
        s.from_cache.load(Relaxed) + s.from_fills.load(Relaxed)
    };
    // The warm request is counted once its response is written, which may
    // be just after the client read it: wait for that before the baseline.
    assert!(wait_until(Duration::from_secs(10), || served() >= BIG as u64).await);
    let served_before = served();
    // A small receive buffer, so that the body cannot all sit in kernel
    // buffers (loopback autotuning would allow tens of MiB).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let mut stalled = socket.connect(edge.addr).await.unwrap();
    stalled
        .write_all(b"GET /big.iso HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || served() > served_before).await,
        "the edge kept waiting on a client that reads nothing"
    );
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut got))
        .await
        .expect("connection closed")
        .ok();
    assert!(got.len() < BIG, "a stalled reader still got the whole body");

    // Others are served all along.
    let ok = edge.client().get("/big.iso", &[]).await.unwrap();
    assert_eq!(ok.header("x-cache"), Some("HIT"));
    assert_eq!(ok.body, content(BIG, 22));
    edge.stop().await;
}

/// A small tmpfs, unmounted on drop; `None` where mounting is not allowed.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size_mib: u64) -> Option<Self> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: mounts a tmpfs"]
async fn a_fill_that_meets_a_full_disk_evicts_and_goes_on() {
    const MIB: usize = 1 << 20;
    let origin = Origin::start().await;
    // Chunked: the edge cannot check the length against free space up
    // front, as with an origin that does not say it.
    origin.put("/a.cab", Resource::new(content(16 * MIB, 31)).chunked());
    origin.put("/b.cab", Resource::new(content(16 * MIB, 32)).chunked());
    origin.put("/big.wim", Resource::new(content(80 * MIB, 33)).chunked());
    let dir = tempfile::tempdir().unwrap();
    // The cache's limit (1 GiB) is above what the disk has (100 MiB).
    let _disk = SmallDisk::mount(dir.path(), 100).expect("mounting a tmpfs needs CAP_SYS_ADMIN");
    let edge = Edge::start_sized(dir.path(), reverse(&origin), 1 << 30).await;
    let client = edge.client();
    for (path, seed) in [("/a.cab", 31), ("/b.cab", 32)] {
        let r = client.get(path, &[]).await.unwrap();
        assert_eq!(r.body, content(16 * MIB, seed));
        assert!(
            edge.completes(&key(&origin, path), Duration::from_secs(10))
                .await
        );
    }
    let r = client.get("/big.wim", &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.body == content(80 * MIB, 33),
        "the client of a fill that met a full disk got {} bytes, not the object",
        r.body.len()
    );
    assert!(
        edge.completes(&key(&origin, "/big.wim"), Duration::from_secs(10))
            .await,
        "the big object was not kept"
    );
    let store = &edge.engine.store;
    let gone = ["/a.cab", "/b.cab"]
        .iter()
        .filter(|p| store.get(&key(&origin, p)).unwrap().is_none())
        .count();
    assert!(gone >= 1, "nothing was evicted to make room");
    let again = client.get("/big.wim", &[]).await.unwrap();
    assert_eq!(again.header("x-cache"), Some("HIT"));
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: mounts a tmpfs"]
async fn a_client_whose_fill_cannot_be_stored_gets_the_rest_from_the_origin() {
    const MIB: usize = 1 << 20;
    let origin = Origin::start().await;
    let body = content(60 * MIB, 41);
    origin.put("/image.wim", Resource::new(body.clone()).rate(16 << 20));
    let dir = tempfile::tempdir().unwrap();
    let _disk = SmallDisk::mount(dir.path(), 200).expect("mounting a tmpfs needs CAP_SYS_ADMIN");
    let edge = Edge::start_sized(dir.path(), reverse(&origin), 1 << 30).await;
    let client = edge.client();
    let download = tokio::spawn(async move { client.get("/image.wim", &[]).await });
    assert!(wait_until(Duration::from_secs(10), || origin.sent_bytes() >= 8 << 20).await);
    // Something else on the machine takes every free byte mid-download, and
    // nothing in the cache can be evicted for it: the edge cannot keep the
    // object, but the PC downloading it must still get it.
    {
        use std::io::Write;
        let mut ballast = std::fs::File::create(dir.path().join("ballast")).unwrap();
        let mib = vec![0u8; MIB];
        while ballast.write_all(&mib).is_ok() {}
    }
    let r = download.await.unwrap().unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.body == body,
        "the client got {} bytes, not the object",
        r.body.len()
    );
    // The rest came with a range validated against the stored ETag.
    let requests = origin.requests_for("/image.wim");
    assert!(
        requests.iter().any(
            |q| q.range().is_some() && q.headers.get("if-range").is_some_and(|v| v == "\"v1\"")
        ),
        "{requests:?}"
    );
    assert!(
        edge.engine
            .store
            .get(&key(&origin, "/image.wim"))
            .unwrap()
            .is_none_or(|o| !o.is_complete()),
        "an object the disk could not hold is marked complete"
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_an_object_without_validators_checks_the_bytes_it_already_has() {
    let without_validators = |r: Resource| {
        let mut r = r;
        r.etag = None;
        r.last_modified = None;
        r
    };
    let origin = Origin::start().await;
    let same = content(3 << 20, 41);
    origin.put(
        "/same.bin",
        without_validators(Resource::new(same.clone()).drop_after(1 << 20, 1)),
    );
    let first = content(3 << 20, 42);
    let second = content(3 << 20, 43);
    origin.put(
        "/changes.bin",
        without_validators(
            Resource::new(first.clone())
                .rate(2 << 20)
                .drop_after(1 << 20, 1),
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut config = reverse(&origin);
    config.fill.retry_backoff_initial = Duration::from_millis(300);
    let edge = Edge::start(dir.path(), config).await;

    // Same bytes: the resume asks from 64 KiB before the cut, they match,
    // and the download completes.
    let reply = edge.client().get("/same.bin", &[]).await.unwrap();
    assert!(reply.body_error.is_none(), "{:?}", reply.body_error);
    assert!(reply.body == same, "resumed body differs");
    let reqs = origin.requests_for("/same.bin");
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[1].range(), Some("bytes=983040-3145727"));
    assert!(reqs[1].headers.get("if-range").is_none());

    // The object changes (same length, no validator) while the fill waits
    // to resume: the overlap differs, so no client gets a spliced body.
    let client = edge.client();
    let download = tokio::spawn(async move { client.get("/changes.bin", &[]).await });
    assert!(wait_until(Duration::from_secs(5), || origin.count("/changes.bin") >= 1).await);
    origin.put(
        "/changes.bin",
        without_validators(Resource::new(second.clone())),
    );
    let spliced: Vec<u8> = first[..1 << 20]
        .iter()
        .chain(&second[1 << 20..])
        .copied()
        .collect();
    // An error before the head (cut early) is fine too.
    if let Ok(reply) = download.await.unwrap() {
        assert!(reply.body[..] != spliced[..], "a spliced body was served");
        assert!(
            reply.body_error.is_some() || reply.body == first,
            "neither cut nor the first version"
        );
    }
    // The next client gets the new version whole.
    assert!(
        wait_until(Duration::from_secs(10), || edge
            .engine
            .fills
            .progress()
            .is_empty())
        .await
    );
    let reply = edge.client().get("/changes.bin", &[]).await.unwrap();
    assert!(reply.body == second, "the new version is not served whole");
    edge.stop().await;
}
