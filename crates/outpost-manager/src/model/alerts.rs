//! Alert conditions over the fleet: which are true now, and what opens or
//! closes against the alerts already open. Plain data in, plain data out.

use std::collections::{BTreeMap, BTreeSet};

use outpost_protocol::{EdgeReport, EdgeState, SyncResult};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Two heartbeats missed.
    SiteDown,
    /// More than 90 % of the cache's limit used.
    DiskFull,
    /// A channel's last sync failed (or ended with errors).
    SyncFailed,
    /// Files quarantined for a digest mismatch.
    DigestMismatch,
    /// The edge refused the managed config.
    ConfigRejected,
    /// The edge runs another version than the manager.
    VersionSkew,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SiteDown => "site_down",
            Self::DiskFull => "disk_full",
            Self::SyncFailed => "sync_failed",
            Self::DigestMismatch => "digest_mismatch",
            Self::ConfigRejected => "config_rejected",
            Self::VersionSkew => "version_skew",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::SiteDown,
            Self::DiskFull,
            Self::SyncFailed,
            Self::DigestMismatch,
            Self::ConfigRejected,
            Self::VersionSkew,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// One alert's identity: a site, a kind, and what it is about (a channel
/// name, or empty).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AlertKey {
    pub site: String,
    pub kind: AlertKind,
    pub subject: String,
}

/// What the evaluator needs of an edge.
pub struct EdgeView<'a> {
    pub site: &'a str,
    pub state: EdgeState,
    pub version: Option<&'a str>,
    pub config_error: Option<&'a str>,
    pub report: Option<&'a EdgeReport>,
}

/// Every condition true now, with a detail for a person.
pub fn conditions<'a>(
    edges: impl IntoIterator<Item = EdgeView<'a>>,
    manager_version: &str,
) -> BTreeMap<AlertKey, String> {
    let mut out = BTreeMap::new();
    for edge in edges {
        // A revoked or pending edge is an admin's decision, not an alert.
        if matches!(edge.state, EdgeState::Revoked | EdgeState::Pending) {
            continue;
        }
        let mut add = |kind, subject: &str, detail: String| {
            out.insert(
                AlertKey {
                    site: edge.site.to_string(),
                    kind,
                    subject: subject.to_string(),
                },
                detail,
            );
        };
        if edge.state == EdgeState::Down {
            add(AlertKind::SiteDown, "", "two heartbeats missed".into());
        }
        if let Some(error) = edge.config_error {
            add(AlertKind::ConfigRejected, "", error.to_string());
        }
        if let Some(version) = edge.version.filter(|v| *v != manager_version) {
            add(
                AlertKind::VersionSkew,
                "",
                format!("edge runs {version}, manager {manager_version}"),
            );
        }
        let Some(report) = edge.report else { continue };
        if report.disk_limit > 0 && report.disk_used as u128 * 10 > report.disk_limit as u128 * 9 {
            add(
                AlertKind::DiskFull,
                "",
                format!(
                    "{} of {} bytes used ({:.0} %)",
                    report.disk_used,
                    report.disk_limit,
                    report.disk_used as f64 * 100.0 / report.disk_limit as f64
                ),
            );
        }
        for ch in &report.channels {
            if matches!(
                ch.last_result,
                Some(SyncResult::Failed | SyncResult::Errors)
            ) {
                let why = ch
                    .problems
                    .first()
                    .map(|p| format!(": {} {}", p.url, p.error))
                    .unwrap_or_default();
                add(
                    AlertKind::SyncFailed,
                    &ch.name,
                    format!(
                        "last sync of {}: {}{why}",
                        ch.name,
                        ch.last_result.map(|r| r.as_str()).unwrap_or("")
                    ),
                );
            }
            if ch.files_quarantined > 0 {
                add(
                    AlertKind::DigestMismatch,
                    &ch.name,
                    format!("{} files of {} quarantined", ch.files_quarantined, ch.name),
                );
            }
        }
    }
    out
}

/// What changes: alerts to open (not open yet) and keys to close (open,
/// no longer true).
pub fn changes(
    open: &BTreeSet<AlertKey>,
    now_true: &BTreeMap<AlertKey, String>,
) -> (Vec<(AlertKey, String)>, Vec<AlertKey>) {
    let to_open = now_true
        .iter()
        .filter(|(k, _)| !open.contains(*k))
        .map(|(k, d)| (k.clone(), d.clone()))
        .collect();
    let to_close = open
        .iter()
        .filter(|k| !now_true.contains_key(*k))
        .cloned()
        .collect();
    (to_open, to_close)
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::ChannelReport;

    fn report(used: u64, limit: u64) -> EdgeReport {
        EdgeReport {
            version: "1".into(),
            uptime_seconds: 0,
            disk_used: used,
            disk_limit: limit,
            hit_ratio_bytes: 0.0,
            wan_bytes_in: 0,
            lan_bytes_out: 0,
            bytes_saved: 0,
            active_fills: 0,
            channels: vec![ChannelReport {
                name: "apps".into(),
                syncing: false,
                files_total: 1,
                files_present: 0,
                files_syncing: 0,
                files_failed: 1,
                files_quarantined: 1,
                bytes_total: 0,
                bytes_present: 0,
                last_result: Some(SyncResult::Errors),
                last_finished: None,
                missing: vec![],
                missing_truncated: false,
                problems: vec![],
            }],
        }
    }

    fn kinds(c: &BTreeMap<AlertKey, String>) -> Vec<AlertKind> {
        c.keys().map(|k| k.kind).collect()
    }

    #[test]
    fn every_condition_is_found() {
        let r = report(91, 100);
        let c = conditions(
            [EdgeView {
                site: "a",
                state: EdgeState::Down,
                version: Some("0.9"),
                config_error: Some("bad"),
                report: Some(&r),
            }],
            "1.0",
        );
        assert_eq!(
            kinds(&c),
            [
                AlertKind::SiteDown,
                AlertKind::DiskFull,
                AlertKind::SyncFailed,
                AlertKind::DigestMismatch,
                AlertKind::ConfigRejected,
                AlertKind::VersionSkew
            ]
        );
    }

    #[test]
    fn ninety_percent_is_not_yet_full_and_revoked_edges_are_quiet() {
        let mut r = report(90, 100);
        r.channels.clear();
        let view = |state| EdgeView {
            site: "a",
            state,
            version: Some("1.0"),
            config_error: None,
            report: Some(&r),
        };
        assert!(conditions([view(EdgeState::Up)], "1.0").is_empty());
        assert!(conditions([view(EdgeState::Revoked)], "2.0").is_empty());
    }

    #[test]
    fn changes_open_new_and_close_gone() {
        let key = |kind| AlertKey {
            site: "a".into(),
            kind,
            subject: String::new(),
        };
        let open: BTreeSet<_> = [key(AlertKind::SiteDown), key(AlertKind::DiskFull)].into();
        let now: BTreeMap<_, _> = [
            (key(AlertKind::DiskFull), "x".to_string()),
            (key(AlertKind::VersionSkew), "y".to_string()),
        ]
        .into();
        let (o, c) = changes(&open, &now);
        assert_eq!(o, [(key(AlertKind::VersionSkew), "y".to_string())]);
        assert_eq!(c, [key(AlertKind::SiteDown)]);
    }
}
