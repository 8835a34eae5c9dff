//! The bounds on what a channel crawls and holds: symlink loops, depth,
//! pages, links per page, files and bytes.

use outpost_channel::ChannelLimits;
use outpost_testkit::{Origin, Resource, content};

use crate::support::*;

#[tokio::test]
async fn a_symlink_loop_is_not_followed_and_the_sync_says_so() {
    let origin = Origin::start().await;
    // `a -> .` on the file server: every /pkgs/a/a/.../ lists what /pkgs/
    // lists (more levels than any limit here would read).
    let mut dir = "/pkgs/".to_string();
    for _ in 0..64 {
        origin.put(
            &dir,
            listing_page(&dir, &["a/".to_string(), "tool.msi".to_string()]),
        );
        origin.put(
            &format!("{dir}tool.msi"),
            Resource::new(content(1000, 1)).no_cache_headers(),
        );
        dir.push_str("a/");
    }
    let dir = tempfile::tempdir().unwrap();
    let limits = ChannelLimits {
        max_depth: 8,
        ..ChannelLimits::default()
    };
    let (site, summary) = sync_to_a_limit(dir.path(), &origin, "/pkgs/", limits).await;
    let hit = &summary.limits[0];
    assert_eq!(
        (hit.limit.as_str(), hit.url.as_str()),
        ("loop", origin.url("/pkgs/a/").as_str()),
        "{summary:?}"
    );
    let message = summary.message.clone().unwrap_or_default();
    assert!(
        message.contains("symlink loop") && message.contains("/pkgs/a/"),
        "{message}"
    );
    // The page that repeats its parent is where the crawl stops: well
    // inside max_depth, and none of the loop's copies is pinned.
    assert_eq!(listing_requests(&origin), 2, "{:?}", origin.requests());
    assert_eq!((summary.files, summary.fetched), (1, 1), "{summary:?}");
    assert_eq!(origin.count("/pkgs/a/tool.msi"), 0);
    assert_eq!(site.stored(&origin, "/pkgs/tool.msi"), Some((true, true)));
    let status = &site.channels.status()[0];
    assert_eq!(status.pinned_files, 1);
    assert_eq!(status.last_run.as_ref().unwrap().result, "limit");
}

#[tokio::test]
async fn a_deep_tree_is_listed_down_to_max_depth_only() {
    let origin = Origin::start().await;
    // A loop the names cannot tell (a generated tree, or a server adding a
    // file per level): only the depth limit stops it.
    let mut dir = "/deep/".to_string();
    let mut files = Vec::new();
    for level in 0..40 {
        let file = format!("f{level}.bin");
        origin.put(&dir, listing_page(&dir, &["d/".to_string(), file.clone()]));
        files.push(format!("{dir}{file}"));
        origin.put(
            &files[level],
            Resource::new(content(1000, level as u64)).no_cache_headers(),
        );
        dir.push_str("d/");
    }
    let dir = tempfile::tempdir().unwrap();
    let limits = ChannelLimits {
        max_depth: 3,
        ..ChannelLimits::default()
    };
    let (site, summary) = sync_to_a_limit(dir.path(), &origin, "/deep/", limits).await;
    let hit = &summary.limits[0];
    assert_eq!(
        (hit.limit.as_str(), hit.value, hit.url.as_str()),
        ("max_depth", Some(3), origin.url("/deep/d/d/d/d/").as_str()),
        "{summary:?}"
    );
    assert!(
        summary
            .message
            .as_deref()
            .is_some_and(|m| m.contains("max_depth = 3 reached at http")),
        "{summary:?}"
    );
    // Depths 0 to 3: four pages, four files.
    assert_eq!(listing_requests(&origin), 4, "{:?}", origin.requests());
    assert_eq!(summary.fetched, 4, "{summary:?}");
    assert_eq!(pinned_files(&site, &origin, &files), 4);
    assert_eq!(origin.count(&files[4]), 0);
}

