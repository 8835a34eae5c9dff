//! "Is package X ready at every site?": a channel's (or one file's) state
//! per site from the edges' last reports.
//!
//! Conservative by design: a deployment gates on `ready`, so anything the
//! manager cannot vouch for (no report yet, the channel not yet run, a
//! file beyond the edge's truncated missing list) is not complete.

use outpost_protocol::{
    ChannelReport, EdgeState, Readiness, ReadinessState, SiteReadiness, SyncResult,
};

/// One site the channel is assigned to, as the manager knows it.
pub struct SiteInput<'a> {
    pub site: &'a str,
    pub edge_state: EdgeState,
    /// The edge sent at least one heartbeat.
    pub reported: bool,
    /// The channel in the edge's last report, if there.
    pub channel: Option<&'a ChannelReport>,
}

pub fn readiness<'a>(
    channel: &str,
    path: Option<&str>,
    sites: impl IntoIterator<Item = SiteInput<'a>>,
) -> Readiness {
    let sites: Vec<SiteReadiness> = sites
        .into_iter()
        .map(|input| site_readiness(&input, path))
        .collect();
    Readiness {
        channel: channel.to_string(),
        path: path.map(str::to_string),
        ready: !sites.is_empty() && sites.iter().all(|s| s.state == ReadinessState::Complete),
        sites,
    }
}

pub fn site_readiness(input: &SiteInput<'_>, path: Option<&str>) -> SiteReadiness {
    let mut out = SiteReadiness {
        site: input.site.to_string(),
        state: ReadinessState::Missing,
        edge_state: input.edge_state,
        files_present: 0,
        files_total: 0,
        bytes_present: 0,
        bytes_total: 0,
        detail: None,
    };
    let Some(ch) = input.channel else {
        out.detail = Some(if input.reported {
            "the edge does not run this channel yet".into()
        } else {
            "no heartbeat from the edge yet".into()
        });
        return out;
    };
    let (state, detail) = match path {
        None => {
            out.files_present = ch.files_present;
            out.files_total = ch.files_total;
            out.bytes_present = ch.bytes_present;
            out.bytes_total = ch.bytes_total;
            channel_state(ch)
        }
        Some(path) => {
            let (state, detail) = file_state(ch, path);
            if state == ReadinessState::Complete {
                out.files_present = 1;
            }
            out.files_total = 1;
            (state, detail)
        }
    };
    out.state = state;
    out.detail = detail;
    out
}

fn failed(result: Option<SyncResult>) -> bool {
    matches!(result, Some(SyncResult::Failed | SyncResult::Errors))
}

fn first_problem(ch: &ChannelReport) -> Option<String> {
    ch.problems
        .first()
        .map(|p| format!("{}: {}", p.url, p.error))
}

fn channel_state(ch: &ChannelReport) -> (ReadinessState, Option<String>) {
    use ReadinessState::*;
    if ch.files_quarantined > 0 {
        let detail = first_problem(ch).unwrap_or_else(|| {
            format!(
                "{} files quarantined (digest mismatch)",
                ch.files_quarantined
            )
        });
        return (Quarantined, Some(detail));
    }
    if ch.syncing && ch.files_syncing > 0 {
        return (
            Syncing,
            Some(format!("{} files to fetch", ch.files_syncing)),
        );
    }
    if ch.files_total > 0 && ch.files_present >= ch.files_total {
        return (Complete, None);
    }
    if ch.files_total == 0 && ch.last_result == Some(SyncResult::Ok) {
        // The source lists nothing: nothing is missing.
        return (Complete, None);
    }
    if failed(ch.last_result) {
        let detail = first_problem(ch).unwrap_or_else(|| {
            format!(
                "last sync: {}",
                ch.last_result.map(|r| r.as_str()).unwrap_or("failed")
            )
        });
        return (Failed, Some(detail));
    }
    if ch.syncing {
        return (Syncing, Some("listing the source".into()));
    }
    if ch.files_total == 0 {
        return (Missing, Some("not synced yet".into()));
    }
    (
        Missing,
        Some(format!(
            "{} of {} files missing",
            ch.files_total - ch.files_present,
            ch.files_total
        )),
    )
}

