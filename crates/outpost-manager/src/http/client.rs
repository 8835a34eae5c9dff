//! A small client of the manager's API and edge protocol, for the CLI
//! (`outpost fleet`) and tests: one connection per request, HTTPS pinned
//! by fingerprint (see [`crate::pinned_tls`]) or checked against the
//! system's roots, or plain HTTP.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use outpost_protocol::{ApiError, FLEET_PROTOCOL, FLEET_PROTOCOL_HEADER};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("manager URL {0:?}: expected http://HOST:PORT or https://HOST:PORT")]
    BadUrl(String),
    #[error(transparent)]
    Pin(#[from] crate::pinned_tls::PinError),
    #[error("cannot reach the manager at {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("the manager answered {status}: {error}")]
    Api { status: StatusCode, error: String },
    #[error("the manager's answer is not the expected JSON: {0}")]
    Decode(String),
    #[error("no answer from the manager within {0:?}")]
    Timeout(Duration),
}

/// A connection to the manager.
pub(crate) enum Stream {
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
    Plain(tokio::net::TcpStream),
}

#[derive(Clone)]
pub struct Client {
    scheme_https: bool,
    pub(crate) authority: http::uri::Authority,
    host: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) bearer: Option<String>,
    fleet_protocol: bool,
    pub(crate) timeout: Duration,
}

impl Client {
    /// `base`: `http(s)://host:port`; `fingerprint`: pin the manager's
    /// certificate (else the system's roots check it).
    pub fn new(base: &str, fingerprint: Option<&str>) -> Result<Self, ClientError> {
        let mut client = Self::plain(base)?;
        if client.scheme_https {
            let config = match fingerprint {
                Some(fp) => crate::pinned_tls::client_config(fp)?,
                None => {
                    let mut roots = rustls::RootCertStore::empty();
                    for cert in rustls_native_certs::load_native_certs().certs {
                        let _ = roots.add(cert);
                    }
                    rustls::ClientConfig::builder_with_provider(Arc::new(
                        rustls::crypto::ring::default_provider(),
                    ))
                    .with_safe_default_protocol_versions()
                    .map_err(crate::pinned_tls::PinError::Tls)?
                    .with_root_certificates(roots)
                    .with_no_client_auth()
                }
            };
            client.tls = Some(Arc::new(config));
        }
        Ok(client)
    }

    /// As [`Client::new`], with a TLS configuration the caller built (the
    /// edge's, pinned or from the system's roots: built once for its HTTP
    /// client and its sessions). Ignored for an `http://` URL.
    pub fn with_tls_config(base: &str, tls: rustls::ClientConfig) -> Result<Self, ClientError> {
        let mut client = Self::plain(base)?;
        if client.scheme_https {
            client.tls = Some(Arc::new(tls));
        }
        Ok(client)
    }

    /// The URL's parts, no TLS configuration yet.
    fn plain(base: &str) -> Result<Self, ClientError> {
        let bad = || ClientError::BadUrl(base.to_string());
        let uri: Uri = base.trim_end_matches('/').parse().map_err(|_| bad())?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad()),
        };
        let authority = uri.authority().cloned().ok_or_else(bad)?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(Self {
            scheme_https: https,
            authority,
            host,
            tls: None,
            bearer: None,
            fleet_protocol: false,
            timeout: Duration::from_secs(60),
        })
    }

    pub fn bearer(mut self, token: impl Into<String>) -> Self {
        self.bearer = Some(token.into());
        self
    }

    /// Sends the fleet protocol header (edge calls).
    pub fn fleet_protocol(mut self) -> Self {
        self.fleet_protocol = true;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.scheme_https { "https" } else { "http" },
            self.authority
        )
    }

    /// One request; the status and body, whatever the status.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let (status, _, body) = self.request_full(method, path, body).await?;
        Ok((status, body))
    }

    /// One request; the status, headers and body, whatever the status.
    pub async fn request_full(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), ClientError> {
        tokio::time::timeout(self.timeout, self.request_inner(method, path, body))
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))?
    }

    async fn request_inner(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), ClientError> {
        let connect = |detail: String| ClientError::Connect {
            url: self.url(),
            detail,
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.authority.as_str());
        if let Some(token) = &self.bearer {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if self.fleet_protocol {
            request = request.header(FLEET_PROTOCOL_HEADER, FLEET_PROTOCOL.to_string());
        }
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| connect(e.to_string()))?;
        let response = match self.connect().await.map_err(connect)? {
            Stream::Tls(tls) => send(TokioIo::new(tls), request).await,
            Stream::Plain(tcp) => send(TokioIo::new(tcp), request).await,
        }
        .map_err(connect)?;
        Ok(response)
    }

    /// A connection to the manager, TLS as the URL says (HTTP/1.1 only:
    /// no ALPN is offered).
    pub(crate) async fn connect(&self) -> Result<Stream, String> {
        let port = self
            .authority
            .port_u16()
            .unwrap_or(if self.scheme_https { 443 } else { 80 });
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), port))
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(config) => {
                let name = rustls_pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| e.to_string())?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                Ok(Stream::Tls(Box::new(tls)))
            }
            None => Ok(Stream::Plain(tcp)),
        }
    }

    /// A JSON call: `Ok` for 2xx decoded as `T`, else the manager's error.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.request(method, path, body).await?;
        if !status.is_success() {
            let error = serde_json::from_slice::<ApiError>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ClientError::Api { status, error });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None).await
    }

    pub async fn send<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.call(method, path, Some(body.into())).await
    }
}

async fn send<I>(
    io: I,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, http::HeaderMap, Bytes), String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, headers, body))
}
