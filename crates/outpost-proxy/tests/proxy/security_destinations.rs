//! Security, what a hostile LAN client (or a web page driving a PC) can
//! reach through the edge: the edge itself, loopback and internal ranges,
//! loops, other sites behind a reverse edge, and connection slots. Real
//! listeners and services that count what reaches them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use outpost_proxy::ProxyConfig;
use outpost_testkit::{Client, Origin, Resource, content};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::common::{Edge, NftRedirect, loopback_allowed};

/// A TCP service that counts the connections it accepts (and answers
/// 200 to anything), standing in for the admin API or a loopback daemon.
struct Service {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Service {
    async fn start(bind: &str) -> Option<Self> {
        let listener = TcpListener::bind(bind).await.ok()?;
        let addr = listener.local_addr().ok()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nadmin!\n")
                        .await;
                });
            }
        });
        Some(Self { addr, accepted })
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_request_never_reaches_the_edge_itself_or_its_admin_api() {
    let admin = Service::start("127.0.0.1:0").await.unwrap();
    // Even an admin who allows loopback destinations keeps the edge's own
    // addresses out of reach.
    let edge = Edge::start_in_tempdir(loopback_allowed()).await;
    edge.engine.add_own_address(admin.addr);
    let client = edge.client();
    for (method, url) in [
        ("POST", format!("http://{}/reload", admin.addr)),
        ("GET", format!("http://{}/cache", admin.addr)),
        (
            "GET",
            format!("http://localhost:{}/status", admin.addr.port()),
        ),
        ("GET", format!("http://{}/anything", edge.addr)),
    ] {
        let reply = client.request(method, &url, &[]).await.unwrap();
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {url}");
    }
    let reply = client
        .request("CONNECT", &admin.addr.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(admin.accepted(), 0, "the admin API saw a proxied request");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_and_link_local_destinations_are_refused_by_default() {
    let daemon = Service::start("127.0.0.2:0").await.unwrap();
    let daemon6 = Service::start("[::1]:0").await;
    let edge = Edge::start_in_tempdir(ProxyConfig {
        connect_ports: vec![443, daemon.addr.port()],
        ..ProxyConfig::default()
    })
    .await;
    let client = edge.client();
    let mut urls = vec![
        format!("http://{}/", daemon.addr),
        format!("http://localhost:{}/", daemon.addr.port()),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[::ffff:127.0.0.2]/".to_string(),
        "http://0.0.0.0/".to_string(),
    ];
    // ::1 is refused whether or not this host has IPv6 loopback to
    // listen on.
    urls.push(match &daemon6 {
        Some(d6) => format!("http://{}/", d6.addr),
        None => "http://[::1]:8080/".to_string(),
    });
    for url in &urls {
        let started = std::time::Instant::now();
        let reply = client.get(url, &[]).await.unwrap();
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{url}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{url}: refused without trying to connect"
        );
    }
    let reply = client
        .request("CONNECT", &daemon.addr.to_string(), &[])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "CONNECT to loopback");
    assert_eq!(daemon.accepted(), 0);
    assert_eq!(daemon6.map_or(0, |d| d.accepted()), 0);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_can_allow_an_internal_range() {
    let origin = Origin::start().await;
    origin.put("/a", Resource::new(content(100, 1)));
    let edge = Edge::start_in_tempdir(loopback_allowed()).await;
    let reply = edge.client().get(&origin.url("/a"), &[]).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(origin.count("/a"), 1);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_comes_back_through_the_edge_is_a_loop() {
    let origin = Origin::start().await;
    origin.put("/a", Resource::new(content(100, 1)));
    let edge = Edge::start_in_tempdir(loopback_allowed()).await;
    let via = format!("1.1 squid, {}", edge.engine.via);
    let reply = edge
        .client()
        .get(&origin.url("/a"), &[("via", &via)])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::LOOP_DETECTED);
    assert_eq!(origin.count("/a"), 0);
    // Another edge's Via (a chain of edges) is not a loop.
    let reply = edge
        .client()
        .get(&origin.url("/a"), &[("via", "1.1 outpost-0123456789")])
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let sent = origin.requests_for("/a");
    let via_sent = sent[0].headers.get("via").unwrap().to_str().unwrap();
    assert!(via_sent.ends_with(&edge.engine.via), "{via_sent}");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverse_edge_is_not_an_open_proxy() {
    let origin = Origin::start().await;
    origin.put("/base/a", Resource::new(content(100, 1)));
    let other = Origin::start().await;
    other.put("/x", Resource::new(content(100, 2)));
    let edge = Edge::start_in_tempdir(ProxyConfig {
        origin: Some(origin.url("/base/").parse().unwrap()),
        ..ProxyConfig::default()
    })
    .await;
    let client = edge.client();
    let reply = client.get(&other.url("/x"), &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = client
        .request("CONNECT", &other.addr().to_string(), &[])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(other.requests().len(), 0);
    // The origin's own name in absolute form is its own site.
    let reply = client.get(&origin.url("/a"), &[]).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(origin.count("/base/a"), 1);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_paths_cannot_climb_out_of_the_sites_prefix() {
    let origin = Origin::start().await;
    origin.put("/secret", Resource::new(content(100, 1)));
    origin.put("/base/x", Resource::new(content(100, 2)));
    let edge = Edge::start_in_tempdir(ProxyConfig {
        origin: Some(origin.url("/base/").parse().unwrap()),
        ..ProxyConfig::default()
    })
    .await;
    let client = edge.client();
    for path in [
        "/../secret",
        "/%2e%2e/secret",
        "/x/../../secret",
        "/.%2E/secret",
        "/..%5csecret",
        "/%252e%252e/secret",
        "/..;/secret",
        "/%u002e%u002e/secret",
        "/%c0%ae%c0%ae/secret",
        "/a%2f..%2f..%2fsecret",
        "/x/%2e%2e%2f%2e%2e%2fsecret",
    ] {
        let reply = client.get(path, &[]).await.unwrap();
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
    }
    assert_eq!(origin.count("/secret"), 0);
    let reply = client.get("/y/../x", &[]).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, content(100, 2));
    edge.stop().await;
}

/// Connects to `to` from the local address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(from.parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_clients_hold_no_connection_slot() {
    let origin = Origin::start().await;
    origin.put("/a", Resource::new(content(100, 1)));
    let edge = Edge::start_in_tempdir(ProxyConfig {
        allowed_clients: vec!["127.0.0.2/32".parse().unwrap()],
        max_connections: 2,
        ..loopback_allowed()
    })
    .await;
    // Outsiders open connections and say nothing.
    let mut idle = Vec::new();
    for _ in 0..6 {
        idle.push(connect_from("127.0.0.1:0", edge.addr).await);
    }
    // A refused client that does ask is told so, and the connection ends.
    let mut asking = connect_from("127.0.0.1:0", edge.addr).await;
    asking
        .write_all(b"GET http://example.org/ HTTP/1.1\r\nhost: example.org\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), asking.read_to_end(&mut answer))
        .await
        .expect("the refused connection was closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // The PCs the edge is for are served.
    for _ in 0..2 {
        let mut pc = connect_from("127.0.0.2:0", edge.addr).await;
        let request = format!(
            "GET {} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            origin.url("/a")
        );
        pc.write_all(request.as_bytes()).await.unwrap();
        let mut reply = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), pc.read_to_end(&mut reply))
            .await
            .unwrap()
            .unwrap();
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
    drop(idle);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blank_lines_do_not_keep_a_connection_open() {
    let mut config = loopback_allowed();
    config.h1.idle_timeout = Duration::from_secs(1);
    config.h1.header_read_timeout = Duration::from_secs(1);
    let edge = Edge::start_in_tempdir(config).await;
    let mut stream = TcpStream::connect(edge.addr).await.unwrap();
    let started = std::time::Instant::now();
    let closed = async {
        let mut buf = [0u8; 1024];
        loop {
            if stream.write_all(b"\r\n").await.is_err() {
                return;
            }
            match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("a CRLF flood held the connection for 10 s");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed after {:?}",
        started.elapsed()
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_requests_reach_only_web_ports() {
    // A mail server a web page would like the edge to write HTTP to.
    let smtp = Service::start("127.0.0.1:0").await.unwrap();
    let edge = Edge::start_in_tempdir(ProxyConfig {
        forward_ports: vec![(80, 80), (443, 443)],
        ..loopback_allowed()
    })
    .await;
    let reply = edge
        .client()
        .request("POST", &format!("http://{}/", smtp.addr), &[])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(smtp.accepted(), 0);
    // The default list has the privileged ports of mail and the like out.
    assert!(!ProxyConfig::default().forward_port_allowed(25));
    assert!(ProxyConfig::default().forward_port_allowed(8080));
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: installs an nftables redirect"]
async fn a_reverse_edge_behind_a_dnat_serves_its_sites_and_nothing_else() {
    let site = Origin::start().await;
    site.put("/pkgs/a.msi", Resource::new(content(1000, 1)));
    let other = Origin::start().await;
    other.put("/x", Resource::new(content(1000, 2)));
    let edge = Edge::start_in_tempdir(ProxyConfig {
        sites: vec![outpost_proxy::Site {
            host: "packages.branch".into(),
            origin: site.url("/").parse().unwrap(),
        }],
        ..loopback_allowed()
    })
    .await;
    let _dnat = NftRedirect::install("127.0.0.3", edge.addr.port());
    let pc = Client::new("127.0.0.3:80".parse().unwrap());
    let reply = pc
        .get("/pkgs/a.msi", &[("host", "packages.branch")])
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "the site is served through the DNAT");
    let reply = pc
        .get("/x", &[("host", &other.addr().to_string())])
        .await
        .unwrap();
    assert_eq!(
        reply.status,
        StatusCode::BAD_REQUEST,
        "another host through the DNAT"
    );
    assert_eq!(
        other.requests().len(),
        0,
        "the reverse edge proxied elsewhere"
    );
    edge.stop().await;
}
