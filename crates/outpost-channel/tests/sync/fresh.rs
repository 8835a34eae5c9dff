//! `revalidate = "sync"`: a file a channel holds is fresh at the edge
//! until the channel's next sync (plus a grace), so PCs' requests for it
//! never reach the origin; the sync is what asks, and a changed file is
//! swapped in whole, never mixed into a response already going out.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt;
use outpost_channel::Revalidate;
use outpost_http::CacheKey;
use outpost_proxy::{ManualClock, ProxyConfig};
use outpost_testkit::{Client, Origin, Resource, content};

use crate::support::*;

/// The origin's files: stale at once (`max-age=0`, as many package
/// servers are configured so that browsers always check), with
/// validators, so that without the channel's grant every PC request
/// would be a conditional request to the origin.
fn publish(origin: &Origin, path: &str, body: &Bytes, etag: &str) {
    origin.put(
        path,
        Resource::new(body.clone())
            .header("cache-control", "max-age=0")
            .etag(etag),
    );
}

fn manifest(origin: &Origin, names: &[&str]) {
    let text: String = names.iter().map(|n| format!("{n}\n")).collect();
    origin.put(
        "/m/files.txt",
        Resource::new(Bytes::from(text)).no_cache_headers(),
    );
}

async fn pc_get(site: &Site, origin: &Origin, path: &str, headers: &[(&str, &str)]) -> Bytes {
    let reply = Client::new(site.addr)
        .get(&origin.url(path), headers)
        .await
        .expect("PC request");
    assert!(reply.status.is_success(), "{path}: {}", reply.status);
    assert!(reply.body_error.is_none(), "{path}: {:?}", reply.body_error);
    reply.body
}

#[tokio::test]
async fn pcs_never_reach_the_origin_for_a_synced_file() {
    let origin = Origin::start().await;
    let body = content(300_000, 1);
    publish(&origin, "/m/app.msi", &body, "\"v1\"");
    manifest(&origin, &["app.msi"]);
    let dir = tempfile::tempdir().unwrap();
    let site = Site::start(dir.path(), vec![channel(&origin, "/m/files.txt")], 1 << 30).await;
    assert_eq!(site.sync("lib").await.result, "ok");
    let after_sync = origin.count("/m/app.msi");
    assert_eq!(after_sync, 1);

    for _ in 0..10 {
        assert_eq!(pc_get(&site, &origin, "/m/app.msi", &[]).await, body);
    }
    // A PC that insists (Ctrl-F5), a range, a conditional: all local.
    assert_eq!(
        pc_get(
            &site,
            &origin,
            "/m/app.msi",
            &[("cache-control", "no-cache")]
        )
        .await,
        body
    );
    assert_eq!(
        pc_get(
            &site,
            &origin,
            "/m/app.msi",
            &[("range", "bytes=1000-1999")]
        )
        .await,
        body.slice(1000..2000)
    );
    // Credentials, or a header the origin might build its answer from:
    // still the channel's copy (fetched without either, for every PC).
    assert_eq!(
        pc_get(
            &site,
            &origin,
            "/m/app.msi",
            &[("authorization", "Basic dTpw")]
        )
        .await,
        body
    );
    assert_eq!(
        pc_get(
            &site,
            &origin,
            "/m/app.msi",
            &[("x-forwarded-host", "elsewhere")]
        )
        .await,
        body
    );
    let revalidating = Client::new(site.addr)
        .get(&origin.url("/m/app.msi"), &[("if-none-match", "\"v1\"")])
        .await
        .unwrap();
    assert_eq!(revalidating.status, 304);
    assert_eq!(
        origin.count("/m/app.msi"),
        after_sync,
        "PC requests reached the origin: {:?}",
        origin.requests_for("/m/app.msi")
    );

    // The grant survives a restart: it is rebuilt from the channel's rows.
    drop(site);
    let site = Site::start(dir.path(), vec![channel(&origin, "/m/files.txt")], 1 << 30).await;
    assert_eq!(pc_get(&site, &origin, "/m/app.msi", &[]).await, body);
    assert_eq!(origin.count("/m/app.msi"), after_sync);

    // A purge ends it: the next PC request fetches from the origin.
    let key = CacheKey::from_uri(&origin.url("/m/app.msi").parse().unwrap()).unwrap();
    assert!(site.engine.purge(&key).unwrap());
    assert_eq!(pc_get(&site, &origin, "/m/app.msi", &[]).await, body);
    assert_eq!(origin.count("/m/app.msi"), after_sync + 1);
}

