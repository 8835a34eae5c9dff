//! The figures of one run, next to issue 13's targets, with PASS/FAIL per
//! target: printed as a table and written as JSON.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use crate::Args;
use crate::admin::ReadinessCounts;
use crate::client::Counters;
use crate::edge::EdgeStats;
use crate::stats::{millis, percentile};

const CPU_TARGET_PERCENT: f64 = 10.0;
const HEARTBEAT_P99_TARGET_MS: f64 = 50.0;
const RSS_TARGET_BYTES: u64 = 300 << 20;
const READINESS_TARGET_MS: f64 = 100.0;
const PUBLISH_TARGET_S: f64 = 5.0;

#[derive(Serialize, Default)]
pub struct Summary {
    pub edges: usize,
    pub channels: usize,
    pub files: usize,
    pub transport: &'static str,
    pub enrol_seconds: f64,
    pub enrol_p50_ms: Option<f64>,
    pub enrol_p99_ms: Option<f64>,
    pub warmup_seconds: f64,
    pub warmup_edges_applied: usize,
    pub window_seconds: f64,
    pub heartbeats_in_window: u64,
    pub heartbeat_errors_in_window: u64,
    pub heartbeat_p50_ms: Option<f64>,
    pub heartbeat_p99_ms: Option<f64>,
    pub heartbeat_max_ms: Option<f64>,
    /// Heartbeats in the window that had to open a new connection.
    pub heartbeat_reconnects: u64,
    /// Percentiles of those sent on a kept connection.
    pub heartbeat_kept_p50_ms: Option<f64>,
    pub heartbeat_kept_p99_ms: Option<f64>,
    pub manager_cpu_percent: Option<f64>,
    pub manager_cpu_max_5s_percent: Option<f64>,
    pub simulator_cpu_percent: f64,
    /// What every other process on the machine used in the window, in %
    /// of one core (the machine has several).
    pub others_cpu_percent: Option<f64>,
    pub readiness_channel: Option<ReadinessFigures>,
    pub readiness_path: Option<ReadinessFigures>,
    pub published_version: Option<u64>,
    pub publish_answered_ms: f64,
    pub publish_applied_edges: usize,
    pub publish_p50_s: Option<f64>,
    pub publish_p99_s: Option<f64>,
    pub publish_p100_s: Option<f64>,
    /// The same for the config fetch alone (before the heartbeat).
    pub fetched_p50_s: Option<f64>,
    pub fetched_p99_s: Option<f64>,
    pub fetched_p100_s: Option<f64>,
    pub manager_rss_bytes: Option<u64>,
    pub manager_hwm_bytes: Option<u64>,
    pub simulator_rss_bytes: Option<u64>,
    pub database_files: Vec<(String, u64)>,
    pub errors: ErrorCounts,
    pub verdicts: Vec<Verdict>,
}

#[derive(Serialize, Clone)]
pub struct ReadinessFigures {
    pub calls: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub answer: ReadinessCounts,
}

#[derive(Serialize, Default)]
pub struct ErrorCounts {
    pub heartbeats: u64,
    pub heartbeat_errors: u64,
    pub waits: u64,
    pub wait_errors: u64,
    pub config_fetches: u64,
    pub config_errors: u64,
    pub refused: u64,
    pub connects: u64,
    pub connect_errors: u64,
    pub last_error: Option<String>,
}

#[derive(Serialize, Clone)]
pub struct Verdict {
    pub figure: String,
    pub value: String,
    pub target: String,
    pub pass: bool,
}

pub struct CpuFigures {
    pub manager: Option<Duration>,
    pub simulator: Duration,
    /// The whole machine's busy time.
    pub machine: Duration,
    pub manager_slices: Vec<f64>,
}

impl Summary {
    pub fn new(args: &Args, tls: bool) -> Self {
        Self {
            edges: args.edges,
            channels: args.channels,
            files: args.files,
            transport: if tls {
                "HTTPS (pinned fingerprint)"
            } else {
                "plain HTTP (--insecure-http)"
            },
            ..Self::default()
        }
    }

    pub fn enrolment(&mut self, took: Duration, times: &mut [Duration]) {
        self.enrol_seconds = took.as_secs_f64();
        self.enrol_p50_ms = millis(percentile(times, 50.0));
        self.enrol_p99_ms = millis(percentile(times, 99.0));
    }

    pub fn warmup(&mut self, took: Duration, applied: usize) {
        self.warmup_seconds = took.as_secs_f64();
        self.warmup_edges_applied = applied;
    }

    pub fn heartbeat_connections(&mut self, reconnects: u64, kept: &mut [Duration]) {
        self.heartbeat_reconnects = reconnects;
        self.heartbeat_kept_p50_ms = millis(percentile(kept, 50.0));
        self.heartbeat_kept_p99_ms = millis(percentile(kept, 99.0));
    }

