//! Admin commands that talk to a running edge's admin API.
//!
//! The edge requires its bearer token for these (loopback included); the
//! CLI finds it as [`Endpoint::resolve`] says, so that on the machine the
//! edge runs on `outpost status` needs no flags. Answers are decoded into
//! `outpost_protocol`'s types, the ones the edge encodes: [`show`] prints
//! them, [`sync`] follows a sync run.

mod export;
mod show;
mod sync;
mod text;
mod wccp;

pub use export::export;
pub use show::{action, cache_ls, cache_verify, channels, reload, status};
pub use sync::sync;
pub use wccp::wccp_status;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use outpost_protocol::ApiError;
use serde::de::DeserializeOwned;

use crate::config::{ADMIN_TOKEN_FILE_NAME, DEFAULT_ADMIN, DEFAULT_CACHE_DIR, FileConfig};

/// The packaged config file, tried when nothing else names the edge.
const SYSTEM_CONFIG: &str = "/etc/outpost/outpost.toml";

/// How to reach the edge.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Admin API address of the edge [default: the --config file's
    /// admin.listen, else 127.0.0.1:3180].
    #[arg(long, env = "OUTPOST_ADMIN")]
    pub admin: Option<SocketAddr>,
    /// Bearer token of the admin API. Default: read from --token-file, else
    /// the --config file's admin.token_file or its cache directory's
    /// admin.token, else ./outpost-cache/admin.token, else as
    /// /etc/outpost/outpost.toml says.
    #[arg(long, env = "OUTPOST_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token.
    #[arg(long, env = "OUTPOST_ADMIN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The edge's config file: its admin address and token file (or the
    /// admin.token the edge generated in its cache directory).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Print the raw JSON document.
    #[arg(long)]
    pub json: bool,
}

/// Where the CLI sends its requests, with what token.
pub struct Endpoint {
    addr: SocketAddr,
    /// The token and where it came from; `Err` lists where it was looked for.
    token: Result<(String, String), Vec<String>>,
}

/// A token file the CLI found by itself (not one named on its command
/// line): read only if it is a regular file of this user's or root's that
/// nobody else can read or write, never through a symbolic link. Whoever
/// could plant one (in the current directory, say) could otherwise make
/// the CLI send another file's first line as a bearer token, or feed it
/// a token of theirs.
fn discovered_token(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .with_context(|| {
            format!(
                "cannot read the admin token file {} (it must not be a symbolic link; it is readable by the edge's user only: run as that user or root, or give --token-file)",
                path.display()
            )
        })?;
    let meta = file.metadata()?;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_file() || (meta.uid() != me && meta.uid() != 0) || meta.mode() & 0o077 != 0 {
        bail!(
            "the admin token file {} is not a private file of this user or root (owner {}, mode {:o}): not used; give --token-file to use it anyway",
            path.display(),
            meta.uid(),
            meta.mode() & 0o7777
        );
    }
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let token = text.trim().to_string();
    if token.is_empty() {
        bail!("the admin token file {} is empty", path.display());
    }
    Ok(token)
}

fn token_from_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the admin token file {} (it is readable by the edge's user only: run as that user or root, or give --token-file)",
            path.display()
        )
    })?;
    let token = text.trim().to_string();
    if token.is_empty() {
        bail!("the admin token file {} is empty", path.display());
    }
    Ok(token)
}

