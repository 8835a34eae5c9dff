//! `outpost export` / `[[channel]] export`: the channel's files as a plain
//! read-only tree (hard links into the store, copies across file
//! systems), swapped in whole by a link flip after each complete sync,
//! and never written outside its own directory.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use outpost_channel::ExportError;
use outpost_http::CacheKey;
use outpost_testkit::{Origin, content};

use crate::support::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file under `root` (following `root` itself if it is the link),
/// by relative path.
fn tree_files(root: &Path) -> Vec<(String, Bytes)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                assert_eq!(mode(&path), 0o755, "{}", path.display());
                stack.push(path);
            } else {
                assert!(entry.file_type().unwrap().is_file(), "{}", path.display());
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, Bytes::from(std::fs::read(&path).unwrap())));
            }
        }
    }
    out.sort();
    out
}

fn expected(lib: &Library) -> Vec<(String, Bytes)> {
    lib.files
        .iter()
        .map(|(path, (body, _))| {
            (
                path.strip_prefix("/lib/").unwrap().to_string(),
                body.clone(),
            )
        })
        .collect()
}

fn store_inode(site: &Site, origin: &Origin, path: &str) -> u64 {
    let key = CacheKey::from_uri(&origin.url(path).parse().unwrap()).unwrap();
    let obj = site.engine.store.get(&key).unwrap().unwrap();
    std::fs::metadata(obj.path()).unwrap().ino()
}

