//! Pins: kept across restarts and new versions of the object, refused for
//! what is not stored, and purge.

use crate::common::{file_of, head, key, object_files, open, put};

const URL: &str = "http://origin.example/pkgs/app.msi";

#[tokio::test]
async fn a_pin_survives_a_restart_and_a_new_version() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let store = open(tmp.path());
        put(&store, URL, b"v1").await;
        assert!(store.set_pinned(&key(URL), true).unwrap());
        assert_eq!(store.stats().unwrap().pinned_bytes, 2);
    }
    let store = open(tmp.path());
    let obj = store.get(&key(URL)).unwrap().unwrap();
    assert!(obj.snapshot().pinned);
    // The refreshed copy (a channel re-sync) stays pinned.
    let v2 = store.create(&key(URL), head(), Some(3)).unwrap();
    assert!(store.get(&key(URL)).unwrap().unwrap().snapshot().pinned);
    assert!(v2.snapshot().pinned);
    assert!(store.list(10).unwrap()[0].pinned);
    // Unpinned, it is ordinary again.
    assert!(store.set_pinned(&key(URL), false).unwrap());
    assert!(!store.list(10).unwrap()[0].pinned);
}

#[tokio::test]
async fn pinning_what_is_not_stored_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    assert!(!store.set_pinned(&key(URL), true).unwrap());
    assert!(store.list(10).unwrap().is_empty());
}

#[tokio::test]
async fn purge_removes_the_row_and_the_file_and_stops_readers() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let obj = put(&store, URL, b"body").await;
    let file = file_of(&store, URL);
    assert!(store.purge(&key(URL)).unwrap());
    assert!(matches!(
        obj.availability(0),
        outpost_store::Availability::Failed(_)
    ));
    assert!(store.get(&key(URL)).unwrap().is_none());
    assert!(!file.exists());
    assert!(object_files(tmp.path()).is_empty());
    assert_eq!(store.stats().unwrap().bytes, 0);
    assert!(!store.purge(&key(URL)).unwrap(), "nothing left to purge");
}
