//! A site's page: its edge, channels, state history, config versions,
//! alerts and rendered config with the scope of each part.

use outpost_protocol::{EdgeReport, EdgeState, EdgeSummary};

use super::audit::{AlertRow, render_alerts};
use super::config::HistoryRow;
use super::html::{Markup, ago, bytes, html, path_segment, query_value, timestamp};

/// Where one entry of the rendered document came from.
#[derive(Debug, Clone)]
pub struct OriginRow {
    pub table: String,
    pub key: String,
    pub scope: String,
}

/// The site's rendered (published) document.
#[derive(Debug, Clone)]
pub struct RenderedView {
    pub version: Option<u64>,
    pub layers: Vec<String>,
    pub toml: String,
    pub origins: Vec<OriginRow>,
}

pub struct SiteView<'a> {
    pub edge: &'a EdgeSummary,
    pub report: Option<&'a EdgeReport>,
    /// (unix seconds, state), newest first.
    pub states: &'a [(i64, String)],
    /// (unix seconds, `config` or `sync`, what happened), newest first.
    pub events: &'a [(i64, String, String)],
    pub alerts: &'a [AlertRow],
    pub rendered: Option<&'a RenderedView>,
    pub history: &'a [HistoryRow],
    pub published_version: u64,
    pub is_admin: bool,
    pub csrf: &'a str,
    pub now: i64,
}

pub fn render_site(view: &SiteView<'_>) -> Markup {
    let edge = view.edge;
    let mut out = Markup::new();
    html!(
        out,
        "<h1>Site <span id=\"site-name\">{}</span> <span class=\"state {}\" id=\"site-state\">{}</span></h1>",
        edge.site,
        edge.state.as_str(),
        edge.state.as_str()
    );
    out.raw("<table id=\"site-summary\"><tbody>");
    row(&mut out, "Host", edge.hostname.as_deref().unwrap_or("-"));
    row(&mut out, "Groups", &edge.groups.join(", "));
    row(&mut out, "Version", edge.version.as_deref().unwrap_or("-"));
    row(
        &mut out,
        "State since",
        &format!(
            "{} ({} ago)",
            timestamp(edge.state_since),
            ago(view.now - edge.state_since)
        ),
    );
    row(
        &mut out,
        "Last heartbeat",
        &edge
            .last_seen
            .map(|t| format!("{} ({} ago)", timestamp(t), ago(view.now - t)))
            .unwrap_or_else(|| "never".into()),
    );
    let applied = match &edge.config_error {
        Some(error) => format!(
            "v{} applied; a later version was rejected: {error}",
            edge.config_version_applied
        ),
        None => format!(
            "v{} applied (published: v{})",
            edge.config_version_applied, view.published_version
        ),
    };
    row(&mut out, "Config", &applied);
    if let Some(report) = view.report {
        row(&mut out, "Uptime", &ago(report.uptime_seconds as i64));
        let percent = report
            .disk_used
            .saturating_mul(100)
            .checked_div(report.disk_limit)
            .unwrap_or(0);
        row(
            &mut out,
            "Disk",
            &format!(
                "{} of {} ({percent} %)",
                bytes(report.disk_used),
                bytes(report.disk_limit)
            ),
        );
        row(
            &mut out,
            "Traffic since start",
            &format!(
                "hit ratio {:.1} %, WAN in {}, LAN out {}, saved {}, {} fills active",
                report.hit_ratio_bytes * 100.0,
                bytes(report.wan_bytes_in),
                bytes(report.lan_bytes_out),
                bytes(report.bytes_saved),
                report.active_fills
            ),
        );
    }
    out.raw("</tbody></table>");
    if view.is_admin {
        admin_forms(&mut out, view);
    }

    out.raw("<h2>Channels</h2>");
    match view.report {
        Some(report) if !report.channels.is_empty() => channels(&mut out, report, view),
        _ => out.raw("<p class=\"muted\">The edge has reported no channel.</p>"),
    }

    out.raw("<h2>State history</h2>");
    if view.states.is_empty() {
        out.raw("<p class=\"muted\">No change recorded.</p>");
    } else {
        out.raw("<table id=\"states\"><thead><tr><th>When</th><th>State</th></tr></thead><tbody>");
        for (at, state) in view.states {
            html!(
                out,
                "<tr><td>{}</td><td><span class=\"state {}\">{}</span></td></tr>",
                timestamp(*at),
                state,
                state
            );
        }
        out.raw("</tbody></table>");
    }

    out.raw("<h2>Config and sync history</h2>");
    if view.events.is_empty() {
        out.raw("<p class=\"muted\">No config applied or sync finished yet.</p>");
    } else {
        out.raw("<table id=\"events\"><thead><tr><th>When</th><th>What</th><th>Detail</th></tr></thead><tbody>");
        for (at, kind, detail) in view.events {
            html!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                timestamp(*at),
                kind,
                detail
            );
        }
        out.raw("</tbody></table>");
    }

    out.raw("<h2>Alerts</h2>");
    out.push(&render_alerts(view.alerts, false, view.now));

    out.raw("<h2>Config</h2>");
    match view.rendered {
        Some(rendered) => rendered_config(&mut out, rendered),
        None => out.raw("<p class=\"muted\">No config is published for this site.</p>"),
    }
    if !view.history.is_empty() {
        out.raw("<h3>Versions</h3><table id=\"versions\"><thead><tr><th>Version</th><th>When</th><th>Who</th><th>Comment</th><th>Here</th></tr></thead><tbody>");
        for version in view.history {
            let here = if version.version == edge.config_version_applied {
                "running"
            } else {
                ""
            };
            html!(
                out,
                "<tr><td>v{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                version.version,
                timestamp(version.created),
                version.created_by,
                version.comment,
                here
            );
        }
        out.raw("</tbody></table>");
    }
    out
}

