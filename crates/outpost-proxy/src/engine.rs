//! The cache logic of one request: look up, serve, collapse, revalidate,
//! fill or pass through.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use http::{
    HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header, request, response,
};
use hyper::body::Incoming;
use outpost_http::cache_control::{self, forbids_stale};
use outpost_http::headers::{
    FILL_CONTROLLED_REQUEST_HEADERS, add_via, add_via_as, strip_hop_by_hop, via_names,
};
use outpost_http::policy::BeforeRequest;
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

/// Where a request goes: the origin URL and its cache key.
#[derive(Debug, Clone)]
pub struct Route {
    pub upstream_uri: Uri,
    pub key: CacheKey,
    /// The admin rule that applies (as it was when the request arrived).
    pub rule: Option<Arc<crate::config::CacheOverride>>,
    /// The upstream is one of the edge's reverse-proxy origins, so the edge
    /// is its surrogate and obeys `Surrogate-Control`.
    pub surrogate: bool,
    /// Whether a client chose the upstream (forward, transparent), so the
    /// destination guard applies, or the admin did (reverse, channels).
    pub reach: Reach,
}

impl Route {
    pub fn new(upstream_uri: Uri) -> Result<Self, outpost_http::KeyError> {
        let key = CacheKey::from_uri(&upstream_uri)?;
        Ok(Self {
            upstream_uri,
            key,
            rule: None,
            surrogate: false,
            reach: Reach::Guarded,
        })
    }
}

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

type PendingMap = HashMap<CacheKey, watch::Receiver<Option<Outcome>>>;

impl Outcome {
    fn passthrough(resp: Response<Incoming>) -> Self {
        Self::Passthrough(resp.status(), Arc::new(Mutex::new(Some(resp))))
    }
}

/// What a collapsed caller gets: the outcome, and whether its own request
/// was the one sent (it led) or it waited on another client's.
pub(crate) struct Collapsed {
    pub outcome: Outcome,
    pub led: bool,
}

/// What the leader of a collapsed miss or revalidation found.
#[derive(Clone)]
pub(crate) enum Outcome {
    Fill(Arc<ObjectFill>),
    Refreshed(Arc<Object>),
    Stale(Arc<Object>),
    /// Not storable: the response is for the leader's request only (it may
    /// be private to that client); every other waiter makes its own request.
    Passthrough(StatusCode, Arc<Mutex<Option<Response<Incoming>>>>),
    Failed(String),
    /// The destination guard refused the client's destination.
    Refused(crate::destination::Refusal),
    /// `max_fills` fills run already: the client should come back.
    Busy,
}

