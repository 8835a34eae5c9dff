//! The admin API: health, readiness, Prometheus metrics, a JSON status
//! document, and purge/pin/reload actions.
//!
//! Every request but `/healthz`, `/readyz` and `/metrics` needs the bearer
//! token, on loopback too: the edge's own proxy connects from loopback, so
//! "it came from 127.0.0.1" says nothing about who sent it. The token is
//! read from `admin.token_file`, or generated at first start as
//! `admin.token` (0600) in the cache directory, where the CLI finds it.
//! Off loopback a configured token file is required. Requests that came
//! through a proxy (a `Via` header) are refused whatever they carry. A
//! client must send its headers within `header_read_timeout`, a
//! connection serves one request, and at most `max_connections`
//! connections are served at once: a slow or idle client cannot hold the
//! port.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use outpost_channel::Channels;
use outpost_http::CacheKey;
use outpost_proxy::Engine;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::AdminConfig;

pub struct Admin {
    engine: Arc<Engine>,
    channels: Arc<Channels>,
    reloader: Arc<crate::reload::Reloader>,
    token: String,
    started: Instant,
    listen: Vec<SocketAddr>,
    header_read_timeout: Duration,
    connections: Arc<Semaphore>,
    /// Set while connections are being turned away (logged once per spell).
    saturated: AtomicBool,
    /// The last `/metrics` document and when it was rendered: the endpoint
    /// needs no token, and a render reads the index and every channel's
    /// files, so one render a second serves every scraper.
    metrics_cache: tokio::sync::Mutex<Option<(Instant, Bytes)>>,
}

/// How long a rendered `/metrics` document is served again.
const METRICS_CACHE: Duration = Duration::from_secs(1);

/// Shortest token accepted from a configured token file.
const MIN_CONFIGURED_TOKEN: usize = 16;
/// Shortest generated token kept from an earlier start.
const MIN_GENERATED_TOKEN: usize = 32;

/// Reads a token file: its content, trimmed.
/// A configured token file others could replace (writable by group or
/// others, or in a directory they can write) would let them choose the
/// admin token: refused. One others can read is only warned about (a
/// packaged install may need it readable by the service's dynamic user).
fn check_token_file(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("admin token file {}", path.display()))?;
    if meta.file_type().is_symlink() {
        bail!(
            "admin token file {} is a symbolic link: name the file itself",
            path.display()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "admin token file {} is writable by group or others (mode {:o}): anyone who can write it chooses the admin token; chmod go-w it",
            path.display(),
            meta.mode() & 0o7777
        );
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(dir_meta) = std::fs::metadata(dir)
        && dir_meta.mode() & 0o002 != 0
        && dir_meta.mode() & 0o1000 == 0
    {
        bail!(
            "admin token file {} is in {}, a directory anyone can write: move it",
            path.display(),
            dir.display()
        );
    }
    if meta.mode() & 0o004 != 0 {
        tracing::warn!(path = %path.display(), "admin token file is readable by every local user");
    }
    Ok(())
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("admin token file {}", path.display()))?;
    Ok(text.trim().to_string())
}

/// 32 bytes from the operating system's CSPRNG, as 64 hex digits.
fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot get random bytes for the admin token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The token kept in `path` (the cache directory's `admin.token`): the one
/// an earlier start wrote, else a new one written there, 0600.
fn generated_token(path: &Path) -> anyhow::Result<String> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => {
            let token = read_token(path)?;
            if token.len() >= MIN_GENERATED_TOKEN {
                if meta.permissions().mode() & 0o077 != 0 {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                        .with_context(|| format!("cannot make {} private", path.display()))?;
                }
                tracing::info!(path = %path.display(), "admin API token read from the cache directory");
                return Ok(token);
            }
            tracing::warn!(path = %path.display(), "admin token file too short: writing a new token");
        }
        Ok(_) => bail!(
            "admin token file {} is not a regular file (a symbolic link?): remove it",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("admin token file {}", path.display()));
        }
    }
    let token = new_token()?;
    // Written beside and renamed into place: a crash never leaves a torn
    // token, and no one reads the file while it is 0644.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(token.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("cannot write the admin token to {}", path.display()))?;
    tracing::info!(
        path = %path.display(),
        "admin API token generated; the outpost CLI reads it from there"
    );
    Ok(token)
}

