//! Admin commands that talk to a running edge's admin API.
//!
//! The edge requires its bearer token for these (loopback included); the
//! CLI finds it as [`Endpoint::resolve`] says, so that on the machine the
//! edge runs on `outpost status` needs no flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

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

    pub fn call(&self, method: Method, path: &str) -> anyhow::Result<serde_json::Value> {
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
                bail!("admin API answered {status}: {}", String::from_utf8_lossy(&body).trim());
            }
            serde_json::from_slice(&body).context("admin API sent something that is not JSON")
        })
    }
}

fn human(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        0
    } else {
        ((done as f64 / total as f64) * width as f64).round() as usize
    };
    let filled = filled.min(width);
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

pub fn status(target: &Target) -> anyhow::Result<()> {
    let s = Endpoint::resolve(target)?.call(Method::GET, "/status")?;
    if target.json {
        println!("{s:#}");
        return Ok(());
    }
    // Every line fits an 80-column terminal.
    macro_rules! out {
        ($($arg:tt)*) => {{
            let line = format!($($arg)*);
            if line.chars().count() > 80 {
                println!("{}...", line.chars().take(77).collect::<String>());
            } else {
                println!("{line}");
            }
        }};
    }
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let cache = &s["cache"];
    let (used, limit) = (n(&cache["bytes_used"]), n(&cache["bytes_limit"]));
    out!(
        "outpost {}  up {}s  listening {}",
        s["version"].as_str().unwrap_or("?"),
        n(&s["uptime_seconds"]),
        s["listeners"]
    );
    out!(
        "cache   {} {} / {} ({} objects, {} pinned)",
        bar(used, limit, 20),
        human(used),
        human(limit),
        n(&cache["objects"]),
        human(n(&cache["pinned_bytes"]))
    );
    let r = &s["requests"];
    out!(
        "hits    {:.1} %  hit {}  miss {}  joined {}  revalidated {}",
        s["hit_ratio"].as_f64().unwrap_or(0.0) * 100.0,
        n(&r["hit"]),
        n(&r["miss"]),
        n(&r["collapsed"]),
        n(&r["revalidated"]),
    );
    out!(
        "        stale {}  passed through {}  errors {}",
        n(&r["stale"]),
        n(&r["passthrough"]),
        n(&r["error"])
    );
    let served = &s["served_bytes"];
    let to_clients = n(&served["cache"]) + n(&served["fills"]);
    let saved = n(&s["wan_saved_bytes"]);
    out!(
        "wan     {} fetched, {} served from copies: saved {} ({:.0} %)",
        human(n(&s["wan_bytes"])),
        human(to_clients),
        human(saved),
        if to_clients == 0 {
            0.0
        } else {
            saved as f64 * 100.0 / to_clients as f64
        }
    );
    for class in s["wan"].as_array().cloned().unwrap_or_default() {
        let limit = class["limit"]
            .as_f64()
            .map_or("unlimited".to_string(), rate_text);
        out!(
            "        {:<11} {} now, limit {}",
            class["class"].as_str().unwrap_or("?"),
            rate_text(class["rate"].as_f64().unwrap_or(0.0)),
            limit
        );
    }
    for ch in s["channels"].as_array().cloned().unwrap_or_default() {
        let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
        let state = if ch["running"].is_object() {
            "syncing".to_string()
        } else {
            ch["last_run"]["result"]
                .as_str()
                .unwrap_or("never synced")
                .to_string()
        };
        out!(
            "channel {} {}/{} files, {} quarantined, {}",
            ch["name"].as_str().unwrap_or("?"),
            n(&ch["files_present"]),
            n(&ch["files_total"]),
            ch["quarantined"].as_array().map_or(0, Vec::len),
            state
        );
    }
    let fills = s["active_fills"].as_array().cloned().unwrap_or_default();
    if fills.is_empty() {
        out!("fills   none active");
    }
    for f in fills {
        let (done, len) = (n(&f["bytes"]), f["length"].as_u64());
        let url = f["url"].as_str().unwrap_or("?");
        let short: String = if url.len() > 40 {
            format!("...{}", &url[url.len() - 37..])
        } else {
            url.to_string()
        };
        match len {
            Some(len) => out!(
                "fill    {} {:>3}% {short}",
                bar(done, len, 20),
                done * 100 / len.max(1)
            ),
            None => out!("fill    {} {short}", human(done)),
        }
    }
    if limit > 0 && used * 100 / limit >= 95 {
        out!("warning: cache is {}% full", used * 100 / limit);
    }
    Ok(())
}

