//! Dashboard sessions: a random 32-byte token in a cookie, its SHA-256 in
//! the `user_sessions` table, expiry after 12 hours without use.
//!
//! The CSRF token is derived from the session token (SHA-256 with a
//! domain-separation prefix), so it is per session, needs no storage and
//! cannot be computed by whoever lacks the cookie; the database holds
//! neither the session token nor the CSRF token.

use rusqlite::{Connection, OptionalExtension, params};

use super::{AuthError, Role, User, constant_time_eq, random_bytes, sha256_hex};

/// A session unused for this long is over.
pub const SESSION_IDLE_SECONDS: i64 = 12 * 3600;
/// `last_used` is written at most this often per session: a page that
/// refreshes every few seconds should not write to the database each time.
const TOUCH_EVERY_SECONDS: i64 = 60;

/// The secret the browser holds: 64 lower-case hex characters.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(..)")
    }
}

impl SessionToken {
    fn generate() -> Result<Self, AuthError> {
        let mut bytes = [0u8; 32];
        random_bytes(&mut bytes)?;
        Ok(Self(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// Accepts only the shape [`SessionToken::generate`] makes, so a
    /// cookie of any other shape never reaches the database.
    pub fn parse(raw: &str) -> Option<Self> {
        (raw.len() == 64 && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(raw.to_owned()))
    }

    /// The cookie value.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn stored_form(&self) -> String {
        sha256_hex(self.0.as_bytes())
    }

    /// The token every form of this session carries.
    pub fn csrf_token(&self) -> String {
        sha256_hex(format!("outpost-csrf\0{}", self.0).as_bytes())
    }

    /// Whether a submitted form's token belongs to this session.
    pub fn csrf_matches(&self, submitted: &str) -> bool {
        constant_time_eq(self.csrf_token().as_bytes(), submitted.as_bytes())
    }
}

/// Starts a session for `user` and forgets sessions that have expired.
pub fn create_session(
    conn: &Connection,
    user: &str,
    remote: Option<&str>,
    now: i64,
) -> Result<SessionToken, AuthError> {
    conn.execute(
        "DELETE FROM user_sessions WHERE last_used < ?1",
        [now - SESSION_IDLE_SECONDS],
    )?;
    let token = SessionToken::generate()?;
    conn.execute(
        "INSERT INTO user_sessions (token_sha256, user_name, created, last_used, remote)
         VALUES (?1, ?2, ?3, ?3, ?4)",
        params![token.stored_form(), user, now, remote],
    )?;
    Ok(token)
}

/// The session's user, when the session exists, is not idle-expired and
/// its user is enabled. Marks the session used.
pub fn lookup_session(
    conn: &Connection,
    token: &SessionToken,
    now: i64,
) -> Result<Option<User>, AuthError> {
    let key = token.stored_form();
    let row: Option<(String, String, i64, bool, i64)> = conn
        .query_row(
            "SELECT u.name, u.role, u.created, u.disabled, s.last_used
             FROM user_sessions s JOIN users u ON u.name = s.user_name
             WHERE s.token_sha256 = ?1",
            [&key],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            },
        )
        .optional()?;
    let Some((name, role, created, disabled, last_used)) = row else {
        return Ok(None);
    };
    if disabled || now - last_used > SESSION_IDLE_SECONDS {
        conn.execute("DELETE FROM user_sessions WHERE token_sha256 = ?1", [&key])?;
        return Ok(None);
    }
    if now - last_used >= TOUCH_EVERY_SECONDS {
        conn.execute(
            "UPDATE user_sessions SET last_used = ?2 WHERE token_sha256 = ?1",
            params![key, now],
        )?;
    }
    let role: Role = role.parse()?;
    Ok(Some(User {
        name,
        role,
        created,
        disabled,
    }))
}

/// Ends one session (logout).
pub fn delete_session(conn: &Connection, token: &SessionToken) -> Result<(), AuthError> {
    conn.execute(
        "DELETE FROM user_sessions WHERE token_sha256 = ?1",
        [token.stored_form()],
    )?;
    Ok(())
}

/// Ends every session of a user.
pub fn delete_user_sessions(conn: &Connection, user: &str) -> Result<(), AuthError> {
    conn.execute("DELETE FROM user_sessions WHERE user_name = ?1", [user])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{add_user, disable_user, migrate, set_password};

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        add_user(&conn, "alice", Role::Admin, "alice-password", 0).unwrap();
        conn
    }

    #[test]
    fn a_session_lasts_while_used_and_ends_after_twelve_idle_hours() {
        let conn = db();
        let token = create_session(&conn, "alice", Some("127.0.0.1"), 1000).unwrap();
        let parsed = SessionToken::parse(token.as_str()).unwrap();
        assert_eq!(
            lookup_session(&conn, &parsed, 1000).unwrap().unwrap().name,
            "alice"
        );
        // Used 11 hours later: still valid, and that use counts.
        let t = 1000 + 11 * 3600;
        assert!(lookup_session(&conn, &parsed, t).unwrap().is_some());
        assert!(
            lookup_session(&conn, &parsed, t + 11 * 3600)
                .unwrap()
                .is_some()
        );
        assert!(
            lookup_session(&conn, &parsed, t + 11 * 3600 + SESSION_IDLE_SECONDS + 1)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_database_holds_no_token_and_logout_ends_the_session() {
        let conn = db();
        let token = create_session(&conn, "alice", None, 5).unwrap();
        let stored: String = conn
            .query_row("SELECT token_sha256 FROM user_sessions", [], |r| r.get(0))
            .unwrap();
        assert_ne!(stored, token.as_str());
        assert_ne!(stored, token.csrf_token());
        delete_session(&conn, &token).unwrap();
        assert!(lookup_session(&conn, &token, 6).unwrap().is_none());
    }

    #[test]
    fn disabling_or_a_new_password_ends_sessions() {
        let conn = db();
        let first = create_session(&conn, "alice", None, 5).unwrap();
        set_password(&conn, "alice", "another-password").unwrap();
        assert!(lookup_session(&conn, &first, 6).unwrap().is_none());
        let second = create_session(&conn, "alice", None, 7).unwrap();
        disable_user(&conn, "alice", true).unwrap();
        assert!(lookup_session(&conn, &second, 8).unwrap().is_none());
    }

    #[test]
    fn csrf_tokens_are_per_session_and_odd_cookies_are_ignored() {
        let conn = db();
        let a = create_session(&conn, "alice", None, 5).unwrap();
        let b = create_session(&conn, "alice", None, 5).unwrap();
        assert!(a.csrf_matches(&a.csrf_token()));
        assert!(!a.csrf_matches(&b.csrf_token()));
        assert!(!a.csrf_matches(""));
        assert!(SessionToken::parse("' OR 1=1 --").is_none());
        assert!(SessionToken::parse(&"A".repeat(64)).is_none());
    }
}