/// Sibling entries of `dir` that belong to the export (trees and links).
fn versions(dir: &Path) -> Vec<PathBuf> {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(&format!("{name}.new-")) || n.starts_with(&format!("{name}.link-"))
        })
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn an_export_is_a_read_only_tree_of_hard_links_into_the_store() {
    let origin = Origin::start().await;
    let lib = sample_library(Style::Nginx);
    lib.publish(&origin, &[]);
    let cache = tempfile::tempdir().unwrap();
    let share = tempfile::tempdir().unwrap();
    let dir = share.path().join("packages");
    let site = Site::start(cache.path(), vec![channel(&origin, "/lib/")], 1 << 30).await;
    assert_eq!(site.sync("lib").await.result, "ok");

    let status = site.channels.export("lib", &dir).await.unwrap();
    assert_eq!((status.files, status.linked, status.copied), (3, 3, 0));
    assert_eq!(status.bytes, lib.total_bytes());
    assert!(
        std::fs::symlink_metadata(&dir)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(tree_files(&dir), expected(&lib));
    let linked = dir.join("drivers/gpu/gpu.exe");
    assert_eq!(
        std::fs::metadata(&linked).unwrap().ino(),
        store_inode(&site, &origin, "/lib/drivers/gpu/gpu.exe"),
        "not a hard link into the store"
    );
    assert_eq!(mode(&linked) & 0o222 & !0o200, 0, "writable by others");
    // Status shows it.
    let shown = site.channels.status()[0].export.clone().unwrap();
    assert_eq!(
        (shown.files, shown.dir.clone()),
        (3, dir.display().to_string())
    );

    // Again, twice: a new version replaces the old, which is kept until
    // the next swap (a connected Samba session reads it), then removed.
    let first = std::fs::read_link(&dir).unwrap();
    site.channels.export("lib", &dir).await.unwrap();
    assert_eq!(tree_files(&dir), expected(&lib));
    assert_eq!(versions(&dir).len(), 2, "{:?}", versions(&dir));
    site.channels.export("lib", &dir).await.unwrap();
    assert_eq!(versions(&dir).len(), 2, "{:?}", versions(&dir));
    assert!(
        !share.path().join(&first).exists(),
        "the oldest version stayed"
    );
    assert_eq!(tree_files(&dir), expected(&lib));
}

#[tokio::test]
async fn each_complete_sync_swaps_in_a_new_tree_and_an_open_file_keeps_its_version() {
    let origin = Origin::start().await;
    let mut lib = sample_library(Style::Apache);
    lib.publish(&origin, &[]);
    let cache = tempfile::tempdir().unwrap();
    let share = tempfile::tempdir().unwrap();
    let dir = share.path().join("packages");
    let mut config = channel(&origin, "/lib/");
    config.export = Some(dir.clone());
    let site = Site::start(cache.path(), vec![config], 1 << 30).await;
    assert_eq!(site.sync("lib").await.result, "ok");
    assert_eq!(tree_files(&dir), expected(&lib));

    // A technician's copy under way holds the old file open.
    let old = lib.files["/lib/setup.msi"].0.clone();
    let open = std::fs::File::open(dir.join("setup.msi")).unwrap();
    let new = content(650_000, 41);
    lib.add("/lib/setup.msi", new.clone(), "a2");
    lib.files.remove("/lib/drivers/net.cab");
    lib.publish(&origin, &["/lib/drivers/net.cab"]);
    assert_eq!(site.sync("lib").await.result, "ok");

    assert_eq!(tree_files(&dir), expected(&lib));
    assert_eq!(std::fs::read(dir.join("setup.msi")).unwrap(), new);
    let mut kept = Vec::new();
    std::io::Read::read_to_end(&mut &open, &mut kept).unwrap();
    assert!(kept == old, "the open file changed under the reader");
    assert_eq!(versions(&dir).len(), 2, "{:?}", versions(&dir));

    // An incomplete sync keeps the last complete tree.
    origin.remove("/lib/drivers/gpu/gpu.exe");
    lib.add("/lib/setup.msi", content(10_000, 42), "a3");
    lib.publish(&origin, &[]);
    origin.remove("/lib/drivers/gpu/gpu.exe");
    let before = std::fs::read_link(&dir).unwrap();
    assert_eq!(site.sync("lib").await.result, "errors");
    assert_eq!(std::fs::read_link(&dir).unwrap(), before);
    assert_eq!(std::fs::read(dir.join("setup.msi")).unwrap(), new);
}

#[tokio::test]
async fn an_export_refuses_the_cache_and_others_data_and_never_follows_a_link_when_cleaning() {
    let origin = Origin::start().await;
    let lib = sample_library(Style::Iis);
    lib.publish(&origin, &[]);
    let cache = tempfile::tempdir().unwrap();
    let share = tempfile::tempdir().unwrap();
    let site = Site::start(cache.path(), vec![channel(&origin, "/lib/")], 1 << 30).await;
    assert_eq!(site.sync("lib").await.result, "ok");

    for bad in [
        cache.path().join("objects/share"),
        PathBuf::from("/"),
        PathBuf::from("relative"),
    ] {
        assert!(
            matches!(
                site.channels.export("lib", &bad).await,
                Err(ExportError::Refused { .. })
            ),
            "{}",
            bad.display()
        );
    }
    // Someone's folder of the same name is left alone.
    let theirs = share.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::write(theirs.join("notes.txt"), b"mine").unwrap();
    assert!(matches!(
        site.channels.export("lib", &theirs).await,
        Err(ExportError::Refused { .. })
    ));
    assert_eq!(std::fs::read(theirs.join("notes.txt")).unwrap(), b"mine");

    // A link planted where an old version would be is unlinked, and what
    // it points at is untouched.
    let dir = share.path().join("packages");
    let victim = share.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("keep.txt"), b"keep").unwrap();
    std::os::unix::fs::symlink(&victim, share.path().join("packages.new-planted")).unwrap();
    site.channels.export("lib", &dir).await.unwrap();
    assert_eq!(std::fs::read(victim.join("keep.txt")).unwrap(), b"keep");
    assert_eq!(tree_files(&dir), expected(&lib));
    assert_eq!(versions(&dir).len(), 1, "{:?}", versions(&dir));
}

/// On another file system than the cache, files are copied (0444).
#[tokio::test]
async fn across_file_systems_the_files_are_copied_read_only() {
    let origin = Origin::start().await;
    let lib = sample_library(Style::Nginx);
    lib.publish(&origin, &[]);
    let cache = tempfile::tempdir().unwrap();
    let shm = Path::new("/dev/shm");
    assert_ne!(
        std::fs::metadata(shm).unwrap().dev(),
        std::fs::metadata(cache.path()).unwrap().dev(),
        "this test needs /dev/shm on another file system than the temporary directory"
    );
    let share = tempfile::tempdir_in(shm).unwrap();
    let dir = share.path().join("packages");
    let site = Site::start(cache.path(), vec![channel(&origin, "/lib/")], 1 << 30).await;
    assert_eq!(site.sync("lib").await.result, "ok");
    let status = site.channels.export("lib", &dir).await.unwrap();
    assert_eq!((status.files, status.linked, status.copied), (3, 0, 3));
    assert_eq!(tree_files(&dir), expected(&lib));
    assert_eq!(mode(&dir.join("setup.msi")), 0o444);
}
