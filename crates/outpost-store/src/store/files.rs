//! The cache directory's own files and modes: the directory private to the
//! edge's user, the index files private and never symbolic links.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{DIR_MODE, FILE_MODE, nofollow};
use crate::error::StoreError;

/// Creates `dir` (and missing parents) private to the edge's user, and
/// takes an existing one (from an earlier version, or made by systemd's
/// `CacheDirectory=`) to that mode too.
pub(super) fn private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |cause| StoreError::Dir {
        path: dir.to_path_buf(),
        cause,
    };
    // A file in the directory's place: said so, rather than the "File
    // exists" that creating the directory over it answers.
    if fs::metadata(dir).is_ok_and(|m| !m.is_dir()) {
        return Err(StoreError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| StoreError::access("create", dir, e))?;
    let meta = fs::metadata(dir).map_err(|e| StoreError::access("read", dir, e))?;
    {
        // Whoever owns the directory can swap the files in it (an object
        // file for one of theirs, the admin token): only this user or root.
        use std::os::unix::fs::MetadataExt;
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me && meta.uid() != 0 {
            return Err(err(std::io::Error::other(format!(
                "owned by uid {}, not by the edge's user (uid {me}): that user could swap files under the edge; chown it or choose another cache directory",
                meta.uid()
            ))));
        }
    }
    if meta.permissions().mode() & 0o777 != DIR_MODE {
        // Not fatal: a directory the edge does not own (a mount point) may
        // refuse it, and the files inside are private anyway.
        match fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)) {
            Ok(()) => tracing::info!(
                dir = %dir.display(),
                was = format!("{:o}", meta.permissions().mode() & 0o777),
                "cache directory made private (0700)"
            ),
            Err(e) => tracing::warn!(
                dir = %dir.display(),
                error = %e,
                "cannot make the cache directory private (0700): other local users may list it"
            ),
        }
    }
    Ok(())
}

/// Makes the index and its WAL and shared-memory files (if any) readable
/// by the edge's user only, creating the index file so that SQLite (which
/// gives its side files the main file's mode) never makes it 0644.
pub(super) fn private_index_files(index: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |cause| StoreError::IndexFile { path, cause }
    };
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = index.as_os_str().to_owned();
        name.push(suffix);
        let path = PathBuf::from(name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(err(&path)(std::io::Error::other(
                    "is a symbolic link: refused, not followed",
                )));
            }
            Ok(m) if m.permissions().mode() & 0o777 != FILE_MODE => {
                fs::set_permissions(&path, fs::Permissions::from_mode(FILE_MODE))
                    .map_err(err(&path))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(&path)(e)),
        }
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .custom_flags(nofollow())
        .open(index)
        .map_err(|e| StoreError::access("create", index, e))?;
    Ok(())
}
