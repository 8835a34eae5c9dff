//! What the edge keeps of its enrolment: `manager.json` in the cache
//! directory (the manager's URL, the site, the edge's credential, the
//! pinned fingerprint, the managed config version it runs), and the
//! managed config itself (`managed.toml`). Both are written whole or not
//! at all (temporary file, fsync, rename, fsync of the directory), the
//! credential file readable by the edge's user only (0600): it is the
//! edge's identity in the fleet.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const STATE_FILE_NAME: &str = "manager.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolment {
    pub url: String,
    pub site: String,
    pub credential: String,
    pub fingerprint: Option<String>,
    /// The managed config version in managed.toml (0: none).
    #[serde(default)]
    pub applied_version: u64,
}

pub fn state_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join(STATE_FILE_NAME)
}

/// The stored enrolment; `Ok(None)` before the first.
pub fn load(cache_dir: &Path) -> Result<Option<Enrolment>, String> {
    let path = state_path(cache_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: not a readable enrolment: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

pub fn save(cache_dir: &Path, enrolment: &Enrolment) -> Result<(), String> {
    let json = serde_json::to_vec_pretty(enrolment).map_err(|e| e.to_string())?;
    write_atomic(&state_path(cache_dir), &json, 0o600)
}

/// Writes `path` whole or not at all, with `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let fail = |what: &str, e: std::io::Error| format!("{}: {what}: {e}", path.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| fail("cannot create", e))?;
    // The mode given at creation is masked by the umask and not applied to
    // an existing file: set it.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| fail("cannot set permissions", e))?;
    file.write_all(bytes).map_err(|e| fail("cannot write", e))?;
    file.sync_all().map_err(|e| fail("cannot sync", e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| fail("cannot rename into place", e))?;
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_enrolment_round_trips_readable_by_the_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let enrolment = Enrolment {
            url: "https://m:8443/".into(),
            site: "branch-1".into(),
            credential: "secret".into(),
            fingerprint: Some("ab:cd".into()),
            applied_version: 3,
        };
        save(dir.path(), &enrolment).unwrap();
        save(dir.path(), &enrolment).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(enrolment));
        let mode = std::fs::metadata(state_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(state_path(dir.path()), "{").unwrap();
        assert!(load(dir.path()).unwrap_err().contains("manager.json"));
    }
}
