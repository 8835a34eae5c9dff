//! Channel sync runs and their schedules.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{StatusCode, Uri};
use outpost_http::CacheKey;
pub use outpost_protocol::{
    ActiveFile, ChannelStatus, FileProblem, LimitHit, RunPhase, RunProgress, RunSummary,
    SourceKind, SyncResult,
};
use outpost_proxy::Engine;
use outpost_proxy::prefetch::{PrefetchError, PrefetchOutcome, PrefetchRequest};
use outpost_shaper::{BucketId, Rate, RateRule, RateSchedule, TimeWindow};
use tokio::sync::watch;
use url::Url;

use crate::ChannelError;
use crate::cron::CronSchedule;
use crate::filter::PathFilter;
use crate::listing::{ListingLink, parse_listing_limited, parse_manifest_each};
use crate::state::{ChannelDb, FileRow};

/// Largest listing page or manifest read: a bigger one fails to list
/// rather than be held in memory.
const MAX_DOCUMENT: usize = 16 << 20;
/// Problems kept per channel for status.
const MAX_PROBLEMS: usize = 50;

#[derive(Debug, Clone, PartialEq)]
pub struct ChannelConfig {
    pub name: String,
    pub source: Url,
    pub kind: SourceKind,
    /// Globs on the path below the source folder; empty = everything.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub schedule: Option<CronSchedule>,
    /// The channel's own limit (within the pre-positioning class).
    pub rate: Rate,
    /// Transfers run only inside this window (else at any time).
    pub window: Option<TimeWindow>,
    /// Check SHA-256 where the manifest gives one.
    pub verify: bool,
    /// Other host names PCs use for the source's host.
    pub aliases: Vec<String>,
    /// Files fetched at once.
    pub concurrency: usize,
    pub limits: ChannelLimits,
}

/// What one channel may crawl and hold. A source is not trusted to be
/// finite: a symlink loop on the file server (`a -> .`) lists
/// `/a/a/a/...` forever, a generated page can link a million entries, a
/// manifest can name anything; without bounds a sync fills the disk with
/// pinned files that eviction may not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelLimits {
    /// Folder levels below the source folder that are listed (0: the
    /// source folder only).
    pub max_depth: u64,
    /// Listing pages one sync reads.
    pub max_pages: u64,
    /// Entries read from one listing page; the rest are ignored.
    pub max_page_links: u64,
    /// Files the channel holds.
    pub max_files: u64,
    /// Bytes the channel holds (`None`: unlimited).
    pub max_bytes: Option<u64>,
}

impl Default for ChannelLimits {
    fn default() -> Self {
        Self {
            max_depth: 16,
            max_pages: 10_000,
            max_page_links: 10_000,
            max_files: 100_000,
            max_bytes: None,
        }
    }
}

/// The limits a run ran into, one entry per limit.
#[derive(Default)]
struct LimitLog(Vec<LimitHit>);

impl LimitLog {
    fn hit(&mut self, limit: &str, value: Option<u64>, url: &str) {
        match self.0.iter_mut().find(|h| h.limit == limit) {
            Some(h) => h.times += 1,
            None => self.0.push(LimitHit {
                limit: limit.to_string(),
                value,
                url: url.to_string(),
                times: 1,
            }),
        }
    }

    /// Adds `later`'s hits (a limit hit in both keeps its first URL).
    fn merge(&mut self, later: LimitLog) {
        for hit in later.0 {
            match self.0.iter_mut().find(|h| h.limit == hit.limit) {
                Some(h) => h.times += hit.times,
                None => self.0.push(hit),
            }
        }
    }
}

impl ChannelConfig {
    /// The folder the channel covers: the source itself for a listing, the
    /// manifest's folder otherwise.
    pub fn base(&self) -> Url {
        match self.kind {
            SourceKind::Listing => self.source.clone(),
            SourceKind::Manifest => self
                .source
                .join("./")
                .unwrap_or_else(|_| self.source.clone()),
        }
    }

    fn shaper_schedule(&self) -> RateSchedule {
        match &self.window {
            None => RateSchedule::constant(self.rate),
            Some(window) => RateSchedule {
                default: Rate::bytes_per_sec(0.0),
                rules: vec![RateRule {
                    window: window.clone(),
                    rate: self.rate,
                }],
            },
        }
    }
}

struct RunState {
    run: u64,
    started: i64,
    started_at: std::time::Instant,
    phase: RunPhase,
    files_total: u64,
    files_done: u64,
    bytes_total: u64,
    bytes_done: u64,
    fetched_bytes: u64,
    active: HashMap<String, (CacheKey, Option<u64>)>,
}

struct Channel {
    config: ChannelConfig,
    /// The limit and window in force (a reload may change them).
    pacing: Mutex<(Rate, Option<TimeWindow>)>,
    /// The limits in force (a reload may change them; a run keeps those
    /// it started with).
    limits: Mutex<ChannelLimits>,
    group: BucketId,
    filter: PathFilter,
    run: Mutex<Option<RunState>>,
    /// Sends the number of the last finished run.
    finished: watch::Sender<u64>,
    next_run: Mutex<Option<chrono::NaiveDateTime>>,
}