/// `cache ls`: what is stored, one line per object.
pub fn cache_ls(target: &Target, glob: Option<&str>) -> anyhow::Result<()> {
    let path = match glob {
        Some(g) => format!("/cache?glob={}", encode(g)),
        None => "/cache".to_string(),
    };
    let v = Endpoint::resolve(target)?.call(Method::GET, &path)?;
    if target.json {
        println!("{v:#}");
        return Ok(());
    }
    for e in v["objects"].as_array().cloned().unwrap_or_default() {
        let n = |k: &str| e[k].as_u64().unwrap_or(0);
        let state = if e["complete"].as_bool() == Some(true) {
            "complete"
        } else {
            "partial"
        };
        let pin = if e["pinned"].as_bool() == Some(true) {
            "pinned"
        } else {
            ""
        };
        println!(
            "{:>10} {:<8} {:<6} hits {:<5} {}",
            human(n("size")),
            state,
            pin,
            n("hits"),
            e["url"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// `cache verify`: checks every complete object; exit status 1 if any was bad.
pub fn cache_verify(target: &Target) -> anyhow::Result<()> {
    let v = Endpoint::resolve(target)?.call(Method::POST, "/verify")?;
    if target.json {
        println!("{v:#}");
    } else {
        println!(
            "checked {} objects ({} with a recorded SHA-256)",
            v["checked"].as_u64().unwrap_or(0),
            v["digests_checked"].as_u64().unwrap_or(0)
        );
        for d in v["dropped"].as_array().cloned().unwrap_or_default() {
            println!(
                "dropped {}: {}",
                d["url"].as_str().unwrap_or("?"),
                d["reason"].as_str().unwrap_or("?")
            );
        }
    }
    if v["dropped"].as_array().is_some_and(|d| !d.is_empty()) {
        bail!(
            "{} damaged object(s) dropped",
            v["dropped"].as_array().map_or(0, Vec::len)
        );
    }
    Ok(())
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

pub fn action(target: &Target, verb: &str, url: &str) -> anyhow::Result<()> {
    let encoded = encode(url);
    let v = Endpoint::resolve(target)?.call(Method::POST, &format!("/{verb}?url={encoded}"))?;
    if target.json {
        println!("{v:#}");
    } else {
        println!(
            "{verb} {}: {}",
            v["url"].as_str().unwrap_or(url),
            v.as_object()
                .and_then(|o| o.values().find_map(|x| x.as_bool()))
                .map_or("?", |b| if b { "done" } else { "not cached" })
        );
    }
    Ok(())
}

fn short_url(url: &str, width: usize) -> String {
    if url.chars().count() > width {
        let tail: String = url
            .chars()
            .rev()
            .take(width - 3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("...{tail}")
    } else {
        url.to_string()
    }
}

fn rate_text(bytes_per_sec: f64) -> String {
    let bits = bytes_per_sec * 8.0;
    if bits >= 1e6 {
        format!("{:.1} Mbit/s", bits / 1e6)
    } else {
        format!("{:.0} kbit/s", bits / 1e3)
    }
}

fn eta_text(secs: Option<u64>) -> String {
    match secs {
        Some(s) if s >= 3600 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        Some(s) => format!("{}m{:02}s", s / 60, s % 60),
        None => "-".into(),
    }
}

/// `channels`: each channel's state, one block per channel.
pub fn channels(target: &Target) -> anyhow::Result<()> {
    let v = Endpoint::resolve(target)?.call(Method::GET, "/channels")?;
    if target.json {
        println!("{v:#}");
        return Ok(());
    }
    let list = v.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no channels configured");
    }
    for ch in list {
        print_channel(&ch);
    }
    Ok(())
}

fn print_channel(ch: &serde_json::Value) {
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    println!(
        "{}  {}",
        ch["name"].as_str().unwrap_or("?"),
        short_url(ch["source"].as_str().unwrap_or("?"), 60)
    );
    println!(
        "  files {}/{}  bytes {} / {}  rate {}{}",
        n(&ch["files_present"]),
        n(&ch["files_total"]),
        human(n(&ch["bytes_present"])),
        human(n(&ch["bytes_total"])),
        ch["rate"].as_str().unwrap_or("?"),
        ch["window"]
            .as_str()
            .map(|w| format!(" in {w}"))
            .unwrap_or_default()
    );
    let last = &ch["last_run"];
    if last.is_object() {
        println!(
            "  last sync #{} {}: {} fetched, {} unchanged, {} failed, {} quarantined, {} removed",
            n(&last["run"]),
            last["result"].as_str().unwrap_or("?"),
            n(&last["fetched"]),
            n(&last["not_modified"]) + n(&last["unchanged"]),
            n(&last["failed"]),
            n(&last["quarantined"]),
            n(&last["removed"])
        );
        if let Some(msg) = last["message"].as_str() {
            println!("  {}", short_url(msg, 76));
        }
    } else {
        println!("  never synced");
    }
    if let Some(next) = ch["next_run"].as_str() {
        println!("  next sync {next}");
    }
    let running = &ch["running"];
    if running.is_object() {
        println!(
            "  syncing #{} ({}): {}/{} files, {} / {}, {}, ETA {}",
            n(&running["run"]),
            running["phase"].as_str().unwrap_or("?"),
            n(&running["files_done"]),
            n(&running["files_total"]),
            human(n(&running["bytes_done"])),
            human(n(&running["bytes_total"])),
            rate_text(running["rate"].as_f64().unwrap_or(0.0)),
            eta_text(running["eta_secs"].as_u64())
        );
    }
    for q in ch["quarantined"].as_array().cloned().unwrap_or_default() {
        println!(
            "  QUARANTINED {}",
            short_url(q["url"].as_str().unwrap_or("?"), 64)
        );
        println!("    {}", short_url(q["error"].as_str().unwrap_or(""), 74));
    }
    for e in ch["errors"].as_array().cloned().unwrap_or_default() {
        println!(
            "  error {}: {}",
            short_url(e["url"].as_str().unwrap_or("?"), 40),
            short_url(e["error"].as_str().unwrap_or(""), 30)
        );
    }
}

/// `sync [NAME]`: starts a sync on the edge and follows it to the end, with
/// progress bars on a terminal and plain lines otherwise.
pub fn sync(target: &Target, name: Option<&str>) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let path = match name {
        Some(n) => format!("/channels/sync?name={}", encode(n)),
        None => "/channels/sync".to_string(),
    };
    let edge = Endpoint::resolve(target)?;
    let started = edge.call(Method::POST, &path)?;
    let runs: Vec<(String, u64)> = started["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["channel"].as_str().unwrap_or("?").to_string(),
                r["run"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    if runs.is_empty() {
        bail!("no channels configured on the edge");
    }
    let tty = std::io::stderr().is_terminal() && !target.json;
    let multi = indicatif::MultiProgress::new();
    let style = indicatif::ProgressStyle::with_template(
        "{prefix:12} [{bar:20}] {bytes}/{total_bytes} {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("#>-");
    let bars: Vec<indicatif::ProgressBar> = runs
        .iter()
        .map(|(name, _)| {
            let bar = multi.add(indicatif::ProgressBar::new(0));
            bar.set_style(style.clone());
            bar.set_prefix(name.clone());
            if !tty {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            bar
        })
        .collect();
    let mut done = vec![None; runs.len()];
    let mut last_line = std::time::Instant::now() - Duration::from_secs(60);
    loop {
        let list = edge.call(Method::GET, "/channels")?;
        let list = list.as_array().cloned().unwrap_or_default();
        let plain_due = !tty && last_line.elapsed() >= Duration::from_secs(5);
        for (i, (name, run)) in runs.iter().enumerate() {
            if done[i].is_some() {
                continue;
            }
            let Some(ch) = list.iter().find(|c| c["name"] == name.as_str()) else {
                continue;
            };
            let running = &ch["running"];
            if running["run"].as_u64() == Some(*run) {
                let n = |k: &str| running[k].as_u64().unwrap_or(0);
                let msg = format!(
                    "{}/{} files {} ETA {} {}",
                    n("files_done"),
                    n("files_total"),
                    rate_text(running["rate"].as_f64().unwrap_or(0.0)),
                    eta_text(running["eta_secs"].as_u64()),
                    running["phase"].as_str().unwrap_or("")
                );
                bars[i].set_length(n("bytes_total"));
                bars[i].set_position(n("bytes_done"));
                bars[i].set_message(msg.clone());
                if plain_due {
                    eprintln!(
                        "{name}: {} / {}, {msg}",
                        human(n("bytes_done")),
                        human(n("bytes_total"))
                    );
                }
            } else if ch["last_run"]["run"].as_u64().is_some_and(|r| r >= *run) {
                let last = ch["last_run"].clone();
                bars[i].finish_with_message(last["result"].as_str().unwrap_or("?").to_string());
                done[i] = Some(last);
            }
        }
        if plain_due {
            last_line = std::time::Instant::now();
        }
        if done.iter().all(Option::is_some) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut failed = 0;
    for ((name, _), last) in runs.iter().zip(&done) {
        let last = last.clone().unwrap_or_default();
        if target.json {
            println!("{last:#}");
        } else {
            let n = |k: &str| last[k].as_u64().unwrap_or(0);
            println!(
                "{name}: sync #{} {}: {} files, {} fetched ({}), {} unchanged, {} failed, {} quarantined, {} removed",
                n("run"),
                last["result"].as_str().unwrap_or("?"),
                n("files"),
                n("fetched"),
                human(n("fetched_bytes")),
                n("not_modified") + n("unchanged"),
                n("failed"),
                n("quarantined"),
                n("removed")
            );
            if let Some(msg) = last["message"].as_str() {
                println!("  {msg}");
            }
        }
        if last["result"] != "ok" {
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} channel sync(s) did not finish cleanly");
    }
    Ok(())
}

/// `reload`: the edge re-reads its config file (like SIGHUP).
pub fn reload(target: &Target) -> anyhow::Result<()> {
    let v = Endpoint::resolve(target)?.call(Method::POST, "/reload")?;
    if target.json {
        println!("{v:#}");
        return Ok(());
    }
    let list = |k: &str| -> Vec<String> {
        v[k].as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    };
    let (applied, restart) = (list("applied"), list("restart_needed"));
    if applied.is_empty() && restart.is_empty() {
        println!("reloaded: nothing changed");
    }
    for a in applied {
        println!("applied: {a}");
    }
    for r in &restart {
        println!("needs a restart: {r}");
    }
    Ok(())
}
