//! The one-shot admin commands: ask the edge once, print the answer (as
//! text for people, or the edge's JSON with `--json`).

use anyhow::bail;
use http::Method;
use outpost_protocol::{
    ActionOutcome, CacheList, ChannelStatus, EdgeStatus, ObjectAction, ReloadReport, VerifyReport,
};

use super::text::{
    bar, eta_text, human, outcome_counts, print_json, query_value, rate_text, short_url,
    uptime_text,
};
use super::{Endpoint, Target};

/// Prints a line, cut to fit an 80-column terminal.
macro_rules! line {
    ($($arg:tt)*) => {{
        let line = format!($($arg)*);
        if line.chars().count() > 80 {
            println!("{}...", line.chars().take(77).collect::<String>());
        } else {
            println!("{line}");
        }
    }};
}

pub fn status(target: &Target) -> anyhow::Result<()> {
    let s: EdgeStatus = Endpoint::resolve(target)?.call(Method::GET, "/status")?;
    if target.json {
        return print_json(&s);
    }
    let cache = &s.cache;
    let (used, limit) = (cache.bytes_used, cache.bytes_limit);
    line!(
        "outpost {}  up {}  listening {}",
        s.version,
        uptime_text(s.uptime_seconds),
        s.listeners.join(", ")
    );
    line!(
        "cache   {} {} / {} ({} objects, {} pinned)",
        bar(used, limit, 20),
        human(used),
        human(limit),
        cache.objects,
        human(cache.pinned_bytes)
    );
    let r = &s.requests;
    line!(
        "hits    {:.1} %  hit {}  miss {}  joined {}  revalidated {}",
        s.hit_ratio * 100.0,
        r.hit,
        r.miss,
        r.collapsed,
        r.revalidated,
    );
    line!(
        "        stale {}  passed through {}  errors {}",
        r.stale,
        r.passthrough,
        r.error
    );
    let to_clients = s.served_bytes.cache + s.served_bytes.fills;
    let saved = s.wan_saved_bytes;
    line!(
        "wan     {} fetched, {} served from copies: saved {} ({:.0} %)",
        human(s.wan_bytes),
        human(to_clients),
        human(saved),
        if to_clients == 0 {
            0.0
        } else {
            saved as f64 * 100.0 / to_clients as f64
        }
    );
    for class in &s.wan {
        let limit = class.limit.map_or("unlimited".to_string(), rate_text);
        line!(
            "        {:<11} {} now, limit {}",
            class.class,
            rate_text(class.rate),
            limit
        );
    }
    for ch in &s.channels {
        let state = match (&ch.running, &ch.last_run) {
            (Some(_), _) => "syncing".to_string(),
            (None, Some(last)) => last.result.to_string(),
            (None, None) => "never synced".to_string(),
        };
        line!(
            "channel {} {}/{} files, {} quarantined, {}",
            ch.name,
            ch.files_present,
            ch.files_total,
            ch.quarantined.len(),
            state
        );
    }
    if let Some(m) = &s.manager {
        let contact = m.last_contact.map_or("never".to_string(), |t| {
            let ago = chrono::Utc::now().timestamp().saturating_sub(t).max(0);
            format!("{} ago", uptime_text(ago as u64))
        });
        line!(
            "manager {} site {}  {}  last contact {contact}  config v{}",
            m.url,
            m.site,
            m.state,
            m.applied_version
        );
        if let Some(error) = &m.last_error {
            line!("        {error}");
        }
    }
    if s.active_fills.is_empty() {
        line!("fills   none active");
    }
    for f in &s.active_fills {
        let short = short_url(&f.url, 40);
        match f.length {
            Some(len) => line!(
                "fill    {} {:>3}% {short}",
                bar(f.bytes, len, 20),
                f.bytes * 100 / len.max(1)
            ),
            None => line!("fill    {} {short}", human(f.bytes)),
        }
    }
    if limit > 0 && used * 100 / limit >= 95 {
        line!("warning: cache is {}% full", used * 100 / limit);
    }
    Ok(())
}

/// `cache ls`: what is stored, one line per object.
pub fn cache_ls(target: &Target, glob: Option<&str>) -> anyhow::Result<()> {
    let path = match glob {
        Some(g) => format!("/cache?glob={}", query_value(g)),
        None => "/cache".to_string(),
    };
    let list: CacheList = Endpoint::resolve(target)?.call(Method::GET, &path)?;
    if target.json {
        return print_json(&list);
    }
    for e in &list.objects {
        println!(
            "{:>10} {:<8} {:<6} hits {:<5} {}",
            human(e.size),
            if e.complete { "complete" } else { "partial" },
            if e.pinned { "pinned" } else { "" },
            e.hits,
            e.url
        );
    }
    Ok(())
}

