//! How the CLI writes numbers for people: sizes, rates, durations, bars,
//! shortened URLs, and how it writes query values for the edge.

pub(super) fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < units.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[unit])
    }
}

pub(super) fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        0
    } else {
        ((done as f64 / total as f64) * width as f64).round() as usize
    };
    let filled = filled.min(width);
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

/// The last `width` characters of a long URL, after `...`: the file name
/// is what tells two apart.
pub(super) fn short_url(url: &str, width: usize) -> String {
    let count = url.chars().count();
    if count > width {
        let tail: String = url.chars().skip(count - (width - 3)).collect();
        format!("...{tail}")
    } else {
        url.to_string()
    }
}

pub(super) fn rate_text(bytes_per_sec: f64) -> String {
    let bits = bytes_per_sec * 8.0;
    if bits >= 1e6 {
        format!("{:.1} Mbit/s", bits / 1e6)
    } else {
        format!("{:.0} kbit/s", bits / 1e3)
    }
}

pub(super) fn eta_text(secs: Option<u64>) -> String {
    match secs {
        Some(s) if s >= 3600 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        Some(s) => format!("{}m{:02}s", s / 60, s % 60),
        None => "-".into(),
    }
}

/// A query value, form-urlencoded as the edge decodes it.
pub(super) fn query_value(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// A run's non-zero counts under the summary's own names ("2 fetched,
/// 1 not_modified"), or "nothing to do".
pub(super) fn outcome_counts(summary: &outpost_protocol::RunSummary) -> String {
    let parts: Vec<String> = summary
        .outcomes()
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(outcome, n)| format!("{n} {outcome}"))
        .collect();
    if parts.is_empty() {
        "nothing to do".to_string()
    } else {
        parts.join(", ")
    }
}
