//! Pre-positioning's way into the engine: bring one URL into the store
//! through the same lookup, collapse and fill machinery as client requests,
//! so that a client asking meanwhile attaches to the running fill (and a
//! sync finding a client's fill running simply waits for it).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{HeaderMap, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use outpost_http::headers::add_via_as;
use outpost_http::{ByteRange, CacheKey};
use outpost_shaper::{BucketId, Class};
use outpost_store::{Object, Phase};

use crate::engine::{Asking, Engine, FailedSide, Lookup, Outcome, Route};
use crate::fill::UpstreamTarget;
use crate::lookup::Decision;

/// How long a sync waits for an ending fill to leave the registry before
/// it looks again anyway.
const FILL_END_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a sync wants of one URL.
#[derive(Debug, Clone)]
pub struct PrefetchRequest {
    pub uri: Uri,
    /// The channel's shaper bucket.
    pub group: Option<BucketId>,
    /// SHA-256 (hex) the body must have; a stored copy with this digest
    /// needs no request at all.
    pub sha256: Option<String>,
    /// Who chose the source: the edge's own admin (`Configured`), or a
    /// fleet manager (`Guarded`: the destination guard applies, so a
    /// managed channel cannot make the edge fetch from its loopback or a
    /// link-local address unless the edge's own file allows it).
    pub reach: crate::upstream::Reach,
}

/// How the URL came to be in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefetchOutcome {
    /// The stored copy matches the expected digest: nothing was asked.
    Unchanged,
    /// The origin answered 304 to a conditional request.
    NotModified,
    /// The body was fetched (whole, or the part that was missing).
    Fetched,
}

#[derive(Debug, Clone)]
pub struct Prefetched {
    pub key: CacheKey,
    pub outcome: PrefetchOutcome,
    pub len: u64,
    pub sha256: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PrefetchError {
    #[error("invalid URL: {0}")]
    Url(String),
    #[error("origin answered {0}")]
    Status(StatusCode),
    #[error("origin unavailable: {0}")]
    Upstream(String),
    #[error("the origin's response may not be stored ({0})")]
    NotStorable(String),
    #[error("fill failed: {0}")]
    Failed(String),
    #[error("SHA-256 mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
}

impl Engine {
    /// Rewrites an alias host name to the authority (host and port) of the
    /// origin it names, so that every name shares one cache entry.
    pub fn canonical_uri(&self, uri: Uri) -> Uri {
        let Some(authority) = uri.authority() else {
            return uri;
        };
        let host = authority.host().to_ascii_lowercase();
        let Some(canonical) = self.config.host_aliases.get(&host) else {
            return uri;
        };
        let mut parts = uri.clone().into_parts();
        match canonical.parse() {
            Ok(a) => {
                parts.authority = Some(a);
                Uri::from_parts(parts).unwrap_or(uri)
            }
            Err(_) => uri,
        }
    }

    /// Fetches a small document (a directory listing, a manifest) without
    /// caching it, on the pre-positioning connection pool, up to `limit`
    /// bytes.
    pub async fn fetch_document(
        &self,
        uri: &Uri,
        limit: usize,
        reach: crate::upstream::Reach,
    ) -> Result<(StatusCode, HeaderMap, Bytes), PrefetchError> {
        let mut headers = HeaderMap::new();
        add_via_as(&mut headers, &self.via);
        let resp = self
            .fills
            .get_upstream(uri, headers, Class::Bulk, reach)
            .await
            .map_err(|e| PrefetchError::Upstream(e.to_string()))?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| PrefetchError::Upstream(format!("reading {uri}: {e}")))?
            .to_bytes();
        self.fills
            .stats
            .wan_bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        Ok((parts.status, parts.headers, body))
    }

    /// The route of a sync's request for `uri`, and the headers it asks
    /// with: as a PC would (they accept gzip), so that a response that
    /// varies on Accept-Encoding lands in the variant PCs select.
    fn prefetch_route(
        &self,
        uri: Uri,
        reach: crate::upstream::Reach,
    ) -> Result<(Route, HeaderMap), PrefetchError> {
        let route = self
            .route(uri, reach)
            .map_err(|e| PrefetchError::Url(e.to_string()))?;
        let mut client = HeaderMap::new();
        client.insert(
            http::header::ACCEPT_ENCODING,
            http::HeaderValue::from_static("gzip"),
        );
        Ok((self.select_variant(route, &client), client))
    }

    /// The cache key `prefetch` stores `uri` under (aliases, overrides and
    /// variants applied).
    pub fn prefetch_key(&self, uri: Uri) -> Result<CacheKey, PrefetchError> {
        Ok(self
            .prefetch_route(uri, crate::upstream::Reach::Configured)?
            .0
            .key)
    }

