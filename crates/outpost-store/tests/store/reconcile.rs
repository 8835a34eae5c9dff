//! Start-up after a crash at each phase of a fill, a completion or an
//! eviction: the state each phase leaves on disk is built by hand (or by
//! stopping the store between steps), then the store is opened again and
//! what lookups return and which files remain are checked.

use bytes::Bytes;
use outpost_http::ByteRange;
use outpost_store::Availability;

use crate::common::{file_of, head, index_sql, key, object_files, open, put};

const URL: &str = "http://origin.example/pkg.msi";

#[tokio::test]
async fn a_data_file_without_an_index_row_is_removed() {
    // A crash between creating an object's file and committing its row.
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    put(&store, URL, b"kept").await;
    drop(store);
    let stray_dir = tmp.path().join("objects").join("ff");
    std::fs::create_dir_all(&stray_dir).unwrap();
    std::fs::write(
        stray_dir.join(format!("{:016x}", 0xabcdffu64)),
        b"half a body",
    )
    .unwrap();

    let store = open(tmp.path());
    let files = object_files(tmp.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].1, 4, "the row's own file stays");
    assert_eq!(store.stats().unwrap().bytes, 4);
}

#[tokio::test]
async fn files_that_are_not_objects_are_removed() {
    // Whatever an interrupted copy or an editor left beside the objects.
    let tmp = tempfile::tempdir().unwrap();
    drop(open(tmp.path()));
    let objects = tmp.path().join("objects");
    std::fs::create_dir_all(objects.join("01")).unwrap();
    std::fs::write(objects.join("01").join("0000000000000001.tmp"), b"x").unwrap();
    std::fs::write(objects.join("stray"), b"x").unwrap();

    let _store = open(tmp.path());
    assert!(object_files(tmp.path()).is_empty());
    assert!(!objects.join("stray").exists());
}

#[tokio::test]
async fn an_index_row_without_its_file_is_dropped() {
    // An eviction that deleted the file but could not delete the row.
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    put(&store, URL, b"body").await;
    let file = file_of(&store, URL);
    drop(store);
    std::fs::remove_file(&file).unwrap();

    let store = open(tmp.path());
    assert!(store.get(&key(URL)).unwrap().is_none());
    assert!(store.list(10).unwrap().is_empty());
    assert_eq!(store.stats().unwrap().bytes, 0);
}

#[tokio::test]
async fn a_complete_row_whose_file_is_short_is_never_served() {
    // A file cut after the row said complete (a copy, a disk error).
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    put(&store, URL, &[7u8; 1000]).await;
    let file = file_of(&store, URL);
    drop(store);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(999)
        .unwrap();

    let store = open(tmp.path());
    assert!(store.get(&key(URL)).unwrap().is_none());
    assert!(object_files(tmp.path()).is_empty());
    assert_eq!(store.stats().unwrap().bytes, 0);
}

#[tokio::test]
async fn a_half_written_head_drops_the_object() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    put(&store, URL, b"body").await;
    put(&store, "http://origin.example/other", b"other").await;
    drop(store);
    index_sql(
        tmp.path(),
        &format!(
            "UPDATE objects SET head = '{{\"status\":200,\"hea' WHERE key = '{}'",
            key(URL)
        ),
    );

    let store = open(tmp.path());
    assert!(store.get(&key(URL)).unwrap().is_none());
    let other = store
        .get(&key("http://origin.example/other"))
        .unwrap()
        .expect("the sound object stays");
    assert!(other.is_complete());
    assert_eq!(object_files(tmp.path()).len(), 1);
    assert_eq!(store.stats().unwrap().bytes, 5);
}

#[tokio::test]
async fn a_partial_object_keeps_only_its_checkpointed_extents() {
    // A fill stopped mid-body: bytes written after the last checkpoint
    // are on disk but not recorded, so they are not trusted.
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let obj = store.create(&key(URL), head(), Some(1000)).unwrap();
    obj.write(600, Bytes::from(vec![2u8; 200])).await.unwrap();
    obj.write(0, Bytes::from(vec![1u8; 300])).await.unwrap();
    store.checkpoint(&obj).await.unwrap();
    obj.write(300, Bytes::from(vec![9u8; 300])).await.unwrap();
    drop(obj);
    drop(store);

    let store = open(tmp.path());
    let obj = store.get(&key(URL)).unwrap().expect("the partial object");
    assert!(!obj.is_complete());
    assert_eq!(obj.snapshot().present.pairs(), &[(0, 300), (600, 800)]);
    assert_eq!(obj.missing(ByteRange::new(0, 1000)).len(), 2);
    assert_eq!(obj.availability(300), Availability::Ready(300));
    assert_eq!(&obj.read(0, 300).await.unwrap()[..], &[1u8; 300][..]);
    assert_eq!(store.stats().unwrap().bytes, 500);
}

#[tokio::test]
async fn recorded_extents_beyond_the_file_are_cut_to_the_file() {
    // The index got ahead of the file (a power cut losing unsynced data
    // under a lying disk): only bytes the file really has are trusted.
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let obj = store.create(&key(URL), head(), Some(1000)).unwrap();
    obj.write(0, Bytes::from(vec![1u8; 500])).await.unwrap();
    store.checkpoint(&obj).await.unwrap();
    let file = obj.path().to_path_buf();
    drop(obj);
    drop(store);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(200)
        .unwrap();

    let store = open(tmp.path());
    let obj = store.get(&key(URL)).unwrap().expect("the partial object");
    assert_eq!(obj.snapshot().present.pairs(), &[(0, 200)]);
    assert_eq!(obj.availability(0), Availability::Ready(200));
}

#[tokio::test]
async fn a_fill_stopped_after_its_last_checkpoint_but_before_completion_is_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let obj = store.create(&key(URL), head(), Some(1000)).unwrap();
    obj.write(0, Bytes::from(vec![3u8; 1000])).await.unwrap();
    store.checkpoint(&obj).await.unwrap();
    drop(obj);
    drop(store);

    let store = open(tmp.path());
    let obj = store.get(&key(URL)).unwrap().expect("stored");
    assert!(obj.is_complete());
    assert_eq!(&obj.read(0, 1000).await.unwrap()[..], &[3u8; 1000][..]);
}

#[tokio::test]
async fn a_fill_that_never_checkpointed_resumes_from_nothing() {
    // A crash right after the row was written: the file has bytes, the
    // index none of them.
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let obj = store.create(&key(URL), head(), Some(1000)).unwrap();
    obj.write(0, Bytes::from(vec![3u8; 400])).await.unwrap();
    drop(obj);
    drop(store);

    let store = open(tmp.path());
    let obj = store.get(&key(URL)).unwrap().expect("the row stays");
    assert!(obj.snapshot().present.is_empty());
    assert_eq!(obj.availability(0), Availability::Ready(0));
    assert_eq!(store.stats().unwrap().bytes, 0);
}