pub struct Engine {
    pub config: ProxyConfig,
    /// Access and caching rules, replaced whole by a reload.
    rules: std::sync::RwLock<Arc<crate::config::LiveRules>>,
    pub store: Store,
    pub fills: Arc<FillContext>,
    pub(crate) upstream: Upstream,
    pending: Arc<Mutex<PendingMap>>,
    pub stats: EngineStats,
    /// Bytes written to clients by source.
    pub served: crate::h1::ServedBytes,
    access_log: std::sync::OnceLock<Arc<crate::access_log::AccessLog>>,
    /// URLs whose body failed a pre-positioning digest check: refused
    /// until a sync finds a good copy (key -> reason).
    quarantined: Mutex<HashMap<CacheKey, String>>,
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

/// Variants one URL may have stored at once: a header like `User-Agent`
/// or `Cookie` in `Vary` would otherwise let clients add one copy each.
pub const MAX_VARIANTS: usize = 32;

/// How long a newly recorded variant key counts as stored before its
/// object appears in the store.
const VARIANT_CREATE_GRACE: Duration = Duration::from_secs(10);

/// The variant map is rebuilt from the store when it reaches this size (or
/// twice its size after the last rebuild).
const VARIANT_MAP_MIN: usize = 10_000;

#[derive(Default)]
struct VariantSet {
    names: Vec<http::HeaderName>,
    /// Each variant key, with when it was first recorded.
    keys: HashMap<CacheKey, std::time::Instant>,
}

/// The variants the store holds, from their keys (at startup).
fn known_variants(store: &Store) -> HashMap<CacheKey, VariantSet> {
    let mut map: HashMap<CacheKey, VariantSet> = HashMap::new();
    let separator = vary::VARIANT_SEPARATOR.to_string();
    for key in store.keys_containing(&separator).unwrap_or_default() {
        if let Some((base, names)) = vary::split_variant(key.as_str()) {
            let set = map.entry(base).or_default();
            set.names = names;
            set.keys.insert(key, std::time::Instant::now());
        }
    }
    map
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long a request waits for a fill that has every byte to record its
/// object (a sync and an index write) before sharing the fill instead.
const RECORD_WAIT: Duration = Duration::from_secs(2);

/// The client's request headers as sent upstream. Towards its own reverse
/// origins (`surrogate`) the edge announces itself as a surrogate, so that
/// `Surrogate-Control` directives can target it by name.
fn upstream_headers(client: &HeaderMap, for_fill: bool, surrogate: bool, via: &str) -> HeaderMap {
    let mut headers = client.clone();
    if surrogate {
        let ours = format!(
            "{}=\"Surrogate/1.0\"",
            outpost_http::policy::SURROGATE_TOKEN
        );
        let announced = match headers.get("surrogate-capability").map(|v| v.to_str()) {
            Some(Ok(theirs)) if !theirs.trim().is_empty() => format!("{theirs}, {ours}"),
            _ => ours,
        };
        if let Ok(v) = HeaderValue::from_str(&announced) {
            headers.insert("surrogate-capability", v);
        }
    }
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    // The framing of what goes upstream is the edge's: a client's
    // Content-Length on a GET whose body the edge drops would announce
    // bytes that never come, and the origin would read the next request
    // on the pooled connection as that body (request smuggling).
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::EXPECT);
    if for_fill {
        for name in FILL_CONTROLLED_REQUEST_HEADERS {
            headers.remove(name);
        }
        // A fill is shared by every client: it must not ask the origin for a
        // client's private view, nor carry one client's freshness demands.
        headers.remove(header::CACHE_CONTROL);
        headers.remove(header::PRAGMA);
        headers.remove(header::EXPECT);
        // What variants are keyed by (see outpost_http::vary).
        vary::normalize_request(&mut headers);
    }
    add_via_as(&mut headers, via);
    headers
}

/// The end-to-end headers of an origin response, as stored. The framing
/// of a 206 (`Content-Range`) is the edge's to set; on any other status a
/// `Content-Range` is just a field the origin sent, and is kept.
fn stored_headers(origin: &HeaderMap, status: StatusCode) -> HeaderMap {
    let mut headers = origin.clone();
    strip_hop_by_hop(&mut headers);
    // Age stays until the policy has read it (RFC 9111 section 4.2.3); the
    // stored head drops it, since the edge computes Age for each response.
    headers.remove(header::CONTENT_LENGTH);
    if status == StatusCode::PARTIAL_CONTENT {
        headers.remove(header::CONTENT_RANGE);
    }
    headers
}

/// An origin response passed to the client as is (minus hop-by-hop
/// headers), its body paced by the WAN shaper's client class.
fn passthrough_response(resp: Response<Incoming>, shaper: &Arc<WanShaper>) -> Response<EdgeBody> {
    let (mut parts, body) = resp.into_parts();
    let framing = parts.headers.get(header::CONTENT_LENGTH).cloned();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(cl) = framing {
        parts.headers.insert(header::CONTENT_LENGTH, cl);
    }
    add_via(&mut parts.headers);
    if let Some(value) = CacheStatus::Pass.header() {
        parts.headers.insert("x-cache", value);
    }
    marked(
        Response::from_parts(
            parts,
            streamed(crate::wan::ShapedBody::new(body, shaper.clone())),
        ),
        CacheStatus::Pass,
    )
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
        let guard = Arc::new(crate::destination::DestinationGuard::new(
            config.internal_destinations.clone(),
        ));
        let upstream = Upstream::new(
            config.fill.upstream_header_timeout,
            config.wan.bulk_receive_buffer,
            &config.upstream_ca,
            guard,
        );
        let shaper = WanShaper::new(config.wan.clone(), config.local_clock.clone());
        let fills = FillContext::new(store.clone(), upstream.clone(), config.fill.clone(), shaper);
        Arc::new(Self {
            rules: std::sync::RwLock::new(Arc::new(crate::config::LiveRules::from_config(&config))),
            config,
            store,
            fills,
            upstream,
            pending: Arc::new(Mutex::new(HashMap::new())),
            stats: EngineStats::default(),
            served: Default::default(),
            access_log: std::sync::OnceLock::new(),
            quarantined: Mutex::new(HashMap::new()),
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

    /// Logs every request from now on (set once, at startup).
    pub fn set_access_log(&self, log: Arc<crate::access_log::AccessLog>) {
        let _ = self.access_log.set(log);
    }

    pub fn access_log(&self) -> Option<&crate::access_log::AccessLog> {
        self.access_log.get().map(|l| &**l)
    }

    /// The route with the key of the variant these request headers select,
    /// when the URL's responses are known to vary.
    pub fn select_variant(&self, mut route: Route, headers: &HeaderMap) -> Route {
        let base = vary::url_key(&route.key);
        route.key = match lock(&self.variants).get(&base) {
            Some(set) if !set.names.is_empty() => vary::variant_key(&base, &set.names, headers),
            // The URL does not vary (or no longer does): one entry for all.
            _ => base,
        };
        route
    }

    /// How many variants of `url_key` the edge knows of.
    pub fn variant_count(&self, url_key: &CacheKey) -> usize {
        lock(&self.variants)
            .get(url_key)
            .map_or(0, |set| set.keys.len())
    }

    /// Removes what is stored for `key`, every variant included. Returns
    /// whether anything was.
    pub fn purge(&self, key: &CacheKey) -> Result<bool, outpost_store::StoreError> {
        let variants = lock(&self.variants).remove(key);
        let mut any = self.store.purge(key)?;
        for variant in variants.into_iter().flat_map(|v| v.keys.into_keys()) {
            any |= self.store.purge(&variant)?;
        }
        Ok(any)
    }

    /// The access and caching rules in force.
    pub fn rules(&self) -> Arc<crate::config::LiveRules> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the access and caching rules (a reload): requests that
    /// arrive from now on follow them; a connection already admitted stays.
    pub fn set_rules(&self, rules: crate::config::LiveRules) {
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rules);
    }

    /// Where a request for `uri` goes: host aliases resolved, the first
    /// matching admin rule found, the query dropped from the key if the
    /// rule says so.
    pub fn route(&self, uri: Uri, reach: Reach) -> Result<Route, outpost_http::KeyError> {
        let uri = self.canonical_uri(uri);
        let host = uri.host().unwrap_or("").to_ascii_lowercase();
        let rule = self
            .rules()
            .overrides
            .iter()
            .find(|o| o.matches(&host, uri.path()))
            .cloned();
        let key = match rule.as_deref() {
            Some(o) if o.ignore_query && uri.query().is_some() => {
                let mut parts = uri.clone().into_parts();
                parts.path_and_query = uri.path().parse().ok();
                let without = Uri::from_parts(parts)
                    .map_err(|e| outpost_http::KeyError::Invalid(e.to_string()))?;
                CacheKey::from_uri(&without)?
            }
            _ => CacheKey::from_uri(&uri)?,
        };
        let authority = uri.authority();
        let surrogate = authority.is_some()
            && (self.config.origin.iter())
                .chain(self.config.sites.iter().map(|s| &s.origin))
                .any(|origin| origin.authority() == authority && origin.scheme() == uri.scheme());
        Ok(Route {
            upstream_uri: uri,
            key,
            rule,
            surrogate,
            reach,
        })
    }

    fn rule<'r>(&self, route: &'r Route) -> Option<&'r crate::config::CacheOverride> {
        route.rule.as_deref()
    }

