//! Exporting a channel's files as a plain read-only tree, for a Samba
//! share (`\\EDGE\packages`) where WebDAV is not wanted: `outpost export
//! CHANNEL DIR` once, or `[[channel]] export = "DIR"` after every complete
//! sync.
//!
//! `DIR` is a symbolic link to the current version of the tree, a sibling
//! directory `DIR.new-<id>`. A new version is built whole beside it, then
//! the link is replaced by `rename(2)` (atomic): a technician browsing the
//! share sees the old tree or the new one, never a half-built one. The
//! version before is kept until the next swap (Samba resolves a share's
//! path when a client connects, so a session connected before the swap
//! reads the old tree until it reconnects); older ones are removed.
//!
//! Files are hard links to the store's body files where the file system
//! allows (same file system as the cache: no extra space, no copy time),
//! copies otherwise. That is sound because the store never writes a
//! complete object's body file again: a new version of a URL is a new
//! object with a new file, and eviction or purge only unlinks. A linked
//! file keeps the store's owner and gets mode 0644 (the store opens its
//! files read-write, so its owner must keep write permission; the edge
//! never uses it on a complete body); copies and directories are 0444 and
//! 0755.
//!
//! Invariants:
//! - a file's path in the tree comes only from its URL below the channel's
//!   folder, segment by segment, percent-decoded; a segment that is empty,
//!   `.`, `..`, or holds `/`, `\` or NUL is refused (the file is skipped),
//!   so a hostile listing or manifest cannot write outside the tree;
//! - `DIR` is never `/`, never inside the cache directory and never holds
//!   it; an existing `DIR` that is not our link (a real directory with
//!   files, a file) is left alone and the export fails;
//! - cleaning removes only siblings named `DIR.new-*` that are real
//!   directories, never following a symbolic link (a link is unlinked, not
//!   walked).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub use outpost_protocol::ExportStatus;
use url::Url;

/// One file of the tree: where it goes and the store's body file it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportEntry {
    /// Relative path in the tree (plain, checked segments).
    pub path: PathBuf,
    /// The store's body file (a complete object's).
    pub body: PathBuf,
    pub len: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("export directory {dir}: {reason}")]
    Refused { dir: PathBuf, reason: String },
    #[error("export: {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Channel(#[from] crate::ChannelError),
    /// The export's blocking task did not finish (it panicked).
    #[error("export {dir}: the export task failed: {source}")]
    Task {
        dir: PathBuf,
        #[source]
        source: tokio::task::JoinError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

const TREE_DIR_MODE: u32 = 0o755;
const COPY_MODE: u32 = 0o444;
const LINK_MODE: u32 = 0o644;

/// Checks a configured or requested export directory by its text alone
/// (what `check-config` can say before anything exists): absolute, not
/// `/`, no `..`, not inside the cache directory nor holding it.
pub fn check_export_dir(dir: &Path, cache_dir: &Path) -> Result<(), String> {
    if !dir.is_absolute() {
        return Err("must be an absolute path".into());
    }
    if dir
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err("must not hold \".\" or \"..\"".into());
    }
    if dir.parent().is_none() || dir.file_name().is_none() {
        return Err("must not be \"/\"".into());
    }
    if dir.starts_with(cache_dir) {
        return Err(format!(
            "is inside the cache directory {}",
            cache_dir.display()
        ));
    }
    if cache_dir.starts_with(dir) {
        return Err(format!("holds the cache directory {}", cache_dir.display()));
    }
    Ok(())
}

/// The same check on the real paths (symbolic links resolved), at export
/// time: `dir`'s parent must exist.
fn check_real(dir: &Path, cache_dir: &Path) -> Result<PathBuf, ExportError> {
    let refused = |reason: String| ExportError::Refused {
        dir: dir.to_path_buf(),
        reason,
    };
    check_export_dir(dir, cache_dir).map_err(refused)?;
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(refused("must not be \"/\"".into()));
    };
    let parent = fs::canonicalize(parent).map_err(|e| refused(format!("its parent: {e}")))?;
    let real = parent.join(name);
    let cache = fs::canonicalize(cache_dir).unwrap_or_else(|_| cache_dir.to_path_buf());
    check_export_dir(&real, &cache).map_err(refused)?;
    Ok(real)
}

/// The tree path of `url` below the channel's folder `base`, or why not:
/// the site library's path of it ([`crate::library_path_of`], one
/// decoding for both), for the channel's own folder only. Files a manifest
/// names on other hosts stay out of the share: the library's `host:port`
/// folders are not file names on every client.
pub fn tree_path(base: &Url, url: &Url) -> Result<PathBuf, String> {
    let below = url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default()
        && base.path().ends_with('/')
        && url.path().starts_with(base.path());
    if !below {
        return Err("not below the channel's folder".into());
    }
    crate::library_path_of(base, url)
        .map(PathBuf::from_iter)
        .ok_or_else(|| "a segment is not a plain file name".into())
}

