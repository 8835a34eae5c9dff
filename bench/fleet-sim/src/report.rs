//! What a simulated edge reports: deterministic from its index, so two
//! runs load the manager alike and the readiness answers are known.
//!
//! Every edge has the same channels (`ch-00`, `ch-01`, ...) of the same
//! files (`pkg/f-000.msi`, ...). Most channels are complete; a small,
//! fixed share per edge is mid-sync with a few files missing (listed, as
//! the real edge lists them) and a smaller share failed, so the readiness
//! answer is not all "complete".

use outpost_protocol::{ChannelReport, EdgeReport, FileProblem, SyncResult};

/// The shape of every simulated edge's content.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub channels: usize,
    pub files: usize,
    pub file_bytes: u64,
    /// Per mille of (edge, channel) pairs that are mid-sync.
    pub syncing_per_mille: u64,
    /// Per mille of (edge, channel) pairs whose last sync failed.
    pub failed_per_mille: u64,
}

pub fn channel_name(channel: usize) -> String {
    format!("ch-{channel:02}")
}

pub fn file_path(file: usize) -> String {
    format!("pkg/f-{file:03}.msi")
}

/// A file that some sites miss in every channel: the first missing file
/// of the commonest incomplete pattern, so `readiness?path=` for it is
/// not trivially complete everywhere.
pub fn a_missing_path(shape: &Shape) -> String {
    file_path((mix(0) % shape.files.max(1) as u64) as usize)
}

/// A well-mixed 64-bit hash (splitmix64's finaliser): no RNG crate needed
/// and the same edge looks the same in every run.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// `now` in Unix seconds: the sync times are relative to it.
pub fn edge_report(edge: usize, uptime_seconds: u64, now: i64, shape: &Shape) -> EdgeReport {
    let channels: Vec<ChannelReport> = (0..shape.channels)
        .map(|c| channel_report(edge, c, now, shape))
        .collect();
    let disk_used = channels.iter().map(|c| c.bytes_present).sum();
    EdgeReport {
        version: concat!("fleet-sim ", env!("CARGO_PKG_VERSION")).to_owned(),
        uptime_seconds,
        disk_used,
        disk_limit: 500 << 30,
        hit_ratio_bytes: 0.5 + (mix(edge as u64) % 400) as f64 / 1000.0,
        wan_bytes_in: (mix(edge as u64 + 1) % (10 << 30)) + uptime_seconds * 1000,
        lan_bytes_out: (mix(edge as u64 + 2) % (40 << 30)) + uptime_seconds * 4000,
        bytes_saved: (mix(edge as u64 + 3) % (30 << 30)) + uptime_seconds * 3000,
        active_fills: mix(edge as u64 + 4) % 4,
        channels,
    }
}

fn channel_report(edge: usize, channel: usize, now: i64, shape: &Shape) -> ChannelReport {
    let roll = mix(((edge as u64) << 16) | channel as u64) % 1000;
    let total = shape.files as u64;
    let bytes_total = total * shape.file_bytes;
    let mut report = ChannelReport {
        name: channel_name(channel),
        syncing: false,
        files_total: total,
        files_present: total,
        files_syncing: 0,
        files_failed: 0,
        files_quarantined: 0,
        bytes_total,
        bytes_present: bytes_total,
        last_result: Some(SyncResult::Ok),
        last_finished: Some(now - 3600),
        missing: Vec::new(),
        missing_truncated: false,
        problems: Vec::new(),
    };
    if roll < shape.syncing_per_mille + shape.failed_per_mille && total > 0 {
        let missing = 1 + (roll % 20).min(total - 1);
        let first = (mix(roll) % total) as usize;
        report.files_present = total - missing;
        report.bytes_present = report.files_present * shape.file_bytes;
        report.missing = (0..missing as usize)
            .map(|i| file_path((first + i) % shape.files))
            .collect();
        if roll < shape.syncing_per_mille {
            report.syncing = true;
            report.files_syncing = missing;
        } else {
            report.files_failed = missing;
            report.last_result = Some(SyncResult::Errors);
            report.problems = vec![FileProblem {
                url: format!(
                    "http://fileserver.example/{}/{}",
                    report.name, report.missing[0]
                ),
                error: "origin answered 503".to_owned(),
                at: now - 600,
            }];
        }
    }
    report
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The channel as `PUT /api/v1/channels/NAME` takes it: the edge TOML's
/// `[[channel]]` keys as JSON. `generation` changes the schedule, so a
/// second PUT is a real change to publish.
pub fn channel_body(channel: usize, generation: u32) -> serde_json::Value {
    let name = channel_name(channel);
    serde_json::json!({
        "name": name,
        "source": format!("http://fileserver.example/{name}/"),
        "include": ["*.msi"],
        "schedule": format!("{} 1 * * *", generation % 60),
        "verify": true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_channels_are_complete_and_the_rest_list_what_is_missing() {
        let shape = Shape {
            channels: 20,
            files: 200,
            file_bytes: 1 << 20,
            syncing_per_mille: 20,
            failed_per_mille: 5,
        };
        let mut complete = 0;
        let mut pairs = 0;
        for edge in 0..500 {
            for channel in edge_report(edge, 10, 1_800_000_000, &shape).channels {
                pairs += 1;
                assert_eq!(channel.files_total, 200);
                assert_eq!(
                    channel.files_present + channel.missing.len() as u64,
                    channel.files_total
                );
                if channel.missing.is_empty() {
                    complete += 1;
                }
            }
        }
        assert!(complete * 100 > pairs * 95, "{complete} of {pairs}");
        assert!(complete < pairs, "some channel is incomplete");
    }

    #[test]
    fn some_sites_miss_the_chosen_path() {
        let shape = Shape {
            channels: 1,
            files: 200,
            file_bytes: 1,
            syncing_per_mille: 20,
            failed_per_mille: 5,
        };
        let path = a_missing_path(&shape);
        let missing = (0..20_000)
            .filter(|&edge| {
                edge_report(edge, 1, 1_800_000_000, &shape).channels[0]
                    .missing
                    .contains(&path)
            })
            .count();
        assert!(missing > 0, "no site misses {path}");
    }

    #[test]
    fn a_report_is_the_same_every_time() {
        let shape = Shape {
            channels: 3,
            files: 10,
            file_bytes: 100,
            syncing_per_mille: 500,
            failed_per_mille: 100,
        };
        let a = edge_report(7, 1, 1_800_000_000, &shape);
        let b = edge_report(7, 1, 1_800_000_000, &shape);
        assert_eq!(a.channels, b.channels);
    }
}
