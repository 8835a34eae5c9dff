//! RFC points that need more than a rule table: an origin that sends 1xx,
//! an origin that cannot be reached, a forward edge that is no one's CDN.

use super::*;

/// A fake origin on a raw socket (the testkit origin cannot send 1xx): every
/// request gets `103 Early Hints` and `102 Processing` before a storable
/// 200. Returns its address and a count of the requests it answered.
async fn interim_origin(
    gate: Option<Arc<tokio::sync::Notify>>,
) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let count = count.clone();
            let gate = gate.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        count.fetch_add(1, Ordering::SeqCst);
                        let hints = b"HTTP/1.1 103 Early Hints\r\n\
                            Link: </style.css>; rel=preload; as=style\r\n\r\n";
                        let rest = b"HTTP/1.1 102 Processing\r\n\r\n\
                            HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\
                            Cache-Control: max-age=3600\r\nETag: \"e1\"\r\n\r\nhello";
                        if socket.write_all(hints).await.is_err() {
                            return;
                        }
                        // The test holds the rest until it has what it
                        // needs in place (a second client waiting).
                        if let Some(gate) = &gate {
                            gate.notified().await;
                        }
                        if socket.write_all(rest).await.is_err() {
                            return;
                        }
                    }
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, answered)
}

/// Sends `request` on a new connection and reads until the final response
/// (the first non-1xx head) and its 5-byte body are in: everything the
/// client saw, as text.
async fn raw_exchange(edge: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut socket = tokio::net::TcpStream::connect(edge).await.unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&seen).to_string();
            let final_head = text
                .match_indices("HTTP/1.")
                .map(|(at, _)| at)
                .find(|&at| !text[at + 9..].starts_with('1'));
            if let Some(at) = final_head
                && let Some(end) = text[at..].find("\r\n\r\n")
                && text.len() >= at + end + 4 + 5
            {
                return text;
            }
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return text,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("no final response within 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_responses_reach_the_client_that_caused_them_and_are_never_stored() {
    use std::sync::atomic::Ordering;
    let (origin, answered) = interim_origin(None).await;
    let dir = tempfile::tempdir().unwrap();
    let config = ProxyConfig {
        origin: Some(format!("http://{origin}/").parse().unwrap()),
        ..ProxyConfig::default()
    };
    let store = StoreConfig::new(dir.path(), 1 << 30);
    let running = Edge::start_with_store(config, store).await.owning(dir);
    let engine = &running.engine;
    let edge = running.addr;

    let miss = raw_exchange(edge, "GET /r HTTP/1.1\r\nHost: site\r\n\r\n").await;
    let early = miss.find("HTTP/1.1 103 Early Hints\r\n");
    let processing = miss.find("HTTP/1.1 102 Processing\r\n");
    let ok = miss.find("HTTP/1.1 200 OK\r\n");
    assert!(
        early.is_some() && early < processing && processing < ok,
        "the 1xx come first, in order:\n{miss}"
    );
    let hints = &miss[early.unwrap()..processing.unwrap()];
    assert!(
        hints
            .to_ascii_lowercase()
            .contains("link: </style.css>; rel=preload; as=style"),
        "the hint's fields are passed on:\n{hints}"
    );
    assert!(miss.ends_with("hello"), "{miss}");
    assert!(
        wait_until(Duration::from_secs(10), || engine
            .fills
            .progress()
            .is_empty())
        .await,
        "fill never finished"
    );

    let hit = raw_exchange(edge, "GET /r HTTP/1.1\r\nHost: site\r\n\r\n").await;
    assert!(
        hit.starts_with("HTTP/1.1 200 OK\r\n"),
        "a hit has no 1xx:\n{hit}"
    );
    assert!(hit.to_ascii_lowercase().contains("x-cache: hit"), "{hit}");
    assert_eq!(answered.load(Ordering::SeqCst), 1);

    // An HTTP/1.0 client must not get a 1xx (RFC 9110 section 15.2), even
    // when its request reaches the origin, which sends them.
    let old = raw_exchange(
        edge,
        "GET /r HTTP/1.0\r\nHost: site\r\nCache-Control: no-cache\r\n\r\n",
    )
    .await;
    assert_eq!(answered.load(Ordering::SeqCst), 2, "the origin was asked");
    assert!(
        old.starts_with("HTTP/1.1 200 OK\r\n"),
        "no 1xx for HTTP/1.0:\n{old}"
    );
    running.stop().await;
}

