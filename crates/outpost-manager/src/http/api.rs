//! `/api/v1/...`: the automation API (admin API token), as in
//! docs/manager.md. Each handler parses, calls one [`crate::Manager`]
//! method, and answers JSON.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use outpost_protocol::{ActionStatus, EdgeList, EdgeSummary, FleetAction, Readiness};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::auth::Admin;
use super::json_body;
use crate::manager::{
    Alert, AuditEntry, DiffReply, GroupInfo, HistoryEntry, NewToken, SiteConfig, TokenInfo,
};
use crate::{ManagerError, Scope};

type ApiResult<T> = Result<Json<T>, ManagerError>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/edges", get(edges))
        .route("/api/v1/edges/{site}", get(edge).delete(delete_edge))
        .route("/api/v1/edges/{site}/revoke", post(revoke_edge))
        .route("/api/v1/edges/{site}/approve", post(approve_edge))
        .route("/api/v1/edges/{site}/groups", put(set_site_groups))
        .route("/api/v1/readiness", get(readiness))
        .route(
            "/api/v1/channels/{name}",
            put(put_channel).delete(delete_channel),
        )
        .route("/api/v1/scopes/{scope}", get(get_scope).put(put_scope))
        .route("/api/v1/groups", get(groups))
        .route("/api/v1/groups/{name}", put(put_group).delete(delete_group))
        .route("/api/v1/config/diff", get(diff))
        .route("/api/v1/config/publish", post(publish))
        .route("/api/v1/config/history", get(history))
        .route("/api/v1/config/rollback", post(rollback))
        .route("/api/v1/sites/{site}/config", get(site_config))
        .route("/api/v1/actions", get(actions))
        .route(
            "/api/v1/actions/{which}",
            get(action_status).post(create_action),
        )
        .route(
            "/api/v1/join-tokens",
            get(join_tokens).post(create_join_token),
        )
        .route("/api/v1/join-tokens/{id}/revoke", post(revoke_join_token))
        .route("/api/v1/settings", get(settings).put(put_settings))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/alerts", get(alerts))
        .route("/metrics", get(metrics))
}

#[derive(Deserialize)]
struct AlertsQuery {
    /// Closed ones too (newest first).
    #[serde(default)]
    all: bool,
    site: Option<String>,
    limit: Option<u32>,
}

async fn alerts(
    State(m): State<AppState>,
    _: Admin,
    Query(q): Query<AlertsQuery>,
) -> ApiResult<Vec<Alert>> {
    if !q.all {
        let mut open = m.open_alerts();
        if let Some(site) = &q.site {
            open.retain(|a| &a.site == site);
        }
        return Ok(Json(open));
    }
    let limit = q.limit.unwrap_or(500).min(10_000);
    Ok(Json(
        blocking(move || m.alert_history(q.site.as_deref(), limit)).await?,
    ))
}

async fn metrics(State(m): State<AppState>, _: Admin) -> impl axum::response::IntoResponse {
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render_metrics(),
    )
}

/// Runs blocking store work (SQLite) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ManagerError> + Send + 'static,
) -> Result<T, ManagerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ManagerError::Internal(format!("worker: {e}")))?
}

fn ok() -> Json<Value> {
    Json(json!({"ok": true}))
}

/// The edges from memory, each with its traffic by day from the database.
async fn edges(State(m): State<AppState>, _: Admin) -> ApiResult<EdgeList> {
    let mut list = m.edge_list();
    let traffic = blocking(move || m.site_traffic(crate::manager::unix_secs())).await?;
    for edge in &mut list.edges {
        edge.traffic = traffic.get(&edge.site).map(|t| t.wire());
    }
    Ok(Json(list))
}

async fn edge(
    State(m): State<AppState>,
    _: Admin,
    Path(site): Path<String>,
) -> ApiResult<EdgeSummary> {
    let mut edge = m.edge(&site)?;
    let traffic = blocking(move || m.traffic_of(&site, crate::manager::unix_secs())).await?;
    edge.traffic = (traffic != Default::default()).then(|| traffic.wire());
    Ok(Json(edge))
}

async fn delete_edge(
    State(m): State<AppState>,
    Admin(actor): Admin,
    Path(site): Path<String>,
) -> ApiResult<Value> {
    blocking(move || m.delete_edge(&site, &actor)).await?;
    Ok(ok())
}

async fn revoke_edge(
    State(m): State<AppState>,
    Admin(actor): Admin,
    Path(site): Path<String>,
) -> ApiResult<Value> {
    blocking(move || m.revoke_edge(&site, &actor)).await?;
    Ok(ok())
}

async fn approve_edge(
    State(m): State<AppState>,
    Admin(actor): Admin,
    Path(site): Path<String>,
) -> ApiResult<Value> {
    blocking(move || m.approve_edge(&site, &actor)).await?;
    Ok(ok())
}