/// Builds a new version of the tree at `dir` from `entries`, swaps it in
/// and removes older versions. `entries` with the same path, or a path
/// under another file's, are skipped (reported).
pub fn write_tree(
    entries: &[ExportEntry],
    dir: &Path,
    cache_dir: &Path,
    now: i64,
) -> Result<ExportStatus, ExportError> {
    let dir = check_real(dir, cache_dir)?;
    let parent = dir.parent().unwrap_or(Path::new("/")).to_path_buf();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A `DIR` we did not make is someone's data: never replaced.
    let mut previous = None;
    match fs::symlink_metadata(&dir) {
        Ok(m) if m.file_type().is_symlink() => {
            previous = fs::read_link(&dir)
                .ok()
                .filter(|target| target.components().count() == 1)
                .map(|target| target.to_string_lossy().into_owned());
        }
        Ok(m) if m.is_dir() => {
            if fs::read_dir(&dir).map_err(io_err(&dir))?.next().is_some() {
                return Err(ExportError::Refused {
                    dir,
                    reason: "exists and is not an export (a directory with files): \
                             remove it or choose another"
                        .into(),
                });
            }
            fs::remove_dir(&dir).map_err(io_err(&dir))?;
        }
        Ok(_) => {
            return Err(ExportError::Refused {
                dir,
                reason: "exists and is not a directory".into(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&dir)(e)),
    }
    let version = unique_suffix(now);
    let tree_name = format!("{name}.new-{version}");
    let tree = parent.join(&tree_name);
    let mut status = ExportStatus {
        dir: dir.display().to_string(),
        finished: now,
        files: 0,
        bytes: 0,
        linked: 0,
        copied: 0,
        skipped: Vec::new(),
        error: None,
    };
    let built = fill_tree(entries, &tree, &mut status);
    if let Err(e) = built {
        let _ = remove_tree(&tree);
        return Err(e);
    }
    // The flip: a new link under a temporary name renamed over `DIR`.
    let link = parent.join(format!("{name}.link-{version}"));
    std::os::unix::fs::symlink(&tree_name, &link).map_err(io_err(&link))?;
    if let Err(e) = fs::rename(&link, &dir) {
        let _ = fs::remove_file(&link);
        let _ = remove_tree(&tree);
        return Err(io_err(&dir)(e));
    }
    clean_old(
        &parent,
        &name,
        &[&tree_name, previous.as_deref().unwrap_or("")],
    );
    Ok(status)
}

fn fill_tree(
    entries: &[ExportEntry],
    tree: &Path,
    status: &mut ExportStatus,
) -> Result<(), ExportError> {
    make_dir(tree)?;
    let mut files: HashSet<&Path> = HashSet::new();
    let mut dirs: HashSet<PathBuf> = HashSet::new();
    for entry in entries {
        let taken = files.contains(entry.path.as_path())
            || dirs.contains(&entry.path)
            || entry.path.ancestors().skip(1).any(|a| files.contains(a));
        if taken {
            status.skipped.push(format!(
                "{}: another file has this path",
                entry.path.display()
            ));
            continue;
        }
        let target = tree.join(&entry.path);
        for ancestor in entry.path.ancestors().skip(1) {
            if !ancestor.as_os_str().is_empty() {
                dirs.insert(ancestor.to_path_buf());
            }
        }
        if let Some(parent) = target.parent() {
            make_dirs(tree, parent)?;
        }
        match place(entry, &target)? {
            Placed::Linked => status.linked += 1,
            Placed::Copied => status.copied += 1,
            Placed::Gone(why) => {
                status
                    .skipped
                    .push(format!("{}: {why}", entry.path.display()));
                continue;
            }
        }
        files.insert(&entry.path);
        status.files += 1;
        status.bytes += entry.len;
    }
    Ok(())
}

enum Placed {
    Linked,
    Copied,
    /// The body file is gone (purged or replaced meanwhile) or is not the
    /// length recorded.
    Gone(String),
}

/// Hard-links the body file at `target`, or copies it.
fn place(entry: &ExportEntry, target: &Path) -> Result<Placed, ExportError> {
    match fs::hard_link(&entry.body, target) {
        Ok(()) => {
            let meta = fs::symlink_metadata(target).map_err(io_err(target))?;
            if meta.len() != entry.len || !meta.is_file() {
                let _ = fs::remove_file(target);
                return Ok(Placed::Gone(format!(
                    "body file holds {} bytes, not {}",
                    meta.len(),
                    entry.len
                )));
            }
            if meta.mode() & 0o777 != LINK_MODE {
                fs::set_permissions(target, fs::Permissions::from_mode(LINK_MODE))
                    .map_err(io_err(target))?;
            }
            Ok(Placed::Linked)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Ok(Placed::Gone("its body left the store meanwhile".into()))
        }
        // Another file system (EXDEV), one without hard links (EPERM), a
        // link count at its maximum (EMLINK): copy.
        Err(_) => copy(entry, target),
    }
}

fn copy(entry: &ExportEntry, target: &Path) -> Result<Placed, ExportError> {
    let mut source = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(nofollow())
        .open(&entry.body)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Placed::Gone("its body left the store meanwhile".into()));
        }
        Err(e) => return Err(io_err(&entry.body)(e)),
    };
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(target)
        .map_err(io_err(target))?;
    let copied =
        io::copy(&mut io::Read::take(&mut source, entry.len), &mut out).map_err(io_err(target))?;
    if copied != entry.len {
        drop(out);
        let _ = fs::remove_file(target);
        return Ok(Placed::Gone(format!(
            "body file holds {copied} bytes, not {}",
            entry.len
        )));
    }
    out.sync_all().map_err(io_err(target))?;
    fs::set_permissions(target, fs::Permissions::from_mode(COPY_MODE)).map_err(io_err(target))?;
    Ok(Placed::Copied)
}

