//! What every test of the proxy's one test binary starts from: the edge as
//! the binary runs it (a real listener on loopback port 0, a real disk store,
//! stopped the way the binary stops it), the configurations most tests use,
//! and the root-only fixtures (an nftables redirect, a small tmpfs), which
//! fail the test loudly when they cannot be set up rather than skip it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use outpost_proxy::{Engine, ProxyConfig, Server};
use outpost_store::{Store, StoreConfig};
use outpost_testkit::{Client, Origin, wait_until};
use tokio_util::sync::CancellationToken;

pub struct Edge {
    pub addr: SocketAddr,
    /// The library listener, when the configuration has one.
    pub library: Option<SocketAddr>,
    pub engine: Arc<Engine>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// A store directory the edge owns, removed when it is dropped.
    _dir: Option<tempfile::TempDir>,
}

impl Edge {
    /// An edge in front of loopback origins over a store in `dir`.
    pub async fn start(dir: &std::path::Path, config: ProxyConfig) -> Self {
        Self::start_sized(dir, config, 1 << 34).await
    }

    /// The same with a store of at most `max_bytes`.
    pub async fn start_sized(
        dir: &std::path::Path,
        mut config: ProxyConfig,
        max_bytes: u64,
    ) -> Self {
        // The fake origins are on loopback, which the destination guard
        // refuses by default (the security tests check that).
        if config.internal_destinations.is_empty() {
            config.internal_destinations = vec!["127.0.0.0/8".parse().unwrap()];
        }
        Self::start_with_store(config, StoreConfig::new(dir, max_bytes)).await
    }

    /// An edge with `config` exactly as given (no loopback allowance unless
    /// the test sets one) over a store in a directory of its own.
    pub async fn start_in_tempdir(config: ProxyConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = StoreConfig::new(dir.path(), 1 << 32);
        Self::start_with_store(config, store).await.owning(dir)
    }

    /// An edge with `config` as given (its listen address aside) over the
    /// store `store` describes.
    pub async fn start_with_store(config: ProxyConfig, store: StoreConfig) -> Self {
        Self::start_with_clock(config, store, Arc::new(outpost_proxy::SystemClock)).await
    }

    /// The same, judging freshness by `clock`.
    pub async fn start_with_clock(
        config: ProxyConfig,
        store: StoreConfig,
        clock: Arc<dyn outpost_proxy::Clock>,
    ) -> Self {
        Self::start_full(config, store, clock, None).await
    }

    /// An edge over a store in `dir` (loopback origins allowed) with a
    /// library listener on loopback whose site-library requests go to
    /// `site`.
    pub async fn start_library(
        dir: &std::path::Path,
        mut config: ProxyConfig,
        site: Arc<dyn outpost_proxy::LocalSite>,
    ) -> Self {
        if config.internal_destinations.is_empty() {
            config.internal_destinations = vec!["127.0.0.0/8".parse().unwrap()];
        }
        config.library.listen = Some("127.0.0.1:0".parse().unwrap());
        let store = StoreConfig::new(dir, 1 << 34);
        Self::start_full(
            config,
            store,
            Arc::new(outpost_proxy::SystemClock),
            Some(site),
        )
        .await
    }

    async fn start_full(
        mut config: ProxyConfig,
        store: StoreConfig,
        clock: Arc<dyn outpost_proxy::Clock>,
        site: Option<Arc<dyn outpost_proxy::LocalSite>>,
    ) -> Self {
        // RUST_LOG=outpost_proxy=debug shows the edge's own account of a failing test.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        config.listen = vec!["127.0.0.1:0".parse().unwrap()];
        let store = Store::open(store).expect("open store");
        let engine = Engine::with_clock(config, store, clock);
        let mut server = Server::bind(engine.clone()).await.expect("bind");
        if let Some(site) = site {
            server.set_local_site(site);
        }
        let addr = server.local_addrs()[0];
        let library = server.library_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Self {
            addr,
            library,
            engine,
            shutdown,
            task,
            _dir: None,
        }
    }

    /// Keeps `dir` (the store's) until the edge is dropped.
    pub fn owning(mut self, dir: tempfile::TempDir) -> Self {
        self._dir = Some(dir);
        self
    }

    /// Waits until the object stored under `key` is complete.
    pub async fn completes(&self, key: &outpost_http::CacheKey, deadline: Duration) -> bool {
        wait_until(deadline, || {
            self.engine
                .store
                .get(key)
                .unwrap()
                .is_some_and(|o| o.is_complete())
        })
        .await
    }

    pub fn client(&self) -> Client {
        Client::new(self.addr)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        self.engine.fills.checkpoint_all().await;
        let _ = self.engine.store.flush_access();
    }
}

/// A reverse edge for `origin`, allowed to reach it on loopback.
pub fn reverse(origin: &Origin) -> ProxyConfig {
    ProxyConfig {
        origin: Some(origin.url("/").parse().unwrap()),
        ..loopback_allowed()
    }
}

/// The default configuration with loopback destinations allowed (the fake
/// origins and services listen there).
pub fn loopback_allowed() -> ProxyConfig {
    ProxyConfig {
        internal_destinations: vec!["127.0.0.0/8".parse().unwrap()],
        ..ProxyConfig::default()
    }
}

/// The cache key of `path` on `origin` as a plain GET stores it.
pub fn key(origin: &Origin, path: &str) -> outpost_http::CacheKey {
    outpost_http::CacheKey::from_uri(&origin.url(path).parse().unwrap()).unwrap()
}

/// Sends raw bytes and returns everything the edge answers until it closes
/// the connection (or `wait` passes), and whether it closed it.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> (String, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// An nftables table that redirects connections for `daddr:80` to the
/// edge, as a firewall or a DNAT in front of it would; deleted on drop.
/// Needs root and nft (.ci/run installs nftables); the test fails if the
/// redirect cannot be installed.
pub struct NftRedirect(String);

impl NftRedirect {
    pub fn install(daddr: &str, to_port: u16) -> Self {
        // Tests of one binary share a pid: the edge's port tells them apart.
        let table = format!("outpost_test_{}_{to_port}", std::process::id());
        let script = format!(
            "table ip {table} {{\n chain out {{\n  type nat hook output priority -100; policy accept;\n  ip daddr {daddr} tcp dport 80 redirect to :{to_port}\n }}\n}}\n"
        );
        let mut child = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("run nft (needs root and nftables)");
        {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
        }
        assert!(
            child.wait().unwrap().success(),
            "install the nftables redirect (needs root)"
        );
        Self(table)
    }
}

impl Drop for NftRedirect {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "ip", &self.0])
            .status();
    }
}

/// A small tmpfs mounted on `dir`, unmounted on drop. Needs root; the test
/// fails if it cannot be mounted.
pub struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    pub fn mount(dir: &std::path::Path, size_mib: u64) -> Self {
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(mounted.success(), "mount a tmpfs (needs CAP_SYS_ADMIN)");
        Self(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// An admin `[[override]]` for `path` (a glob) on every host, changing
/// nothing until the test sets what it is about.
pub fn override_for(path: &str) -> outpost_proxy::CacheOverride {
    outpost_proxy::CacheOverride {
        host: globset::Glob::new("*").unwrap().compile_matcher(),
        path: globset::Glob::new(path).unwrap().compile_matcher(),
        freshness: Default::default(),
        ignore_query: false,
        never_cache: false,
    }
}
