//! The client-side HTTP/1.1 connection: request parsing, framing, keep-alive
//! and response writing, with stored objects sent by `sendfile`.
//!
//! Why our own and not hyper's server: a hit must go from the page cache to
//! the socket without passing through user space (hyper has no sendfile), and
//! the front door must reject ambiguous framing (request smuggling) by rules
//! we state and test. Requests are parsed with `httparse`.
//!
//! Framing rules (RFC 9112 section 6): a request with both Transfer-Encoding
//! and Content-Length, with differing Content-Length values, with a transfer
//! coding other than a final `chunked`, or with Transfer-Encoding in
//! HTTP/1.0 is refused and the connection closed. Responses carry
//! Content-Length when the length is known, else chunked encoding (HTTP/1.1)
//! or close-delimited bodies (HTTP/1.0).

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::stream;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header,
};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::access_log::{AccessLog, AccessRecord};
use crate::cache_status::{ByteSource, CacheStatus};
use crate::serve::{EdgeBody, Piece, StreamedBody, error_response};

/// The body of a request as the engine sees it.
pub type ReqBody = StreamedBody;

/// The most header fields `max_headers` can allow.
pub const MAX_HEADERS_LIMIT: usize = 256;

/// Limits of the client side.
#[derive(Debug, Clone)]
pub struct H1Config {
    /// Time to receive a whole request head once its first byte arrived.
    pub header_read_timeout: Duration,
    /// Time an idle keep-alive connection is kept.
    pub idle_timeout: Duration,
    /// Largest request head (request line and headers).
    pub max_head_bytes: usize,
    /// Most header fields in one request.
    pub max_headers: usize,
    /// A request body that stalls this long ends the connection; so does
    /// one that arrives slower, on average, than `body_min_rate` once this
    /// grace period is spent (a body trickled a byte a minute cannot hold a
    /// connection for ever).
    pub body_timeout: Duration,
    /// Bytes per second a request body must average (after
    /// `body_timeout`'s grace); 0 turns the check off.
    pub body_min_rate: u64,
    /// A client that accepts no response byte for this long is cut off.
    pub send_timeout: Duration,
    /// A CONNECT tunnel in which no byte moves either way for this long is
    /// closed (a forgotten TLS session must not hold a slot for ever).
    pub tunnel_idle_timeout: Duration,
}

impl Default for H1Config {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_head_bytes: 64 * 1024,
            max_headers: 100,
            body_timeout: Duration::from_secs(60),
            body_min_rate: 500,
            send_timeout: Duration::from_secs(60),
            tunnel_idle_timeout: Duration::from_secs(600),
        }
    }
}

/// Bytes written to clients, by where the response came from: the savings
/// figure is `from_cache + from_fills` against what the fills fetched.
#[derive(Default)]
pub struct ServedBytes {
    /// Hits, revalidated and stale responses: from disk.
    pub from_cache: std::sync::atomic::AtomicU64,
    /// Responses streamed from a fill (misses, collapsed, partial hits).
    pub from_fills: std::sync::atomic::AtomicU64,
    /// Passed through, errors and the edge's own answers.
    pub other: std::sync::atomic::AtomicU64,
    /// Requests and bytes by the mode they reached the edge in, indexed by
    /// [`Mode`].
    pub mode_requests: [std::sync::atomic::AtomicU64; 3],
    pub mode_bytes: [std::sync::atomic::AtomicU64; 3],
    /// Responses by cache verdict, indexed like [`CacheStatus::ALL`].
    pub by_status: [std::sync::atomic::AtomicU64; CacheStatus::ALL.len()],
}

/// How a request reached the edge; set on the response by the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Forward = 0,
    Transparent = 1,
    Reverse = 2,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Forward, Mode::Transparent, Mode::Reverse];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Forward => "forward",
            Mode::Transparent => "transparent",
            Mode::Reverse => "reverse",
        }
    }
}

