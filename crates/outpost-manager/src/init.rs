//! `outpost manager init`: a new data directory with its database, TLS
//! identity, first admin API token and first join token. Refuses a
//! directory that already holds a manager, so secrets are never replaced
//! by accident.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use outpost_protocol::ManagerInit;

use crate::db::{DB_FILE_NAME, Db};
use crate::error::{ManagerError, Result};
use crate::manager::{Actor, unix_secs};
use crate::{secret, tls};

pub struct InitOptions {
    pub data_dir: PathBuf,
    /// Use this certificate and key instead of making a self-signed one.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// More names for the self-signed certificate.
    pub sans: Vec<String>,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> ManagerError {
    move |source| ManagerError::Io { context, source }
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("create {}", path.display())))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io(format!("write {}", path.display())))
}

pub fn init(options: &InitOptions) -> Result<ManagerInit> {
    let dir = &options.data_dir;
    if dir.join(DB_FILE_NAME).exists() {
        return Err(ManagerError::Conflict(format!(
            "{} already holds a manager ({DB_FILE_NAME}); init never overwrites one: \
             use another --data-dir, or `outpost manager token create` for a new token",
            dir.display()
        )));
    }
    if options.tls_cert.is_some() != options.tls_key.is_some() {
        return Err(ManagerError::BadRequest(
            "--tls-cert and --tls-key go together".into(),
        ));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(format!("create {}", dir.display())))?;
    let fingerprint = match (&options.tls_cert, &options.tls_key) {
        (Some(cert), Some(key)) => {
            // Checked now, so a bad pair fails at init, not at serve.
            tls::server_config(cert, key)?;
            let certs = tls::load_certs(cert)?;
            tls::fingerprint(&certs[0])
        }
        _ => {
            let tls_dir = dir.join("tls");
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&tls_dir)
                .map_err(io(format!("create {}", tls_dir.display())))?;
            let (cert, key, der) = tls::self_signed(&tls::default_names(&options.sans))?;
            write_private(&dir.join(tls::KEY_FILE), &key)?;
            let cert_path = dir.join(tls::CERT_FILE);
            std::fs::write(&cert_path, cert)
                .map_err(io(format!("write {}", cert_path.display())))?;
            let _ = std::fs::set_permissions(&cert_path, std::fs::Permissions::from_mode(0o644));
            tls::fingerprint(&der)
        }
    };
    // Created 0600 before SQLite opens it (its -wal and -shm files take the
    // same mode): it holds token hashes and the fleet's layout.
    write_private(&dir.join(DB_FILE_NAME), "")?;
    let db = Db::open(dir, true)?;
    let admin_token = secret::generate("oat")?;
    let join_token = secret::generate("ojt")?;
    {
        let conn = db.connection();
        let now = unix_secs();
        let put = |k: &str, v: &str| {
            conn.execute("INSERT INTO settings (key, value) VALUES (?1, ?2)", [k, v])
        };
        let db_err = |source| ManagerError::Db {
            context: "init".into(),
            source,
        };
        if let (Some(cert), Some(key)) = (&options.tls_cert, &options.tls_key) {
            let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
            put("tls_cert", &abs(cert).to_string_lossy()).map_err(db_err)?;
            put("tls_key", &abs(key).to_string_lossy()).map_err(db_err)?;
        }
        put("approve_new_edges", "false").map_err(db_err)?;
        conn.execute(
            "INSERT INTO api_tokens (label, hash, created) VALUES ('init', ?1, ?2)",
            rusqlite::params![secret::digest(&admin_token), now],
        )
        .map_err(db_err)?;
        conn.execute(
            "INSERT INTO join_tokens (label, hash, created) VALUES ('init', ?1, ?2)",
            rusqlite::params![secret::digest(&join_token), now],
        )
        .map_err(db_err)?;
        let actor = Actor::local_cli();
        conn.execute(
            "INSERT INTO audit (at, who, from_addr, what, detail) VALUES (?1, ?2, ?3, 'init', ?4)",
            rusqlite::params![
                now,
                actor.who,
                actor.from,
                format!("fingerprint {fingerprint}")
            ],
        )
        .map_err(db_err)?;
    }
    Ok(ManagerInit {
        join_token,
        admin_token,
        fingerprint,
    })
}

/// The certificate and key a data directory serves with.
pub fn tls_paths(db: &Db, data_dir: &Path) -> (PathBuf, PathBuf) {
    let conn = db.connection();
    let get = |k: &str| {
        conn.query_row("SELECT value FROM settings WHERE key = ?1", [k], |r| {
            r.get::<_, String>(0)
        })
        .ok()
    };
    tls::paths(data_dir, (get("tls_cert"), get("tls_key")))
}
