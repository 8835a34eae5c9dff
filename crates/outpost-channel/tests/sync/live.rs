//! Channels added, removed and replaced while the edge runs
//! (`Channels::reconfigure`, what a reload or a fleet manager's config
//! does): they start and sync at once, stop their runs, and leave what
//! they held as ordinary cache.

use std::time::{Duration, Instant};

use outpost_testkit::{Origin, Resource, content};

use crate::support::*;

/// Polls `check` until it holds or `limit` passes.
async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

fn last_result(site: &Site, name: &str) -> Option<String> {
    site.channels
        .status()
        .into_iter()
        .find(|c| c.name == name)
        .and_then(|c| c.last_run)
        .map(|r| r.result.to_string())
}

#[tokio::test]
async fn an_added_channel_syncs_at_once_and_a_removed_one_leaves_its_files_unpinned() {
    let origin = Origin::start().await;
    let lib = sample_library(Style::Nginx);
    lib.publish(&origin, &[]);
    origin.put(
        "/other/tool.exe",
        Resource::new(content(50_000, 7)).no_cache_headers(),
    );
    origin.put("/other/", listing_page("/other/", &["tool.exe".into()]));
    let dir = tempfile::tempdir().unwrap();
    let site = Site::start(dir.path(), vec![channel(&origin, "/lib/")], 1 << 30).await;
    assert_eq!(site.sync("lib").await.result, "ok");
    assert_eq!(site.stored(&origin, "/lib/setup.msi"), Some((true, true)));

    let mut other = channel(&origin, "/other/");
    other.name = "other".into();
    let changes = site.channels.reconfigure(&[other]);
    assert_eq!(
        changes,
        vec![
            "channel \"other\" added".to_string(),
            "channel \"lib\" removed".to_string()
        ]
    );
    assert_eq!(site.channels.names(), vec!["other".to_string()]);
    assert!(
        eventually(Duration::from_secs(20), || last_result(&site, "other")
            .as_deref()
            == Some("ok"))
        .await,
        "the added channel never synced: {:?}",
        site.channels.status()
    );
    assert_eq!(site.stored(&origin, "/other/tool.exe"), Some((true, true)));
    // The removed channel's files stay in the cache, evictable.
    assert!(
        eventually(Duration::from_secs(10), || {
            lib.files
                .keys()
                .all(|p| site.stored(&origin, p) == Some((true, false)))
        })
        .await,
        "the removed channel's files are still pinned"
    );
    assert!(
        site.channels.sync("lib").is_err(),
        "a removed channel cannot sync"
    );

    // Added again, it revalidates what the cache still holds.
    let before = lib.files.keys().map(|p| origin.count(p)).sum::<usize>();
    let mut both = vec![channel(&origin, "/lib/")];
    let mut other = channel(&origin, "/other/");
    other.name = "other".into();
    both.push(other);
    site.channels.reconfigure(&both);
    assert!(
        eventually(Duration::from_secs(20), || last_result(&site, "lib")
            .as_deref()
            == Some("ok"))
        .await,
        "{:?}",
        site.channels.status()
    );
    let last = site
        .channels
        .status()
        .into_iter()
        .find(|c| c.name == "lib")
        .unwrap();
    let run = last.last_run.unwrap();
    assert_eq!((run.fetched, run.not_modified), (0, 3), "{run:?}");
    assert_eq!(
        lib.files.keys().map(|p| origin.count(p)).sum::<usize>(),
        before + 3
    );
    assert_eq!(site.stored(&origin, "/lib/setup.msi"), Some((true, true)));
}

#[tokio::test]
async fn a_replaced_channel_stops_its_running_sync_and_the_new_one_takes_over() {
    let origin = Origin::start().await;
    // A slow file keeps the first run busy for about a minute.
    origin.put(
        "/lib/slow/big.iso",
        Resource::new(content(3_000_000, 1))
            .no_cache_headers()
            .rate(50_000),
    );
    origin.put(
        "/lib/slow/",
        listing_page("/lib/slow/", &["big.iso".into()]),
    );
    origin.put(
        "/lib/fast/app.msi",
        Resource::new(content(40_000, 2)).no_cache_headers(),
    );
    origin.put(
        "/lib/fast/",
        listing_page("/lib/fast/", &["app.msi".into()]),
    );
    origin.put(
        "/lib/",
        listing_page("/lib/", &["slow/".into(), "fast/".into()]),
    );
    let dir = tempfile::tempdir().unwrap();
    let site = Site::start(dir.path(), vec![channel(&origin, "/lib/")], 1 << 30).await;
    let first = site.channels.sync("lib").unwrap();
    assert!(
        eventually(Duration::from_secs(10), || origin
            .count("/lib/slow/big.iso")
            == 1)
        .await,
        "the slow file is never asked for"
    );

    let mut narrowed = channel(&origin, "/lib/");
    narrowed.exclude = vec!["slow/**".into()];
    let started = Instant::now();
    assert_eq!(
        site.channels.reconfigure(&[narrowed]),
        vec!["channel \"lib\" replaced".to_string()]
    );
    // The old run ends now, not when the slow file is done.
    tokio::time::timeout(Duration::from_secs(10), site.channels.wait("lib", first))
        .await
        .expect("the replaced channel's run stops")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        eventually(Duration::from_secs(20), || {
            site.channels
                .status()
                .into_iter()
                .find(|c| c.name == "lib")
                .and_then(|c| c.last_run)
                .is_some_and(|r| r.run > first && r.result == "ok")
        })
        .await,
        "the replacement never synced: {:?}",
        site.channels.status()
    );
    assert_eq!(
        site.stored(&origin, "/lib/fast/app.msi"),
        Some((true, true))
    );
    // The stopped file was pinned while it came in; nothing holds it now.
    assert!(
        site.stored(&origin, "/lib/slow/big.iso")
            .is_none_or(|(_, pinned)| !pinned),
        "{:?}",
        site.stored(&origin, "/lib/slow/big.iso")
    );
}

