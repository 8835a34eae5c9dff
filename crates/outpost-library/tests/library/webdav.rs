//! WebDAV as the Windows WebClient speaks it (requests reconstructed from
//! published captures of Microsoft-WebDAV-MiniRedir: an empty or allprop
//! PROPFIND, and the named-props form, with `translate: f`), asserted on
//! the multistatus XML; and the refusals a read-only share gives.

use crate::support::*;

const MINIREDIR: &str = "Microsoft-WebDAV-MiniRedir/10.0.19045";

const ALLPROP: &str = "<?xml version=\"1.0\" encoding=\"utf-8\" ?><D:propfind xmlns:D=\"DAV:\"><D:allprop/></D:propfind>";

const NAMED: &str = "<?xml version=\"1.0\" encoding=\"utf-8\" ?><D:propfind xmlns:D=\"DAV:\"><D:prop><D:creationdate/><D:displayname/><D:getcontentlength/><D:getcontenttype/><D:getetag/><D:getlastmodified/><D:resourcetype/></D:prop></D:propfind>";

fn windows(depth: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("User-Agent", MINIREDIR),
        ("Depth", depth),
        ("translate", "f"),
        ("Connection", "Keep-Alive"),
    ]
}

async fn propfind(site: &Site, path: &str, headers: &[(&str, &str)], body: &str) -> Raw {
    raw(site.addr, &request("PROPFIND", path, headers, body)).await
}

/// The `<D:response>` blocks of a multistatus, each with its href.
fn responses(xml: &str) -> Vec<(String, String)> {
    xml.split("<D:response>")
        .skip(1)
        .map(|block| {
            let href = block
                .split("<D:href>")
                .nth(1)
                .and_then(|s| s.split("</D:href>").next())
                .unwrap_or("")
                .to_string();
            (href, block.to_string())
        })
        .collect()
}

#[tokio::test]
async fn options_says_dav_1_2_and_ms_author_via_at_every_level() {
    let site = Site::synced().await;
    for path in [
        "/",
        "/packages/",
        "/packages/drivers/",
        "/packages/setup.msi",
    ] {
        let resp = raw(
            site.addr,
            &request("OPTIONS", path, &[("User-Agent", MINIREDIR)], ""),
        )
        .await;
        assert_eq!(resp.status, 200, "{path}");
        assert_eq!(resp.header("dav"), Some("1, 2"), "{path}");
        assert_eq!(resp.header("ms-author-via"), Some("DAV"), "{path}");
        let allow = resp.header("allow").unwrap_or("");
        assert!(
            allow.contains("PROPFIND") && allow.contains("GET"),
            "{path}: {allow}"
        );
        assert!(
            !allow.contains("PUT") && !allow.contains("DELETE"),
            "{path}: {allow}"
        );
    }
}

#[tokio::test]
async fn windows_allprop_at_the_root_lists_channels_as_folders() {
    let site = Site::synced().await;
    for body in ["", ALLPROP] {
        let resp = propfind(&site, "/", &windows("1"), body).await;
        assert_eq!(resp.status, 207, "{}", resp.text());
        let xml = resp.text();
        let found = responses(&xml);
        let hrefs: Vec<&str> = found.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(hrefs, ["/", "/packages/", "/tools/"], "{xml}");
        let channel = &found[1].1;
        assert!(
            channel.contains("<D:collection></D:collection>"),
            "{channel}"
        );
        // Windows reads the Win32 properties of an allprop from itself.
        assert!(
            channel.contains("Win32FileAttributes>00000010<"),
            "{channel}"
        );
    }
}

#[tokio::test]
async fn windows_named_props_list_a_folder_with_sizes_dates_and_types() {
    let site = Site::synced().await;
    let resp = propfind(&site, "/packages/drivers/", &windows("1"), NAMED).await;
    assert_eq!(resp.status, 207, "{}", resp.text());
    let xml = resp.text();
    let found = responses(&xml);
    let hrefs: Vec<&str> = found.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(
        hrefs,
        [
            "/packages/drivers/",
            "/packages/drivers/gpu/",
            "/packages/drivers/net%20card.cab"
        ],
        "{xml}"
    );
    let cab = &found[2].1;
    for expected in [
        "<D:getcontentlength>300000</D:getcontentlength>",
        "<D:getlastmodified>Mon, 02 Nov 2026 10:00:00 GMT</D:getlastmodified>",
        "<D:creationdate>2026-11-02T10:00:00",
        "<D:displayname>net card.cab</D:displayname>",
        "<D:getetag>\"v1\"</D:getetag>",
        "<D:resourcetype></D:resourcetype>",
        "<D:getcontenttype>",
    ] {
        assert!(cab.contains(expected), "{expected} in {cab}");
    }
    let download = get(&site, "/packages/drivers/net%20card.cab", &[]).await;
    assert_eq!(
        download.header("etag"),
        Some("\"v1\""),
        "the same entity-tag"
    );
    assert!(found[1].1.contains("<D:collection></D:collection>"));
    assert!(
        found[1].1.contains("<D:displayname>gpu</D:displayname>"),
        "{}",
        found[1].1
    );
}