/// Not an RFC rule, but what an admin reads when the origin is down: the
/// 502 says why (refused, and where), not "client error (Connect)".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_origin_says_why_in_its_502() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    for (origin, why) in [
        (
            format!("http://127.0.0.1:{port}/"),
            format!("connection refused (127.0.0.1:{port})"),
        ),
        (
            "http://outpost-test.invalid/".to_string(),
            "DNS lookup failed (outpost-test.invalid:80)".to_string(),
        ),
    ] {
        let config = ProxyConfig {
            origin: Some(origin.parse().unwrap()),
            ..ProxyConfig::default()
        };
        let edge = Edge::start_with_store(config, StoreConfig::new(dir.path(), 1 << 30)).await;
        let reply = edge.client().get(PATH, &[]).await.unwrap();
        let body = String::from_utf8_lossy(&reply.body).to_string();
        edge.stop().await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{body}");
        assert!(body.contains(&why), "{origin}: {body}");
    }
}

/// A forward proxy is not the origin's CDN: `CDN-Cache-Control` neither
/// stores a `no-store` response nor is taken away from the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_mode_ignores_cdn_cache_control_and_passes_it_on() {
    let origin = Origin::start().await;
    origin.put(PATH, cdn("no-store", "max-age=3600"));
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), ProxyConfig::default()).await;
    let client = edge.client();
    let url = origin.url(PATH);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let reply = client.get(&url, &[]).await.unwrap();
        seen.push((
            reply.status,
            reply.header("x-cache").map(str::to_string),
            reply.header("cdn-cache-control").map(str::to_string),
        ));
    }
    edge.stop().await;
    let passed = (
        StatusCode::OK,
        Some("PASS".to_string()),
        Some("max-age=3600".to_string()),
    );
    assert_eq!(seen, vec![passed.clone(), passed]);
    assert_eq!(origin.count(PATH), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_join_a_collapsed_request_get_no_interim_responses() {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gate = Arc::new(tokio::sync::Notify::new());
    let (origin, answered) = interim_origin(Some(gate.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let config = ProxyConfig {
        origin: Some(format!("http://{origin}/").parse().unwrap()),
        ..ProxyConfig::default()
    };
    let store = StoreConfig::new(dir.path(), 1 << 30);
    let running = Edge::start_with_store(config, store).await.owning(dir);
    let engine = running.engine.clone();
    let edge = running.addr;
    let request = "GET /r HTTP/1.1\r\nHost: site\r\n\r\n";

    // The leader's 103 has come through: its request is at the origin,
    // which holds back the rest.
    let mut leader = tokio::net::TcpStream::connect(edge).await.unwrap();
    leader.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !String::from_utf8_lossy(&seen).contains("HTTP/1.1 103 Early Hints") {
            let n = leader.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the edge closed the leader's connection");
            seen.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("no 103 for the leader within 10 s");

    let joiner = tokio::spawn(raw_exchange(edge, request));
    assert!(
        wait_until(Duration::from_secs(10), || engine.waiting_on_others() >= 1).await,
        "the second client never joined the leader's request"
    );
    gate.notify_one();
    let joined = joiner.await.unwrap();
    assert!(
        joined.starts_with("HTTP/1.1 200 OK\r\n"),
        "a client that joined gets no 1xx:\n{joined}"
    );
    assert!(joined.ends_with("hello"), "{joined}");
    assert_eq!(answered.load(Ordering::SeqCst), 1, "one request upstream");
    running.stop().await;
}
