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

use crate::cache_status::CacheStatus;

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
    /// What the edge did: the Squid code is derived from it.
    pub result: CacheStatus,
    pub content_type: Option<&'a str>,
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
    let code = r.result.squid_code(r.status);
    let hierarchy = if r.result.went_upstream() {
        "HIER_DIRECT/-"
    } else {
        "HIER_NONE/-"
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

/// One JSON access-log line; serde_json does the escaping.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    /// Seconds since the epoch, to the millisecond (as Squid's first field).
    time: f64,
    elapsed_ms: u128,
    client: IpAddr,
    result: &'static str,
    status: u16,
    bytes: u64,
    method: &'a str,
    url: &'a str,
    content_type: &'a str,
}

fn json_line(r: &AccessRecord<'_>, now: SystemTime) -> String {
    let (secs, ms) = epoch(now);
    let line = JsonLine {
        // Parsed from its decimal form, so that it prints as exactly that.
        time: format!("{secs}.{ms:03}").parse().unwrap_or(secs as f64),
        elapsed_ms: r.elapsed.as_millis(),
        client: r.client,
        result: r.result.squid_code(r.status),
        status: r.status,
        bytes: r.bytes,
        method: r.method,
        url: r.url,
        content_type: r.content_type.unwrap_or(""),
    };
    // Serialising strings and numbers cannot fail; a line is never lost
    // for want of one, though.
    let mut out = serde_json::to_string(&line).unwrap_or_else(|_| "{}".to_string());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(result: CacheStatus, url: &'static str) -> AccessRecord<'static> {
        AccessRecord {
            client: "10.0.0.5".parse().unwrap(),
            method: "GET",
            url,
            status: 200,
            bytes: 1234,
            elapsed: Duration::from_millis(56),
            result,
            content_type: Some("application/x-msi"),
        }
    }

    #[test]
    fn squid_line_has_the_native_fields() {
        let r = record(CacheStatus::Hit, "http://origin/pkg.msi");
        let line = squid_line(&r, UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        assert_eq!(
            line,
            "1700000000.123     56 10.0.0.5 TCP_HIT/200 1234 GET http://origin/pkg.msi - HIER_NONE/- application/x-msi\n"
        );
        let refreshed = squid_line(&record(CacheStatus::Refreshed, "http://o/a"), UNIX_EPOCH);
        assert!(
            refreshed.contains(" TCP_REFRESH_MODIFIED/200 ") && refreshed.contains("HIER_DIRECT/-")
        );
    }

    #[test]
    fn json_line_is_json_whatever_the_url_holds() {
        let r = record(CacheStatus::Miss, "http://origin/a\"b\\c\u{1}d\u{e9}");
        let line = json_line(&r, UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        assert!(line.ends_with("}\n"));
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["url"], "http://origin/a\"b\\c\u{1}d\u{e9}");
        assert_eq!(parsed["result"], "TCP_MISS");
        assert_eq!(parsed["client"], "10.0.0.5");
        assert!(line.starts_with("{\"time\":1700000000.123,"), "{line}");
    }
}