    /// Makes sure the current representation of `req.uri` is stored
    /// complete, checking with the origin (conditionally when a copy is
    /// stored) unless the copy matches the expected digest.
    pub async fn prefetch(
        self: &Arc<Self>,
        req: &PrefetchRequest,
    ) -> Result<Prefetched, PrefetchError> {
        let (route, client) = self.prefetch_route(req.uri.clone(), req.reach)?;
        let key = route.key.clone();
        let mut headers = client.clone();
        add_via_as(&mut headers, &self.via);
        let target = UpstreamTarget {
            uri: route.upstream_uri.clone(),
            headers,
            class: Class::Bulk,
            group: req.group,
            reach: req.reach,
        };
        let expected = req.sha256.as_deref().map(str::to_ascii_lowercase);
        if expected.is_some() {
            // From now on every copy of this URL the edge stores must have
            // this digest, whoever's fill brings it; the channel lifts the
            // requirement when the file leaves it.
            self.store.expect_digest(&key, expected.as_deref());
        }
        let result = self
            .prefetch_inner(&route, &client, target, expected.as_deref())
            .await;
        match (result, expected) {
            (Ok(done), Some(want)) => self.verify_final(done, &want).await,
            (result, _) => result,
        }
    }

    /// Whatever path brought the object in (a client's fill that started
    /// before the sync asked, a variant, a copy kept by a 304), the object
    /// the sync reports must be the manifest's: checked here, once, at the
    /// end. A mismatch drops the object.
    async fn verify_final(
        &self,
        mut done: Prefetched,
        want: &str,
    ) -> Result<Prefetched, PrefetchError> {
        let obj = self
            .store
            .get(&done.key)
            .ok()
            .flatten()
            .filter(|o| o.is_complete())
            .ok_or_else(|| PrefetchError::Failed("the object left the store".into()))?;
        let actual = self
            .store
            .digest_of(&obj)
            .await
            .map_err(|e| PrefetchError::Failed(e.to_string()))?;
        if actual != want {
            tracing::error!(key = %done.key, expected = want, %actual, "stored object does not match the manifest; dropping it");
            let _ = self.purge(&done.key);
            return Err(PrefetchError::DigestMismatch {
                expected: want.to_string(),
                actual,
            });
        }
        done.sha256 = Some(actual);
        Ok(done)
    }

