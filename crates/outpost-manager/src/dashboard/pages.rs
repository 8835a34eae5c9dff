//! The page handlers: each reads the manager's model, fills a view and
//! hands it to a renderer; changes call one `Manager` method as the
//! session's user and come back to a page that shows the result.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use outpost_protocol::FleetAction;
use serde::Deserialize;

use super::audit::{AlertRow, AuditRow, render_alerts, render_audit};
use super::config::{EditorView, HistoryRow, render_editor};
use super::fleet::{FleetFilter, FleetRow, render_fleet};
use super::groups::render_groups;
use super::guard::actor;
use super::html::{Markup, path_segment, query_value};
use super::layout::{internal_error, page, refused};
use super::readiness::render_readiness;
use super::site::{OriginRow, RenderedView, SiteView, render_site};
use super::{Dashboard, Session, now};
use crate::scope::Scope;

type Page = Result<Response, Response>;

// --- Fleet -----------------------------------------------------------------

pub async fn fleet(
    State(dashboard): State<Arc<Dashboard>>,
    session: Session,
    Query(filter): Query<FleetFilter>,
) -> Page {
    let manager = &dashboard.manager;
    let edges = manager.edge_list().edges;
    let mut traffic = {
        let manager = manager.clone();
        match tokio::task::spawn_blocking(move || manager.site_traffic(now())).await {
            Ok(Ok(traffic)) => traffic,
            Ok(Err(e)) => return Err(internal_error(&e)),
            Err(e) => return Err(internal_error(&e)),
        }
    };
    let rows: Vec<FleetRow> = edges
        .into_iter()
        .map(|summary| FleetRow {
            traffic: traffic.remove(&summary.site).unwrap_or_default(),
            summary,
        })
        .collect();
    let mut body = Markup::new();
    body.raw("<h1>Fleet</h1>");
    body.push(&filter.render_form());
    body.push(&render_fleet(
        &rows,
        &filter,
        manager.published_version(),
        now(),
    ));
    Ok(page("Fleet", &session, "/", &body))
}

// --- Readiness -------------------------------------------------------------

#[derive(Deserialize)]
pub struct ReadinessQuery {
    channel: Option<String>,
    path: Option<String>,
}

pub async fn readiness(
    State(dashboard): State<Arc<Dashboard>>,
    session: Session,
    Query(query): Query<ReadinessQuery>,
) -> Page {
    let manager = &dashboard.manager;
    let channels = manager.with_fleet(|fleet| published_channels(&fleet.published.snapshot));
    let channel = query.channel.filter(|c| !c.is_empty());
    let path = query
        .path
        .map(|p| p.trim().trim_start_matches('/').to_owned())
        .filter(|p| !p.is_empty());
    let matrix = match &channel {
        Some(channel) => vec![manager.readiness(channel, path.as_deref())],
        None => channels
            .iter()
            .map(|c| manager.readiness(c, path.as_deref()))
            .collect(),
    };
    let mut body = Markup::new();
    body.raw("<h1>Readiness</h1>");
    body.push(&render_readiness(
        &channels,
        &matrix,
        channel.as_deref(),
        path.as_deref(),
    ));
    Ok(page("Readiness", &session, "/readiness", &body))
}

/// Every channel name the published scopes define. Read from the few
/// scope texts, not from each site's rendered document (one per site).
fn published_channels(snapshot: &crate::model::merge::Snapshot) -> Vec<String> {
    let mut names = BTreeSet::new();
    for text in snapshot.scopes.values() {
        let Ok(doc) = text.parse::<toml::Table>() else {
            continue;
        };
        let Some(toml::Value::Array(entries)) = doc.get("channel") else {
            continue;
        };
        for entry in entries {
            if let Some(name) = entry.get("name").and_then(|n| n.as_str()) {
                names.insert(name.to_owned());
            }
        }
    }
    names.into_iter().collect()
}

// --- Site ------------------------------------------------------------------

pub async fn site(
    State(dashboard): State<Arc<Dashboard>>,
    session: Session,
    Path(site): Path<String>,
) -> Page {
    let manager = &dashboard.manager;
    let edge = manager.edge(&site).map_err(refused)?;
    let report = manager.with_fleet(|fleet| fleet.edges.get(&site).and_then(|e| e.report.clone()));
    let states: Vec<(i64, String)> = manager
        .state_history(&site, 50)
        .map_err(refused)?
        .into_iter()
        .map(|change| (change.at, change.state.as_str().to_owned()))
        .collect();
    let events: Vec<(i64, String, String)> = manager
        .site_events(&site, 50)
        .map_err(refused)?
        .into_iter()
        .map(|event| (event.at, event.kind, event.detail))
        .collect();
    let alerts = alert_rows(&dashboard, Some(&site), 50)?;
    let rendered = manager
        .site_config(&site, false)
        .ok()
        .map(|c| RenderedView {
            version: c.version,
            layers: c.layers,
            toml: c.toml,
            origins: c
                .origins
                .into_iter()
                .map(|o| OriginRow {
                    table: o.table,
                    key: o.key,
                    scope: o.scope,
                })
                .collect(),
        });
    let mut history = history_rows(&dashboard)?;
    history.truncate(10);
    let csrf = session.csrf();
    let body = render_site(&SiteView {
        edge: &edge,
        report: report.as_deref(),
        states: &states,
        events: &events,
        alerts: &alerts,
        rendered: rendered.as_ref(),
        history: &history,
        published_version: manager.published_version(),
        is_admin: session.is_admin(),
        csrf: &csrf,
        now: now(),
    });
    Ok(page(&format!("Site {site}"), &session, "", &body))
}

