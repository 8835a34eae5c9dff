//! What a heartbeat may hold. A report is kept in memory for every edge and
//! compared with the next one under the fleet's lock, so an edge (or anyone
//! holding a leaked join token) must not be able to make one heartbeat cost
//! the whole manager: every list and string has a bound, checked before the
//! lock is taken. The bounds are far above what a real edge sends (an edge
//! lists at most `MAX_MISSING_LISTED` missing paths and a few problems).

use outpost_protocol::{Heartbeat, MAX_MISSING_LISTED};

pub const MAX_CHANNELS: usize = 512;
pub const MAX_PROBLEMS: usize = 64;
pub const MAX_ACTION_RESULTS: usize = 1024;
pub const MAX_NAME: usize = 128;
pub const MAX_PATH: usize = 4096;
pub const MAX_TEXT: usize = 16 * 1024;

/// Why a heartbeat is refused, for the edge's log; `None` when it is
/// within every bound.
pub fn heartbeat_problem(hb: &Heartbeat) -> Option<String> {
    let report = &hb.report;
    let too_long = |what: &str, s: &str, max: usize| {
        (s.len() > max).then(|| format!("{what} is {} bytes, at most {max}", s.len()))
    };
    let too_many =
        |what: &str, n: usize, max: usize| (n > max).then(|| format!("{n} {what}, at most {max}"));
    if let Some(p) = too_long("version", &report.version, MAX_NAME)
        .or_else(|| too_many("channels", report.channels.len(), MAX_CHANNELS))
        .or_else(|| {
            too_many(
                "action results",
                hb.action_results.len(),
                MAX_ACTION_RESULTS,
            )
        })
    {
        return Some(p);
    }
    if let Some(r) = &hb.config.rejected
        && let Some(p) = too_long("the config refusal", &r.error, MAX_TEXT)
    {
        return Some(p);
    }
    for result in &hb.action_results {
        if let Some(p) = too_long("an action result", &result.detail, MAX_TEXT) {
            return Some(p);
        }
    }
    let mut names = std::collections::HashSet::new();
    for ch in &report.channels {
        if let Some(p) = too_long("a channel name", &ch.name, MAX_NAME)
            .or_else(|| too_many("missing paths", ch.missing.len(), MAX_MISSING_LISTED))
            .or_else(|| too_many("problems", ch.problems.len(), MAX_PROBLEMS))
        {
            return Some(format!("channel {:?}: {p}", truncate(&ch.name)));
        }
        if !names.insert(ch.name.as_str()) {
            return Some(format!(
                "channel {:?} is reported twice",
                truncate(&ch.name)
            ));
        }
        for path in &ch.missing {
            if let Some(p) = too_long("a missing path", path, MAX_PATH) {
                return Some(p);
            }
        }
        for problem in &ch.problems {
            if let Some(p) = too_long("a problem's URL", &problem.url, MAX_PATH)
                .or_else(|| too_long("a problem's error", &problem.error, MAX_TEXT))
            {
                return Some(p);
            }
        }
    }
    None
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::{AppliedConfig, ChannelReport, EdgeReport};

    fn channel(name: &str) -> ChannelReport {
        ChannelReport {
            name: name.into(),
            syncing: false,
            files_total: 1,
            files_present: 1,
            files_syncing: 0,
            files_failed: 0,
            files_quarantined: 0,
            bytes_total: 1,
            bytes_present: 1,
            last_result: None,
            last_finished: None,
            missing: Vec::new(),
            missing_truncated: false,
            problems: Vec::new(),
        }
    }

    fn heartbeat(channels: Vec<ChannelReport>) -> Heartbeat {
        Heartbeat {
            report: EdgeReport {
                version: "0.1.0".into(),
                uptime_seconds: 1,
                disk_used: 0,
                disk_limit: 1,
                hit_ratio_bytes: 0.0,
                wan_bytes_in: 0,
                lan_bytes_out: 0,
                bytes_saved: 0,
                active_fills: 0,
                channels,
            },
            config: AppliedConfig::default(),
            action_results: Vec::new(),
        }
    }

    #[test]
    fn a_real_sized_report_passes() {
        let mut ch = channel("apps");
        ch.missing = (0..MAX_MISSING_LISTED)
            .map(|i| format!("f{i}.msi"))
            .collect();
        let channels = (0..20)
            .map(|i| {
                let mut c = ch.clone();
                c.name = format!("c{i}");
                c
            })
            .collect();
        assert_eq!(heartbeat_problem(&heartbeat(channels)), None);
    }

    #[test]
    fn oversized_lists_and_strings_are_refused() {
        let many = (0..=MAX_CHANNELS)
            .map(|i| channel(&format!("c{i}")))
            .collect();
        assert!(
            heartbeat_problem(&heartbeat(many))
                .unwrap()
                .contains("channels")
        );
        let mut ch = channel("apps");
        ch.missing = vec!["x".into(); MAX_MISSING_LISTED + 1];
        assert!(
            heartbeat_problem(&heartbeat(vec![ch]))
                .unwrap()
                .contains("missing")
        );
        let twice = vec![channel("apps"), channel("apps")];
        assert!(
            heartbeat_problem(&heartbeat(twice))
                .unwrap()
                .contains("twice")
        );
        let long = channel(&"n".repeat(MAX_NAME + 1));
        assert!(
            heartbeat_problem(&heartbeat(vec![long]))
                .unwrap()
                .contains("name")
        );
    }
}