    pub fn steady_state(
        &mut self,
        wall: Duration,
        latencies: &mut [Duration],
        heartbeats: u64,
        errors: u64,
        cpu: CpuFigures,
    ) {
        self.window_seconds = wall.as_secs_f64();
        self.heartbeats_in_window = heartbeats;
        self.heartbeat_errors_in_window = errors;
        self.heartbeat_p50_ms = millis(percentile(latencies, 50.0));
        self.heartbeat_p99_ms = millis(percentile(latencies, 99.0));
        self.heartbeat_max_ms = millis(percentile(latencies, 100.0));
        let secs = wall.as_secs_f64().max(0.001);
        self.manager_cpu_percent = cpu.manager.map(|d| 100.0 * d.as_secs_f64() / secs);
        self.manager_cpu_max_5s_percent = cpu.manager_slices.iter().copied().reduce(f64::max);
        self.simulator_cpu_percent = 100.0 * cpu.simulator.as_secs_f64() / secs;
        self.others_cpu_percent = cpu.manager.map(|manager| {
            let others = cpu
                .machine
                .saturating_sub(manager)
                .saturating_sub(cpu.simulator);
            100.0 * others.as_secs_f64() / secs
        });
    }

    pub fn readiness(&mut self, with_path: bool, times: &mut [Duration], answer: ReadinessCounts) {
        let figures = ReadinessFigures {
            calls: times.len(),
            p50_ms: millis(percentile(times, 50.0)),
            p99_ms: millis(percentile(times, 99.0)),
            answer,
        };
        if with_path {
            self.readiness_path = Some(figures);
        } else {
            self.readiness_channel = Some(figures);
        }
    }

    pub fn publish(
        &mut self,
        version: Option<u64>,
        answered: Duration,
        applied: &mut [Duration],
        fetched: &mut [Duration],
    ) {
        self.published_version = version;
        self.publish_answered_ms = answered.as_secs_f64() * 1000.0;
        self.publish_applied_edges = applied.len();
        let fleet = self.edges;
        [self.publish_p50_s, self.publish_p99_s, self.publish_p100_s] =
            fleet_percentiles(applied, fleet);
        [self.fetched_p50_s, self.fetched_p99_s, self.fetched_p100_s] =
            fleet_percentiles(fetched, fleet);
    }

    pub fn manager_memory(&mut self, memory: Option<(u64, u64)>) {
        self.manager_rss_bytes = memory.map(|m| m.0);
        self.manager_hwm_bytes = memory.map(|m| m.1);
    }

    pub fn simulator_memory(&mut self, memory: Option<(u64, u64)>) {
        self.simulator_rss_bytes = memory.map(|m| m.0);
    }

    pub fn database(&mut self, files: Vec<(String, u64)>) {
        self.database_files = files;
    }

    pub fn errors(&mut self, stats: &EdgeStats, counters: &Counters) {
        let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        self.errors = ErrorCounts {
            heartbeats: n(&stats.heartbeats),
            heartbeat_errors: n(&stats.heartbeat_errors),
            waits: n(&stats.waits),
            wait_errors: n(&stats.wait_errors),
            config_fetches: n(&stats.config_fetches),
            config_errors: n(&stats.config_errors),
            refused: n(&stats.refused),
            connects: n(&counters.connects),
            connect_errors: n(&counters.connect_errors),
            last_error: stats
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        };
        self.verdicts = self.judge();
    }

