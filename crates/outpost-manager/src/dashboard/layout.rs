//! The page frame (navigation, user, logout form), error pages, assets.

use axum::response::{Html, IntoResponse, Response};
use http::StatusCode;
use http::header::{self, HeaderValue};

use super::Session;
use super::html::{Markup, html};

const NAV: &[(&str, &str, bool)] = &[
    ("/", "Fleet", false),
    ("/readiness", "Readiness", false),
    ("/alerts", "Alerts", false),
    ("/actions", "Actions", false),
    ("/config", "Config", false),
    ("/audit", "Audit", false),
    ("/tokens", "Join tokens", true),
];

/// A full page: frame around `body`.
pub fn page(title: &str, session: &Session, active: &str, body: &Markup) -> Response {
    let mut out = Markup::new();
    head(&mut out, title);
    out.raw("<header><span class=\"brand\">Outpost manager</span><nav>");
    for (href, label, admin_only) in NAV {
        if *admin_only && !session.is_admin() {
            continue;
        }
        let class = if *href == active { "active" } else { "" };
        html!(
            out,
            "<a href=\"{}\" class=\"{}\">{}</a> ",
            href,
            class,
            label
        );
    }
    out.raw("</nav><span class=\"who\">");
    html!(
        out,
        "<span id=\"user\">{} ({})</span>",
        session.user.name,
        session.user.role
    );
    html!(
        out,
        "<form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Log out</button></form>",
        session.csrf()
    );
    out.raw("</span></header><main>");
    out.push(body);
    out.raw("</main></body></html>");
    Html(out.into_string()).into_response()
}

pub fn head(out: &mut Markup, title: &str) {
    out.raw("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.raw("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    html!(out, "<title>{} - Outpost manager</title>", title);
    out.raw("<link rel=\"stylesheet\" href=\"/assets/dashboard.css\">");
    out.raw("<script src=\"/assets/dashboard.js\" defer></script></head><body>");
}

/// A page that says what went wrong, with its status.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let mut out = Markup::new();
    head(&mut out, status.canonical_reason().unwrap_or("Error"));
    html!(
        out,
        "<main><h1>{}</h1><p class=\"error\" id=\"message\">{}</p><p><a href=\"/\">Back to the dashboard</a></p></main></body></html>",
        status.as_str(),
        message
    );
    (status, Html(out.into_string())).into_response()
}

/// A manager error as a page: its status and message (the messages are
/// written for people: check-config's, "no edge enrolled as X").
pub fn refused(error: crate::error::ManagerError) -> Response {
    let status = error.status();
    if status.is_server_error() {
        return internal_error(&error);
    }
    error_page(status, &error.to_string())
}

/// 500 for a failure on our side; the details go to the log, not the page.
pub fn internal_error(error: &dyn std::fmt::Display) -> Response {
    tracing::error!(%error, "dashboard");
    error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "The manager failed to answer; its log says why.",
    )
}

pub async fn script() -> Response {
    asset(
        include_str!("assets/dashboard.js"),
        "text/javascript; charset=utf-8",
    )
}

pub async fn stylesheet() -> Response {
    asset(
        include_str!("assets/dashboard.css"),
        "text/css; charset=utf-8",
    )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=300"),
            ),
        ],
        body,
    )
        .into_response()
}
