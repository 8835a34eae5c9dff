//! Sessions on requests, CSRF and origin checks, roles, security headers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, StatusCode};

use super::{Dashboard, layout, now};
use crate::auth::{Role, SessionToken, User, lookup_session};

pub const SESSION_COOKIE: &str = "outpost_session";
/// A form bigger than this is refused: the largest is a scope's TOML.
const MAX_FORM_BYTES: usize = 1024 * 1024;

/// A logged-in user and their session, for handlers.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub token: SessionToken,
}

impl Session {
    pub fn csrf(&self) -> String {
        self.token.csrf_token()
    }

    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }

    /// 403 unless an admin.
    pub fn require_admin(&self) -> Result<(), Response> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(layout::error_page(
                StatusCode::FORBIDDEN,
                "Only an admin may do this; your role is viewer.",
            ))
        }
    }
}

/// Where a request came from, for the audit log.
/// Who a dashboard change is audited as, and from where.
pub fn actor(session: &Session, extensions: &http::Extensions) -> crate::manager::Actor {
    crate::manager::Actor {
        who: format!("user:{}", session.user.name),
        from: remote(extensions),
    }
}

pub fn remote(parts_or_extensions: &http::Extensions) -> String {
    parts_or_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
        .unwrap_or_else(|| "unknown".to_owned())
}

pub fn session_token(headers: &HeaderMap) -> Option<SessionToken> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == SESSION_COOKIE)
        // A stale cookie of the same name (another path) may come first.
        .find_map(|(_, value)| SessionToken::parse(value))
}

fn find_session(dashboard: &Dashboard, headers: &HeaderMap) -> Result<Option<Session>, Response> {
    let Some(token) = session_token(headers) else {
        return Ok(None);
    };
    match lookup_session(&dashboard.conn(), &token, now()) {
        Ok(Some(user)) => Ok(Some(Session { user, token })),
        Ok(None) => Ok(None),
        Err(e) => Err(layout::internal_error(&e)),
    }
}

impl FromRequestParts<Arc<Dashboard>> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        dashboard: &Arc<Dashboard>,
    ) -> Result<Self, Self::Rejection> {
        if let Some(session) = parts.extensions.get::<Session>() {
            return Ok(session.clone());
        }
        match find_session(dashboard, &parts.headers)? {
            Some(session) => Ok(session),
            None => Err(to_login(parts.uri.path_and_query().map(|p| p.as_str()))),
        }
    }
}

impl axum::extract::OptionalFromRequestParts<Arc<Dashboard>> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        dashboard: &Arc<Dashboard>,
    ) -> Result<Option<Self>, Self::Rejection> {
        find_session(dashboard, &parts.headers)
    }
}

fn to_login(next: Option<&str>) -> Response {
    match next {
        Some(next) if next != "/" => {
            Redirect::to(&format!("/login?next={}", super::html::query_value(next))).into_response()
        }
        _ => Redirect::to("/login").into_response(),
    }
}

/// Checks every POST before its handler: origin, session and CSRF token.
pub async fn guard_posts(
    State(dashboard): State<Arc<Dashboard>>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    if !same_origin(request.headers()) {
        return layout::error_page(
            StatusCode::FORBIDDEN,
            "Refused: this form was sent from another site (Origin or Referer does not match).",
        );
    }
    if request.uri().path() == "/login" {
        return next.run(request).await;
    }
    let session = match find_session(&dashboard, request.headers()) {
        Ok(Some(session)) => session,
        Ok(None) => return to_login(None),
        Err(response) => return response,
    };
    let (mut parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return layout::error_page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "The form is larger than 1 MiB.",
            );
        }
    };
    let submitted = url::form_urlencoded::parse(&bytes)
        .find(|(name, _)| name == "csrf")
        .map(|(_, value)| value.into_owned());
    if !submitted.is_some_and(|token| session.token.csrf_matches(&token)) {
        return layout::error_page(
            StatusCode::FORBIDDEN,
            "Refused: the form's CSRF token is missing or wrong. Reload the page and try again.",
        );
    }
    parts.extensions.insert(session);
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// True unless Origin (or, without it, Referer) names another origin than
/// the Host the request was sent to. Browsers send Origin on every POST;
/// tools like curl send neither and rely on the CSRF token alone.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let claimed = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .map(|v| v.to_str().ok().and_then(authority_of));
    match claimed {
        None => true,
        Some(Some(authority)) => authority.eq_ignore_ascii_case(host),
        // "Origin: null" (sandboxed frames, some redirects) or garbage.
        Some(None) => false,
    }
}

fn authority_of(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end]).filter(|a| !a.is_empty())
}

/// Headers on every dashboard response.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/assets/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !is_asset {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The `Set-Cookie` value that starts a session. No `Max-Age`: the
/// server ends idle sessions; the browser forgets the cookie when it
/// closes.
pub fn session_cookie(token: &SessionToken, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{secure}",
        token.as_str()
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("outpost_session=; Path=/"))
}

pub fn clear_cookie(secure: bool) -> HeaderValue {
    if secure {
        HeaderValue::from_static(
            "outpost_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; Secure",
        )
    } else {
        HeaderValue::from_static("outpost_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn the_session_cookie_is_found_among_others_and_odd_ones_are_ignored() {
        let token = "ab".repeat(32);
        let mut map = HeaderMap::new();
        map.append(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; lang=en"),
        );
        map.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; outpost_session={token}; y=2")).unwrap(),
        );
        assert_eq!(
            session_token(&map).map(|t| t.as_str().to_owned()),
            Some(token)
        );
        let mut odd = HeaderMap::new();
        odd.insert(
            header::COOKIE,
            HeaderValue::from_static("outpost_session=short; outpost_sessionx=1"),
        );
        assert!(session_token(&odd).is_none());
        let mut twice = HeaderMap::new();
        twice.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!(
                "outpost_session=old; outpost_session={}",
                "cd".repeat(32)
            ))
            .unwrap(),
        );
        assert!(session_token(&twice).is_some());
    }

    #[test]
    fn origin_must_match_the_host_when_present() {
        assert!(same_origin(&headers(&[("host", "mgr:8443")])));
        assert!(same_origin(&headers(&[
            ("host", "mgr:8443"),
            ("origin", "https://mgr:8443")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "mgr:8443"),
            ("origin", "https://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "mgr:8443"),
            ("origin", "null")
        ])));
        assert!(same_origin(&headers(&[
            ("host", "mgr:8443"),
            ("referer", "https://mgr:8443/config?scope=global")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "mgr:8443"),
            ("referer", "https://mgr:8443.evil.example/")
        ])));
    }
}
