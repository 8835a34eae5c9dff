//! The upstream (WAN side) HTTP client: pooled keep-alive connections, http
//! and https (rustls, OS trust store), with a deadline on response headers.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use outpost_shaper::Class;

pub type UpstreamBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// Why an upstream exchange failed. Every variant is on the origin side and
/// worth a retry.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("origin request failed: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    #[error("origin sent no response headers within {0:?}")]
    Timeout(Duration),
}

type PooledClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, UpstreamBody>;

#[derive(Clone)]
pub struct Upstream {
    client: PooledClient,
    /// Its own pool, so that paced connections never carry client misses.
    bulk: PooledClient,
    header_timeout: Duration,
}

fn pooled_client(receive_buffer: Option<usize>) -> PooledClient {
    let mut http = HttpConnector::new();
    if let Some(size) = receive_buffer {
        http.set_recv_buffer_size(Some(size));
    }
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "no OS trust store found: https origins will fail verification");
            let config = rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    let connector = builder.https_or_http().enable_http1().wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .build(connector)
}

impl Upstream {
    /// `bulk_receive_buffer` sizes the kernel buffer of pre-positioning
    /// connections: the shaper paces reads, and a small buffer makes the
    /// origin's sending follow that pace instead of filling the buffer at
    /// link speed first.
    pub fn new(header_timeout: Duration, bulk_receive_buffer: Option<usize>) -> Self {
        Self {
            client: pooled_client(None),
            bulk: pooled_client(bulk_receive_buffer),
            header_timeout,
        }
    }

    /// Sends `req` (absolute URI) and waits for the response headers.
    pub async fn send(
        &self,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.send_as(req, Class::Interactive).await
    }

    /// Sends `req` on the connection pool of `class`.
    pub async fn send_as(
        &self,
        req: Request<UpstreamBody>,
        class: Class,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let client = match class {
            Class::Interactive => &self.client,
            Class::Bulk => &self.bulk,
        };
        match tokio::time::timeout(self.header_timeout, client.request(req)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(UpstreamError::Timeout(self.header_timeout)),
        }
    }
}
