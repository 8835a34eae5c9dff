//! A manager in the test process: a fresh data dir (init), served on
//! 127.0.0.1:0, with a validator that behaves like check-config for a few
//! words, and clients for an admin and for edges.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use outpost_manager::http::client::{Client, ClientError};
use outpost_manager::http::{ServeOptions, serve};
use outpost_manager::init::{InitOptions, init, tls_paths};
use outpost_manager::{Manager, ManagerOptions, Validator};
use outpost_protocol::{
    AppliedConfig, ChannelReport, EdgeReport, EnrolReply, EnrolRequest, Heartbeat, HeartbeatReply,
    ManagerInit, SyncResult,
};

/// Refuses what a test marks as bad, with a check-config-like message.
pub fn validator() -> Validator {
    Arc::new(|text: &str, source: &str| {
        if let Some(line) = text.lines().position(|l| l.contains("bogus")) {
            Err(format!("{source}:{}: unknown key `bogus`", line + 1))
        } else {
            Ok(())
        }
    })
}

pub struct TestManager {
    pub dir: tempfile::TempDir,
    pub init: ManagerInit,
    pub url: String,
    pub tls: bool,
    pub manager: Arc<Manager>,
    server: Option<tokio::task::JoinHandle<()>>,
    background: Option<tokio::task::JoinHandle<()>>,
    heartbeat: Duration,
    /// Applied by the next `serve`.
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

impl TestManager {
    pub async fn start(tls: bool, heartbeat: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let init = init(&InitOptions {
            data_dir: dir.path().join("data"),
            tls_cert: None,
            tls_key: None,
            sans: vec![],
        })
        .unwrap();
        let mut me = Self {
            dir,
            init,
            url: String::new(),
            tls,
            manager: placeholder(),
            server: None,
            background: None,
            heartbeat,
            max_connections: ServeOptions::default().max_connections,
            header_read_timeout: ServeOptions::default().header_read_timeout,
        };
        me.serve(None).await;
        me
    }

    /// A manager with a connection cap and header timeout of its own.
    pub async fn start_limited(max_connections: usize, header_read_timeout: Duration) -> Self {
        let mut me = Self::start(false, Duration::from_secs(30)).await;
        me.stop().await;
        me.max_connections = max_connections;
        me.header_read_timeout = header_read_timeout;
        me.serve(None).await;
        me
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// (Re)opens the data dir and serves it, on `addr` if given.
    pub async fn serve(&mut self, addr: Option<std::net::SocketAddr>) {
        let manager = Manager::open(ManagerOptions {
            data_dir: self.data_dir(),
            heartbeat: self.heartbeat,
            validator: validator(),
        })
        .unwrap();
        let listener = tokio::net::TcpListener::bind(addr.unwrap_or(([127, 0, 0, 1], 0).into()))
            .await
            .unwrap();
        let local = listener.local_addr().unwrap();
        let tls = if self.tls {
            let (cert, key) = tls_paths(manager.db(), &self.data_dir());
            Some(outpost_manager::tls::server_config(&cert, &key).unwrap())
        } else {
            None
        };
        self.url = format!("{}://{}", if self.tls { "https" } else { "http" }, local);
        self.background = Some(tokio::spawn(manager.clone().run_background()));
        self.server = Some(tokio::spawn(serve(
            manager.clone(),
            listener,
            ServeOptions {
                tls,
                max_connections: self.max_connections,
                header_read_timeout: self.header_read_timeout,
                ..ServeOptions::default()
            },
        )));
        self.manager = manager;
    }

    /// Stops as SIGTERM would, and waits for the server and flusher.
    pub async fn stop(&mut self) {
        self.manager.shutdown_token().cancel();
        if let Some(s) = self.server.take() {
            s.await.unwrap();
        }
        if let Some(b) = self.background.take() {
            b.await.unwrap();
        }
    }

    fn client(&self) -> Client {
        let fp = self.tls.then_some(self.init.fingerprint.as_str());
        Client::new(&self.url, fp).unwrap()
    }

    pub fn admin(&self) -> Client {
        self.client().bearer(&self.init.admin_token)
    }

    pub fn anonymous_edge(&self) -> Client {
        self.client().fleet_protocol()
    }

    pub async fn enrol(&self, site: &str) -> TestEdge {
        let reply: EnrolReply = self
            .anonymous_edge()
            .send(
                Method::POST,
                "/edge/v1/enrol",
                &EnrolRequest {
                    join_token: self.init.join_token.clone(),
                    site: site.into(),
                    version: "0.1.0".into(),
                    hostname: format!("{site}.example"),
                },
            )
            .await
            .unwrap();
        TestEdge {
            client: self.anonymous_edge().bearer(&reply.credential),
            reply,
            applied: 0,
        }
    }

    pub async fn put_scope(&self, scope: &str, toml: &str) {
        let (status, body) = self
            .admin()
            .request(
                Method::PUT,
                &format!("/api/v1/scopes/{scope}"),
                Some(toml.to_string().into()),
            )
            .await
            .unwrap();
        assert!(status.is_success(), "{status} {body:?}");
    }

    pub async fn publish(&self) -> Result<u64, ClientError> {
        let v: serde_json::Value = self
            .admin()
            .send(
                Method::POST,
                "/api/v1/config/publish",
                &serde_json::json!({"comment": "test"}),
            )
            .await?;
        Ok(v["version"].as_u64().unwrap())
    }
}

fn placeholder() -> Arc<Manager> {
    // Replaced by serve() before anyone reads it.
    let db = outpost_manager::db::Db::in_memory().unwrap();
    Manager::with_db(
        db,
        ManagerOptions {
            data_dir: Path::new("/nonexistent").into(),
            heartbeat: Duration::from_secs(1),
            validator: validator(),
        },
    )
    .unwrap()
}

pub struct TestEdge {
    pub client: Client,
    pub reply: EnrolReply,
    pub applied: u64,
}

pub fn channel(name: &str, total: u64, present: u64) -> ChannelReport {
    ChannelReport {
        name: name.into(),
        syncing: present < total,
        files_total: total,
        files_present: present,
        files_syncing: total - present,
        files_failed: 0,
        files_quarantined: 0,
        bytes_total: total * 100,
        bytes_present: present * 100,
        last_result: (present == total).then_some(SyncResult::Ok),
        last_finished: Some(1),
        missing: vec![],
        missing_truncated: false,
        problems: vec![],
    }
}

pub fn report(channels: Vec<ChannelReport>) -> EdgeReport {
    EdgeReport {
        version: "0.1.0".into(),
        uptime_seconds: 5,
        disk_used: 500,
        disk_limit: 1000,
        hit_ratio_bytes: 0.5,
        wan_bytes_in: 100,
        lan_bytes_out: 300,
        bytes_saved: 200,
        active_fills: 1,
        channels,
    }
}

impl TestEdge {
    pub async fn heartbeat(
        &self,
        channels: Vec<ChannelReport>,
    ) -> Result<HeartbeatReply, ClientError> {
        self.heartbeat_with(Heartbeat {
            report: report(channels),
            config: AppliedConfig {
                applied_version: self.applied,
                rejected: None,
            },
            action_results: vec![],
        })
        .await
    }

    pub async fn heartbeat_with(&self, hb: Heartbeat) -> Result<HeartbeatReply, ClientError> {
        self.client
            .send(Method::POST, "/edge/v1/heartbeat", &hb)
            .await
    }
}

/// Polls `f` until it returns `Some`, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
