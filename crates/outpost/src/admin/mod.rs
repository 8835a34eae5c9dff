//! The admin API: health, readiness, Prometheus metrics, a JSON status
//! document, and purge/pin/reload actions.
//!
//! The routes are an axum `Router` ([`routes`]); this module owns what
//! stands in front of it, and its invariants hold for every route:
//!
//! - Every request but `GET /healthz`, `/readyz` and `/metrics` needs the
//!   bearer token, on loopback too: the edge's own proxy connects from
//!   loopback, so "it came from 127.0.0.1" says nothing about who sent it.
//!   The token ([`token`]) is compared in constant time.
//! - Requests that came through a proxy (a `Via` header) are refused
//!   whatever they carry, and so are requests whose `Host` does not name
//!   this machine ([`host`]: the defence against DNS rebinding).
//! - A client must send its headers within `header_read_timeout`, a
//!   connection serves one request, at most `max_connections` connections
//!   are served at once and one client address holds at most
//!   [`MAX_CONNECTIONS_PER_CLIENT`] of them: a slow or idle client cannot
//!   hold the port. The accept loop here, not axum, enforces these, since
//!   they must act before a request exists.
//! - Every answer is `Cache-Control: no-store`; every error is a JSON
//!   [`outpost_protocol::ApiError`].

mod metrics;
mod routes;
mod token;
mod wccp_metrics;

pub use outpost_proxy::allowed_hosts::AllowedHosts;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use outpost_channel::Channels;
use outpost_proxy::Engine;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::AdminConfig;

pub struct Admin {
    engine: Arc<Engine>,
    channels: Arc<Channels>,
    reloader: Arc<crate::reload::Reloader>,
    token: String,
    allowed_hosts: AllowedHosts,
    started: Instant,
    /// The proxy's addresses: the configured ones until the listeners are
    /// bound, then the bound ones (a configured port 0 becomes the real
    /// port).
    listen: std::sync::Mutex<Vec<SocketAddr>>,
    header_read_timeout: Duration,
    connections: Arc<Semaphore>,
    /// Set while connections are being turned away (logged once per spell).
    saturated: AtomicBool,
    metrics: metrics::Metrics,
    /// The fleet manager link, written by the fleet task (`None` without
    /// a manager).
    manager: crate::fleet::StatusCell,
    /// The WCCP adapter's status, once it runs (`[wccp]` set).
    wccp: WccpSlot,
}

/// Where `/status` and `/metrics` find the WCCP status.
pub type WccpSlot = Arc<std::sync::OnceLock<WccpView>>;

/// The WCCP adapter's status cell and the tunnel interface to count.
#[derive(Debug)]
pub struct WccpView {
    pub status: Arc<std::sync::Mutex<outpost_wccp::WccpStatus>>,
    pub tunnel: Option<String>,
    /// The edge's own GRE data path (`wccp.datapath = "outpost"`).
    pub datapath: Option<Arc<std::sync::Mutex<outpost_wccp::gre_io::DatapathStatus>>>,
}

/// Binds the admin listener with its token: the configured one, or the
/// one generated in the cache directory. Fails if the listener would be
/// reachable from elsewhere without a configured token file.
/// `allowed_hosts` are the `Host` names answered besides IP literals
/// (`AllowedHosts::default()`: `localhost` and the machine's hostname).
pub async fn bind(
    config: &AdminConfig,
    engine: Arc<Engine>,
    channels: Arc<Channels>,
    reloader: Arc<crate::reload::Reloader>,
    allowed_hosts: AllowedHosts,
) -> anyhow::Result<(TcpListener, Arc<Admin>)> {
    if !config.listen.ip().is_loopback() && config.token_file.is_none() {
        bail!(
            "admin.listen {} is not loopback: set admin.token_file so the admin API is not open to the network",
            config.listen
        );
    }
    let token = token::load(config)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", config.listen))?;
    let listen = std::sync::Mutex::new(engine.config.listen.clone());
    let wccp = WccpSlot::default();
    let mut metrics = metrics::Metrics::new(engine.clone(), channels.clone());
    metrics.register(Box::new(wccp_metrics::WccpCollector(wccp.clone())));
    Ok((
        listener,
        Arc::new(Admin {
            engine,
            channels,
            reloader,
            token,
            allowed_hosts,
            started: Instant::now(),
            listen,
            header_read_timeout: config.header_read_timeout,
            connections: Arc::new(Semaphore::new(config.max_connections)),
            saturated: AtomicBool::new(false),
            metrics,
            manager: crate::fleet::StatusCell::default(),
            wccp,
        }),
    ))
}

/// Connections one client address may hold at once: a single client
/// cannot take every slot from the others (monitoring, the CLI).
const MAX_CONNECTIONS_PER_CLIENT: usize = 8;

type ClientCounts = Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>;

/// Releases a client's place in the per-address count when its
/// connection ends.
struct ClientSlot {
    counts: ClientCounts,
    ip: IpAddr,
}

