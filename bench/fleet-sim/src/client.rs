//! Connections to the manager, plain or TLS with the pinned fingerprint,
//! from a chosen loopback source address.
//!
//! A simulated edge does what the real edge's client does: it opens an
//! edge session (`outpost_protocol::session`, one upgraded connection)
//! and sends its long poll, heartbeats and config fetches on it (a
//! [`Link`] shared by its two [`Conn`]s). With `--http2` (over TLS) the
//! calls are HTTP/2 requests on one shared connection instead; with
//! `--http1` each simulated edge owns two HTTP/1.1 connections (one for
//! its long poll, one for heartbeats and config fetches). Enrolment is
//! always a request. Spreading the connections over several source
//! addresses keeps 20,000 of them to one `ip:port` clear of the ephemeral
//! port range's limit (about 28,000 per source address).
//!
//! Invariant: a connection that failed or timed out is dropped, never
//! reused; the next request connects again (counted in [`Counters`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use outpost_manager::http::session_client::{self, Session, SessionError};
use outpost_protocol::session::{SessionCall, WaitArgs};
use outpost_protocol::{FLEET_PROTOCOL, FLEET_PROTOCOL_HEADER};
use rustls_pki_types::ServerName;
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;

/// Where the manager is and how to reach it; shared by every connection.
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header.
    pub authority: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    transport: Transport,
    /// Connections in progress at once, so that 20,000 connects do not
    /// overflow the manager's accept backlog.
    connect_permits: Semaphore,
    pub counters: Counters,
}

/// How a simulated edge's calls travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// An edge session, as the real edge.
    Session,
    /// HTTP/2 requests on one connection per edge (over TLS).
    Http2,
    /// HTTP/1.1 requests on two connections per edge.
    Http1,
}

#[derive(Default)]
pub struct Counters {
    pub connects: AtomicU64,
    pub connect_errors: AtomicU64,
}

impl Target {
    /// `url` is `http://host:port` or `https://host:port`; https needs the
    /// fingerprint.
    pub fn new(
        url: &str,
        fingerprint: Option<&str>,
        connect_concurrency: usize,
        transport: Transport,
    ) -> anyhow::Result<Self> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            bail!("--manager must start with http:// or https://: {url}");
        };
        let authority = rest.trim_end_matches('/').to_owned();
        let addr: SocketAddr = authority
            .parse()
            .with_context(|| format!("--manager must name ip:port, not {authority}"))?;
        let tls = if tls {
            let fingerprint = fingerprint.context("an https manager needs --fingerprint")?;
            let mut config = crate::tls::pinned_client_config(fingerprint)?;
            config.alpn_protocols = if transport == Transport::Http2 {
                vec![b"h2".to_vec(), b"http/1.1".to_vec()]
            } else {
                vec![b"http/1.1".to_vec()]
            };
            let name = ServerName::try_from(addr.ip().to_string())?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        let transport = match transport {
            Transport::Http2 if tls.is_none() => Transport::Http1,
            other => other,
        };
        Ok(Self {
            addr,
            authority,
            transport,
            tls,
            connect_permits: Semaphore::new(connect_concurrency.max(1)),
            counters: Counters::default(),
        })
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether an edge's calls share one connection (a session or
    /// HTTP/2).
    pub fn shares_connection(&self) -> bool {
        self.transport != Transport::Http1
    }

    /// Source addresses to spread connections over: 127.0.0.2 onwards when
    /// the manager listens on loopback, else the system's choice.
    pub fn source_addresses(&self, count: usize) -> Vec<Option<IpAddr>> {
        match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_loopback() && count > 0 => (0..count.min(250))
                .map(|i| Some(IpAddr::from([127, 0, 0, 2 + i as u8])))
                .collect(),
            _ => vec![None],
        }
    }
}

/// A status and a whole body.
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
    /// The request needed a new connection (TCP and TLS handshakes are in
    /// its latency).
    pub new_connection: bool,
}

impl Answer {
    /// The body as `T`, or an error that quotes the status and the body.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<T> {
        if !self.status.is_success() {
            bail!(
                "{}: {}",
                self.status,
                String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
            );
        }
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "unexpected answer: {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
            )
        })
    }
}

