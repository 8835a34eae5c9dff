//! Channel syncs against an in-process origin that serves a package folder
//! with directory listings (IIS, nginx and Apache styles) or a manifest.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use outpost_channel::{ChannelConfig, ChannelLimits, Channels, RunSummary, SourceKind};
use outpost_http::CacheKey;
use outpost_proxy::{Engine, ProxyConfig, Server};
use outpost_shaper::Rate;
use outpost_store::{Store, StoreConfig};
use outpost_testkit::{Client, Origin, Resource, content, wait_until};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug)]
enum Style {
    Iis,
    Nginx,
    Apache,
}

/// A package library on the fake origin: files by path under `/lib/`,
/// with listing pages for every folder in one server's style.
struct Library {
    files: BTreeMap<String, (Bytes, String)>,
    style: Style,
}

impl Library {
    fn new(style: Style) -> Self {
        Self {
            files: BTreeMap::new(),
            style,
        }
    }

    fn add(&mut self, path: &str, body: Bytes, version: &str) {
        self.files
            .insert(path.to_string(), (body, format!("\"{version}\"")));
    }

    fn total_bytes(&self) -> u64 {
        self.files.values().map(|(b, _)| b.len() as u64).sum()
    }

    fn listing(&self, dir: &str) -> String {
        let mut entries: Vec<(String, bool)> = Vec::new();
        for path in self.files.keys() {
            let Some(rest) = path.strip_prefix(dir) else {
                continue;
            };
            let entry = match rest.split_once('/') {
                Some((sub, _)) => (format!("{sub}/"), true),
                None => (rest.to_string(), false),
            };
            if !entries.contains(&entry) {
                entries.push(entry);
            }
        }
        let mut html = String::new();
        match self.style {
            Style::Nginx => {
                html.push_str(&format!("<html><head><title>Index of {dir}</title></head><body><h1>Index of {dir}</h1><hr><pre><a href=\"../\">../</a>\n"));
                for (name, _) in &entries {
                    html.push_str(&format!(
                        "<a href=\"{name}\">{name}</a>      24-Nov-2026 03:00    1234\n"
                    ));
                }
                html.push_str("</pre><hr></body></html>");
            }
            Style::Apache => {
                html.push_str("<table><tr><th><a href=\"?C=N;O=D\">Name</a></th><th><a href=\"?C=S;O=A\">Size</a></th></tr>");
                html.push_str("<tr><td><a href=\"/\">Parent Directory</a></td></tr>");
                for (name, _) in &entries {
                    html.push_str(&format!("<tr><td><a href=\"{name}\">{name}</a></td><td align=\"right\">1.2M</td></tr>\n"));
                }
                html.push_str("</table><address>Apache/2.4 Server</address>");
            }
            Style::Iis => {
                html.push_str(&format!("<html><body><H1>fileserver - {dir}</H1><hr><pre><A HREF=\"/\">[To Parent Directory]</A><br><br>"));
                for (name, is_dir) in &entries {
                    let size = if *is_dir {
                        "&lt;dir&gt;".to_string()
                    } else {
                        "1234".into()
                    };
                    html.push_str(&format!(
                        " 11/24/2026  3:00 AM {size} <A HREF=\"{dir}{name}\">{}</A><br>",
                        name.trim_end_matches('/')
                    ));
                }
                // A link off the library, which a crawl must not follow.
                html.push_str("<A HREF=\"/private/secret.bin\">secret</A></pre><hr></body></html>");
            }
        }
        html
    }

    /// Puts every file and listing page on the origin (replacing what was
    /// there) and removes `gone` paths.
    fn publish(&self, origin: &Origin, gone: &[&str]) {
        for path in gone {
            origin.remove(path);
        }
        let mut dirs = std::collections::BTreeSet::from(["/lib/".to_string()]);
        for (path, (body, etag)) in &self.files {
            origin.put(
                path,
                Resource::new(body.clone()).no_cache_headers().etag(etag),
            );
            let mut dir = path.as_str();
            while let Some(i) = dir[..dir.len() - 1].rfind('/') {
                dir = &dir[..=i];
                if dir.len() < "/lib/".len() {
                    break;
                }
                dirs.insert(dir.to_string());
            }
        }
        for dir in dirs {
            origin.put(
                &dir,
                Resource::new(Bytes::from(self.listing(&dir)))
                    .no_cache_headers()
                    .header("content-type", "text/html")
                    .etag(&format!("\"listing-{}\"", self.files.len())),
            );
        }
        origin.put("/private/secret.bin", Resource::new(content(1000, 99)));
    }
}

struct Site {
    engine: Arc<Engine>,
    channels: Arc<Channels>,
    addr: SocketAddr,
    shutdown: CancellationToken,
}

impl Site {
    async fn start(dir: &Path, channels: Vec<ChannelConfig>, max_bytes: u64) -> Self {
        Self::start_with(dir, channels, max_bytes, ProxyConfig::default()).await
    }

    async fn start_with(
        dir: &Path,
        channels: Vec<ChannelConfig>,
        max_bytes: u64,
        mut config: ProxyConfig,
    ) -> Self {
        config.listen = vec!["127.0.0.1:0".parse().unwrap()];
        // PCs' requests go to the fake origin on loopback, which the
        // destination guard refuses unless the admin allows it.
        config.internal_destinations = vec!["127.0.0.0/8".parse().unwrap()];
        let store = Store::open(StoreConfig::new(dir, max_bytes)).expect("open store");
        let engine = Engine::new(config, store);
        let server = Server::bind(engine.clone()).await.expect("bind");
        let addr = server.local_addrs()[0];
        let shutdown = CancellationToken::new();
        tokio::spawn(server.run(shutdown.clone()));
        let channels = Channels::start(engine.clone(), channels, dir).expect("channels");
        Self {
            engine,
            channels,
            addr,
            shutdown,
        }
    }

