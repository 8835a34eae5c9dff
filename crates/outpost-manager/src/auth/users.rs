//! The `users` table: name, argon2id hash, role, creation time, disabled.

use rusqlite::{Connection, OptionalExtension, params};

use super::AuthError;
use super::password::{hash_password, verify_password, waste_one_verification};

/// What a user may do in the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads every page.
    Viewer,
    /// Also publishes, rolls back, starts actions, manages join tokens and
    /// revokes edges.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Self::Viewer),
            "admin" => Ok(Self::Admin),
            other => Err(AuthError::BadRole(other.to_owned())),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// Unix seconds.
    pub created: i64,
    pub disabled: bool,
}

/// A user name is 1 to 64 of `A-Z a-z 0-9 . _ - @`: it shows up in the
/// audit log and in pages, so it carries nothing that needs quoting.
pub fn valid_user_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

pub fn add_user(
    conn: &Connection,
    name: &str,
    role: Role,
    password: &str,
    now: i64,
) -> Result<User, AuthError> {
    if !valid_user_name(name) {
        return Err(AuthError::BadUserName(name.to_owned()));
    }
    let hash = hash_password(password)?;
    let inserted = conn.execute(
        "INSERT INTO users (name, password_hash, role, created, disabled)
         VALUES (?1, ?2, ?3, ?4, 0) ON CONFLICT (name) DO NOTHING",
        params![name, hash, role.as_str(), now],
    )?;
    if inserted == 0 {
        return Err(AuthError::UserExists(name.to_owned()));
    }
    Ok(User {
        name: name.to_owned(),
        role,
        created: now,
        disabled: false,
    })
}

pub fn list_users(conn: &Connection) -> Result<Vec<User>, AuthError> {
    let mut stmt = conn.prepare("SELECT name, role, created, disabled FROM users ORDER BY name")?;
    let rows = stmt.query_map([], row_to_user)?;
    let mut users = Vec::new();
    for row in rows {
        users.push(row??);
    }
    Ok(users)
}

pub fn find_user(conn: &Connection, name: &str) -> Result<Option<User>, AuthError> {
    let user = conn
        .query_row(
            "SELECT name, role, created, disabled FROM users WHERE name = ?1",
            [name],
            row_to_user,
        )
        .optional()?;
    user.transpose()
}

/// Sets a new password and ends the user's sessions (a changed password
/// must lock out whoever knew the old one).
pub fn set_password(conn: &Connection, name: &str, password: &str) -> Result<(), AuthError> {
    let hash = hash_password(password)?;
    let changed = conn.execute(
        "UPDATE users SET password_hash = ?2 WHERE name = ?1",
        params![name, hash],
    )?;
    if changed == 0 {
        return Err(AuthError::NoSuchUser(name.to_owned()));
    }
    super::delete_user_sessions(conn, name)?;
    Ok(())
}

/// Disables (or enables again) a user; disabling ends their sessions.
pub fn disable_user(conn: &Connection, name: &str, disabled: bool) -> Result<(), AuthError> {
    let changed = conn.execute(
        "UPDATE users SET disabled = ?2 WHERE name = ?1",
        params![name, disabled],
    )?;
    if changed == 0 {
        return Err(AuthError::NoSuchUser(name.to_owned()));
    }
    if disabled {
        super::delete_user_sessions(conn, name)?;
    }
    Ok(())
}

/// The user, when the name exists, is enabled and the password matches.
/// `None` otherwise, in about the same time in every case.
pub fn authenticate(
    conn: &Connection,
    name: &str,
    password: &str,
) -> Result<Option<User>, AuthError> {
    check_login(login_record(conn, name)?, password)
}

/// What a login needs from the database: read it, let go of the
/// connection, then [`check_login`] (argon2 takes tens of milliseconds,
/// which must not hold up the manager's other writers).
#[derive(Clone)]
pub struct LoginRecord {
    user: User,
    password_hash: String,
}

impl std::fmt::Debug for LoginRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRecord")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

pub fn login_record(conn: &Connection, name: &str) -> Result<Option<LoginRecord>, AuthError> {
    let row: Option<(String, String, i64, bool)> = conn
        .query_row(
            "SELECT password_hash, role, created, disabled FROM users WHERE name = ?1",
            [name],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .optional()?;
    let Some((password_hash, role, created, disabled)) = row else {
        return Ok(None);
    };
    Ok(Some(LoginRecord {
        user: User {
            name: name.to_owned(),
            role: role.parse()?,
            created,
            disabled,
        },
        password_hash,
    }))
}

/// The user if the record exists, is enabled and `password` matches; the
/// same argon2 work in every case.
pub fn check_login(record: Option<LoginRecord>, password: &str) -> Result<Option<User>, AuthError> {
    let Some(record) = record else {
        waste_one_verification(password);
        return Ok(None);
    };
    if !verify_password(password, &record.password_hash) || record.user.disabled {
        return Ok(None);
    }
    Ok(Some(record.user))
}

fn row_to_user(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<User, AuthError>> {
    let role: String = row.get(1)?;
    Ok(role.parse().map(|role| User {
        name: row.get(0).unwrap_or_default(),
        role,
        created: row.get(2).unwrap_or_default(),
        disabled: row.get(3).unwrap_or_default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        crate::auth::migrate(&conn).unwrap();
        conn
    }

    #[test]
    fn users_are_added_listed_and_authenticated() {
        let conn = db();
        add_user(&conn, "alice", Role::Admin, "alice-password", 100).unwrap();
        add_user(&conn, "bob", Role::Viewer, "bob-password-1", 200).unwrap();
        assert!(matches!(
            add_user(&conn, "alice", Role::Viewer, "another-password", 300),
            Err(AuthError::UserExists(_))
        ));
        let names: Vec<_> = list_users(&conn)
            .unwrap()
            .into_iter()
            .map(|u| (u.name, u.role))
            .collect();
        assert_eq!(
            names,
            [("alice".into(), Role::Admin), ("bob".into(), Role::Viewer)]
        );
        assert_eq!(
            authenticate(&conn, "alice", "alice-password")
                .unwrap()
                .map(|u| u.role),
            Some(Role::Admin)
        );
        assert_eq!(
            authenticate(&conn, "alice", "bob-password-1").unwrap(),
            None
        );
        assert_eq!(
            authenticate(&conn, "carol", "alice-password").unwrap(),
            None
        );
    }

    #[test]
    fn a_disabled_user_cannot_log_in_and_a_new_password_replaces_the_old() {
        let conn = db();
        add_user(&conn, "alice", Role::Admin, "alice-password", 100).unwrap();
        disable_user(&conn, "alice", true).unwrap();
        assert_eq!(
            authenticate(&conn, "alice", "alice-password").unwrap(),
            None
        );
        disable_user(&conn, "alice", false).unwrap();
        set_password(&conn, "alice", "a-new-password").unwrap();
        assert_eq!(
            authenticate(&conn, "alice", "alice-password").unwrap(),
            None
        );
        assert!(
            authenticate(&conn, "alice", "a-new-password")
                .unwrap()
                .is_some()
        );
        assert!(matches!(
            set_password(&conn, "nobody", "a-new-password"),
            Err(AuthError::NoSuchUser(_))
        ));
    }

    #[test]
    fn names_with_markup_or_spaces_are_refused() {
        let conn = db();
        for name in ["", "<script>", "a b", &"x".repeat(65)] {
            assert!(matches!(
                add_user(&conn, name, Role::Viewer, "long-enough-pw", 1),
                Err(AuthError::BadUserName(_))
            ));
        }
    }
}