/// One edge's shared connection (its session, or HTTP/2), used by its
/// long poll and its other calls; `None` until the first call or after it
/// failed.
pub type Link = Arc<tokio::sync::Mutex<Option<Shared>>>;

#[derive(Clone)]
pub enum Shared {
    Session(Arc<Session>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Shared {
    fn is_closed(&self) -> bool {
        match self {
            Shared::Session(s) => !s.is_open(),
            Shared::Http2(s) => s.is_closed(),
        }
    }
}

/// A path of the edge protocol as a session call and its payload.
fn as_session_call(
    path_and_query: &str,
    body: Option<&Bytes>,
) -> anyhow::Result<(SessionCall, Vec<u8>)> {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    match path {
        "/edge/v1/heartbeat" => Ok((
            SessionCall::Heartbeat,
            body.map(|b| b.to_vec()).unwrap_or_default(),
        )),
        "/edge/v1/config" => Ok((SessionCall::Config, Vec::new())),
        "/edge/v1/wait" => {
            let mut args = WaitArgs {
                config_version: 0,
                after_action: 0,
            };
            for pair in query.split('&') {
                match pair.split_once('=') {
                    Some(("config_version", v)) => args.config_version = v.parse()?,
                    Some(("after_action", v)) => args.after_action = v.parse()?,
                    _ => {}
                }
            }
            Ok((SessionCall::Wait, serde_json::to_vec(&args)?))
        }
        other => bail!("{other} is not a session call"),
    }
}

enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
    Session(Arc<Session>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2(s) => s.is_closed(),
            Sender::Session(s) => !s.is_open(),
        }
    }
}

pub struct Conn {
    source: Option<IpAddr>,
    sender: Option<Sender>,
    /// Set when the edge's calls share an HTTP/2 connection.
    link: Option<Link>,
}

impl Conn {
    pub fn new(source: Option<IpAddr>) -> Self {
        Self {
            source,
            sender: None,
            link: None,
        }
    }

    /// A handle on the edge's shared HTTP/2 connection.
    pub fn shared(source: Option<IpAddr>, link: Link) -> Self {
        Self {
            source,
            sender: None,
            link: Some(link),
        }
    }

    /// Lets an HTTP/1.1 connection go (its task closes the socket once
    /// idle); a shared HTTP/2 connection stays, its long poll holds it.
    pub fn close(&mut self) {
        if self.link.is_none() {
            self.sender = None;
        }
    }

    /// Forgets a connection that failed, for every user of a shared one.
    async fn drop_connection(&mut self) {
        self.sender = None;
        if let Some(link) = &self.link {
            let mut slot = link.lock().await;
            if slot.as_ref().is_some_and(|s| s.is_closed()) {
                *slot = None;
            }
        }
    }

