//! The fake origin.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use outpost_http::range::{parse_range_header, resolve_ranges};
use tokio::net::TcpListener;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// One path the origin serves.
#[derive(Clone, Debug)]
pub struct Resource {
    pub body: Bytes,
    /// Extra response headers (Cache-Control, ...).
    pub headers: Vec<(String, String)>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Body bytes per second; `None` = as fast as possible.
    pub rate: Option<u64>,
    /// Drop the connection after this many body bytes, for the next
    /// `drops` responses.
    pub drop_after: Option<u64>,
    pub drops: u32,
    /// Delay before the response head.
    pub latency: Duration,
    /// Honour Range requests.
    pub ranges: bool,
    /// Status for every GET (200 = normal behaviour).
    pub status: StatusCode,
    /// Send the body with chunked encoding (no Content-Length).
    pub chunked: bool,
}

impl Resource {
    pub fn new(body: Bytes) -> Self {
        Self {
            body,
            headers: vec![("cache-control".into(), "public, max-age=86400".into())],
            etag: Some("\"v1\"".into()),
            last_modified: Some("Mon, 02 Nov 2026 10:00:00 GMT".into()),
            rate: None,
            drop_after: None,
            drops: 0,
            latency: Duration::ZERO,
            ranges: true,
            status: StatusCode::OK,
            chunked: false,
        }
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    pub fn no_cache_headers(mut self) -> Self {
        self.headers.clear();
        self
    }
    pub fn etag(mut self, etag: &str) -> Self {
        self.etag = Some(etag.to_string());
        self
    }
    pub fn rate(mut self, bytes_per_sec: u64) -> Self {
        self.rate = Some(bytes_per_sec);
        self
    }
    pub fn drop_after(mut self, bytes: u64, times: u32) -> Self {
        self.drop_after = Some(bytes);
        self.drops = times;
        self
    }
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }
    pub fn without_ranges(mut self) -> Self {
        self.ranges = false;
        self
    }
}

/// What the origin saw.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub status: StatusCode,
    /// Body bytes the origin sent (or started to send) in its answer.
    pub body_bytes_planned: u64,
    /// The request body as received (requests whose body did not arrive
    /// whole are not recorded at all).
    pub body: Bytes,
}

impl RecordedRequest {
    pub fn range(&self) -> Option<&str> {
        self.headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
    }
    pub fn is_conditional(&self) -> bool {
        self.headers.contains_key(header::IF_NONE_MATCH)
            || self.headers.contains_key(header::IF_MODIFIED_SINCE)
    }
}

#[derive(Default)]
struct State {
    resources: Mutex<HashMap<String, Resource>>,
    log: Mutex<Vec<RecordedRequest>>,
    sent_bytes: Mutex<u64>,
}

/// A running fake origin; stops when dropped.
pub struct Origin {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    pub async fn start() -> Self {
        Self::listen(None).await
    }

    /// Accepts connections (through `tls` when given) and serves each with
    /// the recorded resources.
    async fn listen(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let state = Arc::new(State::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(respond(st, req).await) }
                    });
                    let http = http1::Builder::new();
                    let _ = match tls {
                        None => http.serve_connection(TokioIo::new(stream), svc).await,
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(tls) => http.serve_connection(TokioIo::new(tls), svc).await,
                            Err(_) => return,
                        },
                    };
                });
            }
        });
        Self { addr, state, task }
    }

    /// The same origin over TLS, with a fresh self-signed certificate for
    /// `localhost` and 127.0.0.1; returns it and the certificate (PEM) to
    /// trust.
    pub async fn start_tls() -> (Self, String) {
        let certified = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("self-signed certificate");
        let cert_pem = certified.cert.pem();
        let cert = certified.cert.der().clone();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(
            rustls_pki_types::PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()),
        );
        let config = tokio_rustls::rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        (Self::listen(Some(acceptor)).await, cert_pem)
    }

    /// The URL of `path` over TLS (for an origin made by `start_tls`).
    pub fn https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.addr.port(), path)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Serves `resource` at `path` (replacing what was there).
    pub fn put(&self, path: &str, resource: Resource) {
        self.state
            .resources
            .lock()
            .unwrap()
            .insert(path.to_string(), resource);
    }

    pub fn remove(&self, path: &str) {
        self.state.resources.lock().unwrap().remove(path);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.log.lock().unwrap().clone()
    }

    /// Requests for `path` so far.
    pub fn requests_for(&self, path: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    pub fn count(&self, path: &str) -> usize {
        self.requests_for(path).len()
    }

    /// Body bytes actually written to sockets so far (all paths).
    pub fn sent_bytes(&self) -> u64 {
        *self.state.sent_bytes.lock().unwrap()
    }
}