impl Endpoint {
    /// The admin address: --admin (or OUTPOST_ADMIN), else the config
    /// file's admin.listen, else 127.0.0.1:3180. The token, first found:
    ///
    /// 1. --token (or OUTPOST_ADMIN_TOKEN);
    /// 2. --token-file (or OUTPOST_ADMIN_TOKEN_FILE);
    /// 3. with --config: its admin.token_file, else admin.token in its
    ///    cache directory;
    /// 4. without: ./outpost-cache/admin.token (the default cache
    ///    directory), then what /etc/outpost/outpost.toml names, as in 3.
    ///
    /// A source that is named but cannot be read is an error; a default
    /// that does not exist is passed over.
    pub fn resolve(target: &Target) -> anyhow::Result<Self> {
        let mut looked = Vec::new();
        let mut config = None;
        let mut token = None;
        if let Some(t) = &target.token {
            token = Some((t.clone(), "--token / OUTPOST_ADMIN_TOKEN".to_string()));
        } else {
            looked.push("--token / OUTPOST_ADMIN_TOKEN (not set)".to_string());
        }
        if token.is_none() {
            match &target.token_file {
                Some(path) => {
                    token = Some((
                        token_from_file(path)?,
                        format!(
                            "{} (--token-file / OUTPOST_ADMIN_TOKEN_FILE)",
                            path.display()
                        ),
                    ))
                }
                None => looked.push("--token-file / OUTPOST_ADMIN_TOKEN_FILE (not set)".into()),
            }
        }
        let load = |path: &Path| {
            FileConfig::load(path).with_context(|| {
                format!("reading {} for the edge's admin settings", path.display())
            })
        };
        match &target.config {
            Some(path) => {
                let file = load(path)?;
                if token.is_none() {
                    let token_path = file.admin_token_file();
                    if file.admin.token_file.is_some() || token_path.exists() {
                        token = Some((
                            discovered_token(&token_path)?,
                            format!(
                                "{} (from --config {})",
                                token_path.display(),
                                path.display()
                            ),
                        ));
                    } else {
                        looked.push(format!(
                            "{} (from --config {}: not found; has the edge started with this config?)",
                            token_path.display(),
                            path.display()
                        ));
                    }
                }
                config = Some(file);
            }
            None if token.is_none() => {
                let default = Path::new(DEFAULT_CACHE_DIR).join(ADMIN_TOKEN_FILE_NAME);
                let system = Path::new(SYSTEM_CONFIG);
                if default.exists() {
                    token = Some((
                        discovered_token(&default)?,
                        format!("{} (the default cache directory)", default.display()),
                    ));
                } else if system.exists() {
                    looked.push(format!("{} (not found)", default.display()));
                    let file = load(system)?;
                    let token_path = file.admin_token_file();
                    if file.admin.token_file.is_some() || token_path.exists() {
                        token = Some((
                            discovered_token(&token_path)?,
                            format!("{} (from {SYSTEM_CONFIG})", token_path.display()),
                        ));
                    } else {
                        looked.push(format!(
                            "{} (from {SYSTEM_CONFIG}: not found)",
                            token_path.display()
                        ));
                    }
                    config = Some(file);
                } else {
                    looked.push(format!("{} (not found)", default.display()));
                    looked.push("--config FILE (not given)".into());
                }
            }
            None => {}
        }
        let addr = target
            .admin
            .or_else(|| config.as_ref().and_then(|c| c.admin_listen()))
            .unwrap_or_else(|| DEFAULT_ADMIN.parse().expect("default admin address"));
        let explicit_token = target.token.is_some() || target.token_file.is_some();
        if let Some((_, source)) = &token
            && !explicit_token
            && target.admin.is_some()
            && !addr.ip().is_loopback()
        {
            // A token this host's edge wrote goes to that edge only: sent
            // to an address from the command line, it would cross the LAN
            // to whoever that is.
            bail!(
                "the admin token in {source} is this host's edge's: not sent to {addr}; give --token or --token-file for another edge"
            );
        }
        Ok(Self {
            addr,
            token: token.ok_or(looked),
        })
    }

    /// Sends one request and decodes the answer as `T`: a field the edge
    /// did not send is an error that says so, never a 0 on the screen.
    pub fn call<T: DeserializeOwned>(&self, method: Method, path: &str) -> anyhow::Result<T> {
        let body = self.call_raw(method, path)?;
        serde_json::from_slice(&body).with_context(|| {
            format!(
                "the edge's answer to {path} is not what this outpost ({}) expects: are the edge and the CLI the same version?",
                env!("CARGO_PKG_VERSION")
            )
        })
    }

    /// Sends one request; the answer's body if it was a success.
    fn call_raw(&self, method: Method, path: &str) -> anyhow::Result<Bytes> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let addr = self.addr;
        runtime.block_on(async {
            let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| anyhow::anyhow!("timed out"))
                .and_then(|r| r.map_err(anyhow::Error::from))
                .with_context(|| format!("cannot reach the edge's admin API at {addr} (is `outpost serve` running? set --admin, OUTPOST_ADMIN or --config)"))?;
            let (token, source) = match &self.token {
                Ok(t) => t,
                Err(looked) => bail!(
                    "no admin API token found; looked at:\n  {}\ngive --token-file FILE (the token file the edge names in its log at start) or --config FILE (the edge's config)",
                    looked.join("\n  ")
                ),
            };
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header("host", addr.to_string())
                .header("authorization", format!("Bearer {token}"));
            let resp = sender.send_request(req.body(Empty::<Bytes>::new())?).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            if status == StatusCode::UNAUTHORIZED {
                bail!(
                    "the edge at {addr} refused the admin token from {source} (401): is that the token of the edge listening there?"
                );
            }
            if !status.is_success() {
                // The edge's errors are `{"error": "..."}`: show the reason.
                let reason = serde_json::from_slice::<ApiError>(&body)
                    .map(|e| e.error)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_string());
                bail!("admin API answered {status}: {reason}");
            }
            Ok(body)
        })
    }
}