impl ServedBytes {
    fn counter(&self, verdict: CacheStatus) -> &std::sync::atomic::AtomicU64 {
        match verdict.source() {
            ByteSource::Cache => &self.from_cache,
            ByteSource::Fill => &self.from_fills,
            ByteSource::Other => &self.other,
        }
    }

    /// Responses sent with each cache verdict.
    pub fn responses(&self) -> impl Iterator<Item = (CacheStatus, u64)> + '_ {
        CacheStatus::ALL
            .into_iter()
            .zip(&self.by_status)
            .map(|(status, n)| (status, n.load(std::sync::atomic::Ordering::Relaxed)))
    }
}

/// The URL to log for a request (the origin URL it was routed to), when the
/// router knows it; otherwise the request target is logged.
#[derive(Clone)]
pub struct LogUrl(pub String);

/// Marks a response whose connection becomes a byte tunnel to this stream
/// once the 200 is written (CONNECT). (Extensions must be `Clone`; the
/// stream is taken out exactly once.)
#[derive(Clone)]
pub struct Tunnel(std::sync::Arc<std::sync::Mutex<Option<TcpStream>>>);

impl Tunnel {
    pub fn new(stream: TcpStream) -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(Some(stream))))
    }

    fn take(&self) -> Option<TcpStream> {
        self.0.lock().ok()?.take()
    }
}

/// Why a request head was refused: the status to answer, and why.
#[derive(Debug)]
pub struct Refusal(pub StatusCode, pub &'static str);

/// How a request's body is delimited.
#[derive(Debug)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    send_timeout: Duration,
    tunnel_idle_timeout: Duration,
    /// Body bytes of the current response that reached the socket.
    body_bytes_sent: u64,
}

