//! fleet-sim: many simulated edges in one process against one
//! `outpost manager serve`, speaking the real fleet protocol
//! (`outpost_protocol::fleet`), to measure issue 13's performance targets:
//! enrolment time, heartbeat latency and the manager's CPU, memory and
//! database size in steady state, readiness latency for the whole fleet,
//! and how fast a published change is applied everywhere.
//!
//! Run by bench/fleet.sh, which starts the manager; see
//! docs/benchmarks.md ("Fleet manager"). The phases, in order:
//! 1. put the channels in the global scope and publish (so every site has
//!    them and readiness covers the fleet);
//! 2. enrol every edge (timed);
//! 3. run them all until each has applied the config, let them settle,
//!    then measure a steady-state window (manager CPU from /proc, heartbeat
//!    latency as the edges see it);
//! 4. readiness calls, while the edges keep running;
//! 5. change a channel, publish, and time until every edge has fetched it
//!    and reported it applied in a heartbeat.

mod admin;
mod client;
mod edge;
mod progress;
mod report;
mod stats;
mod summary;
mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tokio::sync::Semaphore;

use crate::admin::Admin;
use crate::client::Transport;
use crate::client::{Conn, Target};
use crate::edge::{EdgeStats, Fleet};
use crate::progress::Progress;
use crate::report::{Shape, a_missing_path, channel_body, channel_name};
use crate::summary::{CpuFigures, Summary};

#[derive(Parser, Debug)]
#[command(about = "Simulated edges against one Outpost fleet manager")]
pub struct Args {
    /// The manager: https://IP:PORT (with --fingerprint) or http://IP:PORT.
    #[arg(long)]
    manager: String,
    /// SHA-256 of the manager's certificate, as `manager init` prints it.
    #[arg(long)]
    fingerprint: Option<String>,
    #[arg(long)]
    join_token: String,
    #[arg(long)]
    admin_token: String,
    #[arg(long, default_value_t = 1000)]
    edges: usize,
    #[arg(long, default_value_t = 20)]
    channels: usize,
    #[arg(long, default_value_t = 200)]
    files: usize,
    /// Per mille of (edge, channel) pairs reported mid-sync.
    #[arg(long, default_value_t = 20)]
    syncing_per_mille: u64,
    /// Per mille of (edge, channel) pairs reported failed.
    #[arg(long, default_value_t = 5)]
    failed_per_mille: u64,
    /// Heartbeat interval; default: the one the manager hands out.
    #[arg(long, value_parser = humantime_secs)]
    heartbeat: Option<Duration>,
    /// Each interval is the base times 1 ± this.
    #[arg(long, default_value_t = 0.1)]
    jitter: f64,
    /// HTTP/1.1 requests, no session: a long-poll connection and one for
    /// heartbeats and config fetches (the edges' first behaviour).
    #[arg(long, conflicts_with = "http2")]
    http1: bool,
    /// HTTP/2 requests, no session: over TLS one connection per edge
    /// shared by its calls (the edges' behaviour before sessions). By
    /// default each simulated edge opens an edge session, as real edges
    /// do.
    #[arg(long)]
    http2: bool,
    /// Over HTTP/1.1: close the heartbeat connection between heartbeats
    /// when the interval is at least this. The default (10 s) closes it at
    /// a 30 s interval: 10,000 long polls plus 10,000 idle heartbeat
    /// connections do not fit in 20,000 descriptors per process. Say 3600s
    /// where the descriptors allow.
    #[arg(long, value_parser = humantime_secs, default_value = "10s")]
    keep_idle: Duration,
    /// Seconds to wait after every edge applied the config before the
    /// window, so the start-up burst is over.
    #[arg(long, default_value_t = 30)]
    settle: u64,
    /// Seconds of the steady-state window.
    #[arg(long, default_value_t = 60)]
    window: u64,
    #[arg(long, default_value_t = 100)]
    readiness_calls: usize,
    /// Pause between readiness calls.
    #[arg(long, default_value_t = 100)]
    readiness_pause_ms: u64,
    /// Seconds to wait for every edge to apply a publish.
    #[arg(long, default_value_t = 60)]
    publish_timeout: u64,
    /// Seconds to wait for every edge to apply the first config.
    #[arg(long, default_value_t = 300)]
    warmup_timeout: u64,
    #[arg(long, default_value_t = 64)]
    enrol_concurrency: usize,
    /// Connection set-ups (TCP + TLS) in progress at once.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// Loopback source addresses (127.0.0.2 on) to spread connections over.
    #[arg(long, default_value_t = 8)]
    source_ips: usize,
    /// Worker threads of the simulator's runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Site names are PREFIX-00000 ...
    #[arg(long, default_value = "site")]
    site_prefix: String,
    /// Don't put and publish the channels first (they are already there).
    #[arg(long)]
    no_setup: bool,
    /// The manager's process, for its CPU time and memory.
    #[arg(long)]
    manager_pid: Option<u32>,
    /// The manager's data directory, for the database's size.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Also write the figures here as JSON.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

fn humantime_secs(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, scale) = if let Some(ms) = s.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(sec) = s.strip_suffix('s') {
        (sec, 1.0)
    } else {
        (s, 1.0)
    };
    number
        .trim()
        .parse::<f64>()
        .map(|n| Duration::from_secs_f64(n * scale))
        .map_err(|e| format!("{s}: {e} (say 30s or 500ms)"))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let summary = runtime.block_on(run(&args))?;
    summary.print();
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    // The edges' tasks are still running: leave without waiting for them.
    std::process::exit(if summary.all_passed() { 0 } else { 1 });
}

