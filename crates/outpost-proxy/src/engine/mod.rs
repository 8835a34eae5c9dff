//! The cache logic of one request: look up, serve, collapse, revalidate,
//! fill or pass through. This file holds the engine's state and the front
//! door ([`Engine::handle`]: quarantine, bypass rules, method dispatch,
//! invalidation); each job has a file of its own:
//!
//! - `route.rs`: URL to origin, admin rule, cache key, variants;
//! - `get.rs`: a GET's one lookup and what it serves;
//! - `collapse.rs`: one upstream request for every client waiting on a key;
//! - `fetch.rs`: a miss and whether its response is stored;
//! - `revalidate.rs`: conditional requests and the 304 merge;
//! - `forward.rs`: requests passed through unstored.

mod collapse;
mod fetch;
mod forward;
mod get;
mod policy_uri;
mod revalidate;
mod route;
mod stored;

use collapse::PendingMap;
pub(crate) use collapse::{Collapsed, Outcome};
pub use collapse::{FailedSide, Failure};
use fetch::stored_headers;
pub(crate) use forward::refused_destination;
use forward::{passthrough_response, upstream_headers};
use get::hit_status;
pub(crate) use get::{Asking, Lookup};
pub use route::{MAX_VARIANTS, Route};
use route::{VARIANT_MAP_MIN, VariantSet, known_variants};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use http::{
    HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header, request, response,
};
use hyper::body::Incoming;
use outpost_http::cache_control;
use outpost_http::headers::{
    FILL_CONTROLLED_REQUEST_HEADERS, add_via, add_via_as, strip_hop_by_hop, via_names,
};
use outpost_http::range::{RangeSpec, parse_range_header};
use outpost_http::vary;
use outpost_http::{ByteRange, CacheKey, ContentRange};
use outpost_store::{Object, Store, StoredHead};
use tokio::sync::watch;

use crate::cache_status::CacheStatus;
use crate::config::{ProxyConfig, RangeMissPolicy};
use crate::fill::{FillContext, ObjectFill, UpstreamTarget};
use crate::h1::ReqBody;
use crate::lookup::{Asker, ClientRequest, Decision, Running, Stored, decide, explicitly_shared};
use crate::serve::{EdgeBody, FillSource, error_response, marked, object_response, streamed};
use crate::upstream::{Reach, Upstream, UpstreamBody, UpstreamError};
use crate::wan::WanShaper;
use outpost_shaper::Class;

/// Counters by result, for status and metrics.
#[derive(Default)]
pub struct EngineStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub collapsed: AtomicU64,
    pub revalidated: AtomicU64,
    pub stale: AtomicU64,
    pub passthrough: AtomicU64,
    pub errors: AtomicU64,
}

pub struct Engine {
    pub config: ProxyConfig,
    /// Access and caching rules, replaced whole by a reload.
    rules: std::sync::RwLock<Arc<crate::config::LiveRules>>,
    pub store: Store,
    pub fills: Arc<FillContext>,
    pub(crate) upstream: Upstream,
    pending: Arc<Mutex<PendingMap>>,
    /// Requests waiting on another's upstream request (see `collapse`).
    waiting: std::sync::atomic::AtomicUsize,
    /// The targeted cache-control fields of the configuration, built once.
    targeted: outpost_http::policy::TargetedFields,
    pub stats: EngineStats,
    /// Bytes written to clients by source.
    pub served: crate::h1::ServedBytes,
    access_log: std::sync::OnceLock<Arc<crate::access_log::AccessLog>>,
    /// URLs whose body failed a pre-positioning digest check: refused
    /// until a sync finds a good copy (key -> reason).
    quarantined: Mutex<HashMap<CacheKey, String>>,
    /// Files a channel vouches for until its next sync (`revalidate =
    /// "sync"`): fresh whatever the origin's headers say.
    sync_fresh: crate::sync_fresh::SyncFreshness,
    /// URLs whose responses vary: the header names, and the variant keys
    /// stored (so that invalidation and purge reach every variant).
    variants: Mutex<HashMap<CacheKey, VariantSet>>,
    /// This edge's `Via` entry on requests it sends upstream: unique per
    /// process, so that a request that comes back is recognised as a loop
    /// while a chain of several Outpost edges still works.
    pub via: String,
    /// The received-by part of `via` (`outpost-<id>`), which loop
    /// detection looks for.
    via_name: String,
    /// Size of the variant map at which it is next rebuilt.
    variant_map_limit: AtomicUsize,
    /// What freshness is judged by: read once per request.
    clock: Arc<dyn crate::clock::Clock>,
}

