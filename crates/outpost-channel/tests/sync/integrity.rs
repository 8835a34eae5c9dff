//! What a sync keeps and how it survives trouble: digests and quarantine,
//! resumed transfers and syncs, clients attaching to a sync's fill, pins
//! under cache pressure, the channel database's permissions.

use bytes::Bytes;
use outpost_http::CacheKey;
use outpost_proxy::ProxyConfig;
use outpost_testkit::{Client, Origin, Resource, content, wait_until};
use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn a_digest_mismatch_is_quarantined_never_served_and_cleared_when_fixed() {
    let origin = Origin::start().await;
    let good = content(400_000, 7);
    let corrupt = content(400_000, 8);
    origin.put(
        "/lib/good.msi",
        Resource::new(good.clone()).no_cache_headers(),
    );
    origin.put(
        "/lib/bad.msi",
        Resource::new(corrupt.clone()).no_cache_headers(),
    );
    let manifest = format!(
        "{}  good.msi\n{}  bad.msi\n",
        sha256_hex(&good),
        sha256_hex(&good)
    );
    origin.put(
        "/lib/SHA256SUMS",
        Resource::new(Bytes::from(manifest)).no_cache_headers(),
    );
    let dir = tempfile::tempdir().unwrap();
    let site = Site::start(
        dir.path(),
        vec![channel(&origin, "/lib/SHA256SUMS")],
        1 << 30,
    )
    .await;
    let summary = site.sync("lib").await;
    assert_eq!(
        (summary.fetched, summary.quarantined),
        (1, 1),
        "{summary:?}"
    );
    assert_eq!(summary.result, "errors");
    let status = &site.channels.status()[0];
    assert_eq!(status.quarantined.len(), 1);
    assert!(status.quarantined[0].url.ends_with("/lib/bad.msi"));
    assert!(status.quarantined[0].error.contains(&sha256_hex(&corrupt)));
    assert!(
        site.stored(&origin, "/lib/bad.msi")
            .is_none_or(|(complete, _)| !complete),
        "a mismatching body is never completed in the store"
    );
    let client = Client::new(site.addr);
    let before = origin.count("/lib/bad.msi");
    let reply = client.get(&origin.url("/lib/bad.msi"), &[]).await.unwrap();
    assert_eq!(reply.status, http::StatusCode::BAD_GATEWAY);
    assert_ne!(reply.body, corrupt);
    assert_eq!(
        origin.count("/lib/bad.msi"),
        before,
        "not even passed through"
    );
    let reply = client.get(&origin.url("/lib/good.msi"), &[]).await.unwrap();
    assert_eq!(reply.body, good);

    // The publisher fixes the file: the next sync takes it and lifts the
    // quarantine.
    origin.put(
        "/lib/bad.msi",
        Resource::new(good.clone())
            .no_cache_headers()
            .etag("\"v2\""),
    );
    let fixed = site.sync("lib").await;
    assert_eq!(
        (fixed.quarantined, fixed.result.as_str()),
        (0, "ok"),
        "{fixed:?}"
    );
    assert!(site.channels.status()[0].quarantined.is_empty());
    let reply = client.get(&origin.url("/lib/bad.msi"), &[]).await.unwrap();
    assert_eq!(reply.body, good);
    assert_eq!(reply.header("x-cache"), Some("HIT"));
}

