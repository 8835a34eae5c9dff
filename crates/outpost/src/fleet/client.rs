//! The calls to the manager, one function each, over HTTPS (pinned, see
//! [`super::tls`]) or plain HTTP (a manager run with `--insecure-http`,
//! or behind a TLS-terminating proxy). Heartbeats, the long poll and
//! config fetches go on an edge session (one upgraded connection, see
//! [`outpost_protocol::session`]) where the manager offers one, else as
//! HTTP requests; enrolment is always a request. Every answer is read within a size
//! bound and a deadline; every failure becomes a [`CallError`] that says
//! whether the manager was unreachable, refused the edge, or answered
//! something unreadable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use outpost_manager::http::session_client::{Session, SessionError};
use outpost_protocol::session::SessionCall;
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

/// How long an edge uses plain HTTP calls after the manager (or a proxy
/// in front of it) refused a session, before it asks again.
const NO_SESSION_RETRY: Duration = Duration::from_secs(600);

pub struct ManagerClient {
    base: String,
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Opens sessions (same URL and trust).
    connector: outpost_manager::http::client::Client,
    session: tokio::sync::Mutex<SessionSlot>,
}

#[derive(Default)]
struct SessionSlot {
    open: Option<Arc<Session>>,
    /// Refused: plain HTTP until then.
    not_before: Option<Instant>,
    /// Sessions that failed to open in a row.
    failures: u32,
}

/// After this many sessions failed to open in a row once connected (a
/// proxy that swallows the upgrade, or mangles what follows), the edge
/// uses plain HTTP calls for [`NO_SESSION_RETRY`]. A manager that is down
/// (no connection) does not count: after its restart the edges come back
/// on sessions.
const SESSION_FAILURES_BEFORE_HTTP: u32 = 3;

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
            .with_tls_config(tls.clone())
            .https_or_http()
            // HTTP/2 where the manager offers it (ALPN): without a session
            // (a proxy that drops Upgrade) the long poll, heartbeats and
            // config fetches then still share one connection.
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let base = url.as_str().trim_end_matches('/').to_string();
        // Sessions: the same trust, built once (no second read of the
        // system's roots).
        let connector = outpost_manager::http::client::Client::with_tls_config(&base, tls)
            .map_err(|e| e.to_string())?
            .timeout(CALL_TIMEOUT);
        Ok(Self {
            base,
            http: client,
            connector,
            session: tokio::sync::Mutex::default(),
        })
    }

    /// The open session, a new one, or `None` where the manager offers
    /// none (then the HTTP calls).
    async fn session(&self, credential: &str) -> Result<Option<Arc<Session>>, CallError> {
        let mut slot = self.session.lock().await;
        if let Some(open) = slot.open.as_ref().filter(|s| s.is_open()) {
            return Ok(Some(open.clone()));
        }
        slot.open = None;
        if slot.not_before.is_some_and(|t| Instant::now() < t) {
            return Ok(None);
        }
        match self
            .connector
            .clone()
            .bearer(credential)
            .open_session()
            .await
        {
            Ok(session) => {
                let session = Arc::new(session);
                slot.open = Some(session.clone());
                slot.not_before = None;
                slot.failures = 0;
                Ok(Some(session))
            }
            // The manager's own refusal (its protocol header is on every
            // edge answer): revoked or unknown, as an HTTP call would hear.
            Err(SessionError::NotOffered {
                status,
                body,
                from_manager: true,
            }) if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                Err(refusal(status, &body))
            }
            Err(SessionError::NotOffered { status, .. }) => {
                tracing::info!(manager = %self.base, %status, "the manager offers no edge session: using HTTP calls (asking again in 10 minutes)");
                slot.not_before = Some(Instant::now() + NO_SESSION_RETRY);
                Ok(None)
            }
            Err(SessionError::Connect(e)) => Err(CallError::Unreachable(e)),
            Err(e) => {
                slot.failures += 1;
                if slot.failures >= SESSION_FAILURES_BEFORE_HTTP {
                    tracing::info!(manager = %self.base, error = %e, "{} edge sessions failed to open in a row: using HTTP calls (asking again in 10 minutes)", slot.failures);
                    slot.failures = 0;
                    slot.not_before = Some(Instant::now() + NO_SESSION_RETRY);
                    return Ok(None);
                }
                Err(CallError::Unreachable(e.to_string()))
            }
        }
    }

    /// A call on the session; `None`: no session, make the HTTP call.
    async fn on_session<T: DeserializeOwned>(
        &self,
        credential: &str,
        call: SessionCall,
        payload: &[u8],
        timeout: Duration,
        path: &str,
    ) -> Option<Result<T, CallError>> {
        let session = match self.session(credential).await {
            Ok(Some(session)) => session,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        Some(match session.call(call, payload, timeout).await {
            Ok((status, body)) => decode(status, &body, path),
            Err(e) => Err(CallError::Unreachable(e.to_string())),
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
        decode(status, &bytes, path)
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
        let call = SessionCall::Heartbeat;
        let path = "/edge/v1/heartbeat";
        if let Some(result) = self
            .on_session(credential, call, &body, CALL_TIMEOUT, path)
            .await
        {
            return result;
        }
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
        let args = outpost_protocol::session::WaitArgs {
            config_version,
            after_action,
        };
        let payload = serde_json::to_vec(&args).unwrap_or_default();
        if let Some(result) = self
            .on_session(
                credential,
                SessionCall::Wait,
                &payload,
                WAIT_TIMEOUT,
                "/edge/v1/wait",
            )
            .await
        {
            return result;
        }
        let path =
            format!("/edge/v1/wait?config_version={config_version}&after_action={after_action}");
        self.call(Method::GET, &path, Some(credential), None, WAIT_TIMEOUT)
            .await
    }

    pub async fn config(&self, credential: &str) -> Result<DesiredConfig, CallError> {
        if let Some(result) = self
            .on_session(
                credential,
                SessionCall::Config,
                &[],
                CALL_TIMEOUT,
                "/edge/v1/config",
            )
            .await
        {
            return result;
        }
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

/// An answer's status and body as the edge reads them, whichever way the
/// call went.
fn decode<T: DeserializeOwned>(
    status: StatusCode,
    bytes: &[u8],
    path: &str,
) -> Result<T, CallError> {
    if !status.is_success() {
        return Err(refusal(status, bytes));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| CallError::Refused(format!("unreadable answer to {path}: {e}")))
}

fn refusal(status: StatusCode, bytes: &[u8]) -> CallError {
    let reason = serde_json::from_slice::<ApiError>(bytes)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(bytes).chars().take(200).collect());
    let message = format!("{status}: {reason}");
    match status {
        StatusCode::FORBIDDEN => CallError::Revoked(message),
        s if s.is_server_error() => CallError::Unreachable(message),
        _ => CallError::Refused(message),
    }
}