#[tokio::test]
async fn depth_0_describes_the_target_alone_folder_or_file() {
    let site = Site::synced().await;
    let folder = propfind(&site, "/packages", &windows("0"), "").await;
    assert_eq!(folder.status, 207);
    let found = responses(&folder.text());
    assert_eq!(found.len(), 1, "{}", folder.text());
    assert!(found[0].1.contains("<D:collection></D:collection>"));

    let file = propfind(&site, "/packages/setup.msi", &windows("0"), NAMED).await;
    assert_eq!(file.status, 207);
    let found = responses(&file.text());
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, "/packages/setup.msi");
    assert!(
        found[0]
            .1
            .contains("<D:getcontentlength>700000</D:getcontentlength>")
    );

    let missing = propfind(&site, "/packages/nope.msi", &windows("0"), "").await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn depth_infinity_and_a_missing_depth_are_refused_with_the_dav_error() {
    let site = Site::synced().await;
    for headers in [vec![("Depth", "infinity")], vec![]] {
        let resp = propfind(&site, "/", &headers, ALLPROP).await;
        assert_eq!(resp.status, 403, "{headers:?}");
        assert!(
            resp.text().contains("<D:propfind-finite-depth/>"),
            "{}",
            resp.text()
        );
    }
}

#[tokio::test]
async fn windows_get_with_translate_f_is_the_file_from_the_store() {
    let site = Site::synced().await;
    let before = site.origin_gets("drivers/gpu/gpu.exe");
    let resp = get(&site, "/packages/drivers/gpu/gpu.exe", &windows("0")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, files()[2].1.as_ref());
    assert_eq!(site.origin_gets("drivers/gpu/gpu.exe"), before);
}

#[tokio::test]
async fn the_share_lists_only_files_a_client_can_open() {
    let site = Site::synced().await;
    let resp = propfind(&site, "/tools/", &windows("1"), "").await;
    assert_eq!(resp.status, 207);
    let xml = resp.text();
    let hrefs: Vec<String> = responses(&xml).into_iter().map(|(h, _)| h).collect();
    assert_eq!(hrefs, ["/tools/", "/tools/tool.exe"], "{xml}");
    let bad = propfind(&site, "/tools/bad.exe", &windows("0"), "").await;
    assert_eq!(bad.status, 404);
}

#[tokio::test]
async fn windows_sees_the_shares_files_as_read_only() {
    let site = Site::synced().await;
    let resp = propfind(&site, "/packages/", &windows("1"), ALLPROP).await;
    assert_eq!(resp.status, 207);
    let xml = resp.text();
    let found = responses(&xml);
    let setup = found
        .iter()
        .find(|(h, _)| h == "/packages/setup.msi")
        .expect("setup.msi listed");
    // Read-only and archive.
    assert!(
        setup.1.contains("Win32FileAttributes>00000021<"),
        "{}",
        setup.1
    );
    let drivers = found
        .iter()
        .find(|(h, _)| h == "/packages/drivers/")
        .expect("drivers listed");
    assert!(
        drivers.1.contains("Win32FileAttributes>00000010<"),
        "{}",
        drivers.1
    );
}

#[tokio::test]
async fn a_deeply_nested_or_declaring_propfind_body_is_refused_and_the_edge_lives_on() {
    let site = Site::synced().await;
    // 2,000 levels overflowed a worker's stack in dav-server's recursive
    // XML builder and aborted the whole edge.
    let deep = format!("<?xml version=\"1.0\"?>{}", "<a>".repeat(2_000));
    let resp = propfind(&site, "/", &[("Depth", "0")], &deep).await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(resp.text().contains("deeper than"), "{}", resp.text());
    let laughs = r#"<?xml version="1.0"?><!DOCTYPE D [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><D:propfind xmlns:D="DAV:"><D:prop>&b;</D:prop></D:propfind>"#;
    let resp = propfind(&site, "/", &[("Depth", "0")], laughs).await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    // Still serving.
    let resp = propfind(&site, "/", &[("Depth", "0")], ALLPROP).await;
    assert_eq!(resp.status, 207);
}
