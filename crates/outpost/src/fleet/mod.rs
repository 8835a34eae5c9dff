//! The edge's side of the fleet (issue 13): one task that enrols with the
//! manager, sends heartbeats at the manager's interval (±10 % jitter) with
//! the edge's report, long-polls for changes in parallel, applies managed
//! configs through the reload path, runs actions and reports their
//! results. The decisions are plain code in [`core`]; this module is the
//! tokio adapter around them.
//!
//! Invariants:
//! - the edge always calls the manager, never the reverse;
//! - nothing the manager does or fails to do changes what the edge serves,
//!   except a config that passed the same checks as `check-config` and was
//!   applied by a reload; a refused config leaves the running one and is
//!   reported with its error;
//! - the join token is used once: after enrolment the credential in
//!   `manager.json` (0600) is the edge's identity, and a restart (with the
//!   manager down too) runs the last applied `managed.toml`;
//! - a link state change is logged once, not once per retry.
//!
//! Actions are remembered by id while the edge runs; after a restart an
//! action the manager still lists as pending runs again (sync, purge, pin
//! and unpin are idempotent).

mod apply;
mod client;
mod core;
mod report;
mod state;
mod tls;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use outpost_channel::Channels;
use outpost_protocol::{EnrolRequest, Heartbeat, HeartbeatReply, ManagerLink, ManagerStatus};
use outpost_proxy::Engine;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use apply::ConfigTarget;

use crate::config::{JoinToken, ManagerConfig};
use client::ManagerClient;
use core::{CallError, FleetCore};
use state::Enrolment;

/// The manager link as `/status` shows it; `None` without a manager.
pub type StatusCell = Arc<Mutex<Option<ManagerStatus>>>;

/// After a long poll that brought nothing new this fast, wait this long
/// before the next: a manager that answers at once every time (a version
/// the edge refused, a pending edge) must not make the edge spin.
const MIN_POLL_GAP: Duration = Duration::from_secs(1);

pub struct Fleet {
    pub settings: ManagerConfig,
    pub target: ConfigTarget,
    pub engine: Arc<Engine>,
    pub channels: Arc<Channels>,
    pub status: StatusCell,
    pub started: Instant,
}

struct Link {
    fleet: Fleet,
    client: ManagerClient,
    credential: String,
    enrolment: Mutex<Enrolment>,
    core: Arc<Mutex<FleetCore>>,
    /// Wakes the heartbeat loop early: a config applied, an action done.
    report_now: Notify,
    /// One config applied at a time (the heartbeat and the long poll may
    /// both see a new version).
    applying: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A number from -1 to 1 for the heartbeat's jitter.
fn jitter() -> f64 {
    let n = getrandom::u32().unwrap_or(u32::MAX / 2);
    f64::from(n) / f64::from(u32::MAX) * 2.0 - 1.0
}

fn log_change(link: ManagerLink, core: &FleetCore) {
    let url = &core.url;
    let error = core.last_error.as_deref().unwrap_or("");
    match link {
        ManagerLink::Enrolled => {
            tracing::info!(manager = %url, site = %core.site, "connected to the fleet manager")
        }
        ManagerLink::Pending => {
            tracing::warn!(manager = %url, site = %core.site, "enrolled; waiting for an admin to approve this edge")
        }
        ManagerLink::Revoked => {
            tracing::error!(manager = %url, site = %core.site, error, "the fleet manager revoked this edge: no more heartbeats (one check every few minutes); the edge goes on serving its current config")
        }
        ManagerLink::Unreachable => {
            tracing::warn!(manager = %url, error, "fleet manager unreachable; retrying with backoff; the edge goes on serving its current config")
        }
        ManagerLink::Enrolling => {}
    }
}

impl Fleet {
    /// Runs the link until `shutdown`.
    pub fn spawn(self, shutdown: CancellationToken) {
        tokio::spawn(async move {
            tokio::select! {
                _ = self.run() => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }

    fn publish(&self, core: &FleetCore) {
        *lock(&self.status) = Some(core.status());
    }

    async fn run(self) {
        let settings = self.settings.clone();
        let stored = match state::load(&self.target.cache_dir) {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(error = %e, "the stored enrolment is unreadable; enrolling again");
                None
            }
        };
        let core = Arc::new(Mutex::new(FleetCore::new(
            settings.url.as_str().trim_end_matches('/').to_string(),
            settings.site.clone(),
            stored.as_ref().map_or(0, |s| s.applied_version),
        )));
        self.publish(&lock(&core));
        let enrolment = match stored {
            Some(mut stored) => {
                lock(&core).set_enrolled();
                if stored.site != settings.site {
                    tracing::warn!(enrolled = %stored.site, configured = %settings.site, "this edge enrolled under another site name; it keeps it (remove manager.json to enrol anew)");
                    lock(&core).site = stored.site.clone();
                }
                // A pin given now wins: the manager's certificate changed.
                if settings.fingerprint.is_some() {
                    stored.fingerprint = settings.fingerprint.clone();
                }
                stored.url = settings.url.to_string();
                stored
            }
            None => match self.enrol(&core).await {
                Some(enrolment) => enrolment,
                None => return,
            },
        };
        let client = match ManagerClient::new(&settings.url, enrolment.fingerprint.as_deref()) {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "cannot set up the manager client");
                return;
            }
        };
        let link = Arc::new(Link {
            credential: enrolment.credential.clone(),
            enrolment: Mutex::new(enrolment),
            fleet: self,
            client,
            core,
            report_now: Notify::new(),
            applying: tokio::sync::Mutex::new(()),
        });
        tokio::join!(link.clone().heartbeats(), link.clone().long_poll());
    }