/// Serves requests on `stream` until the client closes, an error, or
/// `shutdown` (between requests).
pub async fn serve<F, Fut>(
    stream: TcpStream,
    config: &H1Config,
    shutdown: CancellationToken,
    log: Option<(&AccessLog, IpAddr)>,
    served: &ServedBytes,
    handler: F,
) where
    F: Fn(Request<ReqBody>) -> Fut,
    Fut: Future<Output = Response<EdgeBody>>,
{
    let mut conn = Conn {
        stream,
        buf: BytesMut::with_capacity(8 * 1024),
        send_timeout: config.send_timeout,
        tunnel_idle_timeout: config.tunnel_idle_timeout,
        body_bytes_sent: 0,
    };
    // One registration for the connection's life, not one per request.
    let stopping = shutdown.cancelled();
    tokio::pin!(stopping);
    loop {
        let head = tokio::select! {
            h = conn.read_head(config) => h,
            _ = &mut stopping => return,
        };
        let (parts, framing) = match head {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(Ok(Refusal(status, why))) => {
                tracing::debug!(%status, why, "refusing request");
                let resp = error_response(status, why);
                let _ = conn
                    .write_response(&Method::GET, Version::HTTP_11, false, resp)
                    .await;
                return;
            }
            Err(Err(_)) => return,
        };
        tracing::trace!(method = %parts.method, uri = %parts.uri, "request head read");
        let started = std::time::Instant::now();
        let logged = log.map(|_| (parts.method.to_string(), parts.uri.to_string()));
        let keep_alive = wants_keep_alive(&parts);
        let method = parts.method.clone();
        let version = parts.version;
        let expects_continue = parts
            .headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let (body, pump) = match framing {
            Framing::None => (crate::serve::empty_streamed(), None),
            framing => {
                let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
                let s = stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|item| (item.map(Frame::data), rx))
                });
                (StreamBody::new(s).boxed_unsync(), Some((framing, tx)))
            }
        };
        let req = Request::from_parts(parts, body);
        let (resp, body_ok) = match pump {
            None => (handler(req).await, true),
            Some((framing, tx)) => {
                let pump = conn.pump_body(framing, tx, expects_continue, config);
                let (resp, ok) = tokio::join!(handler(req), pump);
                (resp, ok)
            }
        };
        let mut resp = resp;
        if let Some(upstream) = resp
            .extensions_mut()
            .remove::<Tunnel>()
            .and_then(|t| t.take())
        {
            conn.tunnel(upstream).await;
            return;
        }
        // The engine marks its responses; the rest are the edge's own.
        let verdict = resp
            .extensions()
            .get::<CacheStatus>()
            .copied()
            .unwrap_or_else(|| CacheStatus::unmarked(method.as_str(), resp.status().as_u16()));
        let facts = logged.map(|(m, uri)| {
            let url = resp
                .extensions()
                .get::<LogUrl>()
                .map_or(uri, |u| u.0.clone());
            let content_type = resp
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            (m, url, resp.status().as_u16(), content_type)
        });
        let source = served.counter(verdict);
        if let Some(n) = CacheStatus::ALL
            .iter()
            .position(|s| *s == verdict)
            .and_then(|i| served.by_status.get(i))
        {
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mode = resp.extensions().get::<Mode>().copied();
        if mode == Some(Mode::Reverse) {
            // Addressed to the surrogate, which the edge is for its sites;
            // kept in the store for revalidation, never shown to PCs.
            resp.headers_mut().remove("surrogate-control");
        }
        conn.body_bytes_sent = 0;
        let keep_open = conn
            .write_response(&method, version, keep_alive && body_ok, resp)
            .await
            .unwrap_or(false);
        // Counted even when the client went away part way.
        let sent = conn.body_bytes_sent;
        source.fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
        if let Some(mode) = mode {
            use std::sync::atomic::Ordering::Relaxed;
            served.mode_requests[mode as usize].fetch_add(1, Relaxed);
            served.mode_bytes[mode as usize].fetch_add(sent, Relaxed);
        }
        if let (Some((log, client)), Some((m, url, status, ctype))) = (log, facts) {
            log.record(&AccessRecord {
                client,
                method: &m,
                url: &url,
                status,
                bytes: sent,
                elapsed: started.elapsed(),
                result: verdict,
                content_type: ctype.as_deref(),
            });
        }
        if !keep_open {
            return;
        }
    }
}

