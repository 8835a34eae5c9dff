//! Delivery Optimization cache-host requests on the library listener:
//! `GET /path?cacheHostOrigin=host` and Configuration Manager's Host form
//! are the proxy request for `http://host/path` (one stored copy, ranges,
//! the destination guard), and only for origins in `do_hosts`.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use http::StatusCode;
use outpost_proxy::ProxyConfig;
use outpost_proxy::h1::{LibraryWay, source_index};
use outpost_proxy::library::HostPattern;
use outpost_proxy::local::NoLocalSite;
use outpost_testkit::{Client, Origin, Resource, content};

use crate::common::{Edge, loopback_allowed};

/// A forward edge whose DO allowlist is the fake origin (on loopback).
fn allowing(origin: &Origin, mut config: ProxyConfig) -> ProxyConfig {
    config.library.do_hosts = vec![HostPattern::parse(&origin.addr().to_string()).unwrap()];
    config
}

fn delivery_counter(edge: &Edge, source: outpost_proxy::cache_status::ByteSource) -> (u64, u64) {
    let way = LibraryWay::DeliveryOptimization as usize;
    let i = source_index(source);
    let served = &edge.engine.served;
    (
        served.library_requests[way][i].load(Relaxed),
        served.library_bytes[way][i].load(Relaxed),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_requests_share_one_copy_with_proxy_requests() {
    use outpost_proxy::cache_status::ByteSource;
    let origin = Origin::start().await;
    let file = "/filestreamingservice/files/0d1f?P1=1700000000&P2=404";
    let body = content(500_000, 11);
    origin.put(file, Resource::new(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start_library(
        dir.path(),
        allowing(&origin, loopback_allowed()),
        Arc::new(NoLocalSite),
    )
    .await;
    let library = Client::new(edge.library.unwrap());
    let host = origin.addr().to_string();
    // A PC through the proxy: the miss that stores the file.
    let reply = edge.client().get(&origin.url(file), &[]).await.unwrap();
    assert!(reply.body == body);
    assert!(
        edge.completes(
            &crate::common::key(&origin, file),
            std::time::Duration::from_secs(10)
        )
        .await
    );
    // Delivery Optimization asks for it with the origin in the query, the
    // parameter anywhere among the others: a hit on the same copy.
    for target in [
        format!("/filestreamingservice/files/0d1f?P1=1700000000&P2=404&cacheHostOrigin={host}"),
        format!("/filestreamingservice/files/0d1f?cacheHostOrigin={host}&P1=1700000000&P2=404"),
    ] {
        let reply = library.get(&target, &[("host", "10.0.0.5")]).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{target}");
        assert_eq!(reply.header("x-cache"), Some("HIT"));
        assert!(reply.body == body);
    }
    // DO downloads by range.
    let target =
        format!("/filestreamingservice/files/0d1f?P1=1700000000&P2=404&cacheHostOrigin={host}");
    let reply = library
        .get(&target, &[("range", "bytes=65536-131071")])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    assert!(reply.body == body.slice(65536..131072));
    assert_eq!(origin.count(file), 1, "one WAN fetch for proxy and DO");
    let (hits, hit_bytes) = delivery_counter(&edge, ByteSource::Cache);
    assert_eq!(hits, 3);
    assert_eq!(hit_bytes, 2 * 500_000 + 65536);
    // A DO miss is fetched once and then a proxy hit.
    let other = "/c/msdownload/update/software/secu/2026/11/kb123.cab";
    let other_body = content(200_000, 12);
    origin.put(other, Resource::new(other_body.clone()));
    let reply = library
        .get(&format!("{other}?cacheHostOrigin={host}"), &[])
        .await
        .unwrap();
    assert!(reply.body == other_body);
    assert!(
        edge.completes(
            &crate::common::key(&origin, other),
            std::time::Duration::from_secs(10)
        )
        .await
    );
    let reply = edge.client().get(&origin.url(other), &[]).await.unwrap();
    assert_eq!(reply.header("x-cache"), Some("HIT"));
    assert_eq!(origin.count(other), 1);
    let (misses, miss_bytes) = delivery_counter(&edge, ByteSource::Fill);
    assert_eq!((misses, miss_bytes), (1, 200_000));
    // A cold range, as DO asks for most pieces: the range engine fetches
    // what is asked, and the bytes are the origin's.
    let cold = "/filestreamingservice/files/77aa";
    let cold_body = content(3_000_000, 13);
    origin.put(cold, Resource::new(cold_body.clone()));
    let reply = library
        .get(
            &format!("{cold}?cacheHostOrigin={host}"),
            &[("range", "bytes=2000000-2099999")],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        reply.header("content-range"),
        Some("bytes 2000000-2099999/3000000")
    );
    assert!(reply.body == cold_body.slice(2_000_000..2_100_000));
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_host_probes_are_answered_from_the_origin() {
    let origin = Origin::start().await;
    let gif = content(43, 5);
    origin.put("/mscomtest/wuidt.gif", Resource::new(gif.clone()));
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start_library(
        dir.path(),
        allowing(&origin, loopback_allowed()),
        Arc::new(NoLocalSite),
    )
    .await;
    let library = Client::new(edge.library.unwrap());
    let host = origin.addr().to_string();
    // DO's form.
    let reply = library
        .get(&format!("/mscomtest/wuidt.gif?cacheHostOrigin={host}"), &[])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body == gif);
    // Configuration Manager's: the origin's name in Host.
    let reply = library
        .get("/mscomtest/wuidt.gif", &[("host", &host)])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body == gif);
    assert_eq!(origin.count("/mscomtest/wuidt.gif"), 1);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_requests_outside_the_allowlist_or_guard_are_never_fetched() {
    let origin = Origin::start().await;
    origin.put("/x.cab", Resource::new(content(1000, 2)));
    let dir = tempfile::tempdir().unwrap();
    let host = origin.addr().to_string();
    // The default allowlist: Microsoft's hosts, not this origin.
    let edge = Edge::start_library(dir.path(), loopback_allowed(), Arc::new(NoLocalSite)).await;
    let library = Client::new(edge.library.unwrap());
    let reply = library
        .get(&format!("/x.cab?cacheHostOrigin={host}"), &[])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    // Nor through Host: that is the site library's (here: 404).
    let reply = library.get("/x.cab", &[("host", &host)]).await.unwrap();
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    // A cache host only downloads: no POST relayed to an origin.
    let reply = library
        .request("POST", &format!("/x.cab?cacheHostOrigin={host}"), &[])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    edge.stop().await;
    // Tricks on the parameter are refused (400) before any lookup, even
    // where the origin itself is allowlisted.
    let edge = Edge::start_library(
        dir.path(),
        allowing(&origin, loopback_allowed()),
        Arc::new(NoLocalSite),
    )
    .await;
    let library = Client::new(edge.library.unwrap());
    for bad in [
        format!("/x.cab?cacheHostOrigin=user@{host}"),
        "/x.cab?cacheHostOrigin=%5B%3A%3A1%5D".to_string(),
        format!("/x.cab?cacheHostOrigin={host}%2Fx"),
    ] {
        let reply = library.get(&bad, &[]).await.unwrap();
        assert!(reply.status.is_client_error(), "{bad}: {}", reply.status);
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(origin.count("/x.cab"), 0);
    edge.stop().await;
    // Allowlisted, but loopback is not an allowed destination: the guard
    // refuses it as it would a proxy request.
    let mut config = allowing(&origin, ProxyConfig::default());
    config.internal_destinations = vec!["192.0.2.0/24".parse().unwrap()];
    let edge = Edge::start_library(dir.path(), config, Arc::new(NoLocalSite)).await;
    let reply = Client::new(edge.library.unwrap())
        .get(&format!("/x.cab?cacheHostOrigin={host}"), &[])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(origin.count("/x.cab"), 0);
    edge.stop().await;
}