#[tokio::test]
async fn revalidate_origin_keeps_asking_the_origin_for_each_pc_request() {
    let origin = Origin::start().await;
    let body = content(100_000, 2);
    publish(&origin, "/m/app.msi", &body, "\"v1\"");
    manifest(&origin, &["app.msi"]);
    let dir = tempfile::tempdir().unwrap();
    let mut config = channel(&origin, "/m/files.txt");
    config.revalidate = Revalidate::Origin;
    let site = Site::start(dir.path(), vec![config], 1 << 30).await;
    assert_eq!(site.sync("lib").await.result, "ok");
    let after_sync = origin.count("/m/app.msi");
    for _ in 0..3 {
        assert_eq!(pc_get(&site, &origin, "/m/app.msi", &[]).await, body);
    }
    let asked: Vec<_> = origin.requests_for("/m/app.msi")[after_sync..].to_vec();
    assert_eq!(asked.len(), 3, "{asked:?}");
    assert!(asked.iter().all(|r| r.is_conditional() && r.status == 304));
}

#[tokio::test]
async fn a_changed_file_is_served_old_until_the_next_sync_then_new() {
    let origin = Origin::start().await;
    let old = content(200_000, 3);
    let new = content(210_000, 4);
    publish(&origin, "/m/app.msi", &old, "\"v1\"");
    manifest(&origin, &["app.msi"]);
    let dir = tempfile::tempdir().unwrap();
    let site = Site::start(dir.path(), vec![channel(&origin, "/m/files.txt")], 1 << 30).await;
    assert_eq!(site.sync("lib").await.result, "ok");

    publish(&origin, "/m/app.msi", &new, "\"v2\"");
    for _ in 0..3 {
        assert_eq!(pc_get(&site, &origin, "/m/app.msi", &[]).await, old);
    }
    assert_eq!(origin.count("/m/app.msi"), 1, "only the first sync asked");

    let summary = site.sync("lib").await;
    assert_eq!(
        (summary.result.to_string().as_str(), summary.fetched),
        ("ok", 1)
    );
    let asked = origin.count("/m/app.msi");
    for _ in 0..3 {
        assert_eq!(pc_get(&site, &origin, "/m/app.msi", &[]).await, new);
    }
    assert_eq!(
        origin.count("/m/app.msi"),
        asked,
        "the new copy is vouched for too"
    );
}

#[tokio::test]
async fn the_grant_ends_at_the_next_scheduled_sync_plus_the_grace() {
    let origin = Origin::start().await;
    let body = content(50_000, 5);
    publish(&origin, "/m/app.msi", &body, "\"v1\"");
    manifest(&origin, &["app.msi"]);
    let dir = tempfile::tempdir().unwrap();
    let mut config = channel(&origin, "/m/files.txt");
    // Daily; the next run is at most a day away (DST: 25 hours).
    config.schedule = Some("0 3 * * *".parse().unwrap());
    config.revalidate_grace = Duration::from_secs(600);
    let clock = Arc::new(ManualClock::starting_at(SystemTime::now()));
    let proxy = ProxyConfig {
        internal_destinations: vec!["127.0.0.0/8".parse().unwrap()],
        ..ProxyConfig::default()
    };
    let site = Site::start_on_clock(dir.path(), vec![config], 1 << 30, proxy, clock.clone()).await;
    assert_eq!(site.sync("lib").await.result, "ok");
    let after_sync = origin.count("/m/app.msi");
    clock.advance(Duration::from_secs(3600));
    assert_eq!(pc_get(&site, &origin, "/m/app.msi", &[]).await, body);
    assert_eq!(origin.count("/m/app.msi"), after_sync);

    clock.advance(Duration::from_secs(25 * 3600 + 600));
    assert_eq!(pc_get(&site, &origin, "/m/app.msi", &[]).await, body);
    let asked = origin.requests_for("/m/app.msi");
    assert_eq!(asked.len(), after_sync + 1, "{asked:?}");
    assert!(asked[after_sync].is_conditional());
}

