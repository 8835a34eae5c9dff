//! A body that must match a manifest's digest: readers never see its last
//! byte before the check has passed, with its length known or not.

use crate::common::{head, key};

use bytes::Bytes;
use outpost_store::{Availability, Store, StoreConfig};

const URL: &str = "http://mirror.example/pkgs/app.msi";

#[tokio::test]
async fn the_last_byte_waits_for_the_check_with_or_without_a_length() {
    for len in [Some(100), None] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path(), 1 << 30)).unwrap();
        store.expect_digest(&key(URL), Some(&"0".repeat(64)));
        let obj = store.create(&key(URL), head(), len).unwrap();
        obj.write(0, Bytes::from(vec![7u8; 100])).await.unwrap();
        // Every byte is on disk; the reader may take all but the last.
        assert_eq!(
            obj.availability(0),
            Availability::Ready(99),
            "length {len:?}"
        );
        assert_eq!(
            obj.availability(99),
            Availability::Ready(99),
            "length {len:?}"
        );
        // A body without the digest is readable to its end as it lands.
        let other = key("http://mirror.example/pkgs/other.msi");
        let plain = store.create(&other, head(), len).unwrap();
        plain.write(0, Bytes::from(vec![7u8; 100])).await.unwrap();
        assert_eq!(plain.availability(0), Availability::Ready(100));
    }
}