#[tokio::test]
async fn a_wide_tree_stops_at_max_pages() {
    let origin = Origin::start().await;
    let folders: Vec<String> = (0..50).map(|i| format!("v{i:02}/")).collect();
    origin.put("/wide/", listing_page("/wide/", &folders));
    let mut files = Vec::new();
    for folder in &folders {
        let dir = format!("/wide/{folder}");
        origin.put(&dir, listing_page(&dir, &["pkg.msi".to_string()]));
        files.push(format!("{dir}pkg.msi"));
        origin.put(
            files.last().unwrap(),
            Resource::new(content(500, 3)).no_cache_headers(),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let limits = ChannelLimits {
        max_pages: 10,
        ..ChannelLimits::default()
    };
    let (site, summary) = sync_to_a_limit(dir.path(), &origin, "/wide/", limits).await;
    let hit = &summary.limits[0];
    assert_eq!(
        (hit.limit.as_str(), hit.url.as_str(), hit.times),
        ("max_pages", origin.url("/wide/v09/").as_str(), 41),
        "{summary:?}"
    );
    assert!(
        summary
            .message
            .as_deref()
            .is_some_and(|m| m.ends_with(&format!(
                "max_pages = 10 reached 41 times, first at {}",
                origin.url("/wide/v09/")
            ))),
        "{summary:?}"
    );
    assert_eq!(listing_requests(&origin), 10);
    assert_eq!(pinned_files(&site, &origin, &files), 9);

    // The admin raises the limit: a reload applies it without a restart.
    let raised = limited(
        &origin,
        "/wide/",
        ChannelLimits {
            max_pages: 100,
            ..ChannelLimits::default()
        },
    );
    assert_eq!(
        site.channels.reconfigure(&[raised]),
        vec!["channel \"lib\" limits".to_string()],
        "applied in place, no new run"
    );
    let summary = site.sync("lib").await;
    assert_eq!(
        (summary.result.as_str(), summary.files),
        ("ok", 50),
        "{summary:?}"
    );
    assert_eq!(pinned_files(&site, &origin, &files), 50);
}

#[tokio::test]
async fn a_page_is_read_up_to_max_page_links_and_nothing_held_is_unpinned() {
    let origin = Origin::start().await;
    let body = |i: usize| Resource::new(content(200, i as u64)).no_cache_headers();
    let old: Vec<String> = (0..10).map(|i| format!("old{i:02}.msi")).collect();
    for (i, name) in old.iter().enumerate() {
        origin.put(&format!("/big/{name}"), body(i));
    }
    origin.put("/big/", listing_page("/big/", &old));
    let dir = tempfile::tempdir().unwrap();
    let limits = ChannelLimits {
        max_page_links: 20,
        ..ChannelLimits::default()
    };
    let site = Site::start(dir.path(), vec![limited(&origin, "/big/", limits)], 1 << 30).await;
    assert_eq!(site.sync("lib").await.result, "ok");
    let old_paths: Vec<String> = old.iter().map(|n| format!("/big/{n}")).collect();
    assert_eq!(pinned_files(&site, &origin, &old_paths), 10);

    // The page grows to 60 entries, the new ones first: the old files are
    // past the cut, unseen rather than gone.
    let new: Vec<String> = (0..50).map(|i| format!("new{i:02}.msi")).collect();
    for (i, name) in new.iter().enumerate() {
        origin.put(&format!("/big/{name}"), body(100 + i));
    }
    let page: Vec<String> = new.iter().chain(&old).cloned().collect();
    origin.put("/big/", listing_page("/big/", &page));
    let summary = site.sync("lib").await;
    assert_eq!(summary.result, "limit", "{summary:?}");
    let hit = &summary.limits[0];
    assert_eq!(
        (hit.limit.as_str(), hit.value, hit.url.as_str()),
        ("max_page_links", Some(20), origin.url("/big/").as_str()),
        "{summary:?}"
    );
    assert!(
        summary
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("listing incomplete, nothing unpinned: ")
                && m.contains("only the first 20 entries")
                && m.ends_with(&origin.url("/big/"))),
        "{summary:?}"
    );
    assert_eq!((summary.files, summary.fetched), (20, 20), "{summary:?}");
    let read: Vec<String> = new.iter().map(|n| format!("/big/{n}")).collect();
    let requested = read.iter().filter(|p| origin.count(p) > 0).count();
    assert_eq!(requested, 20, "only the entries read are fetched");
    assert_eq!(summary.removed, 0);
    assert_eq!(
        pinned_files(&site, &origin, &old_paths),
        10,
        "files held before stay pinned"
    );
}

#[tokio::test]
async fn a_crawl_stops_listing_at_max_files() {
    let origin = Origin::start().await;
    origin.put(
        "/many/",
        listing_page("/many/", &["a/".to_string(), "b/".to_string()]),
    );
    for folder in ["a", "b"] {
        let dir = format!("/many/{folder}/");
        let names: Vec<String> = (0..10).map(|i| format!("f{i:02}.bin")).collect();
        for name in &names {
            origin.put(
                &format!("{dir}{name}"),
                Resource::new(content(100, 1)).no_cache_headers(),
            );
        }
        origin.put(&dir, listing_page(&dir, &names));
    }
    let dir = tempfile::tempdir().unwrap();
    let limits = ChannelLimits {
        max_files: 5,
        ..ChannelLimits::default()
    };
    let (_site, summary) = sync_to_a_limit(dir.path(), &origin, "/many/", limits).await;
    assert_eq!(
        (
            summary.limits[0].limit.as_str(),
            summary.limits[0].url.as_str()
        ),
        ("max_files", origin.url("/many/a/f05.bin").as_str()),
        "{summary:?}"
    );
    assert_eq!((summary.files, summary.fetched), (5, 5), "{summary:?}");
    // Nothing past the limit is listed either.
    assert_eq!(origin.count("/many/b/"), 0);
    assert_eq!(listing_requests(&origin), 2);
}

#[tokio::test]
async fn max_files_bounds_what_a_channel_holds_across_syncs() {
    let origin = Origin::start().await;
    let first = manifest_library(&origin, "a", 30, 100, false);
    let dir = tempfile::tempdir().unwrap();
    let limits = ChannelLimits {
        max_files: 10,
        ..ChannelLimits::default()
    };
    let (site, summary) = sync_to_a_limit(dir.path(), &origin, "/m/files.txt", limits).await;
    assert_eq!(
        (
            summary.limits[0].limit.as_str(),
            summary.limits[0].url.as_str()
        ),
        ("max_files", origin.url("/m/a10.msi").as_str()),
        "{summary:?}"
    );
    assert_eq!(summary.fetched, 10);
    assert_eq!(first.iter().filter(|p| origin.count(p) > 0).count(), 10);

    // A new manifest of other files: the ten held stay (the manifest was
    // cut, so they may still be in it) and fill the limit.
    let second = manifest_library(&origin, "b", 30, 100, false);
    let summary = site.sync("lib").await;
    assert_eq!(summary.result, "limit", "{summary:?}");
    assert_eq!((summary.fetched, summary.removed), (0, 0), "{summary:?}");
    assert_eq!(second.iter().filter(|p| origin.count(p) > 0).count(), 0);
    assert_eq!(pinned_files(&site, &origin, &first), 10);
    assert_eq!(site.channels.status()[0].pinned_files, 10);
}

#[tokio::test]
async fn max_bytes_stops_fetching_by_manifest_size_or_response_length() {
    for sizes in [true, false] {
        let origin = Origin::start().await;
        let paths = manifest_library(&origin, "f", 10, 100_000, sizes);
        let dir = tempfile::tempdir().unwrap();
        let mut config = limited(
            &origin,
            "/m/files.txt",
            ChannelLimits {
                max_bytes: Some(350_000),
                ..ChannelLimits::default()
            },
        );
        config.concurrency = 1;
        let site = Site::start(dir.path(), vec![config], 1 << 30).await;
        let summary = site.sync("lib").await;
        assert_eq!(summary.result, "limit", "sizes {sizes}: {summary:?}");
        let hit = &summary.limits[0];
        assert_eq!(
            (hit.limit.as_str(), hit.value, hit.url.as_str()),
            (
                "max_bytes",
                Some(350_000),
                origin.url("/m/f03.msi").as_str()
            ),
            "sizes {sizes}: {summary:?}"
        );
        assert_eq!(pinned_files(&site, &origin, &paths), 3, "sizes {sizes}");
        let status = &site.channels.status()[0];
        assert!(status.bytes_total <= 350_000, "{status:?}");
        // With the manifest's sizes the fourth file is never asked for;
        // without, its response is what tells, and it is not kept.
        let requested = paths.iter().filter(|p| origin.count(p) > 0).count();
        assert_eq!(requested, if sizes { 3 } else { 4 }, "sizes {sizes}");
        assert_eq!(summary.skipped, 7, "sizes {sizes}: {summary:?}");
    }
}