/// The channels of one edge.
pub struct Channels {
    engine: Arc<Engine>,
    db: Mutex<ChannelDb>,
    channels: Vec<Arc<Channel>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// "a; b; c (and 7 more)": a message stays readable (and small) however
/// many folders failed.
fn first_few(items: &[String], n: usize) -> String {
    let mut text = items
        .iter()
        .take(n)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > n {
        text.push_str(&format!(" (and {} more)", items.len() - n));
    }
    text
}

/// What a channel holds during a run, against max_files and max_bytes:
/// first the files it keeps whatever the run brings, then each file as it
/// is admitted and, once its length is known, settled.
struct Budget {
    max_files: u64,
    max_bytes: Option<u64>,
    files: u64,
    bytes: u64,
    /// A file did not fit in max_bytes: no new file starts after it.
    full: bool,
    /// Each file kept out, in the order it was.
    hits: LimitLog,
}

/// What one admitted file counts for in the [`Budget`].
#[derive(Debug, Clone, Copy)]
struct Admission {
    /// The length the channel held of the file before the run (counted
    /// already), if it held it.
    held: Option<u64>,
    reserved: u64,
}

impl Budget {
    /// Admits a file of `size` (from the manifest; `None`: known once its
    /// response arrives), or notes the limit that keeps it out. A file of
    /// unknown size starts while there is room left; a file the channel
    /// holds is refreshed unless it is known to grow past the limit.
    fn admit(&mut self, url: &str, size: Option<u64>, held: Option<u64>) -> Option<Admission> {
        if held.is_none() && self.files >= self.max_files {
            self.hits.hit("max_files", Some(self.max_files), url);
            return None;
        }
        let mut reserved = 0;
        if let Some(max) = self.max_bytes {
            let grow = match (size, held) {
                (Some(s), Some(h)) => s.saturating_sub(h),
                (Some(s), None) => s,
                (None, _) => 0,
            };
            let fits = match held {
                Some(_) => grow == 0 || self.bytes.saturating_add(grow) <= max,
                None => {
                    !self.full
                        && self.bytes.saturating_add(grow) <= max
                        && (size.is_some() || self.bytes < max)
                }
            };
            if !fits {
                // Files are taken in listing order until the budget is
                // full, not picked to fill it: the result is predictable.
                self.full = true;
                self.hits.hit("max_bytes", self.max_bytes, url);
                return None;
            }
            reserved = grow;
            self.bytes += grow;
        }
        if held.is_none() {
            self.files += 1;
        }
        Some(Admission { held, reserved })
    }

    /// Counts a fetched file at its real length; false when a file the
    /// channel did not hold does not fit (it is not to be kept).
    fn settle(&mut self, a: Admission, len: u64, url: &str) -> bool {
        self.bytes = self
            .bytes
            .saturating_sub(a.reserved.saturating_add(a.held.unwrap_or(0)))
            .saturating_add(len);
        let Some(max) = self.max_bytes else {
            return true;
        };
        if self.bytes <= max {
            return true;
        }
        self.full = true;
        if a.held.is_some() {
            // Its new version replaced the one held: nothing to give back.
            return true;
        }
        self.bytes = self.bytes.saturating_sub(len);
        self.files = self.files.saturating_sub(1);
        self.hits.hit("max_bytes", self.max_bytes, url);
        false
    }

    /// Gives back what a file that was not brought in reserved.
    fn release(&mut self, a: Admission) {
        self.bytes = self.bytes.saturating_sub(a.reserved);
        if a.held.is_none() {
            self.files = self.files.saturating_sub(1);
        }
    }
}

/// What a source listed, within the channel's limits.
#[derive(Default)]
struct Listed {
    /// The wanted files, each once.
    files: Vec<SourceFile>,
    /// Folders that could not be listed.
    problems: Vec<String>,
    hits: LimitLog,
}

/// Folder levels of `url` below `base`: 0 for the base itself, 1 for
/// `base/a/`, 2 for `base/a/b/` or `base/a//` (empty segments count, or
/// `a//`, `a///`... would be an endless path at one level).
fn depth_below(url: &Url, base: &Url) -> u64 {
    let rest = url.path().strip_prefix(base.path()).unwrap_or(url.path());
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        0
    } else {
        rest.split('/').count() as u64
    }
}

/// A fingerprint of the set of entry names on a listing page (relative to
/// the page, so that `/a/` and `/a/a/` listing the same folder match).
fn entry_names(links: &[ListingLink], page: &Url) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut names: Vec<&str> = links
        .iter()
        .map(|l| {
            let (ListingLink::Dir(u) | ListingLink::File(u)) = l;
            u.path().strip_prefix(page.path()).unwrap_or(u.path())
        })
        .collect();
    names.sort_unstable();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    names.hash(&mut h);
    h.finish()
}