/// `cache verify`: checks every complete object; exit status 1 if any was bad.
pub fn cache_verify(target: &Target) -> anyhow::Result<()> {
    let v: VerifyReport = Endpoint::resolve(target)?.call(Method::POST, "/verify")?;
    if target.json {
        print_json(&v)?;
    } else {
        println!(
            "checked {} objects ({} with a recorded SHA-256)",
            v.checked, v.digests_checked
        );
        for d in &v.dropped {
            println!("dropped {}: {}", d.url, d.reason);
        }
    }
    if !v.dropped.is_empty() {
        bail!("{} damaged object(s) dropped", v.dropped.len());
    }
    Ok(())
}

/// `purge`, `pin`, `unpin`: one object.
pub fn action(target: &Target, action: ObjectAction, url: &str) -> anyhow::Result<()> {
    let path = format!("/{action}?url={}", query_value(url));
    let v: ActionOutcome = Endpoint::resolve(target)?.call(Method::POST, &path)?;
    if target.json {
        print_json(&v)?;
    }
    // Nothing done is a failure: a script that pins what it just
    // downloaded must learn that the edge does not hold it.
    if !v.done {
        bail!(
            "{} is not in the edge's cache: nothing to {} (is the URL exactly the one clients fetch?)",
            v.url,
            v.action
        );
    }
    if !target.json {
        println!("{} {}: done", v.action, v.url);
    }
    Ok(())
}

/// `channels`: each channel's state, one block per channel.
pub fn channels(target: &Target) -> anyhow::Result<()> {
    let list: Vec<ChannelStatus> = Endpoint::resolve(target)?.call(Method::GET, "/channels")?;
    if target.json {
        return print_json(&list);
    }
    if list.is_empty() {
        println!("no channels configured");
    }
    for ch in &list {
        print_channel(ch);
    }
    Ok(())
}

fn print_channel(ch: &ChannelStatus) {
    println!("{}  {}", ch.name, short_url(&ch.source, 60));
    println!(
        "  files {}/{}  bytes {} / {}  rate {}{}",
        ch.files_present,
        ch.files_total,
        human(ch.bytes_present),
        human(ch.bytes_total),
        ch.rate,
        ch.window
            .as_deref()
            .map(|w| format!(" in {w}"))
            .unwrap_or_default()
    );
    match &ch.last_run {
        Some(last) => {
            let head = format!("  last sync #{} {}:", last.run, last.result);
            let counts = outcome_counts(last);
            // Counts that do not fit beside the head go on their own line.
            if head.len() + 1 + counts.len() <= 80 {
                println!("{head} {counts}");
            } else {
                println!("{head}");
                println!("    {counts}");
            }
            if let Some(msg) = &last.message {
                println!("  {}", short_url(msg, 76));
            }
        }
        None => println!("  never synced"),
    }
    if let Some(next) = &ch.next_run {
        println!("  next sync {next}");
    }
    if let Some(export) = &ch.export {
        let when = chrono::DateTime::from_timestamp(export.finished, 0)
            .map(|t| {
                t.with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M")
                    .to_string()
            })
            .unwrap_or_default();
        print!("  export {when} ");
        super::export::print_export(export);
    }
    if let Some(running) = &ch.running {
        println!(
            "  syncing #{} ({}): {}/{} files, {} / {}, {}, ETA {}",
            running.run,
            running.phase,
            running.files_done,
            running.files_total,
            human(running.bytes_done),
            human(running.bytes_total),
            rate_text(running.rate),
            eta_text(running.eta_secs)
        );
    }
    for q in &ch.quarantined {
        println!("  QUARANTINED {}", short_url(&q.url, 64));
        println!("    {}", short_url(&q.error, 74));
    }
    for e in &ch.errors {
        println!(
            "  error {}: {}",
            short_url(&e.url, 40),
            short_url(&e.error, 30)
        );
    }
}

/// `reload`: the edge re-reads its config file (like SIGHUP).
pub fn reload(target: &Target) -> anyhow::Result<()> {
    let v: ReloadReport = Endpoint::resolve(target)?.call(Method::POST, "/reload")?;
    if target.json {
        return print_json(&v);
    }
    if v.applied.is_empty() && v.restart_needed.is_empty() {
        println!("reloaded: nothing changed");
    }
    for a in &v.applied {
        println!("applied: {a}");
    }
    for r in &v.restart_needed {
        println!("needs a restart: {r}");
    }
    Ok(())
}