pub async fn revoke_site(
    State(dashboard): State<Arc<Dashboard>>,
    session: Session,
    extensions: http::Extensions,
    Path(site): Path<String>,
) -> Page {
    session.require_admin()?;
    dashboard
        .manager
        .revoke_edge(&site, &actor(&session, &extensions))
        .map_err(refused)?;
    Ok(Redirect::to(&format!("/sites/{}", path_segment(&site))).into_response())
}

pub async fn approve_site(
    State(dashboard): State<Arc<Dashboard>>,
    session: Session,
    extensions: http::Extensions,
    Path(site): Path<String>,
) -> Page {
    session.require_admin()?;
    dashboard
        .manager
        .approve_edge(&site, &actor(&session, &extensions))
        .map_err(refused)?;
    Ok(Redirect::to(&format!("/sites/{}", path_segment(&site))).into_response())
}

#[derive(Deserialize)]
pub struct SyncForm {
    channel: String,
}

pub async fn sync_site(
    State(dashboard): State<Arc<Dashboard>>,
    session: Session,
    extensions: http::Extensions,
    Path(site): Path<String>,
    Form(form): Form<SyncForm>,
) -> Page {
    session.require_admin()?;
    let scope = Scope::parse(&format!("site:{site}")).map_err(refused)?;
    dashboard
        .manager
        .create_action(
            FleetAction::Sync {
                channel: form.channel,
            },
            &scope,
            &actor(&session, &extensions),
        )
        .map_err(refused)?;
    Ok(Redirect::to(&format!("/sites/{}", path_segment(&site))).into_response())
}

// --- Alerts and audit --------------------------------------------------------

pub async fn alerts(State(dashboard): State<Arc<Dashboard>>, session: Session) -> Page {
    let rows = alert_rows(&dashboard, None, 500)?;
    let mut body = Markup::new();
    body.raw("<h1>Alerts</h1>");
    body.push(&render_alerts(&rows, true, now()));
    Ok(page("Alerts", &session, "/alerts", &body))
}

/// Alerts for the pages: open ones first, then newest first.
fn alert_rows(
    dashboard: &Dashboard,
    site: Option<&str>,
    limit: u32,
) -> Result<Vec<AlertRow>, Response> {
    let mut rows: Vec<AlertRow> = dashboard
        .manager
        .alert_history(site, limit)
        .map_err(refused)?
        .into_iter()
        .map(|a| AlertRow {
            site: a.site,
            kind: a.kind.as_str().to_owned(),
            subject: a.subject,
            detail: a.detail,
            opened: a.opened,
            closed: a.closed,
        })
        .collect();
    rows.sort_by_key(|a| (a.closed.is_some(), std::cmp::Reverse(a.opened)));
    Ok(rows)
}

pub async fn audit(State(dashboard): State<Arc<Dashboard>>, session: Session) -> Page {
    let rows: Vec<AuditRow> = dashboard
        .manager
        .audit_log(500)
        .map_err(refused)?
        .into_iter()
        .map(|e| AuditRow {
            at: e.at,
            who: e.who,
            from: e.from,
            what: e.what,
            detail: e.detail,
        })
        .collect();
    Ok(page("Audit", &session, "/audit", &render_audit(&rows)))
}

// --- Config ----------------------------------------------------------------

#[derive(Deserialize)]
pub struct ConfigQuery {
    scope: Option<String>,
    saved: Option<String>,
    published: Option<u64>,
    groups: Option<String>,
}

pub async fn config(
    State(dashboard): State<Arc<Dashboard>>,
    session: Session,
    Query(query): Query<ConfigQuery>,
) -> Page {
    let scope = parse_scope(query.scope.as_deref())?;
    let text = dashboard.manager.scope_text(&scope).map_err(refused)?;
    let message = match (query.saved, query.published) {
        (_, Some(version)) => Some(Ok(format!("Published version {version}."))),
        _ if query.groups.is_some() => Some(Ok(
            "Groups saved in the draft; not published yet.".to_owned()
        )),
        (Some(_), None) => Some(Ok(format!("Draft of {scope} saved; not published yet."))),
        _ => None,
    };
    editor(&dashboard, &session, &scope, &text, message, StatusCode::OK)
}