/// A file a source names.
#[derive(Debug, Clone)]
struct SourceFile {
    url: Url,
    size: Option<u64>,
    sha256: Option<String>,
}

fn to_uri(url: &Url) -> Result<Uri, String> {
    url.as_str().parse().map_err(|e| format!("{url}: {e}"))
}

impl Channel {
    fn wanted(&self, url: &Url) -> bool {
        let base = self.config.base();
        self.filter
            .wanted(url.path().strip_prefix(base.path()).unwrap_or(url.path()))
    }
}

impl Channels {
    /// Opens the channel database in `dir`, registers each channel with the
    /// WAN shaper, re-applies quarantines and starts schedules; runs cut
    /// short by a stop are started again at once.
    pub fn start(
        engine: Arc<Engine>,
        configs: Vec<ChannelConfig>,
        dir: &Path,
    ) -> Result<Arc<Self>, ChannelError> {
        let db = ChannelDb::open(&dir.join("channels.sqlite"))?;
        let mut channels = Vec::new();
        let mut resume = Vec::new();
        for config in configs {
            for row in db.files(&config.name)? {
                if let Some(expected) = &row.expected_sha256 {
                    // A manifest's digest binds every copy of the file the
                    // edge stores, PCs' fills included, across restarts.
                    engine
                        .store
                        .expect_digest(&CacheKey::from_stored(row.key.clone()), Some(expected));
                }
                if row.state == "quarantined" {
                    engine.set_quarantined(
                        &CacheKey::from_stored(row.key.clone()),
                        row.detail.clone().or(Some("digest mismatch".into())),
                    );
                }
            }
            if db.take_interrupted(&config.name, now_secs())? {
                resume.push(config.name.clone());
            }
            let group = engine.fills.shaper.add_group(config.shaper_schedule());
            let filter = PathFilter::new(&config.include, &config.exclude)?;
            channels.push(Arc::new(Channel {
                pacing: Mutex::new((config.rate, config.window.clone())),
                limits: Mutex::new(config.limits),
                config,
                group,
                filter,
                run: Mutex::new(None),
                finished: watch::channel(0).0,
                next_run: Mutex::new(None),
            }));
        }
        let this = Arc::new(Self {
            engine,
            db: Mutex::new(db),
            channels,
        });
        for ch in &this.channels {
            if ch.config.schedule.is_some() {
                let this2 = this.clone();
                let ch = ch.clone();
                tokio::spawn(async move { this2.schedule_loop(ch).await });
            }
        }
        for name in resume {
            tracing::info!(channel = %name, "resuming a sync interrupted by the last stop");
            let _ = this.sync(&name);
        }
        Ok(this)
    }

    /// Applies a new configuration's channels where that can be done live
    /// (rate, window and limits of existing channels); returns what needs a restart
    /// (channels added, removed, or with another source, kind, filter or
    /// schedule).
    pub fn reconfigure(&self, configs: &[ChannelConfig]) -> Vec<String> {
        let mut restart = Vec::new();
        for new in configs {
            let Some(ch) = self.channels.iter().find(|c| c.config.name == new.name) else {
                restart.push(format!("channel {:?} added", new.name));
                continue;
            };
            let old = &ch.config;
            let same_shape = old.source == new.source
                && old.kind == new.kind
                && old.include == new.include
                && old.exclude == new.exclude
                && old.schedule == new.schedule
                && old.verify == new.verify
                && old.aliases == new.aliases
                && old.concurrency == new.concurrency;
            if !same_shape {
                restart.push(format!("channel {:?} changed", new.name));
            }
            let mut limits = lock(&ch.limits);
            if *limits != new.limits {
                *limits = new.limits;
                tracing::info!(channel = %new.name, limits = ?new.limits, "channel limits changed");
            }
            drop(limits);
            let mut pacing = lock(&ch.pacing);
            if pacing.0 != new.rate || pacing.1 != new.window {
                *pacing = (new.rate, new.window.clone());
                self.engine
                    .fills
                    .shaper
                    .set_group(ch.group, new.shaper_schedule());
                tracing::info!(channel = %new.name, rate = %new.rate, "channel limit changed");
            }
        }
        for ch in &self.channels {
            if !configs.iter().any(|c| c.name == ch.config.name) {
                restart.push(format!("channel {:?} removed", ch.config.name));
            }
        }
        restart
    }

    pub fn names(&self) -> Vec<String> {
        self.channels
            .iter()
            .map(|c| c.config.name.clone())
            .collect()
    }

    fn channel(&self, name: &str) -> Result<&Arc<Channel>, ChannelError> {
        self.channels
            .iter()
            .find(|c| c.config.name == name)
            .ok_or_else(|| ChannelError::Unknown(name.to_string()))
    }