    fn judge(&self) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        let mut add = |figure: &str, value: Option<f64>, unit: &str, target: f64| {
            verdicts.push(Verdict {
                figure: figure.to_owned(),
                value: value.map_or("not measured".to_owned(), |v| format!("{v:.1} {unit}")),
                target: format!("< {target} {unit}"),
                pass: value.is_some_and(|v| v < target),
            });
        };
        add(
            "manager CPU, steady state (% of one core)",
            self.manager_cpu_percent,
            "%",
            CPU_TARGET_PERCENT,
        );
        add(
            "heartbeat latency p99",
            self.heartbeat_p99_ms,
            "ms",
            HEARTBEAT_P99_TARGET_MS,
        );
        add(
            "manager peak RSS (VmHWM)",
            self.manager_hwm_bytes.map(mib),
            "MiB",
            mib(RSS_TARGET_BYTES),
        );
        add(
            "readiness ?channel= p99",
            self.readiness_channel.as_ref().and_then(|r| r.p99_ms),
            "ms",
            READINESS_TARGET_MS,
        );
        add(
            "readiness ?channel=&path= p99",
            self.readiness_path.as_ref().and_then(|r| r.p99_ms),
            "ms",
            READINESS_TARGET_MS,
        );
        add(
            "publish applied by 100 % of edges",
            self.publish_p100_s,
            "s",
            PUBLISH_TARGET_S,
        );
        verdicts
    }

    pub fn all_passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.pass)
    }

    pub fn print(&self) {
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        let s = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
        println!();
        println!(
            "Fleet manager: {} simulated edges, {} channels x {} files each, {}",
            self.edges, self.channels, self.files, self.transport
        );
        println!(
            "  enrolment: {:.1} s for {} edges (per enrol p50 {} ms, p99 {} ms)",
            self.enrol_seconds,
            self.edges,
            ms(self.enrol_p50_ms),
            ms(self.enrol_p99_ms)
        );
        println!(
            "  first config applied by {} edges {:.1} s after they started",
            self.warmup_edges_applied, self.warmup_seconds
        );
        println!(
            "  steady state ({:.0} s window): {} heartbeats ({} errors), latency p50 {} ms, p99 {} ms, max {} ms",
            self.window_seconds,
            self.heartbeats_in_window,
            self.heartbeat_errors_in_window,
            ms(self.heartbeat_p50_ms),
            ms(self.heartbeat_p99_ms),
            ms(self.heartbeat_max_ms)
        );
        println!(
            "    {} of them on a new connection (closed between heartbeats: see --keep-idle); on a kept connection: p50 {} ms, p99 {} ms",
            self.heartbeat_reconnects,
            ms(self.heartbeat_kept_p50_ms),
            ms(self.heartbeat_kept_p99_ms)
        );
        println!(
            "  manager CPU {} % of one core (busiest 5 s: {} %); simulator CPU {:.1} %; every other process on the machine {} %",
            ms(self.manager_cpu_percent),
            ms(self.manager_cpu_max_5s_percent),
            self.simulator_cpu_percent,
            ms(self.others_cpu_percent)
        );
        for (name, r) in [
            ("?channel=", &self.readiness_channel),
            ("?channel=&path=", &self.readiness_path),
        ] {
            if let Some(r) = r {
                println!(
                    "  readiness {name}: {} calls, p50 {} ms, p99 {} ms; answer: {} sites ({} complete, {} syncing, {} failed, {} missing), ready={}, {} bytes",
                    r.calls,
                    ms(r.p50_ms),
                    ms(r.p99_ms),
                    r.answer.sites,
                    r.answer.complete,
                    r.answer.syncing,
                    r.answer.failed,
                    r.answer.missing,
                    r.answer.ready,
                    r.answer.body_bytes
                );
            }
        }
        println!(
            "  publish (version {}): answered in {:.0} ms; applied by {} of {} edges; 50 % {} s, 99 % {} s, 100 % {} s",
            self.published_version
                .map_or("?".to_owned(), |v| v.to_string()),
            self.publish_answered_ms,
            self.publish_applied_edges,
            self.edges,
            s(self.publish_p50_s),
            s(self.publish_p99_s),
            s(self.publish_p100_s)
        );
        println!(
            "    config fetched (before that heartbeat): 50 % {} s, 99 % {} s, 100 % {} s",
            s(self.fetched_p50_s),
            s(self.fetched_p99_s),
            s(self.fetched_p100_s)
        );
        println!(
            "  manager RSS {} MiB, peak {} MiB; simulator RSS {} MiB",
            ms(self.manager_rss_bytes.map(mib)),
            ms(self.manager_hwm_bytes.map(mib)),
            ms(self.simulator_rss_bytes.map(mib))
        );
        let db: Vec<String> = self
            .database_files
            .iter()
            .map(|(name, len)| format!("{name} {:.1} MiB", mib(*len)))
            .collect();
        println!(
            "  SQLite: {}",
            if db.is_empty() {
                "not measured".to_owned()
            } else {
                db.join(", ")
            }
        );
        let e = &self.errors;
        println!(
            "  totals: {} heartbeats ({} errors), {} long polls returned ({} errors), {} config fetches ({} errors), {} refused, {} connects ({} failed)",
            e.heartbeats,
            e.heartbeat_errors,
            e.waits,
            e.wait_errors,
            e.config_fetches,
            e.config_errors,
            e.refused,
            e.connects,
            e.connect_errors
        );
        if let Some(last) = &e.last_error {
            println!("  last error: {last}");
        }
        println!();
        println!("| target | figure | issue 13 | verdict |");
        println!("|---|---|---|---|");
        for v in &self.verdicts {
            println!(
                "| {} | {} | {} | {} |",
                v.figure,
                v.value,
                v.target,
                if v.pass { "PASS" } else { "FAIL" }
            );
        }
    }
}

/// 50, 99 and 100 % of the whole fleet in seconds: an edge that never
/// got there counts as never, so a figure is absent unless that share of
/// every edge did.
fn fleet_percentiles(times: &mut [Duration], fleet: usize) -> [Option<f64>; 3] {
    times.sort_unstable();
    [50.0, 99.0, 100.0].map(|pct: f64| {
        let rank = ((pct / 100.0) * fleet as f64).ceil() as usize;
        times
            .get(rank.clamp(1, fleet.max(1)) - 1)
            .map(|d| d.as_secs_f64())
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edge_that_never_applied_leaves_the_fleet_percentile_open() {
        let mut times: Vec<Duration> = (1..=3).map(Duration::from_secs).collect();
        assert_eq!(
            fleet_percentiles(&mut times, 4),
            [Some(2.0), None, None],
            "3 of 4 edges: the median is known, 99 % and 100 % are not"
        );
        assert_eq!(
            fleet_percentiles(&mut times, 3),
            [Some(2.0), Some(3.0), Some(3.0)]
        );
    }
}
