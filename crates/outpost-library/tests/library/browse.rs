//! Browsing the library: pages in HTML and JSON at every level, and
//! downloads served from the store with Range, HEAD and conditionals.

use serde_json::Value;

use crate::support::*;

#[tokio::test]
async fn the_root_lists_channels_and_every_folder_is_a_page_in_html_and_json() {
    let site = Site::synced().await;

    let root = get(&site, "/", &[]).await;
    assert_eq!(root.status, 200);
    assert_eq!(
        root.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        root.text().contains("<a href=\"/packages/\">packages/</a>"),
        "{}",
        root.text()
    );

    let json: Value = serde_json::from_slice(&get(&site, "/?format=json", &[]).await.body).unwrap();
    assert_eq!(json["entries"].as_array().unwrap().len(), 2, "{json}");
    let channel = &json["entries"][0];
    assert_eq!(channel["name"], "packages");
    assert_eq!(channel["href"], "/packages/");
    assert_eq!(channel["files"], 4);
    assert_eq!(
        json["entries"][1]["files"], 2,
        "tools: tool.exe and bad.exe"
    );
    let total: usize = files().iter().map(|(_, b)| b.len()).sum();
    assert_eq!(channel["size"], total);
    assert_eq!(channel["source"], site.origin.url("/pkgs/"));

    let folder = get(
        &site,
        "/packages/drivers/",
        &[("Accept", "application/json")],
    )
    .await;
    assert_eq!(folder.header("content-type"), Some("application/json"));
    let json: Value = serde_json::from_slice(&folder.body).unwrap();
    assert_eq!(json["path"], "/packages/drivers/");
    assert_eq!(json["parent"], "/packages/");
    let entries = json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{json}");
    assert_eq!(
        (entries[0]["name"].as_str(), entries[0]["type"].as_str()),
        (Some("gpu"), Some("folder"))
    );
    let cab = &entries[1];
    assert_eq!(cab["name"], "net card.cab");
    assert_eq!(cab["href"], "/packages/drivers/net%20card.cab");
    assert_eq!(cab["size"], 300_000);
    assert_eq!(cab["state"], "present");
    assert_eq!(cab["url"], site.origin.url("/pkgs/drivers/net%20card.cab"));
    // A folder listing vouches for no digest; the store's own, when it
    // has computed one by now, is the true one.
    let cab_body = files()
        .into_iter()
        .find(|(name, _)| *name == "drivers/net card.cab")
        .map(|(_, body)| body)
        .unwrap();
    assert!(
        cab["sha256"].is_null() || cab["sha256"] == sha256_hex(&cab_body),
        "{cab}"
    );
    assert_eq!(cab["modified"], "2026-11-02T10:00:00Z");

    let (name, body) = tool();
    let tools: Value =
        serde_json::from_slice(&get(&site, "/tools/?format=json", &[]).await.body).unwrap();
    // bad.exe, then tool.exe: files by name.
    assert_eq!(tools["entries"][1]["name"], name);
    assert_eq!(
        tools["entries"][1]["sha256"].as_str(),
        Some(sha256_hex(&body).as_str())
    );
    assert!(
        get(&site, "/tools/", &[])
            .await
            .text()
            .contains(&sha256_hex(&body))
    );

    let html = get(&site, "/packages/drivers/", &[]).await.text();
    assert!(html.contains("net card.cab"), "{html}");
    assert!(html.contains("class=\"present\""));

    let details: Value = serde_json::from_slice(
        &get(&site, "/packages/setup.msi?format=json", &[])
            .await
            .body,
    )
    .unwrap();
    assert_eq!(details["size"], 700_000);
    assert_eq!(details["type"], "file");
}

#[tokio::test]
async fn a_download_is_the_origins_bytes_from_the_store_with_range_head_and_conditionals() {
    let site = Site::synced().await;
    let (_, body) = &files()[0];
    let before = site.origin_gets("setup.msi");

    let whole = get(&site, "/packages/setup.msi", &[]).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, body.as_ref());
    assert_eq!(whole.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(whole.header("content-security-policy"), Some("sandbox"));

    let part = get(
        &site,
        "/packages/setup.msi",
        &[("Range", "bytes=1000-1999")],
    )
    .await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, &body[1000..2000]);

    let head = raw(site.addr, &request("HEAD", "/packages/setup.msi", &[], "")).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("700000"));
    assert!(head.body.is_empty());

    let etag = whole.header("etag").expect("an ETag").to_string();
    let again = get(&site, "/packages/setup.msi", &[("If-None-Match", &etag)]).await;
    assert_eq!(again.status, 304);

    assert_eq!(
        site.origin_gets("setup.msi"),
        before,
        "the library never asked the origin"
    );
}

