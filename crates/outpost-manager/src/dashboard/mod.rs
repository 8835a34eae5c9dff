//! The dashboard: server-rendered pages for people, behind a login.
//!
//! Owns the page routes (`/`, `/login`, `/logout`, `/readiness`,
//! `/sites/{site}`, `/alerts`, `/config`, `/audit`, `/tokens`) and their
//! static assets (`/assets/...`). Pages read without JavaScript; one small
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

mod audit;
mod config;
mod fleet;
mod guard;
mod layout;
mod login;
mod readiness;
mod site;
mod tokens;

use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::routing::{get, post};
use rusqlite::Connection;

use crate::auth::LoginThrottle;

pub use guard::{SESSION_COOKIE, Session};

/// What the dashboard's handlers share.
pub struct Dashboard {
    db: Arc<Mutex<Connection>>,
    /// Set the cookie's `Secure` attribute: the manager serves TLS.
    secure_cookies: bool,
    throttle: Mutex<LoginThrottle>,
}

impl Dashboard {
    pub fn new(db: Arc<Mutex<Connection>>, secure_cookies: bool) -> Arc<Self> {
        Arc::new(Self {
            db,
            secure_cookies,
            throttle: Mutex::new(LoginThrottle::new()),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn throttle(&self) -> MutexGuard<'_, LoginThrottle> {
        self.throttle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a change or a login in the audit log.
    fn audit(&self, who: &str, from: &str, what: &str, detail: &str) {
        tracing::info!(who, from, what, detail, "audit");
    }
}

/// The dashboard's routes, to merge into the manager's router.
pub fn router(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(layout::home))
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
