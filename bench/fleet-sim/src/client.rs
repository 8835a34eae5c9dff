//! One keep-alive HTTP/1.1 connection to the manager, plain or TLS with
//! the pinned fingerprint, from a chosen loopback source address.
//!
//! Each simulated edge owns two of these (one for its long poll, one for
//! heartbeats and config fetches), as a real edge would keep its
//! connections open. Spreading the connections over several source
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
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
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
    /// Connections in progress at once, so that 20,000 connects do not
    /// overflow the manager's accept backlog.
    connect_permits: Semaphore,
    pub counters: Counters,
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
            let config = crate::tls::pinned_client_config(fingerprint)?;
            let name = ServerName::try_from(addr.ip().to_string())?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Self {
            addr,
            authority,
            tls,
            connect_permits: Semaphore::new(connect_concurrency.max(1)),
            counters: Counters::default(),
        })
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
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

pub struct Conn {
    source: Option<IpAddr>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub fn new(source: Option<IpAddr>) -> Self {
        Self {
            source,
            sender: None,
        }
    }

    /// Lets the connection go (its task closes the socket once idle).
    pub fn close(&mut self) {
        self.sender = None;
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
                self.sender = None;
                let _ = e;
            }
            Ok(Err(e)) => {
                self.sender = None;
                return Err(e);
            }
            Err(_) => {
                self.sender = None;
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
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
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
        let new_connection = self.sender.as_ref().is_none_or(|s| s.is_closed());
        if new_connection {
            self.sender = Some(connect(target, self.source).await?);
        }
        let sender = self
            .sender
            .as_mut()
            .ok_or_else(|| anyhow!("no connection"))?;
        sender.ready().await?;
        let mut request = Request::builder()
            .method(method)
            .uri(path_and_query)
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
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            body,
            new_connection,
        })
    }
}

async fn connect(
    target: &Target,
    source: Option<IpAddr>,
) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let _permit = target.connect_permits.acquire().await?;
    target.counters.connects.fetch_add(1, Ordering::Relaxed);
    let result = connect_unlimited(target, source).await;
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
) -> anyhow::Result<SendRequest<Full<Bytes>>> {
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
    match &target.tls {
        None => handshake(TokioIo::new(stream)).await,
        Some((connector, name)) => {
            let stream = connector.connect(name.clone(), stream).await?;
            handshake(TokioIo::new(stream)).await
        }
    }
}

async fn handshake<IO>(io: IO) -> anyhow::Result<SendRequest<Full<Bytes>>>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        // Its end is seen by the sender (is_closed, a failed request).
        let _ = connection.await;
    });
    Ok(sender)
}
