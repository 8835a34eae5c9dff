//! DNS mode: names the site's DNS points at the edge are served as
//! origins, resolved through the configured upstream resolvers only (here
//! Debian's dnsmasq, run by the test on a loopback port), with the loop
//! guard.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use http::StatusCode;
use outpost_proxy::ProxyConfig;
use outpost_proxy::library::HostPattern;
use outpost_proxy::local::NoLocalSite;
use outpost_testkit::{Client, Origin, Resource, content};

use crate::common::{Edge, loopback_allowed};

/// Debian's dnsmasq on a loopback port, answering A records for the
/// given names (and the names under them) and REFUSED for the rest (it has
/// no upstream). Killed on drop.
struct Dnsmasq {
    addr: SocketAddr,
    child: std::process::Child,
}

impl Dnsmasq {
    async fn start(records: &[(&str, Ipv4Addr)]) -> Self {
        // dnsmasq takes a port number, not :0: a port free for UDP a moment
        // ago may be taken (for TCP, which it also binds) when it starts.
        // Such a start ends at once; try another port then.
        let mut errors = String::new();
        for _ in 0..5 {
            let port = std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let log = tempfile::NamedTempFile::new().unwrap();
            let mut cmd = std::process::Command::new("/usr/sbin/dnsmasq");
            cmd.args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--pid-file=",
            ])
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().unwrap());
            for (name, ip) in records {
                cmd.arg(format!("--address=/{name}/{ip}"));
            }
            let child = cmd
                .spawn()
                .expect("run /usr/sbin/dnsmasq (.ci/run installs dnsmasq-base)");
            let mut server = Self {
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                child,
            };
            if server.wait_answering(records[0].0).await {
                return server;
            }
            let _ = server.child.kill();
            errors.push_str(&std::fs::read_to_string(log.path()).unwrap_or_default());
        }
        panic!("dnsmasq never answered on five ports: {errors}");
    }

    /// Waits (up to 10 s) until the server answers a query for `name`;
    /// false if it ended or never answered.
    async fn wait_answering(&mut self, name: &str) -> bool {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            query.push(label.len() as u8);
            query.extend_from_slice(label.as_bytes());
        }
        query.extend_from_slice(&[0, 0, 1, 0, 1]);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut buf = [0u8; 512];
        while tokio::time::Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return false;
            }
            let _ = socket.send_to(&query, self.addr).await;
            let wait = std::time::Duration::from_millis(200);
            if let Ok(Ok((n, _))) = tokio::time::timeout(wait, socket.recv_from(&mut buf)).await
                && n > 12
                && buf[..2] == [0x12, 0x34]
            {
                return true;
            }
        }
        false
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dns_config(mut config: ProxyConfig, names: &str, dns: &Dnsmasq) -> ProxyConfig {
    config.library.dns.names = vec![HostPattern::parse(names).unwrap()];
    config.library.dns.upstreams = vec![dns.addr];
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_mode_names_are_fetched_through_the_upstream_resolvers() {
    let origin = Origin::start().await;
    let body = content(250_000, 21);
    origin.put("/depot/731/chunk/9f2e", Resource::new(body.clone()));
    let dns = Dnsmasq::start(&[("dl.cdn.test", Ipv4Addr::LOCALHOST)]).await;
    let port = origin.addr().port();
    let config = dns_config(loopback_allowed(), &format!("*.cdn.test:{port}"), &dns);
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start_library(dir.path(), config, Arc::new(NoLocalSite)).await;
    let library = Client::new(edge.library.unwrap());
    let host = format!("dl.cdn.test:{port}");
    // The name exists only at the test's dnsmasq: the system resolver
    // could not have answered it.
    let reply = library
        .get("/depot/731/chunk/9f2e", &[("host", &host)])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body == body);
    let key = outpost_http::CacheKey::from_uri(
        &format!("http://{host}/depot/731/chunk/9f2e")
            .parse()
            .unwrap(),
    )
    .unwrap();
    assert!(
        edge.completes(&key, std::time::Duration::from_secs(10))
            .await
    );
    // Again, by range: from the store.
    let reply = library
        .get(
            "/depot/731/chunk/9f2e",
            &[("host", &host), ("range", "bytes=-1000")],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    assert!(reply.body == body.slice(249_000..));
    // A PC using the proxy for the same URL shares the copy.
    let reply = edge
        .client()
        .get(&format!("http://{host}/depot/731/chunk/9f2e"), &[])
        .await
        .unwrap();
    assert_eq!(reply.header("x-cache"), Some("HIT"));
    assert_eq!(origin.count("/depot/731/chunk/9f2e"), 1);
    // A name the resolvers do not know: 502, nothing fetched.
    let reply = library
        .get(
            "/depot/731/chunk/9f2e",
            &[("host", &format!("gone.cdn.test:{port}"))],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    // Another host, not in DNS mode nor a name of this edge: refused, as a
    // page rebinding its own name to the edge would be.
    let reply = library
        .get(
            "/depot/731/chunk/9f2e",
            &[("host", &format!("dl.other.test:{port}"))],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(origin.count("/depot/731/chunk/9f2e"), 1);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_resolves_back_to_the_edge_is_a_loop() {
    let origin = Origin::start().await;
    origin.put("/x", Resource::new(content(1000, 4)));
    let dns = Dnsmasq::start(&[
        ("loop.cdn.test", Ipv4Addr::LOCALHOST),
        ("dl.cdn.test", Ipv4Addr::LOCALHOST),
    ])
    .await;
    // The library listener's own port, so that the answer is the edge
    // itself (a port reserved by binding :0, then handed to the edge).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = dns_config(loopback_allowed(), &format!("*.cdn.test:{port}"), &dns);
    config.library.listen = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start_library(dir.path(), config, Arc::new(NoLocalSite)).await;
    assert_eq!(edge.library.unwrap().port(), port);
    let library = Client::new(edge.library.unwrap());
    let reply = library
        .get("/x", &[("host", &format!("loop.cdn.test:{port}"))])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::LOOP_DETECTED);
    // The loop guard's answer, not the Via check of a second hop.
    assert!(
        String::from_utf8_lossy(&reply.body).contains("DNS mode loop"),
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    edge.stop().await;
    // Loopback (not the edge, but not allowed either): also refused.
    let oport = origin.addr().port();
    let mut config = dns_config(ProxyConfig::default(), &format!("*.cdn.test:{oport}"), &dns);
    config.internal_destinations = vec!["192.0.2.0/24".parse().unwrap()];
    let edge = Edge::start_library(dir.path(), config, Arc::new(NoLocalSite)).await;
    let reply = Client::new(edge.library.unwrap())
        .get("/x", &[("host", &format!("dl.cdn.test:{oport}"))])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::LOOP_DETECTED);
    assert_eq!(origin.count("/x"), 0);
    edge.stop().await;
}
