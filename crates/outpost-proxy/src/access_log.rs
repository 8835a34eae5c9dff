//! The access log: one line per request, in Squid's native format (so the
//! log analysers admins already run keep working) or as JSON lines.
//!
//! Lines are handed to a writer thread through a bounded queue, so a slow
//! disk never stalls a client; if the queue is full the line is counted as
//! dropped rather than blocking. `reopen()` (on SIGUSR1) makes the writer
//! reopen the file after logrotate moved it.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Squid,
    Json,
}

/// What is known of a request when its response is done.
pub struct AccessRecord<'a> {
    pub client: IpAddr,
    pub method: &'a str,
    pub url: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub elapsed: Duration,
    /// The edge's `X-Cache` verdict (HIT, MISS, ...), if any.
    pub cache: Option<&'a str>,
    pub content_type: Option<&'a str>,
}

/// Squid's result code for an outcome.
pub fn squid_code(method: &str, status: u16, cache: Option<&str>) -> &'static str {
    if method == "CONNECT" {
        return if status == 200 {
            "TCP_TUNNEL"
        } else {
            "TCP_DENIED"
        };
    }
    if status == 403 && cache.is_none() {
        return "TCP_DENIED";
    }
    match cache {
        Some("HIT") | Some("PARTIAL_HIT") => {
            if status == 304 {
                "TCP_IMS_HIT"
            } else {
                "TCP_HIT"
            }
        }
        Some("REVALIDATED") => "TCP_REFRESH_UNMODIFIED",
        Some("REFRESHED") => "TCP_REFRESH_MODIFIED",
        Some("STALE") => "TCP_REFRESH_FAIL_OLD",
        Some(_) => "TCP_MISS",
        None => "NONE_NONE",
    }
}

pub struct AccessLog {
    tx: SyncSender<String>,
    format: LogFormat,
    reopen: Arc<AtomicBool>,
    pub dropped: AtomicU64,
}

impl AccessLog {
    /// Opens the target (failing now, not at the first request, if it
    /// cannot be written) and starts the writer thread.
    pub fn open(target: LogTarget, format: LogFormat) -> std::io::Result<Self> {
        let writer = open_target(&target)?;
        let (tx, rx) = sync_channel(64 * 1024);
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = reopen.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(rx, writer, target, flag))?;
        Ok(Self {
            tx,
            format,
            reopen,
            dropped: AtomicU64::new(0),
        })
    }

    /// Asks the writer to reopen the file (after log rotation).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    pub fn record(&self, r: &AccessRecord<'_>) {
        let line = match self.format {
            LogFormat::Squid => squid_line(r, SystemTime::now()),
            LogFormat::Json => json_line(r, SystemTime::now()),
        };
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn open_target(target: &LogTarget) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        LogTarget::Stdout => Box::new(std::io::stdout()),
        LogTarget::File(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("access log directory {}: {e}", dir.display()),
                    )
                })?;
            }
            Box::new(
                // Every URL with its query (download tokens): readable by
                // the edge's user and its group (log readers), no one else.
                std::os::unix::fs::OpenOptionsExt::mode(
                    OpenOptions::new().create(true).append(true),
                    0o640,
                )
                .open(path)
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("access log {}: {e}", path.display()))
                })?,
            )
        }
    })
}

fn write_loop(
    rx: Receiver<String>,
    writer: Box<dyn Write + Send>,
    target: LogTarget,
    reopen: Arc<AtomicBool>,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, writer);
    loop {
        let line = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        };
        if reopen.swap(false, Ordering::AcqRel) {
            let _ = out.flush();
            match open_target(&target) {
                Ok(w) => out = BufWriter::with_capacity(64 * 1024, w),
                Err(e) => {
                    tracing::error!(error = %e, "cannot reopen the access log; keeping the old file")
                }
            }
        }
        if let Some(line) = line {
            if let Err(e) = out.write_all(line.as_bytes()) {
                tracing::error!(error = %e, "access log write failed");
            }
            // Flush when the queue is drained so lines appear promptly.
            while let Ok(more) = rx.try_recv() {
                let _ = out.write_all(more.as_bytes());
            }
        }
        let _ = out.flush();
    }
}

fn epoch(now: SystemTime) -> (u64, u32) {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs(), d.subsec_millis())
}

/// `time.ms elapsed client code/status bytes method URL ident hierarchy type`
fn squid_line(r: &AccessRecord<'_>, now: SystemTime) -> String {
    let (secs, ms) = epoch(now);
    let code = squid_code(r.method, r.status, r.cache);
    let hierarchy = match code {
        "TCP_HIT" | "TCP_IMS_HIT" | "TCP_DENIED" | "NONE_NONE" => "HIER_NONE/-",
        _ => "HIER_DIRECT/-",
    };
    format!(
        "{secs}.{ms:03} {:>6} {} {code}/{:03} {} {} {} - {hierarchy} {}\n",
        r.elapsed.as_millis(),
        r.client,
        r.status,
        r.bytes,
        r.method,
        r.url.replace(' ', "%20"),
        r.content_type.unwrap_or("-"),
    )
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn json_line(r: &AccessRecord<'_>, now: SystemTime) -> String {
    let (secs, ms) = epoch(now);
    format!(
        "{{\"time\":{secs}.{ms:03},\"elapsed_ms\":{},\"client\":\"{}\",\"result\":\"{}\",\"status\":{},\"bytes\":{},\"method\":\"{}\",\"url\":\"{}\",\"content_type\":\"{}\"}}\n",
        r.elapsed.as_millis(),
        r.client,
        squid_code(r.method, r.status, r.cache),
        r.status,
        r.bytes,
        json_escape(r.method),
        json_escape(r.url),
        json_escape(r.content_type.unwrap_or("")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squid_line_has_the_native_fields() {
        let r = AccessRecord {
            client: "10.0.0.5".parse().unwrap(),
            method: "GET",
            url: "http://origin/pkg.msi",
            status: 200,
            bytes: 1234,
            elapsed: Duration::from_millis(56),
            cache: Some("HIT"),
            content_type: Some("application/x-msi"),
        };
        let line = squid_line(&r, UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        assert_eq!(
            line,
            "1700000000.123     56 10.0.0.5 TCP_HIT/200 1234 GET http://origin/pkg.msi - HIER_NONE/- application/x-msi\n"
        );
        assert_eq!(squid_code("GET", 200, Some("MISS")), "TCP_MISS");
        assert_eq!(
            squid_code("GET", 200, Some("REVALIDATED")),
            "TCP_REFRESH_UNMODIFIED"
        );
        assert_eq!(squid_code("CONNECT", 200, None), "TCP_TUNNEL");
        let json = json_line(&r, UNIX_EPOCH);
        assert!(json.contains("\"result\":\"TCP_HIT\"") && json.ends_with("}\n"));
    }
}
