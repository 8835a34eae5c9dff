//! Channel sync runs and their schedules: the channels' configuration,
//! starting, reconfiguring and scheduling runs, and waiting for them.
//! The work is split by job: `source` (listing), `budget` (limits),
//! `run` (one run and its files), `status` (what the admin API shows).

mod budget;
mod exporting;
mod freshness;
mod library;
mod report;
mod run;
mod source;
mod status;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use outpost_http::CacheKey;
pub use outpost_protocol::{
    ActiveFile, ChannelStatus, FileProblem, LimitHit, RunPhase, RunProgress, RunSummary, SourceKind,
};
use outpost_proxy::Engine;
use outpost_shaper::{BucketId, Rate, RateRule, RateSchedule, TimeWindow};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::ChannelError;
use crate::cron::CronSchedule;
use crate::filter::PathFilter;
use crate::state::{ChannelDb, FileRow};

pub use freshness::{DEFAULT_GRACE, Revalidate};

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
    /// The channel came from a fleet manager, not the edge's own file: its
    /// source is fetched through the destination guard, as a client's
    /// request is (loopback, link-local and the edge's own addresses only
    /// where the edge's `internal_destinations` allows).
    pub managed: bool,
    /// Who PCs' requests for the channel's files are checked with.
    pub revalidate: Revalidate,
    /// With `Revalidate::Sync`: how long after the next scheduled sync a
    /// file stays fresh.
    pub revalidate_grace: Duration,
    /// Keep a plain read-only tree of the channel's files here after
    /// every complete sync (see [`crate::export`]).
    pub export: Option<std::path::PathBuf>,
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

impl ChannelConfig {
    /// A channel with the defaults of a `[[channel]]` table that gives only
    /// `name` and `source`: a listing if the source ends in `/`, else a
    /// manifest; everything included, no schedule, no rate limit or
    /// window, digests verified, two files at once, default limits,
    /// `revalidate = "sync"` with [`DEFAULT_GRACE`], no export, not
    /// managed. Set other fields with struct update syntax
    /// (`ChannelConfig { concurrency: 8, ..ChannelConfig::new(name, url) }`).
    ///
    /// One difference from the file: `limits.max_bytes` is `None` here,
    /// while the configuration bounds it by default to half the cache,
    /// which a channel alone does not know.
    pub fn new(name: impl Into<String>, source: Url) -> Self {
        let kind = if source.path().ends_with('/') {
            SourceKind::Listing
        } else {
            SourceKind::Manifest
        };
        Self {
            name: name.into(),
            source,
            kind,
            include: Vec::new(),
            exclude: Vec::new(),
            schedule: None,
            rate: Rate::UNLIMITED,
            window: None,
            verify: true,
            aliases: Vec::new(),
            concurrency: 2,
            limits: ChannelLimits::default(),
            managed: false,
            revalidate: Revalidate::Sync,
            revalidate_grace: DEFAULT_GRACE,
            export: None,
        }
    }

    /// How the source may be reached: a managed channel's through the
    /// destination guard.
    pub fn reach(&self) -> outpost_proxy::upstream::Reach {
        if self.managed {
            outpost_proxy::upstream::Reach::Guarded
        } else {
            outpost_proxy::upstream::Reach::Configured
        }
    }

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
    /// The number of the last finished run. Shared with the channel that
    /// replaces this one, so that a waiter for a run of the old one wakes.
    finished: Arc<watch::Sender<u64>>,
    next_run: Mutex<Option<chrono::NaiveDateTime>>,
    /// Cancelled when a reload removes or replaces the channel: its
    /// schedule ends and its running sync stops.
    retired: CancellationToken,
}

