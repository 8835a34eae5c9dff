//! Channel sync runs and their schedules: the channels' configuration,
//! starting, reconfiguring and scheduling runs, and waiting for them.
//! The work is split by job: `source` (listing), `budget` (limits),
//! `run` (one run and its files), `status` (what the admin API shows).

mod budget;
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
use url::Url;

use crate::ChannelError;
use crate::cron::CronSchedule;
use crate::filter::PathFilter;
use crate::state::ChannelDb;

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
}
