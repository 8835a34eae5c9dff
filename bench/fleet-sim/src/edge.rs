//! One simulated edge: enrols with the join token, then does what the
//! real edge's manager client does (docs/manager.md): a heartbeat every
//! interval with jitter, a long poll held all the time, and on a new
//! desired version a config fetch followed at once by a heartbeat that
//! reports it applied. Actions are answered "done" in the next heartbeat.
//!
//! The simulated edge applies whatever config it gets (it has no proxy to
//! reload): what it measures is the manager's side of the protocol.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http::{Method, StatusCode};
use outpost_protocol::{
    ActionResult, AppliedConfig, DesiredConfig, EnrolReply, EnrolRequest, Heartbeat, HeartbeatReply,
};
use tokio::task::JoinHandle;

use crate::client::{Answer, Conn, Link, Target};
use crate::progress::Progress;
use crate::report::{Shape, edge_report, mix};

/// What every simulated edge shares.
pub struct Fleet {
    pub target: Target,
    pub shape: Shape,
    /// Overrides the manager's interval when set.
    pub heartbeat_override: Option<Duration>,
    /// Each interval is the base times 1 ± this.
    pub jitter: f64,
    /// Keep the heartbeat connection between heartbeats only when the
    /// interval is shorter than this; else close it at once, to keep each
    /// process within its descriptors (see `--keep-idle`).
    pub keep_idle: Duration,
    pub stats: EdgeStats,
    /// The edges that have applied a version above a baseline, and when.
    pub applied: Progress,
    /// The edges that have fetched a version above a baseline, and when
    /// (before the heartbeat that reports it).
    pub fetched: Progress,
    /// The highest config version any edge reported applied.
    pub max_applied: AtomicU64,
    pub started: Instant,
    /// Unix seconds at the start: sync times in reports count from it, so
    /// an edge's report changes only where its state does (a real edge's
    /// last sync time moves when a run ends, not at every heartbeat).
    pub started_unix: i64,
}

impl Fleet {
    /// The running totals, for progress notes.
    pub fn counts(&self) -> String {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let s = &self.stats;
        format!(
            "{} heartbeats ({} errors), {} long polls returned ({} errors), {} config fetches ({} errors), {} connects ({} failed)",
            n(&s.heartbeats),
            n(&s.heartbeat_errors),
            n(&s.waits),
            n(&s.wait_errors),
            n(&s.config_fetches),
            n(&s.config_errors),
            n(&self.target.counters.connects),
            n(&self.target.counters.connect_errors),
        )
    }