/// Start-up reads a channel's rows once and rebuilds both what they say
/// of the store and the channel's freshness grants from that one read: a
/// quarantined file is still refused without asking the origin, and a
/// synced file is still served without asking it either.
#[tokio::test]
async fn a_restart_restores_quarantines_and_freshness_grants_from_the_rows() {
    let origin = Origin::start().await;
    let good = content(200_000, 31);
    let corrupt = content(200_000, 32);
    // Stale at once, with a validator and no digest in the manifest (a
    // digest-bound copy is served whatever its freshness): without the
    // channel's grant a PC's request would be a conditional request to the
    // origin.
    origin.put(
        "/lib/good.msi",
        Resource::new(good.clone())
            .header("cache-control", "max-age=0")
            .etag("\"g\""),
    );
    origin.put(
        "/lib/bad.msi",
        Resource::new(corrupt.clone()).no_cache_headers(),
    );
    origin.put(
        "/lib/SHA256SUMS",
        Resource::new(Bytes::from(format!(
            "good.msi\n{}  bad.msi\n",
            sha256_hex(&good)
        )))
        .no_cache_headers(),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = channel(&origin, "/lib/SHA256SUMS");
    let site = Site::start(dir.path(), vec![config.clone()], 1 << 30).await;
    let summary = site.sync("lib").await;
    assert_eq!(
        (summary.fetched, summary.quarantined),
        (1, 1),
        "{summary:?}"
    );
    drop(site);

    let site = Site::start(dir.path(), vec![config], 1 << 30).await;
    let client = Client::new(site.addr);
    let (good_before, bad_before) = (origin.count("/lib/good.msi"), origin.count("/lib/bad.msi"));
    let reply = client.get(&origin.url("/lib/bad.msi"), &[]).await.unwrap();
    assert_eq!(reply.status, http::StatusCode::BAD_GATEWAY);
    assert_eq!(
        origin.count("/lib/bad.msi"),
        bad_before,
        "the quarantine was not restored"
    );
    let reply = client.get(&origin.url("/lib/good.msi"), &[]).await.unwrap();
    assert_eq!(reply.body, good);
    assert_eq!(
        origin.count("/lib/good.msi"),
        good_before,
        "the freshness grant was not restored: {:?}",
        origin.requests_for("/lib/good.msi")
    );
    assert_eq!(site.channels.status()[0].quarantined.len(), 1);
}

#[tokio::test]
async fn a_dropped_transfer_resumes_where_it_stopped() {
    let origin = Origin::start().await;
    let body = content(3_000_000, 11);
    origin.put(
        "/lib/big.iso",
        Resource::new(body.clone())
            .no_cache_headers()
            .drop_after(1_200_000, 1),
    );
    origin.put(
        "/lib/",
        Resource::new(Bytes::from_static(b"<a href=\"big.iso\">big.iso</a>")).no_cache_headers(),
    );
    let dir = tempfile::tempdir().unwrap();
    let site = Site::start(dir.path(), vec![channel(&origin, "/lib/")], 1 << 30).await;
    let summary = site.sync("lib").await;
    assert_eq!(summary.result, "ok", "{summary:?}");
    let reqs = origin.requests_for("/lib/big.iso");
    assert_eq!(reqs.len(), 2, "one drop, one resume");
    assert!(
        reqs[1].range().is_some_and(|r| r.starts_with("bytes=")),
        "{:?}",
        reqs[1].range()
    );
    let file_bytes = origin.sent_bytes() - 29;
    assert!(
        file_bytes <= body.len() as u64 + 300_000,
        "{file_bytes} bytes sent for a {} byte file",
        body.len()
    );
    let reply = Client::new(site.addr)
        .get(&origin.url("/lib/big.iso"), &[])
        .await
        .unwrap();
    assert_eq!(reply.body, body);
}

#[tokio::test]
async fn a_client_during_a_sync_attaches_to_the_running_fill() {
    let origin = Origin::start().await;
    let body = content(2_000_000, 5);
    origin.put(
        "/lib/slow.msi",
        Resource::new(body.clone())
            .no_cache_headers()
            .rate(2_000_000),
    );
    origin.put(
        "/lib/",
        Resource::new(Bytes::from_static(b"<a href=\"slow.msi\">slow.msi</a>")).no_cache_headers(),
    );
    let dir = tempfile::tempdir().unwrap();
    let site = Site::start(dir.path(), vec![channel(&origin, "/lib/")], 1 << 30).await;
    let run = site.channels.sync("lib").unwrap();
    let key = CacheKey::from_uri(&origin.url("/lib/slow.msi").parse().unwrap()).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || site
            .engine
            .fills
            .active(&key)
            .is_some())
        .await,
        "the sync started a fill"
    );
    let reply = Client::new(site.addr)
        .get(&origin.url("/lib/slow.msi"), &[])
        .await
        .unwrap();
    assert_eq!(reply.body, body);
    site.channels.wait("lib", run).await.unwrap();
    assert_eq!(
        origin.count("/lib/slow.msi"),
        1,
        "one WAN fetch for sync and client"
    );
}

