//! The fleet link's decisions, without I/O: what state the link is in,
//! what a manager's answer asks the edge to do, how long to wait before the
//! next call, which action results still have to be reported, and when a
//! change deserves a log line. Time comes in as an argument (`now`, Unix
//! seconds) and randomness as a number (`jitter`, from -1 to 1), so every
//! decision is a plain function call in tests.

use std::collections::BTreeSet;
use std::time::Duration;

use outpost_protocol::{
    ActionOrder, ActionResult, AppliedConfig, ConfigRejection, HeartbeatReply, ManagerLink,
    ManagerStatus,
};

/// Jitter on the heartbeat interval: ±10 %, so that edges started together
/// (a power cut, a fleet roll-out) spread out.
const JITTER: f64 = 0.10;
/// First retry after a failed call; doubled per failure up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A revoked edge asks again this rarely (an admin may restore it, or the
/// refusal was a manager's mistake), not at its heartbeat.
const REVOKED_RETRY: Duration = Duration::from_secs(300);
/// The heartbeat interval until the manager sets one.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);

/// Why a call to the manager failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No answer: connection refused, timeout, TLS (a certificate that is
    /// not the pinned one).
    Unreachable(String),
    /// The manager refused the edge's credential (403): revoked.
    Revoked(String),
    /// Any other refusal or an answer the edge cannot read.
    Refused(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(e) => write!(f, "manager unreachable: {e}"),
            Self::Revoked(e) => write!(f, "the manager refuses this edge (revoked): {e}"),
            Self::Refused(e) => write!(f, "the manager refused the call: {e}"),
        }
    }
}

/// What an answer asks the edge to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Fetch and apply this config version.
    pub fetch_config: Option<u64>,
    /// Actions not started yet, oldest first.
    pub run: Vec<ActionOrder>,
}

/// The link's state and the edge's side of the protocol.
#[derive(Debug)]
pub struct FleetCore {
    pub url: String,
    pub site: String,
    pub link: ManagerLink,
    pub heartbeat: Duration,
    pub last_contact: Option<i64>,
    pub applied_version: u64,
    pub rejected: Option<ConfigRejection>,
    pub last_error: Option<String>,
    /// Holds a credential (enrolled now or before a restart).
    enrolled: bool,
    failures: u32,
    started_actions: BTreeSet<u64>,
    /// Finished, not yet in an answered heartbeat.
    results: Vec<ActionResult>,
}

impl FleetCore {
    pub fn new(url: String, site: String, applied_version: u64) -> Self {
        Self {
            url,
            site,
            link: ManagerLink::Enrolling,
            heartbeat: DEFAULT_HEARTBEAT,
            last_contact: None,
            applied_version,
            rejected: None,
            last_error: None,
            enrolled: false,
            failures: 0,
            started_actions: BTreeSet::new(),
            results: Vec::new(),
        }
    }

    /// The block `/status` shows.
    pub fn status(&self) -> ManagerStatus {
        ManagerStatus {
            url: self.url.clone(),
            site: self.site.clone(),
            state: self.link,
            last_contact: self.last_contact,
            applied_version: self.applied_version,
            last_error: self.last_error.clone(),
        }
    }

    /// The edge holds a credential: from here a failed call makes the
    /// link unreachable, not "still enrolling".
    pub fn set_enrolled(&mut self) {
        self.enrolled = true;
    }

    /// The highest action id seen: the long poll's `after_action`.
    pub fn after_action(&self) -> u64 {
        self.started_actions.last().copied().unwrap_or(0)
    }

    /// Whether calls other than the rare revocation check make sense.
    pub fn polling(&self) -> bool {
        !matches!(self.link, ManagerLink::Revoked | ManagerLink::Enrolling)
    }