fn wants_keep_alive(parts: &http::request::Parts) -> bool {
    let tokens = |name| {
        parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    let connection = tokens(header::CONNECTION);
    if connection.iter().any(|t| t == "close") {
        return false;
    }
    parts.version == Version::HTTP_11 || connection.iter().any(|t| t == "keep-alive")
}

impl Conn {
    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(8 * 1024);
        }
        self.stream.read_buf(&mut self.buf).await
    }

    /// Reads and checks one request head. `Ok(None)`: the client closed
    /// between requests (or stayed idle too long).
    async fn read_head(
        &mut self,
        config: &H1Config,
    ) -> Result<Option<(http::request::Parts, Framing)>, Result<Refusal, io::Error>> {
        // Tolerate empty lines between requests (RFC 9112 section 2.2), but
        // as the start of a request: the first byte, blank or not, starts
        // the head's deadline, and the idle deadline is fixed when the wait
        // begins. A client sending bare CRLFs cannot hold the connection.
        let idle_deadline = tokio::time::Instant::now() + config.idle_timeout;
        let mut deadline = None;
        loop {
            if !self.buf.is_empty() {
                deadline.get_or_insert_with(|| {
                    tokio::time::Instant::now() + config.header_read_timeout
                });
            }
            while self.buf.starts_with(b"\r\n") || self.buf.starts_with(b"\n") {
                let n = if self.buf.starts_with(b"\r\n") { 2 } else { 1 };
                self.buf.advance(n);
            }
            if !self.buf.is_empty() {
                match parse_request_head(&self.buf, config) {
                    Ok(Some((parts, framing, n))) => {
                        self.buf.advance(n);
                        return Ok(Some((parts, framing)));
                    }
                    Ok(None) => {}
                    Err(refusal) => return Err(Ok(refusal)),
                }
            }
            let wait = deadline.unwrap_or(idle_deadline);
            match tokio::time::timeout_at(wait, self.fill()).await {
                Ok(Ok(0)) if self.buf.is_empty() => return Ok(None),
                Ok(Ok(0)) => return Err(Err(io::ErrorKind::UnexpectedEof.into())),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(Err(e)),
                Err(_) if deadline.is_none() => return Ok(None),
                Err(_) => {
                    return Err(Ok(Refusal(
                        StatusCode::REQUEST_TIMEOUT,
                        "request head not received in time",
                    )));
                }
            }
        }
    }

    /// Reads the request body from the connection into `tx`. Returns whether
    /// the connection is still in sync (the whole body was read).
    async fn pump_body(
        &mut self,
        framing: Framing,
        tx: mpsc::Sender<io::Result<Bytes>>,
        expects_continue: bool,
        config: &H1Config,
    ) -> bool {
        let mut clock = BodyClock::new(
            config.body_timeout,
            config.body_min_rate,
            tokio::time::Instant::now(),
        );
        if expects_continue
            && self
                .stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return false;
        }
        let mut tx = Some(tx);
        let result = match framing {
            Framing::None => Ok(()),
            Framing::Length(n) => self.pump_exact(n, &mut tx, &mut clock).await,
            Framing::Chunked => self.pump_chunked(&mut tx, &mut clock).await,
        };
        if let Err(e) = result {
            if let Some(tx) = tx {
                let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string()))).await;
            }
            return false;
        }
        true
    }

    async fn send(tx: &mut Option<mpsc::Sender<io::Result<Bytes>>>, data: Bytes) {
        if let Some(sender) = tx
            && sender.send(Ok(data)).await.is_err()
        {
            // The handler no longer wants the body: keep reading it so the
            // next request on this connection starts at the right byte.
            *tx = None;
        }
    }

    async fn fill_timeout(&mut self, clock: &mut BodyClock) -> io::Result<()> {
        let Some(limit) = clock.wait_limit(tokio::time::Instant::now()) else {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request body arriving too slowly",
            ));
        };
        match tokio::time::timeout(limit, self.fill()).await {
            Ok(Ok(0)) => Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(Ok(n)) => {
                clock.received(n);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request body stalled",
            )),
        }
    }

    async fn pump_exact(
        &mut self,
        mut left: u64,
        tx: &mut Option<mpsc::Sender<io::Result<Bytes>>>,
        clock: &mut BodyClock,
    ) -> io::Result<()> {
        while left > 0 {
            if self.buf.is_empty() {
                self.fill_timeout(clock).await?;
            }
            let n = (self.buf.len() as u64).min(left) as usize;
            let data = self.buf.split_to(n).freeze();
            left -= n as u64;
            Self::send(tx, data).await;
        }
        Ok(())
    }

    async fn pump_chunked(
        &mut self,
        tx: &mut Option<mpsc::Sender<io::Result<Bytes>>>,
        clock: &mut BodyClock,
    ) -> io::Result<()> {
        let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.buf.advance(used);
                        break size;
                    }
                    Ok(httparse::Status::Partial) => {
                        if self.buf.len() > 1024 {
                            return Err(invalid("chunk size line too long"));
                        }
                        self.fill_timeout(clock).await?;
                    }
                    Err(_) => return Err(invalid("invalid chunk size")),
                }
            };
            if size == 0 {
                // Trailer section: skip fields until the empty line.
                loop {
                    if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        let line_empty = pos == 0;
                        self.buf.advance(pos + 2);
                        if line_empty {
                            return Ok(());
                        }
                    } else {
                        if self.buf.len() > 8192 {
                            return Err(invalid("trailer too large"));
                        }
                        self.fill_timeout(clock).await?;
                    }
                }
            }
            self.pump_exact(size, tx, clock).await?;
            while self.buf.len() < 2 {
                self.fill_timeout(clock).await?;
            }
            if &self.buf[..2] != b"\r\n" {
                return Err(invalid("chunk not followed by CRLF"));
            }
            self.buf.advance(2);
        }
    }

    /// Writes a response (counting body bytes in `body_bytes_sent`).
    /// Returns whether the connection can serve another request.
    async fn write_response(
        &mut self,
        method: &Method,
        version: Version,
        keep_alive: bool,
        resp: Response<EdgeBody>,
    ) -> io::Result<bool> {
        let (parts, body) = resp.into_parts();
        let status = parts.status;
        let bodiless = *method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let declared_len = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let known_len = match &body {
            EdgeBody::Empty => Some(0),
            EdgeBody::Full(b) => Some(b.len() as u64),
            _ => None,
        };
        let length = declared_len.or(known_len);
        let chunked = !bodiless && length.is_none() && version == Version::HTTP_11;
        let keep_alive = keep_alive && (bodiless || length.is_some() || chunked);

        let mut head = BytesMut::with_capacity(512);
        head.extend_from_slice(b"HTTP/1.1 ");
        head.extend_from_slice(status.as_str().as_bytes());
        head.extend_from_slice(b" ");
        head.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
        head.extend_from_slice(b"\r\n");
        for (name, value) in parts.headers.iter() {
            if matches!(
                name.as_str(),
                "connection" | "keep-alive" | "transfer-encoding" | "content-length"
            ) {
                continue;
            }
            put_header(&mut head, name, value);
        }
        if let Some(len) = length
            && (!bodiless || declared_len.is_some())
            && status != StatusCode::NO_CONTENT
            && !status.is_informational()
        {
            put_header(&mut head, &header::CONTENT_LENGTH, &HeaderValue::from(len));
        }
        if chunked {
            head.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        if !keep_alive {
            head.extend_from_slice(b"connection: close\r\n");
        } else if version == Version::HTTP_10 {
            head.extend_from_slice(b"connection: keep-alive\r\n");
        }
        head.extend_from_slice(b"\r\n");

        if bodiless {
            write_within(&mut self.stream, &head, self.send_timeout).await?;
            return Ok(keep_alive);
        }
        let mut writer = BodyWriter {
            stream: &mut self.stream,
            head: Some(head),
            chunked,
            sent: &mut self.body_bytes_sent,
            send_timeout: self.send_timeout,
        };
        let complete = match body {
            EdgeBody::Empty => {
                writer.data(Bytes::new()).await?;
                true
            }
            EdgeBody::Full(b) => {
                writer.data(b).await?;
                true
            }
            EdgeBody::Stream(mut s) => loop {
                match s.frame().await {
                    None => break true,
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            writer.data(data).await?;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "response body failed; closing the connection");
                        break false;
                    }
                }
            },
            EdgeBody::Object(obj) if obj.is_complete() => {
                // Every byte is on disk: cork the socket so the head and the
                // file data leave in full segments (nginx's tcp_nopush).
                let sock = socket2::SockRef::from(&*writer.stream);
                let _ = sock.set_tcp_cork(true);
                let result = send_object(&mut writer, obj).await;
                let _ = socket2::SockRef::from(&*writer.stream).set_tcp_cork(false);
                result?
            }
            EdgeBody::Object(obj) => {
                // The head goes out at once: the first bytes of a fill may
                // be a round trip away, and a client should not wait for them
                // to see the response start.
                writer.flush_head().await?;
                send_object(&mut writer, obj).await?
            }
        };
        writer.flush_head().await?;
        let sent = *writer.sent;
        if !complete {
            return Ok(false);
        }
        if let Some(len) = length
            && sent != len
        {
            tracing::warn!(
                declared = len,
                sent,
                "body length differs from Content-Length; closing"
            );
            return Ok(false);
        }
        if chunked {
            write_within(&mut self.stream, b"0\r\n\r\n", self.send_timeout).await?;
        }
        Ok(keep_alive)
    }

    /// Splices the client connection and `upstream` (CONNECT), after the 200.
    async fn tunnel(mut self, mut upstream: TcpStream) {
        if self
            .stream
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        if !self.buf.is_empty() && upstream.write_all(&self.buf).await.is_err() {
            return;
        }
        let start = Instant::now();
        let moved = AtomicU64::new(0);
        let mut client = Watched {
            inner: &mut self.stream,
            moved: &moved,
            start,
        };
        let mut server = Watched {
            inner: &mut upstream,
            moved: &moved,
            start,
        };
        let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
        tokio::pin!(copy);
        loop {
            let idle_since = start + Duration::from_millis(moved.load(Relaxed));
            tokio::select! {
                _ = &mut copy => return,
                _ = tokio::time::sleep_until((idle_since + self.tunnel_idle_timeout).into()) => {
                    let idle_since = start + Duration::from_millis(moved.load(Relaxed));
                    if idle_since.elapsed() >= self.tunnel_idle_timeout {
                        tracing::debug!(idle = ?self.tunnel_idle_timeout, "tunnel idle; closed");
                        return;
                    }
                }
            }
        }
    }
}