    async fn prefetch_inner(
        self: &Arc<Self>,
        route: &Route,
        client: &HeaderMap,
        target: UpstreamTarget,
        expected: Option<&str>,
    ) -> Result<Prefetched, PrefetchError> {
        let key = &route.key;
        for _ in 0..8 {
            // Read each round: waiting on another fill can take an hour, and
            // what comes after (a revalidation, stale-if-error) is judged at
            // the time it happens.
            let now = self.now();
            let Lookup {
                running,
                stored,
                decision,
            } = self.look_up(
                client,
                route,
                Asking::Sync {
                    digest_expected: expected.is_some(),
                },
                now,
            );
            let seen = stored.as_ref().map(|o| o.id());
            let fetch_whole = || {
                let engine = self.clone();
                let (target, route, client) = (target.clone(), route.clone(), client.clone());
                async move { engine.fetch_miss(client, target, route, None).await }
            };
            let outcome = match (decision, stored) {
                (Decision::JoinFill, _) => {
                    let Some(fill) = running else { continue };
                    // Make sure the running fill (a client's range, perhaps)
                    // brings the whole object, then wait for it.
                    let _reader = fill.reader();
                    let obj = fill.object.clone();
                    let ended = matches!(obj.phase(), Phase::Failed(_))
                        || !fill.demand(ByteRange::new(0, obj.len().unwrap_or(u64::MAX)));
                    if !ended {
                        match self.wait_complete(&obj, PrefetchOutcome::Fetched).await {
                            // It was an older version (dropped when the origin
                            // refused our If-Range): fetch the current one.
                            Err(PrefetchError::Failed(_))
                                if matches!(obj.phase(), Phase::Failed(_)) => {}
                            result => return result,
                        }
                    }
                    // The fill is ending: look again once it has left the
                    // map (a fill always detaches as it ends; the deadline
                    // only bounds a bug's cost to one more look).
                    let _ = tokio::time::timeout(FILL_END_WAIT, fill.detached()).await;
                    continue;
                }
                (Decision::CheckDigest, Some(obj)) => {
                    let want = expected.unwrap_or_default();
                    if self.store.digest_of(&obj).await.ok().as_deref() == Some(want) {
                        return Ok(Prefetched {
                            key: key.clone(),
                            outcome: PrefetchOutcome::Unchanged,
                            len: obj.len().unwrap_or(0),
                            sha256: Some(want.to_string()),
                        });
                    }
                    // Not the manifest's file: a 304 would keep it, so the
                    // whole file is asked for again, unconditionally.
                    self.collapse(key, seen, fetch_whole()).await
                }
                (Decision::KeepUnvalidated, Some(obj)) => {
                    return Ok(Prefetched {
                        key: key.clone(),
                        outcome: PrefetchOutcome::Unchanged,
                        len: obj.len().unwrap_or(0),
                        sha256: self.store.digest(key).ok().flatten(),
                    });
                }
                (Decision::Revalidate { conditional }, Some(obj)) => {
                    let engine = self.clone();
                    let (target, route2, client) = (target.clone(), route.clone(), client.clone());
                    self.collapse(key, seen, async move {
                        engine
                            .revalidate(obj, conditional, client, target, route2, now)
                            .await
                    })
                    .await
                }
                (Decision::FetchRest, Some(obj)) => {
                    // A partial copy (a client's range, or a sync cut short
                    // by a restart): fetch just what is missing.
                    let fill = self.fills.attach(obj.clone(), target.clone());
                    let _reader = fill.reader();
                    if !fill.demand(ByteRange::new(0, obj.len().unwrap_or(u64::MAX))) {
                        continue;
                    }
                    match self.wait_complete(&obj, PrefetchOutcome::Fetched).await {
                        // The partial copy was of an older version (the
                        // origin refused our If-Range): it is gone, fetch
                        // the current one.
                        Err(PrefetchError::Failed(_))
                            if matches!(obj.phase(), Phase::Failed(_)) =>
                        {
                            continue;
                        }
                        result => return result,
                    }
                }
                _ => self.collapse(key, seen, fetch_whole()).await,
            };
            let Some(collapsed) = outcome else {
                continue;
            };
            match collapsed.outcome {
                Outcome::Fill(fill) => {
                    let status = fill.object.head().status;
                    if !status.is_success() {
                        // Stored for clients as RFC 9111 allows, but a sync
                        // wants the package, not an error page.
                        return Err(PrefetchError::Status(status));
                    }
                    let _reader = fill.reader();
                    let obj = fill.object.clone();
                    return self.wait_complete(&obj, PrefetchOutcome::Fetched).await;
                }
                Outcome::Refreshed(obj) => {
                    return Ok(Prefetched {
                        key: key.clone(),
                        outcome: PrefetchOutcome::NotModified,
                        len: obj.len().unwrap_or(0),
                        sha256: self.store.digest(key).ok().flatten(),
                    });
                }
                Outcome::Stale(_) => {
                    return Err(PrefetchError::Upstream(
                        "origin unreachable (the stored copy is kept)".into(),
                    ));
                }
                Outcome::Passthrough(status, _) => {
                    // Only the status is read: the response may be a
                    // client's own, which a sync must not take from it.
                    return Err(if status.is_success() {
                        PrefetchError::NotStorable(format!(
                            "status {status}, or headers forbid storing"
                        ))
                    } else {
                        PrefetchError::Status(status)
                    });
                }
                Outcome::Failed(failure) => {
                    return Err(match failure.side {
                        FailedSide::Origin => PrefetchError::Upstream(failure.reason),
                        FailedSide::Disk => PrefetchError::Failed(failure.reason),
                    });
                }
                Outcome::Refused(refusal) => {
                    return Err(PrefetchError::Upstream(refusal.to_string()));
                }
                Outcome::Busy => {
                    return Err(PrefetchError::Failed(
                        "the edge is at fill.max_fills; retried next sync".into(),
                    ));
                }
            }
        }
        Err(PrefetchError::Failed(
            "the object kept changing under the sync".into(),
        ))
    }

    /// Waits until `obj` is complete or has failed.
    async fn wait_complete(
        &self,
        obj: &Arc<Object>,
        outcome: PrefetchOutcome,
    ) -> Result<Prefetched, PrefetchError> {
        let mut changes = obj.subscribe();
        loop {
            match obj.phase() {
                Phase::Complete => {
                    return Ok(Prefetched {
                        key: obj.key().clone(),
                        outcome,
                        len: obj.len().unwrap_or(0),
                        sha256: self.store.digest(obj.key()).ok().flatten(),
                    });
                }
                Phase::Failed(reason) => {
                    if let Some((expected, actual)) = self.store.take_digest_mismatch(obj.key()) {
                        return Err(PrefetchError::DigestMismatch { expected, actual });
                    }
                    return Err(PrefetchError::Failed(reason));
                }
                Phase::Filling => {
                    // A fill that stopped with bytes missing parks the object
                    // (Filling, no fill running): nothing more will come.
                    if self
                        .fills
                        .active(obj.key())
                        .is_none_or(|f| !Arc::ptr_eq(&f.object, obj))
                        && !obj.is_fully_present()
                    {
                        return Err(PrefetchError::Failed(
                            "the fill stopped before the end".into(),
                        ));
                    }
                }
            }
            // Progress wakes us; a fill that parks or ends without a
            // change of the object is noticed by the periodic look.
            let change =
                tokio::time::timeout(std::time::Duration::from_secs(1), changes.changed()).await;
            if let Ok(Err(_)) = change {
                return Err(PrefetchError::Failed("object dropped".into()));
            }
        }
    }
}
