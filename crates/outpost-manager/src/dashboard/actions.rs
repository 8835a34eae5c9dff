//! `/actions`: start a sync, purge, pin or unpin for a scope (admins), and
//! follow each action's progress per site.

use std::sync::Arc;

use axum::Form;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use outpost_protocol::{ActionState, ActionStatus, FleetAction};
use serde::Deserialize;

use super::guard::actor;
use super::html::{Markup, html, path_segment, timestamp};
use super::layout::refused;
use super::layout::{error_page, page};
use super::{Dashboard, Session};
use crate::scope::Scope;

/// Sites listed per action; the rest are counted.
const SITES_LISTED: usize = 50;

pub async fn actions(
    State(dashboard): State<Arc<Dashboard>>,
    session: Session,
) -> Result<Response, Response> {
    let recent = dashboard.manager.recent_actions(50).map_err(refused)?;
    let body = render_actions(
        &recent,
        session.is_admin().then(|| session.csrf()).as_deref(),
    );
    Ok(page("Actions", &session, "/actions", &body))
}

#[derive(Deserialize)]
pub struct ActionForm {
    kind: String,
    target: String,
    scope: String,
}

pub async fn start_action(
    State(dashboard): State<Arc<Dashboard>>,
    session: Session,
    extensions: http::Extensions,
    Form(form): Form<ActionForm>,
) -> Result<Response, Response> {
    session.require_admin()?;
    let target = form.target.trim().to_owned();
    if target.is_empty() {
        return Err(error_page(
            http::StatusCode::BAD_REQUEST,
            "Name a channel (sync) or a URL (purge, pin, unpin).",
        ));
    }
    let action = match form.kind.as_str() {
        "sync" => FleetAction::Sync { channel: target },
        "purge" => FleetAction::Purge { url: target },
        "pin" => FleetAction::Pin { url: target },
        "unpin" => FleetAction::Unpin { url: target },
        other => {
            return Err(error_page(
                http::StatusCode::BAD_REQUEST,
                &format!("Unknown action {other:?}: sync, purge, pin or unpin."),
            ));
        }
    };
    let scope = Scope::parse(form.scope.trim()).map_err(refused)?;
    dashboard
        .manager
        .create_action(action, &scope, &actor(&session, &extensions))
        .map_err(refused)?;
    Ok(Redirect::to("/actions").into_response())
}

/// The form (when `csrf` is given: admins) and the recent actions.
pub fn render_actions(recent: &[ActionStatus], csrf: Option<&str>) -> Markup {
    let mut out = Markup::new();
    out.raw("<h1>Actions</h1>");
    if let Some(csrf) = csrf {
        html!(
            out,
            "<form method=\"post\" action=\"/actions\" id=\"action-form\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">",
            csrf
        );
        out.raw("<label>Action <select name=\"kind\" id=\"kind\"><option value=\"sync\">sync channel now</option><option value=\"purge\">purge URL</option><option value=\"pin\">pin URL</option><option value=\"unpin\">unpin URL</option></select></label> ");
        out.raw("<label>Channel or URL <input name=\"target\" id=\"target\" size=\"40\" required></label> ");
        out.raw("<label>Scope <input name=\"scope\" id=\"scope\" value=\"global\" size=\"16\" title=\"global, group:NAME or site:NAME\"></label> ");
        out.raw("<button type=\"submit\" id=\"start\">Start</button></form>");
    }
    if recent.is_empty() {
        out.raw("<p class=\"muted\">No action yet.</p>");
        return out;
    }
    out.raw("<div id=\"actions-live\" data-refresh><table id=\"actions\"><thead><tr><th>#</th><th>Action</th><th>Scope</th><th>Started</th><th>By</th><th>Progress</th><th>Sites</th></tr></thead><tbody>");
    for action in recent {
        let count = |state: ActionState| action.sites.iter().filter(|s| s.state == state).count();
        html!(
            out,
            "<tr data-action=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            action.id,
            action.id,
            action.action.to_string(),
            action.scope,
            timestamp(action.created),
            action.created_by
        );
        html!(
            out,
            "<td><span class=\"state done\">{} done</span> <span class=\"state pending\">{} pending</span> <span class=\"state failed\">{} failed</span></td><td>",
            count(ActionState::Done),
            count(ActionState::Pending),
            count(ActionState::Failed)
        );
        for site in action.sites.iter().take(SITES_LISTED) {
            html!(
                out,
                "<a href=\"/sites/{}\">{}</a> <span class=\"state {}\">{}</span>",
                path_segment(&site.site),
                site.site,
                site.state.as_str(),
                site.state.as_str()
            );
            if let Some(detail) = &site.detail {
                html!(out, " <span class=\"muted\">{}</span>", detail);
            }
            out.raw("<br>");
        }
        if action.sites.len() > SITES_LISTED {
            html!(
                out,
                "<span class=\"muted\">and {} more sites</span>",
                action.sites.len() - SITES_LISTED
            );
        }
        out.raw("</td></tr>");
    }
    out.raw("</tbody></table><p class=\"muted\"><span id=\"refreshed\"></span></p></div>");
    out
}