    /// Enrols with the join token; retries with backoff until it works.
    /// `None` when there is no join token (said in the log and status).
    async fn enrol(&self, core: &Mutex<FleetCore>) -> Option<Enrolment> {
        let settings = &self.settings;
        let token = match &settings.join_token {
            Some(JoinToken::Inline(token)) => token.trim().to_string(),
            Some(JoinToken::File(path)) => match std::fs::read_to_string(path) {
                Ok(token) => token.trim().to_string(),
                Err(e) => {
                    let error = format!("cannot read the join token file {}: {e}", path.display());
                    return self.not_enrolled(core, error);
                }
            },
            None => {
                let error = "not enrolled and no join token: give --join-token or manager.join_token(_file) once".to_string();
                return self.not_enrolled(core, error);
            }
        };
        let client = match ManagerClient::new(&settings.url, settings.fingerprint.as_deref()) {
            Ok(client) => client,
            Err(e) => return self.not_enrolled(core, e),
        };
        let request = EnrolRequest {
            join_token: token,
            site: settings.site.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned(),
        };
        let mut logged: Option<String> = None;
        loop {
            match client.enrol(&request).await {
                Ok(reply) => {
                    let enrolment = Enrolment {
                        url: settings.url.to_string(),
                        site: reply.site.clone(),
                        credential: reply.credential,
                        fingerprint: settings.fingerprint.clone(),
                        applied_version: lock(core).applied_version,
                    };
                    if let Err(e) = state::save(&self.target.cache_dir, &enrolment) {
                        // Enrolled all the same; the next start enrols again
                        // (and needs the join token then).
                        tracing::error!(error = %e, "cannot store the enrolment");
                    }
                    tracing::info!(manager = %settings.url, site = %reply.site, approved = reply.approved, "enrolled with the fleet manager");
                    let mut core = lock(core);
                    core.set_enrolled();
                    core.heartbeat = Duration::from_millis(reply.heartbeat_ms.max(100));
                    core.last_contact = Some(now_secs());
                    core.last_error = None;
                    core.link = if reply.approved {
                        ManagerLink::Enrolled
                    } else {
                        ManagerLink::Pending
                    };
                    log_change(core.link, &core);
                    self.publish(&core);
                    return Some(enrolment);
                }
                Err(e) => {
                    let wait = {
                        let mut core = lock(core);
                        let (wait, _) = core.on_failure(&e);
                        self.publish(&core);
                        wait
                    };
                    let text = e.to_string();
                    if logged.as_deref() != Some(&text) {
                        tracing::error!(manager = %settings.url, error = %text, "cannot enrol with the fleet manager; retrying");
                        logged = Some(text);
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    fn not_enrolled(&self, core: &Mutex<FleetCore>, error: String) -> Option<Enrolment> {
        tracing::error!(error = %error, "fleet manager link not started");
        let mut core = lock(core);
        core.last_error = Some(error);
        self.publish(&core);
        None
    }
}

impl Link {
    fn publish(&self) {
        self.fleet.publish(&lock(&self.core));
    }

    /// A failed call: the wait before the next, logged on a state change.
    fn failed(&self, error: &CallError) -> Duration {
        let mut core = lock(&self.core);
        let (wait, change) = core.on_failure(error);
        if let Some(link) = change {
            log_change(link, &core);
        }
        self.fleet.publish(&core);
        wait
    }

    async fn heartbeats(self: Arc<Self>) {
        loop {
            let report =
                report::edge_report(&self.fleet.engine, &self.fleet.channels, self.fleet.started);
            let (config, action_results) = lock(&self.core).heartbeat_parts();
            let heartbeat = Heartbeat {
                report,
                config,
                action_results,
            };
            let wait = match self.client.heartbeat(&self.credential, &heartbeat).await {
                Ok(reply) => {
                    lock(&self.core).results_delivered(&heartbeat.action_results);
                    self.clone().answered(reply).await;
                    lock(&self.core).next_heartbeat(jitter())
                }
                Err(e) => self.failed(&e),
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.report_now.notified() => {}
            }
        }
    }

    async fn long_poll(self: Arc<Self>) {
        loop {
            let (polling, known, after) = {
                let core = lock(&self.core);
                // A refused version is known: asking with it waits for the
                // next one instead of returning at once.
                let known = core
                    .rejected
                    .as_ref()
                    .map_or(core.applied_version, |r| r.version);
                (
                    core.polling() && core.link != ManagerLink::Pending,
                    known,
                    core.after_action(),
                )
            };
            if !polling {
                // The heartbeats decide when the link is back.
                tokio::time::sleep(MIN_POLL_GAP).await;
                continue;
            }
            let asked = Instant::now();
            match self.client.wait(&self.credential, known, after).await {
                Ok(reply) => {
                    let busy = self.clone().answered(reply).await;
                    if !busy && asked.elapsed() < MIN_POLL_GAP {
                        tokio::time::sleep(MIN_POLL_GAP).await;
                    }
                }
                Err(e) => {
                    let wait = self.failed(&e);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Acts on an answer; whether it asked for anything.
    async fn answered(self: Arc<Self>, reply: HeartbeatReply) -> bool {
        let plan = {
            let mut core = lock(&self.core);
            let (plan, change) = core.on_reply(&reply, now_secs());
            if let Some(link) = change {
                log_change(link, &core);
            }
            self.fleet.publish(&core);
            plan
        };
        let busy = plan.fetch_config.is_some() || !plan.run.is_empty();
        for order in plan.run {
            let link = self.clone();
            tokio::spawn(async move {
                tracing::info!(action = %order.action, id = order.id, "running an action from the fleet manager");
                let result =
                    apply::run_action(&link.fleet.engine, &link.fleet.channels, &order).await;
                tracing::info!(id = result.id, ok = result.ok, detail = %result.detail, "action done");
                lock(&link.core).action_finished(result);
                link.report_now.notify_one();
            });
        }
        if plan.fetch_config.is_some() {
            self.apply_config().await;
        }
        busy
    }

    async fn apply_config(self: &Arc<Self>) {
        let _one = self.applying.lock().await;
        let desired = match self.client.config(&self.credential).await {
            Ok(desired) => desired,
            Err(e) => {
                self.failed(&e);
                return;
            }
        };
        let version = desired.version;
        {
            let core = lock(&self.core);
            let refused = core.rejected.as_ref().map(|r| r.version);
            if version == core.applied_version || Some(version) == refused {
                return;
            }
        }
        let link = self.clone();
        let outcome =
            tokio::task::spawn_blocking(move || link.fleet.target.apply(version, &desired.toml))
                .await
                .unwrap_or_else(|e| Err(format!("the apply task failed: {e}")));
        match outcome {
            Ok(applied) => {
                tracing::info!(version, ?applied, "applied the managed config");
                lock(&self.core).config_applied(version);
                let mut enrolment = lock(&self.enrolment);
                enrolment.applied_version = version;
                if let Err(e) = state::save(&self.fleet.target.cache_dir, &enrolment) {
                    tracing::error!(error = %e, "cannot record the applied version");
                }
            }
            Err(error) => {
                tracing::error!(version, %error, "refused the managed config; the running config stays");
                lock(&self.core).config_rejected(version, error);
            }
        }
        self.publish();
        self.report_now.notify_one();
    }
}