    /// What a heartbeat carries besides the report.
    pub fn heartbeat_parts(&self) -> (AppliedConfig, Vec<ActionResult>) {
        (
            AppliedConfig {
                applied_version: self.applied_version,
                rejected: self.rejected.clone(),
            },
            self.results.clone(),
        )
    }

    /// An answer came (to a heartbeat or a long poll). Returns the plan, and
    /// the new link state when it changed (worth a log line).
    pub fn on_reply(&mut self, reply: &HeartbeatReply, now: i64) -> (Plan, Option<ManagerLink>) {
        let before = self.link;
        self.last_contact = Some(now);
        self.failures = 0;
        if reply.heartbeat_ms > 0 {
            self.heartbeat = Duration::from_millis(reply.heartbeat_ms);
        }
        self.link = if reply.approved {
            ManagerLink::Enrolled
        } else {
            ManagerLink::Pending
        };
        if matches!(
            self.last_error.as_deref(),
            Some(e) if e.starts_with("manager unreachable") || e.starts_with("the manager refuse")
        ) {
            self.last_error = None;
        }
        let mut plan = Plan::default();
        // A version refused once is not fetched again until another one is
        // published: the edge would refuse it again, on every answer.
        let refused = self.rejected.as_ref().map(|r| r.version);
        if reply.approved
            && reply.desired_config_version != self.applied_version
            && Some(reply.desired_config_version) != refused
        {
            plan.fetch_config = Some(reply.desired_config_version);
        }
        for order in &reply.actions {
            if self.started_actions.insert(order.id) {
                plan.run.push(order.clone());
            }
        }
        (plan, (before != self.link).then_some(self.link))
    }

    /// A heartbeat carrying `sent` was answered: those results are
    /// delivered.
    pub fn results_delivered(&mut self, sent: &[ActionResult]) {
        self.results.retain(|r| !sent.iter().any(|s| s.id == r.id));
    }

    pub fn action_finished(&mut self, result: ActionResult) {
        self.results.push(result);
    }

    /// A call failed; returns how long to wait before the next one, and
    /// the new link state when it changed.
    pub fn on_failure(&mut self, error: &CallError) -> (Duration, Option<ManagerLink>) {
        let before = self.link;
        self.last_error = Some(error.to_string());
        let wait = match error {
            CallError::Revoked(_) => {
                self.link = ManagerLink::Revoked;
                REVOKED_RETRY.max(self.heartbeat)
            }
            CallError::Unreachable(_) | CallError::Refused(_) => {
                if self.enrolled {
                    self.link = ManagerLink::Unreachable;
                }
                self.failures = self.failures.saturating_add(1);
                self.backoff()
            }
        };
        (wait, (before != self.link).then_some(self.link))
    }

    fn backoff(&self) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(16);
        (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
    }

    /// The wait before the next heartbeat after a successful one; `jitter`
    /// from -1 to 1.
    pub fn next_heartbeat(&self, jitter: f64) -> Duration {
        let factor = 1.0 + JITTER * jitter.clamp(-1.0, 1.0);
        self.heartbeat.mul_f64(factor)
    }

