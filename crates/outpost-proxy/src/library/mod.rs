//! The library listener: the edge's own web listener for PCs (`--library`,
//! `[library] listen`), beside the proxy listener.
//!
//! After the client ACL, [`classify`] decides what a request is: the PAC
//! file ([`pac`]), a Delivery Optimization cache-host request, a DNS-mode
//! request, or the site library's ([`crate::local::LocalSite`]). DO and
//! DNS-mode requests are served by the engine exactly as a proxy request
//! for the origin URL (one stored copy, collapsing, ranges, the shaper),
//! with the destination guard applied. The listener never proxies a URL a
//! client names itself: absolute-form and CONNECT are refused.

pub mod classify;
pub mod config;
pub mod dns;
pub mod pac;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::BodyExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::cache_status::CacheStatus;
use crate::destination::Refusal;
use crate::engine::Engine;
use crate::h1::{LibraryWay, LogUrl, ReqBody};
use crate::local::{LocalAnswer, LocalSite, MAX_LOCAL_BODY};
use crate::serve::{EdgeBody, error_response, marked};
use crate::upstream::Reach;

pub use classify::{Classified, classify};
pub use config::{DnsModeConfig, HostPattern, LibraryConfig, PacConfig, PacDirect};

/// The library role's state, shared by its connections.
pub struct Library {
    site: Arc<dyn LocalSite>,
    pac: Bytes,
}

impl Library {
    /// The role for `engine`'s `[library]`, handing the site library's
    /// requests to `site`. `proxy` is the proxy listener's address as PCs
    /// reach it (for the PAC file).
    pub fn new(engine: &Engine, site: Arc<dyn LocalSite>, proxy: Option<String>) -> Self {
        let config = &engine.config.library;
        let proxy = config.pac.proxy.clone().or(proxy);
        Self {
            site,
            pac: Bytes::from(pac::render(&config.pac.direct, proxy.as_deref())),
        }
    }
}

/// Binds `[library] listen`, when set, and records it as one of the
/// edge's own addresses (never a destination).
pub(crate) async fn bind(engine: &Engine) -> std::io::Result<Option<TcpListener>> {
    let Some(addr) = engine.config.library.listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {addr} (library): {e}"))
    })?;
    if let Ok(bound) = listener.local_addr() {
        engine.add_own_address(bound);
    }
    Ok(Some(listener))
}

/// Serves one connection of the library listener (the client ACL passed).
pub(crate) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    library: Arc<Library>,
    engine: Arc<Engine>,
    shutdown: CancellationToken,
) {
    let h1 = engine.config.h1.clone();
    let log = engine.access_log().map(|l| (l, peer.ip()));
    crate::h1::serve(stream, &h1, shutdown, log, &engine.served, |req| {
        let engine = engine.clone();
        let library = library.clone();
        async move { dispatch(engine, library, req, peer).await }
    })
    .await;
}