#[derive(Deserialize)]
struct SiteGroups {
    groups: Vec<String>,
}

async fn set_site_groups(
    State(m): State<AppState>,
    Admin(actor): Admin,
    Path(site): Path<String>,
    body: Bytes,
) -> ApiResult<Value> {
    let SiteGroups { groups } = json_body(&body)?;
    blocking(move || m.set_site_groups(&site, &groups, &actor)).await?;
    Ok(ok())
}

#[derive(Deserialize)]
struct ReadinessQuery {
    channel: String,
    path: Option<String>,
}

async fn readiness(
    State(m): State<AppState>,
    _: Admin,
    Query(q): Query<ReadinessQuery>,
) -> Json<Readiness> {
    Json(m.readiness(&q.channel, q.path.as_deref()))
}

#[derive(Deserialize)]
struct ScopeQuery {
    scope: Option<String>,
}

fn scope_of(q: &ScopeQuery) -> Result<Scope, ManagerError> {
    Scope::parse(q.scope.as_deref().unwrap_or("global"))
}

async fn put_channel(
    State(m): State<AppState>,
    Admin(actor): Admin,
    Path(name): Path<String>,
    Query(q): Query<ScopeQuery>,
    body: Bytes,
) -> ApiResult<Value> {
    let scope = scope_of(&q)?;
    let channel: Value = json_body(&body)?;
    blocking(move || m.put_channel(&scope, &name, channel, &actor)).await?;
    Ok(ok())
}

async fn delete_channel(
    State(m): State<AppState>,
    Admin(actor): Admin,
    Path(name): Path<String>,
    Query(q): Query<ScopeQuery>,
) -> ApiResult<Value> {
    let scope = scope_of(&q)?;
    blocking(move || m.delete_channel(&scope, &name, &actor)).await?;
    Ok(ok())
}

#[derive(Serialize)]
struct ScopeText {
    scope: String,
    toml: String,
}

async fn get_scope(
    State(m): State<AppState>,
    _: Admin,
    Path(scope): Path<String>,
) -> ApiResult<ScopeText> {
    let scope = Scope::parse(&scope)?;
    let toml = blocking({
        let scope = scope.clone();
        move || m.scope_text(&scope)
    })
    .await?;
    Ok(Json(ScopeText {
        scope: scope.to_string(),
        toml,
    }))
}

async fn put_scope(
    State(m): State<AppState>,
    Admin(actor): Admin,
    Path(scope): Path<String>,
    body: Bytes,
) -> ApiResult<Value> {
    let scope = Scope::parse(&scope)?;
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ManagerError::BadRequest("the body must be UTF-8 TOML".into()))?;
    blocking(move || m.put_scope(&scope, &text, &actor)).await?;
    Ok(ok())
}

async fn groups(State(m): State<AppState>, _: Admin) -> ApiResult<Vec<GroupInfo>> {
    Ok(Json(blocking(move || m.groups()).await?))
}

#[derive(Deserialize)]
struct GroupBody {
    #[serde(default)]
    priority: i64,
}