#[tokio::test]
async fn a_new_rate_applies_in_place_without_a_new_run() {
    let origin = Origin::start().await;
    sample_library(Style::Nginx).publish(&origin, &[]);
    let dir = tempfile::tempdir().unwrap();
    let site = Site::start(dir.path(), vec![channel(&origin, "/lib/")], 1 << 30).await;
    assert_eq!(site.sync("lib").await.run, 1);
    let mut slower = channel(&origin, "/lib/");
    slower.rate = outpost_shaper::Rate::bytes_per_sec(1_000_000.0);
    assert_eq!(
        site.channels.reconfigure(&[slower]),
        vec!["channel \"lib\" rate and window".to_string()]
    );
    let status = site.channels.status();
    assert_eq!(status[0].rate, "8.000 Mbit/s");
    assert!(status[0].running.is_none(), "no run started: {status:?}");
    assert_eq!(status[0].last_run.as_ref().map(|r| r.run), Some(1));
}

#[tokio::test]
async fn the_fleet_report_counts_present_files_and_names_the_missing_by_path() {
    let origin = Origin::start().await;
    let lib = sample_library(Style::Nginx);
    lib.publish(&origin, &[]);
    let dir = tempfile::tempdir().unwrap();
    let site = Site::start(dir.path(), vec![channel(&origin, "/lib/")], 1 << 30).await;
    assert_eq!(site.sync("lib").await.result, "ok");
    let report = &site.channels.fleet_report()[0];
    assert_eq!(
        (
            report.files_total,
            report.files_present,
            report.bytes_present
        ),
        (3, 3, lib.total_bytes())
    );
    assert!(report.missing.is_empty() && !report.syncing, "{report:?}");
    assert_eq!(
        report.last_result.map(|r| r.to_string()).as_deref(),
        Some("ok")
    );

    // A copy gone from the store (purged, lost) is missing until a sync.
    let key =
        outpost_http::CacheKey::from_uri(&origin.url("/lib/drivers/net.cab").parse().unwrap())
            .unwrap();
    site.engine.purge(&key).unwrap();
    let report = &site.channels.fleet_report()[0];
    assert_eq!((report.files_total, report.files_present), (3, 2));
    assert_eq!(report.missing, vec!["drivers/net.cab".to_string()]);
}

#[tokio::test]
async fn a_managed_channel_cannot_reach_loopback_unless_the_edge_allows_it() {
    let origin = Origin::start().await;
    let lib = sample_library(Style::Nginx);
    lib.publish(&origin, &[]);
    let mut managed = channel(&origin, "/lib/");
    managed.managed = true;

    // The edge's own file does not allow loopback: a fleet manager's
    // channel pointing there fetches nothing.
    let dir = tempfile::tempdir().unwrap();
    let config = outpost_proxy::ProxyConfig::default();
    let site = Site::start_exactly(dir.path(), vec![managed.clone()], 1 << 30, config).await;
    let run = site.sync("lib").await;
    assert_eq!(run.result, "failed", "{run:?}");
    assert!(
        run.message.as_deref().unwrap_or("").contains("loopback"),
        "{run:?}"
    );
    assert_eq!(origin.count("/lib/"), 0);
    assert_eq!(site.stored(&origin, "/lib/setup.msi"), None);

    // The same channel from the edge's own file is the admin's choice.
    let dir = tempfile::tempdir().unwrap();
    let mut local = managed.clone();
    local.managed = false;
    let config = outpost_proxy::ProxyConfig::default();
    let site = Site::start_exactly(dir.path(), vec![local], 1 << 30, config).await;
    assert_eq!(site.sync("lib").await.result, "ok");

    // And a managed one works where the edge's file lists loopback.
    let dir = tempfile::tempdir().unwrap();
    let site = Site::start(dir.path(), vec![managed], 1 << 30).await;
    assert_eq!(site.sync("lib").await.result, "ok");
}
