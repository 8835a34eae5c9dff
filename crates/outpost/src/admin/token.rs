//! The admin API's bearer token: read from a configured file (checked so
//! that no one else can choose it), or generated once into the cache
//! directory and reused at every later start.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};

use crate::config::AdminConfig;

/// Shortest token accepted from a configured token file.
const MIN_CONFIGURED_TOKEN: usize = 16;
/// Shortest generated token kept from an earlier start.
const MIN_GENERATED_TOKEN: usize = 32;

/// Reads a token file: its content, trimmed.
/// A configured token file others could replace (writable by group or
/// others, or in a directory they can write) would let them choose the
/// admin token: refused. One others can read is only warned about (a
/// packaged install may need it readable by the service's dynamic user).
fn check_token_file(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("admin token file {}", path.display()))?;
    if meta.file_type().is_symlink() {
        bail!(
            "admin token file {} is a symbolic link: name the file itself",
            path.display()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "admin token file {} is writable by group or others (mode {:o}): anyone who can write it chooses the admin token; chmod go-w it",
            path.display(),
            meta.mode() & 0o7777
        );
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(dir_meta) = std::fs::metadata(dir)
        && dir_meta.mode() & 0o002 != 0
        && dir_meta.mode() & 0o1000 == 0
    {
        bail!(
            "admin token file {} is in {}, a directory anyone can write: move it",
            path.display(),
            dir.display()
        );
    }
    if meta.mode() & 0o004 != 0 {
        tracing::warn!(path = %path.display(), "admin token file is readable by every local user");
    }
    Ok(())
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("admin token file {}", path.display()))?;
    Ok(text.trim().to_string())
}

/// 32 bytes from the operating system's CSPRNG, as 64 hex digits.
fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot get random bytes for the admin token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The token kept in `path` (the cache directory's `admin.token`): the one
/// an earlier start wrote, else a new one written there, 0600.
fn generated_token(path: &Path) -> anyhow::Result<String> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => {
            let token = read_token(path)?;
            if token.len() >= MIN_GENERATED_TOKEN {
                if meta.permissions().mode() & 0o077 != 0 {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                        .with_context(|| format!("cannot make {} private", path.display()))?;
                }
                tracing::info!(path = %path.display(), "admin API token read from the cache directory");
                return Ok(token);
            }
            tracing::warn!(path = %path.display(), "admin token file too short: writing a new token");
        }
        Ok(_) => bail!(
            "admin token file {} is not a regular file (a symbolic link?): remove it",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("admin token file {}", path.display()));
        }
    }
    let token = new_token()?;
    // Written beside and renamed into place: a crash never leaves a torn
    // token, and no one reads the file while it is 0644.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(token.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("cannot write the admin token to {}", path.display()))?;
    tracing::info!(
        path = %path.display(),
        "admin API token generated; the outpost CLI reads it from there"
    );
    Ok(token)
}

/// The token the admin API requires: the configured one, or the one
/// generated in the cache directory.
pub(super) fn load(config: &AdminConfig) -> anyhow::Result<String> {
    match &config.token_file {
        Some(path) => {
            check_token_file(path)?;
            let token = read_token(path)?;
            if token.len() < MIN_CONFIGURED_TOKEN {
                bail!(
                    "admin token in {} is shorter than {MIN_CONFIGURED_TOKEN} characters",
                    path.display()
                );
            }
            tracing::info!(path = %path.display(), "admin API token read from admin.token_file");
            Ok(token)
        }
        None => generated_token(&config.generated_token_file),
    }
}

/// Equal-length-independent comparison that does not stop at the first
/// difference.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abcdefghijklmnop", b"abcdefghijklmnop"));
        assert!(!constant_time_eq(b"abcdefghijklmnop", b"abcdefghijklmnoq"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
