//! Syncing a channel from directory listings and keeping it in step: every
//! file once, conditional resyncs, deletions, listing errors, exclusions.

use bytes::Bytes;
use outpost_testkit::{Client, Origin, Resource, content};

use crate::support::*;

#[tokio::test]
async fn listings_in_iis_nginx_and_apache_styles_sync_every_file_once() {
    for style in [Style::Iis, Style::Nginx, Style::Apache] {
        let origin = Origin::start().await;
        let lib = sample_library(style);
        lib.publish(&origin, &[]);
        let dir = tempfile::tempdir().unwrap();
        let site = Site::start(dir.path(), vec![channel(&origin, "/lib/")], 1 << 30).await;
        let summary = site.sync("lib").await;
        assert_eq!(summary.result, "ok", "{style:?}: {summary:?}");
        assert_eq!((summary.files, summary.fetched), (3, 3), "{style:?}");
        for (path, (body, _)) in &lib.files {
            assert_eq!(origin.count(path), 1, "{style:?}: {path} fetched once");
            assert_eq!(
                site.stored(&origin, path),
                Some((true, true)),
                "{style:?}: {path}"
            );
            let reply = Client::new(site.addr)
                .get(&origin.url(path), &[])
                .await
                .unwrap();
            assert_eq!(reply.header("x-cache"), Some("HIT"), "{style:?}: {path}");
            assert_eq!(&reply.body, body, "{style:?}: {path}");
        }
        assert_eq!(
            origin.count("/private/secret.bin"),
            0,
            "{style:?}: the crawl left the base URL"
        );
        assert_eq!(
            origin.count("/"),
            0,
            "{style:?}: the crawl went up to the parent"
        );
    }
}

#[tokio::test]
async fn resync_is_conditional_refetches_changes_and_unpins_deleted_files() {
    let origin = Origin::start().await;
    let mut lib = sample_library(Style::Nginx);
    lib.publish(&origin, &[]);
    let dir = tempfile::tempdir().unwrap();
    let site = Site::start(dir.path(), vec![channel(&origin, "/lib/")], 1 << 30).await;
    assert_eq!(site.sync("lib").await.fetched, 3);
    let sent_after_first = origin.sent_bytes();

    let unchanged = site.sync("lib").await;
    assert_eq!(
        (unchanged.fetched, unchanged.not_modified),
        (0, 3),
        "{unchanged:?}"
    );
    for path in lib.files.keys() {
        let reqs = origin.requests_for(path);
        assert_eq!(reqs.len(), 2, "{path}");
        assert!(
            reqs[1].is_conditional(),
            "{path}: second sync asks conditionally"
        );
        assert_eq!(reqs[1].status, http::StatusCode::NOT_MODIFIED);
    }
    let listing_bytes: u64 = 3 * lib.listing("/lib/").len() as u64;
    assert!(
        origin.sent_bytes() - sent_after_first <= listing_bytes,
        "an unchanged resync moved {} body bytes",
        origin.sent_bytes() - sent_after_first
    );

    let new_body = content(650_000, 42);
    lib.add("/lib/setup.msi", new_body.clone(), "a2");
    lib.files.remove("/lib/drivers/net.cab");
    lib.publish(&origin, &["/lib/drivers/net.cab"]);
    let changed = site.sync("lib").await;
    assert_eq!(
        (
            changed.files,
            changed.fetched,
            changed.not_modified,
            changed.removed
        ),
        (2, 1, 1, 1),
        "{changed:?}"
    );
    let reply = Client::new(site.addr)
        .get(&origin.url("/lib/setup.msi"), &[])
        .await
        .unwrap();
    assert_eq!(reply.body, new_body);
    assert_eq!(site.stored(&origin, "/lib/setup.msi"), Some((true, true)));
    assert_eq!(
        site.stored(&origin, "/lib/drivers/net.cab"),
        Some((true, false)),
        "a file that left the source stays as ordinary, unpinned cache"
    );
    let status = &site.channels.status()[0];
    assert_eq!((status.files_total, status.files_present), (2, 2));
}

