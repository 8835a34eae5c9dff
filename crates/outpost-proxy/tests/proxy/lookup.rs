//! The lookup of a stored object: what one request decides from what is
//! stored, what is being filled and the time, judged against a clock the
//! tests move (never `Age` headers, never sleeping).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use outpost_proxy::{ManualClock, ProxyConfig};
use outpost_store::StoreConfig;
use outpost_testkit::{Origin, Resource, content};

use crate::common::{Edge, override_for, reverse};

/// A clock a day behind the host's: anything that still reads the host's
/// clock instead of the engine's shows up as a wrong freshness verdict.
fn clock_a_day_behind() -> Arc<ManualClock> {
    Arc::new(ManualClock::starting_at(
        SystemTime::now() - Duration::from_secs(86_400),
    ))
}

async fn edge(dir: &std::path::Path, config: ProxyConfig, clock: &Arc<ManualClock>) -> Edge {
    Edge::start_with_clock(config, StoreConfig::new(dir, 1 << 30), clock.clone()).await
}

/// Guards the stale-after-restart bug: the head of an object loaded after a
/// restart took its own `now`, later than the request's, and an object
/// long stale was served once as a fresh HIT without asking the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_object_after_a_restart_is_revalidated_not_served_as_a_hit() {
    let origin = Origin::start().await;
    let body = content(64 << 10, 1);
    origin.put(
        "/pkg.msi",
        Resource::new(body.clone()).header("cache-control", "max-age=60"),
    );
    let dir = tempfile::tempdir().unwrap();
    let clock = clock_a_day_behind();

    let first = edge(dir.path(), reverse(&origin), &clock).await;
    let reply = first.client().get("/pkg.msi", &[]).await.unwrap();
    assert_eq!(reply.header("x-cache"), Some("MISS"));
    let key = first
        .engine
        .prefetch_key(origin.url("/pkg.msi").parse().unwrap())
        .unwrap();
    assert!(first.completes(&key, Duration::from_secs(10)).await);
    let reply = first.client().get("/pkg.msi", &[]).await.unwrap();
    assert_eq!(
        reply.header("x-cache"),
        Some("HIT"),
        "fresh before the restart"
    );
    first.stop().await;
    assert_eq!(origin.count("/pkg.msi"), 1);

    clock.advance(Duration::from_secs(120));
    let second = edge(dir.path(), reverse(&origin), &clock).await;
    let reply = second.client().get("/pkg.msi", &[]).await.unwrap();
    assert_eq!(reply.status.as_u16(), 200);
    assert!(reply.body == body);
    assert_ne!(
        reply.header("x-cache"),
        Some("HIT"),
        "a response 120 s old with max-age=60 was served as fresh"
    );
    assert_eq!(origin.count("/pkg.msi"), 2, "the origin was not asked");
    assert!(
        origin.requests_for("/pkg.msi")[1].is_conditional(),
        "the stored copy has validators: revalidated, not refetched"
    );
    // A HEAD goes through the same lookup: the revalidated copy is fresh.
    let (head, _) = second.client().send("HEAD", "/pkg.msi", &[]).await.unwrap();
    assert_eq!(head.headers.get("x-cache").unwrap(), "HIT");
    clock.advance(Duration::from_secs(120));
    let (head, _) = second.client().send("HEAD", "/pkg.msi", &[]).await.unwrap();
    assert!(
        head.headers.get("x-cache").is_none_or(|v| v != "HIT"),
        "a stale copy does not answer a HEAD"
    );
    assert_eq!(
        origin.count("/pkg.msi"),
        3,
        "the stale HEAD went to the origin"
    );
    second.stop().await;
}

/// The same restart with the origin gone: the stale copy is served only
/// where that is allowed, and marked as such; elsewhere the client gets an
/// error, never a fresh-looking hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_object_after_a_restart_with_the_origin_down_is_marked_stale_or_refused() {
    let origin = Origin::start().await;
    origin.put(
        "/may-be-stale",
        Resource::new(content(4096, 2)).header("cache-control", "max-age=60"),
    );
    origin.put(
        "/must-revalidate",
        Resource::new(content(4096, 3)).header("cache-control", "max-age=60, must-revalidate"),
    );
    let config = reverse(&origin);
    let dir = tempfile::tempdir().unwrap();
    let clock = clock_a_day_behind();

    let first = edge(dir.path(), config.clone(), &clock).await;
    for path in ["/may-be-stale", "/must-revalidate"] {
        let reply = first.client().get(path, &[]).await.unwrap();
        assert_eq!(reply.status.as_u16(), 200);
        let key = first
            .engine
            .prefetch_key(origin.url(path).parse().unwrap())
            .unwrap();
        assert!(first.completes(&key, Duration::from_secs(10)).await);
    }
    first.stop().await;
    drop(origin);

    clock.advance(Duration::from_secs(120));
    let second = edge(dir.path(), config, &clock).await;
    let reply = second.client().get("/may-be-stale", &[]).await.unwrap();
    assert_eq!(
        reply.status.as_u16(),
        200,
        "serve_stale_on_error is on by default"
    );
    assert_eq!(reply.header("x-cache"), Some("STALE"));
    assert!(
        reply
            .header("warning")
            .is_some_and(|w| w.starts_with("111")),
        "a stale answer says so: {:?}",
        reply.header("warning")
    );
    let reply = second.client().get("/must-revalidate", &[]).await.unwrap();
    assert!(
        matches!(reply.status.as_u16(), 502 | 504),
        "must-revalidate forbids the stale copy: got {}",
        reply.status
    );
    assert!(
        reply.body.starts_with(b"origin unavailable"),
        "the error says which side failed: {:?}",
        String::from_utf8_lossy(&reply.body)
    );
    second.stop().await;
}