    /// Sends one request; retries once on a fresh connection when a kept
    /// connection turns out closed (the manager's idle timeout racing our
    /// request), which every call here tolerates.
    pub async fn send(
        &mut self,
        target: &Target,
        method: Method,
        path_and_query: &str,
        bearer: Option<&str>,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> anyhow::Result<Answer> {
        let reused = self.sender.as_ref().is_some_and(|s| !s.is_closed());
        let first = tokio::time::timeout(
            timeout,
            self.send_once(target, method.clone(), path_and_query, bearer, body.clone()),
        )
        .await;
        match first {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(e)) if reused => {
                self.drop_connection().await;
                let _ = e;
            }
            Ok(Err(e)) => {
                self.drop_connection().await;
                return Err(e);
            }
            Err(_) => {
                self.drop_connection().await;
                bail!("no answer within {timeout:?}");
            }
        }
        match tokio::time::timeout(
            timeout,
            self.send_once(target, method, path_and_query, bearer, body),
        )
        .await
        {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                self.drop_connection().await;
                Err(e)
            }
            Err(_) => {
                self.drop_connection().await;
                bail!("no answer within {timeout:?}");
            }
        }
    }

    async fn send_once(
        &mut self,
        target: &Target,
        method: Method,
        path_and_query: &str,
        bearer: Option<&str>,
        body: Option<Bytes>,
    ) -> anyhow::Result<Answer> {
        let mut new_connection = false;
        // A session is opened with the edge's credential: before enrolment
        // (no credential) a call is a plain request.
        let link = self
            .link
            .as_ref()
            .filter(|_| bearer.is_some() || target.transport != Transport::Session);
        if let Some(link) = link {
            let mut slot = link.lock().await;
            if slot.as_ref().is_none_or(|s| s.is_closed()) {
                new_connection = true;
                *slot = Some(match connect(target, self.source, bearer).await? {
                    Sender::Http2(sender) => Shared::Http2(sender),
                    Sender::Session(session) => Shared::Session(session),
                    Sender::Http1(_) => bail!("the manager did not take HTTP/2"),
                });
            }
            self.sender = slot.clone().map(|shared| match shared {
                Shared::Http2(sender) => Sender::Http2(sender),
                Shared::Session(session) => Sender::Session(session),
            });
        } else if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            new_connection = true;
            self.sender = Some(connect(target, self.source, None).await?);
        }
        let sender = self
            .sender
            .as_mut()
            .ok_or_else(|| anyhow!("no connection"))?;
        if let Sender::Session(session) = sender {
            let (call, payload) = as_session_call(path_and_query, body.as_ref())?;
            // The caller's own timeout bounds it; this one only keeps the
            // session from waiting for ever on a lost answer.
            let (status, body) = session
                .call(call, &payload, Duration::from_secs(120))
                .await?;
            return Ok(Answer {
                status,
                body: Bytes::from(body),
                new_connection,
            });
        }
        let uri = match (link, target.is_tls()) {
            // HTTP/2 wants the whole URI (its :scheme and :authority).
            (Some(_), true) => format!("https://{}{path_and_query}", target.authority),
            _ => path_and_query.to_owned(),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, &target.authority)
            .header(FLEET_PROTOCOL_HEADER, FLEET_PROTOCOL.to_string());
        if let Some(token) = bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(body))?,
            None => request.body(Full::new(Bytes::new()))?,
        };
        let response = match sender {
            Sender::Http1(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
            Sender::Http2(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
            Sender::Session(_) => unreachable!("answered above"),
        };
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            body,
            new_connection,
        })
    }
}

/// A new connection; a session where the target says so and `credential`
/// is given (an enrolled edge's shared connection).
async fn connect(
    target: &Target,
    source: Option<IpAddr>,
    credential: Option<&str>,
) -> anyhow::Result<Sender> {
    let _permit = target.connect_permits.acquire().await?;
    target.counters.connects.fetch_add(1, Ordering::Relaxed);
    let session = (target.transport == Transport::Session)
        .then_some(credential)
        .flatten();
    let result = connect_unlimited(target, source, session).await;
    if result.is_err() {
        target
            .counters
            .connect_errors
            .fetch_add(1, Ordering::Relaxed);
    }
    result
}

async fn connect_unlimited(
    target: &Target,
    source: Option<IpAddr>,
    session: Option<&str>,
) -> anyhow::Result<Sender> {
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("binding to {ip}"))?;
    }
    let stream = socket
        .connect(target.addr)
        .await
        .with_context(|| format!("connecting to {}", target.addr))?;
    stream.set_nodelay(true)?;
    if let Some(credential) = session {
        let request = session_client::session_request(&target.authority, Some(credential))?;
        let session = match &target.tls {
            None => session_client::upgrade(TokioIo::new(stream), request).await,
            Some((connector, name)) => {
                let stream = connector.connect(name.clone(), stream).await?;
                session_client::upgrade(TokioIo::new(stream), request).await
            }
        };
        return match session {
            Ok(session) => Ok(Sender::Session(Arc::new(session))),
            Err(SessionError::NotOffered { status, body, .. }) => bail!(
                "no session: {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ),
            Err(e) => Err(e.into()),
        };
    }
    match &target.tls {
        None => handshake(TokioIo::new(stream)).await,
        Some((connector, name)) => {
            let stream = connector.connect(name.clone(), stream).await?;
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                let (sender, connection) =
                    http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                return Ok(Sender::Http2(sender));
            }
            handshake(TokioIo::new(stream)).await
        }
    }
}

async fn handshake<IO>(io: IO) -> anyhow::Result<Sender>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(io).await?;
    tokio::spawn(async move {
        // Its end is seen by the sender (is_closed, a failed request).
        let _ = connection.await;
    });
    Ok(Sender::Http1(sender))
}
