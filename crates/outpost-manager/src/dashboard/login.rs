//! `/login` and `/logout`.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use http::StatusCode;
use http::header::{self, HeaderValue};
use serde::Deserialize;

use super::guard::{clear_cookie, remote, session_cookie};
use super::html::{Markup, html};
use super::layout::{self, head};
use super::{Dashboard, Session, now};
use crate::auth::{check_login, create_session, delete_session, login_record, valid_user_name};

/// Longer passwords are not even hashed.
const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    name: String,
    password: String,
    next: Option<String>,
}

/// The form; someone already logged in goes on to the page they wanted.
pub async fn login_page(session: Option<Session>, Query(query): Query<LoginQuery>) -> Response {
    if session.is_some() {
        let target = query
            .next
            .filter(|n| safe_next(n))
            .unwrap_or_else(|| "/".to_owned());
        return Redirect::to(&target).into_response();
    }
    login_form(StatusCode::OK, None, "", query.next.as_deref())
}

fn login_form(
    status: StatusCode,
    message: Option<&str>,
    name: &str,
    next: Option<&str>,
) -> Response {
    let mut out = Markup::new();
    head(&mut out, "Log in");
    out.raw("<form class=\"login\" method=\"post\" action=\"/login\"><h1>Outpost manager</h1>");
    if let Some(message) = message {
        html!(out, "<p class=\"error\" id=\"message\">{}</p>", message);
    }
    html!(
        out,
        "<label>Name <input name=\"name\" id=\"name\" autocomplete=\"username\" required value=\"{}\"></label>",
        name
    );
    out.raw("<label>Password <input type=\"password\" name=\"password\" id=\"password\" autocomplete=\"current-password\" required></label>");
    if let Some(next) = next.filter(|n| safe_next(n)) {
        html!(
            out,
            "<input type=\"hidden\" name=\"next\" value=\"{}\">",
            next
        );
    }
    out.raw("<p><button type=\"submit\" id=\"login\">Log in</button></p></form></body></html>");
    (status, Html(out.into_string())).into_response()
}

/// Only a path on this site: never `//host` or a scheme, so the login
/// form cannot be used to send someone elsewhere.
/// A path on this manager, nothing a browser could read as another host:
/// browsers drop tabs and newlines from a URL, so `/\t/evil.example` would
/// become `//evil.example`; any control character or space is refused.
fn safe_next(next: &str) -> bool {
    next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(|c| c.is_control() || c.is_whitespace())
}

pub async fn login(
    State(dashboard): State<Arc<Dashboard>>,
    extensions: http::Extensions,
    headers: http::HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let from = remote(&extensions);
    let at = now();
    // No user can have such a name or password: answer as for a wrong
    // password, without keeping the name (the throttle's memory is for
    // names that could exist).
    if !valid_user_name(&form.name) || form.password.len() > MAX_PASSWORD_BYTES {
        return login_form(
            StatusCode::UNAUTHORIZED,
            Some("Wrong name or password."),
            "",
            form.next.as_deref(),
        );
    }
    if let Err(wait) = dashboard.throttle().check(&form.name, at) {
        dashboard.audit(&form.name, &from, "login throttled", "");
        return login_form(
            StatusCode::TOO_MANY_REQUESTS,
            Some(&format!(
                "Too many failed logins with this name. Try again in {wait} s."
            )),
            &form.name,
            form.next.as_deref(),
        );
    }
    let checked = {
        let dashboard = dashboard.clone();
        let (name, password) = (form.name.clone(), form.password.clone());
        tokio::task::spawn_blocking(move || {
            // The connection is shared: hold it for the read only.
            let record = login_record(&dashboard.conn(), &name)?;
            check_login(record, &password)
        })
        .await
    };
    let user = match checked {
        Ok(Ok(user)) => user,
        Ok(Err(e)) => return layout::internal_error(&e),
        Err(e) => return layout::internal_error(&e),
    };
    let Some(user) = user else {
        dashboard.throttle().record_failure(&form.name, at);
        dashboard.audit(&form.name, &from, "login failed", "");
        return login_form(
            StatusCode::UNAUTHORIZED,
            Some("Wrong name or password."),
            &form.name,
            form.next.as_deref(),
        );
    };
    dashboard.throttle().record_success(&user.name);
    let token = match create_session(&dashboard.conn(), &user.name, Some(&from), at) {
        Ok(token) => token,
        Err(e) => return layout::internal_error(&e),
    };
    dashboard.audit(&user.name, &from, "login", user.role.as_str());
    let target = form
        .next
        .filter(|n| safe_next(n))
        .unwrap_or_else(|| "/".to_owned());
    let mut response = Redirect::to(&target).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&token, dashboard.secure_for(&headers)),
    );
    response
}

pub async fn logout(
    State(dashboard): State<Arc<Dashboard>>,
    session: Session,
    extensions: http::Extensions,
    headers: http::HeaderMap,
) -> Response {
    if let Err(e) = delete_session(&dashboard.conn(), &session.token) {
        return layout::internal_error(&e);
    }
    dashboard.audit(&session.user.name, &remote(&extensions), "logout", "");
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        clear_cookie(dashboard.secure_for(&headers)),
    );
    response
        .headers_mut()
        .insert("clear-site-data", HeaderValue::from_static("\"cookies\""));
    response
}

#[cfg(test)]
mod next_tests {
    use super::safe_next;

    #[test]
    fn only_paths_of_this_manager_are_followed() {
        assert!(safe_next("/readiness?channel=apps"));
        for bad in [
            "//evil.example",
            "/\t/evil.example",
            "/\\evil",
            "https://evil",
            "/\n/evil",
            "/ /x",
        ] {
            assert!(!safe_next(bad), "{bad:?}");
        }
    }
}