/// The access log's line for each lookup outcome, from a log file the edge
/// writes (the verdict travels with the response, not in `X-Cache`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_tells_a_refresh_from_a_miss_and_a_304_from_a_hit() {
    use outpost_proxy::access_log::{AccessLog, LogFormat, LogTarget};
    let origin = Origin::start().await;
    origin.put(
        "/changes.msi",
        Resource::new(content(8192, 4))
            .header("cache-control", "max-age=60")
            .etag("\"v1\""),
    );
    origin.put(
        "/same.msi",
        Resource::new(content(8192, 5))
            .header("cache-control", "max-age=60")
            .etag("\"s1\""),
    );
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("access.log");
    let clock = clock_a_day_behind();
    let edge = edge(&dir.path().join("cache"), reverse(&origin), &clock).await;
    edge.engine.set_access_log(Arc::new(
        AccessLog::open(LogTarget::File(log_path.clone()), LogFormat::Squid).unwrap(),
    ));
    let client = edge.client();
    for path in ["/changes.msi", "/same.msi"] {
        assert_eq!(client.get(path, &[]).await.unwrap().status.as_u16(), 200);
        let key = edge
            .engine
            .prefetch_key(origin.url(path).parse().unwrap())
            .unwrap();
        assert!(edge.completes(&key, Duration::from_secs(10)).await);
    }
    assert_eq!(
        client
            .get("/same.msi", &[])
            .await
            .unwrap()
            .header("x-cache"),
        Some("HIT")
    );

    let new_body = content(8192, 6);
    origin.put(
        "/changes.msi",
        Resource::new(new_body.clone())
            .header("cache-control", "max-age=60")
            .etag("\"v2\""),
    );
    clock.advance(Duration::from_secs(120));
    let refreshed = client.get("/changes.msi", &[]).await.unwrap();
    assert_eq!(refreshed.status.as_u16(), 200);
    assert!(refreshed.body == new_body, "the new version is served");
    assert!(origin.requests_for("/changes.msi")[1].is_conditional());
    let confirmed = client.get("/same.msi", &[]).await.unwrap();
    assert_eq!(confirmed.header("x-cache"), Some("REVALIDATED"));

    // A line is written once its response is sent, so two requests in a
    // row may log in either order: compared as a set of (code, path).
    let entry_of = |line: &str| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let path = fields.get(6)?.rsplit('/').next()?.to_string();
        Some(format!("{} {path}", fields.get(3)?))
    };
    let mut entries = Vec::new();
    let logged = outpost_testkit::wait_until(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        entries = text.lines().filter_map(entry_of).collect();
        entries.len() >= 5
    })
    .await;
    assert!(logged, "five lines expected, got {entries:?}");
    entries.sort();
    let mut expected = [
        "TCP_MISS/200 changes.msi",
        "TCP_MISS/200 same.msi",
        "TCP_HIT/200 same.msi",
        "TCP_REFRESH_MODIFIED/200 changes.msi",
        "TCP_REFRESH_UNMODIFIED/200 same.msi",
    ];
    expected.sort();
    assert_eq!(entries, expected);
    edge.stop().await;
}

