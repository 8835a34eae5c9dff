//! A cache directory the store cannot use: the error names the path and
//! the cause, once.

use std::path::Path;
use std::process::Command;

use outpost_store::{Store, StoreConfig};

/// The error's message with every source in its chain, as the binary
/// prints it (`{:#}` of anyhow).
fn as_printed(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[test]
fn a_file_given_as_the_cache_directory_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("cache");
    std::fs::write(&file, b"not a cache").unwrap();
    let err = Store::open(StoreConfig::new(&file, 1 << 30))
        .err()
        .expect("a file is not a cache directory");
    assert_eq!(
        as_printed(&err),
        format!(
            "cache directory {} is a file, not a directory",
            file.display()
        )
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"not a cache");
}

/// A read-only bind mount of a directory onto itself, undone when dropped.
struct ReadOnly<'a>(&'a Path);

impl<'a> ReadOnly<'a> {
    fn mount(dir: &'a Path) -> Self {
        let run = |args: &[&str]| {
            let out = Command::new("mount").args(args).arg(dir).arg(dir).output();
            let out = out.expect("run mount");
            assert!(
                out.status.success(),
                "mount {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["--bind"]);
        let guard = Self(dir);
        run(&["-o", "remount,bind,ro"]);
        guard
    }
}

impl Drop for ReadOnly<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[test]
#[ignore = "needs root: mounts a read-only bind mount"]
fn a_cache_directory_that_cannot_be_written_names_the_path_and_the_cause_once() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    let _ro = ReadOnly::mount(&cache);
    let err = Store::open(StoreConfig::new(&cache, 1 << 30))
        .err()
        .expect("a read-only cache directory is refused");
    let printed = as_printed(&err);
    let uid = rustix::process::geteuid().as_raw();
    assert_eq!(
        printed,
        format!(
            "cannot create {}: read-only file system (running as uid {uid})",
            cache.join("lock").display()
        )
    );
}
