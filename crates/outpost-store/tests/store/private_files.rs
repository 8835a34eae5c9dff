//! The cache directory as another local user or a planted link sees it:
//! modes after open, and object files that are symbolic links.

use crate::common::{key, put};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use outpost_store::{Store, StoreConfig};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every object file under `objects/`.
fn object_files(cache: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in std::fs::read_dir(cache.join("objects")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            files.push(f.unwrap().path());
        }
    }
    files
}

#[tokio::test]
async fn cache_dir_index_and_objects_are_private_to_the_edge_user() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let store = Store::open(StoreConfig::new(&cache, 1 << 30)).unwrap();
    put(&store, "http://origin.example/a?token=secret", b"body").await;
    store.flush_access().unwrap();

    assert_eq!(mode(&cache), 0o700, "cache directory");
    assert_eq!(mode(&cache.join("objects")), 0o700, "objects directory");
    for name in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let path = cache.join(name);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{name}");
        }
    }
    assert!(cache.join("index.sqlite").exists());
    let files = object_files(&cache);
    assert_eq!(files.len(), 1);
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
        assert_eq!(mode(f.parent().unwrap()), 0o700, "{}", f.display());
    }
}

#[test]
fn an_existing_world_readable_cache_is_made_private_at_open() {
    // As an earlier version (or systemd's CacheDirectory= with its default
    // 0755) left it.
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    drop(Store::open(StoreConfig::new(&cache, 1 << 30)).unwrap());
    let open_up =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    open_up(&cache, 0o755);
    open_up(&cache.join("objects"), 0o755);
    open_up(&cache.join("index.sqlite"), 0o644);
    std::fs::write(cache.join("index.sqlite-wal"), b"").unwrap();
    open_up(&cache.join("index.sqlite-wal"), 0o644);

    let _store = Store::open(StoreConfig::new(&cache, 1 << 30)).unwrap();
    assert_eq!(mode(&cache), 0o700);
    assert_eq!(mode(&cache.join("objects")), 0o700);
    assert_eq!(mode(&cache.join("index.sqlite")), 0o600);
    assert_eq!(mode(&cache.join("index.sqlite-wal")), 0o600);
}

/// Replaces the object file with a link to `target`.
fn plant_link(file: &Path, target: &Path) {
    std::fs::remove_file(file).unwrap();
    std::os::unix::fs::symlink(target, file).unwrap();
}

#[tokio::test]
async fn a_link_planted_in_place_of_an_object_file_is_not_followed_at_lookup() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, b"SECRET").unwrap();
    let store = Store::open(StoreConfig::new(&cache, 1 << 30)).unwrap();
    let url = "http://origin.example/six.bin";
    let obj = put(&store, url, b"origin").await;
    // The edge forgets its open file (as after a failed fill or a prune),
    // so the next lookup opens the path again.
    store.release(&obj);
    drop(obj);
    let file = object_files(&cache).pop().unwrap();
    plant_link(&file, &secret);

    let found = store.get(&key(url)).unwrap();
    assert!(
        found.is_none(),
        "the store opened an object through a symbolic link"
    );
    // The entry and the link are gone; the link's target is untouched.
    assert!(store.list(10).unwrap().is_empty());
    assert!(std::fs::symlink_metadata(&file).is_err());
    assert_eq!(std::fs::read(&secret).unwrap(), b"SECRET");
}

#[tokio::test]
async fn a_link_planted_in_place_of_an_object_file_is_dropped_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, b"SECRET").unwrap();
    let url = "http://origin.example/six.bin";
    {
        let store = Store::open(StoreConfig::new(&cache, 1 << 30)).unwrap();
        put(&store, url, b"origin").await;
    }
    // Same length as the object, so only the link itself gives it away.
    let file = object_files(&cache).pop().unwrap();
    plant_link(&file, &secret);

    let store = Store::open(StoreConfig::new(&cache, 1 << 30)).unwrap();
    assert!(store.get(&key(url)).unwrap().is_none());
    assert!(store.list(10).unwrap().is_empty());
    assert!(std::fs::symlink_metadata(&file).is_err());
    assert_eq!(std::fs::read(&secret).unwrap(), b"SECRET");
    // `cache verify` has nothing to read through it either.
    assert_eq!(store.verify().unwrap().checked, 0);
}

#[tokio::test]
async fn verify_does_not_read_through_a_link() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let impostor = tmp.path().join("impostor");
    let store = Store::open(StoreConfig::new(&cache, 1 << 30)).unwrap();
    let url = "http://origin.example/six.bin";
    let obj = put(&store, url, b"origin").await;
    // Wait (with a deadline) for the digest recorded after completion, so
    // that verify compares against it; the digest task needs the object
    // held meanwhile.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.digest(&key(url)).unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "digest never recorded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    store.release(&obj);
    drop(obj);
    // A link to a file with the very same bytes: only the link is wrong.
    std::fs::write(&impostor, b"origin").unwrap();
    let file = object_files(&cache).pop().unwrap();
    plant_link(&file, &impostor);

    let report = store.verify().unwrap();
    assert_eq!(report.dropped.len(), 1, "{report:?}");
    assert!(store.list(10).unwrap().is_empty());
    assert_eq!(std::fs::read(&impostor).unwrap(), b"origin");
}

#[test]
#[ignore = "needs root: chowns a file to another user"]
fn a_cache_directory_owned_by_another_user_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    // nobody
    std::os::unix::fs::chown(&cache, Some(65534), Some(65534)).unwrap();
    let err = Store::open(StoreConfig::new(&cache, 1 << 30))
        .err()
        .expect("a cache directory another user owns is refused")
        .to_string();
    assert!(err.contains("owned by uid 65534"), "{err}");
}
