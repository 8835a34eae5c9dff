//! Start-up: making the index and the object files agree after whatever
//! ended the last run (a crash, `kill -9`, a power cut, a hand edit).
//!
//! What it guarantees when it returns:
//! - every row has a regular file at its path (rows whose file is missing,
//!   or is a link or anything but a file, are dropped; links are removed);
//! - every file under `objects/` belongs to a row (the rest are removed);
//! - a partial object's extents reach no further than its file and its
//!   length, and a partial object whose every byte was checkpointed is
//!   complete.
//!
//! What it leaves to the first lookup of each object (`Store::get`), so
//! that start-up reads neither every row nor every file's inode (a million
//! objects took 11 s and a gigabyte of memory that way): a head that does
//! not parse, and a complete object whose file is not its length, are
//! dropped there, before a byte of them is served.

use std::fs;
use std::path::Path;

use outpost_http::ByteRange;

use crate::error::StoreError;
use crate::index::Index;
use crate::layout::{object_id, object_path};

/// Makes index and files agree; returns the bytes the surviving objects hold.
pub(crate) fn reconcile(index: &mut Index, objects_dir: &Path) -> Result<u64, StoreError> {
    let ids = index.ids()?;
    let mut has_file = vec![false; ids.len()];
    let mut orphans = 0u32;
    // One pass over the directories: names and types come from the
    // directory entries, no file is opened or stat'ed.
    if let Ok(dirs) = fs::read_dir(objects_dir) {
        for dir in dirs.flatten() {
            // Object subdirectories are real directories: a link in their
            // place would lead every file path under it elsewhere.
            if dir.file_type().is_ok_and(|t| !t.is_dir()) {
                tracing::error!(
                    path = %dir.path().display(),
                    "not a directory in the objects directory (a symbolic link?): removed"
                );
                let _ = fs::remove_file(dir.path());
                continue;
            }
            let Ok(files) = fs::read_dir(dir.path()) else {
                continue;
            };
            for file in files.flatten() {
                let known = object_id(&file.file_name()).and_then(|id| ids.binary_search(&id).ok());
                let regular = file.file_type().is_ok_and(|t| t.is_file());
                match known {
                    Some(at) if regular => has_file[at] = true,
                    Some(_) => {
                        // A link planted in place of an object file makes
                        // its row unsound: both go.
                        tracing::error!(
                            path = %file.path().display(),
                            "object file is not a regular file (a symbolic link?): refused, dropping it"
                        );
                        let _ = fs::remove_file(file.path());
                    }
                    // A crash between creating the file and writing its
                    // row, or a row dropped earlier.
                    None => {
                        let _ = fs::remove_file(file.path());
                        orphans += 1;
                    }
                }
            }
        }
    }
    let without_file: Vec<u64> = ids
        .iter()
        .zip(&has_file)
        .filter(|&(_, &found)| !found)
        .map(|(&id, _)| id)
        .collect();
    drop(has_file);
    if !without_file.is_empty() {
        index.remove_ids(&without_file)?;
    }
    let objects = ids.len() - without_file.len();
    drop(ids);

    let mut partial = 0u32;
    for mut row in index.partial()? {
        let path = object_path(objects_dir, row.id);
        let file_len = match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_file() => m.len(),
            Ok(_) => continue, // seen as a file above; replaced since
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                index.remove(&row.key, row.id)?;
                continue;
            }
            Err(e) => return Err(StoreError::file(&path, e)),
        };
        // Trust only extents the index recorded, and only as far as the
        // file actually reaches.
        let before = row.extents.clone();
        row.extents.truncate(file_len);
        if let Some(len) = row.len {
            row.extents.truncate(len);
        }
        // Every byte was checkpointed but the completion was not recorded
        // (stopped between the last write and `finish`): complete now.
        let whole = row
            .len
            .is_some_and(|len| file_len == len && row.extents.contains(ByteRange::new(0, len)));
        if whole {
            index.update_extents(&row.key, row.id, row.len, true, &row.extents)?;
        } else {
            if row.extents != before {
                index.update_extents(&row.key, row.id, row.len, false, &row.extents)?;
            }
            partial += 1;
        }
    }
    let used = index.used_bytes()?;
    tracing::info!(
        objects,
        partial,
        dropped = without_file.len(),
        orphans,
        bytes = used,
        "store reconciled"
    );
    Ok(used)
}
