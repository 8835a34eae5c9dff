//! Fills that meet trouble: an origin that drops or goes away, a restart,
//! a full disk, eviction; what is already on disk is kept and checked.

use std::time::Duration;

use outpost_testkit::{Origin, Resource, content, wait_until};

use crate::common::{Edge, SmallDisk, key, reverse};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fill_resumes_after_the_origin_drops_the_connection() {
    let origin = Origin::start().await;
    let body = content(3 << 20, 4);
    origin.put(
        "/flaky.iso",
        Resource::new(body.clone()).drop_after(1 << 20, 2),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut config = reverse(&origin);
    config.fill.retry_backoff_initial = Duration::from_millis(10);
    let edge = Edge::start(dir.path(), config).await;
    let reply = edge.client().get("/flaky.iso", &[]).await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.body_error.is_none(), "{:?}", reply.body_error);
    assert!(reply.body == body, "resumed body differs");
    let reqs = origin.requests_for("/flaky.iso");
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert_eq!(reqs[1].range(), Some("bytes=1048576-3145727"));
    assert_eq!(reqs[1].headers.get("if-range").unwrap(), "\"v1\"");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_outlasts_an_origin_outage_longer_than_its_retry_count() {
    let origin = Origin::start().await;
    let body = content(2 << 20, 41);
    // The first response is cut after 512 KiB; then the origin answers 503
    // (a WAN outage, as far as the edge can tell) until it comes back.
    origin.put(
        "/outage.iso",
        Resource::new(body.clone())
            .rate(1 << 20)
            .drop_after(512 << 10, 1),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut config = reverse(&origin);
    config.fill.max_retries = 2;
    config.fill.retry_backoff_initial = Duration::from_millis(20);
    config.fill.retry_backoff_max = Duration::from_millis(50);
    config.fill.retry_for = Duration::from_secs(30);
    let edge = Edge::start(dir.path(), config).await;
    let client = edge.client();
    let download = tokio::spawn(async move { client.get("/outage.iso", &[]).await });
    assert!(wait_until(Duration::from_secs(10), || origin.count("/outage.iso") >= 1).await);
    origin.put(
        "/outage.iso",
        Resource::new(body.clone()).status(http::StatusCode::SERVICE_UNAVAILABLE),
    );
    // Well past max_retries failed attempts in a row...
    assert!(
        wait_until(Duration::from_secs(10), || origin.count("/outage.iso") >= 8).await,
        "the fill stopped retrying"
    );
    // ... and the origin is back.
    origin.put("/outage.iso", Resource::new(body.clone()));
    let reply = download.await.unwrap().unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.body_error.is_none(), "{:?}", reply.body_error);
    assert!(reply.body == body, "body after the outage differs");
    let last = origin.requests_for("/outage.iso").pop().unwrap();
    assert_eq!(last.status, http::StatusCode::PARTIAL_CONTENT);
    assert!(last.range().is_some_and(|r| r.starts_with("bytes=")));
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_a_warm_cache_makes_no_origin_request() {
    let origin = Origin::start().await;
    let body = content(1 << 20, 5);
    origin.put("/warm.exe", Resource::new(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), reverse(&origin)).await;
    assert!(edge.client().get("/warm.exe", &[]).await.unwrap().body == body);
    assert!(
        edge.completes(&key(&origin, "/warm.exe"), Duration::from_secs(5))
            .await
    );
    edge.stop().await;
    let edge = Edge::start(dir.path(), reverse(&origin)).await;
    let reply = edge.client().get("/warm.exe", &[]).await.unwrap();
    assert_eq!(reply.header("x-cache"), Some("HIT"));
    assert!(reply.body == body);
    assert_eq!(origin.count("/warm.exe"), 1);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_pinned_objects() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    // 4 MiB cache: eviction above 3.8 MiB, down to 3.6 MiB.
    let edge = Edge::start_sized(dir.path(), reverse(&origin), 4 << 20).await;
    let c = edge.client();
    let pinned = content(1 << 20, 100);
    origin.put("/pinned", Resource::new(pinned.clone()));
    c.get("/pinned", &[]).await.unwrap();
    let pk = key(&origin, "/pinned");
    assert!(edge.completes(&pk, Duration::from_secs(5)).await);
    assert!(edge.engine.store.set_pinned(&pk, true).unwrap());
    for i in 0..8 {
        let path = format!("/filler{i}");
        origin.put(&path, Resource::new(content(1 << 20, 200 + i)));
        c.get(&path, &[]).await.unwrap();
        let k = key(&origin, &path);
        assert!(
            wait_until(Duration::from_secs(5), || edge
                .engine
                .store
                .get(&k)
                .unwrap()
                .is_none_or(|o| o.is_complete()))
            .await
        );
    }
    assert!(
        wait_until(Duration::from_secs(5), || edge
            .engine
            .store
            .stats()
            .unwrap()
            .bytes
            <= 4 << 20)
        .await,
        "cache never went under its limit"
    );
    assert!(edge.engine.store.stats().unwrap().evictions > 0);
    let r = c.get("/pinned", &[]).await.unwrap();
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert!(r.body == pinned);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: mounts a tmpfs"]
async fn a_fill_that_meets_a_full_disk_evicts_and_goes_on() {
    const MIB: usize = 1 << 20;
    let origin = Origin::start().await;
    // Chunked: the edge cannot check the length against free space up
    // front, as with an origin that does not say it.
    origin.put("/a.cab", Resource::new(content(16 * MIB, 31)).chunked());
    origin.put("/b.cab", Resource::new(content(16 * MIB, 32)).chunked());
    origin.put("/big.wim", Resource::new(content(80 * MIB, 33)).chunked());
    let dir = tempfile::tempdir().unwrap();
    // The cache's limit (1 GiB) is above what the disk has (100 MiB).
    let _disk = SmallDisk::mount(dir.path(), 100);
    let edge = Edge::start_sized(dir.path(), reverse(&origin), 1 << 30).await;
    let client = edge.client();
    for (path, seed) in [("/a.cab", 31), ("/b.cab", 32)] {
        let r = client.get(path, &[]).await.unwrap();
        assert_eq!(r.body, content(16 * MIB, seed));
        assert!(
            edge.completes(&key(&origin, path), Duration::from_secs(10))
                .await
        );
    }
    let r = client.get("/big.wim", &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.body == content(80 * MIB, 33),
        "the client of a fill that met a full disk got {} bytes, not the object",
        r.body.len()
    );
    assert!(
        edge.completes(&key(&origin, "/big.wim"), Duration::from_secs(10))
            .await,
        "the big object was not kept"
    );
    let store = &edge.engine.store;
    let gone = ["/a.cab", "/b.cab"]
        .iter()
        .filter(|p| store.get(&key(&origin, p)).unwrap().is_none())
        .count();
    assert!(gone >= 1, "nothing was evicted to make room");
    let again = client.get("/big.wim", &[]).await.unwrap();
    assert_eq!(again.header("x-cache"), Some("HIT"));
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: mounts a tmpfs"]
async fn a_client_whose_fill_cannot_be_stored_gets_the_rest_from_the_origin() {
    const MIB: usize = 1 << 20;
    let origin = Origin::start().await;
    let body = content(60 * MIB, 41);
    origin.put("/image.wim", Resource::new(body.clone()).rate(16 << 20));
    let dir = tempfile::tempdir().unwrap();
    let _disk = SmallDisk::mount(dir.path(), 200);
    let edge = Edge::start_sized(dir.path(), reverse(&origin), 1 << 30).await;
    let client = edge.client();
    let download = tokio::spawn(async move { client.get("/image.wim", &[]).await });
    assert!(wait_until(Duration::from_secs(10), || origin.sent_bytes() >= 8 << 20).await);
    // Something else on the machine takes every free byte mid-download, and
    // nothing in the cache can be evicted for it: the edge cannot keep the
    // object, but the PC downloading it must still get it.
    {
        use std::io::Write;
        let mut ballast = std::fs::File::create(dir.path().join("ballast")).unwrap();
        let mib = vec![0u8; MIB];
        while ballast.write_all(&mib).is_ok() {}
    }
    let r = download.await.unwrap().unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.body == body,
        "the client got {} bytes, not the object",
        r.body.len()
    );
    // The rest came with a range validated against the stored ETag.
    let requests = origin.requests_for("/image.wim");
    assert!(
        requests.iter().any(
            |q| q.range().is_some() && q.headers.get("if-range").is_some_and(|v| v == "\"v1\"")
        ),
        "{requests:?}"
    );
    assert!(
        edge.engine
            .store
            .get(&key(&origin, "/image.wim"))
            .unwrap()
            .is_none_or(|o| !o.is_complete()),
        "an object the disk could not hold is marked complete"
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_an_object_without_validators_checks_the_bytes_it_already_has() {
    let without_validators = |r: Resource| {
        let mut r = r;
        r.etag = None;
        r.last_modified = None;
        r
    };
    let origin = Origin::start().await;
    let same = content(3 << 20, 41);
    origin.put(
        "/same.bin",
        without_validators(Resource::new(same.clone()).drop_after(1 << 20, 1)),
    );
    let first = content(3 << 20, 42);
    let second = content(3 << 20, 43);
    origin.put(
        "/changes.bin",
        without_validators(
            Resource::new(first.clone())
                .rate(2 << 20)
                .drop_after(1 << 20, 1),
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut config = reverse(&origin);
    config.fill.retry_backoff_initial = Duration::from_millis(300);
    let edge = Edge::start(dir.path(), config).await;

    // Same bytes: the resume asks from 64 KiB before the cut, they match,
    // and the download completes.
    let reply = edge.client().get("/same.bin", &[]).await.unwrap();
    assert!(reply.body_error.is_none(), "{:?}", reply.body_error);
    assert!(reply.body == same, "resumed body differs");
    let reqs = origin.requests_for("/same.bin");
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[1].range(), Some("bytes=983040-3145727"));
    assert!(reqs[1].headers.get("if-range").is_none());

    // The object changes (same length, no validator) while the fill waits
    // to resume: the overlap differs, so no client gets a spliced body.
    let client = edge.client();
    let download = tokio::spawn(async move { client.get("/changes.bin", &[]).await });
    assert!(wait_until(Duration::from_secs(5), || origin.count("/changes.bin") >= 1).await);
    origin.put(
        "/changes.bin",
        without_validators(Resource::new(second.clone())),
    );
    let spliced: Vec<u8> = first[..1 << 20]
        .iter()
        .chain(&second[1 << 20..])
        .copied()
        .collect();
    // An error before the head (cut early) is fine too.
    if let Ok(reply) = download.await.unwrap() {
        assert!(reply.body[..] != spliced[..], "a spliced body was served");
        assert!(
            reply.body_error.is_some() || reply.body == first,
            "neither cut nor the first version"
        );
    }
    // The next client gets the new version whole.
    assert!(
        wait_until(Duration::from_secs(10), || edge
            .engine
            .fills
            .progress()
            .is_empty())
        .await
    );
    let reply = edge.client().get("/changes.bin", &[]).await.unwrap();
    assert!(reply.body == second, "the new version is not served whole");
    edge.stop().await;
}