/// Binds the admin listener with its token: the configured one, or the
/// one generated in the cache directory. Fails if the listener would be
/// reachable from elsewhere without a configured token file.
pub async fn bind(
    config: &AdminConfig,
    engine: Arc<Engine>,
    channels: Arc<Channels>,
    reloader: Arc<crate::reload::Reloader>,
) -> anyhow::Result<(TcpListener, Arc<Admin>)> {
    if !config.listen.ip().is_loopback() && config.token_file.is_none() {
        bail!(
            "admin.listen {} is not loopback: set admin.token_file so the admin API is not open to the network",
            config.listen
        );
    }
    let token = match &config.token_file {
        Some(path) => {
            check_token_file(path)?;
            let token = read_token(path)?;
            if token.len() < MIN_CONFIGURED_TOKEN {
                bail!(
                    "admin token in {} is shorter than {MIN_CONFIGURED_TOKEN} characters",
                    path.display()
                );
            }
            tracing::info!(path = %path.display(), "admin API token read from admin.token_file");
            token
        }
        None => generated_token(&config.generated_token_file)?,
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", config.listen))?;
    let listen = engine.config.listen.clone();
    Ok((
        listener,
        Arc::new(Admin {
            engine,
            channels,
            reloader,
            token,
            started: Instant::now(),
            listen,
            header_read_timeout: config.header_read_timeout,
            connections: Arc::new(Semaphore::new(config.max_connections)),
            saturated: AtomicBool::new(false),
            metrics_cache: tokio::sync::Mutex::new(None),
        }),
    ))
}

/// Connections one client address may hold at once: a single client
/// cannot take every slot from the others (monitoring, the CLI).
const MAX_CONNECTIONS_PER_CLIENT: usize = 8;

/// Releases a client's place in the per-address count when its
/// connection ends.
struct ClientSlot {
    counts: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
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

pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: CancellationToken) {
    let per_client = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = {
            let mut counts = per_client.lock().unwrap_or_else(|p| p.into_inner());
            let n = counts.entry(peer.ip()).or_insert(0);
            if *n >= MAX_CONNECTIONS_PER_CLIENT {
                None
            } else {
                *n += 1;
                Some(ClientSlot {
                    counts: per_client.clone(),
                    ip: peer.ip(),
                })
            }
        };
        let Some(slot) = slot else {
            drop(stream);
            continue;
        };
        // Over the cap: closed at once, unread, so that a flood of idle
        // connections costs the edge nothing and ends with the header
        // timeout of the ones it holds.
        let Ok(permit) = admin.connections.clone().try_acquire_owned() else {
            if !admin.saturated.swap(true, Ordering::Relaxed) {
                tracing::warn!(client = %peer, "admin API connection limit reached: closing new connections");
            }
            drop(stream);
            continue;
        };
        admin.saturated.store(false, Ordering::Relaxed);
        let admin = admin.clone();
        tokio::spawn(async move {
            let timeout = admin.header_read_timeout;
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.handle(req, peer).await) }
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

fn text(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    text(status, format!("{value:#}\n"), "application/json")
}

/// Equal-length-independent comparison that does not stop at the first
/// difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

impl Admin {
    fn authorized(&self, req: &Request<Incoming>) -> bool {
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // The scheme is case-insensitive (RFC 9110 section 11.1).
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(token)
            })
            .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), self.token.as_bytes()))
    }

    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        // A request relayed by a proxy (the edge's own included, which
        // connects from loopback) is not an admin at this machine.
        if req.headers().contains_key(header::VIA) {
            tracing::warn!(client = %peer, path, "admin request that came through a proxy (Via): 403");
            return text(
                StatusCode::FORBIDDEN,
                "admin requests through a proxy are refused\n",
                "text/plain",
            );
        }
        // Health, readiness and metrics are harmless to expose (monitoring
        // scrapes them without a secret); everything else needs the token.
        match (req.method(), path.as_str()) {
            (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok\n", "text/plain"),
            (&Method::GET, "/readyz") => return text(StatusCode::OK, "ready\n", "text/plain"),
            (&Method::GET, "/metrics") => return self.cached_metrics().await,
            _ => {}
        }
        if !self.authorized(&req) {
            tracing::warn!(client = %peer, path, "admin request without a valid token: 401");
            let mut resp = text(
                StatusCode::UNAUTHORIZED,
                "unauthorized: send Authorization: Bearer <the token in admin.token_file or the cache directory's admin.token>\n",
                "text/plain",
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"outpost admin\""),
            );
            return resp;
        }
        let url = req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("url="))
                .map(percent_decode)
        });
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/status") => self.status(),
            (Method::GET, "/cache") => self.cache_list(req.uri().query()),
            (Method::GET, "/channels") => json(
                StatusCode::OK,
                serde_json::to_value(self.channels.status()).unwrap_or_default(),
            ),
            (Method::POST, "/channels/sync") => {
                let name = req.uri().query().and_then(|q| {
                    q.split('&')
                        .find_map(|kv| kv.strip_prefix("name="))
                        .map(percent_decode)
                });
                self.start_sync(name)
            }
            (Method::POST, "/verify") => self.verify().await,
            (Method::POST, "/reload") => {
                let reloader = self.reloader.clone();
                match tokio::task::spawn_blocking(move || reloader.reload()).await {
                    Ok(Ok(report)) => json(
                        StatusCode::OK,
                        serde_json::to_value(report).unwrap_or_default(),
                    ),
                    Ok(Err(e)) => json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({ "error": format!("{e:#}") }),
                    ),
                    Err(_) => json(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        serde_json::json!({ "error": "reload task failed" }),
                    ),
                }
            }
            (Method::POST, "/purge") => self.act(url, |engine, key| {
                engine
                    .purge(key)
                    .map(|done| serde_json::json!({ "purged": done }))
            }),
            (Method::POST, "/pin") => self.act(url, |engine, key| {
                engine
                    .store
                    .set_pinned(key, true)
                    .map(|done| serde_json::json!({ "pinned": done }))
            }),
            (Method::POST, "/unpin") => self.act(url, |engine, key| {
                engine
                    .store
                    .set_pinned(key, false)
                    .map(|done| serde_json::json!({ "unpinned": done }))
            }),
            (
                _,
                "/readyz" | "/metrics" | "/status" | "/cache" | "/verify" | "/purge" | "/pin"
                | "/unpin" | "/channels" | "/channels/sync" | "/reload",
            ) => text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n",
                "text/plain",
            ),
            _ => text(StatusCode::NOT_FOUND, "not found\n", "text/plain"),
        }
    }

    fn act(
        &self,
        url: Option<String>,
        f: impl FnOnce(&Engine, &CacheKey) -> Result<serde_json::Value, outpost_store::StoreError>,
    ) -> Response<Full<Bytes>> {
        let Some(url) = url else {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": "give the object as ?url=http://host/path" }),
            );
        };
        let key = match url
            .parse::<http::Uri>()
            .map_err(|e| e.to_string())
            .and_then(|u| CacheKey::from_uri(&u).map_err(|e| e.to_string()))
        {
            Ok(k) => k,
            Err(e) => return json(StatusCode::BAD_REQUEST, serde_json::json!({ "error": e })),
        };
        match f(&self.engine, &key) {
            Ok(mut v) => {
                v["url"] = serde_json::Value::String(key.to_string());
                json(StatusCode::OK, v)
            }
            Err(e) => json(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({ "error": e.to_string() }),
            ),
        }
    }

    fn cache_list(&self, query: Option<&str>) -> Response<Full<Bytes>> {
        let glob = query
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("glob=")))
            .map(percent_decode);
        let entries = match self.engine.store.list(100_000) {
            Ok(e) => e,
            Err(e) => {
                return json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::json!({ "error": e.to_string() }),
                );
            }
        };
        let objects: Vec<serde_json::Value> = entries
            .into_iter()
            .filter(|e| glob.as_deref().is_none_or(|g| glob_match(g, &e.key)))
            .map(|e| {
                serde_json::json!({
                    "url": e.key,
                    "size": e.present,
                    "length": e.len,
                    "complete": e.complete,
                    "pinned": e.pinned,
                    "hits": e.hits,
                    "sha256": e.sha256,
                    "last_access": e.last_access,
                })
            })
            .collect();
        json(StatusCode::OK, serde_json::json!({ "objects": objects }))
    }

    async fn verify(&self) -> Response<Full<Bytes>> {
        let store = self.engine.store.clone();
        match tokio::task::spawn_blocking(move || store.verify()).await {
            Ok(Ok(report)) => json(
                StatusCode::OK,
                serde_json::json!({
                    "checked": report.checked,
                    "digests_checked": report.digests_checked,
                    "dropped": report.dropped.iter().map(|(url, why)| serde_json::json!({ "url": url, "reason": why })).collect::<Vec<_>>(),
                }),
            ),
            Ok(Err(e)) => json(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({ "error": e.to_string() }),
            ),
            Err(_) => json(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({ "error": "verify task failed" }),
            ),
        }
    }

    /// Starts a sync of one channel, or of all; answers with the run
    /// numbers to wait for.
    fn start_sync(&self, name: Option<String>) -> Response<Full<Bytes>> {
        let names = match name {
            Some(n) => vec![n],
            None => self.channels.names(),
        };
        let mut runs = Vec::new();
        for name in names {
            match self.channels.sync(&name) {
                Ok(run) => runs.push(serde_json::json!({ "channel": name, "run": run })),
                Err(e @ outpost_channel::ChannelError::Unknown(_)) => {
                    return json(
                        StatusCode::NOT_FOUND,
                        serde_json::json!({ "error": e.to_string() }),
                    );
                }
                Err(e) => {
                    return json(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        serde_json::json!({ "error": e.to_string() }),
                    );
                }
            }
        }
        json(StatusCode::ACCEPTED, serde_json::json!({ "runs": runs }))
    }

    fn status(&self) -> Response<Full<Bytes>> {
        let e = &self.engine;
        let s = &e.stats;
        let store = e.store.stats().unwrap_or_default();
        let hits = s.hits.load(Ordering::Relaxed);
        let served = hits
            + s.misses.load(Ordering::Relaxed)
            + s.collapsed.load(Ordering::Relaxed)
            + s.revalidated.load(Ordering::Relaxed)
            + s.stale.load(Ordering::Relaxed)
            + s.passthrough.load(Ordering::Relaxed);
        let fills: Vec<serde_json::Value> = e
            .fills
            .progress()
            .into_iter()
            .map(|(url, present, len)| serde_json::json!({ "url": url, "bytes": present, "length": len }))
            .collect();
        json(
            StatusCode::OK,
            serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "uptime_seconds": self.started.elapsed().as_secs(),
                "listeners": self.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "reverse_origin": e.config.origin.as_ref().map(|o| o.to_string()),
                "cache": {
                    "bytes_used": store.bytes,
                    "bytes_limit": store.max_bytes,
                    "objects": store.objects,
                    "pinned_bytes": store.pinned_bytes,
                    "evictions": store.evictions,
                },
                "requests": {
                    "hit": hits,
                    "miss": s.misses.load(Ordering::Relaxed),
                    "collapsed": s.collapsed.load(Ordering::Relaxed),
                    "revalidated": s.revalidated.load(Ordering::Relaxed),
                    "stale": s.stale.load(Ordering::Relaxed),
                    "passthrough": s.passthrough.load(Ordering::Relaxed),
                    "error": s.errors.load(Ordering::Relaxed),
                },
                "hit_ratio": if served == 0 { 0.0 } else { hits as f64 / served as f64 },
                "wan_bytes": e.fills.stats.wan_bytes.load(Ordering::Relaxed),
                "served_bytes": {
                    "cache": e.served.from_cache.load(Ordering::Relaxed),
                    "fills": e.served.from_fills.load(Ordering::Relaxed),
                    "other": e.served.other.load(Ordering::Relaxed),
                },
                // What clients got from the edge's copies minus what those
                // copies cost on the WAN.
                "modes": outpost_proxy::h1::Mode::ALL.iter().map(|m| serde_json::json!({
                    "mode": m.name(),
                    "requests": e.served.mode_requests[*m as usize].load(Ordering::Relaxed),
                    "bytes": e.served.mode_bytes[*m as usize].load(Ordering::Relaxed),
                })).collect::<Vec<_>>(),
                "wan_saved_bytes": (e.served.from_cache.load(Ordering::Relaxed)
                    + e.served.from_fills.load(Ordering::Relaxed))
                    .saturating_sub(e.fills.stats.wan_bytes.load(Ordering::Relaxed)),
                "active_fills": fills,
                "wan": e.fills.shaper.status(),
                "channels": self.channels.status(),
            }),
        )
    }

    /// `/metrics`, rendered at most once per `METRICS_CACHE` (renders wait
    /// for each other), off the async workers.
    async fn cached_metrics(&self) -> Response<Full<Bytes>> {
        let mut cache = self.metrics_cache.lock().await;
        let body = match cache.as_ref() {
            Some((at, body)) if at.elapsed() < METRICS_CACHE => body.clone(),
            _ => {
                let rendered = tokio::task::block_in_place(|| self.metrics());
                let Some(body) = rendered else {
                    return text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "metrics encoding failed\n",
                        "text/plain",
                    );
                };
                let body = Bytes::from(body);
                *cache = Some((Instant::now(), body.clone()));
                body
            }
        };
        text(
            StatusCode::OK,
            body,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    }

    fn metrics(&self) -> Option<String> {
        let e = &self.engine;
        let s = &e.stats;
        let f = &e.fills.stats;
        let mut registry = Registry::with_prefix("outpost");
        let requests = Family::<Vec<(String, String)>, Counter>::default();
        for (result, value) in [
            ("hit", &s.hits),
            ("miss", &s.misses),
            ("collapsed", &s.collapsed),
            ("revalidated", &s.revalidated),
            ("stale", &s.stale),
            ("passthrough", &s.passthrough),
            ("error", &s.errors),
        ] {
            requests
                .get_or_create(&vec![("result".into(), result.into())])
                .inc_by(value.load(Ordering::Relaxed));
        }
        registry.register("requests", "Client requests by cache result", requests);
        let counter = |v: u64| {
            let c = Counter::<u64>::default();
            c.inc_by(v);
            c
        };
        let gauge = |v: u64| {
            let g = Gauge::<i64>::default();
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
            g
        };
        registry.register(
            "wan_body_bytes",
            "Body bytes fetched from origins",
            counter(f.wan_bytes.load(Ordering::Relaxed)),
        );
        registry.register(
            "upstream_requests",
            "Requests sent to origins",
            counter(f.upstream_requests.load(Ordering::Relaxed) as u64),
        );
        registry.register(
            "upstream_retries",
            "Upstream fetches retried after a drop or an error",
            counter(f.upstream_retries.load(Ordering::Relaxed) as u64),
        );
        registry.register(
            "fills_completed",
            "Objects completed by fills",
            counter(f.completed.load(Ordering::Relaxed) as u64),
        );
        registry.register(
            "fills_active",
            "Fills running now",
            gauge(e.fills.progress().len() as u64),
        );
        if let Ok(store) = e.store.stats() {
            registry.register("cache_bytes", "Bytes of bodies on disk", gauge(store.bytes));
            registry.register(
                "cache_limit_bytes",
                "Configured cache size",
                gauge(store.max_bytes),
            );
            registry.register(
                "cache_objects",
                "Objects in the index",
                gauge(store.objects),
            );
            registry.register(
                "cache_pinned_bytes",
                "Bytes of pinned objects",
                gauge(store.pinned_bytes),
            );
            registry.register(
                "cache_evictions",
                "Objects evicted",
                counter(store.evictions),
            );
        }
        let served = Family::<Vec<(String, String)>, Counter>::default();
        for (source, value) in [
            ("cache", &e.served.from_cache),
            ("fill", &e.served.from_fills),
            ("other", &e.served.other),
        ] {
            served
                .get_or_create(&vec![("source".into(), source.into())])
                .inc_by(value.load(Ordering::Relaxed));
        }
        let mode_requests = Family::<Vec<(String, String)>, Counter>::default();
        let mode_bytes = Family::<Vec<(String, String)>, Counter>::default();
        for mode in outpost_proxy::h1::Mode::ALL {
            let labels = vec![("mode".to_string(), mode.name().to_string())];
            mode_requests
                .get_or_create(&labels)
                .inc_by(e.served.mode_requests[mode as usize].load(Ordering::Relaxed));
            mode_bytes
                .get_or_create(&labels)
                .inc_by(e.served.mode_bytes[mode as usize].load(Ordering::Relaxed));
        }
        registry.register(
            "mode_requests",
            "Proxied requests by how they reached the edge: forward, transparent, reverse",
            mode_requests,
        );
        registry.register(
            "mode_served_bytes",
            "Bytes written to clients by how their requests reached the edge",
            mode_bytes,
        );
        registry.register(
            "served_bytes",
            "Bytes written to clients: from disk (cache), streamed from fills, or other (passthrough, errors)",
            served,
        );
        self.register_wan_and_channels(&mut registry);
        if let Some(log) = e.access_log() {
            registry.register(
                "access_log_dropped_lines",
                "Access log lines dropped because the writer fell behind",
                counter(log.dropped.load(Ordering::Relaxed)),
            );
        }
        let mut out = String::new();
        encode(&mut out, &registry).ok()?;
        Some(out)
    }
}