fn row(out: &mut Markup, label: &str, value: &str) {
    html!(out, "<tr><th>{}</th><td>{}</td></tr>", label, value);
}

fn admin_forms(out: &mut Markup, view: &SiteView<'_>) {
    let site = path_segment(&view.edge.site);
    if view.edge.state == EdgeState::Pending {
        html!(
            out,
            "<form method=\"post\" action=\"/sites/{}/approve\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\" id=\"approve\">Approve this edge</button></form> ",
            site,
            view.csrf
        );
    }
    if view.edge.state != EdgeState::Revoked {
        html!(
            out,
            "<form method=\"post\" action=\"/sites/{}/revoke\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\" id=\"revoke\">Revoke this edge</button></form>",
            site,
            view.csrf
        );
    }
}

fn channels(out: &mut Markup, report: &EdgeReport, view: &SiteView<'_>) {
    out.raw("<table id=\"channels\"><thead><tr><th>Channel</th><th>Files</th><th>Bytes</th><th>Last sync</th><th>Missing</th><th>Problems</th>");
    if view.is_admin {
        out.raw("<th></th>");
    }
    out.raw("</tr></thead><tbody>");
    for channel in &report.channels {
        html!(
            out,
            "<tr data-channel=\"{}\"><td><a href=\"/readiness?channel={}\">{}</a>",
            channel.name,
            query_value(&channel.name),
            channel.name
        );
        if channel.syncing {
            html!(
                out,
                " <span class=\"state syncing\">syncing, {} to go</span>",
                channel.files_syncing
            );
        }
        html!(
            out,
            "</td><td class=\"num\">{}/{} present, {} failed, {} quarantined</td><td class=\"num\">{} of {}</td>",
            channel.files_present,
            channel.files_total,
            channel.files_failed,
            channel.files_quarantined,
            bytes(channel.bytes_present),
            bytes(channel.bytes_total)
        );
        match (&channel.last_result, channel.last_finished) {
            (Some(result), Some(at)) => html!(out, "<td>{} at {}</td>", result, timestamp(at)),
            (Some(result), None) => html!(out, "<td>{}</td>", result),
            _ => out.raw("<td class=\"muted\">never</td>"),
        }
        out.raw("<td>");
        for path in channel.missing.iter().take(10) {
            html!(out, "{}<br>", path);
        }
        let more = channel.missing.len().saturating_sub(10);
        if more > 0 || channel.missing_truncated {
            html!(
                out,
                "<span class=\"muted\">and {} more</span>",
                if channel.missing_truncated {
                    "many".to_owned()
                } else {
                    more.to_string()
                }
            );
        }
        out.raw("</td><td>");
        for problem in channel.problems.iter().take(10) {
            html!(out, "{}: {}<br>", problem.url, problem.error);
        }
        out.raw("</td>");
        if view.is_admin {
            html!(
                out,
                "<td><form method=\"post\" action=\"/sites/{}/sync\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"channel\" value=\"{}\"><button type=\"submit\">Sync now</button></form></td>",
                path_segment(&view.edge.site),
                view.csrf,
                channel.name
            );
        }
        out.raw("</tr>");
    }
    out.raw("</tbody></table>");
}

fn rendered_config(out: &mut Markup, rendered: &RenderedView) {
    html!(
        out,
        "<p>Published version {}; scopes applied in order: {}.</p>",
        rendered
            .version
            .map(|v| format!("v{v}"))
            .unwrap_or_else(|| "(draft)".into()),
        rendered.layers.join(" < ")
    );
    if !rendered.origins.is_empty() {
        out.raw("<table id=\"origins\"><thead><tr><th>Part</th><th>Name</th><th>From scope</th></tr></thead><tbody>");
        for origin in &rendered.origins {
            html!(
                out,
                "<tr><td>{}</td><td>{}</td><td><a href=\"/config?scope={}\">{}</a></td></tr>",
                origin.table,
                origin.key,
                query_value(&origin.scope),
                origin.scope
            );
        }
        out.raw("</tbody></table>");
    }
    html!(out, "<pre id=\"rendered\">{}</pre>", rendered.toml);
}
