use std::path::PathBuf;

/// What went wrong in the store. Each variant names the file or key involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cache directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("object file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cache index file {path}: {source}")]
    IndexFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cache index: {0}")]
    Index(#[from] rusqlite::Error),
    #[error("not enough free disk space in {path} for {needed} more bytes ({available} free)")]
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

impl StoreError {
    /// The file system is out of space (or of quota) for the cache.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Self::NoSpace { .. } => true,
            Self::File { source, .. } => {
                source.kind() == std::io::ErrorKind::StorageFull
                    || source.raw_os_error() == Some(rustix::io::Errno::DQUOT.raw_os_error())
            }
            _ => false,
        }
    }

    pub(crate) fn file(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::File {
            path: path.to_path_buf(),
            source,
        }
    }
}
