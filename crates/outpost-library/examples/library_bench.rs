//! The edge bench/library.sh measures: an in-process origin serving one
//! file, an edge (proxy listener and library listener, the same server
//! code the binary runs) whose channel "bench" pre-positioned it, then
//! nothing until stdin closes. Prints one line for the script:
//! `READY proxy=ADDR library=ADDR url=ORIGIN_URL path=/bench/FILE`.
//!
//! With SMALL_FILES > 0 the channel also holds that many 1 KiB files in
//! one folder, `/bench/many/`, for timing folder listings.
//!
//! cargo run --release -p outpost-library --example library_bench -- SIZE_MIB DIR [SMALL_FILES]

use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost_channel::{ChannelConfig, Channels};
use outpost_library::Library;
use outpost_proxy::{Engine, ProxyConfig, Server};
use outpost_store::{Store, StoreConfig};
use outpost_testkit::{Origin, Resource, content};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().unwrap_or_else(|| "1024".into()).parse()?;
    let dir = std::path::PathBuf::from(
        args.next()
            .unwrap_or_else(|| "/tmp/outpost-library-bench".into()),
    );
    let small: usize = args.next().unwrap_or_else(|| "0".into()).parse()?;
    std::fs::create_dir_all(&dir)?;

    let origin = Origin::start().await;
    origin.put(
        "/bench/big.bin",
        Resource::new(content(mib << 20, 7)).no_cache_headers(),
    );
    let mut top = String::from("<a href=\"big.bin\">big.bin</a>\n");
    if small > 0 {
        top.push_str("<a href=\"many/\">many/</a>\n");
        let mut many = String::new();
        for i in 0..small {
            let name = format!("f{i:06}.txt");
            origin.put(
                &format!("/bench/many/{name}"),
                Resource::new(content(1024, i as u64)).no_cache_headers(),
            );
            many.push_str(&format!("<a href=\"{name}\">{name}</a>\n"));
        }
        origin.put(
            "/bench/many/",
            Resource::new(bytes::Bytes::from(many))
                .no_cache_headers()
                .header("content-type", "text/html"),
        );
    }
    origin.put(
        "/bench/",
        Resource::new(bytes::Bytes::from(top))
            .no_cache_headers()
            .header("content-type", "text/html"),
    );
    let mut config = ProxyConfig {
        internal_destinations: vec!["127.0.0.0/8".parse()?],
        listen: vec!["127.0.0.1:0".parse()?],
        ..Default::default()
    };
    config.library.listen = Some("127.0.0.1:0".parse()?);
    let store = Store::open(StoreConfig::new(&dir, (mib as u64 + 64) << 21))?;
    let engine = Engine::new(config, store);
    let mut server = Server::bind(engine.clone()).await?;
    let proxy = server.local_addrs()[0];
    let library = server.library_addr().expect("library listener");
    let channel = ChannelConfig {
        concurrency: 8,
        ..ChannelConfig::new("bench", url::Url::parse(&origin.url("/bench/"))?)
    };
    let channels = Channels::start(engine.clone(), vec![channel], &dir)?;
    let started = Instant::now();
    let run = channels.sync("bench")?;
    tokio::time::timeout(Duration::from_secs(600), channels.wait("bench", run)).await??;
    eprintln!(
        "synced {mib} MiB and {small} small files in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    server.set_local_site(Arc::new(Library::new(channels)));
    let shutdown = CancellationToken::new();
    tokio::spawn(server.run(shutdown.clone()));
    println!(
        "READY proxy={proxy} library={library} url={} path=/bench/big.bin",
        origin.url("/bench/big.bin")
    );
    // Until the script is done with us.
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    shutdown.cancel();
    eprintln!(
        "origin requests for the file: {}",
        origin.count("/bench/big.bin")
    );
    Ok(())
}
