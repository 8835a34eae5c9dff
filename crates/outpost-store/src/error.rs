use std::path::{Path, PathBuf};

/// What went wrong in the store. Each variant names the file or key involved.
///
/// Every message carries its cause in its own text, and no variant exposes
/// that cause again as `source()`: the binary prints an error's chain, and a
/// cause in both printed `Permission denied (os error 13)` twice.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cache directory {}: {cause}", path.display())]
    Dir {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cache directory {} is a file, not a directory", path.display())]
    NotADirectory { path: PathBuf },
    /// The edge's user may not do what the store needs in the cache
    /// directory (a directory made by another user, a read-only mount).
    #[error("cannot {action} {}: {} (running as uid {uid})", path.display(), describe(cause))]
    Access {
        action: &'static str,
        path: PathBuf,
        uid: u32,
        cause: std::io::Error,
    },
    /// Another process holds the cache directory's lock.
    #[error("cache directory {} is in use by {}; stop it or use another --cache-dir", dir.display(), holder_text(*holder))]
    InUse { dir: PathBuf, holder: Option<u32> },
    #[error("object file {}: {cause}", path.display())]
    File {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cache index file {}: {cause}", path.display())]
    IndexFile {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cache index: {0}")]
    Index(rusqlite::Error),
    #[error("not enough free disk space in {} for {needed} more bytes ({available} free)", path.display())]
    NoSpace {
        path: PathBuf,
        needed: u64,
        available: u64,
    },
    #[error("body SHA-256 is {actual}, expected {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("store task panicked or was cancelled")]
    Task,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Index(e)
    }
}

fn holder_text(holder: Option<u32>) -> String {
    match holder {
        Some(pid) => format!("outpost pid {pid}"),
        None => "another process".into(),
    }
}

/// An I/O error as a person reads it: "permission denied", not the
/// `Permission denied (os error 13)` of `io::Error`'s Display.
fn describe(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::PermissionDenied => "permission denied".into(),
        ErrorKind::ReadOnlyFilesystem => "read-only file system".into(),
        ErrorKind::NotADirectory => "a part of the path is not a directory".into(),
        ErrorKind::StorageFull => "no space left on the device".into(),
        _ => e.to_string(),
    }
}

impl StoreError {
    /// The file system is out of space (or of quota) for the cache.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Self::NoSpace { .. } => true,
            Self::File { cause, .. } => {
                cause.kind() == std::io::ErrorKind::StorageFull
                    || cause.raw_os_error() == Some(rustix::io::Errno::DQUOT.raw_os_error())
            }
            _ => false,
        }
    }

    pub(crate) fn file(path: &Path, cause: std::io::Error) -> Self {
        Self::File {
            path: path.to_path_buf(),
            cause,
        }
    }

    /// `action` on `path` failed: refusals by the file system (permissions,
    /// read-only) say who the edge runs as, the rest say what happened.
    pub(crate) fn access(action: &'static str, path: &Path, cause: std::io::Error) -> Self {
        Self::Access {
            action,
            path: path.to_path_buf(),
            uid: rustix::process::geteuid().as_raw(),
            cause,
        }
    }
}