/// `open(2)` flags: a body path that became a link is refused, not
/// followed.
fn nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

fn make_dir(path: &Path) -> Result<(), ExportError> {
    fs::create_dir(path).map_err(io_err(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(TREE_DIR_MODE)).map_err(io_err(path))
}

/// Creates `dir` and its missing parents below `tree` (each 0755).
fn make_dirs(tree: &Path, dir: &Path) -> Result<(), ExportError> {
    let Ok(relative) = dir.strip_prefix(tree) else {
        return Ok(());
    };
    let mut at = tree.to_path_buf();
    for part in relative.components() {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(ExportError::Refused {
                    dir: at,
                    reason: "a file where a folder must be".into(),
                });
            }
            Err(_) => make_dir(&at)?,
        }
    }
    Ok(())
}

/// Removes every older version of the tree but `keep` (the current one
/// and the one before it: a Samba session connected to it resolved the
/// share's path when it connected and keeps reading there until it
/// reconnects), and stale temporary links.
fn clean_old(parent: &Path, name: &str, keep: &[&str]) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    let tree_prefix = format!("{name}.new-");
    let link_prefix = format!("{name}.link-");
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let path = entry.path();
        if file_name.starts_with(&tree_prefix) && !keep.contains(&file_name.as_ref()) {
            if let Err(e) = remove_tree(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove an old export tree");
            }
        } else if file_name.starts_with(&link_prefix)
            && fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink())
        {
            let _ = fs::remove_file(&path);
        }
    }
}

/// Removes a tree version: a real directory, walked without following
/// links (`remove_dir_all` unlinks a link it meets); anything else found
/// under the version's name is only unlinked.
fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn unique_suffix(now: i64) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{now:x}-{:x}-{n:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_paths_come_only_from_plain_segments_below_the_folder() {
        let base = Url::parse("http://files/pkgs/").unwrap();
        let ok = |u: &str| tree_path(&base, &Url::parse(u).unwrap());
        assert_eq!(
            ok("http://files/pkgs/office/setup%20x64.msi").unwrap(),
            PathBuf::from("office/setup x64.msi")
        );
        // A folder channel whose source lacks its trailing slash names no
        // sibling folder's files.
        let bare = Url::parse("http://files/pkgs").unwrap();
        assert!(tree_path(&bare, &Url::parse("http://files/pkgsx/a").unwrap()).is_err());
        for bad in [
            "http://files/pkgs/a%2F..%2F..%2Fetc%2Fpasswd",
            "http://files/pkgs/a%0Ab",
            "http://files/pkgs/a%252e%252e",
            "http://files/pkgs/%2e%2e/x",
            "http://files/pkgs/a/%2E%2E%2F/x",
            "http://files/pkgs/a%5C..%5Cb",
            "http://files/pkgs/a%00b",
            "http://files/pkgs/a//b",
            "http://files/pkgs/",
            "http://files/other/x",
            "http://elsewhere/pkgs/x",
            "http://files:81/pkgs/x",
            "http://files/pkgs/%FF",
        ] {
            assert!(ok(bad).is_err(), "{bad} accepted: {:?}", ok(bad));
        }
    }

    #[test]
    fn the_export_dir_is_never_root_nor_in_or_around_the_cache() {
        let cache = Path::new("/var/cache/outpost");
        assert!(check_export_dir(Path::new("/srv/packages"), cache).is_ok());
        for bad in [
            "/",
            "relative/dir",
            "/var/cache/outpost",
            "/var/cache/outpost/objects/x",
            "/var/cache",
            "/srv/../var/cache/outpost/x",
        ] {
            assert!(check_export_dir(Path::new(bad), cache).is_err(), "{bad}");
        }
    }
}