#[tokio::test]
async fn pinned_channel_files_survive_cache_pressure() {
    let origin = Origin::start().await;
    let lib = sample_library(Style::Nginx);
    lib.publish(&origin, &[]);
    let dir = tempfile::tempdir().unwrap();
    // A 4 MiB cache: the 1.9 MB library plus a few MB of client traffic
    // overflows it several times.
    let site = Site::start(dir.path(), vec![channel(&origin, "/lib/")], 4 << 20).await;
    assert_eq!(site.sync("lib").await.result, "ok");
    let client = Client::new(site.addr);
    for i in 0..8 {
        let path = format!("/other/{i}.bin");
        origin.put(&path, Resource::new(content(900_000, 100 + i)));
        let reply = client.get(&origin.url(&path), &[]).await.unwrap();
        assert_eq!(reply.body.len(), 900_000);
    }
    assert!(
        wait_until(Duration::from_secs(10), || site
            .engine
            .store
            .stats()
            .unwrap()
            .evictions
            > 0)
        .await,
        "client traffic overflowed the cache"
    );
    for path in lib.files.keys() {
        assert_eq!(
            site.stored(&origin, path),
            Some((true, true)),
            "{path} evicted"
        );
    }
}

#[test]
fn a_sync_cut_by_a_stop_resumes_on_restart_without_refetching() {
    let dir = tempfile::tempdir().unwrap();
    let origin_rt = tokio::runtime::Runtime::new().unwrap();
    let origin = origin_rt.block_on(Origin::start());
    let mut lib = Library::new(Style::Nginx);
    lib.add("/lib/a.msi", content(600_000, 1), "a");
    lib.add("/lib/b.msi", content(600_000, 2), "b");
    lib.add("/lib/c.iso", content(6_000_000, 3), "c");
    lib.publish(&origin, &[]);
    // c.iso comes slowly, so that the stop lands in the middle of it.
    origin.put(
        "/lib/c.iso",
        Resource::new(lib.files["/lib/c.iso"].0.clone())
            .no_cache_headers()
            .etag("\"c\"")
            .rate(2_000_000),
    );
    let mut config = channel(&origin, "/lib/");
    config.concurrency = 1;
    let c_key = CacheKey::from_uri(&origin.url("/lib/c.iso").parse().unwrap()).unwrap();

    // First life: stopped abruptly (its runtime dropped) once c.iso is a
    // third in, so the run is never recorded as finished.
    {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let site = Site::start(dir.path(), vec![config.clone()], 1 << 30).await;
            site.channels.sync("lib").unwrap();
            let reached = wait_until(Duration::from_secs(20), || {
                site.engine
                    .store
                    .get(&c_key)
                    .unwrap()
                    .is_some_and(|o| o.snapshot().present.covered() >= 2_000_000)
            })
            .await;
            assert!(reached, "c.iso started");
            // Past a checkpoint (every second at this speed).
            tokio::time::sleep(Duration::from_millis(1200)).await;
            std::mem::forget(site);
        });
        rt.shutdown_background();
    }
    let sent_before = origin.sent_bytes();
    assert!(sent_before < lib.total_bytes(), "stopped mid-sync");

    // Second life: the interrupted run starts again by itself.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let site = Site::start(dir.path(), vec![config.clone()], 1 << 30).await;
        let done = wait_until(Duration::from_secs(30), || {
            site.channels.status()[0]
                .last_run
                .as_ref()
                .is_some_and(|r| r.result == "ok")
        })
        .await;
        assert!(
            done,
            "resumed sync finished: {:?}",
            site.channels.status()[0]
        );
        for path in ["/lib/a.msi", "/lib/b.msi"] {
            assert_eq!(
                origin.count(path),
                2,
                "{path}: one fetch, then one conditional"
            );
        }
        let c = origin.requests_for("/lib/c.iso");
        assert!(
            c.last().unwrap().range().is_some(),
            "c.iso resumed with a Range request"
        );
        let listings = 2 * lib.listing("/lib/").len() as u64;
        let total = origin.sent_bytes();
        assert!(
            total <= lib.total_bytes() + listings + 1_000_000,
            "{total} bytes sent for a {} byte library",
            lib.total_bytes()
        );
        let reply = Client::new(site.addr)
            .get(&origin.url("/lib/c.iso"), &[])
            .await
            .unwrap();
        assert_eq!(reply.body, lib.files["/lib/c.iso"].0);
    });
    drop(origin);
}

