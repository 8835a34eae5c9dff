//! Partial objects: bytes written out of order, coalesced extents, holes
//! that readers wait on rather than read, and the known length.

use std::time::Duration;

use bytes::Bytes;
use outpost_http::ByteRange;
use outpost_store::Availability;

use crate::common::{head, key, open};

const URL: &str = "http://origin.example/image.iso";

fn bytes(value: u8, len: usize) -> Bytes {
    Bytes::from(vec![value; len])
}

#[tokio::test]
async fn ranges_written_out_of_order_coalesce_into_one_complete_body() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let obj = store.create(&key(URL), head(), Some(1000)).unwrap();
    obj.write(600, bytes(3, 400)).await.unwrap();
    obj.write(0, bytes(1, 300)).await.unwrap();
    assert_eq!(obj.snapshot().present.pairs(), &[(0, 300), (600, 1000)]);
    assert!(!store.finish(&obj).await.unwrap(), "complete with a hole");
    // An overlapping write adds only what was missing.
    let added = obj.write(200, bytes(2, 450)).await.unwrap();
    assert_eq!(added, 300);
    assert_eq!(obj.snapshot().present.pairs(), &[(0, 1000)]);
    assert!(store.finish(&obj).await.unwrap());
    assert!(obj.is_complete());
    let body = obj.read(0, 1000).await.unwrap();
    assert_eq!(&body[..200], &[1u8; 200][..]);
    assert_eq!(&body[200..650], &[2u8; 450][..]);
    assert_eq!(&body[650..], &[3u8; 350][..]);
}

#[tokio::test]
async fn a_reader_at_a_hole_waits_for_its_bytes_and_never_reads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let obj = store.create(&key(URL), head(), Some(1000)).unwrap();
    obj.write(0, bytes(1, 300)).await.unwrap();
    obj.write(600, bytes(3, 400)).await.unwrap();
    // Readable up to the hole, nothing at it.
    assert_eq!(obj.availability(0), Availability::Ready(300));
    assert_eq!(obj.availability(300), Availability::Ready(300));
    assert_eq!(obj.availability(600), Availability::Ready(1000));
    assert_eq!(obj.availability(1000), Availability::End);
    assert_eq!(
        obj.missing(ByteRange::new(0, 1000)),
        vec![ByteRange::new(300, 600)]
    );

    let waiter = {
        let obj = obj.clone();
        tokio::spawn(async move { obj.wait_available(300).await })
    };
    // Bytes elsewhere do not release it.
    obj.write(800, bytes(3, 100)).await.unwrap();
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "a reader at a hole was let through");
    obj.write(300, bytes(2, 100)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the reader wakes when its bytes land")
        .unwrap();
    assert_eq!(got, Availability::Ready(400));
}

#[tokio::test]
async fn a_failed_object_stops_its_waiting_readers() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let obj = store.create(&key(URL), head(), Some(1000)).unwrap();
    let waiter = {
        let obj = obj.clone();
        tokio::spawn(async move { obj.wait_available(0).await })
    };
    store.fail(&obj, "origin changed", false);
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the reader is woken")
        .unwrap();
    assert_eq!(got, Availability::Failed("origin changed".into()));
    assert!(store.get(&key(URL)).unwrap().is_none());
}

#[tokio::test]
async fn a_length_learnt_later_bounds_the_extents_and_a_different_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    // A chunked body: no length at first.
    let obj = store.create(&key(URL), head(), None).unwrap();
    obj.write(0, bytes(1, 700)).await.unwrap();
    assert_eq!(obj.availability(0), Availability::Ready(700));
    assert!(
        !store.finish(&obj).await.unwrap(),
        "complete without a length"
    );
    assert!(obj.set_len(500));
    assert_eq!(obj.snapshot().present.pairs(), &[(0, 500)]);
    assert_eq!(obj.availability(500), Availability::End);
    assert!(
        !obj.set_len(600),
        "a second, different length is the origin changing"
    );
    assert!(store.finish(&obj).await.unwrap());
    // The file holds exactly the body.
    assert_eq!(std::fs::metadata(obj.path()).unwrap().len(), 500);
}