    /// Starts a sync of `name` unless one runs; returns the run's number.
    pub fn sync(self: &Arc<Self>, name: &str) -> Result<u64, ChannelError> {
        let ch = self.channel(name)?.clone();
        let mut run = lock(&ch.run);
        if let Some(r) = run.as_ref() {
            return Ok(r.run);
        }
        let started = now_secs();
        let id = lock(&self.db).start_run(name, started)?;
        *run = Some(RunState {
            run: id,
            started,
            started_at: std::time::Instant::now(),
            phase: RunPhase::Listing,
            files_total: 0,
            files_done: 0,
            bytes_total: 0,
            bytes_done: 0,
            fetched_bytes: 0,
            active: HashMap::new(),
        });
        drop(run);
        let this = self.clone();
        tokio::spawn(async move {
            let summary = this.run(&ch, id, started).await;
            tracing::info!(channel = %ch.config.name, run = id, result = %summary.result, files = summary.files, fetched = summary.fetched, fetched_bytes = summary.fetched_bytes, "channel sync finished");
            let json = serde_json::to_string(&summary).unwrap_or_default();
            if let Err(e) = lock(&this.db).finish_run(&ch.config.name, id, summary.finished, &json)
            {
                tracing::error!(channel = %ch.config.name, error = %e, "cannot record sync result");
            }
            *lock(&ch.run) = None;
            ch.finished.send_replace(id);
        });
        Ok(id)
    }

    /// Waits until run `run` of `name` has finished.
    pub async fn wait(&self, name: &str, run: u64) -> Result<(), ChannelError> {
        let mut rx = self.channel(name)?.finished.subscribe();
        let _ = rx.wait_for(|&done| done >= run).await;
        Ok(())
    }

    async fn schedule_loop(self: Arc<Self>, ch: Arc<Channel>) {
        let Some(schedule) = ch.config.schedule.clone() else {
            return;
        };
        loop {
            let now = chrono::Local::now().naive_local();
            let Some(next) = schedule.next_after(now) else {
                tracing::warn!(channel = %ch.config.name, %schedule, "schedule never fires");
                return;
            };
            *lock(&ch.next_run) = Some(next);
            // Sleep in short steps: the wall clock may jump (NTP, DST).
            loop {
                let now = chrono::Local::now().naive_local();
                if now >= next {
                    break;
                }
                let left = (next - now).to_std().unwrap_or(Duration::from_secs(1));
                tokio::time::sleep(left.min(Duration::from_secs(30))).await;
            }
            match self.sync(&ch.config.name) {
                Ok(run) => {
                    let _ = self.wait(&ch.config.name, run).await;
                }
                Err(e) => {
                    tracing::error!(channel = %ch.config.name, error = %e, "cannot start scheduled sync")
                }
            }
        }
    }