    pub fn applied_max(&self) -> u64 {
        self.max_applied.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub struct EdgeStats {
    /// Heartbeat latencies are kept only while this is set (the
    /// steady-state window).
    pub recording: AtomicBool,
    pub heartbeat_latency: Mutex<Vec<Duration>>,
    /// The window's heartbeats that had to connect first (the manager
    /// closed the idle connection): how many of the above.
    pub heartbeat_reconnects: AtomicU64,
    /// Latencies of the heartbeats sent on a kept connection.
    pub heartbeat_latency_kept: Mutex<Vec<Duration>>,
    pub heartbeats: AtomicU64,
    pub heartbeat_errors: AtomicU64,
    pub waits: AtomicU64,
    pub wait_errors: AtomicU64,
    pub config_fetches: AtomicU64,
    pub config_errors: AtomicU64,
    pub refused: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl EdgeStats {
    fn error(&self, counter: &AtomicU64, error: &anyhow::Error) {
        counter.fetch_add(1, Ordering::Relaxed);
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(format!("{error:#}"));
    }
}

pub struct SimEdge {
    pub index: usize,
    credential: String,
    applied_version: u64,
    after_action: u64,
    finished_actions: Vec<ActionResult>,
    heartbeat_interval: Duration,
    beats: u64,
    source: Option<std::net::IpAddr>,
    /// The edge's one HTTP/2 connection, when it speaks HTTP/2.
    link: Option<Link>,
    control: Conn,
    long_poll: Option<Conn>,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longer than any long poll the manager holds (at most 25 s).
const WAIT_TIMEOUT: Duration = Duration::from_secs(60);

/// `POST /edge/v1/enrol`, on the connection the edge then keeps for its
/// heartbeats.
pub async fn enrol(
    fleet: &Fleet,
    index: usize,
    site: String,
    join_token: &str,
    source: Option<std::net::IpAddr>,
) -> anyhow::Result<(SimEdge, Duration)> {
    let link = fleet.target.shares_connection().then(Link::default);
    let new_conn = |link: &Option<Link>| match link {
        Some(link) => Conn::shared(source, link.clone()),
        None => Conn::new(source),
    };
    let mut control = new_conn(&link);
    let body = serde_json::to_vec(&EnrolRequest {
        join_token: join_token.to_owned(),
        site: site.clone(),
        version: concat!("fleet-sim ", env!("CARGO_PKG_VERSION")).to_owned(),
        hostname: format!("{site}.sim"),
    })?;
    let start = Instant::now();
    let answer = control
        .send(
            &fleet.target,
            Method::POST,
            "/edge/v1/enrol",
            None,
            Some(body.into()),
            CALL_TIMEOUT,
        )
        .await?;
    let took = start.elapsed();
    let reply: EnrolReply = answer.json().with_context(|| format!("enrolling {site}"))?;
    let heartbeat_interval = fleet
        .heartbeat_override
        .unwrap_or(Duration::from_millis(reply.heartbeat_ms.max(100)));
    if heartbeat_interval >= fleet.keep_idle {
        control.close();
    }
    Ok((
        SimEdge {
            index,
            credential: reply.credential,
            applied_version: 0,
            after_action: 0,
            finished_actions: Vec::new(),
            heartbeat_interval,
            beats: 0,
            source,
            long_poll: Some(new_conn(&link)),
            link,
            control,
        },
        took,
    ))
}

/// The long poll runs as its own task: a future merely held in the
/// select below is not polled while a heartbeat runs, and one that had a
/// connect permit in hand would keep it, so that heartbeats waiting for
/// permits and suspended long polls holding them could starve each other.
type LongPoll = JoinHandle<(Conn, anyhow::Result<Answer>)>;

impl SimEdge {
    /// Runs until the process ends, or until the manager refuses the
    /// edge (revoked).
    pub async fn run(mut self, fleet: Arc<Fleet>) {
        let mut long_poll: Option<LongPoll> = None;
        self.run_until_refused(&fleet, &mut long_poll).await;
        if let Some(poll) = long_poll {
            poll.abort();
        }
    }

    async fn run_until_refused(&mut self, fleet: &Arc<Fleet>, long_poll: &mut Option<LongPoll>) {
        // Spread the first heartbeats over one interval, as edges started
        // at different times would be.
        let phase = unit(mix(self.index as u64 ^ 0x5eed));
        let mut next_heartbeat =
            tokio::time::Instant::now() + self.heartbeat_interval.mul_f64(phase);
        loop {
            if long_poll.is_none() {
                let conn = self.long_poll.take().unwrap_or_else(|| self.new_conn());
                *long_poll = Some(tokio::spawn(wait(
                    fleet.clone(),
                    conn,
                    self.credential.clone(),
                    self.applied_version,
                    self.after_action,
                )));
            }
            let Some(poll) = long_poll.as_mut() else {
                continue;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(next_heartbeat) => {
                    self.beats += 1;
                    let roll = unit(mix(((self.index as u64) << 24) ^ self.beats));
                    let jitter = 1.0 + fleet.jitter * (2.0 * roll - 1.0);
                    next_heartbeat += self.heartbeat_interval.mul_f64(jitter.max(0.1));
                    if !self.heartbeat_and_follow(fleet).await {
                        return;
                    }
                    self.release_idle_control(fleet);
                }
                joined = poll => {
                    *long_poll = None;
                    let (conn, result) = joined.unwrap_or_else(|e| {
                        (self.new_conn(), Err(anyhow::anyhow!("long poll task: {e}")))
                    });
                    self.long_poll = Some(conn);
                    fleet.stats.waits.fetch_add(1, Ordering::Relaxed);
                    match result.and_then(|a| refused_or(a, fleet)) {
                        Ok(Some(reply)) => {
                            if self.follow(fleet, &reply).await && !self.heartbeat_and_follow(fleet).await {
                                return;
                            }
                            self.release_idle_control(fleet);
                        }
                        Ok(None) => return,
                        Err(e) => {
                            fleet.stats.error(&fleet.stats.wait_errors, &e);
                            // Not a hot loop against a manager that is down.
                            tokio::time::sleep(Duration::from_millis(500 + mix(self.index as u64) % 1000)).await;
                        }
                    }
                }
            }
        }
    }

    fn new_conn(&self) -> Conn {
        match &self.link {
            Some(link) => Conn::shared(self.source, link.clone()),
            None => Conn::new(self.source),
        }
    }

    fn release_idle_control(&mut self, fleet: &Fleet) {
        if self.heartbeat_interval >= fleet.keep_idle {
            self.control.close();
        }
    }

    /// Sends a heartbeat and follows its answer (config, actions) with
    /// more heartbeats while there is news. False once refused.
    async fn heartbeat_and_follow(&mut self, fleet: &Fleet) -> bool {
        for _ in 0..3 {
            match self.heartbeat(fleet).await {
                Ok(Some(reply)) => {
                    if !self.follow(fleet, &reply).await {
                        return true;
                    }
                }
                Ok(None) => return false,
                Err(e) => {
                    fleet.stats.error(&fleet.stats.heartbeat_errors, &e);
                    return true;
                }
            }
        }
        true
    }

    /// Acts on a reply: fetches a new config, takes new actions. True
    /// when there is something to report at once.
    async fn follow(&mut self, fleet: &Fleet, reply: &HeartbeatReply) -> bool {
        let mut news = false;
        if reply.approved && reply.desired_config_version != self.applied_version {
            match self.fetch_config(fleet).await {
                Ok(version) => {
                    fleet.fetched.record(self.index, version);
                    self.applied_version = version;
                    news = true;
                }
                Err(e) => fleet.stats.error(&fleet.stats.config_errors, &e),
            }
        }
        for order in &reply.actions {
            if order.id > self.after_action {
                self.after_action = order.id;
                self.finished_actions.push(ActionResult {
                    id: order.id,
                    ok: true,
                    detail: format!("{}: done (simulated)", order.action),
                });
                news = true;
            }
        }
        news
    }

    async fn fetch_config(&mut self, fleet: &Fleet) -> anyhow::Result<u64> {
        fleet.stats.config_fetches.fetch_add(1, Ordering::Relaxed);
        let answer = self
            .control
            .send(
                &fleet.target,
                Method::GET,
                "/edge/v1/config",
                Some(&self.credential),
                None,
                CALL_TIMEOUT,
            )
            .await?;
        let config: DesiredConfig = answer.json()?;
        Ok(config.version)
    }

    /// Ok(None): the manager refused this edge (revoked).
    async fn heartbeat(&mut self, fleet: &Fleet) -> anyhow::Result<Option<HeartbeatReply>> {
        let report = edge_report(
            self.index,
            fleet.started.elapsed().as_secs(),
            fleet.started_unix,
            &fleet.shape,
        );
        let heartbeat = Heartbeat {
            report,
            config: AppliedConfig {
                applied_version: self.applied_version,
                rejected: None,
            },
            action_results: self.finished_actions.clone(),
        };
        let body = Bytes::from(serde_json::to_vec(&heartbeat)?);
        let start = Instant::now();
        let answer = self
            .control
            .send(
                &fleet.target,
                Method::POST,
                "/edge/v1/heartbeat",
                Some(&self.credential),
                Some(body),
                CALL_TIMEOUT,
            )
            .await?;
        let took = start.elapsed();
        let new_connection = answer.new_connection;
        let Some(reply) = refused_or(answer, fleet)? else {
            return Ok(None);
        };
        fleet.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
        if fleet.stats.recording.load(Ordering::Relaxed) {
            fleet
                .stats
                .heartbeat_latency
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(took);
            if new_connection {
                fleet
                    .stats
                    .heartbeat_reconnects
                    .fetch_add(1, Ordering::Relaxed);
            } else {
                fleet
                    .stats
                    .heartbeat_latency_kept
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(took);
            }
        }
        self.finished_actions.clear();
        fleet.applied.record(self.index, self.applied_version);
        fleet
            .max_applied
            .fetch_max(self.applied_version, Ordering::Relaxed);
        if fleet.heartbeat_override.is_none() && reply.heartbeat_ms > 0 {
            self.heartbeat_interval = Duration::from_millis(reply.heartbeat_ms);
        }
        Ok(Some(reply))
    }
}

/// The reply of a heartbeat or long poll; None when the manager refuses
/// the edge for good (401/403).
fn refused_or(answer: Answer, fleet: &Fleet) -> anyhow::Result<Option<HeartbeatReply>> {
    if matches!(
        answer.status,
        StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED
    ) {
        fleet.stats.refused.fetch_add(1, Ordering::Relaxed);
        return Ok(None);
    }
    answer.json().map(Some)
}

async fn wait(
    fleet: Arc<Fleet>,
    mut conn: Conn,
    credential: String,
    config_version: u64,
    after_action: u64,
) -> (Conn, anyhow::Result<Answer>) {
    let path = format!("/edge/v1/wait?config_version={config_version}&after_action={after_action}");
    let result = conn
        .send(
            &fleet.target,
            Method::GET,
            &path,
            Some(&credential),
            None,
            WAIT_TIMEOUT,
        )
        .await;
    (conn, result)
}

/// A hash as a number in [0, 1).
fn unit(hash: u64) -> f64 {
    (hash >> 11) as f64 / (1u64 << 53) as f64
}
