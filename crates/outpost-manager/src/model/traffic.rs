//! Traffic per site and day, from the counters edges report. An edge's
//! counters run from its own start; the manager adds up what they grew by
//! between two heartbeats, so the fleet's "today" and "last 30 days" do not
//! depend on when an edge restarted.
//!
//! Days are UTC days (unix seconds / 86,400). Traffic is counted from an
//! edge's second heartbeat on: the first one's counters say nothing of
//! when their bytes moved.

use outpost_protocol::EdgeReport;

/// Body bytes an edge moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Written to LAN clients.
    pub lan_out: u64,
    /// Fetched over the WAN.
    pub wan_in: u64,
    /// LAN bytes from the edge's copies minus the WAN bytes they cost.
    pub saved: u64,
    /// LAN bytes served from the edge's copies.
    pub from_cache: u64,
}

impl Traffic {
    pub fn add(&mut self, other: Traffic) {
        self.lan_out += other.lan_out;
        self.wan_in += other.wan_in;
        self.saved += other.saved;
        self.from_cache += other.from_cache;
    }

    /// Bytes from the edge's copies over all bytes served; `None` before
    /// any.
    pub fn hit_ratio(&self) -> Option<f64> {
        (self.lan_out > 0).then(|| self.from_cache.min(self.lan_out) as f64 / self.lan_out as f64)
    }

    fn of(report: &EdgeReport) -> Self {
        let ratio = if report.hit_ratio_bytes.is_finite() {
            report.hit_ratio_bytes.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Self {
            lan_out: report.lan_bytes_out,
            wan_in: report.wan_bytes_in,
            saved: report.bytes_saved,
            from_cache: (ratio * report.lan_bytes_out as f64) as u64,
        }
    }
}

/// The UTC day of a unix time.
pub fn day(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(86_400)
}

/// What the edge moved between two reports. A report whose uptime or
/// counters went back is from a restarted edge: everything it counts is
/// new.
pub fn between(previous: Option<&EdgeReport>, next: &EdgeReport) -> Traffic {
    let Some(previous) = previous else {
        return Traffic::default();
    };
    let (before, after) = (Traffic::of(previous), Traffic::of(next));
    let restarted = next.uptime_seconds < previous.uptime_seconds
        || after.lan_out < before.lan_out
        || after.wan_in < before.wan_in
        || after.saved < before.saved;
    if restarted {
        return after;
    }
    Traffic {
        lan_out: after.lan_out - before.lan_out,
        wan_in: after.wan_in - before.wan_in,
        saved: after.saved - before.saved,
        // The ratio is rounded: never let the cached part shrink below 0.
        from_cache: after.from_cache.saturating_sub(before.from_cache),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(uptime: u64, lan: u64, wan: u64, ratio: f64) -> EdgeReport {
        EdgeReport {
            version: "v".into(),
            uptime_seconds: uptime,
            disk_used: 0,
            disk_limit: 1,
            hit_ratio_bytes: ratio,
            wan_bytes_in: wan,
            lan_bytes_out: lan,
            bytes_saved: lan.saturating_sub(wan),
            active_fills: 0,
            channels: Vec::new(),
        }
    }

    #[test]
    fn growth_between_reports_is_counted() {
        let a = report(10, 1000, 1000, 0.0);
        let b = report(40, 11_000, 1000, 10_000.0 / 11_000.0);
        let t = between(Some(&a), &b);
        assert_eq!((t.lan_out, t.wan_in, t.saved), (10_000, 0, 10_000));
        assert_eq!(t.from_cache, 10_000);
        assert_eq!(t.hit_ratio(), Some(1.0));
    }

    #[test]
    fn a_restarted_edge_counts_from_zero() {
        let a = report(5000, 1 << 30, 1 << 20, 0.9);
        let b = report(30, 500, 100, 0.8);
        let t = between(Some(&a), &b);
        assert_eq!((t.lan_out, t.wan_in, t.saved), (500, 100, 400));
    }

    #[test]
    fn the_first_report_counts_nothing_and_bad_ratios_are_tamed() {
        assert_eq!(between(None, &report(1, 10, 10, 0.5)), Traffic::default());
        let a = report(1, 0, 0, 0.0);
        let t = between(Some(&a), &report(2, 100, 0, f64::NAN));
        assert_eq!((t.lan_out, t.from_cache), (100, 0));
        assert_eq!(day(86_399), 0);
        assert_eq!(day(86_400), 1);
        assert_eq!(day(-1), -1);
    }
}
