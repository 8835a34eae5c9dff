//! The audit log page and the alerts page: read-only tables.

use super::html::{Markup, ago, html, path_segment, timestamp};

/// One audit entry, as the manager records it.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub at: i64,
    pub who: String,
    pub from: String,
    pub what: String,
    pub detail: String,
}

pub fn render_audit(rows: &[AuditRow]) -> Markup {
    let mut out = Markup::new();
    out.raw("<h1>Audit log</h1>");
    if rows.is_empty() {
        out.raw("<p class=\"muted\">Nothing recorded yet.</p>");
        return out;
    }
    out.raw("<table id=\"audit\"><thead><tr><th>When</th><th>Who</th><th>From</th><th>What</th><th>Detail</th></tr></thead><tbody>");
    for row in rows {
        html!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            timestamp(row.at),
            row.who,
            row.from,
            row.what,
            row.detail
        );
    }
    out.raw("</tbody></table>");
    out
}

/// One alert: open while `closed` is `None`.
#[derive(Debug, Clone)]
pub struct AlertRow {
    pub site: String,
    pub kind: String,
    pub subject: String,
    pub detail: String,
    pub opened: i64,
    pub closed: Option<i64>,
}

pub fn render_alerts(rows: &[AlertRow], with_site: bool, now: i64) -> Markup {
    let mut out = Markup::new();
    if rows.is_empty() {
        out.raw("<p class=\"muted\" id=\"no-alerts\">No alerts.</p>");
        return out;
    }
    out.raw("<table class=\"alerts\"><thead><tr><th>State</th>");
    if with_site {
        out.raw("<th>Site</th>");
    }
    out.raw("<th>Kind</th><th>Subject</th><th>Detail</th><th>Opened</th><th>Closed</th></tr></thead><tbody>");
    for row in rows {
        let (class, word) = match row.closed {
            None => ("failed", "open"),
            Some(_) => ("complete", "closed"),
        };
        html!(
            out,
            "<tr><td><span class=\"state {}\">{}</span></td>",
            class,
            word
        );
        if with_site {
            html!(
                out,
                "<td><a href=\"/sites/{}\">{}</a></td>",
                path_segment(&row.site),
                row.site
            );
        }
        html!(
            out,
            "<td>{}</td><td>{}</td><td>{}</td><td>{} ({} ago)</td>",
            row.kind,
            row.subject,
            row.detail,
            timestamp(row.opened),
            ago(now - row.opened)
        );
        match row.closed {
            Some(closed) => html!(out, "<td>{}</td></tr>", timestamp(closed)),
            None => out.raw("<td>-</td></tr>"),
        }
    }
    out.raw("</tbody></table>");
    out
}
