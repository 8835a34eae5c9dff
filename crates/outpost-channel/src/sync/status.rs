//! A channel's state as the admin API shows it: the files it holds, the
//! last run's summary and the progress of the run going on (with a time
//! to go at the current rate).

use outpost_http::CacheKey;
use outpost_protocol::{ActiveFile, ChannelStatus, FileProblem, RunPhase, RunProgress};

use super::{Channel, Channels, lock};

/// Problems kept per channel for status.
const MAX_PROBLEMS: usize = 50;

impl Channels {
    /// Every channel's state.
    pub fn status(&self) -> Vec<ChannelStatus> {
        self.live()
            .iter()
            .map(|ch| self.channel_status(ch))
            .collect()
    }

    fn channel_status(&self, ch: &Channel) -> ChannelStatus {
        let config = &ch.config;
        let (rows, last) = {
            let db = lock(&self.db);
            (
                db.files(&config.name).unwrap_or_default(),
                db.last_summary(&config.name).ok().flatten(),
            )
        };
        let pacing = lock(&ch.pacing).clone();
        let mut status = ChannelStatus {
            name: config.name.clone(),
            source: config.source.to_string(),
            kind: config.kind,
            schedule: config.schedule.as_ref().map(|s| s.to_string()),
            rate: pacing.0.to_string(),
            window: pacing.1.as_ref().map(|w| w.to_string()),
            limit_now: self.engine.fills.shaper.group_limit(ch.group),
            files_total: rows.len() as u64,
            files_present: 0,
            bytes_total: 0,
            bytes_present: 0,
            pinned_files: 0,
            quarantined: Vec::new(),
            errors: Vec::new(),
            running: None,
            last_run: last.and_then(|s| serde_json::from_str(&s).ok()),
            next_run: lock(&ch.next_run).map(|t| t.format("%Y-%m-%d %H:%M").to_string()),
            export: self.last_export(&config.name),
        };
        for row in &rows {
            status.bytes_total += row.len.unwrap_or(0);
            let key = CacheKey::from_stored(row.key.clone());
            let stored = self.engine.store.get(&key).ok().flatten();
            if let Some(obj) = &stored
                && obj.is_complete()
            {
                status.files_present += 1;
                status.bytes_present += obj.len().unwrap_or(0);
                if obj.snapshot().pinned {
                    status.pinned_files += 1;
                }
            }
            let problem = || FileProblem {
                url: row.url.clone(),
                error: row.detail.clone().unwrap_or_default(),
                at: row.updated,
            };
            match row.state.as_str() {
                "quarantined" => status.quarantined.push(problem()),
                "error" if status.errors.len() < MAX_PROBLEMS => status.errors.push(problem()),
                _ => {}
            }
        }
        if let Some(r) = lock(&ch.run).as_ref() {
            let elapsed = r.started_at.elapsed().as_secs_f64().max(0.001);
            let mut active_bytes = 0;
            let active: Vec<ActiveFile> = r
                .active
                .iter()
                .map(|(url, (key, size))| {
                    let (bytes, len) = self
                        .engine
                        .store
                        .get(key)
                        .ok()
                        .flatten()
                        .map_or((0, *size), |o| {
                            (o.snapshot().present.covered(), o.len().or(*size))
                        });
                    active_bytes += bytes;
                    ActiveFile {
                        url: url.clone(),
                        bytes,
                        len,
                    }
                })
                .collect();
            let rate = r.fetched_bytes as f64 / elapsed;
            let bytes_done = r.bytes_done + active_bytes;
            let remaining = r.bytes_total.saturating_sub(bytes_done);
            let paused = status.limit_now == Some(0.0);
            status.running = Some(RunProgress {
                run: r.run,
                started: r.started,
                phase: if paused && r.phase == RunPhase::Syncing {
                    RunPhase::WaitingForWindow
                } else {
                    r.phase
                },
                files_total: r.files_total,
                files_done: r.files_done,
                bytes_total: r.bytes_total.max(bytes_done),
                bytes_done,
                rate,
                eta_secs: (rate > 1.0 && r.bytes_total > 0)
                    .then(|| (remaining as f64 / rate) as u64),
                active,
            });
        }
        status
    }
}
