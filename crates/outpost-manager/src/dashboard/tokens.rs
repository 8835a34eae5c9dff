//! Join tokens (admin only): list, make, revoke.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::guard::actor;
use super::html::{Markup, html, timestamp};
use super::layout::page;
use super::layout::refused;
use super::{Dashboard, Session, now};

type Page = Result<Response, Response>;

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: i64,
    pub label: String,
    pub created: i64,
    pub expires: Option<i64>,
    pub revoked: Option<i64>,
    pub uses: Option<u64>,
}

/// A token just made: shown on this one page and never again.
pub struct NewTokenView<'a> {
    pub label: &'a str,
    pub token: &'a str,
}

pub fn render_tokens(
    tokens: &[TokenRow],
    made: Option<NewTokenView<'_>>,
    approve_new_edges: bool,
    csrf: &str,
    now: i64,
) -> Markup {
    let mut out = Markup::new();
    out.raw("<h1>Join tokens</h1>");
    let (now_word, change, value) = if approve_new_edges {
        (
            "on: a new edge waits (pending) until an admin approves it on its site page",
            "Turn off",
            "false",
        )
    } else {
        ("off: a valid join token is enough", "Turn on", "true")
    };
    html!(
        out,
        "<form method=\"post\" action=\"/tokens/approval\" id=\"approval-form\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"on\" value=\"{}\">Approve new edges: <span id=\"approval\">{}</span> <button type=\"submit\" id=\"approval-toggle\">{}</button></form>",
        csrf,
        value,
        now_word,
        change
    );
    if let Some(made) = made {
        html!(
            out,
            "<div class=\"notice\" id=\"new-token\"><p>New join token <strong>{}</strong>; copy it now, it is not shown again:</p><pre>{}</pre><p>On the edge: <code>outpost serve --manager https://MANAGER:PORT --join-token {} --site NAME --manager-fingerprint SHA256</code></p></div>",
            made.label,
            made.token,
            made.token
        );
    }
    html!(
        out,
        "<form method=\"post\" action=\"/tokens\" id=\"token-form\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><label>Label <input name=\"label\" id=\"label\" required maxlength=\"100\"></label> <label>Valid for <input name=\"hours\" id=\"hours\" type=\"number\" min=\"1\" value=\"168\" size=\"5\"> hours</label> <button type=\"submit\" id=\"make-token\">Make a join token</button></form>",
        csrf
    );
    if tokens.is_empty() {
        out.raw("<p class=\"muted\">No join token yet.</p>");
        return out;
    }
    out.raw("<table id=\"tokens\"><thead><tr><th>Label</th><th>Made</th><th>Expires</th><th>Edges enrolled</th><th>State</th><th></th></tr></thead><tbody>");
    for token in tokens {
        let expires = token
            .expires
            .map(timestamp)
            .unwrap_or_else(|| "never".into());
        let (class, state) = match (token.revoked, token.expires) {
            (Some(_), _) => ("revoked", "revoked"),
            (None, Some(expires)) if expires <= now => ("down", "expired"),
            _ => ("up", "valid"),
        };
        html!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td><span class=\"state {}\">{}</span></td><td>",
            token.label,
            timestamp(token.created),
            expires,
            token.uses.unwrap_or(0),
            class,
            state
        );
        if state == "valid" {
            html!(
                out,
                "<form method=\"post\" action=\"/tokens/{}/revoke\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Revoke</button></form>",
                token.id,
                csrf
            );
        }
        out.raw("</td></tr>");
    }
    out.raw("</tbody></table>");
    out
}

pub async fn tokens(State(dashboard): State<Arc<Dashboard>>, session: Session) -> Page {
    session.require_admin()?;
    tokens_page(&dashboard, &session, None)
}

fn tokens_page(dashboard: &Dashboard, session: &Session, made: Option<NewTokenView<'_>>) -> Page {
    let rows: Vec<TokenRow> = dashboard
        .manager
        .join_tokens()
        .map_err(refused)?
        .into_iter()
        .map(|t| TokenRow {
            id: t.id,
            label: t.label,
            created: t.created,
            expires: t.expires,
            revoked: t.revoked,
            uses: t.uses,
        })
        .collect();
    let approve = dashboard.manager.approve_new_edges().map_err(refused)?;
    let body = render_tokens(&rows, made, approve, &session.csrf(), now());
    Ok(page("Join tokens", session, "/tokens", &body))
}

#[derive(Deserialize)]
pub struct TokenForm {
    label: String,
    hours: Option<i64>,
}

pub async fn make_token(
    State(dashboard): State<Arc<Dashboard>>,
    session: Session,
    extensions: http::Extensions,
    Form(form): Form<TokenForm>,
) -> Page {
    session.require_admin()?;
    let expires = form
        .hours
        .filter(|h| *h > 0)
        .map(|h| now().saturating_add(h.saturating_mul(3600)));
    let made = dashboard
        .manager
        .create_join_token(form.label.trim(), expires, &actor(&session, &extensions))
        .map_err(refused)?;
    tokens_page(
        &dashboard,
        &session,
        Some(NewTokenView {
            label: &made.label,
            token: &made.token,
        }),
    )
}

#[derive(Deserialize)]
pub struct ApprovalForm {
    on: bool,
}

pub async fn set_approval(
    State(dashboard): State<Arc<Dashboard>>,
    session: Session,
    extensions: http::Extensions,
    Form(form): Form<ApprovalForm>,
) -> Page {
    session.require_admin()?;
    dashboard
        .manager
        .set_approve_new_edges(form.on, &actor(&session, &extensions))
        .map_err(refused)?;
    Ok(Redirect::to("/tokens").into_response())
}

pub async fn revoke_token(
    State(dashboard): State<Arc<Dashboard>>,
    session: Session,
    extensions: http::Extensions,
    Path(id): Path<i64>,
) -> Page {
    session.require_admin()?;
    dashboard
        .manager
        .revoke_join_token(id, &actor(&session, &extensions))
        .map_err(refused)?;
    Ok(Redirect::to("/tokens").into_response())
}