/// A tunnel end that notes when bytes last arrived (milliseconds after
/// `start`), so that an idle tunnel can be closed.
struct Watched<'a, S> {
    inner: &'a mut S,
    moved: &'a AtomicU64,
    start: Instant,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<'_, S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut *self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let now = self.start.elapsed().as_millis() as u64;
            self.moved.fetch_max(now, Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<'_, S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

fn put_header(head: &mut BytesMut, name: &HeaderName, value: &HeaderValue) {
    head.extend_from_slice(name.as_str().as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value.as_bytes());
    head.extend_from_slice(b"\r\n");
}

/// When a request body must have arrived by: no read may wait longer than
/// `stall`, and the whole body must average `min_rate` bytes per second
/// after a first `stall` of grace (each byte received extends the deadline,
/// as Apache's mod_reqtimeout MinRate does).
#[derive(Debug, Clone, Copy)]
struct BodyClock {
    stall: Duration,
    min_rate: u64,
    deadline: tokio::time::Instant,
}

impl BodyClock {
    fn new(stall: Duration, min_rate: u64, now: tokio::time::Instant) -> Self {
        Self {
            stall,
            min_rate,
            deadline: now + stall,
        }
    }

    fn received(&mut self, bytes: usize) {
        if self.min_rate > 0 {
            self.deadline += Duration::from_secs_f64(bytes as f64 / self.min_rate as f64);
        }
    }

    /// How long the next read may wait, or `None` when the body is late.
    fn wait_limit(&self, now: tokio::time::Instant) -> Option<Duration> {
        if self.min_rate == 0 {
            return Some(self.stall);
        }
        let left = self.deadline.saturating_duration_since(now);
        (!left.is_zero()).then(|| left.min(self.stall))
    }
}

/// Writes a body after the head, coalescing the head with small first data.
struct BodyWriter<'a> {
    stream: &'a mut TcpStream,
    head: Option<BytesMut>,
    chunked: bool,
    sent: &'a mut u64,
    /// A client that takes no byte for this long is cut off.
    send_timeout: Duration,
}