fn text(status: StatusCode, msg: &'static str) -> Response<Body> {
    let mut r = Response::new(
        http_body_util::Full::new(Bytes::from_static(msg.as_bytes()))
            .map_err(|n| match n {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r
}

async fn respond(st: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let (parts, incoming) = req.into_parts();
    let Ok(collected) = incoming.collect().await else {
        return text(StatusCode::BAD_REQUEST, "incomplete request body");
    };
    let request_body = collected.to_bytes();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let method = parts.method.clone();
    let headers = parts.headers.clone();
    let record = |status: StatusCode, planned: u64| {
        st.log.lock().unwrap().push(RecordedRequest {
            method: method.clone(),
            path: path.clone(),
            headers: headers.clone(),
            status,
            body_bytes_planned: planned,
            body: request_body.clone(),
        });
    };
    let resource = {
        let mut resources = st.resources.lock().unwrap();
        match resources.get_mut(&path) {
            Some(r) => {
                let snapshot = r.clone();
                if r.drops > 0 && method == Method::GET {
                    r.drops -= 1;
                }
                Some(snapshot)
            }
            None => None,
        }
    };
    let Some(res) = resource else {
        record(StatusCode::NOT_FOUND, 0);
        return text(StatusCode::NOT_FOUND, "not found");
    };
    if !res.latency.is_zero() {
        tokio::time::sleep(res.latency).await;
    }
    let mut h = HeaderMap::new();
    for (n, v) in &res.headers {
        if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.append(n, v);
        }
    }
    if let Some(e) = &res.etag {
        h.insert(header::ETAG, HeaderValue::from_str(e).unwrap());
    }
    if let Some(lm) = &res.last_modified {
        h.insert(header::LAST_MODIFIED, HeaderValue::from_str(lm).unwrap());
    }
    h.insert(
        header::DATE,
        HeaderValue::from_str(&httpdate::fmt_http_date(std::time::SystemTime::now())).unwrap(),
    );
    if res.status != StatusCode::OK {
        record(res.status, res.body.len() as u64);
        let mut r = Response::new(
            http_body_util::Full::new(res.body.clone())
                .map_err(|n| match n {})
                .boxed_unsync(),
        );
        *r.status_mut() = res.status;
        *r.headers_mut() = h;
        return r;
    }
    // Conditionals.
    let inm = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    let not_modified = match (inm, &res.etag) {
        (Some(list), Some(tag)) => list
            .split(',')
            .any(|t| t.trim().trim_start_matches("W/") == tag.trim_start_matches("W/")),
        (Some(_), None) => false,
        (None, _) => match (headers.get(header::IF_MODIFIED_SINCE), &res.last_modified) {
            (Some(ims), Some(lm)) => {
                ims.to_str()
                    .ok()
                    .and_then(|v| httpdate::parse_http_date(v).ok())
                    >= httpdate::parse_http_date(lm).ok()
            }
            _ => false,
        },
    };
    if not_modified {
        record(StatusCode::NOT_MODIFIED, 0);
        let mut r = text(StatusCode::NOT_MODIFIED, "");
        *r.headers_mut() = h;
        return r;
    }
    let len = res.body.len() as u64;
    let mut status = StatusCode::OK;
    let mut start = 0u64;
    let mut end = len;
    if res.ranges {
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        let if_range_ok = match headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
            None => true,
            Some(v) => Some(v) == res.etag.as_deref() || Some(v) == res.last_modified.as_deref(),
        };
        if let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok())
            && if_range_ok
            && let Ok(specs) = parse_range_header(range)
        {
            match resolve_ranges(&specs, len) {
                Ok(ranges) => {
                    let r = ranges[0];
                    status = StatusCode::PARTIAL_CONTENT;
                    start = r.start;
                    end = r.end;
                    h.insert(
                        header::CONTENT_RANGE,
                        HeaderValue::from_str(&format!("bytes {}-{}/{}", r.start, r.end - 1, len))
                            .unwrap(),
                    );
                }
                Err(_) => {
                    record(StatusCode::RANGE_NOT_SATISFIABLE, 0);
                    let mut r = text(StatusCode::RANGE_NOT_SATISFIABLE, "");
                    h.insert(
                        header::CONTENT_RANGE,
                        HeaderValue::from_str(&format!("bytes */{len}")).unwrap(),
                    );
                    *r.headers_mut() = h;
                    return r;
                }
            }
        }
    }
    record(status, end - start);
    if !res.chunked {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    }
    let body_bytes = res.body.slice(start as usize..end as usize);
    let drop_after = if res.drops > 0 { res.drop_after } else { None };
    let chunk = 16 * 1024;
    let rate = res.rate;
    let body: Body = if method == Method::HEAD {
        http_body_util::Empty::new()
            .map_err(|n| match n {})
            .boxed_unsync()
    } else {
        let st2 = st.clone();
        let s = stream::unfold(
            (0usize, body_bytes, st2),
            move |(pos, data, st)| async move {
                if pos >= data.len() {
                    return None;
                }
                if let Some(limit) = drop_after
                    && pos as u64 >= limit
                {
                    return Some((
                        Err(std::io::Error::other("origin drops the connection")),
                        (data.len(), data, st),
                    ));
                }
                let mut n = chunk.min(data.len() - pos);
                if let Some(limit) = drop_after {
                    n = n.min((limit as usize).saturating_sub(pos)).max(1);
                }
                if let Some(rate) = rate {
                    tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
                }
                *st.sent_bytes.lock().unwrap() += n as u64;
                let frame = Frame::data(data.slice(pos..pos + n));
                Some((Ok(frame), (pos + n, data, st)))
            },
        );
        StreamBody::new(s).boxed_unsync()
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = h;
    r
}
