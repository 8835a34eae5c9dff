//! A small fleet manager for the edge's tests: the edge protocol
//! (`/edge/v1/...`) over HTTPS with a self-signed certificate made by
//! rcgen, one join token, a desired config a test publishes, actions a test
//! queues, revocation, and a record of every heartbeat. Not the real
//! manager (crates/outpost-manager): it holds only what a test asserts on.
//! It offers no edge session: `/edge/v1/session` answers 403 as a proxy
//! or web filter in front of a manager might (without the fleet protocol
//! header), so every edge test here also proves that the edge then makes
//! plain HTTP calls and does not take the 403 for a revocation.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use outpost_protocol::{
    ActionOrder, ActionResult, ApiError, DesiredConfig, EnrolReply, EnrolRequest, FleetAction,
    Heartbeat, HeartbeatReply,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub const JOIN_TOKEN: &str = "join-secret";

#[derive(Default)]
struct Fleet {
    heartbeat_ms: u64,
    /// "Approve new edges" mode: false until [`FakeManager::approve`].
    approved: bool,
    /// credential -> site
    credentials: HashMap<String, String>,
    enrolments: usize,
    revoked: HashSet<String>,
    config: Option<DesiredConfig>,
    actions: Vec<ActionOrder>,
    next_action: u64,
    heartbeats: Vec<Heartbeat>,
    results: Vec<ActionResult>,
}

#[derive(Clone)]
struct Shared {
    fleet: Arc<Mutex<Fleet>>,
    changed: Arc<Notify>,
}

pub struct FakeManager {
    pub url: String,
    /// "aa:bb:..." of the certificate.
    pub fingerprint: String,
    shared: Shared,
    stop: CancellationToken,
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    (
        status,
        [("content-type", "application/json")],
        serde_json::to_vec(value).unwrap(),
    )
        .into_response()
}

fn refuse(status: StatusCode, error: &str) -> Response {
    json(
        status,
        &ApiError {
            error: error.to_string(),
        },
    )
}

/// The site of the bearer credential, or the answer that refuses it.
fn site_of(shared: &Shared, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let credential = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let fleet = shared.fleet.lock().unwrap();
    let Some(site) = fleet.credentials.get(credential).cloned() else {
        return Err(Box::new(refuse(
            StatusCode::UNAUTHORIZED,
            "unknown credential",
        )));
    };
    if fleet.revoked.contains(&site) {
        return Err(Box::new(refuse(
            StatusCode::FORBIDDEN,
            &format!("edge {site} is revoked"),
        )));
    }
    Ok(site)
}

fn reply(fleet: &Fleet) -> HeartbeatReply {
    HeartbeatReply {
        desired_config_version: fleet.config.as_ref().map_or(0, |c| c.version),
        heartbeat_ms: fleet.heartbeat_ms,
        approved: fleet.approved,
        actions: fleet.actions.clone(),
    }
}

async fn enrol(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<EnrolRequest>(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "not an enrol request");
    };
    if headers
        .get("outpost-fleet-protocol")
        .and_then(|v| v.to_str().ok())
        != Some("1")
    {
        return refuse(StatusCode::BAD_REQUEST, "protocol version");
    }
    if request.join_token != JOIN_TOKEN {
        return refuse(StatusCode::UNAUTHORIZED, "bad join token");
    }
    let mut fleet = shared.fleet.lock().unwrap();
    fleet.enrolments += 1;
    let credential = format!("credential-{}-{}", request.site, fleet.enrolments);
    fleet
        .credentials
        .insert(credential.clone(), request.site.clone());
    json(
        StatusCode::OK,
        &EnrolReply {
            site: request.site,
            credential,
            approved: fleet.approved,
            heartbeat_ms: fleet.heartbeat_ms,
        },
    )
}

async fn heartbeat(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refused) = site_of(&shared, &headers) {
        return *refused;
    }
    let Ok(beat) = serde_json::from_slice::<Heartbeat>(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "not a heartbeat");
    };
    let mut fleet = shared.fleet.lock().unwrap();
    for result in &beat.action_results {
        fleet.actions.retain(|a| a.id != result.id);
        if !fleet.results.iter().any(|r| r.id == result.id) {
            fleet.results.push(result.clone());
        }
    }
    fleet.heartbeats.push(beat);
    json(StatusCode::OK, &reply(&fleet))
}

#[derive(serde::Deserialize)]
struct WaitQuery {
    config_version: u64,
    after_action: u64,
}