impl BodyWriter<'_> {
    async fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        write_within(self.stream, buf, self.send_timeout).await
    }

    async fn flush_head(&mut self) -> io::Result<()> {
        if let Some(head) = self.head.take() {
            self.write(&head).await?;
            tracing::trace!("response head written");
        }
        Ok(())
    }

    async fn data(&mut self, data: Bytes) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        *self.sent += data.len() as u64;
        let mut out = self.head.take().unwrap_or_default();
        if self.chunked {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        if out.len() + data.len() <= 64 * 1024 {
            out.extend_from_slice(&data);
            if self.chunked {
                out.extend_from_slice(b"\r\n");
            }
            return self.write(&out).await;
        }
        if !out.is_empty() {
            self.write(&out).await?;
        }
        self.write(&data).await?;
        if self.chunked {
            self.write(b"\r\n").await?;
        }
        Ok(())
    }

    async fn file(&mut self, file: &std::fs::File, offset: u64, len: u64) -> io::Result<()> {
        if self.chunked {
            let mut out = self.head.take().unwrap_or_default();
            out.extend_from_slice(format!("{len:x}\r\n").as_bytes());
            self.write(&out).await?;
        } else {
            self.flush_head().await?;
        }
        sendfile_all(self.stream, file, offset, len, self.send_timeout, self.sent).await?;
        if self.chunked {
            self.write(b"\r\n").await?;
        }
        Ok(())
    }
}

