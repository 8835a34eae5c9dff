//! The cache directory's lock: one edge process per directory.
//!
//! Two processes on one directory would each run their own fill of the same
//! object (the WAN copy twice) and each believe their own in-memory view of
//! the index, so the store takes an exclusive `flock` on `lock` in the
//! directory at open and writes its pid there, for the refusal message of
//! the next one. The kernel drops the lock with the process, however it
//! ends: no stale lock to clean up after a crash or `kill -9`.
//!
//! Only `outpost serve` opens a store: the admin commands (`status`,
//! `cache ls`, `cache verify`, `pin` ...) go through the running edge's
//! admin API, so none of them needs the directory while a server holds it.
//!
//! Invariants:
//! - the pid in the file is written only by the process holding the lock;
//!   a process that fails to take it never truncates or writes the file;
//! - the lock keeps *other processes* out. Stores opened on one directory
//!   within one process share the lock (the process's own restarts, as
//!   tests do them, reopen in place); the binary opens its store once.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use rustix::fs::{FlockOperation, flock};

use crate::error::StoreError;

/// Name of the lock file inside the cache directory.
pub(crate) const LOCK_FILE: &str = "lock";

/// The held lock; released when the last store sharing it is dropped (or
/// the process ends).
#[derive(Debug)]
pub(crate) struct DirLock {
    file: File,
}

/// Locks this process holds, by the lock file's device and inode (which a
/// second path to the same directory cannot disguise).
static HELD: Mutex<BTreeMap<FileId, Weak<DirLock>>> = Mutex::new(BTreeMap::new());

/// A file's device and inode.
type FileId = (u64, u64);

impl DirLock {
    /// Takes the lock of cache directory `dir`, or says which process has it.
    pub(crate) fn acquire(dir: &Path) -> Result<Arc<Self>, StoreError> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            // Not truncated here: until the lock is ours, the pid in the
            // file is the holder's, and the refusal names it.
            .truncate(false)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .map_err(|e| StoreError::access("create", &path, e))?;
        let meta = file
            .metadata()
            .map_err(|e| StoreError::access("read", &path, e))?;
        let id = (meta.dev(), meta.ino());
        let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|_, lock| lock.strong_count() > 0);
        // An inode number is reused once its file is gone: a lock held on a
        // deleted file (a directory removed under a store still closing) is
        // not this file's.
        if let Some(mine) = held.get(&id).and_then(Weak::upgrade)
            && mine.file.metadata().is_ok_and(|m| m.nlink() > 0)
        {
            return Ok(mine);
        }
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(StoreError::InUse {
                    dir: dir.to_path_buf(),
                    holder: holder_pid(&file),
                });
            }
            Err(e) => return Err(StoreError::access("lock", &path, e.into())),
        }
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.write_all_at(pid.as_bytes(), 0))
            .map_err(|e| StoreError::access("write", &path, e))?;
        let lock = Arc::new(Self { file });
        held.insert(id, Arc::downgrade(&lock));
        Ok(lock)
    }
}

/// The pid the holder wrote, if it has yet (it writes right after locking).
fn holder_pid(mut file: &File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}