/// A pseudonym for `Via` no other edge shares: hashed from what differs
/// between edges and between runs.
fn via_pseudonym(config: &ProxyConfig) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(format!("{:?}", config.listen).as_bytes());
    hasher.update(&std::process::id().to_le_bytes());
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.update(&now.as_nanos().to_le_bytes());
    if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        hasher.update(name.trim().as_bytes());
    }
    let hex = hasher.finalize().to_hex();
    format!("outpost-{}", &hex[..10])
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    pub fn new(config: ProxyConfig, store: Store) -> Arc<Self> {
        Self::with_clock(config, store, Arc::new(crate::clock::SystemClock))
    }

    /// An engine that judges freshness by `clock` (tests move it forward).
    pub fn with_clock(
        config: ProxyConfig,
        store: Store,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> Arc<Self> {
        let store_for_variants = store.clone();
        let via_name = via_pseudonym(&config);
        let guard = Arc::new(
            crate::destination::DestinationGuard::new(config.internal_destinations.clone())
                .with_dns_mode(crate::library::dns::DnsMode::new(&config.library.dns)),
        );
        let upstream = Upstream::new(
            config.fill.upstream_header_timeout,
            config.wan.bulk_receive_buffer,
            &config.upstream_ca,
            guard,
        );
        let shaper = WanShaper::new(config.wan.clone(), config.local_clock.clone());
        let fills = FillContext::new(store.clone(), upstream.clone(), config.fill.clone(), shaper);
        let targeted = config.targeted_fields();
        Arc::new(Self {
            rules: std::sync::RwLock::new(Arc::new(crate::config::LiveRules::from_config(&config))),
            config,
            store,
            fills,
            upstream,
            pending: Arc::new(Mutex::new(HashMap::new())),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            targeted,
            stats: EngineStats::default(),
            served: Default::default(),
            access_log: std::sync::OnceLock::new(),
            quarantined: Mutex::new(HashMap::new()),
            sync_fresh: Default::default(),
            variants: Mutex::new(known_variants(&store_for_variants)),
            via: format!("1.1 {via_name}"),
            via_name,
            variant_map_limit: AtomicUsize::new(VARIANT_MAP_MIN),
            clock,
        })
    }

    /// The time by the engine's clock.
    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Records an address this edge listens on (its admin API, say), which
    /// no client may make it connect to.
    pub fn add_own_address(&self, addr: std::net::SocketAddr) {
        self.upstream.guard.add_own_address(addr);
    }

    /// Whether a request already passed through this edge (its `Via` names
    /// our pseudonym).
    pub fn is_looping(&self, headers: &HeaderMap) -> bool {
        via_names(headers).any(|name| name == self.via_name)
    }

    /// The answer to a request that carries this edge's own `Via` (it
    /// already passed through this edge once: a proxy chain, or a name
    /// that leads back here), logged; `None` for any other.
    pub(crate) fn loop_refusal(
        &self,
        req: &http::Request<crate::h1::ReqBody>,
        peer: std::net::SocketAddr,
    ) -> Option<Response<EdgeBody>> {
        if !self.is_looping(req.headers()) {
            return None;
        }
        tracing::warn!(client = %peer, uri = %req.uri(), "request carries this edge's Via: 508");
        Some(error_response(
            http::StatusCode::LOOP_DETECTED,
            "request loop: it already passed through this edge",
        ))
    }

    /// Logs every request from now on (set once, at startup).
    pub fn set_access_log(&self, log: Arc<crate::access_log::AccessLog>) {
        let _ = self.access_log.set(log);
    }

    pub fn access_log(&self) -> Option<&crate::access_log::AccessLog> {
        self.access_log.get().map(|l| &**l)
    }

    /// Removes what is stored for `key`, every variant included. Returns
    /// whether anything was.
    pub fn purge(&self, key: &CacheKey) -> Result<bool, outpost_store::StoreError> {
        // What was purged is no longer the copy a channel vouched for.
        self.sync_fresh.end_url(vary::url_part(key.as_str()));
        let variants = lock(&self.variants).remove(key);
        let mut any = self.store.purge(key)?;
        for variant in variants.into_iter().flat_map(|v| v.keys.into_keys()) {
            any |= self.store.purge(&variant)?;
        }
        Ok(any)
    }

    /// The access and caching rules in force.
    /// The targeted cache-control fields (RFC 9213) the edge obeys as its
    /// reverse origins' CDN, and strips from what clients receive.
    pub fn targeted_fields(&self) -> &outpost_http::policy::TargetedFields {
        &self.targeted
    }

    /// The targeted fields that speak to the edge for `route`: only when
    /// the edge is the route's CDN (a reverse site).
    pub(crate) fn targeted_for(
        &self,
        route: &Route,
    ) -> Option<&outpost_http::policy::TargetedFields> {
        route.surrogate.then_some(&self.targeted)
    }

    /// `headers` (a stored or received response's) as the edge's own
    /// caching decisions read their directives for `route`.
    pub(crate) fn caching_view<'h>(
        &self,
        headers: &'h HeaderMap,
        route: &Route,
    ) -> std::borrow::Cow<'h, HeaderMap> {
        match self.targeted_for(route) {
            Some(targeted) => targeted.view(headers),
            None => std::borrow::Cow::Borrowed(headers),
        }
    }

    pub fn rules(&self) -> Arc<crate::config::LiveRules> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the access and caching rules (a reload): requests that
    /// arrive from now on follow them; a connection already admitted stays.
    pub fn set_rules(&self, rules: crate::config::LiveRules) {
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rules);
    }

    /// Refuses `key` to clients (its body failed a digest check), or lifts
    /// the refusal with `None`.
    pub fn set_quarantined(&self, key: &CacheKey, reason: Option<String>) {
        // By URL: every variant of a quarantined file is refused.
        let key = &vary::url_key(key);
        let mut q = lock(&self.quarantined);
        match reason {
            Some(r) => {
                self.sync_fresh.end_url(key.as_str());
                q.insert(key.clone(), r);
            }
            None => {
                q.remove(key);
            }
        }
    }

    /// Makes the copy stored under `key` fresh until `until` whatever its
    /// origin headers say (a channel with `revalidate = "sync"` has just
    /// synced it), or ends that with `None`. See [`crate::sync_fresh`].
    pub fn set_sync_fresh(&self, key: &CacheKey, until: Option<crate::sync_fresh::FreshUntil>) {
        self.sync_fresh.set(key, until);
    }

    /// Whether a channel vouches for the copy stored under `key` now. Such
    /// a copy was fetched by the edge without any PC's credentials: it is
    /// served to every PC, as a digest-bound file is.
    pub(crate) fn vouched(&self, key: &CacheKey) -> bool {
        self.sync_fresh
            .get(key)
            .is_some_and(|until| until.covers(self.clock.now()))
    }

    /// Serves one routed request.
    pub async fn handle(
        self: &Arc<Self>,
        req: Request<ReqBody>,
        route: Route,
    ) -> Response<EdgeBody> {
        let method = req.method().clone();
        let read = matches!(method, Method::GET | Method::HEAD);
        if read {
            // First of all: no way around a quarantine, not even one that
            // sends the request straight to the origin.
            if let Some(refusal) = self.quarantine_refusal(&route.key) {
                return refusal;
            }
        }
        // A file a manifest gives a digest for is served only from a copy
        // the edge has checked: requests that would bypass the store go
        // through it instead.
        let digest_bound = read && self.store.expects_digest(&route.key);
        // So is a file a channel vouches for: the channel, not a rule or a
        // PC's header, decides when the origin is asked about it.
        let through_store = digest_bound || (read && self.vouched(&route.key));
        if !through_store && self.rule(&route).is_some_and(|r| r.never_cache) {
            self.stats.passthrough.fetch_add(1, Ordering::Relaxed);
            return self.forward(req, &route).await;
        }
        if !through_store
            && let Some(name) =
                unkeyed_override(req.headers(), &self.rules().bypass_request_headers)
        {
            // The origin may build its answer from this header (links,
            // redirects), which the key does not include: storing that
            // answer would hand it to every other PC (cache poisoning).
            tracing::debug!(key = %route.key, header = name, "unkeyed override header; passing through");
            self.stats.passthrough.fetch_add(1, Ordering::Relaxed);
            return self.forward(req, &route).await;
        }
        if method == Method::GET {
            let (parts, _body) = req.into_parts();
            return self.handle_get(parts, route, digest_bound).await;
        }
        let route = if method == Method::HEAD {
            self.select_variant(route, req.headers())
        } else {
            route
        };
        if method == Method::HEAD {
            let now = self.clock.now();
            // As for GET: credentials share only what the origin shares.
            let authorized = !digest_bound
                && !self.vouched(&route.key)
                && req.headers().contains_key(header::AUTHORIZATION);
            // The same lookup as a GET's; anything but a hit is forwarded
            // (a HEAD starts no fill and revalidates nothing).
            if let get::Lookup {
                decision: Decision::Hit,
                stored: Some(obj),
                ..
            } = self.look_up(
                req.headers(),
                &route,
                get::Asking::Client { authorized },
                now,
            ) {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                let (parts, _) = req.into_parts();
                let status = hit_status(&obj);
                return object_response(obj, &parts, None, None, status, now);
            }
        }
        let unsafe_method = !matches!(
            method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        );
        let resp = self.forward(req, &route).await;
        if unsafe_method && (resp.status().is_success() || resp.status().is_redirection()) {
            self.invalidate(&route, resp.headers());
        }
        resp
    }

    /// The answer to a read of `key` while its URL is quarantined.
    fn quarantine_refusal(&self, key: &CacheKey) -> Option<Response<EdgeBody>> {
        let reason = lock(&self.quarantined)
            .get(vary::url_part(key.as_str()))
            .cloned()?;
        // Serving it, even from the origin, would hand PCs a package that
        // is not the one the admin published.
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        let mut resp = error_response(
            StatusCode::BAD_GATEWAY,
            &format!("quarantined by pre-positioning: {reason}"),
        );
        resp.headers_mut().insert(
            "x-outpost-quarantine",
            HeaderValue::from_static("digest-mismatch"),
        );
        Some(marked(resp, CacheStatus::Edge))
    }

    /// RFC 9111 section 4.4: a successful unsafe request invalidates the
    /// target URI and same-origin Location / Content-Location.
    fn invalidate(&self, route: &Route, headers: &HeaderMap) {
        let mut keys = vec![route.key.clone()];
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(value) = headers.get(&name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            let Ok(uri) = value.parse::<Uri>() else {
                continue;
            };
            let absolute = if uri.authority().is_some() {
                uri
            } else {
                let mut parts = route.upstream_uri.clone().into_parts();
                parts.path_and_query = uri.path_and_query().cloned();
                match Uri::from_parts(parts) {
                    Ok(u) => u,
                    Err(_) => continue,
                }
            };
            if let Ok(key) = CacheKey::from_uri(&absolute)
                && absolute.authority() == route.upstream_uri.authority()
            {
                keys.push(key);
            }
        }
        for key in keys {
            // A pinned object is the admin's (a channel's file): a PC's
            // POST, which any web page can make it send, must not drop it
            // and its pin. Its own freshness rules still apply.
            if self
                .store
                .get(&key)
                .ok()
                .flatten()
                .is_some_and(|o| o.snapshot().pinned)
            {
                tracing::info!(key = %key, "pinned: not invalidated by an unsafe request");
                continue;
            }
            if let Err(e) = self.purge(&key) {
                tracing::warn!(key = %key, error = %e, "invalidation failed");
            }
        }
    }
}