    async fn sync(&self, name: &str) -> RunSummary {
        let run = self.channels.sync(name).expect("start sync");
        tokio::time::timeout(Duration::from_secs(20), self.channels.wait(name, run))
            .await
            .expect("sync finishes")
            .unwrap();
        self.channels
            .status()
            .into_iter()
            .find(|c| c.name == name)
            .and_then(|c| c.last_run)
            .expect("a finished run")
    }

    fn stored(&self, origin: &Origin, path: &str) -> Option<(bool, bool)> {
        let key = CacheKey::from_uri(&origin.url(path).parse().unwrap()).unwrap();
        let obj = self.engine.store.get(&key).unwrap()?;
        Some((obj.is_complete(), obj.snapshot().pinned))
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn channel(origin: &Origin, source: &str) -> ChannelConfig {
    let source = url::Url::parse(&origin.url(source)).unwrap();
    ChannelConfig {
        name: "lib".into(),
        kind: if source.path().ends_with('/') {
            SourceKind::Listing
        } else {
            SourceKind::Manifest
        },
        source,
        include: Vec::new(),
        exclude: Vec::new(),
        schedule: None,
        rate: Rate::UNLIMITED,
        window: None,
        verify: true,
        aliases: Vec::new(),
        concurrency: 2,
        limits: ChannelLimits::default(),
    }
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sample_library(style: Style) -> Library {
    let mut lib = Library::new(style);
    lib.add("/lib/setup.msi", content(700_000, 1), "a1");
    lib.add("/lib/drivers/net.cab", content(300_000, 2), "b1");
    lib.add("/lib/drivers/gpu/gpu.exe", content(900_000, 3), "c1");
    lib
}

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

/// An nginx-style listing page linking `entries` (folders end in "/").
fn listing_page(dir: &str, entries: &[String]) -> Resource {
    let mut html = format!(
        "<html><head><title>Index of {dir}</title></head><body><pre><a href=\"../\">../</a>\n"
    );
    for name in entries {
        html.push_str(&format!(
            "<a href=\"{name}\">{name}</a>  24-Nov-2026 03:00  10\n"
        ));
    }
    html.push_str("</pre></body></html>");
    Resource::new(Bytes::from(html))
        .no_cache_headers()
        .header("content-type", "text/html")
}

fn limited(origin: &Origin, source: &str, limits: ChannelLimits) -> ChannelConfig {
    let mut config = channel(origin, source);
    config.limits = limits;
    config
}

/// Origin requests for folder listings.
fn listing_requests(origin: &Origin) -> usize {
    origin
        .requests()
        .iter()
        .filter(|r| r.path.ends_with('/'))
        .count()
}

/// Channel files stored complete and pinned.
fn pinned_files(site: &Site, origin: &Origin, paths: &[String]) -> usize {
    paths
        .iter()
        .filter(|p| site.stored(origin, p) == Some((true, true)))
        .count()
}

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
    let site = Site::start(
        dir.path(),
        vec![limited(&origin, "/pkgs/", limits)],
        1 << 30,
    )
    .await;
    let summary = site.sync("lib").await;
    assert_eq!(summary.result, "limit", "{summary:?}");
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
    let site = Site::start(
        dir.path(),
        vec![limited(&origin, "/deep/", limits)],
        1 << 30,
    )
    .await;
    let summary = site.sync("lib").await;
    assert_eq!(summary.result, "limit", "{summary:?}");
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
    let site = Site::start(
        dir.path(),
        vec![limited(&origin, "/wide/", limits)],
        1 << 30,
    )
    .await;
    let summary = site.sync("lib").await;
    assert_eq!(summary.result, "limit", "{summary:?}");
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
    assert!(site.channels.reconfigure(&[raised]).is_empty());
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
    let site = Site::start(
        dir.path(),
        vec![limited(&origin, "/many/", limits)],
        1 << 30,
    )
    .await;
    let summary = site.sync("lib").await;
    assert_eq!(summary.result, "limit", "{summary:?}");
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

/// A manifest of `n` files of `len` bytes (sizes given or not), each on
/// the origin.
fn manifest_library(
    origin: &Origin,
    prefix: &str,
    n: usize,
    len: usize,
    sizes: bool,
) -> Vec<String> {
    let mut manifest = String::new();
    let mut paths = Vec::new();
    for i in 0..n {
        let name = format!("{prefix}{i:02}.msi");
        origin.put(
            &format!("/m/{name}"),
            Resource::new(content(len, i as u64)).no_cache_headers(),
        );
        if sizes {
            manifest.push_str(&format!("{name} {len}\n"));
        } else {
            manifest.push_str(&format!("{name}\n"));
        }
        paths.push(format!("/m/{name}"));
    }
    origin.put(
        "/m/files.txt",
        Resource::new(Bytes::from(manifest)).no_cache_headers(),
    );
    paths
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
    let site = Site::start(
        dir.path(),
        vec![limited(&origin, "/m/files.txt", limits)],
        1 << 30,
    )
    .await;
    let summary = site.sync("lib").await;
    assert_eq!(summary.result, "limit", "{summary:?}");
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
