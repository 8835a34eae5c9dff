//! The library listener: the site library's seam (`LocalSite`), stored
//! answers served without the WAN, locally made answers, and what the
//! listener refuses because it is not a proxy.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use outpost_proxy::local::{LocalBody, full};
use outpost_proxy::{LocalAnswer, LocalSite, ProxyConfig};
use outpost_testkit::{Client, Origin, Resource, content};

use crate::common::{Edge, raw_exchange, reverse};

/// A stand-in site library: `/files/P` is the store's copy of the origin's
/// `/P`; `/echo` answers what it was asked; `/stream` answers a body of
/// unknown length.
struct TestSite {
    origin: String,
}

impl LocalSite for TestSite {
    fn handle(&self, request: Request<Bytes>) -> Pin<Box<dyn Future<Output = LocalAnswer> + Send>> {
        let origin = self.origin.clone();
        Box::pin(async move {
            let path = request.uri().path().to_string();
            if let Some(rest) = path.strip_prefix("/files") {
                let mut headers = HeaderMap::new();
                headers.insert("x-library", HeaderValue::from_static("stored"));
                return LocalAnswer::Stored {
                    url: format!("{origin}{rest}").parse().unwrap(),
                    headers,
                };
            }
            if path == "/stream" {
                use http_body_util::BodyExt;
                let chunks = futures_util::stream::iter(
                    ["one,", "two"].map(|c| Ok(hyper::body::Frame::data(Bytes::from(c)))),
                );
                let body: LocalBody = http_body_util::StreamBody::new(chunks).boxed_unsync();
                return LocalAnswer::Response(Response::new(body));
            }
            let peer = request
                .extensions()
                .get::<std::net::SocketAddr>()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let text = format!(
                "{} {} body={} peer={peer}",
                request.method(),
                path,
                String::from_utf8_lossy(request.body())
            );
            let mut resp = Response::new(full(text));
            *resp.status_mut() = StatusCode::MULTI_STATUS;
            LocalAnswer::Response(resp)
        })
    }
}

