//! The upstream (WAN side) HTTP client: pooled keep-alive connections, http
//! and https (rustls, OS trust store), with a deadline on response headers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use outpost_shaper::Class;

use crate::destination::{DestinationGuard, GuardedConnector};

pub type UpstreamBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// The body of a request that has none (GET, HEAD).
pub fn empty_body() -> UpstreamBody {
    use http_body_util::BodyExt;
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// What went wrong with an upstream exchange, as an admin reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Nothing listens on the origin's port (or a firewall rejects).
    ConnectionRefused,
    /// No connection, or no response headers, in time.
    TimedOut,
    /// The origin's name does not resolve.
    NameNotResolved,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// The connection was reset or broken under the exchange.
    ConnectionReset,
    /// The origin closed the connection before a complete response head.
    ClosedEarly,
    /// The origin's response could not be parsed as HTTP/1.1.
    InvalidResponse,
    /// Anything else.
    Other,
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ConnectionRefused => "connection refused",
            Self::TimedOut => "timed out",
            Self::NameNotResolved => "DNS lookup failed",
            Self::Tls => "TLS handshake failed",
            Self::ConnectionReset => "connection reset",
            Self::ClosedEarly => "connection closed before a response",
            Self::InvalidResponse => "invalid response",
            Self::Other => "request failed",
        })
    }
}

/// Why an upstream exchange failed. Every variant but `Refused` is on the
/// origin side and worth a retry.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The message names the kind and the origin's host and port (as the
    /// request named them: the resolved address is not shown, so a forward
    /// client learns nothing it did not send) and the innermost cause.
    #[error("{kind} ({origin}): {detail}")]
    Request {
        kind: FailureKind,
        origin: String,
        detail: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("timed out ({origin}): no response headers within {timeout:?}")]
    Timeout { origin: String, timeout: Duration },
    /// The destination guard refused every address of the host: not worth
    /// a retry, and the client's answer is 403, not 502.
    #[error("destination refused: {0}")]
    Refused(#[source] crate::destination::Refusal),
}

impl UpstreamError {
    fn classify(e: hyper_util::client::legacy::Error, origin: String) -> Self {
        if let Some(refusal) = crate::destination::refusal_in(&e) {
            return Self::Refused(refusal.clone());
        }
        let (kind, detail) = failure_of(&e);
        Self::Request {
            kind,
            origin,
            detail,
            source: e,
        }
    }

    /// What went wrong; `None` for a destination the guard refused.
    pub fn kind(&self) -> Option<FailureKind> {
        match self {
            Self::Request { kind, .. } => Some(*kind),
            Self::Timeout { .. } => Some(FailureKind::TimedOut),
            Self::Refused(_) => None,
        }
    }
}

/// The kind of a failed exchange and its innermost message, found by
/// walking the error's causes. An `io::Error` hides the error it wraps from
/// `source()` (rustls' errors come wrapped so), hence `get_ref`.
fn failure_of(e: &hyper_util::client::legacy::Error) -> (FailureKind, String) {
    use std::io::ErrorKind;
    let mut kind = None;
    let mut detail = e.to_string();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        detail = err.to_string();
        if err.downcast_ref::<rustls::Error>().is_some() {
            kind = Some(FailureKind::Tls);
        } else if let Some(io) = err.downcast_ref::<std::io::Error>() {
            let io_kind = match io.kind() {
                ErrorKind::ConnectionRefused => Some(FailureKind::ConnectionRefused),
                ErrorKind::TimedOut => Some(FailureKind::TimedOut),
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe => Some(FailureKind::ConnectionReset),
                _ => None,
            };
            kind = kind.or(io_kind);
            if let Some(inner) = io.get_ref() {
                current = Some(inner);
                continue;
            }
        } else if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() {
                kind = kind.or(Some(FailureKind::ClosedEarly));
            } else if h.is_parse() {
                kind = kind.or(Some(FailureKind::InvalidResponse));
            } else if h.is_timeout() {
                kind = kind.or(Some(FailureKind::TimedOut));
            }
        } else if err.to_string() == "dns error" {
            // hyper-util's resolver failure (its ConnectError is private).
            kind = kind.or(Some(FailureKind::NameNotResolved));
        }
        current = err.source();
    }
    (kind.unwrap_or(FailureKind::Other), detail)
}

/// `host:port` of the origin `uri` names, for messages.
fn origin_of(uri: &http::Uri) -> String {
    let host = uri.host().unwrap_or("?");
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
            443
        } else {
            80
        });
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

type PooledClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, UpstreamBody>;
type GuardedClient = Client<hyper_rustls::HttpsConnector<GuardedConnector>, UpstreamBody>;

/// Who chose an upstream destination, and so whether the destination guard
/// applies to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The admin did (a reverse origin, a channel's source): connect as
    /// configured.
    Configured,
    /// A client did (forward, transparent): only addresses the guard
    /// allows, resolved and checked by the connector itself.
    Guarded,
}

#[derive(Clone)]
pub struct Upstream {
    client: PooledClient,
    /// Its own pool, so that paced connections never carry client misses.
    bulk: PooledClient,
    guarded: GuardedClient,
    guarded_bulk: GuardedClient,
    pub guard: Arc<DestinationGuard>,
    header_timeout: Duration,
}

fn http_connector(receive_buffer: Option<usize>) -> HttpConnector {
    let mut http = HttpConnector::new();
    if let Some(size) = receive_buffer {
        http.set_recv_buffer_size(Some(size));
    }
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    http
}