    /// The freshness policy of a response for `route` as the origin states
    /// it (what is stored), and as the admin's override makes it (what
    /// decides whether it may be stored). Overrides are applied again at
    /// each lookup ([`Engine::judged_head`]), so a rule added later reaches
    /// what is stored already, and a rule removed stops applying.
    fn policies(
        &self,
        client: &HeaderMap,
        route: &Route,
        response: &response::Parts,
    ) -> (
        outpost_http::policy::CachePolicy,
        outpost_http::policy::CachePolicy,
    ) {
        let preq = self.policy_request(client, route, &response.headers);
        // The instant the response is received, by the engine's clock.
        let received = self.clock.now();
        let origin = outpost_http::policy::policy_with_override(
            &preq,
            response,
            received,
            None,
            route.surrogate,
        );
        let judged = match self.freshness_rule(route) {
            Some(rule) => outpost_http::policy::policy_with_override(
                &preq,
                response,
                received,
                Some(rule),
                route.surrogate,
            ),
            None => origin.clone(),
        };
        (origin, judged)
    }

    /// The admin's freshness rule for `route`, when it changes anything.
    fn freshness_rule<'r>(
        &self,
        route: &'r Route,
    ) -> Option<&'r outpost_http::policy::FreshnessOverride> {
        self.rule(route)
            .map(|r| &r.freshness)
            .filter(|f| **f != outpost_http::policy::FreshnessOverride::default())
    }

    /// A stored head as this request judges it: with the admin's rule for
    /// its URL applied to the origin's response as received (Squid's
    /// refresh_pattern, applied at lookup), else as stored.
    pub(crate) fn judged_head(
        &self,
        head: Arc<StoredHead>,
        client: &HeaderMap,
        route: &Route,
    ) -> Arc<StoredHead> {
        let Some(rule) = self.freshness_rule(route) else {
            return head;
        };
        let mut response: response::Parts = Response::new(()).into_parts().0;
        response.status = head.status;
        response.headers = head.headers.clone();
        if !head.arrival_age().is_zero() {
            response
                .headers
                .insert(header::AGE, HeaderValue::from(head.arrival_age().as_secs()));
        }
        let preq = self.policy_request(client, route, &head.headers);
        let policy = outpost_http::policy::policy_with_override(
            &preq,
            &response,
            head.received(),
            Some(rule),
            route.surrogate,
        );
        Arc::new(StoredHead::new(head.status, head.headers.clone(), policy))
    }

    /// Refuses `key` to clients (its body failed a digest check), or lifts
    /// the refusal with `None`.
    pub fn set_quarantined(&self, key: &CacheKey, reason: Option<String>) {
        // By URL: every variant of a quarantined file is refused.
        let key = &vary::url_key(key);
        let mut q = lock(&self.quarantined);
        match reason {
            Some(r) => {
                q.insert(key.clone(), r);
            }
            None => {
                q.remove(key);
            }
        }
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
            let quarantined = lock(&self.quarantined)
                .get(vary::url_part(route.key.as_str()))
                .cloned();
            if let Some(reason) = quarantined {
                // Serving it, even from the origin, would hand PCs a package
                // that is not the one the admin published.
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                let mut resp = error_response(
                    StatusCode::BAD_GATEWAY,
                    &format!("quarantined by pre-positioning: {reason}"),
                );
                resp.headers_mut().insert(
                    "x-outpost-quarantine",
                    HeaderValue::from_static("digest-mismatch"),
                );
                return marked(resp, CacheStatus::Edge);
            }
        }
        // A file a manifest gives a digest for is served only from a copy
        // the edge has checked: requests that would bypass the store go
        // through it instead.
        let digest_bound = read && self.store.expects_digest(&route.key);
        if !digest_bound && self.rule(&route).is_some_and(|r| r.never_cache) {
            self.stats.passthrough.fetch_add(1, Ordering::Relaxed);
            return self.forward(req, &route).await;
        }
        if !digest_bound
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
            let authorized = !digest_bound && req.headers().contains_key(header::AUTHORIZATION);
            if let Ok(Some(obj)) = self.store.get(&route.key)
                && obj.is_complete()
                && (!authorized || explicitly_shared(&obj.head()))
                && matches!(
                    self.judged_head(obj.head(), req.headers(), &route)
                        .policy
                        .before_request(
                            &self.policy_request(req.headers(), &route, &obj.head().headers),
                            now
                        ),
                    BeforeRequest::Fresh(_)
                )
            {
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

    /// The request as the policy library should see it, for a response
    /// with headers `response` (whose `Vary` names the fields to compare).
    fn policy_request(
        &self,
        headers: &HeaderMap,
        route: &Route,
        response: &HeaderMap,
    ) -> request::Parts {
        let (mut parts, ()) = Request::builder()
            .method(Method::GET)
            .uri(route.upstream_uri.clone())
            .body(())
            .unwrap_or_default()
            .into_parts();
        parts.headers = headers.clone();
        vary::normalize_request(&mut parts.headers);
        if let Some(names) = vary::vary_names(response) {
            vary::canonicalize_request(&mut parts.headers, &names);
        }
        // Clients may address the edge by any name; what identifies the
        // representation is the origin URL.
        if let Some(authority) = route.upstream_uri.authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(header::HOST, host);
        }
        parts.headers.remove(header::RANGE);
        parts.headers.remove(header::IF_RANGE);
        parts
    }

    /// Waits, briefly, for a fill that has every byte to record its object.
    /// Returns whether it did (else the caller shares the fill as before:
    /// a slow disk must not turn into an error).
    async fn until_recorded(&self, fill: &Arc<ObjectFill>) -> bool {
        let mut changes = fill.object.subscribe();
        let recorded = async {
            loop {
                let still_filling = self
                    .fills
                    .active(fill.object.key())
                    .is_some_and(|f| Arc::ptr_eq(&f, fill));
                if fill.object.is_complete() || !still_filling {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(RECORD_WAIT, recorded).await.is_ok()
    }

    /// The object stored under `key`; a store that cannot be read is a miss.
    fn lookup(&self, key: &CacheKey) -> Option<Arc<Object>> {
        match self.store.get(key) {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(key = %key, error = %e, "store lookup failed; treating as a miss");
                None
            }
        }
    }

    fn target(&self, client: &HeaderMap, route: &Route) -> UpstreamTarget {
        UpstreamTarget {
            uri: route.upstream_uri.clone(),
            headers: upstream_headers(client, true, route.surrogate, &self.via),
            class: Class::Interactive,
            group: None,
            reach: route.reach,
        }
    }

    fn serve_fill(
        &self,
        fill: Arc<ObjectFill>,
        parts: &request::Parts,
        status: CacheStatus,
        now: SystemTime,
    ) -> Response<EdgeBody> {
        let source = FillSource {
            ctx: self.fills.clone(),
            target: fill.target().clone(),
        };
        fill.promote();
        let guard = fill.reader();
        object_response(
            fill.object.clone(),
            parts,
            Some(source),
            Some(guard),
            status,
            now,
        )
    }

    /// `digest_bound`: a manifest gives this URL's digest, so the answer is
    /// a checked copy or an error, never the origin's bytes passed on.
    async fn handle_get(
        self: &Arc<Self>,
        parts: request::Parts,
        route: Route,
        digest_bound: bool,
    ) -> Response<EdgeBody> {
        // Every freshness decision of this request is made at this instant.
        let now = self.clock.now();
        if digest_bound && let Some(resp) = self.checked_copy(&parts, &route, now) {
            return resp;
        }
        // A response fetched for another client's request answers one with
        // credentials only if the origin made it shareable (RFC 9111
        // section 3.5). The admin published a digest-bound file for every
        // PC: it is shared whatever the request's credentials.
        let authorized = !digest_bound && parts.headers.contains_key(header::AUTHORIZATION);
        let may_share = |head: &StoredHead| !authorized || explicitly_shared(head);
        // The upstream target is built only off the plain-hit path (most
        // requests never need it); a variant route differs only by its key.
        for _ in 0..4 {
            let route = self.select_variant(route.clone(), &parts.headers);
            let running = self.fills.active(&route.key);
            let stored = self.lookup(&route.key);
            let seen = stored.as_ref().map(|o| o.id());
            let decision = {
                let judged = |head| self.judged_head(head, &parts.headers, &route);
                let running_head = running.as_ref().map(|f| judged(f.object.head()));
                let stored_head = stored.as_ref().map(|o| (judged(o.head()), o.phase()));
                let policy_request =
                    |head: &StoredHead| self.policy_request(&parts.headers, &route, &head.headers);
                let asker = Asker::Client(ClientRequest {
                    headers: &parts.headers,
                    authorized,
                    policy_request: &policy_request,
                });
                decide(
                    stored_head
                        .as_ref()
                        .map(|(head, phase)| Stored { head, phase }),
                    running
                        .as_ref()
                        .zip(running_head.as_deref())
                        .map(|(fill, head)| Running {
                            head,
                            complete: fill.object.is_complete(),
                            fully_present: fill.object.is_fully_present(),
                        }),
                    &asker,
                    now,
                )
            };
            let mut revalidate = None;
            match decision {
                Decision::PassOwn => return self.pass_own(parts, &route).await,
                Decision::AwaitRecord => {
                    if let Some(fill) = &running
                        && self.until_recorded(fill).await
                    {
                        continue;
                    }
                    // Recording is slow (a busy disk): share the fill as
                    // before rather than fail.
                    if let Some(fill) = running {
                        self.stats.collapsed.fetch_add(1, Ordering::Relaxed);
                        return self.serve_fill(fill, &parts, CacheStatus::Miss, now);
                    }
                    continue;
                }
                Decision::JoinFill => {
                    let Some(fill) = running else { continue };
                    self.stats.collapsed.fetch_add(1, Ordering::Relaxed);
                    return self.serve_fill(fill, &parts, CacheStatus::Miss, now);
                }
                Decision::Hit => {
                    let Some(obj) = stored else { continue };
                    self.stats.hits.fetch_add(1, Ordering::Relaxed);
                    self.store.touch(&obj);
                    let status = hit_status(&obj);
                    return object_response(obj, &parts, None, None, status, now);
                }
                Decision::FetchRest => {
                    let Some(obj) = stored else { continue };
                    self.stats.hits.fetch_add(1, Ordering::Relaxed);
                    let fill = self.fills.attach(obj, self.target(&parts.headers, &route));
                    return self.serve_fill(fill, &parts, CacheStatus::PartialHit, now);
                }
                Decision::StaleWhileRevalidate { conditional } => {
                    let Some(obj) = stored else { continue };
                    self.stats.stale.fetch_add(1, Ordering::Relaxed);
                    self.refresh_in_background(obj.clone(), conditional, &parts, &route, now);
                    return object_response(
                        obj,
                        &parts,
                        None,
                        None,
                        CacheStatus::StaleWhileRevalidate,
                        now,
                    );
                }
                Decision::OnlyIfCached => return gateway_timeout(),
                Decision::Revalidate { conditional } => {
                    let Some(obj) = stored else { continue };
                    revalidate = Some((obj, conditional));
                }
                Decision::Miss => {}
                // Only syncs are told these.
                Decision::KeepUnvalidated | Decision::CheckDigest => {}
            }
            let client_range = self.range_to_fetch(&parts.headers);
            let engine = self.clone();
            let key = route.key.clone();
            let (outcome, changed) = match revalidate {
                Some((obj, conditional)) => {
                    // A new body after a request with our validators is a
                    // refresh; without any, the request was a plain fetch.
                    let changed = if conditional.is_empty() {
                        CacheStatus::Miss
                    } else {
                        CacheStatus::Refreshed
                    };
                    let target = self.target(&parts.headers, &route);
                    let route = route.clone();
                    let headers = parts.headers.clone();
                    (
                        self.collapse(&key, seen, async move {
                            engine
                                .revalidate(obj, conditional, headers, target, route, now)
                                .await
                        })
                        .await,
                        changed,
                    )
                }
                None => {
                    let target = self.target(&parts.headers, &route);
                    let route = route.clone();
                    let headers = parts.headers.clone();
                    (
                        self.collapse(&key, seen, async move {
                            engine
                                .fetch_miss(headers, target, route, client_range)
                                .await
                        })
                        .await,
                        CacheStatus::Miss,
                    )
                }
            };
            let Some(Collapsed { outcome, led }) = outcome else {
                continue;
            };
            // What this client's own request brought back is its own.
            let shared_with_me = |head: &StoredHead| led || may_share(head);
            match outcome {
                Outcome::Fill(fill) => {
                    // The response turned out to vary: serve it only to
                    // clients that select the same variant.
                    if fill.object.key() != &route.key
                        && &self.select_variant(route.clone(), &parts.headers).key
                            != fill.object.key()
                    {
                        continue;
                    }
                    if !shared_with_me(&fill.object.head()) {
                        return self.pass_own(parts, &route).await;
                    }
                    self.stats.misses.fetch_add(1, Ordering::Relaxed);
                    return self.serve_fill(fill, &parts, changed, now);
                }
                Outcome::Refreshed(obj) | Outcome::Stale(obj) if !shared_with_me(&obj.head()) => {
                    return self.pass_own(parts, &route).await;
                }
                Outcome::Refreshed(obj) => {
                    self.stats.revalidated.fetch_add(1, Ordering::Relaxed);
                    self.store.touch(&obj);
                    return object_response(obj, &parts, None, None, CacheStatus::Revalidated, now);
                }
                Outcome::Stale(obj) => {
                    self.stats.stale.fetch_add(1, Ordering::Relaxed);
                    let mut resp =
                        object_response(obj, &parts, None, None, CacheStatus::StaleOnError, now);
                    resp.headers_mut().insert(
                        header::WARNING,
                        HeaderValue::from_static("111 outpost \"Revalidation Failed\""),
                    );
                    return resp;
                }
                Outcome::Passthrough(status, _) if digest_bound => {
                    tracing::warn!(key = %route.key, %status, "the origin's answer for a digest-bound file cannot be stored and checked: 502");
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    return marked(
                        error_response(
                            StatusCode::BAD_GATEWAY,
                            "pre-positioned file: the origin's answer could not be checked against the manifest",
                        ),
                        CacheStatus::OriginFailed,
                    );
                }
                Outcome::Passthrough(_, slot) => {
                    // Only the client whose headers were sent may see this
                    // answer: it may be private to that client, or carry
                    // its cookies. Every other waiter asks for itself.
                    let taken = if led { lock(&slot).take() } else { None };
                    return match taken {
                        Some(resp) => {
                            self.stats.passthrough.fetch_add(1, Ordering::Relaxed);
                            passthrough_response(resp, &self.fills.shaper)
                        }
                        None => self.pass_own(parts, &route).await,
                    };
                }
                Outcome::Refused(refusal) => {
                    return refused_destination(&refusal);
                }
                Outcome::Failed(reason) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    return marked(
                        error_response(
                            StatusCode::BAD_GATEWAY,
                            &format!("origin unavailable: {reason}"),
                        ),
                        CacheStatus::OriginFailed,
                    );
                }
                Outcome::Busy => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    let mut resp = error_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!(
                            "the edge is already fetching {} objects (fill.max_fills); try again shortly",
                            self.config.fill.max_fills
                        ),
                    );
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                    return marked(resp, CacheStatus::Edge);
                }
            }
        }
        marked(
            error_response(StatusCode::BAD_GATEWAY, "could not obtain the object"),
            CacheStatus::OriginFailed,
        )
    }

    /// The stored copy of a digest-bound URL, when it is complete and has
    /// the manifest's digest: it answers every request, fresh or not, with
    /// or without `no-cache`. The manifest vouches for it, and a refresh
    /// from a mirror that has changed the file would only replace a good
    /// copy with one that fails its check; the channel's next sync is what
    /// brings a new version.
    fn checked_copy(
        &self,
        parts: &request::Parts,
        route: &Route,
        now: SystemTime,
    ) -> Option<Response<EdgeBody>> {
        let route = self.select_variant(route.clone(), &parts.headers);
        let expected = self.store.expected_digest(&route.key)?;
        let obj = self.store.get(&route.key).ok().flatten()?;
        if !obj.is_complete() || self.store.digest(&route.key).ok().flatten()? != expected {
            return None;
        }
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        self.store.touch(&obj);
        let status = hit_status(&obj);
        Some(object_response(obj, parts, None, None, status, now))
    }

    /// Revalidates `obj` for later clients (stale-while-revalidate), joined
    /// with any revalidation already running for the key.
    fn refresh_in_background(
        self: &Arc<Self>,
        obj: Arc<Object>,
        conditional: HeaderMap,
        parts: &request::Parts,
        route: &Route,
        now: SystemTime,
    ) {
        let engine = self.clone();
        let target = self.target(&parts.headers, route);
        let client = parts.headers.clone();
        let route = route.clone();
        let seen = Some(obj.id());
        tokio::spawn(async move {
            let key = route.key.clone();
            let inner = engine.clone();
            let outcome = engine
                .collapse(&key, seen, async move {
                    inner
                        .revalidate(obj, conditional, client, target, route, now)
                        .await
                })
                .await;
            // A changed object starts a fill; nobody waits for it here, and
            // the fill goes on by itself.
            drop(outcome);
        });
    }

    /// The single range to request upstream for a range miss, if the policy
    /// says to fetch ranges at once.
    fn range_to_fetch(&self, headers: &HeaderMap) -> Option<ByteRange> {
        if self.config.fill.range_miss != RangeMissPolicy::Fetch {
            return None;
        }
        let value = headers.get(header::RANGE)?.to_str().ok()?;
        let specs = parse_range_header(value).ok()?;
        // Only a single explicit range is worth a partial fetch; suffixes
        // and multiple ranges take the whole object.
        match specs.as_slice() {
            [spec @ RangeSpec::FromTo { .. }] => {
                let (start, end) = spec.known_start()?;
                Some(ByteRange::new(start, end.unwrap_or(u64::MAX)))
            }
            _ => None,
        }
    }

    /// Runs `work` once for all concurrent callers with the same key; `None`
    /// means the caller should look again: the leader vanished, or the key
    /// moved on since the caller's lookup found the object `seen` (a leader
    /// that finished just before this call already stored or is filling
    /// what the caller would fetch a second time).
    pub(crate) async fn collapse(
        &self,
        key: &CacheKey,
        seen: Option<u64>,
        work: impl Future<Output = Outcome> + Send + 'static,
    ) -> Option<Collapsed> {
        let (mut rx, led) = loop {
            if let Some(rx) = lock(&self.pending).get(key).cloned() {
                break (rx, false);
            }
            // A leader removes itself only after its fill is attached, so
            // once no leader is seen, its work is visible here.
            if self.moved_on(key, seen) {
                return None;
            }
            let mut pending = lock(&self.pending);
            if pending.contains_key(key) {
                continue;
            }
            let (tx, rx) = watch::channel(None);
            pending.insert(key.clone(), rx.clone());
            let pending_map = self.pending.clone();
            let key = key.clone();
            // The leader runs on its own so that a client hanging up does
            // not cancel the fetch everyone waits for.
            tokio::spawn(async move {
                let outcome = work.await;
                lock(&pending_map).remove(&key);
                let _ = tx.send(Some(outcome));
            });
            break (rx, true);
        };
        match rx.wait_for(|o| o.is_some()).await {
            Ok(o) => o.clone().map(|outcome| Collapsed { outcome, led }),
            Err(_) => None,
        }
    }

    /// Whether a fill started or the stored object changed under `key`
    /// since a lookup found the object `seen` (by id).
    fn moved_on(&self, key: &CacheKey, seen: Option<u64>) -> bool {
        let filling = self
            .fills
            .active(key)
            .is_some_and(|f| Some(f.object.id()) != seen && !f.object.is_complete());
        filling || self.store.get(key).ok().flatten().map(|o| o.id()) != seen
    }

    /// Leader of a miss: one upstream request; store the response if it may
    /// be stored, else hand it over as a passthrough.
    pub(crate) async fn fetch_miss(
        self: Arc<Self>,
        client: HeaderMap,
        target: UpstreamTarget,
        route: Route,
        range: Option<ByteRange>,
    ) -> Outcome {
        if self.fills.active_count() >= self.config.fill.max_fills {
            tracing::warn!(key = %route.key, max = self.config.fill.max_fills, "too many fills running: 503");
            return Outcome::Busy;
        }
        let mut builder = Request::builder()
            .method(Method::GET)
            .uri(target.uri.clone());
        if let Some(h) = builder.headers_mut() {
            *h = target.headers.clone();
            if let Some(r) = range {
                h.insert(header::RANGE, r.request_header());
            }
        }
        let req = match builder.body(crate::upstream::empty_body()) {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        self.fills
            .stats
            .upstream_requests
            .fetch_add(1, Ordering::Relaxed);
        match self.upstream.send_as(req, target.class, target.reach).await {
            Ok(resp) => {
                tracing::trace!(key = %route.key, status = %resp.status(), "origin response head");
                self.store_response(&client, resp, target, &route)
            }
            Err(UpstreamError::Refused(refusal)) => Outcome::Refused(refusal),
            Err(e) => {
                tracing::warn!(key = %route.key, error = %e, "origin fetch failed");
                Outcome::Failed(e.to_string())
            }
        }
    }

    /// Decides whether an origin response (200, or 206 to our range) is
    /// stored; if so creates the object and starts its fill.
    fn store_response(
        &self,
        client: &HeaderMap,
        resp: Response<Incoming>,
        target: UpstreamTarget,
        route: &Route,
    ) -> Outcome {
        let status = resp.status();
        let content_range = if status == StatusCode::PARTIAL_CONTENT {
            match resp
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(ContentRange::parse)
            {
                // A Content-Length that disagrees with the range is a
                // malformed answer: passed on as sent, never stored.
                Some(cr)
                    if cr.complete_len.is_some()
                        && declared_length(resp.headers()).is_none_or(|n| n == cr.range.len()) =>
                {
                    Some(cr)
                }
                _ => return Outcome::passthrough(resp),
            }
        } else {
            None
        };
        // Other statuses are stored when RFC 9111 allows (cacheable by
        // default, or explicit freshness); a 304 is an answer to a
        // conditional, not a response to keep.
        if content_range.is_none()
            && matches!(
                status,
                StatusCode::NOT_MODIFIED | StatusCode::PARTIAL_CONTENT
            )
            || status.is_informational()
        {
            return Outcome::passthrough(resp);
        }
        let (rparts, body) = resp.into_parts();
        // The representation as a whole: a 206 describes a 200 we have not
        // seen yet, so judge and store it as that 200.
        let mut whole: response::Parts = Response::new(()).into_parts().0;
        whole.status = if content_range.is_some() {
            StatusCode::OK
        } else {
            status
        };
        whole.headers = stored_headers(&rparts.headers, rparts.status);
        let len = match content_range {
            Some(cr) => cr.complete_len,
            // RFC 9110 section 15.3.5: a 204 ends at its header section.
            None if status == StatusCode::NO_CONTENT => Some(0),
            None if rparts.headers.contains_key(header::TRANSFER_ENCODING) => None,
            None => rparts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok()),
        };
        if let Some(len) = len {
            whole
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        let (policy, judged) = self.policies(client, route, &whole);
        let names = vary::vary_names(&rparts.headers);
        let storable = judged.is_storable()
            && !rparts.headers.contains_key(header::SET_COOKIE)
            && names.is_some();
        if !storable {
            return Outcome::passthrough(Response::from_parts(rparts, body));
        }
        whole.headers.remove(header::CONTENT_LENGTH);
        whole.headers.remove(header::AGE);
        let Some(key) = self.variant_to_store(route, client, names.unwrap_or_default()) else {
            // This URL has as many variants as it may keep: this one is
            // the client's alone.
            return Outcome::passthrough(Response::from_parts(rparts, body));
        };
        let head = StoredHead::new(whole.status, whole.headers, policy);
        let range = match content_range {
            Some(cr) => cr.range,
            None => ByteRange::new(0, len.unwrap_or(u64::MAX)),
        };
        // The fill is registered, with its first range claimed, before any
        // lookup can see the object: every client finds it being fetched and
        // none starts a second fetch of the same bytes.
        let mut body = Some(body);
        let created = self
            .store
            .create_with(&key, head, len, |obj| match body.take() {
                Some(body) => self.fills.attach_started(obj.clone(), target, range, body),
                None => self.fills.attach(obj.clone(), target),
            });
        let fill = match created {
            Ok((_, fill)) => fill,
            Err(e) => {
                tracing::error!(key = %route.key, error = %e, "cannot create object; passing the response through");
                let Some(body) = body else {
                    return Outcome::Failed(e.to_string());
                };
                return Outcome::passthrough(Response::from_parts(rparts, body));
            }
        };
        Outcome::Fill(fill)
    }

    /// The key a response is stored under: the URL's, or the variant the
    /// leading request selects when the response varies; `None` when the
    /// URL already has `MAX_VARIANTS` other variants stored. Records what it
    /// learns for later lookups. The store is only read with the variant
    /// map unlocked: every GET takes that lock to select its variant.
    fn variant_to_store(
        &self,
        route: &Route,
        client: &HeaderMap,
        names: Vec<http::HeaderName>,
    ) -> Option<CacheKey> {
        let base = vary::url_key(&route.key);
        if names.is_empty() {
            // No longer varies: one entry for everyone again.
            let old = lock(&self.variants).remove(&base);
            for key in old.into_iter().flat_map(|set| set.keys.into_keys()) {
                let _ = self.store.purge(&key);
            }
            return Some(base);
        }
        let mut normalized = client.clone();
        vary::normalize_request(&mut normalized);
        let key = vary::variant_key(&base, &names, &normalized);
        if lock(&self.variants).len() >= self.variant_map_limit.load(Ordering::Relaxed) {
            self.rebuild_variant_map();
        }
        if self.variant_places_taken(&base, &key) {
            self.forget_evicted_variants(&base);
        }
        let mut variants = lock(&self.variants);
        let set = variants.entry(base).or_default();
        if !set.keys.contains_key(&key) && set.keys.len() >= MAX_VARIANTS {
            tracing::debug!(key = %key, max = MAX_VARIANTS, "variant limit reached; not stored");
            return None;
        }
        set.names = names;
        set.keys
            .entry(key.clone())
            .or_insert_with(std::time::Instant::now);
        Some(key)
    }

    /// Whether `key` would be one variant too many for `base`.
    fn variant_places_taken(&self, base: &CacheKey, key: &CacheKey) -> bool {
        lock(&self.variants)
            .get(base)
            .is_some_and(|set| !set.keys.contains_key(key) && set.keys.len() >= MAX_VARIANTS)
    }

    /// Drops `base`'s variant keys whose objects eviction removed. A key
    /// recorded moments ago may not be in the store yet (its object is
    /// being created) and keeps its place.
    fn forget_evicted_variants(&self, base: &CacheKey) {
        let candidates: Vec<CacheKey> = lock(&self.variants)
            .get(base)
            .map(|set| {
                set.keys
                    .iter()
                    .filter(|(_, at)| at.elapsed() >= VARIANT_CREATE_GRACE)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        let gone: Vec<CacheKey> = candidates
            .into_iter()
            .filter(|k| self.store.get(k).ok().flatten().is_none())
            .collect();
        if let Some(set) = lock(&self.variants).get_mut(base) {
            for k in &gone {
                set.keys.remove(k);
            }
        }
    }

    /// Rebuilds the variant map from the store: entries of URLs whose
    /// variants were all evicted linger otherwise. Keys recorded meanwhile
    /// (objects still being created) are kept.
    fn rebuild_variant_map(&self) {
        let mut rebuilt = known_variants(&self.store);
        let mut variants = lock(&self.variants);
        for (url, set) in variants.drain() {
            let recent = set
                .keys
                .into_iter()
                .filter(|(_, at)| at.elapsed() < VARIANT_CREATE_GRACE);
            let entry = rebuilt.entry(url).or_default();
            entry.keys.extend(recent);
            if entry.names.is_empty() {
                entry.names = set.names;
            }
        }
        *variants = rebuilt;
        self.variant_map_limit
            .store((variants.len() * 2).max(VARIANT_MAP_MIN), Ordering::Relaxed);
    }

    /// Leader of a revalidation: one conditional request for everyone.
    pub(crate) async fn revalidate(
        self: Arc<Self>,
        obj: Arc<Object>,
        conditional: HeaderMap,
        client: HeaderMap,
        target: UpstreamTarget,
        route: Route,
        now: SystemTime,
    ) -> Outcome {
        let mut builder = Request::builder()
            .method(Method::GET)
            .uri(target.uri.clone());
        if let Some(h) = builder.headers_mut() {
            *h = target.headers.clone();
            for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
                if let Some(v) = conditional.get(&name) {
                    h.insert(name, v.clone());
                }
            }
        }
        let req = match builder.body(crate::upstream::empty_body()) {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        self.fills
            .stats
            .upstream_requests
            .fetch_add(1, Ordering::Relaxed);
        let head = obj.head();
        // Stale on error: when the admin switch says so, or within the
        // response's or the request's stale-if-error window (RFC 5861);
        // never against must-revalidate, proxy-revalidate or no-cache.
        let staleness = head.staleness(now);
        let within = |h: &HeaderMap| {
            cache_control::seconds(h, "stale-if-error")
                .is_some_and(|w| staleness <= Duration::from_secs(w))
        };
        let stale_ok = !forbids_stale(&head.headers)
            && (self.config.fill.serve_stale_on_error || within(&head.headers) || within(&client));
        let resp = match self.upstream.send_as(req, target.class, target.reach).await {
            Ok(resp) => resp,
            Err(UpstreamError::Refused(refusal)) => return Outcome::Refused(refusal),
            Err(e) if stale_ok => {
                tracing::warn!(key = %route.key, error = %e, "origin unreachable; serving stale");
                return Outcome::Stale(obj);
            }
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        if resp.status() == StatusCode::NOT_MODIFIED {
            let (rparts, _) = resp.into_parts();
            // RFC 9111 section 4.3.4: a 304 whose validators contradict ours
            // is about another representation; fetch the current one. A 304
            // without validators answers the conditional we sent for ours.
            if validators_contradict(&head.headers, &rparts.headers) {
                return self.fetch_miss(client, target, route, None).await;
            }
            if cache_control::has(&rparts.headers, "private")
                || cache_control::has(&rparts.headers, "no-store")
            {
                // The response is no longer for everyone: merged into the
                // stored copy, it (and whatever per-user field came with
                // it) would be served to every PC. The stored copy goes;
                // the leader gets a full answer of its own.
                if let Err(e) = self.purge(obj.key()) {
                    tracing::warn!(key = %route.key, error = %e, "cannot drop a copy that turned private");
                }
                return self.fetch_miss(client, target, route, None).await;
            }
            // RFC 9111 section 3.2: every field of the 304 replaces the
            // stored one, except those that describe the stored body itself
            // (its coding, digest and range), which a 304 cannot change.
            let mut headers = head.headers.clone();
            let update = stored_headers(&rparts.headers, StatusCode::PARTIAL_CONTENT);
            for name in update.keys() {
                if matches!(
                    name.as_str(),
                    "content-encoding"
                        | "content-md5"
                        | "digest"
                        | "content-digest"
                        | "repr-digest"
                ) {
                    continue;
                }
                // A cookie set on a 304 is for the client whose request
                // revalidated, not for every PC the stored response serves;
                // likewise the origin's answer to its credentials.
                // (`Set-Cookie2`, obsolete since RFC 6265 and read by no
                // client, is updated as RFC 9111 section 3.2 says.)
                if matches!(
                    name.as_str(),
                    "set-cookie" | "authentication-info" | "proxy-authentication-info"
                ) {
                    continue;
                }
                headers.remove(name);
                for value in update.get_all(name) {
                    headers.append(name.clone(), value.clone());
                }
            }
            let mut merged: response::Parts = Response::new(()).into_parts().0;
            merged.status = head.status;
            merged.headers = headers.clone();
            let (policy, _) = self.policies(&client, &route, &merged);
            headers.remove(header::AGE);
            let new_head = StoredHead::new(head.status, headers, policy);
            if let Err(e) = self.store.update_head(&obj, new_head) {
                tracing::warn!(key = %route.key, error = %e, "could not record revalidation");
            }
            return Outcome::Refreshed(obj);
        }
        if resp.status().is_server_error() && stale_ok {
            return Outcome::Stale(obj);
        }
        self.store_response(&client, resp, target, &route)
    }

    /// Forwards a request as is (other methods, uncacheable responses),
    /// its body included with the length the client declared.
    pub async fn forward(&self, req: Request<ReqBody>, route: &Route) -> Response<EdgeBody> {
        let (parts, body) = req.into_parts();
        let length = parts.headers.get(header::CONTENT_LENGTH).cloned();
        self.forward_with_body(parts, body, length, route).await
    }

    /// The client's own request (without a body), sent as is and never
    /// stored: for a client that may not share the response fetched for
    /// another.
    async fn pass_own(&self, parts: request::Parts, route: &Route) -> Response<EdgeBody> {
        self.stats.passthrough.fetch_add(1, Ordering::Relaxed);
        self.forward_with_body(parts, crate::upstream::empty_body(), None, route)
            .await
    }

    async fn forward_with_body(
        &self,
        parts: request::Parts,
        body: UpstreamBody,
        length: Option<HeaderValue>,
        route: &Route,
    ) -> Response<EdgeBody> {
        let mut builder = Request::builder()
            .method(parts.method.clone())
            .uri(route.upstream_uri.clone());
        if let Some(h) = builder.headers_mut() {
            *h = upstream_headers(&parts.headers, false, route.surrogate, &self.via);
            if let Some(cl) = length {
                h.insert(header::CONTENT_LENGTH, cl);
            }
        }
        let req = match builder.body(body) {
            Ok(r) => r,
            Err(e) => {
                return marked(
                    error_response(StatusCode::BAD_REQUEST, &e.to_string()),
                    CacheStatus::Edge,
                );
            }
        };
        self.fills
            .stats
            .upstream_requests
            .fetch_add(1, Ordering::Relaxed);
        match self.upstream.send(req, route.reach).await {
            Ok(resp) => passthrough_response(resp, &self.fills.shaper),
            Err(UpstreamError::Refused(refusal)) => refused_destination(&refusal),
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(uri = %route.upstream_uri, error = %e, "origin request failed");
                marked(
                    error_response(StatusCode::BAD_GATEWAY, &format!("origin unavailable: {e}")),
                    CacheStatus::OriginFailed,
                )
            }
        }
    }
}

/// Whether a 304's validators name a representation other than the stored
/// one (a strong ETag mismatch, or a different Last-Modified).
fn validators_contradict(stored: &HeaderMap, fresh: &HeaderMap) -> bool {
    let tag = |h: &HeaderMap| {
        h.get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(|t| t.trim().trim_start_matches("W/").to_string())
    };
    if let (Some(a), Some(b)) = (tag(stored), tag(fresh)) {
        return a != b;
    }
    match (
        stored.get(header::LAST_MODIFIED),
        fresh.get(header::LAST_MODIFIED),
    ) {
        (Some(a), Some(b)) => a != b,
        _ => false,
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

/// The `Content-Length` of a message, when it has exactly one valid value.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()?.trim().parse().ok()
}

/// The answer to a client whose destination the guard refused.
pub(crate) fn refused_destination(refusal: &crate::destination::Refusal) -> Response<EdgeBody> {
    // The detail (what a name resolves to inside) stays in the log.
    tracing::warn!(%refusal, "destination refused: 403");
    marked(
        error_response(
            StatusCode::FORBIDDEN,
            "this destination is not allowed (loopback, link-local or this edge itself)",
        ),
        CacheStatus::Denied,
    )
}

/// A hit's verdict: an error status the origin gave a lifetime is Squid's
/// negative hit.
fn hit_status(obj: &Object) -> CacheStatus {
    let status = obj.head().status;
    if status.is_client_error() || status.is_server_error() {
        CacheStatus::NegativeHit
    } else {
        CacheStatus::Hit
    }
}

fn gateway_timeout() -> Response<EdgeBody> {
    marked(
        error_response(
            StatusCode::GATEWAY_TIMEOUT,
            "not cached, and the request says only-if-cached",
        ),
        CacheStatus::Edge,
    )
}