/// Request headers that frameworks use to override the host, scheme, path
/// or method the origin sees. They are not part of the cache key, so a
/// response to a request carrying one is neither stored nor taken from the
/// cache.
const UNKEYED_OVERRIDES: &[&str] = &[
    "x-forwarded-host",
    "x-forwarded-server",
    "x-forwarded-scheme",
    "x-forwarded-prefix",
    "x-forwarded-port",
    "x-host",
    "x-original-url",
    "x-rewrite-url",
    "x-original-host",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    // Scheme and path as a front end saw them: an origin behind a TLS
    // terminator answers `X-Forwarded-Proto: http` with a redirect to
    // https, which stored would loop every PC.
    "forwarded",
    "x-forwarded-proto",
    "x-forwarded-ssl",
    "front-end-https",
    "x-url-scheme",
    "x-forwarded-uri",
];

/// The first header of the request that makes it bypass the cache: a
/// built-in override header or one the admin listed.
fn unkeyed_override<'a>(headers: &HeaderMap, listed: &'a [http::HeaderName]) -> Option<&'a str> {
    // Walks the request's few fields rather than looking each listed name
    // up: a lookup by `&str` parses and hashes the name every time, and this
    // runs on every request.
    headers.keys().find_map(|name| {
        UNKEYED_OVERRIDES
            .iter()
            .copied()
            .find(|o| *o == name.as_str())
            .or_else(|| {
                listed
                    .iter()
                    .find(|l| *l == name)
                    .map(http::HeaderName::as_str)
            })
    })
}
