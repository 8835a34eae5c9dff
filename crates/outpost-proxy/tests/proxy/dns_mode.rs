//! DNS mode: names the site's DNS points at the edge are served as
//! origins, resolved through the configured upstream resolvers only (here
//! a small DNS server the test runs on loopback), with the loop guard.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::StatusCode;
use outpost_proxy::ProxyConfig;
use outpost_proxy::library::HostPattern;
use outpost_proxy::local::NoLocalSite;
use outpost_testkit::{Client, Origin, Resource, content};

use crate::common::{Edge, loopback_allowed};

/// An authoritative-only DNS server over UDP: A records from a map,
/// NXDOMAIN for other names, no answer for other types.
struct DnsServer {
    addr: SocketAddr,
    records: Arc<Mutex<HashMap<String, Ipv4Addr>>>,
    queries: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    async fn start(records: &[(&str, Ipv4Addr)]) -> Self {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let records = Arc::new(Mutex::new(
            records
                .iter()
                .map(|(n, ip)| (n.to_string(), *ip))
                .collect::<HashMap<_, _>>(),
        ));
        let queries = Arc::new(AtomicUsize::new(0));
        let (map, count) = (records.clone(), queries.clone());
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                count.fetch_add(1, Ordering::SeqCst);
                let reply = answer(&buf[..n], &map.lock().unwrap());
                if let Some(answer) = reply {
                    let _ = socket.send_to(&answer, from).await;
                }
            }
        });
        Self {
            addr,
            records,
            queries,
            task,
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The response to one query (RFC 1035 section 4.1), or `None` for a
/// message that is not one.
fn answer(query: &[u8], records: &HashMap<String, Ipv4Addr>) -> Option<Vec<u8>> {
    if query.len() < 12 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    let mut labels = Vec::new();
    let mut i = 12;
    loop {
        let len = *query.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let question_end = i + 4;
    let name = labels.join(".");
    let found = records.get(&name);
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&query[..2]);
    // QR, opcode 0, AA, RD copied; RA; RCODE 0 or 3 (NXDOMAIN).
    let rd = query[2] & 0x01;
    out.push(0x84 | rd);
    out.push(if found.is_some() { 0x80 } else { 0x83 });
    let answers: u16 = (found.is_some() && qtype == 1).into();
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&answers.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(query.get(12..question_end)?);
    if let (Some(ip), true) = (found, qtype == 1) {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        out.extend_from_slice(&ip.octets());
    }
    Some(out)
}

fn dns_config(mut config: ProxyConfig, names: &str, dns: &DnsServer) -> ProxyConfig {
    config.library.dns.names = vec![HostPattern::parse(names).unwrap()];
    config.library.dns.upstreams = vec![dns.addr];
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_mode_names_are_fetched_through_the_upstream_resolvers() {
    let origin = Origin::start().await;
    let body = content(250_000, 21);
    origin.put("/depot/731/chunk/9f2e", Resource::new(body.clone()));
    let dns = DnsServer::start(&[("dl.cdn.test", Ipv4Addr::LOCALHOST)]).await;
    let port = origin.addr().port();
    let config = dns_config(loopback_allowed(), &format!("*.cdn.test:{port}"), &dns);
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start_library(dir.path(), config, Arc::new(NoLocalSite)).await;
    let library = Client::new(edge.library.unwrap());
    let host = format!("dl.cdn.test:{port}");
    // The name exists only at the test's resolver: the system resolver
    // could not have answered it.
    let reply = library
        .get("/depot/731/chunk/9f2e", &[("host", &host)])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body == body);
    assert!(dns.queries.load(Ordering::SeqCst) >= 1);
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
    // Another host, not in DNS mode: the site library's (404 here).
    let reply = library
        .get(
            "/depot/731/chunk/9f2e",
            &[("host", &format!("dl.other.test:{port}"))],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(origin.count("/depot/731/chunk/9f2e"), 1);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_resolves_back_to_the_edge_is_a_loop() {
    let origin = Origin::start().await;
    origin.put("/x", Resource::new(content(1000, 4)));
    let dns = DnsServer::start(&[("loop.cdn.test", Ipv4Addr::LOCALHOST)]).await;
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
    edge.stop().await;
    // Loopback (not the edge, but not allowed either): also refused.
    let oport = origin.addr().port();
    dns.records
        .lock()
        .unwrap()
        .insert("dl.cdn.test".into(), Ipv4Addr::LOCALHOST);
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
