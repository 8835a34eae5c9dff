//! Builds a synthetic cache directory of N complete objects for the
//! start-up and eviction benchmarks (bench/startup.py, bench/evict.py).
//!
//! One object is stored through the store's API (`create`, `write`,
//! `finish`), so its index row and head are what the edge itself writes;
//! the other N - 1 rows copy that row under their own key and id, each with
//! its own body file, in the layout the store uses (`objects/XX/<id>`).
//! Writing them through the API would cost one `fsync` per object (hours
//! for a million) and measure nothing the benchmark is about.
//!
//! usage: synth_store DIR COUNT [BODY_BYTES] [URL_PREFIX]

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use bytes::Bytes;
use outpost_http::CacheKey;
use outpost_store::{Store, StoreConfig, StoredHead};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: synth_store DIR COUNT [BODY_BYTES] [URL_PREFIX]");
        std::process::exit(2);
    }
    let dir = Path::new(&args[1]);
    let count: u64 = args[2].parse()?;
    let body_len: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1024);
    let prefix = args
        .get(4)
        .cloned()
        .unwrap_or_else(|| "http://origin.example/pkgs/".into());
    let url = |i: u64| format!("{prefix}{i:07}.bin");
    let body = Bytes::from(vec![b'x'; body_len]);

    // The template, through the API.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = Store::open(StoreConfig::new(dir, u64::MAX / 2))?;
        let key = CacheKey::from_uri(&url(0).parse()?)?;
        let obj = store.create(&key, head(body_len), Some(body_len as u64))?;
        obj.write(0, body.clone()).await?;
        if !store.finish(&obj).await? {
            return Err("template object not complete".into());
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    drop(runtime);

    let mut conn = rusqlite::Connection::open(dir.join("index.sqlite"))?;
    let (template_id, head_json, extents): (i64, String, String) = conn.query_row(
        "SELECT id, head, extents FROM objects WHERE key = ?1",
        [url(0)],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let objects = dir.join("objects");
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO objects (key, id, head, len, complete, extents, size, pinned, last_access, hits)
             VALUES (?1, ?2, ?3, ?4, 1, ?5, ?4, 0, ?6, ?7)",
        )?;
        for i in 1..count {
            let id = template_id as u64 + i;
            let sub = objects.join(format!("{:02x}", id & 0xff));
            if i <= 256 {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&sub)?;
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(sub.join(format!("{id:016x}")))?;
            file.write_all(&body)?;
            // Spread access times and hit counts as a used cache has them.
            insert.execute(rusqlite::params![
                url(i),
                id as i64,
                head_json,
                body_len as i64,
                extents,
                1_700_000_000 + (i % 100_000) as i64,
                (i % 7) as i64,
            ])?;
            if i % 100_000 == 0 {
                eprintln!("{i} objects");
            }
        }
    }
    tx.commit()?;
    eprintln!("{count} objects of {body_len} bytes in {}", dir.display());
    Ok(())
}

/// A 200 that stays fresh for a year, as package files often are.
fn head(_len: usize) -> StoredHead {
    let (req, ()) = http::Request::get("http://origin.example/pkgs/0000000.bin")
        .body(())
        .expect("request")
        .into_parts();
    let (res, ()) = http::Response::builder()
        .status(200)
        .header("cache-control", "max-age=31536000")
        .header("content-type", "application/octet-stream")
        .header("etag", "\"synthetic\"")
        .header("last-modified", "Tue, 01 Dec 2026 00:00:00 GMT")
        .body(())
        .expect("response")
        .into_parts();
    let policy = outpost_http::policy::policy_for(&req, &res, std::time::SystemTime::now());
    StoredHead::new(res.status, res.headers, policy)
}
