//! Dashboard users, their sessions, CSRF tokens and login throttling.
//!
//! Owns the `users` and `user_sessions` tables (created by [`migrate`] in
//! the manager's SQLite database), argon2id password hashes, session
//! tokens and the per-name login throttle. Everything here is plain code
//! over a `rusqlite::Connection` and an explicit `now` (Unix seconds); the
//! HTTP side (cookies, forms, headers) lives in `crate::dashboard`.
//!
//! Invariants:
//! - a password is stored only as an argon2id PHC string; a session token
//!   only as its SHA-256; neither ever appears in a log or an error;
//! - a session is valid only while its user exists, is not disabled, and
//!   the session was used within [`SESSION_IDLE_SECONDS`];
//! - a login failure says the same thing whether the name exists or not,
//!   and costs the same time (an argon2 verification against a dummy hash).

mod command;
mod password;
mod sessions;
mod throttle;
mod users;

pub use command::{UserCommand, generate_password, run_in_data_dir, run_user_command};
pub use password::{hash_password, verify_password};
pub use sessions::{
    SESSION_IDLE_SECONDS, SessionToken, create_session, delete_session, delete_user_sessions,
    lookup_session,
};
pub use throttle::{LOGIN_FAILURES_PER_WINDOW, LOGIN_WINDOW_SECONDS, LoginThrottle};
pub use users::{
    LoginRecord, Role, User, add_user, authenticate, check_login, disable_user, find_user,
    list_users, login_record, set_password, valid_user_name,
};

/// What can go wrong with users and sessions.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("user database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("no user named {0:?}")]
    NoSuchUser(String),
    #[error("a user named {0:?} exists already")]
    UserExists(String),
    #[error("invalid user name {0:?}: use 1 to 64 of A-Z a-z 0-9 . _ - @")]
    BadUserName(String),
    #[error("the password is too short: at least {min} characters")]
    PasswordTooShort { min: usize },
    #[error("unknown role {0:?}: admin or viewer")]
    BadRole(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the system random source failed: {0}")]
    Random(String),
}

/// The name of this module's tables in the manager's `module_versions`.
pub const MODULE: &str = "dashboard";

/// This module's schema steps for the manager's per-module migrations:
/// entry `i` takes the tables from version `i` to `i + 1`; append only.
pub const MIGRATIONS: &[&str] = &["CREATE TABLE IF NOT EXISTS users (
            name TEXT PRIMARY KEY,
            password_hash TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
            created INTEGER NOT NULL,
            disabled INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE IF NOT EXISTS user_sessions (
            token_sha256 TEXT PRIMARY KEY,
            user_name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
            created INTEGER NOT NULL,
            last_used INTEGER NOT NULL,
            remote TEXT
        );
        CREATE INDEX IF NOT EXISTS user_sessions_by_user ON user_sessions(user_name);"];

/// Applies every step of [`MIGRATIONS`] (they are idempotent), for a bare
/// connection such as a unit test's.
pub fn migrate(conn: &rusqlite::Connection) -> Result<(), AuthError> {
    for step in MIGRATIONS {
        conn.execute_batch(step)?;
    }
    Ok(())
}

/// Fills `buf` from the operating system's random source.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<(), AuthError> {
    getrandom::fill(buf).map_err(|e| AuthError::Random(e.to_string()))
}

/// Lower-case hex of SHA-256.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(data);
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Equality that takes the same time wherever the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