#[tokio::test]
async fn a_listing_error_unpins_nothing() {
    let origin = Origin::start().await;
    let lib = sample_library(Style::Apache);
    lib.publish(&origin, &[]);
    let dir = tempfile::tempdir().unwrap();
    let site = Site::start(dir.path(), vec![channel(&origin, "/lib/")], 1 << 30).await;
    assert_eq!(site.sync("lib").await.result, "ok");
    origin.put(
        "/lib/drivers/",
        Resource::new(Bytes::from_static(b"busy")).status(http::StatusCode::SERVICE_UNAVAILABLE),
    );
    let summary = site.sync("lib").await;
    assert_eq!(summary.result, "errors", "{summary:?}");
    assert_eq!(summary.removed, 0);
    for path in lib.files.keys() {
        assert_eq!(site.stored(&origin, path), Some((true, true)), "{path}");
    }
    origin.put(
        "/lib/",
        Resource::new(Bytes::from_static(b"down")).status(http::StatusCode::BAD_GATEWAY),
    );
    let failed = site.sync("lib").await;
    assert_eq!(failed.result, "failed");
    assert!(failed.message.unwrap_or_default().contains("502"));
}

#[tokio::test]
async fn an_error_page_with_a_lifetime_is_reported_not_pre_positioned() {
    let origin = Origin::start().await;
    let lib = sample_library(Style::Nginx);
    lib.publish(&origin, &[]);
    // The file server is overloaded and says so for an hour: RFC 9111 lets
    // the edge keep that answer for clients, but it is not the package.
    origin.put(
        "/lib/setup.msi",
        Resource::new(Bytes::from_static(b"overloaded"))
            .no_cache_headers()
            .status(http::StatusCode::SERVICE_UNAVAILABLE)
            .header("cache-control", "max-age=3600"),
    );
    let dir = tempfile::tempdir().unwrap();
    let site = Site::start(dir.path(), vec![channel(&origin, "/lib/")], 1 << 30).await;
    let summary = site.sync("lib").await;
    assert_eq!(summary.result, "errors", "{summary:?}");
    let errors = format!("{:?}", site.channels.status()[0].errors);
    assert!(
        errors.contains("setup.msi") && errors.contains("503"),
        "the error does not name the file and status: {errors}"
    );
    // Fixed at the origin: the next sync fetches the package, not "unchanged".
    lib.publish(&origin, &[]);
    assert_eq!(site.sync("lib").await.result, "ok");
    assert_eq!(
        site.stored(&origin, "/lib/setup.msi"),
        Some((true, true)),
        "the package is not stored and pinned"
    );
    let reply = Client::new(site.addr)
        .get(&origin.url("/lib/setup.msi"), &[])
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.body == lib.files["/lib/setup.msi"].0);
}

/// `exclude = ["*/old/*"]`, as the example config writes it: the old
/// folder at the top of the source and below it are both left out, and an
/// include matches a percent-encoded `+` as the `+` it is.
#[tokio::test]
async fn an_excluded_old_folder_is_left_out_at_the_top_and_below() {
    let origin = Origin::start().await;
    let mut lib = Library::new(Style::Nginx);
    lib.add("/lib/setup.msi", content(1000, 1), "a");
    lib.add("/lib/old/setup.msi", content(1000, 2), "b");
    lib.add("/lib/x64/old/driver.msi", content(1000, 3), "c");
    lib.add("/lib/x64/driver.msi", content(1000, 4), "d");
    lib.add("/lib/x64/c%2B%2B.msi", content(1000, 5), "e");
    lib.add("/lib/x64/readme.txt", content(1000, 6), "f");
    lib.publish(&origin, &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut config = channel(&origin, "/lib/");
    config.include = vec!["*.msi".into(), "c++*".into()];
    config.exclude = vec!["*/old/*".into()];
    let site = Site::start(dir.path(), vec![config], 1 << 30).await;
    let summary = site.sync("lib").await;
    assert_eq!(summary.result, "ok", "{summary:?}");
    for (path, taken) in [
        ("/lib/setup.msi", true),
        ("/lib/x64/driver.msi", true),
        ("/lib/x64/c%2B%2B.msi", true),
        ("/lib/old/setup.msi", false),
        ("/lib/x64/old/driver.msi", false),
        ("/lib/x64/readme.txt", false),
    ] {
        assert_eq!(origin.count(path), usize::from(taken), "{path}");
        assert_eq!(site.stored(&origin, path).is_some(), taken, "{path}");
    }
}
