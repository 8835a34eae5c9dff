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

/// Why an upstream exchange failed. Every variant is on the origin side and
/// worth a retry.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("origin request failed: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    #[error("origin sent no response headers within {0:?}")]
    Timeout(Duration),
    /// The destination guard refused every address of the host: not worth
    /// a retry, and the client's answer is 403, not 502.
    #[error("destination refused: {0}")]
    Refused(#[source] crate::destination::Refusal),
}

impl UpstreamError {
    fn classify(e: hyper_util::client::legacy::Error) -> Self {
        match crate::destination::refusal_in(&e) {
            Some(refusal) => Self::Refused(refusal.clone()),
            None => Self::Request(e),
        }
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
        let exchange = async {
            match (reach, class) {
                (Reach::Configured, Class::Interactive) => self.client.request(req).await,
                (Reach::Configured, Class::Bulk) => self.bulk.request(req).await,
                (Reach::Guarded, Class::Interactive) => self.guarded.request(req).await,
                (Reach::Guarded, Class::Bulk) => self.guarded_bulk.request(req).await,
            }
        };
        match tokio::time::timeout(self.header_timeout, exchange).await {
            Ok(result) => result.map_err(UpstreamError::classify),
            Err(_) => Err(UpstreamError::Timeout(self.header_timeout)),
        }
    }
}