async fn wait(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<WaitQuery>,
) -> Response {
    if let Err(refused) = site_of(&shared, &headers) {
        return *refused;
    }
    let deadline = {
        let fleet = shared.fleet.lock().unwrap();
        Instant::now() + Duration::from_millis(fleet.heartbeat_ms.min(25_000))
    };
    loop {
        let changed = shared.changed.notified();
        {
            let fleet = shared.fleet.lock().unwrap();
            let answer = reply(&fleet);
            if answer.desired_config_version != q.config_version
                || answer.actions.iter().any(|a| a.id > q.after_action)
                || Instant::now() >= deadline
            {
                return json(StatusCode::OK, &answer);
            }
        }
        let _ = tokio::time::timeout_at(deadline.into(), changed).await;
    }
}

async fn config(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(refused) = site_of(&shared, &headers) {
        return *refused;
    }
    let fleet = shared.fleet.lock().unwrap();
    match &fleet.config {
        Some(config) => json(StatusCode::OK, config),
        None => refuse(StatusCode::NOT_FOUND, "nothing published"),
    }
}

impl FakeManager {
    /// Serves HTTPS on 127.0.0.1 (an ephemeral port) with a heartbeat
    /// interval of `heartbeat_ms`.
    pub async fn start(heartbeat_ms: u64) -> Self {
        let certified = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        let cert_der = certified.cert.der().clone();
        let fingerprint = fingerprint(cert_der.as_ref());
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert_der], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let shared = Shared {
            fleet: Arc::new(Mutex::new(Fleet {
                heartbeat_ms,
                approved: true,
                next_action: 1,
                ..Fleet::default()
            })),
            changed: Arc::new(Notify::new()),
        };
        let router = axum::Router::new()
            .route("/edge/v1/enrol", post(enrol))
            .route("/edge/v1/heartbeat", post(heartbeat))
            .route("/edge/v1/wait", get(wait))
            .route("/edge/v1/config", get(config))
            .route(
                "/edge/v1/session",
                get(|| async { (StatusCode::FORBIDDEN, "Upgrade is not allowed here") }),
            )
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                    _ = stopped.cancelled() => return,
                };
                let acceptor = acceptor.clone();
                let router = router.clone();
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| router.clone().oneshot(req));
                    tokio::select! {
                        _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc) => {}
                        _ = stopped.cancelled() => {}
                    }
                });
            }
        });
        Self {
            url: format!("https://{addr}"),
            fingerprint,
            shared,
            stop,
        }
    }

    /// Publishes `toml` as the next config version; returns it.
    pub fn publish(&self, toml: &str) -> u64 {
        let mut fleet = self.shared.fleet.lock().unwrap();
        let version = fleet.config.as_ref().map_or(0, |c| c.version) + 1;
        fleet.config = Some(DesiredConfig {
            version,
            toml: toml.to_string(),
        });
        drop(fleet);
        self.shared.changed.notify_waiters();
        version
    }

    /// Queues an action for every edge; returns its id.
    pub fn order(&self, action: FleetAction) -> u64 {
        let mut fleet = self.shared.fleet.lock().unwrap();
        let id = fleet.next_action;
        fleet.next_action += 1;
        fleet.actions.push(ActionOrder { id, action });
        drop(fleet);
        self.shared.changed.notify_waiters();
        id
    }

    /// Sets "approve new edges" mode's answer for every edge.
    pub fn approve(&self, approved: bool) {
        self.shared.fleet.lock().unwrap().approved = approved;
        self.shared.changed.notify_waiters();
    }

    pub fn revoke(&self, site: &str) {
        self.shared
            .fleet
            .lock()
            .unwrap()
            .revoked
            .insert(site.to_string());
    }

    pub fn enrolments(&self) -> usize {
        self.shared.fleet.lock().unwrap().enrolments
    }

    pub fn heartbeats(&self) -> usize {
        self.shared.fleet.lock().unwrap().heartbeats.len()
    }

    pub fn last_heartbeat(&self) -> Option<Heartbeat> {
        self.shared.fleet.lock().unwrap().heartbeats.last().cloned()
    }

    pub fn result(&self, id: u64) -> Option<ActionResult> {
        let fleet = self.shared.fleet.lock().unwrap();
        fleet.results.iter().find(|r| r.id == id).cloned()
    }

    /// Stops answering: the listener and every connection close.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Polls (every 20 ms, up to `limit`) until the last heartbeat passes
    /// `check`; that heartbeat.
    pub async fn heartbeat_where(
        &self,
        limit: Duration,
        check: impl Fn(&Heartbeat) -> bool,
    ) -> Option<Heartbeat> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(beat) = self.last_heartbeat().filter(|b| check(b)) {
                return Some(beat);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for FakeManager {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
