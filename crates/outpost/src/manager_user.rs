//! `outpost manager user ...`: dashboard users, from the command line.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use outpost_manager::auth::{Role, UserCommand};

#[derive(clap::Subcommand)]
pub enum UserArgs {
    /// Add a dashboard user. Without --password-stdin a password is
    /// generated and printed once.
    Add {
        name: String,
        /// admin (may change things) or viewer (reads only).
        #[arg(long, value_parser = ["admin", "viewer"])]
        role: String,
        /// Read the password from standard input (first line).
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// List users: name, role, created, enabled or disabled.
    Ls {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Set a new password (ends the user's sessions). Without
    /// --password-stdin one is generated and printed once.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Disable a user (ends their sessions); --enable undoes it.
    Disable {
        name: String,
        #[arg(long)]
        enable: bool,
        #[arg(long)]
        data_dir: PathBuf,
    },
}

pub fn run(args: UserArgs) -> anyhow::Result<()> {
    let (data_dir, command) = match args {
        UserArgs::Add {
            name,
            role,
            password_stdin,
            data_dir,
        } => {
            let role: Role = role.parse()?;
            let password = password_from_stdin(password_stdin)?;
            let command = UserCommand::Add {
                name,
                role,
                password,
            };
            (data_dir, command)
        }
        UserArgs::Ls { data_dir } => (data_dir, UserCommand::List),
        UserArgs::Passwd {
            name,
            password_stdin,
            data_dir,
        } => {
            let password = password_from_stdin(password_stdin)?;
            (data_dir, UserCommand::Passwd { name, password })
        }
        UserArgs::Disable {
            name,
            enable,
            data_dir,
        } => match enable {
            true => (data_dir, UserCommand::Enable { name }),
            false => (data_dir, UserCommand::Disable { name }),
        },
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let out = outpost_manager::auth::run_in_data_dir(&data_dir, command, now)
        .with_context(|| format!("manager data dir {}", data_dir.display()))?;
    print!("{out}");
    Ok(())
}

fn password_from_stdin(wanted: bool) -> anyhow::Result<Option<String>> {
    if !wanted {
        return Ok(None);
    }
    let mut input = String::new();
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut input)
        .context("reading the password from stdin")?;
    let password = input.lines().next().unwrap_or("").to_owned();
    Ok(Some(password))
}