#[tokio::test]
async fn a_file_that_is_not_in_the_store_is_a_404_that_says_why() {
    let site = Site::synced().await;
    let obj = site
        .engine
        .store
        .get(
            &outpost_http::CacheKey::from_uri(
                &site.origin.url("/pkgs/readme.txt").parse().unwrap(),
            )
            .unwrap(),
        )
        .unwrap()
        .expect("stored");
    site.engine.store.purge(obj.key()).unwrap();
    let resp = get(&site, "/packages/readme.txt", &[]).await;
    assert_eq!(resp.status, 404);
    assert!(resp.text().contains("does not hold it"), "{}", resp.text());
    let json: Value =
        serde_json::from_slice(&get(&site, "/packages/?format=json", &[]).await.body).unwrap();
    let readme = json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "readme.txt")
        .unwrap()
        .clone();
    assert_eq!(readme["state"], "missing");
    assert_eq!(get(&site, "/nope/", &[]).await.status, 404);
    assert_eq!(get(&site, "/packages/nope.msi", &[]).await.status, 404);
    assert_eq!(get(&site, "/packages/setup.msi/", &[]).await.status, 404);
}

#[tokio::test]
async fn writes_are_403_and_other_methods_405_with_allow() {
    let site = Site::synced().await;
    for method in [
        "PUT",
        "DELETE",
        "MKCOL",
        "MOVE",
        "COPY",
        "LOCK",
        "UNLOCK",
        "PROPPATCH",
    ] {
        let resp = raw(
            site.addr,
            &request(
                method,
                "/packages/setup.msi",
                &[("Destination", "/packages/x")],
                "x",
            ),
        )
        .await;
        assert_eq!(resp.status, 403, "{method}");
    }
    for method in ["POST", "PATCH", "TRACE"] {
        let resp = raw(site.addr, &request(method, "/packages/setup.msi", &[], "x")).await;
        assert_eq!(resp.status, 405, "{method}");
        assert_eq!(
            resp.header("allow"),
            Some("GET, HEAD, OPTIONS, PROPFIND"),
            "{method}"
        );
    }
    let reply = get(&site, "/packages/setup.msi", &[]).await;
    assert_eq!(reply.body, files()[0].1.as_ref(), "the file is unchanged");
}

#[tokio::test]
async fn a_quarantined_file_is_listed_as_such_and_never_served() {
    let site = Site::synced().await;
    let json: Value =
        serde_json::from_slice(&get(&site, "/tools/?format=json", &[]).await.body).unwrap();
    let bad = json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "bad.exe")
        .expect("bad.exe is listed")
        .clone();
    assert_eq!(bad["state"], "quarantined", "{json}");
    let resp = get(&site, "/tools/bad.exe", &[]).await;
    assert_eq!(resp.status, 404);
    assert!(resp.text().contains("SHA-256"), "{}", resp.text());
    assert!(
        get(&site, "/tools/", &[])
            .await
            .text()
            .contains("class=\"quarantined\"")
    );
}

#[tokio::test]
async fn a_file_being_synced_shows_its_progress_then_becomes_a_download() {
    let site = Site::synced().await;
    let slow = outpost_testkit::content(2_000_000, 77);
    site.origin.put(
        "/pkgs/slow.bin",
        outpost_testkit::Resource::new(slow.clone())
            .no_cache_headers()
            .rate(1_000_000),
    );
    site.origin.put(
        "/pkgs/",
        listing(
            "/pkgs/",
            &[
                "drivers/".into(),
                "readme.txt".into(),
                "setup.msi".into(),
                "slow.bin".into(),
            ],
        ),
    );
    let run = site.channels.sync("packages").unwrap();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let percent = loop {
        let json: Value =
            serde_json::from_slice(&get(&site, "/packages/?format=json", &[]).await.body).unwrap();
        let entry = json["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "slow.bin")
            .cloned();
        if let Some(e) = entry
            && e["state"] == "syncing"
            && e["percent"].as_u64().is_some_and(|p| p > 0)
        {
            break e["percent"].as_u64().unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never seen syncing: {json}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(percent < 100, "{percent}");
    let html = get(&site, "/packages/", &[]).await.text();
    assert!(html.contains("syncing "), "{html}");
    let early = get(&site, "/packages/slow.bin", &[]).await;
    assert_eq!(early.status, 404);
    assert!(early.text().contains("syncing"), "{}", early.text());

    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        site.channels.wait("packages", run),
    )
    .await
    .expect("sync finishes")
    .unwrap();
    let done = get(&site, "/packages/slow.bin", &[]).await;
    assert_eq!(done.status, 200);
    assert_eq!(done.body, slow.as_ref());
}