/// 20,000 sockets need more than the usual 1024 descriptors.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    if let Err(e) = setrlimit(Resource::Nofile, limit) {
        eprintln!("fleet-sim: could not raise the open files limit: {e}");
    }
}

async fn run(args: &Args) -> anyhow::Result<Summary> {
    let target = Target::new(
        &args.manager,
        args.fingerprint.as_deref(),
        args.connect_concurrency,
        if args.http1 {
            Transport::Http1
        } else if args.http2 {
            Transport::Http2
        } else {
            Transport::Session
        },
    )?;
    let fleet = Arc::new(Fleet {
        target,
        shape: Shape {
            channels: args.channels,
            files: args.files,
            file_bytes: 4 << 20,
            syncing_per_mille: args.syncing_per_mille,
            failed_per_mille: args.failed_per_mille,
        },
        heartbeat_override: args.heartbeat,
        jitter: args.jitter.clamp(0.0, 0.9),
        keep_idle: args.keep_idle,
        stats: EdgeStats::default(),
        applied: Progress::default(),
        fetched: Progress::default(),
        max_applied: Default::default(),
        started: Instant::now(),
        started_unix: report::unix_now(),
    });
    let mut summary = Summary::new(args, fleet.target.is_tls());
    let mut admin = Admin {
        target: &fleet.target,
        token: &args.admin_token,
        conn: Conn::new(None),
    };

    if !args.no_setup {
        for c in 0..args.channels {
            admin
                .put_channel(&channel_name(c), "global", channel_body(c, 1))
                .await?;
        }
        let version = admin.publish().await?;
        log(&format!(
            "published {} channels to the global scope (version {})",
            args.channels,
            version.map_or("?".to_owned(), |v| v.to_string())
        ));
    }

    // Enrolment.
    let sources = fleet.target.source_addresses(args.source_ips);
    let permits = Arc::new(Semaphore::new(args.enrol_concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let enrol_start = Instant::now();
    let join_token: Arc<str> = args.join_token.clone().into();
    for index in 0..args.edges {
        let fleet = fleet.clone();
        let permits = permits.clone();
        let join_token = join_token.clone();
        let site = format!("{}-{index:05}", args.site_prefix);
        let source = sources[index % sources.len()];
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            edge::enrol(&fleet, index, site, &join_token, source).await
        });
    }
    let mut edges = Vec::with_capacity(args.edges);
    let mut enrol_times = Vec::with_capacity(args.edges);
    while let Some(joined) = tasks.join_next().await {
        let (edge, took) = joined??;
        edges.push(edge);
        enrol_times.push(took);
        if edges.len() % 1000 == 0 {
            log(&format!("enrolled {}", edges.len()));
        }
    }
    summary.enrolment(enrol_start.elapsed(), &mut enrol_times);
    log(&format!(
        "enrolled {} edges in {:.1} s",
        args.edges,
        enrol_start.elapsed().as_secs_f64()
    ));

    // Every edge runs; wait until each has applied the first config.
    fleet.applied.start(0, args.edges);
    let warmup_start = Instant::now();
    for edge in edges {
        tokio::spawn(edge.run(fleet.clone()));
    }
    let deadline = Instant::now() + Duration::from_secs(args.warmup_timeout);
    let mut next_note = Instant::now() + Duration::from_secs(5);
    while fleet.applied.count() < args.edges && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if Instant::now() >= next_note {
            next_note += Duration::from_secs(5);
            log(&format!(
                "{} of {} applied so far; {}",
                fleet.applied.count(),
                args.edges,
                fleet.counts()
            ));
        }
    }
    let warm = fleet.applied.finish();
    let baseline = warm.len();
    summary.warmup(warmup_start.elapsed(), baseline);
    log(&format!(
        "{baseline} of {} edges applied the config in {:.1} s",
        args.edges,
        warmup_start.elapsed().as_secs_f64()
    ));
    tokio::time::sleep(Duration::from_secs(args.settle)).await;

    // The steady-state window.
    let own = std::process::id();
    let manager_cpu_start = args.manager_pid.map(stats::cpu_time).transpose()?;
    let own_cpu_start = stats::cpu_time(own)?;
    let machine_start = stats::machine_busy()?;
    let heartbeats_before = fleet.stats.heartbeats.load(Ordering::Relaxed);
    let errors_before = fleet.stats.heartbeat_errors.load(Ordering::Relaxed);
    let window_start = Instant::now();
    fleet.stats.recording.store(true, Ordering::Relaxed);
    let mut slices = Vec::new();
    let mut last = (window_start, manager_cpu_start);
    let window = Duration::from_secs(args.window);
    while window_start.elapsed() < window {
        tokio::time::sleep(
            Duration::from_secs(5).min(window.saturating_sub(window_start.elapsed())),
        )
        .await;
        let now = Instant::now();
        let cpu = args.manager_pid.map(stats::cpu_time).transpose()?;
        if let (Some(a), Some(b)) = (last.1, cpu) {
            let wall = now.duration_since(last.0).as_secs_f64();
            slices.push(100.0 * b.saturating_sub(a).as_secs_f64() / wall.max(0.001));
        }
        last = (now, cpu);
    }
    fleet.stats.recording.store(false, Ordering::Relaxed);
    let wall = window_start.elapsed();
    let manager_cpu_end = args.manager_pid.map(stats::cpu_time).transpose()?;
    let own_cpu_end = stats::cpu_time(own)?;
    let machine_end = stats::machine_busy()?;
    let mut latencies = std::mem::take(
        &mut *fleet
            .stats
            .heartbeat_latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let mut kept = std::mem::take(
        &mut *fleet
            .stats
            .heartbeat_latency_kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    summary.heartbeat_connections(
        fleet.stats.heartbeat_reconnects.load(Ordering::Relaxed),
        &mut kept,
    );
    summary.steady_state(
        wall,
        &mut latencies,
        fleet.stats.heartbeats.load(Ordering::Relaxed) - heartbeats_before,
        fleet.stats.heartbeat_errors.load(Ordering::Relaxed) - errors_before,
        CpuFigures {
            manager: manager_cpu_start
                .zip(manager_cpu_end)
                .map(|(a, b)| b.saturating_sub(a)),
            simulator: own_cpu_end.saturating_sub(own_cpu_start),
            machine: machine_end.saturating_sub(machine_start),
            manager_slices: slices,
        },
    );
    log("steady-state window done");

    // Readiness, with the fleet still running: on a thread and runtime of
    // its own, so that the answer is not queued behind 10,000 edge tasks.
    let channel = channel_name(0);
    let readiness = {
        let fleet = fleet.clone();
        let channel = channel.clone();
        let token = args.admin_token.clone();
        let calls = args.readiness_calls;
        let pause = Duration::from_millis(args.readiness_pause_ms);
        let thread = std::thread::spawn(move || -> anyhow::Result<_> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = Admin {
                    target: &fleet.target,
                    token: &token,
                    conn: Conn::new(None),
                };
                let path = a_missing_path(&fleet.shape);
                let whole = admin.readiness(&channel, None, calls, pause).await?;
                let file = admin.readiness(&channel, Some(&path), calls, pause).await?;
                Ok((whole, file))
            })
        });
        tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the readiness thread panicked"))??
    };
    let ((mut times, counts), (mut file_times, file_counts)) = readiness;
    summary.readiness(false, &mut times, counts);
    summary.readiness(true, &mut file_times, file_counts);
    log("readiness calls done");

    // A published change, timed to every edge.
    let baseline_version = fleet.applied_max();
    admin
        .put_channel(&channel, "global", channel_body(0, 2))
        .await?;
    fleet.applied.start(baseline_version, args.edges);
    fleet.fetched.start(baseline_version, args.edges);
    let publish_start = Instant::now();
    let published = admin.publish().await?;
    let publish_answered = publish_start.elapsed();
    let deadline = publish_start + Duration::from_secs(args.publish_timeout);
    let mut next_note = Instant::now() + Duration::from_secs(2);
    while fleet.applied.count() < args.edges && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if Instant::now() >= next_note {
            next_note += Duration::from_secs(2);
            log(&format!(
                "publish: {} fetched, {} applied; {}",
                fleet.fetched.count(),
                fleet.applied.count(),
                fleet.counts()
            ));
        }
    }
    let mut applied = fleet.applied.finish();
    let mut fetched = fleet.fetched.finish();
    summary.publish(published, publish_answered, &mut applied, &mut fetched);
    log("publish measured");

    if let Some(pid) = args.manager_pid {
        summary.manager_memory(stats::memory(pid).ok());
    }
    if let Some(dir) = &args.data_dir {
        summary.database(stats::database_files(dir));
    }
    summary.simulator_memory(stats::memory(own).ok());
    summary.errors(&fleet.stats, &fleet.target.counters);
    Ok(summary)
}

fn log(message: &str) {
    eprintln!("fleet-sim: {message}");
}
