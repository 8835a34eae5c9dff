//! `outpost manager user ...`: the user administration the binary's
//! command line calls, as plain functions that return what to print.

use rusqlite::Connection;

use super::{AuthError, Role, add_user, disable_user, list_users, random_bytes, set_password};

/// What `outpost manager user` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    /// Without a password, one is generated and printed once.
    Add {
        name: String,
        role: Role,
        password: Option<String>,
    },
    List,
    Passwd {
        name: String,
        password: Option<String>,
    },
    Disable {
        name: String,
    },
    Enable {
        name: String,
    },
}

impl UserCommand {
    /// The audit log's "what" and "detail" for this change (`None` for
    /// reading). Never holds the password.
    pub fn audit_entry(&self) -> Option<(&'static str, String)> {
        match self {
            Self::Add { name, role, .. } => Some(("user add", format!("{name} role {role}"))),
            Self::List => None,
            Self::Passwd { name, .. } => Some(("user passwd", name.clone())),
            Self::Disable { name } => Some(("user disable", name.clone())),
            Self::Enable { name } => Some(("user enable", name.clone())),
        }
    }
}

/// Runs the command against the users table; the text is for stdout.
pub fn run_user_command(
    conn: &Connection,
    command: UserCommand,
    now: i64,
) -> Result<String, AuthError> {
    match command {
        UserCommand::Add {
            name,
            role,
            password,
        } => {
            let (password, generated) = password_or_generated(password)?;
            add_user(conn, &name, role, &password, now)?;
            Ok(match generated {
                true => format!("added {name} ({role}); password: {password}\n"),
                false => format!("added {name} ({role})\n"),
            })
        }
        UserCommand::List => {
            let mut out = format!(
                "{:<24} {:<7} {:<24} {}\n",
                "NAME", "ROLE", "CREATED", "STATE"
            );
            for user in list_users(conn)? {
                out.push_str(&format!(
                    "{:<24} {:<7} {:<24} {}\n",
                    user.name,
                    user.role.as_str(),
                    crate::dashboard::html::timestamp(user.created),
                    if user.disabled { "disabled" } else { "enabled" }
                ));
            }
            Ok(out)
        }
        UserCommand::Passwd { name, password } => {
            let (password, generated) = password_or_generated(password)?;
            set_password(conn, &name, &password)?;
            Ok(match generated {
                true => format!("new password for {name}: {password}\n"),
                false => format!("password of {name} changed; their sessions ended\n"),
            })
        }
        UserCommand::Disable { name } => {
            disable_user(conn, &name, true)?;
            Ok(format!("disabled {name}; their sessions ended\n"))
        }
        UserCommand::Enable { name } => {
            disable_user(conn, &name, false)?;
            Ok(format!("enabled {name}\n"))
        }
    }
}

fn password_or_generated(password: Option<String>) -> Result<(String, bool), AuthError> {
    match password {
        Some(password) => Ok((password, false)),
        None => Ok((generate_password()?, true)),
    }
}

/// 20 characters from a 57-character alphabet without look-alikes:
/// about 116 bits.
pub fn generate_password() -> Result<String, AuthError> {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::with_capacity(20);
    while out.len() < 20 {
        let mut byte = [0u8; 1];
        random_bytes(&mut byte)?;
        // Rejection sampling keeps every character equally likely.
        let limit = 256 - 256 % ALPHABET.len();
        if usize::from(byte[0]) < limit {
            out.push(char::from(ALPHABET[usize::from(byte[0]) % ALPHABET.len()]));
        }
    }
    Ok(out)
}

/// Opens the manager's database in `data_dir` (made by `outpost manager
/// init`), runs the command there and records a change in the audit log
/// as done by `cli` from `local`.
pub fn run_in_data_dir(
    data_dir: &std::path::Path,
    command: UserCommand,
    now: i64,
) -> Result<String, crate::ManagerError> {
    let db = crate::db::Db::open(data_dir, false)?;
    db.migrate_module(super::MODULE, super::MIGRATIONS)?;
    let audit = command.audit_entry();
    let conn = db.connection();
    let out = run_user_command(&conn, command, now)
        .map_err(|e| crate::ManagerError::BadRequest(e.to_string()))?;
    if let Some((what, detail)) = audit {
        conn.execute(
            "INSERT INTO audit (at, who, from_addr, what, detail) VALUES (?1, 'cli', 'local', ?2, ?3)",
            rusqlite::params![now, what, detail],
        )
        .map_err(|source| crate::ManagerError::Db {
            context: "write audit".into(),
            source,
        })?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{authenticate, migrate};

    #[test]
    fn add_with_a_generated_password_prints_one_that_works() {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        let out = run_user_command(
            &conn,
            UserCommand::Add {
                name: "alice".into(),
                role: Role::Admin,
                password: None,
            },
            10,
        )
        .unwrap();
        let password = out.rsplit("password: ").next().unwrap().trim();
        assert_eq!(password.len(), 20);
        assert!(authenticate(&conn, "alice", password).unwrap().is_some());
        let listing = run_user_command(&conn, UserCommand::List, 11).unwrap();
        assert!(
            listing.contains("alice") && listing.contains("admin"),
            "{listing}"
        );
        assert!(!listing.contains(password));
    }
}
