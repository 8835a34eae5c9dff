//! The fleet table: one row per edge.

use outpost_protocol::{EdgeState, EdgeSummary};

use serde::Deserialize;

use super::html::{Markup, ago, bytes, html, path_segment};

/// At most this many rows: a fleet of thousands is read through the
/// filter (and the API), not scrolled.
pub const FLEET_ROWS_SHOWN: usize = 1000;

/// `/?state=down&site=osl`: which rows to show.
#[derive(Debug, Default, Deserialize)]
pub struct FleetFilter {
    pub state: Option<String>,
    pub site: Option<String>,
}

impl FleetFilter {
    fn matches(&self, edge: &EdgeSummary) -> bool {
        let state_ok = match self.state.as_deref() {
            None | Some("") => true,
            Some(state) => edge.state.as_str() == state,
        };
        let site_ok = match self.site.as_deref().map(str::trim) {
            None | Some("") => true,
            Some(part) => edge
                .site
                .to_ascii_lowercase()
                .contains(&part.to_ascii_lowercase()),
        };
        state_ok && site_ok
    }

    /// The filter form; outside the live region so typing is not undone
    /// by a refresh.
    pub fn render_form(&self) -> Markup {
        let mut out = Markup::new();
        out.raw("<form method=\"get\" action=\"/\" id=\"fleet-filter\"><label>State <select name=\"state\"><option value=\"\">any</option>");
        for state in ["up", "stale", "down", "revoked", "pending"] {
            let selected = if self.state.as_deref() == Some(state) {
                " selected"
            } else {
                ""
            };
            html!(
                out,
                "<option value=\"{}\"{}>{}</option>",
                state,
                selected,
                state
            );
        }
        html!(
            out,
            "</select></label> <label>Site <input name=\"site\" size=\"20\" value=\"{}\"></label> <button type=\"submit\">Filter</button></form>",
            self.site.as_deref().unwrap_or("")
        );
        out
    }
}

/// One edge as the table shows it: the API's summary plus its traffic by
/// day (see `model::traffic`).
#[derive(Debug, Clone)]
pub struct FleetRow {
    pub summary: EdgeSummary,
    pub traffic: crate::manager::SiteTraffic,
}

/// The table (refreshed live: `data-refresh`), with counts by state over
/// the whole fleet and the rows the filter lets through.
pub fn render_fleet(
    rows: &[FleetRow],
    filter: &FleetFilter,
    desired_version: u64,
    now: i64,
) -> Markup {
    let mut out = Markup::new();
    let count = |state: EdgeState| rows.iter().filter(|r| r.summary.state == state).count();
    out.raw("<div id=\"fleet-live\" data-refresh>");
    html!(
        out,
        "<p id=\"fleet-counts\">{} edges: <span class=\"state up\">{} up</span> <span class=\"state stale\">{} stale</span> <span class=\"state down\">{} down</span>",
        rows.len(),
        count(EdgeState::Up),
        count(EdgeState::Stale),
        count(EdgeState::Down)
    );
    let (pending, revoked) = (count(EdgeState::Pending), count(EdgeState::Revoked));
    if pending > 0 {
        html!(
            out,
            " <span class=\"state pending\">{} pending approval</span>",
            pending
        );
    }
    if revoked > 0 {
        html!(
            out,
            " <span class=\"state revoked\">{} revoked</span>",
            revoked
        );
    }
    html!(out, " &middot; published config v{}</p>", desired_version);
    if rows.is_empty() {
        out.raw("<p class=\"muted\">No edge has enrolled yet. Join one with <code>outpost serve --manager URL --join-token TOKEN --site NAME</code>.</p></div>");
        return out;
    }
    let shown: Vec<&FleetRow> = rows.iter().filter(|r| filter.matches(&r.summary)).collect();
    if shown.len() < rows.len() {
        html!(out, "<p>{} edges match the filter.</p>", shown.len());
    }
    out.raw(
        "<table id=\"fleet\"><thead><tr><th>Site</th><th>Groups</th><th>Version</th>\
         <th>State</th><th>Last heartbeat</th><th>Disk</th><th>Hit ratio today</th>\
         <th>WAN saved today</th><th>WAN saved, 30 days</th><th>Config</th></tr></thead><tbody>",
    );
    for row in shown.iter().take(FLEET_ROWS_SHOWN) {
        let edge = &row.summary;
        html!(
            out,
            "<tr data-site=\"{}\"><td><a href=\"/sites/{}\">{}</a></td><td>{}</td><td>{}</td>",
            edge.site,
            path_segment(&edge.site),
            edge.site,
            edge.groups.join(", "),
            edge.version.as_deref().unwrap_or("-")
        );
        html!(
            out,
            "<td><span class=\"state {}\">{}</span> <span class=\"muted\">for {}</span></td>",
            edge.state.as_str(),
            edge.state.as_str(),
            ago(now - edge.state_since)
        );
        match edge.last_seen {
            Some(seen) => html!(out, "<td>{} ago</td>", ago(now - seen)),
            None => out.raw("<td class=\"muted\">never</td>"),
        };
        match (edge.disk_used, edge.disk_limit) {
            (Some(used), Some(limit)) if limit > 0 => html!(
                out,
                "<td class=\"num\">{} of {} ({} %)</td>",
                bytes(used),
                bytes(limit),
                used.saturating_mul(100) / limit
            ),
            _ => out.raw("<td class=\"muted\">-</td>"),
        };
        match row.traffic.today.hit_ratio() {
            Some(ratio) => html!(
                out,
                "<td class=\"num\">{} %</td>",
                format!("{:.1}", ratio * 100.0)
            ),
            None => out.raw("<td class=\"muted\">-</td>"),
        };
        html!(
            out,
            "<td class=\"num\">{}</td><td class=\"num\">{}</td>",
            bytes(row.traffic.today.saved),
            bytes(row.traffic.last_30_days.saved)
        );
        config_cell(&mut out, edge, desired_version);
        out.raw("</tr>");
    }
    out.raw("</tbody></table>");
    if shown.len() > FLEET_ROWS_SHOWN {
        html!(
            out,
            "<p class=\"muted\">The first {} of {} shown: filter by state or site for the rest.</p>",
            FLEET_ROWS_SHOWN,
            shown.len()
        );
    }
    out.raw("<p class=\"muted\"><span id=\"refreshed\"></span> Today and 30 days are UTC days, counted from the edges' heartbeats.</p></div>");
    out
}