    /// Lists the source: the wanted files it names, up to the channel's
    /// limits. Only a listing without problems and without limit hits is
    /// complete (only then may files missing from it be unpinned).
    async fn list(&self, ch: &Channel, limits: &ChannelLimits) -> Result<Listed, String> {
        let config = &ch.config;
        let mut listed = Listed::default();
        let max_files = limits.max_files;
        match config.kind {
            SourceKind::Manifest => {
                let body = self.fetch_document(&config.source).await?;
                let mut seen = HashSet::new();
                let files = &mut listed.files;
                let hits = &mut listed.hits;
                parse_manifest_each(&body, &config.source, |e| {
                    if !ch.wanted(&e.url) || !seen.insert(e.url.to_string()) {
                        return ControlFlow::Continue(());
                    }
                    if files.len() as u64 >= max_files {
                        hits.hit("max_files", Some(max_files), e.url.as_str());
                        return ControlFlow::Break(());
                    }
                    files.push(SourceFile {
                        url: e.url,
                        size: e.size,
                        sha256: e.sha256,
                    });
                    ControlFlow::Continue(())
                })
                .map_err(|e| e.to_string())?;
            }
            SourceKind::Listing => {
                let base = config.base();
                let page_links = usize::try_from(limits.max_page_links).unwrap_or(usize::MAX);
                // Each folder waits with the entry names of the pages above
                // it: a page that lists what an ancestor listed is a
                // symlink loop (`a -> .` or `a -> ..`) whatever its URL.
                let mut queue = VecDeque::from([(base.clone(), Arc::new(Vec::new()))]);
                let mut queued = HashSet::from([base.to_string()]);
                let mut files_seen = HashSet::new();
                let mut pages: u64 = 0;
                'crawl: while let Some((dir, ancestors)) = queue.pop_front() {
                    pages += 1;
                    let body = match self.fetch_document(&dir).await {
                        Ok(b) => b,
                        // The root must list; a subfolder failing makes
                        // the listing incomplete.
                        Err(e) if dir == base => return Err(e),
                        Err(e) => {
                            listed.problems.push(format!("{dir}: {e}"));
                            continue;
                        }
                    };
                    let html = String::from_utf8_lossy(&body);
                    let page = parse_listing_limited(&html, &dir, &base, page_links);
                    if page.truncated {
                        tracing::warn!(channel = %config.name, url = %dir, limit = limits.max_page_links, "listing page has more entries than max_page_links; the rest are ignored");
                        listed.hits.hit(
                            "max_page_links",
                            Some(limits.max_page_links),
                            dir.as_str(),
                        );
                    }
                    let names = entry_names(&page.links, &dir);
                    if ancestors.contains(&names) {
                        tracing::warn!(channel = %config.name, url = %dir, "folder lists the same entries as a folder above it (a symlink loop?); not followed");
                        listed.hits.hit("loop", None, dir.as_str());
                        continue;
                    }
                    let lineage =
                        Arc::new(ancestors.iter().copied().chain([names]).collect::<Vec<_>>());
                    for link in page.links {
                        match link {
                            ListingLink::Dir(u) => {
                                if queued.contains(u.as_str()) {
                                    continue;
                                }
                                if depth_below(&u, &base) > limits.max_depth {
                                    listed.hits.hit(
                                        "max_depth",
                                        Some(limits.max_depth),
                                        u.as_str(),
                                    );
                                    continue;
                                }
                                // Counting the queue keeps it (and the
                                // memory of a crawl) within max_pages.
                                if pages + queue.len() as u64 >= limits.max_pages {
                                    listed.hits.hit(
                                        "max_pages",
                                        Some(limits.max_pages),
                                        u.as_str(),
                                    );
                                    continue;
                                }
                                queued.insert(u.to_string());
                                queue.push_back((u, lineage.clone()));
                            }
                            ListingLink::File(u) => {
                                if !ch.wanted(&u) || !files_seen.insert(u.to_string()) {
                                    continue;
                                }
                                if listed.files.len() as u64 >= max_files {
                                    listed.hits.hit("max_files", Some(max_files), u.as_str());
                                    break 'crawl;
                                }
                                listed.files.push(SourceFile {
                                    url: u,
                                    size: None,
                                    sha256: None,
                                });
                            }
                        }
                    }
                }
                if !listed.hits.0.is_empty() {
                    tracing::warn!(channel = %config.name, pages, files = listed.files.len(), "listing stopped at a limit");
                }
            }
        }
        Ok(listed)
    }

    async fn fetch_document(&self, url: &Url) -> Result<bytes::Bytes, String> {
        let uri = to_uri(url)?;
        let uri = self.engine.canonical_uri(uri);
        match self.engine.fetch_document(&uri, MAX_DOCUMENT).await {
            Ok((StatusCode::OK, _, body)) => Ok(body),
            Ok((status, _, _)) => Err(format!("{url}: origin answered {status}")),
            Err(e) => Err(format!("{url}: {e}")),
        }
    }

    async fn run(self: &Arc<Self>, ch: &Arc<Channel>, run: u64, started: i64) -> RunSummary {
        let name = &ch.config.name;
        let limits = *lock(&ch.limits);
        let mut summary = RunSummary {
            run,
            started,
            ..Default::default()
        };
        let Listed {
            files,
            problems,
            hits: mut limit_hits,
        } = match self.list(ch, &limits).await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(channel = %name, error = %e, "cannot list the channel's source");
                summary.result = SyncResult::Failed;
                summary.message = Some(format!("cannot list the source: {e}"));
                summary.finished = now_secs();
                return summary;
            }
        };
        // A listing cut by a limit is as incomplete as one with a folder
        // that did not list: what it did not reach may still be there.
        let complete_listing = problems.is_empty() && limit_hits.0.is_empty();
        let known: HashMap<String, FileRow> = lock(&self.db)
            .files(name)
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.url.clone(), r))
            .collect();
        let listed: HashSet<&str> = files.iter().map(|f| f.url.as_str()).collect();
        let mut budget = Budget {
            max_files: limits.max_files,
            max_bytes: limits.max_bytes,
            files: 0,
            bytes: 0,
            full: false,
            hits: LimitLog::default(),
        };
        // What the channel goes on holding whatever this run brings: the
        // files still listed, and with an incomplete listing all it held
        // (they are not unpinned then).
        for row in known.values() {
            if let Some(len) = row.len
                && (!complete_listing || listed.contains(row.url.as_str()))
            {
                budget.files += 1;
                budget.bytes = budget.bytes.saturating_add(len);
            }
        }
        let budget = Arc::new(Mutex::new(budget));
        {
            let mut r = lock(&ch.run);
            if let Some(r) = r.as_mut() {
                r.phase = RunPhase::Syncing;
                r.files_total = files.len() as u64;
                r.bytes_total = files
                    .iter()
                    .map(|f| {
                        f.size
                            .or_else(|| known.get(f.url.as_str()).and_then(|k| k.len))
                            .unwrap_or(0)
                    })
                    .sum();
            }
        }
        let sem = Arc::new(tokio::sync::Semaphore::new(ch.config.concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for file in files.iter().cloned() {
            let permit = match sem.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => break,
            };
            // Admitted once a permit is free, so that the files settled
            // before count (one at a time, the limit is exact).
            let previous = known.get(file.url.as_str()).cloned();
            let admitted = lock(&budget).admit(
                file.url.as_str(),
                file.size,
                previous.as_ref().and_then(|p| p.len),
            );
            let Some(admission) = admitted else {
                summary.skipped += 1;
                if let Some(r) = lock(&ch.run).as_mut() {
                    r.files_done += 1;
                }
                continue;
            };
            let this = self.clone();
            let ch = ch.clone();
            let budget = budget.clone();
            tasks.spawn(async move {
                let _permit = permit;
                this.sync_file(&ch, file, previous, admission, &budget)
                    .await
            });
            while let Some(done) = tasks.try_join_next() {
                tally(&mut summary, done);
            }
        }
        while let Some(done) = tasks.join_next().await {
            tally(&mut summary, done);
        }
        limit_hits.merge(std::mem::take(&mut lock(&budget).hits));
        summary.files = files.len() as u64;
        // Files that left the source: no longer pinned, ordinary cache.
        if complete_listing {
            for (url, row) in &known {
                if listed.contains(url.as_str()) {
                    continue;
                }
                let key = CacheKey::from_stored(row.key.clone());
                let db = lock(&self.db);
                if !db.held_elsewhere(name, &row.key).unwrap_or(true)
                    && let Err(e) = self.engine.store.set_pinned(&key, false)
                {
                    tracing::warn!(channel = %name, key = %key, error = %e, "cannot unpin");
                }
                if row.state == "quarantined" {
                    self.engine.set_quarantined(&key, None);
                }
                if row.expected_sha256.is_some() {
                    self.engine.store.expect_digest(&key, None);
                }
                if let Err(e) = db.remove_file(name, url) {
                    tracing::warn!(channel = %name, error = %e, "cannot forget a removed file");
                }
                summary.removed += 1;
            }
        }
        if let Some(r) = lock(&ch.run).as_ref() {
            summary.fetched_bytes = r.fetched_bytes;
        }
        summary.finished = now_secs();
        summary.limits = limit_hits.0;
        summary.result = if !summary.limits.is_empty() {
            SyncResult::Limit
        } else if summary.failed + summary.quarantined > 0 || !complete_listing {
            SyncResult::Errors
        } else {
            SyncResult::Ok
        };
        if !summary.limits.is_empty() {
            tracing::warn!(channel = %name, limits = ?summary.limits, "sync stopped at a limit");
        }
        let mut message: Vec<String> = summary.limits.iter().map(ToString::to_string).collect();
        if !problems.is_empty() {
            message.push(first_few(&problems, 5));
        }
        if !complete_listing {
            message = vec![format!(
                "listing incomplete, nothing unpinned: {}",
                message.join("; ")
            )];
        }
        if !message.is_empty() {
            summary.message = Some(message.join("; "));
        }
        summary
    }

    async fn sync_file(
        self: &Arc<Self>,
        ch: &Arc<Channel>,
        file: SourceFile,
        previous: Option<FileRow>,
        admission: Admission,
        budget: &Mutex<Budget>,
    ) -> FileResult {
        let name = &ch.config.name;
        let url = file.url.to_string();
        let (uri, key) = match to_uri(&file.url).and_then(|u| {
            let key = self
                .engine
                .prefetch_key(u.clone())
                .map_err(|e| e.to_string())?;
            Ok((u, key))
        }) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(channel = %name, %url, error = %e, "bad URL in source");
                lock(budget).release(admission);
                return FileResult::Failed;
            }
        };
        let before = self.engine.store.get(&key).ok().flatten().map_or(0, |o| {
            if o.is_complete() {
                o.len().unwrap_or(0)
            } else {
                o.snapshot().present.covered()
            }
        });
        if let Some(r) = lock(&ch.run).as_mut() {
            r.active.insert(url.clone(), (key.clone(), file.size));
        }
        // Pin first, so that cache pressure cannot take a partial copy
        // while the rest comes in.
        let _ = self.engine.store.set_pinned(&key, true);
        let request = PrefetchRequest {
            uri,
            group: Some(ch.group),
            sha256: if ch.config.verify {
                file.sha256.clone()
            } else {
                None
            },
        };
        if request.sha256.is_none()
            && previous
                .as_ref()
                .is_some_and(|p| p.expected_sha256.is_some())
        {
            // The manifest no longer vouches for a digest: the file is
            // checked against nothing from now on.
            self.engine.store.expect_digest(&key, None);
        }
        let result = self.engine.prefetch(&request).await;
        let now = now_secs();
        let mut row = FileRow {
            url: url.clone(),
            key: key.to_string(),
            len: None,
            sha256: None,
            expected_sha256: request.sha256.clone(),
            state: "ok".into(),
            detail: None,
            updated: now,
        };
        let outcome = match result {
            Ok(done) => {
                let fetched = match done.outcome {
                    PrefetchOutcome::Fetched => done.len.saturating_sub(before.min(done.len)),
                    _ => 0,
                };
                let kept = lock(budget).settle(admission, done.len, &url);
                if let Some(r) = lock(&ch.run).as_mut() {
                    r.fetched_bytes += fetched;
                    if kept
                        && file.size.is_none()
                        && previous.as_ref().and_then(|p| p.len).is_none()
                    {
                        r.bytes_total += done.len;
                    }
                }
                if !kept {
                    // Only its response said how big it is; past max_bytes
                    // it stays as ordinary, evictable cache, unrecorded.
                    tracing::warn!(channel = %name, %url, len = done.len, "past the channel's max_bytes: not kept");
                    if !lock(&self.db)
                        .held_elsewhere(name, done.key.as_str())
                        .unwrap_or(true)
                    {
                        let _ = self.engine.store.set_pinned(&done.key, false);
                    }
                    if let Some(r) = lock(&ch.run).as_mut() {
                        r.active.remove(&url);
                        r.files_done += 1;
                    }
                    return FileResult::OverLimit;
                }
                row.len = Some(done.len);
                row.sha256 = done.sha256.clone();
                if let Err(e) = self.engine.store.set_pinned(&done.key, true) {
                    tracing::warn!(channel = %name, key = %done.key, error = %e, "cannot pin");
                }
                self.engine.set_quarantined(&done.key, None);
                FileResult::Done(done.outcome)
            }
            Err(PrefetchError::DigestMismatch { expected, actual }) => {
                lock(budget).release(admission);
                let detail = format!("SHA-256 {actual} differs from the manifest's {expected}");
                tracing::error!(channel = %name, %url, %detail, "quarantined");
                row.state = "quarantined".into();
                row.detail = Some(detail.clone());
                self.engine.set_quarantined(&key, Some(detail));
                let _ = self.engine.store.set_pinned(&key, false);
                FileResult::Quarantined
            }
            Err(e) => {
                lock(budget).release(admission);
                tracing::warn!(channel = %name, %url, error = %e, "file sync failed");
                row.state = "error".into();
                row.detail = Some(e.to_string());
                // Keep what an earlier sync stored (still pinned).
                if let Some(p) = &previous {
                    row.len = p.len;
                    row.sha256 = p.sha256.clone();
                }
                if previous.as_ref().is_none_or(|p| p.state != "ok") {
                    let _ = self.engine.store.set_pinned(&key, false);
                }
                FileResult::Failed
            }
        };
        if let Err(e) = lock(&self.db).put_file(name, &row) {
            tracing::error!(channel = %name, error = %e, "cannot record synced file");
        }
        if let Some(r) = lock(&ch.run).as_mut() {
            r.active.remove(&url);
            r.files_done += 1;
            r.bytes_done += row.len.unwrap_or(0);
        }
        outcome
    }

    /// Every channel's state.
    pub fn status(&self) -> Vec<ChannelStatus> {
        self.channels
            .iter()
            .map(|ch| self.channel_status(ch))
            .collect()
    }

    fn channel_status(&self, ch: &Channel) -> ChannelStatus {
        let config = &ch.config;
        let (rows, last) = {
            let db = lock(&self.db);
            (
                db.files(&config.name).unwrap_or_default(),
                db.last_summary(&config.name).ok().flatten(),
            )
        };
        let pacing = lock(&ch.pacing).clone();
        let mut status = ChannelStatus {
            name: config.name.clone(),
            source: config.source.to_string(),
            kind: config.kind,
            schedule: config.schedule.as_ref().map(|s| s.to_string()),
            rate: pacing.0.to_string(),
            window: pacing.1.as_ref().map(|w| w.to_string()),
            limit_now: self.engine.fills.shaper.group_limit(ch.group),
            files_total: rows.len() as u64,
            files_present: 0,
            bytes_total: 0,
            bytes_present: 0,
            pinned_files: 0,
            quarantined: Vec::new(),
            errors: Vec::new(),
            running: None,
            last_run: last.and_then(|s| serde_json::from_str(&s).ok()),
            next_run: lock(&ch.next_run).map(|t| t.format("%Y-%m-%d %H:%M").to_string()),
        };
        for row in &rows {
            status.bytes_total += row.len.unwrap_or(0);
            let key = CacheKey::from_stored(row.key.clone());
            let stored = self.engine.store.get(&key).ok().flatten();
            if let Some(obj) = &stored
                && obj.is_complete()
            {
                status.files_present += 1;
                status.bytes_present += obj.len().unwrap_or(0);
                if obj.snapshot().pinned {
                    status.pinned_files += 1;
                }
            }
            let problem = || FileProblem {
                url: row.url.clone(),
                error: row.detail.clone().unwrap_or_default(),
                at: row.updated,
            };
            match row.state.as_str() {
                "quarantined" => status.quarantined.push(problem()),
                "error" if status.errors.len() < MAX_PROBLEMS => status.errors.push(problem()),
                _ => {}
            }
        }
        if let Some(r) = lock(&ch.run).as_ref() {
            let elapsed = r.started_at.elapsed().as_secs_f64().max(0.001);
            let mut active_bytes = 0;
            let active: Vec<ActiveFile> = r
                .active
                .iter()
                .map(|(url, (key, size))| {
                    let (bytes, len) = self
                        .engine
                        .store
                        .get(key)
                        .ok()
                        .flatten()
                        .map_or((0, *size), |o| {
                            (o.snapshot().present.covered(), o.len().or(*size))
                        });
                    active_bytes += bytes;
                    ActiveFile {
                        url: url.clone(),
                        bytes,
                        len,
                    }
                })
                .collect();
            let rate = r.fetched_bytes as f64 / elapsed;
            let bytes_done = r.bytes_done + active_bytes;
            let remaining = r.bytes_total.saturating_sub(bytes_done);
            let paused = status.limit_now == Some(0.0);
            status.running = Some(RunProgress {
                run: r.run,
                started: r.started,
                phase: if paused && r.phase == RunPhase::Syncing {
                    RunPhase::WaitingForWindow
                } else {
                    r.phase
                },
                files_total: r.files_total,
                files_done: r.files_done,
                bytes_total: r.bytes_total.max(bytes_done),
                bytes_done,
                rate,
                eta_secs: (rate > 1.0 && r.bytes_total > 0)
                    .then(|| (remaining as f64 / rate) as u64),
                active,
            });
        }
        status
    }
}

