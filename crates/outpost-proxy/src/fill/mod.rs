//! Fill orchestration: one upstream fetch per missing extent of an object,
//! shared by every client that wants those bytes.
//!
//! An [`ObjectFill`] exists while an object is incomplete and someone wants
//! its bytes. It tracks *claims*: byte ranges an upstream fetch is bringing in
//! right now. A reader that needs missing bytes calls [`ObjectFill::demand`];
//! bytes already claimed are simply waited for, the rest are queued and
//! fetched with upstream Range requests, a few at a time so that the first
//! ranges finish early instead of all finishing late. When no demand is
//! pending, the rest of the object is fetched in the background in bounded
//! chunks, so a later demand never waits long behind a background request.
//!
//! Every fetch resumes after a drop with `Range` + `If-Range`, with backoff;
//! readers see a stall, not an error. An origin that answers with a different
//! representation (200 to a validated Range request, or other validators)
//! fails the object: its bytes are dropped and readers are cut off, because
//! mixing two versions would serve bytes that are not the origin's.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, StatusCode, Uri, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use outpost_http::{ByteRange, CacheKey, ContentRange, RangeSet};
use outpost_store::{Object, Phase, Store};
use tokio::time::Instant;

use crate::upstream::Upstream;
use crate::wan::WanShaper;

mod worker;

use outpost_shaper::{BucketId, Class};

/// Bytes are handed to readers at least this often while a fill streams...
const FLUSH_DELAY: Duration = Duration::from_millis(50);
/// ... or as soon as this many are buffered.
const FLUSH_BYTES: usize = 256 * 1024;
/// A slow fill (a WAN-speed one) records its progress at least this often,
/// once it has a flush's worth of new bytes, so that a crash costs at most
/// this much transfer time rather than `checkpoint_bytes`.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// How an upstream request for an object is made.
/// What to do with a Range request for bytes that are not cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeMissPolicy {
    /// Fetch the missing bytes at once with an upstream Range request.
    Fetch,
    /// Fetch the whole object from the start and serve the range when the
    /// fill reaches it.
    Wait,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FillConfig {
    /// Keep filling when every client of a fill has gone.
    pub continue_on_client_abort: bool,
    pub range_miss: RangeMissPolicy,
    /// After a range fill, fetch the rest of the object in the background.
    pub background_fill: bool,
    /// Upstream range fetches for one object at a time (demanded ranges).
    pub range_concurrency: usize,
    /// Size of each background request.
    pub background_chunk: u64,
    /// A dropped or failing upstream fetch is retried (with backoff) until
    /// it has failed this many times in a row *and* no byte has arrived for
    /// `retry_for`: a branch's WAN outage of minutes is a stall for the
    /// waiting clients, not an error.
    pub max_retries: u32,
    /// Time without a byte after which a failing fetch may give up.
    pub retry_for: Duration,
    pub retry_backoff_initial: Duration,
    pub retry_backoff_max: Duration,
    /// Sync and record progress after this many new bytes.
    pub checkpoint_bytes: u64,
    /// Time to connect and receive response headers from the origin.
    pub upstream_header_timeout: Duration,
    /// A fill whose body stalls this long is treated as dropped.
    pub upstream_idle_timeout: Duration,
    /// Serve a stale object when the origin cannot be reached or answers
    /// 5xx (unless the response forbids it with must-revalidate,
    /// proxy-revalidate, no-cache or s-maxage, or a stale-if-error window
    /// of the response or request has passed).
    pub serve_stale_on_error: bool,
    /// Fills running at once; a miss beyond this gets 503 + Retry-After.
    pub max_fills: usize,
}