fn config_cell(out: &mut Markup, edge: &EdgeSummary, desired: u64) {
    if let Some(error) = &edge.config_error {
        html!(
            out,
            "<td><span class=\"state rejected\">rejected</span> <span class=\"muted\">{}</span></td>",
            error
        );
    } else if edge.config_version_applied == desired {
        html!(
            out,
            "<td><span class=\"state applied\">v{} applied</span></td>",
            edge.config_version_applied
        );
    } else {
        html!(
            out,
            "<td><span class=\"state pending\">v{} (v{} pending)</span></td>",
            edge.config_version_applied,
            desired
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(site: &str, state: EdgeState) -> EdgeSummary {
        EdgeSummary {
            site: site.into(),
            groups: vec!["east".into()],
            state,
            state_since: 1000,
            last_seen: Some(1990),
            version: Some("0.1.0".into()),
            hostname: None,
            config_version_applied: 3,
            config_error: None,
            disk_used: Some(50),
            disk_limit: Some(200),
            hit_ratio_bytes: Some(0.5),
            traffic: None,
        }
    }

    #[test]
    fn the_table_shows_state_disk_and_config_and_escapes_reports() {
        let mut hostile = summary("oslo", EdgeState::Down);
        hostile.version = Some("<script>alert(1)</script>".into());
        hostile.config_error = Some("bad <b>toml</b>".into());
        let rows = [
            FleetRow {
                summary: summary("bergen", EdgeState::Up),
                traffic: crate::manager::SiteTraffic {
                    today: crate::model::traffic::Traffic {
                        lan_out: 4096,
                        wan_in: 2048,
                        saved: 2048,
                        from_cache: 2048,
                    },
                    last_30_days: crate::model::traffic::Traffic {
                        lan_out: 1 << 30,
                        wan_in: 1 << 20,
                        saved: (1 << 30) - (1 << 20),
                        from_cache: (1 << 30) - (1 << 20),
                    },
                },
            },
            FleetRow {
                summary: hostile,
                traffic: Default::default(),
            },
        ];
        let page = render_fleet(&rows, &FleetFilter::default(), 3, 2000).into_string();
        assert!(page.contains("2 edges"), "{page}");
        assert!(page.contains("v3 applied"));
        assert!(page.contains("50 B of 200 B (25 %)"));
        assert!(page.contains("2.0 KiB"), "{page}");
        assert!(page.contains("50.0 %"), "today's hit ratio: {page}");
        assert!(page.contains("1023.0 MiB"), "30 days saved: {page}");
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("bad &lt;b&gt;toml&lt;/b&gt;"));

        let down_only = FleetFilter {
            state: Some("down".into()),
            site: None,
        };
        let page = render_fleet(&rows, &down_only, 3, 2000).into_string();
        assert!(page.contains("1 edges match the filter."), "{page}");
        assert!(page.contains("data-site=\"oslo\""));
        assert!(!page.contains("data-site=\"bergen\""));
    }
}