/// Sends an object body; `Ok(false)` if it failed part way (the connection
/// must then be closed: the declared length cannot be met).
async fn send_object(
    writer: &mut BodyWriter<'_>,
    mut obj: Box<crate::serve::ObjectStream>,
) -> io::Result<bool> {
    loop {
        match obj.next_piece().await {
            Ok(None) => return Ok(true),
            Ok(Some(Piece::Data(data))) => writer.data(data).await?,
            Ok(Some(Piece::File { file, offset, len })) => writer.file(&file, offset, len).await?,
            Err(e) => {
                tracing::info!(error = %e, "object body failed; closing the connection");
                return Ok(false);
            }
        }
    }
}

/// Writes all of `buf`, unless the client takes nothing for `stall`.
async fn write_within(stream: &mut TcpStream, buf: &[u8], stall: Duration) -> io::Result<()> {
    let mut rest = buf;
    while !rest.is_empty() {
        match tokio::time::timeout(stall, stream.write(rest)).await {
            Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => rest = &rest[n..],
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(client_stalled()),
        }
    }
    Ok(())
}

fn client_stalled() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "client stopped reading")
}

/// Sends `len` bytes of `file` from `offset` to the socket, unless the
/// client takes nothing for `stall`.
async fn sendfile_all(
    stream: &TcpStream,
    file: &std::fs::File,
    mut offset: u64,
    mut len: u64,
    stall: Duration,
    sent: &mut u64,
) -> io::Result<()> {
    while len > 0 {
        tokio::time::timeout(stall, stream.writable())
            .await
            .map_err(|_| client_stalled())??;
        let count = len.min(1 << 30) as usize;
        match stream.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(stream, file, Some(&mut offset), count).map_err(io::Error::from)
        }) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "object file shorter than its extents",
                ));
            }
            Ok(n) => {
                len -= n as u64;
                *sent += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Parses one request head at the start of `buf`: `Ok(None)` while it is
/// incomplete, the head, its body framing and its length in bytes once it
/// is complete, or the refusal to answer. Pure, so that it can be fuzzed.
pub fn parse_request_head(
    buf: &[u8],
    config: &H1Config,
) -> Result<Option<(http::request::Parts, Framing, usize)>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS_LIMIT];
    let mut req =
        httparse::Request::new(&mut headers[..config.max_headers.clamp(1, MAX_HEADERS_LIMIT)]);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            let (parts, framing) = build_parts(&req)?;
            Ok(Some((parts, framing, n)))
        }
        Ok(httparse::Status::Partial) if buf.len() >= config.max_head_bytes => Err(Refusal(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request head too large",
        )),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(Refusal(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "too many header fields",
        )),
        Err(_) => Err(Refusal(StatusCode::BAD_REQUEST, "malformed request")),
    }
}

