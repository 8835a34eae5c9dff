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
use crate::cache_status::CacheStatus;
use crate::serve::{EdgeBody, Piece, StreamedBody, error_response};

mod parse;
mod served;
mod write;

pub use parse::parse_request_head;
pub use served::{LibraryWay, Mode, ServedBytes, source_index};
use write::write_within;

/// The body of a request as the engine sees it.
pub type ReqBody = StreamedBody;

/// The most header fields `max_headers` can allow.
pub const MAX_HEADERS_LIMIT: usize = 256;

/// Limits of the client side.
#[derive(Debug, Clone, PartialEq)]
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
        // Draining: a request already buffered must not start a new
        // response (or a new fill) once the edge is stopping.
        let head = tokio::select! {
            biased;
            _ = &mut stopping => return,
            h = conn.read_head(config) => h,
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
            // Interim responses only to HTTP/1.1 (RFC 9110 section 15.2), and
            // only while no request body is being read from the socket.
            None if version == Version::HTTP_11 => {
                // Boxed: the handler's future is large, and the interim
                // wrapper would otherwise copy it several times per request
                // (a tenth of a 4 KiB hit's CPU, measured with perf).
                match conn.handle_with_interim(Box::pin(handler(req))).await {
                    Some(resp) => (resp, true),
                    // A 1xx was cut off part way: whatever follows would be
                    // read as the rest of it.
                    None => return,
                }
            }
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
        let way = resp.extensions().get::<LibraryWay>().copied();
        if mode == Some(Mode::Reverse) {
            // Addressed to the surrogate, which the edge is for its sites;
            // kept in the store for revalidation, never shown to PCs.
            resp.headers_mut().remove("surrogate-control");
        }
        conn.body_bytes_sent = 0;
        // A response finishing during the drain says so, so that the client
        // does not send its next request into a closing connection.
        let keep_alive = keep_alive && body_ok && !shutdown.is_cancelled();
        let keep_open = conn
            .write_response(&method, version, keep_alive, resp)
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
        if let Some(way) = way {
            use std::sync::atomic::Ordering::Relaxed;
            let from = source_index(verdict.source());
            served.library_requests[way as usize][from].fetch_add(1, Relaxed);
            served.library_bytes[way as usize][from].fetch_add(sent, Relaxed);
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

    /// Runs `handling` (a request's handler) with a sink for interim
    /// responses, writing each to the client as it comes and before the
    /// final response. `None` when writing one failed (a client that stops
    /// reading, a stall past the send timeout): the connection must then be
    /// closed, as a final response after half an interim one would be
    /// misread.
    async fn handle_with_interim<Fut>(&mut self, handling: Fut) -> Option<Response<EdgeBody>>
    where
        Fut: Future<Output = Response<EdgeBody>>,
    {
        let (sink, mut interim) = crate::interim::channel();
        let handling = crate::interim::scope(Some(sink), handling);
        tokio::pin!(handling);
        let mut writable = true;
        loop {
            tokio::select! {
                biased;
                Some(head) = interim.recv(), if writable => {
                    writable = self.write_interim(&head).await;
                }
                resp = &mut handling => {
                    // Heads the origin sent before its final response are
                    // already queued: they go first.
                    while writable && let Some(head) = interim.try_recv() {
                        writable = self.write_interim(&head).await;
                    }
                    return writable.then_some(resp);
                }
            }
        }
    }

    /// Writes one interim head; false when the client cannot take it.
    async fn write_interim(&mut self, head: &crate::interim::InterimHead) -> bool {
        let bytes = crate::interim::encode(head);
        write_within(&mut self.stream, &bytes, self.send_timeout)
            .await
            .is_ok()
    }
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
