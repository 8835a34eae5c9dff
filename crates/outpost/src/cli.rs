//! Admin commands that talk to a running edge's admin API.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::config::DEFAULT_ADMIN;

/// How to reach the edge.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Admin API address of the edge.
    #[arg(long, env = "OUTPOST_ADMIN", default_value = DEFAULT_ADMIN)]
    pub admin: SocketAddr,
    /// Bearer token (for an admin API that is not on loopback).
    #[arg(long, env = "OUTPOST_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the raw JSON document.
    #[arg(long)]
    pub json: bool,
}

fn call(target: &Target, method: Method, path: &str) -> anyhow::Result<serde_json::Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(target.admin))
            .await
            .map_err(|_| anyhow::anyhow!("timed out"))
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(|| format!("cannot reach the edge's admin API at {} (is `outpost serve` running? set --admin or OUTPOST_ADMIN)", target.admin))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = Request::builder().method(method).uri(path).header("host", target.admin.to_string());
        if let Some(token) = &target.token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let resp = sender.send_request(req.body(Empty::<Bytes>::new())?).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("admin API answered {status}: {}", String::from_utf8_lossy(&body).trim());
        }
        serde_json::from_slice(&body).context("admin API sent something that is not JSON")
    })
}

fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < units.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[unit])
    }
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
    let s = call(target, Method::GET, "/status")?;
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
    out!("wan     {} fetched from origins", human(n(&s["wan_bytes"])));
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
    let v = call(target, Method::GET, &path)?;
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
    let v = call(target, Method::POST, "/verify")?;
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
    let v = call(target, Method::POST, &format!("/{verb}?url={encoded}"))?;
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