fn parse_scope(text: Option<&str>) -> Result<Scope, Response> {
    Scope::parse(text.filter(|s| !s.is_empty()).unwrap_or("global")).map_err(refused)
}

fn history_rows(dashboard: &Dashboard) -> Result<Vec<HistoryRow>, Response> {
    let mut rows: Vec<HistoryRow> = dashboard
        .manager
        .history()
        .map_err(refused)?
        .into_iter()
        .map(|h| HistoryRow {
            version: h.version,
            created: h.created,
            created_by: h.created_by,
            comment: h.comment,
        })
        .collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.version));
    Ok(rows)
}

fn editor(
    dashboard: &Dashboard,
    session: &Session,
    scope: &Scope,
    text: &str,
    message: Option<Result<String, String>>,
    status: StatusCode,
) -> Page {
    let manager = &dashboard.manager;
    let groups = manager.groups().map_err(refused)?;
    let mut scopes = vec!["global".to_owned()];
    for group in &groups {
        scopes.push(format!("group:{}", group.name));
    }
    // Site scopes with a text (draft or published); any other site is
    // reached with the form, so 10,000 sites do not make 10,000 links.
    let mut sites: BTreeSet<String> = manager.with_fleet(|fleet| {
        fleet
            .published
            .snapshot
            .scopes
            .keys()
            .filter(|s| s.starts_with("site:"))
            .cloned()
            .collect()
    });
    sites.extend(
        manager
            .draft()
            .map_err(refused)?
            .scopes
            .into_keys()
            .filter(|s| s.starts_with("site:")),
    );
    scopes.extend(sites);
    let current = scope.to_string();
    if !scopes.contains(&current) {
        scopes.push(current.clone());
    }
    let diff = manager.diff().map_err(refused)?;
    let diffs: Vec<(String, String)> = diff.scopes.into_iter().map(|d| (d.scope, d.diff)).collect();
    let history = history_rows(dashboard)?;
    let csrf = session.csrf();
    let body = render_editor(&EditorView {
        scopes: &scopes,
        scope: &current,
        text,
        message,
        published_version: diff.published_version,
        diffs: &diffs,
        history: &history,
        is_admin: session.is_admin(),
        csrf: &csrf,
    });
    let mut body = body;
    body.push(&render_groups(
        &groups,
        session.is_admin().then_some(csrf.as_str()),
    ));
    let mut response = page("Config", session, "/config", &body);
    *response.status_mut() = status;
    Ok(response)
}

#[derive(Deserialize)]
pub struct DraftForm {
    scope: String,
    toml: String,
}

pub async fn save_draft(
    State(dashboard): State<Arc<Dashboard>>,
    session: Session,
    extensions: http::Extensions,
    Form(form): Form<DraftForm>,
) -> Page {
    session.require_admin()?;
    let scope = parse_scope(Some(&form.scope))?;
    // Browsers send textarea lines with CRLF; the drafts keep LF.
    let text = form.toml.replace("\r\n", "\n");
    match dashboard
        .manager
        .put_scope(&scope, &text, &actor(&session, &extensions))
    {
        Ok(()) => Ok(Redirect::to(&format!(
            "/config?scope={}&saved=1",
            query_value(&scope.to_string())
        ))
        .into_response()),
        Err(e) if e.status().is_client_error() => editor(
            &dashboard,
            &session,
            &scope,
            &text,
            Some(Err(e.to_string())),
            e.status(),
        ),
        Err(e) => Err(refused(e)),
    }
}

#[derive(Deserialize)]
pub struct PublishForm {
    comment: String,
}

pub async fn publish(
    State(dashboard): State<Arc<Dashboard>>,
    session: Session,
    extensions: http::Extensions,
    Form(form): Form<PublishForm>,
) -> Page {
    session.require_admin()?;
    match dashboard
        .manager
        .publish(form.comment.trim(), &actor(&session, &extensions))
    {
        Ok(version) => Ok(Redirect::to(&format!("/config?published={version}")).into_response()),
        Err(e) if e.status().is_client_error() => {
            let text = dashboard
                .manager
                .scope_text(&Scope::Global)
                .map_err(refused)?;
            editor(
                &dashboard,
                &session,
                &Scope::Global,
                &text,
                Some(Err(format!("Not published: {e}"))),
                e.status(),
            )
        }
        Err(e) => Err(refused(e)),
    }
}

#[derive(Deserialize)]
pub struct RollbackForm {
    version: u64,
}

pub async fn rollback(
    State(dashboard): State<Arc<Dashboard>>,
    session: Session,
    extensions: http::Extensions,
    Form(form): Form<RollbackForm>,
) -> Page {
    session.require_admin()?;
    let version = dashboard
        .manager
        .rollback(form.version, &actor(&session, &extensions))
        .map_err(refused)?;
    Ok(Redirect::to(&format!("/config?published={version}")).into_response())
}
