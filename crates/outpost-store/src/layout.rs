//! Where an object's body lives: `objects/XX/<id>`, `XX` the id's low byte
//! in hex (256 directories of a few thousand files each, however many
//! objects), `<id>` the id in 16 hex digits. Ids are never reused.

use std::path::{Path, PathBuf};

pub(crate) fn object_path(objects_dir: &Path, id: u64) -> PathBuf {
    objects_dir
        .join(format!("{:02x}", id & 0xff))
        .join(format!("{id:016x}"))
}

/// The object id a file name in an `objects/XX` directory stands for.
pub(crate) fn object_id(file_name: &std::ffi::OsStr) -> Option<u64> {
    let name = file_name.to_str()?;
    (name.len() == 16)
        .then(|| u64::from_str_radix(name, 16).ok())
        .flatten()
}
