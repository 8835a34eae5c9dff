//! The one harness: a package folder on the fake origin, an edge that
//! synced it as channel "packages" (and a manifest as "tools"), and the
//! edge's own library listener serving the library.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use outpost_channel::{ChannelConfig, Channels};
use outpost_library::Library;
use outpost_proxy::{Engine, ProxyConfig, Server};
use outpost_store::{Store, StoreConfig};
use outpost_testkit::{Origin, Resource, content};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// The files of the package folder, by path under `/pkgs/`.
pub fn files() -> Vec<(&'static str, Bytes)> {
    vec![
        ("setup.msi", content(700_000, 1)),
        ("drivers/net card.cab", content(300_000, 2)),
        ("drivers/gpu/gpu.exe", content(900_000, 3)),
        ("readme.txt", Bytes::from_static(b"read me\n")),
    ]
}

pub fn listing(dir: &str, entries: &[String]) -> Resource {
    let mut html = format!("<html><head><title>Index of {dir}</title></head><body><pre>\n");
    for name in entries {
        let href = name.replace(' ', "%20");
        html.push_str(&format!(
            "<a href=\"{href}\">{name}</a>  24-Nov-2026 03:00  10\n"
        ));
    }
    html.push_str("</pre></body></html>");
    Resource::new(Bytes::from(html))
        .no_cache_headers()
        .header("content-type", "text/html")
}

/// Puts the package folder on the origin, with nginx-style listings.
pub fn publish(origin: &Origin) {
    for (path, body) in files() {
        origin.put(
            &format!("/pkgs/{}", path.replace(' ', "%20")),
            Resource::new(body).no_cache_headers().etag("\"v1\""),
        );
    }
    origin.put(
        "/pkgs/",
        listing(
            "/pkgs/",
            &["drivers/".into(), "readme.txt".into(), "setup.msi".into()],
        ),
    );
    origin.put(
        "/pkgs/drivers/",
        listing("/pkgs/drivers/", &["gpu/".into(), "net card.cab".into()]),
    );
    origin.put(
        "/pkgs/drivers/gpu/",
        listing("/pkgs/drivers/gpu/", &["gpu.exe".into()]),
    );
    let (name, body) = tool();
    origin.put(
        &format!("/tools/{name}"),
        Resource::new(body.clone()).no_cache_headers(),
    );
    // bad.exe's digest is not its body's: the sync quarantines it.
    origin.put(
        "/tools/bad.exe",
        Resource::new(content(10_000, 10)).no_cache_headers(),
    );
    origin.put(
        "/tools/SHA256SUMS",
        Resource::new(Bytes::from(format!(
            "{}  {name}\n{}  bad.exe\n",
            sha256_hex(&body),
            "0".repeat(64)
        )))
        .no_cache_headers(),
    );
}

/// The one file of the "tools" channel, whose manifest gives its SHA-256.
pub fn tool() -> (&'static str, Bytes) {
    ("tool.exe", content(50_000, 9))
}

pub struct Site {
    pub origin: Origin,
    pub channels: Arc<Channels>,
    pub engine: Arc<Engine>,
    /// The library listener.
    pub addr: SocketAddr,
    /// The proxy listener.
    pub proxy: SocketAddr,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Site {
    /// An edge whose channel "packages" has synced the package folder.
    pub async fn synced() -> Self {
        let origin = Origin::start().await;
        publish(&origin);
        let dir = tempfile::tempdir().unwrap();
        let mut config = ProxyConfig {
            internal_destinations: vec!["127.0.0.0/8".parse().unwrap()],
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            ..Default::default()
        };
        config.library.listen = Some("127.0.0.1:0".parse().unwrap());
        let store = Store::open(StoreConfig::new(dir.path(), 1 << 30)).expect("open store");
        let engine = Engine::new(config, store);
        let mut server = Server::bind(engine.clone()).await.expect("bind");
        let proxy = server.local_addrs()[0];
        let addr = server.library_addr().expect("a library listener");
        let channel = |name: &str, source: &str| {
            ChannelConfig::new(name, origin.url(source).parse().unwrap())
        };
        let configs = vec![
            // A listing and a manifest (by the trailing '/').
            channel("packages", "/pkgs/"),
            channel("tools", "/tools/SHA256SUMS"),
        ];
        let channels = Channels::start(engine.clone(), configs, dir.path()).expect("channels");
        for name in ["packages", "tools"] {
            let run = channels.sync(name).expect("start sync");
            tokio::time::timeout(Duration::from_secs(20), channels.wait(name, run))
                .await
                .expect("sync finishes")
                .unwrap();
        }
        server.set_local_site(Arc::new(Library::new(channels.clone())));
        let shutdown = CancellationToken::new();
        tokio::spawn(server.run(shutdown.clone()));
        Self {
            origin,
            channels,
            engine,
            addr,
            proxy,
            shutdown,
            _dir: dir,
        }
    }

    /// Origin GETs of a file of the package folder.
    pub fn origin_gets(&self, path: &str) -> usize {
        self.origin
            .count(&format!("/pkgs/{}", path.replace(' ', "%20")))
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A raw response: status, headers (lower-case names) and body.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` (a whole HTTP/1.1 request, as a client wrote it) and
/// reads the response until the server closes the connection.
pub async fn raw(addr: SocketAddr, request: &str) -> Raw {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
        .await
        .expect("the server answers and closes")
        .unwrap();
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> Raw {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = buf[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Raw {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
}

/// A request of `method` for `path` with `headers` and `body`, closing.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || method == "PROPFIND" {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out
}

pub async fn get(site: &Site, path: &str, headers: &[(&str, &str)]) -> Raw {
    raw(site.addr, &request("GET", path, headers, "")).await
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