/// A PC reading slowly keeps getting the version its response started
/// with while the sync swaps the new one in; a request after the swap gets
/// the new one, whole.
#[tokio::test]
async fn a_response_under_way_during_the_swap_is_all_old_bytes() {
    let origin = Origin::start().await;
    // Far more than the socket buffers and the client's read buffer hold,
    // so most of the response is sent after the swap.
    let len = 24 << 20;
    let old = content(len, 6);
    let new = content(len, 7);
    publish(&origin, "/m/big.iso", &old, "\"v1\"");
    manifest(&origin, &["big.iso"]);
    let dir = tempfile::tempdir().unwrap();
    let site = Site::start(dir.path(), vec![channel(&origin, "/m/files.txt")], 1 << 30).await;
    assert_eq!(site.sync("lib").await.result, "ok");

    let (head, mut body) = Client::new(site.addr)
        .send("GET", &origin.url("/m/big.iso"), &[])
        .await
        .unwrap();
    assert_eq!(head.status, 200);
    let mut received = Vec::with_capacity(len);
    while received.len() < 64 * 1024 {
        let frame = body.frame().await.expect("body").expect("frame");
        if let Ok(data) = frame.into_data() {
            received.extend_from_slice(&data);
        }
    }

    publish(&origin, "/m/big.iso", &new, "\"v2\"");
    let summary = site.sync("lib").await;
    assert_eq!(summary.fetched, 1, "{summary:?}");
    assert_eq!(pc_get(&site, &origin, "/m/big.iso", &[]).await, new);

    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("the old response goes on").into_data() {
            received.extend_from_slice(&data);
        }
    }
    assert_eq!(received.len(), old.len());
    assert!(received == old[..], "the response mixed versions");
}

/// A file that left the channel's source is ordinary cache again: the
/// origin's headers decide, and a stale copy is revalidated.
#[tokio::test]
async fn a_file_that_left_the_channel_is_checked_with_the_origin_again() {
    let origin = Origin::start().await;
    let kept = content(40_000, 8);
    let gone = content(50_000, 9);
    publish(&origin, "/m/kept.msi", &kept, "\"k1\"");
    publish(&origin, "/m/gone.msi", &gone, "\"g1\"");
    manifest(&origin, &["kept.msi", "gone.msi"]);
    let dir = tempfile::tempdir().unwrap();
    let site = Site::start(dir.path(), vec![channel(&origin, "/m/files.txt")], 1 << 30).await;
    assert_eq!(site.sync("lib").await.result, "ok");
    manifest(&origin, &["kept.msi"]);
    let summary = site.sync("lib").await;
    assert_eq!(summary.removed, 1, "{summary:?}");

    let before = origin.count("/m/gone.msi");
    assert_eq!(pc_get(&site, &origin, "/m/gone.msi", &[]).await, gone);
    let asked = origin.requests_for("/m/gone.msi");
    assert_eq!(asked.len(), before + 1, "{asked:?}");
    assert!(asked[before].is_conditional());
    let before = origin.count("/m/kept.msi");
    assert_eq!(pc_get(&site, &origin, "/m/kept.msi", &[]).await, kept);
    assert_eq!(origin.count("/m/kept.msi"), before);
}