impl Admin {
    fn register_wan_and_channels(&self, registry: &mut Registry) {
        type Labels = Vec<(String, String)>;
        let wan_bytes = Family::<Labels, Counter>::default();
        let wan_rate = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let wan_limit = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let wan_queued = Family::<Labels, Gauge>::default();
        for class in self.engine.fills.shaper.status() {
            let labels = vec![("class".to_string(), class.class.to_string())];
            wan_bytes.get_or_create(&labels).inc_by(class.bytes_total);
            wan_rate.get_or_create(&labels).set(class.rate);
            wan_limit
                .get_or_create(&labels)
                .set(class.limit.unwrap_or(-1.0));
            wan_queued
                .get_or_create(&labels)
                .set(class.queued_reads as i64);
        }
        registry.register(
            "wan_class_bytes",
            "Upstream body bytes read, by traffic class",
            wan_bytes,
        );
        registry.register(
            "wan_class_rate_bytes_per_second",
            "Upstream read rate over the last 5 s, by traffic class",
            wan_rate,
        );
        registry.register(
            "wan_class_limit_bytes_per_second",
            "Limit in force now, by class (-1: unlimited)",
            wan_limit,
        );
        registry.register(
            "wan_class_queued_reads",
            "Upstream reads waiting for the shaper, by class",
            wan_queued,
        );
        let files = Family::<Labels, Gauge>::default();
        let bytes = Family::<Labels, Gauge>::default();
        let quarantined = Family::<Labels, Gauge>::default();
        let running = Family::<Labels, Gauge>::default();
        let last_ok = Family::<Labels, Gauge>::default();
        let last_finished = Family::<Labels, Gauge>::default();
        for ch in self.channels.status() {
            let with = |k: &str, v: &str| {
                vec![
                    ("channel".to_string(), ch.name.clone()),
                    (k.to_string(), v.to_string()),
                ]
            };
            let name = vec![("channel".to_string(), ch.name.clone())];
            files
                .get_or_create(&with("state", "present"))
                .set(ch.files_present as i64);
            files
                .get_or_create(&with("state", "total"))
                .set(ch.files_total as i64);
            bytes
                .get_or_create(&with("state", "present"))
                .set(ch.bytes_present as i64);
            bytes
                .get_or_create(&with("state", "total"))
                .set(ch.bytes_total as i64);
            quarantined
                .get_or_create(&name)
                .set(ch.quarantined.len() as i64);
            running
                .get_or_create(&name)
                .set(i64::from(ch.running.is_some()));
            if let Some(last) = &ch.last_run {
                last_ok
                    .get_or_create(&name)
                    .set(i64::from(last.result == "ok"));
                last_finished.get_or_create(&name).set(last.finished);
            }
        }
        registry.register("channel_files", "Files of each channel", files);
        registry.register("channel_bytes", "Bytes of each channel", bytes);
        registry.register(
            "channel_quarantined_files",
            "Files refused for a digest mismatch",
            quarantined,
        );
        registry.register("channel_sync_running", "1 while a sync runs", running);
        registry.register(
            "channel_last_sync_ok",
            "1 if the last sync finished without errors",
            last_ok,
        );
        registry.register(
            "channel_last_sync_finished_seconds",
            "Unix time the last sync finished",
            last_finished,
        );
    }
}

/// `*` matches any run of characters (including `/`); everything else
/// matches itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abcdefghijklmnop", b"abcdefghijklmnop"));
        assert!(!constant_time_eq(b"abcdefghijklmnop", b"abcdefghijklmnoq"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn globs() {
        assert!(glob_match("http://h/pkgs/*.msi", "http://h/pkgs/a/b.msi"));
        assert!(!glob_match("http://h/pkgs/*.msi", "http://h/pkgs/b.cab"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("http://h/x", "http://h/x"));
        assert!(glob_match("*a*b*", "xaybz"));
        assert!(!glob_match("*a*b", "xbya"));
    }

    #[test]
    fn decodes_query_values() {
        assert_eq!(percent_decode("http%3A%2F%2Fh%2Fa%20b"), "http://h/a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
