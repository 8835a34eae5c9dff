//! How the CLI writes numbers for people: sizes (bytesize, binary units),
//! rates (bytesize, bits per second), durations (humantime), bars,
//! shortened URLs, and how it writes query values for the edge; JSON for
//! scripts.

/// Prints `value` as the edge's JSON document, indented.
pub(super) fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A size for people, in binary units: "781.3 KiB".
pub(super) fn human(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
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

/// A rate in bits per second, as links are sold: "40.0 Mb/s".
pub(super) fn rate_text(bytes_per_sec: f64) -> String {
    // Rates are measured, so fractions of a byte are noise; a negative or
    // NaN rate (none is sent) shows as 0.
    let bytes = if bytes_per_sec.is_finite() && bytes_per_sec > 0.0 {
        bytes_per_sec.round() as u64
    } else {
        0
    };
    format!("{}/s", bytesize::ByteSize(bytes).display().si_bits())
}

/// Time left, to the second: "1h 2m 5s"; "-" when unknown.
pub(super) fn eta_text(secs: Option<u64>) -> String {
    match secs {
        Some(s) => humantime::format_duration(std::time::Duration::from_secs(s)).to_string(),
        None => "-".into(),
    }
}

/// How long the edge has run, to the second.
pub(super) fn uptime_text(secs: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_rates_and_durations_read_as_people_write_them() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(800_000), "781.2 KiB");
        assert_eq!(human(10 << 30), "10.0 GiB");
        assert_eq!(rate_text(5_000_000.0), "40.0 Mb/s");
        assert_eq!(rate_text(f64::NAN), "0 b/s");
        assert_eq!(eta_text(Some(3725)), "1h 2m 5s");
        assert_eq!(eta_text(None), "-");
        assert_eq!(uptime_text(90), "1m 30s");
    }

    #[test]
    fn long_urls_keep_their_end() {
        assert_eq!(short_url("http://h/a/b/c/file.msi", 12), ".../file.msi");
        assert_eq!(short_url("http://h/x", 12), "http://h/x");
    }

    #[test]
    fn query_values_are_form_encoded() {
        assert_eq!(
            query_value("http://h/a b+c?d=1&e"),
            "http%3A%2F%2Fh%2Fa+b%2Bc%3Fd%3D1%26e"
        );
    }
}