fn pooled<C>(
    roots: &rustls::RootCertStore,
    inner: C,
) -> Client<hyper_rustls::HttpsConnector<C>, UpstreamBody>
where
    C: tower_service::Service<http::Uri> + Clone + Send + Sync + 'static,
    C::Response: hyper::rt::Read
        + hyper::rt::Write
        + hyper_util::client::legacy::connect::Connection
        + Send
        + Unpin
        + 'static,
    C::Future: Send + 'static,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config);
    let connector = builder.https_or_http().enable_http1().wrap_connector(inner);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .build(connector)
}

/// The OS trust store plus `extra` certificates.
fn trust_store(extra: &[rustls_pki_types::CertificateDer<'static>]) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "reading the OS trust store");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::warn!(
            "no OS trust store found: https origins verify only against upstream_ca_file"
        );
    }
    for cert in extra {
        if let Err(e) = roots.add(cert.clone()) {
            tracing::warn!(error = %e, "an upstream CA certificate was not accepted");
        }
    }
    roots
}

/// Reads the PEM certificates of a CA file.
pub fn load_ca_file(
    path: &std::path::Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let certs: Result<Vec<_>, _> = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect();
    let certs = certs.map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

impl Upstream {
    /// `bulk_receive_buffer` sizes the kernel buffer of pre-positioning
    /// connections: the shaper paces reads, and a small buffer makes the
    /// origin's sending follow that pace instead of filling the buffer at
    /// link speed first.
    /// `extra_roots` are trusted beside the OS trust store (an
    /// enterprise's own CA for internal https origins).
    pub fn new(
        header_timeout: Duration,
        bulk_receive_buffer: Option<usize>,
        extra_roots: &[rustls_pki_types::CertificateDer<'static>],
        guard: Arc<DestinationGuard>,
    ) -> Self {
        let roots = trust_store(extra_roots);
        let guarded = |receive_buffer| GuardedConnector {
            http: http_connector(receive_buffer),
            guard: guard.clone(),
        };
        Self {
            client: pooled(&roots, http_connector(None)),
            bulk: pooled(&roots, http_connector(bulk_receive_buffer)),
            guarded: pooled(&roots, guarded(None)),
            guarded_bulk: pooled(&roots, guarded(bulk_receive_buffer)),
            guard: guard.clone(),
            header_timeout,
        }
    }

    /// Sends `req` (absolute URI) and waits for the response headers.
    pub async fn send(
        &self,
        req: Request<UpstreamBody>,
        reach: Reach,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.send_as(req, Class::Interactive, reach).await
    }

    /// Sends `req` on the connection pool of `class` and `reach`.
    pub async fn send_as(
        &self,
        mut req: Request<UpstreamBody>,
        class: Class,
        reach: Reach,
    ) -> Result<Response<Incoming>, UpstreamError> {
        crate::interim::forward_to_client(&mut req);
        let origin = origin_of(req.uri());
        let exchange = async {
            match (reach, class) {
                (Reach::Configured, Class::Interactive) => self.client.request(req).await,
                (Reach::Configured, Class::Bulk) => self.bulk.request(req).await,
                (Reach::Guarded, Class::Interactive) => self.guarded.request(req).await,
                (Reach::Guarded, Class::Bulk) => self.guarded_bulk.request(req).await,
            }
        };
        match tokio::time::timeout(self.header_timeout, exchange).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                let e = UpstreamError::classify(e, origin);
                if let Some(kind) = e.kind() {
                    tracing::debug!(?kind, error = %e, "upstream exchange failed");
                }
                Err(e)
            }
            Err(_) => Err(UpstreamError::Timeout {
                origin,
                timeout: self.header_timeout,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream() -> Upstream {
        let guard = Arc::new(DestinationGuard::new(Vec::new()));
        Upstream::new(Duration::from_secs(10), None, &[], guard)
    }

    fn get(uri: &str) -> Request<UpstreamBody> {
        Request::get(uri).body(empty_body()).unwrap()
    }

    #[tokio::test]
    async fn a_closed_port_is_connection_refused_with_the_address() {
        // A port that was just free: nothing listens there now.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let err = upstream()
            .send(
                get(&format!("http://127.0.0.1:{port}/p")),
                Reach::Configured,
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), Some(FailureKind::ConnectionRefused), "{err}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("connection refused (127.0.0.1:{port})")),
            "{message}"
        );
    }

    #[tokio::test]
    async fn an_unresolvable_name_is_a_dns_failure_with_the_name() {
        // `.invalid` never resolves (RFC 6761 section 6.4).
        let err = upstream()
            .send(get("http://outpost-test.invalid/p"), Reach::Configured)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), Some(FailureKind::NameNotResolved), "{err}");
        assert!(
            err.to_string()
                .starts_with("DNS lookup failed (outpost-test.invalid:80)"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_origin_that_closes_early_is_said_so() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            // Read the request, then hang up without a word.
            if let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
            }
        });
        let err = upstream()
            .send(get(&format!("http://{addr}/p")), Reach::Configured)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), Some(FailureKind::ClosedEarly), "{err}");
    }

    #[tokio::test]
    async fn a_tls_failure_is_said_so() {
        use tokio::io::AsyncWriteExt;
        // Plain text where a TLS server hello should be.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((mut socket, _)) = listener.accept().await {
                let _ = socket
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    .await;
                let _ = socket.shutdown().await;
            }
        });
        let err = upstream()
            .send(get(&format!("https://{addr}/p")), Reach::Configured)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), Some(FailureKind::Tls), "{err}");
    }
}