    pub fn config_applied(&mut self, version: u64) {
        self.applied_version = version;
        self.rejected = None;
        if self
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("config version"))
        {
            self.last_error = None;
        }
    }

    pub fn config_rejected(&mut self, version: u64, error: String) {
        self.last_error = Some(format!("config version {version} rejected: {error}"));
        self.rejected = Some(ConfigRejection { version, error });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::FleetAction;

    fn reply(version: u64, actions: &[u64]) -> HeartbeatReply {
        HeartbeatReply {
            desired_config_version: version,
            heartbeat_ms: 2000,
            approved: true,
            actions: actions
                .iter()
                .map(|&id| ActionOrder {
                    id,
                    action: FleetAction::Sync {
                        channel: "apps".into(),
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn a_new_version_is_fetched_and_a_refused_one_is_not_fetched_again() {
        let mut core = FleetCore::new("u".into(), "s".into(), 1);
        let (plan, change) = core.on_reply(&reply(2, &[]), 100);
        assert_eq!(
            (plan.fetch_config, change),
            (Some(2), Some(ManagerLink::Enrolled))
        );
        core.config_rejected(2, "bad".into());
        assert_eq!(core.on_reply(&reply(2, &[]), 101).0.fetch_config, None);
        assert_eq!(core.heartbeat_parts().0.rejected.unwrap().version, 2);
        assert_eq!(core.on_reply(&reply(3, &[]), 102).0.fetch_config, Some(3));
        core.config_applied(3);
        assert_eq!(
            core.heartbeat_parts().0,
            AppliedConfig {
                applied_version: 3,
                rejected: None
            }
        );
        assert_eq!(core.on_reply(&reply(3, &[]), 103).0.fetch_config, None);
        assert_eq!(core.heartbeat, Duration::from_millis(2000));
    }

    #[test]
    fn an_action_runs_once_and_its_result_is_sent_until_delivered() {
        let mut core = FleetCore::new("u".into(), "s".into(), 0);
        assert_eq!(core.on_reply(&reply(0, &[4, 5]), 1).0.run.len(), 2);
        assert_eq!(core.on_reply(&reply(0, &[4, 5, 6]), 2).0.run.len(), 1);
        assert_eq!(core.after_action(), 6);
        let done = ActionResult {
            id: 4,
            ok: true,
            detail: "run 1 finished: ok".into(),
        };
        core.action_finished(done.clone());
        let (_, sent) = core.heartbeat_parts();
        assert_eq!(sent, vec![done.clone()]);
        core.action_finished(ActionResult {
            id: 5,
            ok: false,
            detail: "x".into(),
        });
        core.results_delivered(&sent);
        assert_eq!(
            core.heartbeat_parts()
                .1
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>(),
            vec![5]
        );
    }

    #[test]
    fn failures_back_off_log_once_per_change_and_revocation_slows_down() {
        let mut core = FleetCore::new("u".into(), "s".into(), 0);
        let down = CallError::Unreachable("connection refused".into());
        assert_eq!(core.on_failure(&down).1, None, "still enrolling");
        core.set_enrolled();
        let (wait, change) = core.on_failure(&down);
        assert_eq!(
            (wait, change),
            (Duration::from_secs(2), Some(ManagerLink::Unreachable))
        );
        let (wait, change) = core.on_failure(&down);
        assert_eq!((wait, change), (Duration::from_secs(4), None));
        for _ in 0..20 {
            core.on_failure(&down);
        }
        assert_eq!(core.on_failure(&down).0, MAX_BACKOFF);
        assert_eq!(core.status().state, ManagerLink::Unreachable);
        let (_, change) = core.on_reply(&reply(0, &[]), 50);
        assert_eq!(change, Some(ManagerLink::Enrolled));
        assert_eq!(core.status().last_error, None);
        let (wait, change) = core.on_failure(&CallError::Revoked("edge revoked".into()));
        assert_eq!((wait, change), (REVOKED_RETRY, Some(ManagerLink::Revoked)));
        assert!(!core.polling());
        assert!(core.status().last_error.unwrap().contains("revoked"));
    }

    #[test]
    fn heartbeats_jitter_by_ten_percent_and_pending_fetches_no_config() {
        let mut core = FleetCore::new("u".into(), "s".into(), 0);
        let mut pending = reply(3, &[]);
        pending.approved = false;
        let (plan, change) = core.on_reply(&pending, 1);
        assert_eq!(
            (plan.fetch_config, change),
            (None, Some(ManagerLink::Pending))
        );
        assert_eq!(core.next_heartbeat(1.0), Duration::from_millis(2200));
        assert_eq!(core.next_heartbeat(-1.0), Duration::from_millis(1800));
        assert_eq!(core.next_heartbeat(7.0), Duration::from_millis(2200));
    }
}