impl Default for FillConfig {
    fn default() -> Self {
        Self {
            continue_on_client_abort: true,
            range_miss: RangeMissPolicy::Fetch,
            background_fill: true,
            range_concurrency: 1,
            background_chunk: 8 << 20,
            max_retries: 10,
            retry_for: Duration::from_secs(600),
            retry_backoff_initial: Duration::from_millis(200),
            retry_backoff_max: Duration::from_secs(10),
            checkpoint_bytes: 16 << 20,
            upstream_header_timeout: Duration::from_secs(60),
            upstream_idle_timeout: Duration::from_secs(60),
            serve_stale_on_error: true,
            max_fills: 512,
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    pub uri: Uri,
    /// End-to-end request headers to send with every fetch (the client's,
    /// minus hop-by-hop, ranges and validators, plus Via).
    pub headers: HeaderMap,
    /// Who waits for these bytes: a client, or only pre-positioning.
    pub class: Class,
    /// The shaper bucket of the channel that asked, for bulk fetches.
    pub group: Option<BucketId>,
    /// Whether the destination guard applies (a client chose the URL).
    pub reach: crate::upstream::Reach,
}

/// Why a fetch gave up.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    /// The origin now serves a different representation.
    #[error("object changed at the origin: {0}")]
    Changed(String),
    #[error("origin unavailable after {attempts} attempts: {last}")]
    Exhausted { attempts: u32, last: String },
    #[error("disk: {0}")]
    Disk(#[from] outpost_store::StoreError),
    /// Nobody wants the bytes any more and the config says to stop.
    #[error("abandoned: no client left")]
    Abandoned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerKind {
    /// The fetch that created the object (a plain GET or the first range).
    Initial,
    Demand,
    Background,
}

#[derive(Debug)]
struct Claim {
    id: u64,
    /// Bytes from `cursor` to `end` are on their way (`end` may be
    /// `u64::MAX` while the length is unknown).
    cursor: u64,
    end: u64,
}

#[derive(Default)]
struct FillState {
    claims: Vec<Claim>,
    next_claim: u64,
    queue: VecDeque<ByteRange>,
    demand_workers: usize,
    background_running: bool,
    finished: bool,
}

/// Bytes asked for again before the cursor when resuming an object that has
/// no validator, to check that the origin still serves the same bytes.
const RESUME_OVERLAP: u64 = 64 * 1024;

/// What a fill that hit a full disk asks eviction to free beyond the
/// bytes in hand, so that it does not stop again at the next write.
const DISK_FULL_HEADROOM: u64 = 64 * 1024 * 1024;

/// Shared by all fills: where to write and how to fetch.
pub struct FillContext {
    pub store: Store,
    pub upstream: Upstream,
    pub config: FillConfig,
    registry: Mutex<Registry>,
    pub stats: FillStats,
    pub shaper: Arc<WanShaper>,
}

/// The running fills. A key has one current object, but a fill of the
/// object it replaced (the origin changed it mid-fill, a refresh) may still
/// run for its readers; it is found by object id so that those readers'
/// demands reach it instead of displacing the current fill.
#[derive(Default)]
struct Registry {
    current: HashMap<CacheKey, Arc<ObjectFill>>,
    superseded: HashMap<u64, Arc<ObjectFill>>,
}

#[derive(Default)]
pub struct FillStats {
    pub completed: AtomicUsize,
    pub upstream_requests: AtomicUsize,
    pub upstream_retries: AtomicUsize,
    pub wan_bytes: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FillContext {
    pub fn new(
        store: Store,
        upstream: Upstream,
        config: FillConfig,
        shaper: Arc<WanShaper>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            upstream,
            config,
            registry: Mutex::new(Registry::default()),
            stats: FillStats::default(),
            shaper,
        })
    }

    /// Sends a GET of `uri` with `headers` (end-to-end fields, plus the
    /// range or validators of this request) on the pool of `class` and
    /// `reach`: every request the edge makes of an origin for the cache
    /// goes through here, so each is counted once.
    pub(crate) async fn get_upstream(
        &self,
        uri: &Uri,
        headers: HeaderMap,
        class: Class,
        reach: crate::upstream::Reach,
    ) -> Result<http::Response<Incoming>, crate::upstream::UpstreamError> {
        // Built from parts that are valid already: nothing here can fail.
        let mut req = Request::new(crate::upstream::empty_body());
        *req.uri_mut() = uri.clone();
        *req.headers_mut() = headers;
        self.stats.upstream_requests.fetch_add(1, Ordering::Relaxed);
        self.upstream.send_as(req, class, reach).await
    }

    /// The running fill of `key`'s current object, if any.
    pub fn active(&self, key: &CacheKey) -> Option<Arc<ObjectFill>> {
        lock(&self.registry).current.get(key).cloned()
    }

    /// The fill of a stored, incomplete object, creating it if needed.
    pub fn attach(self: &Arc<Self>, obj: Arc<Object>, target: UpstreamTarget) -> Arc<ObjectFill> {
        self.attach_locked(&mut lock(&self.registry), obj, target)
    }

    /// The fill of a new object, with its first fetch (the origin response
    /// `body`, carrying `range`) started. The range is claimed before the
    /// registry lock is released: a client finding the fill unclaimed would
    /// have its reader demand the same bytes from the origin again.
    pub fn attach_started(
        self: &Arc<Self>,
        obj: Arc<Object>,
        target: UpstreamTarget,
        range: ByteRange,
        body: Incoming,
    ) -> Arc<ObjectFill> {
        let (fill, claim) = {
            let mut registry = lock(&self.registry);
            let fill = self.attach_locked(&mut registry, obj, target);
            let claim = fill.add_claim(&mut lock(&fill.state), range);
            (fill, claim)
        };
        let worker = fill.clone();
        tokio::spawn(async move {
            worker
                .run_worker(claim, range, Some(body), WorkerKind::Initial)
                .await
        });
        fill
    }

    fn attach_locked(
        self: &Arc<Self>,
        registry: &mut Registry,
        obj: Arc<Object>,
        target: UpstreamTarget,
    ) -> Arc<ObjectFill> {
        let displaced = match registry.current.get(obj.key()) {
            Some(fill) if Arc::ptr_eq(&fill.object, &obj) => return fill.clone(),
            // Ids grow: a higher one is the newer object. `obj` was replaced
            // while its readers still stream it.
            Some(fill) if fill.object.id() > obj.id() => {
                if let Some(fill) = registry.superseded.get(&obj.id())
                    && Arc::ptr_eq(&fill.object, &obj)
                {
                    return fill.clone();
                }
                let fill = self.new_fill(obj.clone(), target);
                registry.superseded.insert(obj.id(), fill.clone());
                return fill;
            }
            Some(fill) => Some(fill.clone()),
            None => None,
        };
        if let Some(old) = displaced {
            registry.superseded.insert(old.object.id(), old);
        }
        let fill = self.new_fill(obj.clone(), target);
        registry.current.insert(obj.key().clone(), fill.clone());
        fill
    }

    fn new_fill(self: &Arc<Self>, object: Arc<Object>, target: UpstreamTarget) -> Arc<ObjectFill> {
        Arc::new(ObjectFill {
            object,
            interactive: AtomicBool::new(target.class == Class::Interactive),
            last_checkpoint: Mutex::new(Instant::now()),
            target,
            ctx: self.clone(),
            state: Mutex::new(FillState::default()),
            readers: AtomicUsize::new(0),
            detached: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Makes sure the missing bytes of `range` of `obj` are being fetched,
    /// attaching a fill to the object if none runs.
    pub fn demand(self: &Arc<Self>, obj: &Arc<Object>, target: &UpstreamTarget, range: ByteRange) {
        if !matches!(obj.phase(), Phase::Filling) {
            return;
        }
        for _ in 0..2 {
            let fill = self.attach(obj.clone(), target.clone());
            if target.class == Class::Interactive {
                fill.promote();
            }
            if fill.demand(range) {
                return;
            }
            // The fill has ended but is still registered (it is parking:
            // checkpointing before it detaches). Attaching again would find
            // it again and the demand would be lost, leaving the reader
            // waiting for bytes nobody fetches: take it out now, so that
            // the next attach starts a fill of its own.
            self.detach(&fill);
        }
    }

    fn detach(&self, fill: &ObjectFill) {
        let mut registry = lock(&self.registry);
        let key = fill.object.key();
        if registry
            .current
            .get(key)
            .is_some_and(|f| Arc::ptr_eq(&f.object, &fill.object))
        {
            registry.current.remove(key);
        }
        let id = fill.object.id();
        if registry
            .superseded
            .get(&id)
            .is_some_and(|f| Arc::ptr_eq(&f.object, &fill.object))
        {
            registry.superseded.remove(&id);
        }
        drop(registry);
        fill.detached.send_replace(true);
    }

    /// Records progress of every running fill (on shutdown).
    pub async fn checkpoint_all(&self) {
        let fills: Vec<Arc<ObjectFill>> = {
            let registry = lock(&self.registry);
            registry
                .current
                .values()
                .chain(registry.superseded.values())
                .cloned()
                .collect()
        };
        for fill in fills {
            if let Err(e) = self.store.checkpoint(&fill.object).await {
                tracing::warn!(key = %fill.object.key(), error = %e, "checkpoint failed");
            }
        }
    }

    /// How many fills run now.
    pub fn active_count(&self) -> usize {
        let registry = lock(&self.registry);
        registry.current.len() + registry.superseded.len()
    }

    /// A snapshot of the running fills: key, bytes present, length.
    pub fn progress(&self) -> Vec<(String, u64, Option<u64>)> {
        let registry = lock(&self.registry);
        registry
            .current
            .values()
            .chain(registry.superseded.values())
            .map(|f| {
                let s = f.object.snapshot();
                (f.object.key().to_string(), s.present.covered(), s.len)
            })
            .collect()
    }
}

pub struct ObjectFill {
    pub object: Arc<Object>,
    target: UpstreamTarget,
    ctx: Arc<FillContext>,
    state: Mutex<FillState>,
    /// Clients currently streaming from this fill.
    readers: AtomicUsize,
    /// A client waits for this fill (else only pre-positioning does).
    interactive: AtomicBool,
    last_checkpoint: Mutex<Instant>,
    /// Set once the fill has left the registry, for those who wait to
    /// look again after it.
    detached: tokio::sync::watch::Sender<bool>,
}

/// Held by a client streaming from a fill; see `continue_on_client_abort`.
pub struct ReaderGuard(Arc<ObjectFill>);

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.0.readers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ObjectFill {
    pub fn target(&self) -> &UpstreamTarget {
        &self.target
    }

    /// A client now waits for this fill: its reads leave the
    /// pre-positioning class for the client class.
    pub fn promote(&self) {
        self.interactive.store(true, Ordering::Relaxed);
    }

    pub fn class(&self) -> Class {
        if self.interactive.load(Ordering::Relaxed) {
            Class::Interactive
        } else {
            Class::Bulk
        }
    }

    /// Returns once this fill has left the registry (at once if it has).
    pub async fn detached(&self) {
        let mut detached = self.detached.subscribe();
        // The sender lives as long as `self`: the wait cannot fail.
        let _ = detached.wait_for(|gone| *gone).await;
    }

    pub fn reader(self: &Arc<Self>) -> ReaderGuard {
        self.readers.fetch_add(1, Ordering::AcqRel);
        ReaderGuard(self.clone())
    }

    /// Makes sure the missing bytes of `range` are being fetched. Returns
    /// false if this fill has ended (attach a new one).
    pub fn demand(self: &Arc<Self>, range: ByteRange) -> bool {
        let range = match self.object.len() {
            Some(len) => ByteRange::new(range.start.min(len), range.end.min(len)),
            None => range,
        };
        let missing = self.object.missing(range);
        let mut st = lock(&self.state);
        if st.finished {
            return false;
        }
        let busy = Self::busy(&st);
        for gap in missing {
            for piece in busy.gaps(gap) {
                st.queue.push_back(piece);
            }
        }
        self.pump(&mut st);
        true
    }

    /// Bytes that running fetches are bringing in.
    fn claimed(st: &FillState) -> RangeSet {
        let mut claimed = RangeSet::new();
        for c in st.claims.iter().filter(|c| c.cursor < c.end) {
            claimed.insert(ByteRange::new(c.cursor, c.end));
        }
        claimed
    }

    /// Bytes that are claimed or queued.
    fn busy(st: &FillState) -> RangeSet {
        let mut busy = Self::claimed(st);
        for q in &st.queue {
            busy.insert(*q);
        }
        busy
    }

    fn add_claim(&self, st: &mut FillState, range: ByteRange) -> u64 {
        st.next_claim += 1;
        let id = st.next_claim;
        st.claims.push(Claim {
            id,
            cursor: range.start,
            end: range.end,
        });
        id
    }

    /// Starts queued demand fetches up to the concurrency limit, then the
    /// background fill when nothing is demanded.
    fn pump(self: &Arc<Self>, st: &mut FillState) {
        let limit = self.ctx.config.range_concurrency.max(1);
        while st.demand_workers < limit {
            let Some(next) = st.queue.pop_front() else {
                break;
            };
            let claimed = Self::claimed(st);
            let mut pieces = Vec::new();
            for gap in self.object.missing(next) {
                pieces.extend(claimed.gaps(gap));
            }
            for piece in pieces {
                let id = self.add_claim(st, piece);
                st.demand_workers += 1;
                let fill = self.clone();
                tokio::spawn(
                    async move { fill.run_worker(id, piece, None, WorkerKind::Demand).await },
                );
            }
        }
        if st.queue.is_empty()
            && st.demand_workers == 0
            && !st.background_running
            && self.ctx.config.background_fill
        {
            self.start_background(st);
        }
    }

    fn start_background(self: &Arc<Self>, st: &mut FillState) {
        let Some(len) = self.object.len() else { return };
        let claimed = Self::busy(st);
        let mut wanted = None;
        for gap in self.object.missing(ByteRange::new(0, len)) {
            if let Some(piece) = claimed.gaps(gap).into_iter().next() {
                wanted = Some(piece);
                break;
            }
        }
        let Some(piece) = wanted else { return };
        let chunk = ByteRange::new(
            piece.start,
            piece.end.min(
                piece
                    .start
                    .saturating_add(self.ctx.config.background_chunk.max(1)),
            ),
        );
        let id = self.add_claim(st, chunk);
        st.background_running = true;
        let fill = self.clone();
        tokio::spawn(async move {
            fill.run_worker(id, chunk, None, WorkerKind::Background)
                .await
        });
    }
}