/// The channels of one edge.
pub struct Channels {
    engine: Arc<Engine>,
    db: Mutex<ChannelDb>,
    /// The live channels; a reload swaps entries (a running sync holds its
    /// own `Arc` to the channel it runs for).
    channels: Mutex<Vec<Arc<Channel>>>,
    /// Shaper buckets of removed channels, reused by the next one added:
    /// the shaper has no way to drop a bucket.
    spare_groups: Mutex<Vec<BucketId>>,
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
        let this = Arc::new(Self {
            engine,
            db: Mutex::new(db),
            channels: Mutex::new(Vec::new()),
            spare_groups: Mutex::new(Vec::new()),
        });
        let mut resume = Vec::new();
        let mut channels = Vec::new();
        for config in configs {
            // One read of the channel's rows serves both: digests and
            // quarantines, then freshness grants.
            let rows = lock(&this.db).files(&config.name)?;
            this.restore_file_states(&rows);
            this.restore_freshness_from(&config, &rows);
            if lock(&this.db).take_interrupted(&config.name, now_secs())? {
                resume.push(config.name.clone());
            }
            channels.push(this.new_channel(config, None)?);
        }
        *lock(&this.channels) = channels.clone();
        for ch in channels {
            this.start_schedule(ch);
        }
        for name in resume {
            tracing::info!(channel = %name, "resuming a sync interrupted by the last stop");
            let _ = this.sync(&name);
        }
        Ok(this)
    }

    /// Re-applies what the database says of a channel's files (`rows`) to
    /// the store: expected digests and quarantines.
    fn restore_file_states(&self, rows: &[FileRow]) {
        for row in rows {
            if let Some(expected) = &row.expected_sha256 {
                // A manifest's digest binds every copy of the file the
                // edge stores, PCs' fills included, across restarts.
                self.engine
                    .store
                    .expect_digest(&CacheKey::from_stored(row.key.clone()), Some(expected));
            }
            if row.state == "quarantined" {
                self.engine.set_quarantined(
                    &CacheKey::from_stored(row.key.clone()),
                    row.detail.clone().or(Some("digest mismatch".into())),
                );
            }
        }
    }

    /// A channel with its shaper bucket: `previous`'s (a replacement), a
    /// spare one, or a new one.
    fn new_channel(
        &self,
        config: ChannelConfig,
        previous: Option<&Channel>,
    ) -> Result<Arc<Channel>, ChannelError> {
        let filter = PathFilter::new(&config.include, &config.exclude)?;
        let shaper = &self.engine.fills.shaper;
        let group = match previous
            .map(|p| p.group)
            .or_else(|| lock(&self.spare_groups).pop())
        {
            Some(group) => {
                shaper.set_group(group, config.shaper_schedule());
                group
            }
            None => shaper.add_group(config.shaper_schedule()),
        };
        let finished = match previous {
            Some(p) => p.finished.clone(),
            None => Arc::new(watch::channel(0).0),
        };
        Ok(Arc::new(Channel {
            pacing: Mutex::new((config.rate, config.window.clone())),
            limits: Mutex::new(config.limits),
            config,
            group,
            filter,
            run: Mutex::new(None),
            finished,
            next_run: Mutex::new(None),
            retired: CancellationToken::new(),
        }))
    }

    fn start_schedule(self: &Arc<Self>, ch: Arc<Channel>) {
        if ch.config.schedule.is_some() {
            let this = self.clone();
            tokio::spawn(async move { this.schedule_loop(ch).await });
        }
    }

    /// Applies a new configuration's channels, all live: the rate, window
    /// and limits of a channel are changed in place (a running sync goes
    /// on); a channel with another source, kind, filter, schedule, verify
    /// or concurrency is replaced (its running sync is stopped, what it
    /// holds stays pinned, and the new one syncs at once); a new channel
    /// starts and syncs at once; a removed one stops, and what it held
    /// becomes ordinary cache (see [`Channels::forget`]). Returns what
    /// changed, for a person.
    pub fn reconfigure(self: &Arc<Self>, configs: &[ChannelConfig]) -> Vec<String> {
        let mut changes = Vec::new();
        let mut started = Vec::new();
        let mut removed = Vec::new();
        {
            let mut live = lock(&self.channels);
            let mut next = Vec::with_capacity(configs.len());
            for new in configs {
                let Some(ch) = live.iter().find(|c| c.config.name == new.name).cloned() else {
                    match self.new_channel(new.clone(), None) {
                        Ok(ch) => {
                            // A channel added again finds its rows gone
                            // (`forget`) unless it came back before its
                            // removal finished: vouch for what it holds.
                            self.restore_freshness(new);
                            changes.push(format!("channel {:?} added", new.name));
                            started.push(ch.clone());
                            next.push(ch);
                        }
                        Err(e) => {
                            // Checked at load: a pattern that fails here
                            // is a bug, not a reason to stop the others.
                            tracing::error!(channel = %new.name, error = %e, "cannot add the channel");
                        }
                    }
                    continue;
                };
                if ch.config.same_shape(new) {
                    self.retune(&ch, new, &mut changes);
                    next.push(ch);
                    continue;
                }
                match self.new_channel(new.clone(), Some(&ch)) {
                    Ok(replacement) => {
                        ch.retired.cancel();
                        // `revalidate` or the schedule may have changed.
                        self.restore_freshness(new);
                        changes.push(format!("channel {:?} replaced", new.name));
                        tracing::info!(channel = %new.name, "channel replaced: its running sync stops, the new one syncs now");
                        started.push(replacement.clone());
                        next.push(replacement);
                    }
                    Err(e) => {
                        tracing::error!(channel = %new.name, error = %e, "cannot replace the channel; the old one stays");
                        next.push(ch);
                    }
                }
            }
            for ch in live.iter() {
                if !configs.iter().any(|c| c.name == ch.config.name) {
                    ch.retired.cancel();
                    changes.push(format!("channel {:?} removed", ch.config.name));
                    removed.push(ch.clone());
                }
            }
            *live = next;
        }
        for ch in removed {
            let this = self.clone();
            tokio::spawn(async move {
                ch.idle().await;
                this.forget(&ch);
            });
        }
        for ch in started {
            self.start_schedule(ch.clone());
            if let Err(e) = self.sync_channel(&ch) {
                tracing::error!(channel = %ch.config.name, error = %e, "cannot start the first sync");
            }
        }
        changes
    }

    /// Changes a channel's rate, window and limits in place.
    fn retune(&self, ch: &Channel, new: &ChannelConfig, changes: &mut Vec<String>) {
        let mut limits = lock(&ch.limits);
        if *limits != new.limits {
            *limits = new.limits;
            tracing::info!(channel = %new.name, limits = ?new.limits, "channel limits changed");
            changes.push(format!("channel {:?} limits", new.name));
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
            changes.push(format!("channel {:?} rate and window", new.name));
        }
    }

    /// Drops a removed channel: the files it held are unpinned (unless
    /// another channel holds them), its quarantines and expected digests
    /// are lifted, and its rows and run history are deleted. The files stay
    /// in the cache as ordinary, evictable copies: were the channel added
    /// again, its first sync revalidates them instead of fetching them
    /// anew. Rows are not kept because nothing would keep them true while
    /// no channel syncs them. Skipped if a channel of the same name was
    /// added again meanwhile (it owns the rows now).
    fn forget(&self, ch: &Channel) {
        let name = &ch.config.name;
        if lock(&self.channels).iter().any(|c| &c.config.name == name) {
            return;
        }
        let db = lock(&self.db);
        let rows = match db.files(name) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(channel = %name, error = %e, "cannot read the removed channel's files");
                return;
            }
        };
        for row in &rows {
            let key = CacheKey::from_stored(row.key.clone());
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
            self.engine.set_sync_fresh(&key, None);
        }
        if let Err(e) = db.forget_channel(name) {
            tracing::error!(channel = %name, error = %e, "cannot drop the removed channel's rows");
        }
        lock(&self.spare_groups).push(ch.group);
        tracing::info!(channel = %name, files = rows.len(), "channel removed: its files are ordinary cache now");
    }

    pub fn names(&self) -> Vec<String> {
        lock(&self.channels)
            .iter()
            .map(|c| c.config.name.clone())
            .collect()
    }

    /// The live channels, in configuration order.
    fn live(&self) -> Vec<Arc<Channel>> {
        lock(&self.channels).clone()
    }

    fn channel(&self, name: &str) -> Result<Arc<Channel>, ChannelError> {
        lock(&self.channels)
            .iter()
            .find(|c| c.config.name == name)
            .cloned()
            .ok_or_else(|| ChannelError::Unknown(name.to_string()))
    }

    /// Starts a sync of `name` unless one runs; returns the run's number.
    pub fn sync(self: &Arc<Self>, name: &str) -> Result<u64, ChannelError> {
        let ch = self.channel(name)?;
        self.sync_channel(&ch)
    }

    fn sync_channel(self: &Arc<Self>, ch: &Arc<Channel>) -> Result<u64, ChannelError> {
        let name = &ch.config.name;
        if ch.retired.is_cancelled() {
            return Err(ChannelError::Unknown(name.clone()));
        }
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
        let ch = ch.clone();
        tokio::spawn(async move {
            let summary = this.run(&ch, id, started).await;
            tracing::info!(channel = %ch.config.name, run = id, result = %summary.result, files = summary.files, fetched = summary.fetched, fetched_bytes = summary.fetched_bytes, "channel sync finished");
            let json = serde_json::to_string(&summary).unwrap_or_default();
            if let Err(e) = lock(&this.db).finish_run(&ch.config.name, id, summary.finished, &json)
            {
                tracing::error!(channel = %ch.config.name, error = %e, "cannot record sync result");
            }
            // Still part of the run: a waiter for it finds the tree in
            // place, and no other run starts meanwhile.
            this.export_after(&ch, &summary).await;
            *lock(&ch.run) = None;
            // A replaced channel's run may end after its successor's.
            ch.finished.send_modify(|done| *done = (*done).max(id));
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
                tokio::select! {
                    _ = tokio::time::sleep(left.min(Duration::from_secs(30))) => {}
                    _ = ch.retired.cancelled() => return,
                }
            }
            match self.sync_channel(&ch) {
                Ok(_) => ch.idle().await,
                Err(_) if ch.retired.is_cancelled() => return,
                Err(e) => {
                    tracing::error!(channel = %ch.config.name, error = %e, "cannot start scheduled sync")
                }
            }
        }
    }
}

impl ChannelConfig {
    /// Whether `other` can be applied to a channel in place (only its
    /// rate, window or limits differ). Aliases are the proxy's host map,
    /// not the channel's: they never need a new channel.
    fn same_shape(&self, other: &ChannelConfig) -> bool {
        self.source == other.source
            && self.kind == other.kind
            && self.include == other.include
            && self.exclude == other.exclude
            && self.schedule == other.schedule
            && self.verify == other.verify
            && self.concurrency == other.concurrency
            && self.managed == other.managed
            && self.revalidate == other.revalidate
            && self.revalidate_grace == other.revalidate_grace
            && self.export == other.export
    }
}

impl Channel {
    /// Waits until no run of this channel is going on.
    async fn idle(&self) {
        let mut rx = self.finished.subscribe();
        loop {
            if lock(&self.run).is_none() {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}
