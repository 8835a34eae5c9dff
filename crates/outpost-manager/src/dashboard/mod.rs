//! The dashboard: server-rendered pages for people, behind a login.
//!
//! Owns the page routes (`/`, `/login`, `/logout`, `/readiness`,
//! `/sites/{site}`, `/alerts`, `/actions`, `/config`, `/audit`, `/tokens`)
//! and their static assets (`/assets/...`). Pages read without JavaScript;
//! one small
//! script (served as a file, so the Content-Security-Policy needs no
//! `unsafe-inline`) refreshes the live parts.
//!
//! Invariants:
//! - every page but `/login` and the assets needs a valid session;
//!   changes need the admin role (403 otherwise);
//! - every POST passes [`guard::guard_posts`] first: Origin/Referer, when
//!   present, must name this host, and every POST but the login form must
//!   carry the session's CSRF token in the `csrf` field;
//! - every value on a page goes through [`html::Esc`];
//! - every response carries the security headers of
//!   [`guard::security_headers`] and is not cached.

// Handlers refuse with a ready page (`Result<_, Response>`, axum's idiom);
// the size of `Response` does not matter on this path.
#![allow(clippy::result_large_err)]

pub mod html;

mod actions;
mod audit;
mod config;
mod fleet;
mod groups;
mod guard;
mod layout;
mod login;
mod pages;
mod readiness;
mod site;
mod tokens;

use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::routing::{get, post};
use rusqlite::Connection;

use crate::auth::LoginThrottle;
use crate::{Actor, Manager, ManagerError};

pub use guard::{SESSION_COOKIE, Session};

/// What the dashboard's handlers share.
pub struct Dashboard {
    manager: Arc<Manager>,
    /// Set the cookie's `Secure` attribute: the manager serves TLS.
    secure_cookies: bool,
    throttle: Mutex<LoginThrottle>,
}

impl Dashboard {
    /// Brings the dashboard's tables in the manager's database up to date.
    pub fn new(manager: Arc<Manager>, secure_cookies: bool) -> Result<Arc<Self>, ManagerError> {
        manager
            .db()
            .migrate_module(crate::auth::MODULE, crate::auth::MIGRATIONS)?;
        Ok(Arc::new(Self {
            manager,
            secure_cookies,
            throttle: Mutex::new(LoginThrottle::new()),
        }))
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.manager.db().connection()
    }

    /// Whether the session cookie gets `Secure`: when the manager serves
    /// TLS, or a TLS-terminating proxy in front says the browser used
    /// HTTPS. Trusting that header can only make the cookie stricter (a
    /// client that fakes it over plain HTTP loses its own session).
    fn secure_for(&self, headers: &http::HeaderMap) -> bool {
        self.secure_cookies
            || headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
    }

    fn throttle(&self) -> MutexGuard<'_, LoginThrottle> {
        self.throttle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a change or a login in the audit log.
    /// Records a login in the audit log. A failure to write it is logged,
    /// not shown: it must not decide whether someone may log in.
    fn audit(&self, user: &str, from: &str, what: &str, detail: &str) {
        let actor = Actor {
            who: format!("user:{user}"),
            from: from.to_owned(),
        };
        if let Err(e) = self.manager.audit(&actor, what, detail) {
            tracing::error!("audit log: {e}");
        }
    }
}

/// The dashboard's routes, to merge into the manager's router (any state
/// type: the dashboard carries its own).
pub fn router<S: Clone + Send + Sync + 'static>(dashboard: Arc<Dashboard>) -> Router<S> {
    Router::new()
        .route("/", get(pages::fleet))
        .route("/readiness", get(pages::readiness))
        .route("/sites/{site}", get(pages::site))
        .route("/sites/{site}/revoke", post(pages::revoke_site))
        .route("/sites/{site}/approve", post(pages::approve_site))
        .route("/sites/{site}/sync", post(pages::sync_site))
        .route("/alerts", get(pages::alerts))
        .route(
            "/actions",
            get(actions::actions).post(actions::start_action),
        )
        .route("/audit", get(pages::audit))
        .route("/config", get(pages::config))
        .route("/config/draft", post(pages::save_draft))
        .route("/config/publish", post(pages::publish))
        .route("/config/rollback", post(pages::rollback))
        .route("/config/group", post(groups::put_group))
        .route("/config/site-groups", post(groups::set_site_groups))
        .route("/tokens", get(tokens::tokens).post(tokens::make_token))
        .route("/tokens/{id}/revoke", post(tokens::revoke_token))
        .route("/tokens/approval", post(tokens::set_approval))
        .route("/login", get(login::login_page).post(login::login))
        .route("/logout", post(login::logout))
        .route("/assets/dashboard.js", get(layout::script))
        .route("/assets/dashboard.css", get(layout::stylesheet))
        .layer(axum::middleware::from_fn_with_state(
            dashboard.clone(),
            guard::guard_posts,
        ))
        .layer(axum::middleware::from_fn(guard::security_headers))
        .with_state(dashboard)
}

/// Unix seconds now.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