enum FileResult {
    Done(PrefetchOutcome),
    Quarantined,
    Failed,
    /// Fetched, but past max_bytes: not kept.
    OverLimit,
}

fn tally(summary: &mut RunSummary, done: Result<FileResult, tokio::task::JoinError>) {
    match done {
        Ok(FileResult::OverLimit) => summary.skipped += 1,
        Ok(FileResult::Done(PrefetchOutcome::Fetched)) => summary.fetched += 1,
        Ok(FileResult::Done(PrefetchOutcome::NotModified)) => summary.not_modified += 1,
        Ok(FileResult::Done(PrefetchOutcome::Unchanged)) => summary.unchanged += 1,
        Ok(FileResult::Quarantined) => summary.quarantined += 1,
        Ok(FileResult::Failed) | Err(_) => summary.failed += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(max_files: u64, max_bytes: Option<u64>) -> Budget {
        Budget {
            max_files,
            max_bytes,
            files: 0,
            bytes: 0,
            full: false,
            hits: LimitLog::default(),
        }
    }

    #[test]
    fn depth_counts_every_segment_below_the_base() {
        let base = Url::parse("http://h/pkgs/").unwrap();
        let depth = |p: &str| depth_below(&base.join(p).unwrap(), &base);
        assert_eq!(depth("/pkgs/"), 0);
        assert_eq!(depth("/pkgs/a/"), 1);
        assert_eq!(depth("/pkgs/a/b/"), 2);
        // Empty segments are levels too, or `a//...` would never end.
        assert_eq!(depth("/pkgs/a//"), 2);
        assert_eq!(depth("/pkgs/a////"), 4);
    }

    #[test]
    fn files_of_unknown_size_start_while_there_is_room_and_the_one_past_is_not_kept() {
        let mut b = budget(100, Some(250));
        let first = b.admit("u0", None, None).unwrap();
        assert!(b.settle(first, 100, "u0"));
        let second = b.admit("u1", None, None).unwrap();
        assert!(b.settle(second, 100, "u1"));
        let third = b.admit("u2", None, None).unwrap();
        assert!(!b.settle(third, 100, "u2"), "past max_bytes");
        assert_eq!((b.files, b.bytes), (2, 200));
        // Room is left, but the budget is full: nothing new starts.
        assert!(b.admit("u3", Some(10), None).is_none());
        assert_eq!(b.hits.0[0].url, "u2");
        assert_eq!(b.hits.0[0].times, 2);
    }

    #[test]
    fn held_files_count_first_and_are_refreshed_unless_they_grow_past_the_limit() {
        let mut b = budget(2, Some(1000));
        b.files = 2;
        b.bytes = 900;
        assert!(b.admit("new", Some(1), None).is_none(), "max_files");
        assert_eq!(b.hits.0[0].limit, "max_files");
        let same = b.admit("held", None, Some(400)).unwrap();
        assert!(b.settle(same, 400, "held"));
        assert_eq!(b.bytes, 900);
        assert!(
            b.admit("held", Some(600), Some(400)).is_none(),
            "grows past"
        );
        let shrinks = b.admit("held", Some(300), Some(400)).unwrap();
        assert!(b.settle(shrinks, 300, "held"));
        assert_eq!((b.files, b.bytes), (2, 800));
    }

    #[test]
    fn a_failed_file_gives_its_reservation_back() {
        let mut b = budget(1, Some(1000));
        let a = b.admit("u", Some(600), None).unwrap();
        assert_eq!((b.files, b.bytes), (1, 600));
        b.release(a);
        assert_eq!((b.files, b.bytes), (0, 0));
        assert!(b.admit("v", Some(1000), None).is_some());
    }
}
