//! The edge as the proxy's integration tests run it: a real listener on
//! loopback port 0, a real disk store, stopped the way the binary stops it.
#![allow(dead_code)] // each test binary uses its own part of it

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use outpost_proxy::{Engine, ProxyConfig, Server};
use outpost_store::{Store, StoreConfig};
use outpost_testkit::{Client, wait_until};
use tokio_util::sync::CancellationToken;

pub struct Edge {
    pub addr: SocketAddr,
    pub engine: Arc<Engine>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// A store directory the edge owns, removed when it is dropped.
    _dir: Option<tempfile::TempDir>,
}

impl Edge {
    /// An edge with `config` as given (its listen address aside) over the
    /// store `store` describes.
    pub async fn start_with_store(config: ProxyConfig, store: StoreConfig) -> Self {
        Self::start_with_clock(config, store, Arc::new(outpost_proxy::SystemClock)).await
    }

    /// The same, judging freshness by `clock`.
    pub async fn start_with_clock(
        mut config: ProxyConfig,
        store: StoreConfig,
        clock: Arc<dyn outpost_proxy::Clock>,
    ) -> Self {
        // RUST_LOG=outpost_proxy=debug shows the edge's own account of a failing test.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        config.listen = vec!["127.0.0.1:0".parse().unwrap()];
        let store = Store::open(store).expect("open store");
        let engine = Engine::with_clock(config, store, clock);
        let server = Server::bind(engine.clone()).await.expect("bind");
        let addr = server.local_addrs()[0];
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Self {
            addr,
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