/// Answers one request on the library listener.
async fn dispatch(
    engine: Arc<Engine>,
    library: Arc<Library>,
    req: Request<ReqBody>,
    peer: SocketAddr,
) -> Response<EdgeBody> {
    if let Some(refusal) = engine.loop_refusal(&req, peer) {
        return refusal;
    }
    let classified = classify(
        req.method(),
        req.uri(),
        req.headers(),
        &engine.config.library,
    );
    match classified {
        Classified::Refused(status, why) => {
            tracing::info!(client = %peer, method = %req.method(), uri = %req.uri(), %status, "library listener: {why}");
            error_response(status, why)
        }
        Classified::Pac => way(pac_response(&library.pac, req.method()), LibraryWay::Pac),
        Classified::DeliveryRefused(host) => {
            tracing::warn!(client = %peer, %host, "Delivery Optimization origin not in do_hosts: 403");
            marked(
                error_response(
                    StatusCode::FORBIDDEN,
                    "this origin is not in the edge's do_hosts",
                ),
                CacheStatus::Denied,
            )
        }
        Classified::Delivery(origin) => way(
            serve_origin(&engine, req, origin, peer).await,
            LibraryWay::DeliveryOptimization,
        ),
        Classified::DnsMode(origin) => way(
            dns_mode(&engine, req, origin, peer).await,
            LibraryWay::DnsMode,
        ),
        Classified::Local => {
            let host = req
                .headers()
                .get(header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
            if let Some(host) = host
                && !engine.config.library.allowed_hosts.allows(&host)
            {
                tracing::warn!(client = %peer, %host, "site library asked under a name not of this edge: 421");
                return way(
                    error_response(
                        StatusCode::MISDIRECTED_REQUEST,
                        "this edge's library answers only its own names: add this one to library.allowed_hosts",
                    ),
                    LibraryWay::Local,
                );
            }
            way(local(&engine, &library, req, peer).await, LibraryWay::Local)
        }
    }
}

/// A DO or DNS-mode request, served as a proxy request for `origin`.
async fn serve_origin(
    engine: &Arc<Engine>,
    req: Request<ReqBody>,
    origin: Uri,
    peer: SocketAddr,
) -> Response<EdgeBody> {
    let route = match engine.route(origin, Reach::Guarded) {
        Ok(route) => route,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    tracing::debug!(client = %peer, method = %req.method(), key = %route.key, "library: origin request");
    let url = route.key.to_string();
    let mut resp = engine.handle(req, route).await;
    resp.extensions_mut().insert(LogUrl(url));
    resp
}

/// Marks `resp` as served by the library listener's `way` (its counters).
fn way(mut resp: Response<EdgeBody>, way: LibraryWay) -> Response<EdgeBody> {
    resp.extensions_mut().insert(way);
    resp
}

/// A DNS-mode request: served as the origin's, except that a name the
/// upstream resolvers send back to the edge (or inside) is a loop (508),
/// and one they do not resolve is a bad gateway (502).
async fn dns_mode(
    engine: &Arc<Engine>,
    req: Request<ReqBody>,
    origin: Uri,
    peer: SocketAddr,
) -> Response<EdgeBody> {
    let host = origin.host().unwrap_or_default().to_string();
    let resp = serve_origin(engine, req, origin, peer).await;
    let Some(refusal) = resp.extensions().get::<Refusal>() else {
        return resp;
    };
    let (status, text) = match refusal {
        Refusal::Unresolved { .. } => (
            StatusCode::BAD_GATEWAY,
            format!("DNS mode: {host} does not resolve through library.dns.upstreams"),
        ),
        _ => (
            StatusCode::LOOP_DETECTED,
            format!(
                "DNS mode loop: library.dns.upstreams resolve {host} to this edge or an internal address"
            ),
        ),
    };
    tracing::warn!(client = %peer, %host, %refusal, %status, "DNS mode: not fetched");
    marked(error_response(status, &text), CacheStatus::Denied)
}

fn pac_response(pac: &Bytes, method: &Method) -> Response<EdgeBody> {
    let mut resp = Response::new(if method == Method::HEAD {
        crate::serve::empty_body()
    } else {
        crate::serve::full_body(pac.clone())
    });
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ns-proxy-autoconfig"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(pac.len()));
    // PCs fetch it at every network change; a short lifetime lets a
    // configuration change reach them within minutes.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    resp
}

/// A request for the site library: its body read (bounded), handed to the
/// [`LocalSite`], and its answer served.
async fn local(
    engine: &Arc<Engine>,
    library: &Library,
    req: Request<ReqBody>,
    peer: SocketAddr,
) -> Response<EdgeBody> {
    let (mut parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_LOCAL_BODY as u64) {
        return error_response(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    let body = match read_bounded(body, MAX_LOCAL_BODY).await {
        Ok(Some(body)) => body,
        Ok(None) => {
            return error_response(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
        }
        Err(_) => return error_response(StatusCode::BAD_REQUEST, "request body cut short"),
    };
    parts.extensions.insert(peer);
    let head = parts.clone();
    let answer = library.site.handle(Request::from_parts(parts, body)).await;
    match answer {
        LocalAnswer::Response(resp) => local_response(resp, &head.method),
        LocalAnswer::Stored { url, headers } => {
            let mut resp = engine.serve_stored(&head, url.clone()).await;
            for (name, value) in &headers {
                resp.headers_mut().insert(name.clone(), value.clone());
            }
            resp.extensions_mut().insert(LogUrl(url.to_string()));
            resp
        }
    }
}

/// Reads at most `limit` bytes of a request body; `None` when there are
/// more.
async fn read_bounded(mut body: ReqBody, limit: usize) -> std::io::Result<Option<Bytes>> {
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if out.len() + data.len() > limit {
                return Ok(None);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Some(out.freeze()))
}

/// A [`LocalSite`]'s own response, framed by its size hint.
fn local_response(resp: Response<crate::local::LocalBody>, method: &Method) -> Response<EdgeBody> {
    let (mut parts, body) = resp.into_parts();
    let bodiless = *method == Method::HEAD
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    if bodiless {
        return Response::from_parts(parts, crate::serve::empty_body());
    }
    // A length the site states itself may disagree with its body; the
    // body's own exact size is what goes on the wire.
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Some(exact) = http_body::Body::size_hint(&body).exact() {
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(exact));
    }
    Response::from_parts(parts, EdgeBody::Stream(body))
}
