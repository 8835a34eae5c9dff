//! The HTTP layer: thin axum handlers over [`Manager`], and the server
//! loop (HTTPS with tokio-rustls, or plain HTTP), with a connection cap, a
//! header read timeout, body size limits and graceful shutdown.
//!
//! Shutdown (the manager's token cancelled): stop accepting; long polls
//! answer at once; each connection finishes its in-flight request and
//! closes; [`serve`] returns when all have, or after [`DRAIN`].

mod api;
pub mod auth;
pub mod client;
mod edge;
mod session;
pub mod session_client;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use outpost_protocol::ApiError;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::{Manager, ManagerError};

pub type AppState = Arc<Manager>;

/// The largest request body: a heartbeat of 20 channels with 1,000
/// missing paths each is ~2 MB.
pub const MAX_BODY: usize = 8 << 20;
/// How long shutdown waits for open connections.
pub const DRAIN: Duration = Duration::from_secs(10);

pub struct ServeOptions {
    /// `None`: plain HTTP (`--insecure-http`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Every edge holds one long-poll connection: size for the fleet.
    pub max_connections: usize,
    /// How long a request's head may take, and how long a connection may
    /// sit idle between requests (hyper counts both for HTTP/1.1; the
    /// server closes an HTTP/2 connection idle as long): keep it above the
    /// heartbeat interval, or every heartbeat pays a new TLS handshake (see
    /// [`header_read_timeout_for`]).
    pub header_read_timeout: Duration,
    /// More routes (the dashboard), merged with the API's.
    pub extra_routes: Option<Router<AppState>>,
}

/// The TLS handshake's deadline, separate from the head's.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A header timeout that lets an edge keep its connection between two
/// heartbeats: two intervals and 5 s, at least 10 s.
pub fn header_read_timeout_for(heartbeat: Duration) -> Duration {
    (heartbeat.saturating_mul(2) + Duration::from_secs(5)).max(Duration::from_secs(10))
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            tls: None,
            max_connections: 20_000,
            header_read_timeout: Duration::from_secs(10),
            extra_routes: None,
        }
    }
}

/// An error as every edge and API answer carries it (HTTP or session
/// frame): its status and body; a server error is logged.
pub(crate) fn error_answer(error: &ManagerError) -> (http::StatusCode, ApiError) {
    let status = error.status();
    if status.is_server_error() {
        tracing::error!("{error}");
    }
    (
        status,
        ApiError {
            error: error.to_string(),
        },
    )
}

impl IntoResponse for ManagerError {
    fn into_response(self) -> Response {
        let (status, body) = error_answer(&self);
        (status, axum::Json(body)).into_response()
    }
}

/// Every route: the edge protocol, the automation API, `/metrics`, and
/// `extra` (the dashboard).
pub fn router(manager: AppState, extra: Option<Router<AppState>>) -> Router {
    // The JSON error wrapper covers the API and the edge protocol only:
    // the dashboard's own pages answer as they choose.
    let mut router = Router::new()
        .merge(edge::routes())
        .merge(api::routes())
        .layer(axum::middleware::map_response(errors_as_json));
    if let Some(extra) = extra {
        router = router.merge(extra);
    }
    router
        .fallback(|| async { ManagerError::NotFound("no such route".into()) })
        .layer(axum::middleware::from_fn(request_deadline))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(manager)
}

/// How long a request may take, body included, except the long poll: the
/// header timeout alone lets a client that sends its body a byte at a time
/// hold a connection (and its buffer) for ever.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(60);

async fn request_deadline(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.uri().path() == "/edge/v1/wait" {
        return next.run(request).await;
    }
    match tokio::time::timeout(REQUEST_DEADLINE, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            http::StatusCode::REQUEST_TIMEOUT,
            axum::Json(ApiError {
                error: format!("the request took longer than {REQUEST_DEADLINE:?}"),
            }),
        )
            .into_response(),
    }
}

/// axum's own rejections (a bad query string, a body over the limit) are
/// plain text; every error the API gives is an [`ApiError`], so clients
/// decode one shape.
async fn errors_as_json(response: Response) -> Response {
    let plain = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !(response.status().is_client_error() && plain) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => parts.status.to_string(),
    };
    (parts.status, axum::Json(ApiError { error: text })).into_response()
}

/// An edge call's JSON body, or the 400 that says why not (the HTTP calls
/// and the session's frames alike).
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ManagerError> {
    serde_json::from_slice(body)
        .map_err(|e| ManagerError::BadRequest(format!("the body is not the expected JSON: {e}")))
}