impl ClientSlot {
    fn take(counts: &ClientCounts, ip: IpAddr) -> Option<Self> {
        let mut map = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(Self {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// The client's address, put in each request's extensions for the logs.
#[derive(Clone, Copy)]
struct Peer(SocketAddr);

pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: CancellationToken) {
    let per_client = ClientCounts::default();
    let router = routes::router(admin.clone());
    while let Some((stream, peer)) =
        outpost_proxy::server::accept(&listener, &shutdown, "admin accept failed").await
    {
        // Over a cap: closed at once, unread, so that a flood of idle
        // connections costs the edge nothing and ends with the header
        // timeout of the ones it holds.
        let Some(slot) = ClientSlot::take(&per_client, peer.ip()) else {
            drop(stream);
            continue;
        };
        let Ok(permit) = admin.connections.clone().try_acquire_owned() else {
            if !admin.saturated.swap(true, Ordering::Relaxed) {
                tracing::warn!(client = %peer, "admin API connection limit reached: closing new connections");
            }
            drop(stream);
            continue;
        };
        admin.saturated.store(false, Ordering::Relaxed);
        let router = router.clone();
        let timeout = admin.header_read_timeout;
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |mut req: http::Request<_>| {
                req.extensions_mut().insert(Peer(peer));
                router.clone().oneshot(req)
            });
            // One request per connection: a client that pipelines
            // requests without reading the answers would otherwise hold
            // the connection with the edge's own writes, which no timeout
            // covers. The CLI connects for each request anyway.
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            drop(permit);
            drop(slot);
        });
    }
}

/// A JSON error answer: `{"error": message}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json(
        status,
        &outpost_protocol::ApiError {
            error: message.into(),
        },
    )
}

/// A JSON answer, pretty-printed for people reading it with curl.
fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                Bytes::from(body),
            )
                .into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "application/json")],
            format!("{{\"error\": \"cannot encode the answer: {e}\"}}\n"),
        )
            .into_response(),
    }
}

/// Paths any client may GET: monitoring scrapes them without a secret.
fn is_open(req: &Request) -> bool {
    matches!(*req.method(), http::Method::GET | http::Method::HEAD)
        && matches!(req.uri().path(), "/healthz" | "/readyz" | "/metrics")
}

/// Runs in front of every route (and of the 404/405 answers): proxy,
/// `Host` and token checks, then `Cache-Control: no-store` on the answer.
async fn gate(State(admin): State<Arc<Admin>>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<Peer>()
        .map(|p| p.0.to_string())
        .unwrap_or_default();
    let path = req.uri().path().to_string();
    let mut resp = if req.headers().contains_key(header::VIA) {
        // A request relayed by a proxy (the edge's own included, which
        // connects from loopback) is not an admin at this machine.
        tracing::warn!(client = %peer, path, "admin request that came through a proxy (Via): 403");
        error(
            StatusCode::FORBIDDEN,
            "admin requests through a proxy are refused",
        )
    } else if let Some(host) = req
        .headers()
        .get(header::HOST)
        .filter(|h| !h.to_str().is_ok_and(|h| admin.allowed_hosts.allows(h)))
    {
        tracing::warn!(client = %peer, path, host = ?host, "admin request for a Host that does not name this machine (DNS rebinding?): 421");
        error(
            StatusCode::MISDIRECTED_REQUEST,
            "this Host does not name the edge: use its IP address, localhost, its hostname, or add the name to admin.allowed_hosts",
        )
    } else if !is_open(&req) && !admin.authorized(&req) {
        tracing::warn!(client = %peer, path, "admin request without a valid token: 401");
        let mut resp = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized: send Authorization: Bearer <the token in admin.token_file or the cache directory's admin.token>",
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"outpost admin\""),
        );
        resp
    } else {
        next.run(req).await
    };
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

impl Admin {
    /// Hands the WCCP adapter's status to `/status` and `/metrics`.
    pub fn set_wccp(
        &self,
        status: Arc<std::sync::Mutex<outpost_wccp::WccpStatus>>,
        tunnel: Option<String>,
        datapath: Option<Arc<std::sync::Mutex<outpost_wccp::gre_io::DatapathStatus>>>,
    ) {
        let _ = self.wccp.set(WccpView {
            status,
            tunnel,
            datapath,
        });
    }

    /// The `wccp` block of `/status`, when WCCP runs: the adapter's status,
    /// the tunnel's kernel counters and the edge's own data path.
    fn wccp_status(&self) -> Option<serde_json::Value> {
        let view = self.wccp.get()?;
        let status = view
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut doc = serde_json::to_value(status).ok()?;
        if let (Some(name), Some(map)) = (&view.tunnel, doc.as_object_mut())
            && let Ok(t) = serde_json::to_value(crate::wccp::tunnel_counters(name))
        {
            map.insert("tunnel".into(), t);
        }
        if let (Some(cell), Some(map)) = (&view.datapath, doc.as_object_mut()) {
            let d = cell.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Ok(d) = serde_json::to_value(d) {
                map.insert("datapath".into(), d);
            }
        }
        Some(doc)
    }

    /// Where the fleet task writes the manager link that `/status` shows.
    pub fn manager_status(&self) -> crate::fleet::StatusCell {
        self.manager.clone()
    }

    /// The addresses the proxy listens on, once bound: what `/status`
    /// reports.
    pub fn set_listeners(&self, addrs: Vec<SocketAddr>) {
        *self.listen.lock().unwrap_or_else(|p| p.into_inner()) = addrs;
    }

    fn listeners(&self) -> Vec<String> {
        self.listen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(SocketAddr::to_string)
            .collect()
    }

    fn authorized(&self, req: &Request<Body>) -> bool {
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // The scheme is case-insensitive (RFC 9110 section 11.1).
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(token)
            })
            .is_some_and(|given| {
                token::constant_time_eq(given.trim().as_bytes(), self.token.as_bytes())
            })
    }
}