async fn put_group(
    State(m): State<AppState>,
    Admin(actor): Admin,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Value> {
    let GroupBody { priority } = if body.is_empty() {
        GroupBody { priority: 0 }
    } else {
        json_body(&body)?
    };
    blocking(move || m.put_group(&name, priority, &actor)).await?;
    Ok(ok())
}

async fn delete_group(
    State(m): State<AppState>,
    Admin(actor): Admin,
    Path(name): Path<String>,
) -> ApiResult<Value> {
    blocking(move || m.delete_group(&name, &actor)).await?;
    Ok(ok())
}

async fn diff(State(m): State<AppState>, _: Admin) -> ApiResult<DiffReply> {
    Ok(Json(blocking(move || m.diff()).await?))
}

#[derive(Deserialize, Default)]
struct PublishBody {
    #[serde(default)]
    comment: String,
}

async fn publish(State(m): State<AppState>, Admin(actor): Admin, body: Bytes) -> ApiResult<Value> {
    let PublishBody { comment } = if body.is_empty() {
        PublishBody::default()
    } else {
        json_body(&body)?
    };
    let version = blocking(move || m.publish(&comment, &actor)).await?;
    Ok(Json(json!({"version": version})))
}

async fn history(State(m): State<AppState>, _: Admin) -> ApiResult<Vec<HistoryEntry>> {
    Ok(Json(blocking(move || m.history()).await?))
}

#[derive(Deserialize)]
struct RollbackQuery {
    version: u64,
}

async fn rollback(
    State(m): State<AppState>,
    Admin(actor): Admin,
    Query(q): Query<RollbackQuery>,
) -> ApiResult<Value> {
    let version = blocking(move || m.rollback(q.version, &actor)).await?;
    Ok(Json(json!({"version": version})))
}

#[derive(Deserialize)]
struct SiteConfigQuery {
    #[serde(default)]
    draft: bool,
}

async fn site_config(
    State(m): State<AppState>,
    _: Admin,
    Path(site): Path<String>,
    Query(q): Query<SiteConfigQuery>,
) -> ApiResult<SiteConfig> {
    Ok(Json(blocking(move || m.site_config(&site, q.draft)).await?))
}

#[derive(Deserialize)]
struct ActionQuery {
    channel: Option<String>,
    url: Option<String>,
    scope: Option<String>,
}

async fn create_action(
    State(m): State<AppState>,
    Admin(actor): Admin,
    Path(which): Path<String>,
    Query(q): Query<ActionQuery>,
) -> ApiResult<ActionStatus> {
    let need_url = || {
        q.url
            .clone()
            .ok_or_else(|| ManagerError::BadRequest(format!("{which} needs ?url=URL")))
    };
    let action = match which.as_str() {
        "sync" => FleetAction::Sync {
            channel: q
                .channel
                .clone()
                .ok_or_else(|| ManagerError::BadRequest("sync needs ?channel=NAME".into()))?,
        },
        "purge" => FleetAction::Purge { url: need_url()? },
        "pin" => FleetAction::Pin { url: need_url()? },
        "unpin" => FleetAction::Unpin { url: need_url()? },
        other => {
            return Err(ManagerError::NotFound(format!(
                "no action {other}: sync, purge, pin or unpin"
            )));
        }
    };
    let scope = Scope::parse(q.scope.as_deref().unwrap_or("global"))?;
    Ok(Json(
        blocking(move || m.create_action(action, &scope, &actor)).await?,
    ))
}

async fn action_status(
    State(m): State<AppState>,
    _: Admin,
    Path(which): Path<String>,
) -> ApiResult<ActionStatus> {
    let id: u64 = which
        .parse()
        .map_err(|_| ManagerError::NotFound(format!("no action {which}")))?;
    Ok(Json(blocking(move || m.action_status(id)).await?))
}

async fn actions(State(m): State<AppState>, _: Admin) -> ApiResult<Vec<ActionStatus>> {
    Ok(Json(blocking(move || m.recent_actions(100)).await?))
}

async fn join_tokens(State(m): State<AppState>, _: Admin) -> ApiResult<Vec<TokenInfo>> {
    Ok(Json(blocking(move || m.join_tokens()).await?))
}

#[derive(Deserialize)]
struct NewJoinToken {
    label: String,
    /// How long it enrols edges, e.g. "7d"; none: until revoked.
    expires_in: Option<String>,
}

async fn create_join_token(
    State(m): State<AppState>,
    Admin(actor): Admin,
    body: Bytes,
) -> ApiResult<NewToken> {
    let request: NewJoinToken = json_body(&body)?;
    let expires = match request.expires_in {
        Some(text) => {
            let d = humantime::parse_duration(&text)
                .map_err(|e| ManagerError::BadRequest(format!("expires_in {text:?}: {e}")))?;
            Some(
                crate::manager::unix_secs().saturating_add(d.as_secs().min(i64::MAX as u64) as i64),
            )
        }
        None => None,
    };
    Ok(Json(
        blocking(move || m.create_join_token(&request.label, expires, &actor)).await?,
    ))
}

async fn revoke_join_token(
    State(m): State<AppState>,
    Admin(actor): Admin,
    Path(id): Path<i64>,
) -> ApiResult<Value> {
    blocking(move || m.revoke_join_token(id, &actor)).await?;
    Ok(ok())
}

#[derive(Serialize, Deserialize)]
struct Settings {
    approve_new_edges: bool,
}

async fn settings(State(m): State<AppState>, _: Admin) -> ApiResult<Settings> {
    let approve_new_edges = blocking(move || m.approve_new_edges()).await?;
    Ok(Json(Settings { approve_new_edges }))
}

async fn put_settings(
    State(m): State<AppState>,
    Admin(actor): Admin,
    body: Bytes,
) -> ApiResult<Settings> {
    let Settings { approve_new_edges } = json_body(&body)?;
    blocking(move || m.set_approve_new_edges(approve_new_edges, &actor)).await?;
    Ok(Json(Settings { approve_new_edges }))
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<u32>,
}

async fn audit(
    State(m): State<AppState>,
    _: Admin,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Vec<AuditEntry>> {
    let limit = q.limit.unwrap_or(200).min(10_000);
    Ok(Json(blocking(move || m.audit_log(limit)).await?))
}
