//! The admin API's routes and handlers. The checks every request passes
//! first (proxy, `Host`, token) are the parent module's `gate`; a handler
//! here runs only for a request that passed them.
//!
//! Query strings are decoded by axum's `Query` (form-urlencoded: `+` is a
//! space, `%2B` a plus); a query that does not decode is a 400 with the
//! reason, never a guess.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{StatusCode, header};
use outpost_http::CacheKey;
use outpost_protocol::{
    ActionOutcome, ActiveFill, CacheList, CacheUsage, CachedObject, DroppedObject, EdgeStatus,
    ModeTraffic, ObjectAction, ProxyMode, ReloadReport, RequestCounts, ServedBytes, StartedRun,
    SyncStarted, VerifyReport, WanClass,
};
use outpost_proxy::Engine;
use outpost_proxy::h1::Mode;
use serde::Deserialize;

use super::{Admin, error, json};

pub(super) fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { plain("ok\n") }))
        .route("/readyz", get(|| async { plain("ready\n") }))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/cache", get(cache_list))
        .route("/channels", get(channels))
        .route("/channels/sync", post(start_sync))
        .route("/channels/export", post(export))
        .route("/verify", post(verify))
        .route("/reload", post(reload))
        .route("/purge", post(purge))
        .route("/pin", post(pin))
        .route("/unpin", post(unpin))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not found") })
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .layer(axum::middleware::from_fn_with_state(
            admin.clone(),
            super::gate,
        ))
        .with_state(admin)
}

