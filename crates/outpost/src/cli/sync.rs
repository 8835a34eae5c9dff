//! `outpost sync`: starts a sync on the edge and follows each run to its
//! end, with progress bars on a terminal and a plain line every few
//! seconds otherwise.

use std::time::{Duration, Instant};

use anyhow::bail;
use http::Method;
use outpost_protocol::{ChannelStatus, RunPhase, RunSummary, SyncResult, SyncStarted};

use super::text::{eta_text, human, outcome_counts, print_json, query_value, rate_text};
use super::{Endpoint, Target};

pub fn sync(target: &Target, name: Option<&str>) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let path = match name {
        Some(n) => format!("/channels/sync?name={}", query_value(n)),
        None => "/channels/sync".to_string(),
    };
    let edge = Endpoint::resolve(target)?;
    let started: SyncStarted = edge.call(Method::POST, &path)?;
    let runs = started.runs;
    if runs.is_empty() {
        bail!("no channels configured on the edge");
    }
    let tty = std::io::stderr().is_terminal() && !target.json;
    let multi = indicatif::MultiProgress::new();
    // No bar until the totals are known: while the source is listed a
    // bar could only say "0 B / 0 B".
    let listing_style = indicatif::ProgressStyle::with_template("{prefix:12} {spinner} {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
    let bar_style = indicatif::ProgressStyle::with_template(
        "{prefix:12} [{bar:20}] {bytes}/{total_bytes} {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("#>-");
    let bars: Vec<indicatif::ProgressBar> = runs
        .iter()
        .map(|r| {
            let bar = multi.add(indicatif::ProgressBar::new(0));
            bar.set_style(listing_style.clone());
            bar.set_prefix(r.channel.clone());
            bar.set_message("starting");
            if !tty {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            bar
        })
        .collect();
    let mut sized = vec![false; runs.len()];
    let mut said_listing = vec![false; runs.len()];
    let mut done: Vec<Option<RunSummary>> = vec![None; runs.len()];
    let mut last_line = Instant::now() - Duration::from_secs(60);
    loop {
        let list: Vec<ChannelStatus> = edge.call(Method::GET, "/channels")?;
        let plain_due = !tty && last_line.elapsed() >= Duration::from_secs(5);
        for (i, run) in runs.iter().enumerate() {
            if done[i].is_some() {
                continue;
            }
            let Some(ch) = list.iter().find(|c| c.name == run.channel) else {
                continue;
            };
            match (&ch.running, &ch.last_run) {
                (Some(running), _)
                    if running.run == run.run && running.phase == RunPhase::Listing =>
                {
                    bars[i].set_message("listing the source");
                    bars[i].tick();
                    if !tty && !said_listing[i] {
                        eprintln!("{}: listing the source", run.channel);
                        said_listing[i] = true;
                    }
                }
                (Some(running), _) if running.run == run.run => {
                    if !sized[i] {
                        bars[i].set_style(bar_style.clone());
                        sized[i] = true;
                    }
                    let msg = format!(
                        "{}/{} files {} ETA {} {}",
                        running.files_done,
                        running.files_total,
                        rate_text(running.rate),
                        eta_text(running.eta_secs),
                        running.phase
                    );
                    bars[i].set_length(running.bytes_total);
                    bars[i].set_position(running.bytes_done);
                    bars[i].set_message(msg.clone());
                    if plain_due {
                        eprintln!(
                            "{}: {} / {}, {msg}",
                            run.channel,
                            human(running.bytes_done),
                            human(running.bytes_total)
                        );
                    }
                }
                (_, Some(last)) if last.run >= run.run => {
                    // The summary below says how it ended; a finished bar
                    // left on the screen would repeat it, or show 0 / 0.
                    bars[i].finish_and_clear();
                    done[i] = Some(last.clone());
                }
                _ => {}
            }
        }
        if plain_due {
            last_line = Instant::now();
        }
        if done.iter().all(Option::is_some) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut failed = 0;
    for (run, last) in runs.iter().zip(done.into_iter().flatten()) {
        if target.json {
            print_json(&last)?;
        } else {
            println!(
                "{}: sync #{} {}: {} files: {}; {} over the WAN",
                run.channel,
                last.run,
                last.result,
                last.files,
                outcome_counts(&last),
                human(last.fetched_bytes),
            );
            if let Some(msg) = &last.message {
                println!("  {msg}");
            }
        }
        if last.result != SyncResult::Ok {
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} channel sync(s) did not finish cleanly");
    }
    Ok(())
}
