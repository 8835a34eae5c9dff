//! Listeners, connections and modes.
//!
//! One listener serves every mode; the mode is decided per request:
//! - `CONNECT host:port` tunnels bytes (allowed ports only), never cached;
//! - absolute-form targets (`GET http://host/path`) are forward-proxied;
//! - with a single `--origin`, every origin-form request is reverse-proxied
//!   to it; otherwise a `Host` matching a configured site is;
//! - an origin-form request on a connection the firewall redirected to us
//!   (its original destination is not our address) is transparent: the
//!   target is `http://Host/path`, or the original destination when there
//!   is no Host;
//! - anything else is refused: the edge is not an open relay.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, header};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, Route};
use crate::h1::{self, LogUrl, ReqBody, Tunnel};
use crate::library::Library;
use crate::local::LocalSite;
use crate::serve::{EdgeBody, empty_body, error_response};
use crate::sys;
use crate::upstream::Reach;

/// Per-connection facts the router needs.
#[derive(Debug, Clone, Copy)]
struct Conn {
    peer: SocketAddr,
    /// Set when the connection was redirected to us by the firewall.
    original_dst: Option<SocketAddr>,
}

pub struct Server {
    engine: Arc<Engine>,
    listeners: Vec<TcpListener>,
    /// The library listener (`[library] listen`), when configured.
    library: Option<TcpListener>,
    /// Who answers the library listener's site-library requests.
    site: Arc<dyn LocalSite>,
    open: Arc<OpenConnections>,
}

/// What a listener is for.
#[derive(Clone)]
enum Role {
    /// The proxy: forward, transparent, reverse and CONNECT.
    Proxy,
    /// The edge's own web listener for PCs (PAC, DO, DNS mode, library).
    Library(Arc<Library>),
}

/// The client connections being served, so that a stopping edge can wait
/// for the responses in flight (a drain) after it has stopped accepting.
#[derive(Debug, Default)]
pub struct OpenConnections {
    count: AtomicUsize,
    last_closed: Notify,
}

impl OpenConnections {
    /// Connections open now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Returns once no connection is open.
    pub async fn all_closed(&self) {
        loop {
            let closed = self.last_closed.notified();
            tokio::pin!(closed);
            // Registered before the count is read: a close in between
            // still wakes this waiter.
            closed.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            closed.await;
        }
    }

    fn opened(self: &Arc<Self>) -> OpenConnection {
        self.count.fetch_add(1, Ordering::AcqRel);
        OpenConnection(self.clone())
    }
}

/// One counted connection; uncounted when dropped, however its task ends.
struct OpenConnection(Arc<OpenConnections>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.last_closed.notify_waiters();
        }
    }
}

