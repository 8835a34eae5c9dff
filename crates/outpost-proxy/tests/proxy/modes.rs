//! The listener's modes: forward, reverse, transparent and CONNECT; which
//! destinations each reaches, one cache across them, counts per mode.

use std::time::Duration;

use outpost_proxy::ProxyConfig;
use outpost_testkit::{Client, Origin, Resource, content, wait_until};

use crate::common::{Edge, NftRedirect, key, reverse};

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
#[ignore = "needs root: installs an nftables redirect"]
async fn transparent_connections_are_proxied_by_host_and_share_the_cache() {
    let origin = Origin::start().await;
    let body = content(200_000, 17);
    origin.put("/t.msi", Resource::new(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), ProxyConfig::default()).await;
    let _redirect = NftRedirect::install("127.0.0.2", edge.addr.port());
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