fn file_state(ch: &ChannelReport, path: &str) -> (ReadinessState, Option<String>) {
    use ReadinessState::*;
    let path = path.trim_start_matches('/');
    let suffix = format!("/{path}");
    if let Some(problem) = ch
        .problems
        .iter()
        .find(|p| p.url == path || p.url.ends_with(&suffix))
    {
        let lower = problem.error.to_ascii_lowercase();
        let state = if lower.contains("digest") || lower.contains("quarantin") {
            Quarantined
        } else {
            Failed
        };
        return (state, Some(problem.error.clone()));
    }
    if ch.missing.iter().any(|m| m.trim_start_matches('/') == path) {
        return if ch.syncing {
            (Syncing, Some("being fetched".into()))
        } else if failed(ch.last_result) {
            (Failed, Some("missing after a failed sync".into()))
        } else {
            (Missing, Some("listed but not present".into()))
        };
    }
    if ch.files_total == 0 {
        return (Missing, Some("not synced yet".into()));
    }
    if ch.missing_truncated {
        return (
            Missing,
            Some("the edge's list of missing files is truncated: cannot tell".into()),
        );
    }
    (Complete, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::FileProblem;

    fn report(total: u64, present: u64) -> ChannelReport {
        ChannelReport {
            name: "apps".into(),
            syncing: false,
            files_total: total,
            files_present: present,
            files_syncing: 0,
            files_failed: 0,
            files_quarantined: 0,
            bytes_total: total * 10,
            bytes_present: present * 10,
            last_result: Some(SyncResult::Ok),
            last_finished: Some(1),
            missing: vec![],
            missing_truncated: false,
            problems: vec![],
        }
    }

    fn input<'a>(site: &'a str, ch: Option<&'a ChannelReport>) -> SiteInput<'a> {
        SiteInput {
            site,
            edge_state: EdgeState::Up,
            reported: true,
            channel: ch,
        }
    }

    #[test]
    fn ready_only_when_every_site_is_complete() {
        let done = report(3, 3);
        let mut partial = report(3, 1);
        partial.syncing = true;
        partial.files_syncing = 2;
        partial.missing = vec!["b.msi".into(), "c.msi".into()];
        let r = readiness(
            "apps",
            None,
            [input("a", Some(&done)), input("b", Some(&partial))],
        );
        assert!(!r.ready);
        assert_eq!(r.sites[0].state, ReadinessState::Complete);
        assert_eq!(r.sites[1].state, ReadinessState::Syncing);
        assert_eq!((r.sites[1].files_present, r.sites[1].bytes_total), (1, 30));
        let r = readiness("apps", None, [input("a", Some(&done))]);
        assert!(r.ready);
        assert!(!readiness("apps", None, []).ready, "no site is not ready");
    }

    #[test]
    fn failed_quarantined_and_missing_say_why() {
        let mut bad = report(2, 1);
        bad.last_result = Some(SyncResult::Errors);
        bad.problems = vec![FileProblem {
            url: "http://o/apps/b.msi".into(),
            error: "404 Not Found".into(),
            at: 1,
        }];
        let s = site_readiness(&input("a", Some(&bad)), None);
        assert_eq!(s.state, ReadinessState::Failed);
        assert_eq!(
            s.detail.as_deref(),
            Some("http://o/apps/b.msi: 404 Not Found")
        );
        let mut q = report(2, 1);
        q.files_quarantined = 1;
        assert_eq!(
            site_readiness(&input("a", Some(&q)), None).state,
            ReadinessState::Quarantined
        );
        let none = site_readiness(&input("a", None), None);
        assert_eq!(none.state, ReadinessState::Missing);
        let mut never = input("a", None);
        never.reported = false;
        assert_eq!(
            site_readiness(&never, None).detail.as_deref(),
            Some("no heartbeat from the edge yet")
        );
    }

    #[test]
    fn one_file_from_the_missing_list_and_problems() {
        let mut ch = report(3, 1);
        ch.syncing = true;
        ch.files_syncing = 1;
        ch.missing = vec!["sub/b.msi".into()];
        ch.problems = vec![FileProblem {
            url: "http://o/apps/c.msi".into(),
            error: "digest mismatch".into(),
            at: 1,
        }];
        let state = |ch: &ChannelReport, p| site_readiness(&input("a", Some(ch)), Some(p)).state;
        assert_eq!(state(&ch, "a.msi"), ReadinessState::Complete);
        assert_eq!(state(&ch, "/sub/b.msi"), ReadinessState::Syncing);
        assert_eq!(state(&ch, "c.msi"), ReadinessState::Quarantined);
        ch.missing_truncated = true;
        assert_eq!(state(&ch, "a.msi"), ReadinessState::Missing);
    }
}