impl Server {
    /// Binds every configured listen address.
    pub async fn bind(engine: Arc<Engine>) -> std::io::Result<Self> {
        let mut listeners = Vec::new();
        for addr in &engine.config.listen {
            let listener = TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
            })?;
            if let Ok(bound) = listener.local_addr() {
                engine.upstream.guard.add_own_address(bound);
            }
            listeners.push(listener);
        }
        let library = crate::library::bind(&engine).await?;
        Ok(Self {
            engine,
            listeners,
            library,
            site: Arc::new(crate::local::NoLocalSite),
            open: Arc::default(),
        })
    }

    /// Hands the library listener's site-library requests to `site` (by
    /// default they are all 404).
    pub fn set_local_site(&mut self, site: Arc<dyn LocalSite>) {
        self.site = site;
    }

    /// The library listener's address, when there is one.
    pub fn library_addr(&self) -> Option<SocketAddr> {
        self.library.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The connections this server serves, counted until each closes
    /// (also after `run` has returned).
    pub fn open_connections(&self) -> Arc<OpenConnections> {
        self.open.clone()
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Accepts connections until `shutdown` is cancelled, then closes the
    /// listeners (new connections are refused) and returns. Connections
    /// already accepted go on: idle ones close at once, a response in
    /// flight is finished first (see [`Server::open_connections`]).
    pub async fn run(self, shutdown: CancellationToken) {
        let limit = Arc::new(Semaphore::new(self.engine.config.max_connections.max(1)));
        let mut tasks = Vec::new();
        let mut listeners: Vec<(TcpListener, Role)> = Vec::new();
        if let Some(listener) = self.library {
            // The PAC file's proxy, unless configured: the proxy listener,
            // when it is an address PCs can use.
            let bound: Vec<SocketAddr> = self
                .listeners
                .iter()
                .filter_map(|l| l.local_addr().ok())
                .collect();
            let proxy = (bound.iter())
                .find(|a| !a.ip().is_unspecified() && !a.ip().is_loopback())
                .or_else(|| bound.iter().find(|a| a.ip().is_loopback()))
                .map(|a| a.to_string());
            let library = Library::new(&self.engine, self.site.clone(), proxy);
            listeners.push((listener, Role::Library(Arc::new(library))));
        }
        listeners.extend(self.listeners.into_iter().map(|l| (l, Role::Proxy)));
        for (listener, role) in listeners {
            let engine = self.engine.clone();
            let shutdown = shutdown.clone();
            let limit = limit.clone();
            let open = self.open.clone();
            tasks.push(tokio::spawn(async move {
                accept_loop(listener, role, engine, shutdown, limit, open).await
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    role: Role,
    engine: Arc<Engine>,
    shutdown: CancellationToken,
    limit: Arc<Semaphore>,
    open: Arc<OpenConnections>,
) {
    // Connections beyond `max_connections` are told so (503) by a few
    // short-lived responders; past those, they are closed at once.
    let refusers = Arc::new(Semaphore::new(REFUSERS));
    while let Some((stream, peer)) = accept(&listener, &shutdown, "accept failed").await {
        if !allowed(&engine, peer.ip()) {
            // Refused before it can take a connection slot, and answered
            // by the few short-lived refusers only: hosts outside the LAN
            // cannot hold the slots PCs need.
            if let Ok(refuser) = refusers.clone().try_acquire_owned() {
                tracing::warn!(client = %peer, "client not in allowed_clients: 403");
                tokio::spawn(async move {
                    refuse(stream, StatusCode::FORBIDDEN, "access denied\n").await;
                    drop(refuser);
                });
            }
            continue;
        }
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            if let Ok(refuser) = refusers.clone().try_acquire_owned() {
                tracing::warn!(client = %peer, max = engine.config.max_connections, "max_connections reached: 503");
                tokio::spawn(async move {
                    refuse(
                        stream,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the edge has max_connections clients already; retry shortly\n",
                    )
                    .await;
                    drop(refuser);
                });
            }
            continue;
        };
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        let counted = open.opened();
        let role = role.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, role, engine, shutdown).await;
            drop(permit);
            drop(counted);
        });
    }
}

/// The next connection on `listener`, or `None` once `shutdown` is
/// cancelled. A failed accept (EMFILE and friends) is logged as `failed`
/// and retried after a pause instead of spinning. The admin API's listener
/// accepts through here too.
pub async fn accept(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    failed: &'static str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = listener.accept() => match r {
                Ok(x) => return Some(x),
                Err(e) => {
                    tracing::warn!(error = %e, "{failed}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Connections answered at once and closed (over `max_connections`, or
/// from clients not allowed), at most this many at a time.
const REFUSERS: usize = 64;

/// Answers a connection the edge will not serve: reads its request head (a
/// client may not expect an answer before it has asked), answers `status`
/// and closes, all within 2 s.
async fn refuse(mut stream: TcpStream, status: StatusCode, body: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let retry = if status == StatusCode::SERVICE_UNAVAILABLE {
        "retry-after: 5\r\n"
    } else {
        ""
    };
    let busy = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{retry}connection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match stream.read(&mut buf).await? {
                0 => return Ok(()),
                n => head.extend_from_slice(&buf[..n]),
            }
        }
        stream.write_all(busy.as_bytes()).await?;
        stream.shutdown().await?;
        // Closing with a request body unread would reset the connection
        // and could destroy the answer before the client reads it.
        let mut drained = 0;
        while drained < 64 * 1024 {
            match stream.read(&mut buf).await? {
                0 => break,
                n => drained += n,
            }
        }
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), exchange).await;
}

/// Whether forward/transparent/CONNECT traffic may go to `host`.
fn destination_allowed(engine: &Engine, host: &str) -> bool {
    engine
        .rules()
        .allowed_destinations
        .as_ref()
        .is_none_or(|list| list.iter().any(|d| d.matches(host)))
}

fn allowed(engine: &Engine, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    engine
        .rules()
        .allowed_clients
        .iter()
        .any(|net| net.contains(&ip))
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    role: Role,
    engine: Arc<Engine>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    if let Role::Library(library) = role {
        return crate::library::serve_connection(stream, peer, library, engine, shutdown).await;
    }
    let conn = Conn {
        peer,
        original_dst: sys::original_destination(&stream),
    };
    let h1 = engine.config.h1.clone();
    let log = engine.access_log().map(|l| (l, peer.ip()));
    h1::serve(stream, &h1, shutdown, log, &engine.served, |req| {
        let engine = engine.clone();
        async move { dispatch(engine, req, conn).await }
    })
    .await;
}

async fn dispatch(engine: Arc<Engine>, req: Request<ReqBody>, conn: Conn) -> Response<EdgeBody> {
    if let Some(refusal) = engine.loop_refusal(&req, conn.peer) {
        return refusal;
    }
    if req.method() == Method::CONNECT {
        return connect(engine, req, conn).await;
    }
    let route = match route(&engine, &req, conn) {
        Ok(route) => route,
        Err(resp) => return *resp,
    };
    tracing::debug!(client = %conn.peer, method = %req.method(), key = %route.key, "request");
    let url = route.key.to_string();
    let mode = mode_of(&engine, &req, conn);
    // Targeted cache-control fields are addressed to the edge as its
    // origins' CDN (RFC 9213); they are kept in the store, never sent on.
    let strip_targeted = route.surrogate;
    let mut resp = engine.handle(req, route).await;
    if strip_targeted {
        engine.targeted_fields().strip(resp.headers_mut());
    }
    resp.extensions_mut().insert(LogUrl(url));
    resp.extensions_mut().insert(mode);
    resp
}

/// The mode `route` picks for this request (same order of checks).
fn mode_of(engine: &Engine, req: &Request<ReqBody>, conn: Conn) -> h1::Mode {
    let uri = req.uri();
    if uri.scheme().is_some() && uri.authority().is_some() && engine.config.forward_enabled() {
        h1::Mode::Forward
    } else if engine.config.origin.is_some()
        || conn.original_dst.is_none()
        || host_header(req).is_some_and(|host| engine.config.site_for(host.host(), true).is_some())
    {
        h1::Mode::Reverse
    } else {
        h1::Mode::Transparent
    }
}

/// Maps a request to the origin URL it is for.
fn route(
    engine: &Engine,
    req: &Request<ReqBody>,
    conn: Conn,
) -> Result<Route, Box<Response<EdgeBody>>> {
    let bad = |msg: &str| Box::new(error_response(StatusCode::BAD_REQUEST, msg));
    let uri = req.uri();
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let forbidden = |host: &str| {
        tracing::warn!(client = %conn.peer, %host, "destination not in allowed_destinations: 403");
        Box::new(error_response(
            StatusCode::FORBIDDEN,
            "this destination is not allowed",
        ))
    };
    let (upstream, reach) = if uri.scheme().is_some() && uri.authority().is_some() {
        let host = uri.host().unwrap_or("");
        if !engine.config.forward_enabled() {
            // A reverse edge answers absolute-form requests for its own
            // sites (RFC 9112 section 3.2.2) and nothing else.
            let origin = match (engine.config.site_for(host, false), &engine.config.origin) {
                (Some(site), _) => &site.origin,
                (None, Some(origin))
                    if origin.host().is_some_and(|h| h.eq_ignore_ascii_case(host))
                        && crate::destination::port_of(origin)
                            == crate::destination::port_of(uri) =>
                {
                    origin
                }
                _ => {
                    tracing::warn!(client = %conn.peer, %host, "absolute-form request on a reverse edge: 403");
                    return Err(Box::new(error_response(
                        StatusCode::FORBIDDEN,
                        "this edge is not a forward proxy (set forward = true to make it one)",
                    )));
                }
            };
            (
                join_origin(origin, &path).map_err(|e| bad(&e))?,
                Reach::Configured,
            )
        } else {
            // Absolute form: forward proxy.
            if !destination_allowed(engine, host) {
                return Err(forbidden(host));
            }
            precheck_destination(engine, uri)?;
            (uri.clone(), Reach::Guarded)
        }
    } else if let Some(origin) = &engine.config.origin {
        (
            join_origin(origin, &path).map_err(|e| bad(&e))?,
            Reach::Configured,
        )
    } else if let Some(site) =
        host_header(req).and_then(|host| engine.config.site_for(host.host(), true))
    {
        (
            join_origin(&site.origin, &path).map_err(|e| bad(&e))?,
            Reach::Configured,
        )
    } else if let Some(dst) = conn.original_dst
        // Transparent interception proxies for any host, as forward mode
        // does: off on a reverse edge unless the admin turns it on (a DNAT
        // in front of a reverse edge must not make it an open proxy).
        && engine.config.forward_enabled()
    {
        // Transparent: the firewall sent us a connection meant for `dst`.
        let authority = match host_header(req) {
            Some(host) => host,
            None => Authority::try_from(dst.to_string().as_str())
                .map_err(|_| bad("bad original destination"))?,
        };
        if !destination_allowed(engine, authority.host()) {
            return Err(forbidden(authority.host()));
        }
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|e| bad(&e.to_string()))?;
        precheck_destination(engine, &uri)?;
        (uri, Reach::Guarded)
    } else {
        return Err(bad(
            "not a proxy request: use an absolute URL, or configure a site for this Host",
        ));
    };
    engine
        .route(upstream, reach)
        .map_err(|e| bad(&e.to_string()))
}

/// Refuses a client's destination on a port outside `forward_ports`, and
/// an address-literal destination the guard refuses, before any lookup in
/// the cache. Names are checked by the connector after it resolves them
/// (no DNS lookup on the hit path).
fn precheck_destination(engine: &Engine, uri: &Uri) -> Result<(), Box<Response<EdgeBody>>> {
    let port = crate::destination::port_of(uri);
    if !engine.config.forward_port_allowed(port) {
        tracing::warn!(%uri, port, "destination port not in forward_ports: 403");
        return Err(Box::new(error_response(
            StatusCode::FORBIDDEN,
            "this port is not allowed (server.forward_ports)",
        )));
    }
    let Some(host) = uri.host() else {
        return Ok(());
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let Ok(ip) = bare.parse::<IpAddr>() else {
        return Ok(());
    };
    let addr = SocketAddr::new(ip, port);
    engine
        .upstream
        .guard
        .check(addr)
        .map_err(|refusal| Box::new(crate::engine::refused_destination(&refusal)))
}

fn host_header(req: &Request<ReqBody>) -> Option<Authority> {
    req.headers().get(header::HOST)?.to_str().ok()?.parse().ok()
}

/// `origin` base URL + request path (the base's path is a prefix). The
/// request path's dot-segments are removed first (RFC 3986 section
/// 5.2.4), so that no request leaves the base's prefix.
fn join_origin(origin: &Uri, path: &PathAndQuery) -> Result<Uri, String> {
    let base = origin.path().trim_end_matches('/');
    let normalized =
        outpost_http::path::remove_dot_segments(path.path()).map_err(|e| e.to_string())?;
    let joined = match path.query() {
        Some(q) => format!("{base}{normalized}?{q}"),
        None => format!("{base}{normalized}"),
    };
    let mut parts = origin.clone().into_parts();
    parts.path_and_query = Some(
        joined
            .parse()
            .map_err(|e: http::uri::InvalidUri| e.to_string())?,
    );
    Uri::from_parts(parts).map_err(|e| e.to_string())
}

/// `CONNECT host:port`: a byte tunnel to an allowed port.
async fn connect(engine: Arc<Engine>, req: Request<ReqBody>, conn: Conn) -> Response<EdgeBody> {
    let Some(authority) = req.uri().authority().cloned() else {
        return error_response(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let Some(port) = authority.port_u16() else {
        return error_response(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    if !engine.config.forward_enabled() {
        tracing::warn!(client = %conn.peer, target = %authority, "CONNECT on a reverse edge: 403");
        return error_response(
            StatusCode::FORBIDDEN,
            "this edge is not a forward proxy (set forward = true to make it one)",
        );
    }
    if !destination_allowed(&engine, authority.host()) {
        tracing::warn!(client = %conn.peer, target = %authority, "CONNECT to a destination not in allowed_destinations: 403");
        return error_response(StatusCode::FORBIDDEN, "this destination is not allowed");
    }
    if !engine.rules().connect_ports.contains(&port) {
        tracing::warn!(client = %conn.peer, target = %authority, "CONNECT to a port not in connect_ports: 403");
        return error_response(StatusCode::FORBIDDEN, "CONNECT to this port is not allowed");
    }
    // Resolved and checked once; the tunnel goes to the addresses checked.
    let addrs = match engine.upstream.guard.resolve(authority.host(), port).await {
        Ok(addrs) => addrs,
        Err(refusal) => {
            tracing::warn!(client = %conn.peer, target = %authority, "CONNECT destination refused");
            return crate::engine::refused_destination(&refusal);
        }
    };
    let upstream = match tokio::time::timeout(
        std::time::Duration::from_secs(10),
        TcpStream::connect(&addrs[..]),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return error_response(
                StatusCode::BAD_GATEWAY,
                &format!("cannot connect to {authority}: {e}"),
            );
        }
        Err(_) => {
            return error_response(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("connecting to {authority} timed out"),
            );
        }
    };
    let mut resp = Response::new(empty_body());
    resp.extensions_mut().insert(Tunnel::new(upstream));
    resp
}
