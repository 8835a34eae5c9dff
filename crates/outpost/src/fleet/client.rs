//! The calls to the manager, one function each, over HTTPS (pinned, see
//! [`super::tls`]) or plain HTTP (a manager run with `--insecure-http`,
//! or behind a TLS-terminating proxy). Every answer is read within a size
//! bound and a deadline; every failure becomes a [`CallError`] that says
//! whether the manager was unreachable, refused the edge, or answered
//! something unreadable.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use outpost_protocol::{
    ApiError, DesiredConfig, EnrolReply, EnrolRequest, FLEET_PROTOCOL, FLEET_PROTOCOL_HEADER,
    Heartbeat, HeartbeatReply,
};
use serde::de::DeserializeOwned;

use super::core::CallError;

/// Largest answer read (a managed config is a few kB; a reply with many
/// actions less than that).
const MAX_ANSWER: usize = 4 << 20;
/// A call that is not a long poll.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// A long poll: the manager answers within about 25 s.
const WAIT_TIMEOUT: Duration = Duration::from_secs(40);

pub struct ManagerClient {
    base: String,
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// The error and every cause below it: hyper's "client error (Connect)"
/// alone does not say that the certificate was not the pinned one.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

impl ManagerClient {
    pub fn new(url: &url::Url, pin: Option<&str>) -> Result<Self, String> {
        let tls = super::tls::client_config(pin)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            // HTTP/2 where the manager offers it (ALPN): the long poll,
            // heartbeats and config fetches then share one connection.
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Self {
            base: url.as_str().trim_end_matches('/').to_string(),
            http: client,
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        credential: Option<&str>,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<T, CallError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(FLEET_PROTOCOL_HEADER, FLEET_PROTOCOL.to_string())
            .header(
                header::USER_AGENT,
                concat!("outpost/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(credential) = credential {
            request = request.header(header::AUTHORIZATION, format!("Bearer {credential}"));
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| CallError::Refused(format!("cannot build the request: {e}")))?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| CallError::Unreachable(chain(&e)))?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| CallError::Unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, CallError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| CallError::Unreachable(format!("no answer within {timeout:?}")))??;
        if !status.is_success() {
            let reason = serde_json::from_slice::<ApiError>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(200).collect());
            let message = format!("{status}: {reason}");
            return Err(match status {
                StatusCode::FORBIDDEN => CallError::Revoked(message),
                s if s.is_server_error() => CallError::Unreachable(message),
                _ => CallError::Refused(message),
            });
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| CallError::Refused(format!("unreadable answer to {path}: {e}")))
    }

    pub async fn enrol(&self, request: &EnrolRequest) -> Result<EnrolReply, CallError> {
        let body = serde_json::to_vec(request).unwrap_or_default();
        self.call(
            Method::POST,
            "/edge/v1/enrol",
            None,
            Some(body),
            CALL_TIMEOUT,
        )
        .await
    }

    pub async fn heartbeat(
        &self,
        credential: &str,
        heartbeat: &Heartbeat,
    ) -> Result<HeartbeatReply, CallError> {
        let body = serde_json::to_vec(heartbeat).unwrap_or_default();
        self.call(
            Method::POST,
            "/edge/v1/heartbeat",
            Some(credential),
            Some(body),
            CALL_TIMEOUT,
        )
        .await
    }

    pub async fn wait(
        &self,
        credential: &str,
        config_version: u64,
        after_action: u64,
    ) -> Result<HeartbeatReply, CallError> {
        let path =
            format!("/edge/v1/wait?config_version={config_version}&after_action={after_action}");
        self.call(Method::GET, &path, Some(credential), None, WAIT_TIMEOUT)
            .await
    }

    pub async fn config(&self, credential: &str) -> Result<DesiredConfig, CallError> {
        self.call(
            Method::GET,
            "/edge/v1/config",
            Some(credential),
            None,
            CALL_TIMEOUT,
        )
        .await
    }
}
