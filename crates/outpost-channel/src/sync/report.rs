//! A channel's state as a fleet manager reads it ([`ChannelReport`]): how
//! many of the files its last listing named are present, which are
//! missing (by path below the source), and the first problems.

use outpost_http::CacheKey;
use outpost_protocol::{ChannelReport, FileProblem, MAX_MISSING_LISTED, RunSummary};

use super::{Channel, Channels, lock};

/// Problems listed per channel in a report.
const MAX_PROBLEMS_REPORTED: usize = 10;

impl Channels {
    /// Every live channel's report.
    pub fn fleet_report(&self) -> Vec<ChannelReport> {
        self.live()
            .iter()
            .map(|ch| self.channel_report(ch))
            .collect()
    }

    fn channel_report(&self, ch: &Channel) -> ChannelReport {
        let config = &ch.config;
        let (rows, last) = {
            let db = lock(&self.db);
            (
                db.files(&config.name).unwrap_or_default(),
                db.last_summary(&config.name).ok().flatten(),
            )
        };
        let last: Option<RunSummary> = last.and_then(|s| serde_json::from_str(&s).ok());
        let base = config.base();
        let mut report = ChannelReport {
            name: config.name.clone(),
            syncing: false,
            files_total: rows.len() as u64,
            files_present: 0,
            files_syncing: 0,
            files_failed: 0,
            files_quarantined: 0,
            bytes_total: 0,
            bytes_present: 0,
            last_result: last.as_ref().map(|s| s.result),
            last_finished: last.as_ref().map(|s| s.finished),
            missing: Vec::new(),
            missing_truncated: false,
            problems: Vec::new(),
        };
        for row in &rows {
            report.bytes_total += row.len.unwrap_or(0);
            let key = CacheKey::from_stored(row.key.clone());
            let present = self
                .engine
                .store
                .get(&key)
                .ok()
                .flatten()
                .filter(|o| o.is_complete());
            match &present {
                Some(obj) if row.state != "quarantined" => {
                    report.files_present += 1;
                    report.bytes_present += obj.len().unwrap_or(0);
                }
                _ if report.missing.len() < MAX_MISSING_LISTED => {
                    let path = row
                        .url
                        .strip_prefix(base.as_str())
                        .unwrap_or(&row.url)
                        .to_string();
                    report.missing.push(path);
                }
                _ => report.missing_truncated = true,
            }
            match row.state.as_str() {
                "quarantined" => report.files_quarantined += 1,
                "error" => report.files_failed += 1,
                _ => continue,
            }
            if report.problems.len() < MAX_PROBLEMS_REPORTED {
                report.problems.push(FileProblem {
                    url: row.url.clone(),
                    error: row.detail.clone().unwrap_or_default(),
                    at: row.updated,
                });
            }
        }
        if let Some(r) = lock(&ch.run).as_ref() {
            report.syncing = true;
            report.files_syncing = r.files_total.saturating_sub(r.files_done);
            // The running listing may name more than the rows so far.
            report.files_total = report.files_total.max(r.files_total);
            report.bytes_total = report.bytes_total.max(r.bytes_total);
        }
        report
    }
}
