//! `/edge/v1/...`: the calls edges make (see `outpost_protocol::fleet`).

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use outpost_protocol::{DesiredConfig, EnrolReply, EnrolRequest, Heartbeat, HeartbeatReply};
use serde::Deserialize;

use super::auth::{EdgeSite, FleetProtocol, Peer};
use super::{AppState, json_body};
use crate::ManagerError;
use crate::manager::WaitFor;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/edge/v1/enrol",
            // Anyone may call it: a small body, no more.
            post(enrol).layer(axum::extract::DefaultBodyLimit::max(16 * 1024)),
        )
        .route("/edge/v1/heartbeat", post(heartbeat))
        .route("/edge/v1/wait", get(wait))
        .route("/edge/v1/config", get(config))
        .route(
            outpost_protocol::session::SESSION_PATH,
            get(super::session::open),
        )
        .layer(axum::middleware::map_response(protocol_header))
}

/// Every edge answer says which protocol it speaks, errors included.
async fn protocol_header(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        outpost_protocol::FLEET_PROTOCOL_HEADER,
        http::HeaderValue::from(outpost_protocol::FLEET_PROTOCOL),
    );
    response
}

/// An edge enrols once and then opens its session: the enrolment's
/// connection is closed after the answer rather than kept idle (with its
/// buffers) until the idle timeout, which a fleet enrolling at once would
/// multiply by its size.
async fn enrol(
    State(manager): State<AppState>,
    Peer(from): Peer,
    _: FleetProtocol,
    body: Bytes,
) -> Result<
    (
        [(http::header::HeaderName, &'static str); 1],
        Json<EnrolReply>,
    ),
    ManagerError,
> {
    let enrol: EnrolRequest = json_body(&body)?;
    let manager2 = manager.clone();
    let reply = tokio::task::spawn_blocking(move || manager2.enrol(&enrol, &from))
        .await
        .map_err(|e| ManagerError::Internal(e.to_string()))??;
    Ok(([(http::header::CONNECTION, "close")], Json(reply)))
}

async fn heartbeat(
    State(manager): State<AppState>,
    EdgeSite(site): EdgeSite,
    body: Bytes,
) -> Result<Json<HeartbeatReply>, ManagerError> {
    let heartbeat: Heartbeat = json_body(&body)?;
    Ok(Json(manager.heartbeat(&site, heartbeat)?))
}

#[derive(Deserialize)]
struct WaitQuery {
    config_version: u64,
    #[serde(default)]
    after_action: u64,
}

async fn wait(
    State(manager): State<AppState>,
    EdgeSite(site): EdgeSite,
    Query(query): Query<WaitQuery>,
) -> Result<Json<HeartbeatReply>, ManagerError> {
    let wait = WaitFor {
        config_version: query.config_version,
        after_action: query.after_action,
    };
    Ok(Json(manager.wait(&site, wait).await?))
}

async fn config(
    State(manager): State<AppState>,
    EdgeSite(site): EdgeSite,
) -> Result<Json<DesiredConfig>, ManagerError> {
    Ok(Json(manager.desired_config(&site)?))
}