/// Builds the request head and decides its body framing, refusing anything
/// ambiguous.
fn build_parts(
    req: &httparse::Request<'_, '_>,
) -> Result<(http::request::Parts, Framing), Refusal> {
    let bad = |why| Refusal(StatusCode::BAD_REQUEST, why);
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| bad("invalid method"))?;
    let target = req.path.unwrap_or("");
    if target.len() > 16 * 1024 {
        return Err(Refusal(StatusCode::URI_TOO_LONG, "request target too long"));
    }
    let uri: Uri = target.parse().map_err(|_| bad("invalid request target"))?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => {
            return Err(Refusal(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "unsupported HTTP version",
            ));
        }
    };
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad("invalid header name"))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| bad("invalid header value"))?;
        headers.append(name, value);
    }
    let hosts = headers.get_all(header::HOST).iter().count();
    if hosts > 1 || (version == Version::HTTP_11 && hosts == 0) {
        return Err(bad("exactly one Host header is required"));
    }
    let te: Vec<String> = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .map(|v| {
            v.to_str()
                .map(|s| s.to_string())
                .map_err(|_| bad("invalid Transfer-Encoding"))
        })
        .collect::<Result<_, _>>()?;
    let cl: Vec<&HeaderValue> = headers.get_all(header::CONTENT_LENGTH).iter().collect();
    let framing = if !te.is_empty() {
        if !cl.is_empty() {
            return Err(bad("both Transfer-Encoding and Content-Length"));
        }
        if version == Version::HTTP_10 {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        let codings: Vec<String> = te
            .iter()
            .flat_map(|v| v.split(','))
            .map(|c| c.trim().to_ascii_lowercase())
            .collect();
        match codings.as_slice() {
            [only] if only == "chunked" => Framing::Chunked,
            list if list.last().map(String::as_str) != Some("chunked") => {
                return Err(bad("chunked is not the final transfer coding"));
            }
            _ => {
                return Err(Refusal(
                    StatusCode::NOT_IMPLEMENTED,
                    "unsupported transfer coding",
                ));
            }
        }
    } else if !cl.is_empty() {
        let mut length: Option<u64> = None;
        for value in cl {
            for part in value
                .to_str()
                .map_err(|_| bad("invalid Content-Length"))?
                .split(',')
            {
                let part = part.trim();
                if part.is_empty() || part.len() > 19 || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("invalid Content-Length"));
                }
                let n: u64 = part.parse().map_err(|_| bad("invalid Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(bad("conflicting Content-Length values"));
                }
                length = Some(n);
            }
        }
        match length {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    } else {
        Framing::None
    };
    let mut builder = Request::builder().method(method).uri(uri).version(version);
    if let Some(h) = builder.headers_mut() {
        *h = headers;
    }
    let (parts, ()) = builder
        .body(())
        .map_err(|_| bad("invalid request"))?
        .into_parts();
    Ok((parts, framing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_must_average_the_minimum_rate_after_its_grace() {
        let start = tokio::time::Instant::now();
        let secs = |s: f64| start + Duration::from_secs_f64(s);
        let mut clock = BodyClock::new(Duration::from_secs(10), 1000, start);
        assert_eq!(clock.wait_limit(start), Some(Duration::from_secs(10)));
        // 100 B/s: each byte buys 1 ms, so the deadline creeps from 10 s.
        for second in 1..=10 {
            clock.received(100);
            assert!(clock.wait_limit(secs(second as f64)).is_some());
        }
        assert_eq!(clock.wait_limit(secs(11.0)), None, "too slow on average");
        // 2000 B/s keeps ahead for as long as it lasts.
        let mut fast = BodyClock::new(Duration::from_secs(10), 1000, start);
        for second in 1..=1000 {
            fast.received(2000);
            assert_eq!(
                fast.wait_limit(secs(second as f64)),
                Some(Duration::from_secs(10)),
                "a read may still wait the stall limit, no more"
            );
        }
        let off = BodyClock::new(Duration::from_secs(10), 0, start);
        assert_eq!(off.wait_limit(secs(1e6)), Some(Duration::from_secs(10)));
    }
}