/// Squid's refresh_pattern semantics: an `[[override]]` applies at lookup,
/// to what was stored before it too; what is stored stays the origin's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_added_later_reaches_objects_stored_before_it() {
    let origin = Origin::start().await;
    // What a package mirror without freshness sends: a short lifetime.
    origin.put(
        "/pool/main/a.deb",
        Resource::new(content(8192, 7)).header("cache-control", "max-age=10"),
    );
    origin.put(
        "/dists/InRelease",
        Resource::new(content(1024, 8)).header("cache-control", "max-age=86400"),
    );
    let config = reverse(&origin);
    let dir = tempfile::tempdir().unwrap();
    let clock = clock_a_day_behind();
    let edge = edge(dir.path(), config.clone(), &clock).await;
    let client = edge.client();
    for path in ["/pool/main/a.deb", "/dists/InRelease"] {
        assert_eq!(
            client.get(path, &[]).await.unwrap().header("x-cache"),
            Some("MISS")
        );
        let key = edge
            .engine
            .prefetch_key(origin.url(path).parse().unwrap())
            .unwrap();
        assert!(edge.completes(&key, Duration::from_secs(10)).await);
    }

    // The admin's reload: package files are immutable by path, indexes
    // must be checked every minute.
    let mut with_rules = config;
    let mut pool = override_for("/pool/**");
    pool.freshness.min_fresh = Some(Duration::from_secs(30 * 86_400));
    let mut dists = override_for("/dists/**");
    dists.freshness.max_fresh = Some(Duration::from_secs(60));
    with_rules.overrides = vec![pool, dists];
    edge.engine
        .set_rules(outpost_proxy::LiveRules::from_config(&with_rules));
    clock.advance(Duration::from_secs(120));

    let reply = client.get("/pool/main/a.deb", &[]).await.unwrap();
    assert_eq!(
        reply.header("x-cache"),
        Some("HIT"),
        "min_fresh applies to the copy stored before the rule"
    );
    assert_eq!(origin.count("/pool/main/a.deb"), 1, "no origin request");
    assert_eq!(
        reply.header("cache-control"),
        Some("max-age=10"),
        "clients see the origin's headers"
    );
    let reply = client.get("/dists/InRelease", &[]).await.unwrap();
    assert_ne!(
        reply.header("x-cache"),
        Some("HIT"),
        "max_fresh shortens the lifetime of a copy stored before the rule"
    );
    assert_eq!(origin.count("/dists/InRelease"), 2);

    // The rule removed: the origin's lifetime applies again.
    edge.engine
        .set_rules(outpost_proxy::LiveRules::from_config(&reverse(&origin)));
    let reply = client.get("/pool/main/a.deb", &[]).await.unwrap();
    assert_ne!(reply.header("x-cache"), Some("HIT"));
    assert_eq!(origin.count("/pool/main/a.deb"), 2);
    edge.stop().await;
}

/// The `Age` of a response the edge fetched counts to when it is sent, not
/// to when the request arrived (before the origin answered): a response
/// that arrives with `Age: 7200` goes out with at least that (the public
/// cache-tests suite checks it exactly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetched_response_keeps_the_age_it_arrived_with() {
    let origin = Origin::start().await;
    origin.put(
        "/aged",
        Resource::new(content(1024, 9))
            .header("cache-control", "max-age=86400")
            .header("age", "7200")
            .latency(Duration::from_millis(50)),
    );
    let dir = tempfile::tempdir().unwrap();
    let edge =
        Edge::start_with_store(reverse(&origin), StoreConfig::new(dir.path(), 1 << 30)).await;
    let reply = edge.client().get("/aged", &[]).await.unwrap();
    assert_eq!(reply.header("x-cache"), Some("MISS"));
    let age: u64 = reply.header("age").unwrap().parse().unwrap();
    assert!(
        age >= 7200,
        "Age {age}: counted from before the origin answered"
    );
    edge.stop().await;
}

/// A stored partial object whose rest is fetched for a client is not a
/// hit in the log (an admin once saw 270 MB from the WAN logged TCP_HIT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_object_completed_for_a_client_is_logged_as_a_miss() {
    use outpost_proxy::access_log::{AccessLog, LogFormat, LogTarget};
    let origin = Origin::start().await;
    let body = content(256 << 10, 10);
    origin.put(
        "/big.iso",
        Resource::new(body.clone()).header("cache-control", "max-age=3600"),
    );
    let mut config = reverse(&origin);
    // Only the range a client asks for is fetched: the rest waits for a
    // client that wants it.
    config.fill.background_fill = false;
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("access.log");
    let clock = clock_a_day_behind();
    let edge = edge(&dir.path().join("cache"), config, &clock).await;
    edge.engine.set_access_log(Arc::new(
        AccessLog::open(LogTarget::File(log_path.clone()), LogFormat::Squid).unwrap(),
    ));
    let client = edge.client();
    let first = client
        .get("/big.iso", &[("range", "bytes=0-1023")])
        .await
        .unwrap();
    assert_eq!(first.status.as_u16(), 206);
    // Bounded: a demand that reached a fill just as it ended used to be
    // lost, and this request waited for ever.
    let whole = tokio::time::timeout(Duration::from_secs(30), client.get("/big.iso", &[]))
        .await
        .expect("the rest of a partial object is fetched")
        .unwrap();
    // PARTIAL_HIT from the stored partial copy, or MISS when the range's
    // fill was still ending and the request shared it.
    assert!(
        matches!(whole.header("x-cache"), Some("PARTIAL_HIT" | "MISS")),
        "{:?}",
        whole.header("x-cache")
    );
    assert!(whole.body == body);
    assert!(
        origin.requests_for("/big.iso").len() >= 2,
        "the rest came from the origin"
    );
    let mut codes = Vec::new();
    let logged = outpost_testkit::wait_until(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        codes = text
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3).map(str::to_string))
            .collect();
        codes.len() >= 2
    })
    .await;
    assert!(logged, "{codes:?}");
    codes.sort();
    assert_eq!(codes, ["TCP_MISS/200", "TCP_MISS/206"]);
    edge.stop().await;
}