fn plain(body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// `?url=`: the object an action is about.
#[derive(Deserialize)]
struct UrlQuery {
    url: Option<String>,
}

/// `?glob=`: which URLs `/cache` lists.
#[derive(Deserialize)]
struct GlobQuery {
    glob: Option<String>,
}

/// `?name=`: the channel to sync (all when absent).
#[derive(Deserialize)]
struct NameQuery {
    name: Option<String>,
}

/// `?name=&dir=`: the channel to export and where.
#[derive(Deserialize)]
struct ExportQuery {
    name: String,
    dir: std::path::PathBuf,
}

/// The decoded query, or why it is not one (for a 400).
fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, String> {
    q.map(|Query(q)| q).map_err(|e| e.body_text())
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    match admin.metrics.document().await {
        Some(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        None => error(StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed"),
    }
}

async fn channels(State(admin): State<Arc<Admin>>) -> Response {
    json(StatusCode::OK, &admin.channels.status())
}

async fn reload(State(admin): State<Arc<Admin>>) -> Response {
    let reloader = admin.reloader.clone();
    match tokio::task::spawn_blocking(move || reloader.reload()).await {
        Ok(Ok(report)) => json(
            StatusCode::OK,
            &ReloadReport {
                applied: report.applied,
                restart_needed: report.restart_needed,
            },
        ),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, format!("{e:#}")),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "reload task failed"),
    }
}

async fn purge(
    State(admin): State<Arc<Admin>>,
    q: Result<Query<UrlQuery>, QueryRejection>,
) -> Response {
    act(&admin, q, ObjectAction::Purge)
}

async fn pin(
    State(admin): State<Arc<Admin>>,
    q: Result<Query<UrlQuery>, QueryRejection>,
) -> Response {
    act(&admin, q, ObjectAction::Pin)
}

async fn unpin(
    State(admin): State<Arc<Admin>>,
    q: Result<Query<UrlQuery>, QueryRejection>,
) -> Response {
    act(&admin, q, ObjectAction::Unpin)
}

fn act(
    admin: &Admin,
    q: Result<Query<UrlQuery>, QueryRejection>,
    action: ObjectAction,
) -> Response {
    let url = match query(q) {
        Ok(UrlQuery { url: Some(url) }) => url,
        Ok(UrlQuery { url: None }) => {
            return error(
                StatusCode::BAD_REQUEST,
                "give the object as ?url=http://host/path",
            );
        }
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let key = match url
        .parse::<http::Uri>()
        .map_err(|e| e.to_string())
        .and_then(|u| CacheKey::from_uri(&u).map_err(|e| e.to_string()))
    {
        Ok(k) => k,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let engine: &Engine = &admin.engine;
    let done = match action {
        ObjectAction::Purge => engine.purge(&key),
        ObjectAction::Pin => engine.store.set_pinned(&key, true),
        ObjectAction::Unpin => engine.store.set_pinned(&key, false),
    };
    match done {
        Ok(done) => json(
            StatusCode::OK,
            &ActionOutcome {
                action,
                url: key.to_string(),
                done,
            },
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn cache_list(
    State(admin): State<Arc<Admin>>,
    q: Result<Query<GlobQuery>, QueryRejection>,
) -> Response {
    let glob = match query(q) {
        Ok(q) => q.glob,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let entries = match admin.engine.store.list(100_000) {
        Ok(e) => e,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let objects = entries
        .into_iter()
        .filter(|e| glob.as_deref().is_none_or(|g| glob_match(g, &e.key)))
        .map(|e| CachedObject {
            url: e.key,
            size: e.present,
            length: e.len,
            complete: e.complete,
            pinned: e.pinned,
            hits: e.hits,
            sha256: e.sha256,
            last_access: e.last_access,
        })
        .collect();
    json(StatusCode::OK, &CacheList { objects })
}

async fn verify(State(admin): State<Arc<Admin>>) -> Response {
    let store = admin.engine.store.clone();
    match tokio::task::spawn_blocking(move || store.verify()).await {
        Ok(Ok(report)) => json(
            StatusCode::OK,
            &VerifyReport {
                checked: report.checked,
                digests_checked: report.digests_checked,
                dropped: report
                    .dropped
                    .into_iter()
                    .map(|(url, reason)| DroppedObject { url, reason })
                    .collect(),
            },
        ),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "verify task failed"),
    }
}

/// Starts a sync of one channel, or of all; answers with the run numbers
/// to wait for.
async fn start_sync(
    State(admin): State<Arc<Admin>>,
    q: Result<Query<NameQuery>, QueryRejection>,
) -> Response {
    let names = match query(q) {
        Ok(NameQuery { name: Some(n) }) => vec![n],
        Ok(NameQuery { name: None }) => admin.channels.names(),
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let mut runs = Vec::new();
    for name in names {
        match admin.channels.sync(&name) {
            Ok(run) => runs.push(StartedRun { channel: name, run }),
            Err(e @ outpost_channel::ChannelError::Unknown(_)) => {
                return error(StatusCode::NOT_FOUND, e.to_string());
            }
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
    json(StatusCode::ACCEPTED, &SyncStarted { runs })
}

/// `outpost export`: the channel's files as a plain tree at `dir`, once
/// its running sync (if any) has finished. The edge writes it, since only
/// its user may link the store's files.
async fn export(
    State(admin): State<Arc<Admin>>,
    q: Result<Query<ExportQuery>, QueryRejection>,
) -> Response {
    let ExportQuery { name, dir } = match query(q) {
        Ok(q) => q,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    match admin.channels.export(&name, &dir).await {
        Ok(status) => json(StatusCode::OK, &status),
        Err(outpost_channel::ExportError::Channel(
            e @ outpost_channel::ChannelError::Unknown(_),
        )) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ outpost_channel::ExportError::Refused { .. }) => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn status(State(admin): State<Arc<Admin>>) -> Response {
    // The `wccp` block is the edge's own (the manager's status model does
    // not carry it): added to the document, only when WCCP runs.
    let status = admin.status();
    let Some(wccp) = admin.wccp_status() else {
        return json(StatusCode::OK, &status);
    };
    match serde_json::to_value(&status) {
        Ok(mut doc) => {
            if let Some(map) = doc.as_object_mut() {
                map.insert("wccp".into(), wccp);
            }
            json(StatusCode::OK, &doc)
        }
        Err(_) => json(StatusCode::OK, &status),
    }
}

impl Admin {
    fn status(&self) -> EdgeStatus {
        let e = &self.engine;
        let s = &e.stats;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let store = e.store.stats().unwrap_or_default();
        let requests = RequestCounts {
            hit: load(&s.hits),
            miss: load(&s.misses),
            collapsed: load(&s.collapsed),
            revalidated: load(&s.revalidated),
            stale: load(&s.stale),
            passthrough: load(&s.passthrough),
            error: load(&s.errors),
        };
        let answered = requests.hit
            + requests.miss
            + requests.collapsed
            + requests.revalidated
            + requests.stale
            + requests.passthrough;
        let served = ServedBytes {
            cache: load(&e.served.from_cache),
            fills: load(&e.served.from_fills),
            other: load(&e.served.other),
        };
        let wan_bytes = load(&e.fills.stats.wan_bytes);
        EdgeStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: self.started.elapsed().as_secs(),
            listeners: self.listeners(),
            reverse_origin: e.config.origin.as_ref().map(|o| o.to_string()),
            cache: CacheUsage {
                bytes_used: store.bytes,
                bytes_limit: store.max_bytes,
                objects: store.objects,
                pinned_bytes: store.pinned_bytes,
                evictions: store.evictions,
            },
            requests,
            hit_ratio: if answered == 0 {
                0.0
            } else {
                requests.hit as f64 / answered as f64
            },
            wan_bytes,
            served_bytes: served,
            modes: Mode::ALL
                .iter()
                .map(|m| ModeTraffic {
                    mode: proxy_mode(*m),
                    requests: load(&e.served.mode_requests[*m as usize]),
                    bytes: load(&e.served.mode_bytes[*m as usize]),
                })
                .collect(),
            wan_saved_bytes: (served.cache + served.fills).saturating_sub(wan_bytes),
            active_fills: e
                .fills
                .progress()
                .into_iter()
                .map(|(url, bytes, length)| ActiveFill { url, bytes, length })
                .collect(),
            wan: e
                .fills
                .shaper
                .status()
                .into_iter()
                .map(|c| WanClass {
                    class: c.class.to_string(),
                    limit: c.limit,
                    rate: c.rate,
                    bytes_total: c.bytes_total,
                    queued_reads: c.queued_reads as u64,
                    queued_bytes: c.queued_bytes,
                })
                .collect(),
            channels: self.channels.status(),
            manager: self
                .manager
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

pub(super) fn proxy_mode(mode: Mode) -> ProxyMode {
    match mode {
        Mode::Forward => ProxyMode::Forward,
        Mode::Transparent => ProxyMode::Transparent,
        Mode::Reverse => ProxyMode::Reverse,
    }
}

/// `*` matches any run of characters (including `/`); everything else
/// matches itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("http://h/pkgs/*.msi", "http://h/pkgs/a/b.msi"));
        assert!(!glob_match("http://h/pkgs/*.msi", "http://h/pkgs/b.cab"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("http://h/x", "http://h/x"));
        assert!(glob_match("*a*b*", "xaybz"));
        assert!(!glob_match("*a*b", "xbya"));
    }
}
