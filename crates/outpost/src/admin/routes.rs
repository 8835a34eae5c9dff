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
use outpost_proxy::Engine;
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
        Ok(Ok(report)) => json(StatusCode::OK, &report),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, format!("{e:#}")),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "reload task failed"),
    }
}

async fn purge(
    State(admin): State<Arc<Admin>>,
    q: Result<Query<UrlQuery>, QueryRejection>,
) -> Response {
    act(&admin, q, |engine, key| {
        engine
            .purge(key)
            .map(|done| serde_json::json!({ "purged": done }))
    })
}

async fn pin(
    State(admin): State<Arc<Admin>>,
    q: Result<Query<UrlQuery>, QueryRejection>,
) -> Response {
    act(&admin, q, |engine, key| {
        engine
            .store
            .set_pinned(key, true)
            .map(|done| serde_json::json!({ "pinned": done }))
    })
}

async fn unpin(
    State(admin): State<Arc<Admin>>,
    q: Result<Query<UrlQuery>, QueryRejection>,
) -> Response {
    act(&admin, q, |engine, key| {
        engine
            .store
            .set_pinned(key, false)
            .map(|done| serde_json::json!({ "unpinned": done }))
    })
}

fn act(
    admin: &Admin,
    q: Result<Query<UrlQuery>, QueryRejection>,
    f: impl FnOnce(&Engine, &CacheKey) -> Result<serde_json::Value, outpost_store::StoreError>,
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
    match f(&admin.engine, &key) {
        Ok(mut v) => {
            v["url"] = serde_json::Value::String(key.to_string());
            json(StatusCode::OK, &v)
        }
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
    let objects: Vec<serde_json::Value> = entries
        .into_iter()
        .filter(|e| glob.as_deref().is_none_or(|g| glob_match(g, &e.key)))
        .map(|e| {
            serde_json::json!({
                "url": e.key,
                "size": e.present,
                "length": e.len,
                "complete": e.complete,
                "pinned": e.pinned,
                "hits": e.hits,
                "sha256": e.sha256,
                "last_access": e.last_access,
            })
        })
        .collect();
    json(StatusCode::OK, &serde_json::json!({ "objects": objects }))
}

async fn verify(State(admin): State<Arc<Admin>>) -> Response {
    let store = admin.engine.store.clone();
    match tokio::task::spawn_blocking(move || store.verify()).await {
        Ok(Ok(report)) => json(
            StatusCode::OK,
            &serde_json::json!({
                "checked": report.checked,
                "digests_checked": report.digests_checked,
                "dropped": report.dropped.iter().map(|(url, why)| serde_json::json!({ "url": url, "reason": why })).collect::<Vec<_>>(),
            }),
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
            Ok(run) => runs.push(serde_json::json!({ "channel": name, "run": run })),
            Err(e @ outpost_channel::ChannelError::Unknown(_)) => {
                return error(StatusCode::NOT_FOUND, e.to_string());
            }
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
    json(StatusCode::ACCEPTED, &serde_json::json!({ "runs": runs }))
}

async fn status(State(admin): State<Arc<Admin>>) -> Response {
    let e = &admin.engine;
    let s = &e.stats;
    let store = e.store.stats().unwrap_or_default();
    let hits = s.hits.load(Ordering::Relaxed);
    let served = hits
        + s.misses.load(Ordering::Relaxed)
        + s.collapsed.load(Ordering::Relaxed)
        + s.revalidated.load(Ordering::Relaxed)
        + s.stale.load(Ordering::Relaxed)
        + s.passthrough.load(Ordering::Relaxed);
    let fills: Vec<serde_json::Value> = e
        .fills
        .progress()
        .into_iter()
        .map(|(url, present, len)| serde_json::json!({ "url": url, "bytes": present, "length": len }))
        .collect();
    json(
        StatusCode::OK,
        &serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": admin.started.elapsed().as_secs(),
            "listeners": admin.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "reverse_origin": e.config.origin.as_ref().map(|o| o.to_string()),
            "cache": {
                "bytes_used": store.bytes,
                "bytes_limit": store.max_bytes,
                "objects": store.objects,
                "pinned_bytes": store.pinned_bytes,
                "evictions": store.evictions,
            },
            "requests": {
                "hit": hits,
                "miss": s.misses.load(Ordering::Relaxed),
                "collapsed": s.collapsed.load(Ordering::Relaxed),
                "revalidated": s.revalidated.load(Ordering::Relaxed),
                "stale": s.stale.load(Ordering::Relaxed),
                "passthrough": s.passthrough.load(Ordering::Relaxed),
                "error": s.errors.load(Ordering::Relaxed),
            },
            "hit_ratio": if served == 0 { 0.0 } else { hits as f64 / served as f64 },
            "wan_bytes": e.fills.stats.wan_bytes.load(Ordering::Relaxed),
            "served_bytes": {
                "cache": e.served.from_cache.load(Ordering::Relaxed),
                "fills": e.served.from_fills.load(Ordering::Relaxed),
                "other": e.served.other.load(Ordering::Relaxed),
            },
            "modes": outpost_proxy::h1::Mode::ALL.iter().map(|m| serde_json::json!({
                "mode": m.name(),
                "requests": e.served.mode_requests[*m as usize].load(Ordering::Relaxed),
                "bytes": e.served.mode_bytes[*m as usize].load(Ordering::Relaxed),
            })).collect::<Vec<_>>(),
            // What clients got from the edge's copies minus what those
            // copies cost on the WAN.
            "wan_saved_bytes": (e.served.from_cache.load(Ordering::Relaxed)
                + e.served.from_fills.load(Ordering::Relaxed))
                .saturating_sub(e.fills.stats.wan_bytes.load(Ordering::Relaxed)),
            "active_fills": fills,
            "wan": e.fills.shaper.status(),
            "channels": admin.channels.status(),
        }),
    )
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
