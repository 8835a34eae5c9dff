//! Clients that misbehave or overload the edge: malformed, oversized and
//! ambiguous requests, request bodies, connection limits, slow readers and
//! writers; the edge refuses them and keeps serving everyone else.

use std::time::Duration;

use outpost_testkit::{Origin, Resource, content, wait_until};

use crate::common::{Edge, raw_exchange, reverse};

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
