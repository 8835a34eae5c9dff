//! The one harness of the channel sync tests: a package library served by
//! a fake origin with listings in each server's style (or a manifest), an
//! edge in front of it, and channels over that edge's store.

use bytes::Bytes;
use outpost_channel::{ChannelConfig, ChannelLimits, Channels, RunSummary};
use outpost_http::CacheKey;
use outpost_proxy::{Engine, ProxyConfig, Server};
use outpost_store::{Store, StoreConfig};
use outpost_testkit::{Origin, Resource, content};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug)]
pub enum Style {
    Iis,
    Nginx,
    Apache,
}

/// A package library on the fake origin: files by path under `/lib/`,
/// with listing pages for every folder in one server's style.
pub struct Library {
    pub files: BTreeMap<String, (Bytes, String)>,
    style: Style,
}

impl Library {
    pub fn new(style: Style) -> Self {
        Self {
            files: BTreeMap::new(),
            style,
        }
    }

    pub fn add(&mut self, path: &str, body: Bytes, version: &str) {
        self.files
            .insert(path.to_string(), (body, format!("\"{version}\"")));
    }

    pub fn total_bytes(&self) -> u64 {
        self.files.values().map(|(b, _)| b.len() as u64).sum()
    }

    pub fn listing(&self, dir: &str) -> String {
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
    pub fn publish(&self, origin: &Origin, gone: &[&str]) {
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

pub struct Site {
    pub engine: Arc<Engine>,
    pub channels: Arc<Channels>,
    pub addr: SocketAddr,
    shutdown: CancellationToken,
}

impl Site {
    pub async fn start(dir: &Path, channels: Vec<ChannelConfig>, max_bytes: u64) -> Self {
        Self::start_with(dir, channels, max_bytes, ProxyConfig::default()).await
    }

    pub async fn start_with(
        dir: &Path,
        channels: Vec<ChannelConfig>,
        max_bytes: u64,
        mut config: ProxyConfig,
    ) -> Self {
        // PCs' requests go to the fake origin on loopback, which the
        // destination guard refuses unless the admin allows it.
        config.internal_destinations = vec!["127.0.0.0/8".parse().unwrap()];
        Self::start_exactly(dir, channels, max_bytes, config).await
    }

    /// An edge whose destination guard is left as `config` says (loopback
    /// refused by default).
    pub async fn start_exactly(
        dir: &Path,
        channels: Vec<ChannelConfig>,
        max_bytes: u64,
        config: ProxyConfig,
    ) -> Self {
        Self::start_on_clock(
            dir,
            channels,
            max_bytes,
            config,
            Arc::new(outpost_proxy::SystemClock),
        )
        .await
    }

    /// An edge whose freshness decisions read `clock` (a test moves it).
    pub async fn start_on_clock(
        dir: &Path,
        channels: Vec<ChannelConfig>,
        max_bytes: u64,
        mut config: ProxyConfig,
        clock: Arc<dyn outpost_proxy::Clock>,
    ) -> Self {
        config.listen = vec!["127.0.0.1:0".parse().unwrap()];
        let store = Store::open(StoreConfig::new(dir, max_bytes)).expect("open store");
        let engine = Engine::with_clock(config, store, clock);
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

    pub async fn sync(&self, name: &str) -> RunSummary {
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

    pub fn stored(&self, origin: &Origin, path: &str) -> Option<(bool, bool)> {
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

pub fn channel(origin: &Origin, source: &str) -> ChannelConfig {
    ChannelConfig::new("lib", url::Url::parse(&origin.url(source)).unwrap())
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn sample_library(style: Style) -> Library {
    let mut lib = Library::new(style);
    lib.add("/lib/setup.msi", content(700_000, 1), "a1");
    lib.add("/lib/drivers/net.cab", content(300_000, 2), "b1");
    lib.add("/lib/drivers/gpu/gpu.exe", content(900_000, 3), "c1");
    lib
}

/// An nginx-style listing page linking `entries` (folders end in "/").
pub fn listing_page(dir: &str, entries: &[String]) -> Resource {
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

pub fn limited(origin: &Origin, source: &str, limits: ChannelLimits) -> ChannelConfig {
    let mut config = channel(origin, source);
    config.limits = limits;
    config
}

/// Origin requests for folder listings.
pub fn listing_requests(origin: &Origin) -> usize {
    origin
        .requests()
        .iter()
        .filter(|r| r.path.ends_with('/'))
        .count()
}

/// Channel files stored complete and pinned.
pub fn pinned_files(site: &Site, origin: &Origin, paths: &[String]) -> usize {
    paths
        .iter()
        .filter(|p| site.stored(origin, p) == Some((true, true)))
        .count()
}

/// A manifest of `n` files of `len` bytes (sizes given or not), each on
/// the origin.
pub fn manifest_library(
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

/// An edge over `dir` with one channel, "lib", of `source` under `limits`;
/// and the summary of its first sync, which must have stopped at a limit.
pub async fn sync_to_a_limit(
    dir: &Path,
    origin: &Origin,
    source: &str,
    limits: ChannelLimits,
) -> (Site, RunSummary) {
    let site = Site::start(dir, vec![limited(origin, source, limits)], 1 << 30).await;
    let summary = site.sync("lib").await;
    assert_eq!(summary.result, "limit", "{summary:?}");
    (site, summary)
}