async fn library_edge(dir: &std::path::Path, origin: &Origin, config: ProxyConfig) -> Edge {
    let site = Arc::new(TestSite {
        origin: origin.url("").trim_end_matches('/').to_string(),
    });
    Edge::start_library(dir, config, site).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_answers_serve_the_stored_copy_and_never_fetch() {
    let origin = Origin::start().await;
    let body = content(300_000, 41);
    origin.put("/pkg/app.msi", Resource::new(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let edge = library_edge(dir.path(), &origin, reverse(&origin)).await;
    let library = Client::new(edge.library.unwrap());
    // Not stored yet: 404, and the origin is not asked.
    let reply = library
        .get("/files/pkg/app.msi", &[("host", "edge")])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(origin.count("/pkg/app.msi"), 0);
    // A PC fetches it through the proxy: stored once.
    let reply = edge.client().get("/pkg/app.msi", &[]).await.unwrap();
    assert!(reply.body == body);
    assert!(
        edge.completes(
            &crate::common::key(&origin, "/pkg/app.msi"),
            Duration::from_secs(10)
        )
        .await
    );
    // The library serves those bytes, whole and by range, with its header.
    let reply = library
        .get("/files/pkg/app.msi", &[("host", "edge")])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body == body);
    assert_eq!(reply.header("x-library"), Some("stored"));
    let reply = library
        .get(
            "/files/pkg/app.msi",
            &[("host", "edge"), ("range", "bytes=1000-1999")],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    assert!(reply.body == body.slice(1000..2000));
    let reply = library
        .request("HEAD", "/files/pkg/app.msi", &[("host", "edge")])
        .await
        .unwrap();
    assert_eq!(reply.header("content-length"), Some("300000"));
    assert!(reply.body.is_empty());
    // A quarantined file is refused here as everywhere.
    let key = crate::common::key(&origin, "/pkg/app.msi");
    edge.engine
        .set_quarantined(&key, Some("sha256 mismatch".into()));
    let reply = library
        .get("/files/pkg/app.msi", &[("host", "edge")])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    edge.engine.set_quarantined(&key, None);
    // Changed at the origin: the library still never asks it.
    origin.put(
        "/pkg/app.msi",
        Resource::new(content(10, 1)).no_cache_headers(),
    );
    let reply = library
        .get("/files/pkg/app.msi", &[("host", "edge")])
        .await
        .unwrap();
    assert!(reply.body == body);
    assert_eq!(origin.count("/pkg/app.msi"), 1);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_responses_are_written_by_the_listener() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let edge = library_edge(dir.path(), &origin, reverse(&origin)).await;
    let library = edge.library.unwrap();
    // A small body reaches the site, with the client's address.
    let request = b"PROPFIND /echo HTTP/1.1\r\nhost: edge\r\ndepth: 1\r\ncontent-length: 5\r\nconnection: close\r\n\r\n<a/>\n";
    let (answer, _) = raw_exchange(library, request, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 207"), "{answer}");
    let expected = "PROPFIND /echo body=<a/>\n peer=127.0.0.1";
    assert!(
        answer.contains(&format!("content-length: {}\r\n", expected.len())),
        "{answer}"
    );
    assert!(answer.ends_with(expected), "{answer}");
    // The PAC file, whole or HEAD.
    let (answer, _) = raw_exchange(
        library,
        b"HEAD /wpad.dat HTTP/1.1\r\nhost: wpad\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("content-type: application/x-ns-proxy-autoconfig\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with("\r\n\r\n"), "HEAD has no body: {answer}");
    let pac = Client::new(library).get("/proxy.pac", &[]).await.unwrap();
    assert!(
        String::from_utf8_lossy(&pac.body).contains(&format!("PROXY {}; DIRECT", edge.addr)),
        "the proxy listener by default"
    );
    // A body of unknown length is chunked.
    let (answer, _) = raw_exchange(
        library,
        b"GET /stream HTTP/1.1\r\nhost: edge\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        answer.contains("transfer-encoding: chunked\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains("4\r\none,\r\n3\r\ntwo\r\n0\r\n\r\n"),
        "{answer}"
    );
    // HEAD: no body on the wire.
    let (answer, _) = raw_exchange(
        library,
        b"HEAD /echo HTTP/1.1\r\nhost: edge\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.ends_with("\r\n\r\n"), "{answer}");
    // A body over 64 KiB is refused before the site sees it.
    let big = vec![b'x'; 64 * 1024 + 1];
    let mut request = format!(
        "PROPFIND /echo HTTP/1.1\r\nhost: edge\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        big.len()
    )
    .into_bytes();
    request.extend_from_slice(&big);
    let (answer, _) = raw_exchange(library, &request, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let mut chunked =
        b"PROPFIND /echo HTTP/1.1\r\nhost: edge\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(format!("{:x}\r\n", 30_000).as_bytes());
        chunked.extend_from_slice(&[b'y'; 30_000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (answer, _) = raw_exchange(library, &chunked, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_listener_is_not_a_proxy() {
    let origin = Origin::start().await;
    origin.put("/x", Resource::new(content(100, 3)));
    let dir = tempfile::tempdir().unwrap();
    // Even on an edge whose proxy listener forwards for anyone.
    let edge = library_edge(dir.path(), &origin, crate::common::loopback_allowed()).await;
    let library = Client::new(edge.library.unwrap());
    let reply = library.get(&origin.url("/x"), &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "absolute-form");
    let reply = library
        .request("CONNECT", &origin.addr().to_string(), &[])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "CONNECT");
    let (answer, _) = raw_exchange(
        edge.library.unwrap(),
        b"OPTIONS * HTTP/1.1\r\nhost: edge\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "asterisk-form: {answer}"
    );
    // An origin-form request naming the origin in Host is the library's
    // (here: its echo), never fetched.
    let reply = library
        .get("/x", &[("host", &origin.addr().to_string())])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::MULTI_STATUS);
    // A request that already passed through this edge is a loop.
    let via = edge.engine.via.clone();
    let reply = library.get("/echo", &[("via", &via)]).await.unwrap();
    assert_eq!(reply.status, StatusCode::LOOP_DETECTED);
    assert_eq!(origin.count("/x"), 0);
    edge.stop().await;
    // The client ACL applies to the library listener too.
    let config = ProxyConfig {
        allowed_clients: vec!["10.0.0.0/8".parse().unwrap()],
        ..reverse(&origin)
    };
    let edge = library_edge(dir.path(), &origin, config).await;
    let reply = Client::new(edge.library.unwrap())
        .get("/echo", &[])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    edge.stop().await;
}

#[tokio::test]
async fn the_site_library_answers_only_names_of_this_edge() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = reverse(&origin);
    config.library.allowed_hosts =
        outpost_proxy::allowed_hosts::AllowedHosts::new(vec!["Edge-7.Branch.example".into()])
            .with_single_label_names();
    let edge = library_edge(dir.path(), &origin, config).await;
    let library = edge.library.unwrap();
    let ask = |host: String| async move {
        let request = format!("GET /echo HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
        raw_exchange(library, request.as_bytes(), Duration::from_secs(5))
            .await
            .0
    };
    // A page that rebinds its own name to the edge reads nothing.
    for host in [
        "rebind.attacker.test",
        "edge-7.branch.example.attacker.test",
    ] {
        let answer = ask(host.to_string()).await;
        assert!(answer.starts_with("HTTP/1.1 421"), "{host}: {answer}");
        assert!(answer.contains("library.allowed_hosts"), "{answer}");
    }
    // Its addresses, a NetBIOS name (a UNC path's) and configured names do.
    for host in [
        library.to_string(),
        "EDGE".to_string(),
        "edge:80".to_string(),
        "edge-7.branch.example".to_string(),
    ] {
        let answer = ask(host.clone()).await;
        assert!(answer.starts_with("HTTP/1.1 207"), "{host}: {answer}");
    }
    // The PAC file is for every PC, whatever name found it (wpad.DOMAIN).
    let answer = raw_exchange(
        library,
        b"GET /wpad.dat HTTP/1.1\r\nhost: wpad.corp.example\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await
    .0;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
