//! Test support for the dashboard: a manager on a free port, a small
//! cookie-keeping HTTP client, and a headless Chromium driven over
//! WebDriver by Debian's chromedriver.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use outpost_manager::auth::{Role, add_user};
use outpost_manager::dashboard::{self, Dashboard};
use outpost_manager::http::client::Client as FleetClient;
use outpost_manager::http::{ServeOptions, serve};
use outpost_manager::init::{InitOptions, init};
use outpost_manager::{Manager, ManagerOptions};
use outpost_protocol::{EnrolReply, EnrolRequest, ManagerInit};

use crate::support::{TestEdge, validator};
use tokio::process::{Child, Command};

pub const ADMIN: (&str, &str) = ("alice", "alice-password");
pub const VIEWER: (&str, &str) = ("victor", "victor-password");

/// A manager with its dashboard served on 127.0.0.1:0 over plain HTTP,
/// heartbeat 1 s, with an admin and a viewer; edges enrol over the real
/// edge protocol.
pub struct TestDashboard {
    pub addr: SocketAddr,
    pub manager: Arc<Manager>,
    pub init: ManagerInit,
    _dir: tempfile::TempDir,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TestDashboard {
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let data_dir = dir.path().join("data");
        let init = init(&InitOptions {
            data_dir: data_dir.clone(),
            tls_cert: None,
            tls_key: None,
            sans: vec![],
        })?;
        let manager = Manager::open(ManagerOptions {
            data_dir,
            heartbeat: Duration::from_secs(1),
            validator: validator(),
        })?;
        let dashboard = Dashboard::new(manager.clone(), false)?;
        {
            let conn = manager.db().connection();
            add_user(&conn, ADMIN.0, Role::Admin, ADMIN.1, 0)?;
            add_user(&conn, VIEWER.0, Role::Viewer, VIEWER.1, 0)?;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let background = tokio::spawn(manager.clone().run_background());
        let server = tokio::spawn(serve(
            manager.clone(),
            listener,
            ServeOptions {
                extra_routes: Some(dashboard::router(dashboard)),
                ..ServeOptions::default()
            },
        ));
        Ok(Self {
            addr,
            manager,
            init,
            _dir: dir,
            tasks: vec![background, server],
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }

    /// Enrols an edge over the edge protocol.
    pub async fn enrol(&self, site: &str, hostname: &str) -> anyhow::Result<TestEdge> {
        let client = FleetClient::new(&format!("http://{}", self.addr), None)?.fleet_protocol();
        let reply: EnrolReply = client
            .send(
                http::Method::POST,
                "/edge/v1/enrol",
                &EnrolRequest {
                    join_token: self.init.join_token.clone(),
                    site: site.into(),
                    version: "0.1.0".into(),
                    hostname: hostname.into(),
                },
            )
            .await?;
        Ok(TestEdge {
            client: client.bearer(&reply.credential),
            reply,
            applied: 0,
        })
    }
}

impl Drop for TestDashboard {
    fn drop(&mut self) {
        self.manager.shutdown_token().cancel();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One answer, body read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn location(&self) -> &str {
        self.header("location")
    }
}

/// A browser-like client: keeps the session cookie, sends forms.
pub struct Web {
    base: String,
    host: String,
    client: Client<HttpConnector, Full<Bytes>>,
    pub cookie: Option<String>,
}

impl Web {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            host: addr.to_string(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            cookie: None,
        }
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.send(http::Method::GET, path, Vec::new(), &[]).await
    }

    /// POSTs a form with `Origin` set to this host, as a browser does.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> anyhow::Result<Reply> {
        let origin = self.base.clone();
        self.post_with(path, form, &[("origin", &origin)]).await
    }

    pub async fn post_with(
        &self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Reply> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut all = vec![("content-type", "application/x-www-form-urlencoded")];
        all.extend_from_slice(headers);
        self.send(http::Method::POST, path, body.into_bytes(), &all)
            .await
    }

    async fn send(
        &self,
        method: http::Method,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Reply> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path))
            .header("host", &self.host);
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .client
            .request(request.body(Full::new(Bytes::from(body)))?)
            .await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// Logs in and keeps the session cookie.
    pub async fn login(&mut self, name: &str, password: &str) -> anyhow::Result<Reply> {
        let reply = self
            .post("/login", &[("name", name), ("password", password)])
            .await?;
        if let Some(set) = reply.headers.get("set-cookie") {
            let pair = set.to_str()?.split(';').next().unwrap_or("").to_owned();
            self.cookie = Some(pair);
        }
        Ok(reply)
    }

    /// The CSRF token of the forms on `path`.
    pub async fn csrf(&self, path: &str) -> anyhow::Result<String> {
        let page = self.get(path).await?;
        let marker = "name=\"csrf\" value=\"";
        let start = page
            .body
            .find(marker)
            .context("no CSRF field on the page")?
            + marker.len();
        let end = page.body[start..].find('"').context("unterminated value")? + start;
        Ok(page.body[start..end].to_owned())
    }
}

// --- Chromium over WebDriver ---------------------------------------------

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long a page may take to show what a test waits for. Generous: CI
/// runs every test binary's tests at once on two cores, and the deadline
/// costs time only when something is wrong.
const WAIT: Duration = Duration::from_secs(30);
const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium with a fresh profile, driven by its own
/// chromedriver on a free port. Ends both when dropped.
pub struct Browser {
    pub client: fantoccini::Client,
    driver: DriverGroup,
    _profile: tempfile::TempDir,
}

/// chromedriver in a process group of its own, with the Chromium it
/// starts: a test that fails half-way (no WebDriver close) must not leave
/// a browser running, so dropping this ends the whole group.
struct DriverGroup(Child);

impl DriverGroup {
    fn end(&mut self) {
        if let Some(pid) = self.0.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.0.start_kill();
    }
}

impl Drop for DriverGroup {
    fn drop(&mut self) {
        self.end();
    }
}

impl Browser {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Path::new(CHROMEDRIVER), Path::new(CHROMIUM)).await
    }

    pub async fn start_with(chromedriver: &Path, chromium: &Path) -> anyhow::Result<Self> {
        for binary in [chromedriver, chromium] {
            if !binary.exists() {
                bail!(
                    "{} is missing: the dashboard's browser tests need Debian's \
                     `chromium` and `chromium-driver` packages (apt-get install chromium \
                     chromium-driver; .ci/run installs them)",
                    binary.display()
                );
            }
        }
        let profile = tempfile::tempdir()?;
        // chromedriver cannot be told to pick a port and report it, so
        // take a free one and retry if another process grabbed it first.
        let mut last_error = None;
        for _ in 0..3 {
            let port = free_port()?;
            let mut driver = DriverGroup(
                Command::new(chromedriver)
                    .arg(format!("--port={port}"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .process_group(0)
                    .kill_on_drop(true)
                    .spawn()
                    .with_context(|| format!("starting {}", chromedriver.display()))?,
            );
            match connect(port, profile.path(), chromium, &mut driver.0).await {
                Ok(client) => {
                    return Ok(Self {
                        client,
                        driver,
                        _profile: profile,
                    });
                }
                Err(e) => {
                    driver.end();
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("chromedriver did not start")))
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.client.goto(url).await?;
        Ok(())
    }

    /// Waits until an element matching `css` exists; returns its text.
    pub async fn text_of(&self, css: &str) -> anyhow::Result<String> {
        let found = self
            .client
            .wait()
            .at_most(WAIT)
            .for_element(fantoccini::Locator::Css(css))
            .await;
        match found {
            Ok(element) => Ok(element.text().await?),
            Err(e) => bail!("no element {css} on {}: {e}", self.current_url().await),
        }
    }

    /// Waits until the element matching `css` contains `needle`.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = match self.client.find(fantoccini::Locator::Css(css)).await {
                Ok(element) => element.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains(needle) {
                return Ok(text);
            }
            if Instant::now() > deadline {
                bail!(
                    "{css} on {} never showed {needle:?}; last text: {text:?}",
                    self.current_url().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn fill(&self, css: &str, value: &str) -> anyhow::Result<()> {
        let element = self.client.find(fantoccini::Locator::Css(css)).await?;
        element.clear().await?;
        element.send_keys(value).await?;
        Ok(())
    }

    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.client
            .find(fantoccini::Locator::Css(css))
            .await
            .with_context(|| format!("no element {css}"))?
            .click()
            .await?;
        Ok(())
    }

    pub async fn current_url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let png = self.client.screenshot().await?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }

    /// Ends the WebDriver session (Chromium quits), then the driver's
    /// process group.
    pub async fn close(mut self) -> anyhow::Result<()> {
        let closed = self.client.clone().close().await;
        self.driver.end();
        closed?;
        Ok(())
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

async fn connect(
    port: u16,
    profile: &Path,
    chromium: &Path,
    driver: &mut Child,
) -> anyhow::Result<fantoccini::Client> {
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = driver.try_wait()? {
            let mut stderr = String::new();
            if let Some(mut pipe) = driver.stderr.take() {
                use tokio::io::AsyncReadExt;
                let _ = pipe.read_to_string(&mut stderr).await;
            }
            bail!("chromedriver exited ({status}): {stderr}");
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("chromedriver did not listen on port {port} within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium.display().to_string(),
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                // Crash reporters start in sessions of their own, out of
                // reach of the process group.
                "--disable-crash-reporter",
                "--disable-breakpad",
                "--disable-dev-shm-usage",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let client = fantoccini::ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&url)
        .await
        .with_context(|| format!("WebDriver session on {url}"))?;
    Ok(client)
}