#[tokio::test]
async fn a_partial_copy_of_an_older_version_is_replaced_not_mixed() {
    let origin = Origin::start().await;
    let old = content(1_000_000, 1);
    let new = content(1_000_000, 2);
    origin.put(
        "/lib/app.msi",
        Resource::new(old.clone())
            .no_cache_headers()
            .etag("\"old\""),
    );
    origin.put(
        "/lib/",
        Resource::new(Bytes::from_static(b"<a href=\"app.msi\">app.msi</a>")).no_cache_headers(),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut config = ProxyConfig::default();
    config.fill.background_fill = false;
    let site = Site::start_with(dir.path(), vec![channel(&origin, "/lib/")], 1 << 30, config).await;
    // A PC's range request leaves the first 100 kB of the old version.
    let reply = Client::new(site.addr)
        .get(&origin.url("/lib/app.msi"), &[("range", "bytes=0-99999")])
        .await
        .unwrap();
    assert_eq!(reply.body, old.slice(0..100_000));
    assert_eq!(site.stored(&origin, "/lib/app.msi"), Some((false, false)));
    origin.put(
        "/lib/app.msi",
        Resource::new(new.clone())
            .no_cache_headers()
            .etag("\"new\""),
    );
    let summary = site.sync("lib").await;
    assert_eq!(
        (summary.result.as_str(), summary.fetched),
        ("ok", 1),
        "{summary:?} {:?}",
        site.channels.status()[0].errors
    );
    let reply = Client::new(site.addr)
        .get(&origin.url("/lib/app.msi"), &[])
        .await
        .unwrap();
    assert_eq!(reply.body, new, "only bytes of the current version");
}

/// A manifest's digest binds the file at the edge after a restart too: a
/// copy the mirror changes later never reaches a PC whole.
#[test]
fn a_manifest_digest_still_binds_the_file_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let origin_rt = tokio::runtime::Runtime::new().unwrap();
    let origin = origin_rt.block_on(Origin::start());
    let published = content(300_000, 21);
    let tampered = content(300_000, 22);
    origin.put(
        "/lib/app.msi",
        Resource::new(published.clone())
            .etag("\"good\"")
            .header("cache-control", "max-age=600"),
    );
    origin.put(
        "/lib/SHA256SUMS",
        Resource::new(Bytes::from(format!(
            "{}  app.msi\n",
            sha256_hex(&published)
        )))
        .no_cache_headers(),
    );
    let config = channel(&origin, "/lib/SHA256SUMS");
    {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let site = Site::start(dir.path(), vec![config.clone()], 1 << 30).await;
            let summary = site.sync("lib").await;
            assert_eq!(summary.result, "ok", "{summary:?}");
            site.engine.store.flush_access().unwrap();
        });
        rt.shutdown_background();
    }
    // While the edge was down, the mirror's copy was swapped.
    origin.put(
        "/lib/app.msi",
        Resource::new(tampered.clone())
            .etag("\"bad\"")
            .header("cache-control", "max-age=600"),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let site = Site::start(dir.path(), vec![config.clone()], 1 << 30).await;
        let client = Client::new(site.addr);
        let reply = client
            .get(
                &origin.url("/lib/app.msi"),
                &[("cache-control", "no-cache")],
            )
            .await
            .unwrap();
        assert!(
            !(reply.status == 200 && reply.body == tampered),
            "a PC's refresh after the restart got the tampered file"
        );
        // Nor a plain request after it.
        let reply = client.get(&origin.url("/lib/app.msi"), &[]).await.unwrap();
        assert_ne!(reply.body, tampered);
    });
    rt.shutdown_background();
}

/// The channels' database holds the sources' URLs, query tokens included:
/// it is as private as the store's index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_database_is_private_to_the_edge_user() {
    use std::os::unix::fs::PermissionsExt;
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _site = Site::start(dir.path(), vec![channel(&origin, "/lib/")], 1 << 30).await;
    let mode = std::fs::metadata(dir.path().join("channels.sqlite"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "channels.sqlite is {mode:o}");
}
