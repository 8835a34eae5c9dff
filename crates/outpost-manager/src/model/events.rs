//! What a heartbeat tells that is worth keeping in a site's history: a
//! config version applied or refused, a sync run finished.

use outpost_protocol::{AppliedConfig, ChannelReport, EdgeReport};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteEvent {
    pub site: String,
    /// Unix seconds.
    pub at: i64,
    /// `config` or `sync`.
    pub kind: String,
    pub detail: String,
}

fn sync_detail(ch: &ChannelReport) -> String {
    format!(
        "{}: {} ({}/{} files)",
        ch.name,
        ch.last_result.map(|r| r.as_str()).unwrap_or("finished"),
        ch.files_present,
        ch.files_total
    )
}

/// The events between the edge's previous heartbeat and this one.
pub fn events(
    site: &str,
    at: i64,
    before: (Option<&EdgeReport>, &AppliedConfig),
    after: (&EdgeReport, &AppliedConfig),
) -> Vec<SiteEvent> {
    let mut out = Vec::new();
    let mut push = |kind: &str, detail: String| {
        out.push(SiteEvent {
            site: site.to_string(),
            at,
            kind: kind.to_string(),
            detail,
        })
    };
    let (old_config, new_config) = (before.1, after.1);
    if new_config.applied_version != old_config.applied_version && new_config.applied_version > 0 {
        push(
            "config",
            format!("applied version {}", new_config.applied_version),
        );
    }
    if new_config.rejected != old_config.rejected
        && let Some(r) = &new_config.rejected
    {
        push(
            "config",
            format!("refused version {}: {}", r.version, r.error),
        );
    }
    // By name, so a report's cost is linear in its channels.
    let previous_finish: std::collections::HashMap<&str, Option<i64>> = before
        .0
        .map(|r| {
            r.channels
                .iter()
                .map(|c| (c.name.as_str(), c.last_finished))
                .collect()
        })
        .unwrap_or_default();
    for ch in &after.0.channels {
        let Some(finished) = ch.last_finished else {
            continue;
        };
        let previous = previous_finish.get(ch.name.as_str()).copied().flatten();
        // The first report after a manager start is not news: only a
        // finish time that moves is a run that ended.
        if before.0.is_some() && previous != Some(finished) {
            push("sync", sync_detail(ch));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::{ConfigRejection, SyncResult};

    fn report(finished: Option<i64>) -> EdgeReport {
        EdgeReport {
            version: "1".into(),
            uptime_seconds: 0,
            disk_used: 0,
            disk_limit: 0,
            hit_ratio_bytes: 0.0,
            wan_bytes_in: 0,
            lan_bytes_out: 0,
            bytes_saved: 0,
            active_fills: 0,
            channels: vec![ChannelReport {
                name: "apps".into(),
                syncing: false,
                files_total: 2,
                files_present: 2,
                files_syncing: 0,
                files_failed: 0,
                files_quarantined: 0,
                bytes_total: 0,
                bytes_present: 0,
                last_result: Some(SyncResult::Ok),
                last_finished: finished,
                missing: vec![],
                missing_truncated: false,
                problems: vec![],
            }],
        }
    }

    #[test]
    fn applied_refused_and_finished_runs_are_events() {
        let none = AppliedConfig::default();
        let v2 = AppliedConfig {
            applied_version: 2,
            rejected: Some(ConfigRejection {
                version: 3,
                error: "bad".into(),
            }),
        };
        let e = events(
            "s",
            9,
            (Some(&report(Some(1))), &none),
            (&report(Some(5)), &v2),
        );
        let details: Vec<&str> = e.iter().map(|e| e.detail.as_str()).collect();
        assert_eq!(
            details,
            [
                "applied version 2",
                "refused version 3: bad",
                "apps: ok (2/2 files)"
            ]
        );
        assert!(
            events(
                "s",
                9,
                (Some(&report(Some(5))), &v2),
                (&report(Some(5)), &v2)
            )
            .is_empty()
        );
        assert!(events("s", 9, (None, &v2), (&report(Some(5)), &v2)).is_empty());
    }
}