/// Serves until the manager's shutdown token is cancelled.
pub async fn serve(manager: AppState, listener: TcpListener, options: ServeOptions) {
    let router = router(manager.clone(), options.extra_routes);
    let acceptor = options.tls.map(tokio_rustls::TlsAcceptor::from);
    let permits = Arc::new(tokio::sync::Semaphore::new(options.max_connections.max(1)));
    let tracker = TaskTracker::new();
    let shutdown = manager.shutdown_token().clone();
    let header_timeout = options.header_read_timeout;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors, say: back off instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection refused: {} connections open", options.max_connections);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        let manager = manager.clone();
        let tasks = tracker.clone();
        tracker.spawn(async move {
            let mut guard = ConnectionGuard::new(permit, manager.clone(), tasks);
            manager
                .stats
                .connections_accepted_total
                .fetch_add(1, Ordering::Relaxed);
            match acceptor {
                Some(acceptor) => {
                    let Ok(Ok(tls)) =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                        guard.http2();
                    }
                    let guard = Arc::new(guard);
                    serve_connection(
                        TokioIo::new(tls),
                        router,
                        peer,
                        header_timeout,
                        shutdown,
                        guard,
                    )
                    .await;
                }
                None => {
                    let guard = Arc::new(guard);
                    serve_connection(
                        TokioIo::new(stream),
                        router,
                        peer,
                        header_timeout,
                        shutdown,
                        guard,
                    )
                    .await
                }
            }
        });
    }
    tracker.close();
    if tokio::time::timeout(DRAIN, tracker.wait()).await.is_err() {
        tracing::warn!("connections still open after {DRAIN:?}: closing them");
    }
}

/// What an open connection holds: its place under `max_connections` and
/// its count in the gauges. Shared with an edge session the connection
/// became (`/edge/v1/session`), which outlives hyper's connection task.
pub(crate) struct ConnectionGuard {
    _permit: tokio::sync::OwnedSemaphorePermit,
    manager: AppState,
    http2: bool,
    /// The server's tasks: a session is one of them, so shutdown waits for
    /// it (within [`DRAIN`]) as for any connection.
    pub(crate) tracker: TaskTracker,
}

impl ConnectionGuard {
    fn new(
        permit: tokio::sync::OwnedSemaphorePermit,
        manager: AppState,
        tracker: TaskTracker,
    ) -> Self {
        manager
            .stats
            .connections_open
            .fetch_add(1, Ordering::Relaxed);
        Self {
            _permit: permit,
            manager,
            http2: false,
            tracker,
        }
    }

    fn http2(&mut self) {
        if !self.http2 {
            self.http2 = true;
            let stats = &self.manager.stats;
            stats.connections_http2_open.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let stats = &self.manager.stats;
        stats.connections_open.fetch_sub(1, Ordering::Relaxed);
        if self.http2 {
            stats.connections_http2_open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Requests a connection may carry at once over HTTP/2: an edge has its
/// long poll, a heartbeat and a config fetch; a browser a few more.
const MAX_STREAMS_PER_CONNECTION: u32 = 32;
/// HTTP/2 pings find a peer that vanished without a FIN (a NAT dropped
/// it, the edge lost power), so its connection and buffers go.
const PING_INTERVAL: Duration = Duration::from_secs(60);
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// When a connection last had nothing to do. HTTP/1.1 idleness is bounded
/// by hyper's header timeout; HTTP/2 has no such timeout, so the server
/// closes a connection that carried no request for as long.
struct Activity {
    epoch: std::time::Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` when the last request ended.
    last_done_ms: AtomicU64,
}

struct InFlight(Arc<Activity>);

impl Activity {
    fn new() -> Self {
        Self {
            epoch: std::time::Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let last = self.last_done_ms.load(Ordering::Acquire);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .last_done_ms
            .store(self.0.now_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One connection, HTTP/1.1 or HTTP/2 (by ALPN over TLS, by the preface
/// over plain HTTP). An edge speaks HTTP/2 over TLS: its long poll,
/// heartbeats and config fetches share one connection, so a fleet costs
/// the manager one descriptor and one TLS session per edge, not a new
/// handshake per heartbeat.
async fn serve_connection<I>(
    io: I,
    router: Router,
    peer: SocketAddr,
    idle_timeout: Duration,
    shutdown: tokio_util::sync::CancellationToken,
    guard: Arc<ConnectionGuard>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        router
            .map_request(move |mut request: http::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.extensions_mut().insert(guard.clone());
                request
            })
            .map_future(move |future| {
                let in_flight = activity.begin();
                async move {
                    let response = future.await;
                    drop(in_flight);
                    response
                }
            })
    };
    let service = TowerToHyperService::new(service);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Some(PING_INTERVAL))
        .keep_alive_timeout(PING_TIMEOUT);
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let check_every = idle_timeout
        .min(Duration::from_secs(30))
        .max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(check_every) => {
                if activity.idle_for() >= idle_timeout {
                    break;
                }
            }
        }
    }
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(DRAIN, connection).await;
}

/// The peer's address as the audit log writes it.
pub(crate) fn peer_text(peer: Option<SocketAddr>) -> String {
    peer.map(|p| p.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_timeout_outlasts_the_heartbeat() {
        assert_eq!(
            header_read_timeout_for(Duration::from_secs(30)),
            Duration::from_secs(65)
        );
        assert_eq!(
            header_read_timeout_for(Duration::from_secs(1)),
            Duration::from_secs(10)
        );
    }
}
