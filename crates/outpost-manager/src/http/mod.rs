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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
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
    pub header_read_timeout: Duration,
    /// More routes (the dashboard), merged with the API's.
    pub extra_routes: Option<Router<AppState>>,
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

impl IntoResponse for ManagerError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!("{self}");
        }
        (
            status,
            axum::Json(ApiError {
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}

/// Every route: the edge protocol, the automation API, `/metrics`, and
/// `extra` (the dashboard).
pub fn router(manager: AppState, extra: Option<Router<AppState>>) -> Router {
    let mut router = Router::new().merge(edge::routes()).merge(api::routes());
    if let Some(extra) = extra {
        router = router.merge(extra);
    }
    router
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(manager)
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
        tracker.spawn(async move {
            let _permit = permit;
            let service = router.map_request(move |mut request: http::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
            let service = TowerToHyperService::new(service);
            match acceptor {
                Some(acceptor) => {
                    let Ok(Ok(tls)) =
                        tokio::time::timeout(header_timeout, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    serve_connection(TokioIo::new(tls), service, header_timeout, shutdown).await;
                }
                None => {
                    serve_connection(TokioIo::new(stream), service, header_timeout, shutdown).await
                }
            }
        });
    }
    tracker.close();
    if tokio::time::timeout(DRAIN, tracker.wait()).await.is_err() {
        tracing::warn!("connections still open after {DRAIN:?}: closing them");
    }
}

async fn serve_connection<I, S>(
    io: I,
    service: S,
    header_timeout: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<http::Request<Incoming>, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, connection).await;
        }
    }
}

/// The peer's address as the audit log writes it.
pub(crate) fn peer_text(peer: Option<SocketAddr>) -> String {
    peer.map(|p| p.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}
