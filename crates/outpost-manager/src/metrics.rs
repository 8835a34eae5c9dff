//! `/metrics`: Prometheus text for the whole fleet, so one scrape of the
//! manager covers every site behind NAT. Written straight from the
//! in-memory fleet (no registry to keep in step with 10,000 sites): one
//! pass under the read lock, a few MB of text for a large fleet.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use outpost_protocol::EdgeState;

use crate::Manager;

const STATES: [EdgeState; 5] = [
    EdgeState::Up,
    EdgeState::Stale,
    EdgeState::Down,
    EdgeState::Revoked,
    EdgeState::Pending,
];

/// A label value, escaped as the text format wants.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

struct Row {
    /// Escaped for a label already.
    site: String,
    state: EdgeState,
    last_seen_ms: Option<i64>,
    config_applied: u64,
    report: Option<std::sync::Arc<outpost_protocol::EdgeReport>>,
}

impl Manager {
    pub fn render_metrics(&self) -> String {
        // A copy of what the text needs (the reports are shared, not
        // copied), so heartbeats do not wait for the text to be written.
        let (edges, version): (Vec<Row>, u64) = {
            let fleet = self.read();
            let rows = fleet
                .edges
                .values()
                .map(|e| Row {
                    site: label(&e.site),
                    state: e.state,
                    last_seen_ms: e.last_seen_ms,
                    config_applied: e.config_applied,
                    report: e.report.clone(),
                })
                .collect();
            (rows, fleet.published.version)
        };
        let mut out = String::with_capacity(256 + edges.len() * 1024);
        let per_site: [(&str, &str, &str); 13] = [
            (
                "outpost_fleet_edge_up",
                "gauge",
                "1 when the edge's last heartbeat is within 1.5 intervals",
            ),
            (
                "outpost_fleet_edge_state",
                "gauge",
                "1 for the edge's current state (up, stale, down, revoked, pending)",
            ),
            (
                "outpost_fleet_edge_last_seen_seconds",
                "gauge",
                "Unix time of the edge's last heartbeat",
            ),
            (
                "outpost_fleet_disk_used_bytes",
                "gauge",
                "Bytes the edge's cache uses",
            ),
            (
                "outpost_fleet_disk_limit_bytes",
                "gauge",
                "The edge's cache size limit",
            ),
            (
                "outpost_fleet_hit_ratio_bytes",
                "gauge",
                "Bytes served from the edge's copies over all bytes served",
            ),
            (
                "outpost_fleet_wan_bytes_in_total",
                "counter",
                "Body bytes the edge fetched over the WAN since it started",
            ),
            (
                "outpost_fleet_lan_bytes_out_total",
                "counter",
                "Body bytes the edge wrote to LAN clients since it started",
            ),
            (
                "outpost_fleet_bytes_saved_total",
                "counter",
                "LAN bytes served from copies minus their WAN cost, since start",
            ),
            (
                "outpost_fleet_active_fills",
                "gauge",
                "Fills in progress at the edge",
            ),
            (
                "outpost_fleet_config_version_applied",
                "gauge",
                "The managed config version the edge runs",
            ),
            (
                "outpost_fleet_channel_files_present",
                "gauge",
                "Files of the channel present at the edge",
            ),
            (
                "outpost_fleet_channel_files_total",
                "gauge",
                "Files the channel's last listing named",
            ),
        ];
        // One family at a time, as the text format requires.
        for (name, kind, help) in per_site {
            head(&mut out, name, kind, help);
            for edge in &edges {
                let site = &edge.site;
                let report = edge.report.as_deref();
                let mut line = |value: String| {
                    let _ = writeln!(out, "{name}{{site=\"{site}\"}} {value}");
                };
                match name {
                    "outpost_fleet_edge_up" => {
                        line(u8::from(edge.state == EdgeState::Up).to_string())
                    }
                    "outpost_fleet_edge_state" => {
                        for state in STATES {
                            let _ = writeln!(
                                out,
                                "{name}{{site=\"{site}\",state=\"{}\"}} {}",
                                state.as_str(),
                                u8::from(edge.state == state)
                            );
                        }
                    }
                    "outpost_fleet_edge_last_seen_seconds" => {
                        if let Some(ms) = edge.last_seen_ms {
                            line(format!("{}", ms / 1000));
                        }
                    }
                    "outpost_fleet_config_version_applied" => line(edge.config_applied.to_string()),
                    _ => {
                        let Some(r) = report else { continue };
                        match name {
                            "outpost_fleet_disk_used_bytes" => line(r.disk_used.to_string()),
                            "outpost_fleet_disk_limit_bytes" => line(r.disk_limit.to_string()),
                            "outpost_fleet_hit_ratio_bytes" => line(r.hit_ratio_bytes.to_string()),
                            "outpost_fleet_wan_bytes_in_total" => line(r.wan_bytes_in.to_string()),
                            "outpost_fleet_lan_bytes_out_total" => {
                                line(r.lan_bytes_out.to_string())
                            }
                            "outpost_fleet_bytes_saved_total" => line(r.bytes_saved.to_string()),
                            "outpost_fleet_active_fills" => line(r.active_fills.to_string()),
                            "outpost_fleet_channel_files_present"
                            | "outpost_fleet_channel_files_total" => {
                                for ch in &r.channels {
                                    let value = if name.ends_with("present") {
                                        ch.files_present
                                    } else {
                                        ch.files_total
                                    };
                                    let _ = writeln!(
                                        out,
                                        "{name}{{site=\"{site}\",channel=\"{}\"}} {value}",
                                        label(&ch.name)
                                    );
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        head(&mut out, "outpost_manager_edges", "gauge", "Edges by state");
        for state in STATES {
            let n = edges.iter().filter(|e| e.state == state).count();
            let _ = writeln!(
                out,
                "outpost_manager_edges{{state=\"{}\"}} {n}",
                state.as_str()
            );
        }
        head(
            &mut out,
            "outpost_manager_config_version",
            "gauge",
            "The published config version",
        );
        let _ = writeln!(out, "outpost_manager_config_version {version}");
        let counters = [
            (
                "outpost_manager_heartbeats_total",
                "counter",
                "Heartbeats received",
                self.stats.heartbeats_total.load(Ordering::Relaxed) as i64,
            ),
            (
                "outpost_manager_enrolments_total",
                "counter",
                "Edges enrolled since start",
                self.stats.enrolments_total.load(Ordering::Relaxed) as i64,
            ),
            (
                "outpost_manager_long_polls_open",
                "gauge",
                "Long polls waiting now",
                self.stats.long_polls_open.load(Ordering::Relaxed),
            ),
            (
                "outpost_manager_sessions_open",
                "gauge",
                "Edge sessions open now (an edge's calls on one upgraded connection)",
                self.stats.sessions_open.load(Ordering::Relaxed),
            ),
            (
                "outpost_manager_connections_open",
                "gauge",
                "Client connections open now (an edge holds one over HTTPS)",
                self.stats.connections_open.load(Ordering::Relaxed),
            ),
            (
                "outpost_manager_connections_http2_open",
                "gauge",
                "Open connections that chose HTTP/2 by ALPN",
                self.stats.connections_http2_open.load(Ordering::Relaxed),
            ),
            (
                "outpost_manager_connections_accepted_total",
                "counter",
                "Client connections accepted (over HTTPS, each a TLS handshake)",
                self.stats
                    .connections_accepted_total
                    .load(Ordering::Relaxed) as i64,
            ),
            (
                "outpost_manager_alerts_open",
                "gauge",
                "Alerts open now",
                self.open_alerts().len() as i64,
            ),
            (
                "outpost_manager_webhook_delivered_total",
                "counter",
                "Alert events the webhook accepted",
                self.stats.webhook_delivered_total.load(Ordering::Relaxed) as i64,
            ),
            (
                "outpost_manager_webhook_failed_total",
                "counter",
                "Alert events not delivered after every retry",
                self.stats.webhook_failed_total.load(Ordering::Relaxed) as i64,
            ),
            (
                "outpost_manager_webhook_dropped_total",
                "counter",
                "Alert events dropped because the webhook queue was full",
                self.stats.webhook_dropped_total.load(Ordering::Relaxed) as i64,
            ),
        ];
        for (name, kind, help, value) in counters {
            head(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
