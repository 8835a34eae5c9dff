//! Groups on the config page: list them with their priority and sites,
//! and (admins) make or change a group and set a site's groups. Like the
//! scope texts these are drafts until published.

use std::sync::Arc;

use axum::Form;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::guard::actor;
use super::html::{Markup, html};
use super::layout::refused;
use super::{Dashboard, Session};
use crate::manager::GroupInfo;

pub fn render_groups(groups: &[GroupInfo], csrf: Option<&str>) -> Markup {
    let mut out = Markup::new();
    out.raw("<h2>Groups (draft)</h2>");
    if groups.is_empty() {
        out.raw("<p class=\"muted\">No group yet.</p>");
    } else {
        out.raw("<table id=\"groups\"><thead><tr><th>Group</th><th>Priority</th><th>Sites</th></tr></thead><tbody>");
        for group in groups {
            html!(
                out,
                "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                group.name,
                group.priority,
                group.sites.join(", ")
            );
        }
        out.raw("</tbody></table>");
    }
    let Some(csrf) = csrf else {
        return out;
    };
    html!(
        out,
        "<form method=\"post\" action=\"/config/group\" id=\"group-form\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><label>Group <input name=\"name\" id=\"group-name\" size=\"16\" required></label> <label>Priority <input name=\"priority\" id=\"group-priority\" type=\"number\" value=\"100\" size=\"5\"></label> <button type=\"submit\" id=\"put-group\">Make or change group</button> <span class=\"muted\">lower priority is applied first</span></form>",
        csrf
    );
    html!(
        out,
        "<form method=\"post\" action=\"/config/site-groups\" id=\"site-groups-form\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><label>Site <input name=\"site\" id=\"member-site\" size=\"16\" required></label> <label>Groups <input name=\"groups\" id=\"member-groups\" size=\"30\" placeholder=\"west, windows11\"></label> <button type=\"submit\" id=\"set-groups\">Set the site's groups</button></form>",
        csrf
    );
    out
}

#[derive(Deserialize)]
pub struct GroupForm {
    name: String,
    priority: i64,
}

pub async fn put_group(
    State(dashboard): State<Arc<Dashboard>>,
    session: Session,
    extensions: http::Extensions,
    Form(form): Form<GroupForm>,
) -> Result<Response, Response> {
    session.require_admin()?;
    let name = form.name.trim();
    dashboard
        .manager
        .put_group(name, form.priority, &actor(&session, &extensions))
        .map_err(refused)?;
    Ok(Redirect::to("/config?groups=1").into_response())
}

#[derive(Deserialize)]
pub struct SiteGroupsForm {
    site: String,
    groups: String,
}

pub async fn set_site_groups(
    State(dashboard): State<Arc<Dashboard>>,
    session: Session,
    extensions: http::Extensions,
    Form(form): Form<SiteGroupsForm>,
) -> Result<Response, Response> {
    session.require_admin()?;
    let groups: Vec<String> = form
        .groups
        .split([',', ' '])
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect();
    dashboard
        .manager
        .set_site_groups(form.site.trim(), &groups, &actor(&session, &extensions))
        .map_err(refused)?;
    Ok(Redirect::to("/config?groups=1").into_response())
}
