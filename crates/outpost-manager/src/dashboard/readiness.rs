//! The readiness matrix: channels (or one package path) by sites.

use std::collections::{BTreeSet, HashMap};

use outpost_protocol::{EdgeState, Readiness, ReadinessState, SiteReadiness};

use super::html::{Markup, html, path_segment};

/// Above this many sites a matrix is too wide to read: the page shows
/// counts per channel and lists the sites that are not complete.
pub const MATRIX_MAX_SITES: usize = 40;
/// At most this many not-complete sites listed per channel.
const NOT_READY_LISTED: usize = 200;

/// The query form, then the matrix (refreshed live).
pub fn render_readiness(
    all_channels: &[String],
    matrix: &[Readiness],
    channel: Option<&str>,
    path: Option<&str>,
) -> Markup {
    let mut out = Markup::new();
    out.raw("<form method=\"get\" action=\"/readiness\" id=\"package-form\"><label>Channel <select name=\"channel\" id=\"channel\"><option value=\"\">all channels</option>");
    for name in all_channels {
        let selected = if Some(name.as_str()) == channel {
            " selected"
        } else {
            ""
        };
        html!(
            out,
            "<option value=\"{}\"{}>{}</option>",
            name,
            selected,
            name
        );
    }
    html!(
        out,
        "</select></label> <label>Package path <input name=\"path\" id=\"path\" size=\"40\" placeholder=\"e.g. office/setup.msi\" value=\"{}\"></label> <button type=\"submit\" id=\"ask\">Is it ready?</button></form>",
        path.unwrap_or("")
    );
    let sites: BTreeSet<&str> = matrix
        .iter()
        .flat_map(|r| r.sites.iter().map(|s| s.site.as_str()))
        .collect();
    if sites.len() > MATRIX_MAX_SITES {
        // A summary over thousands of sites costs real work: refresh it
        // less often than a small matrix.
        out.raw("<div id=\"matrix-live\" data-refresh=\"30\">");
    } else {
        out.raw("<div id=\"matrix-live\" data-refresh>");
    }
    if matrix.is_empty() {
        out.raw("<p class=\"muted\">No channel is published to any site yet.</p></div>");
        return out;
    }
    if sites.len() > MATRIX_MAX_SITES {
        render_summary(&mut out, matrix, sites.len());
        return out;
    }
    out.raw("<table id=\"matrix\"><thead><tr><th>Channel</th><th>Ready everywhere</th>");
    for site in &sites {
        html!(
            out,
            "<th><a href=\"/sites/{}\">{}</a></th>",
            path_segment(site),
            site
        );
    }
    out.raw("</tr></thead><tbody>");
    for readiness in matrix {
        let by_site: HashMap<&str, &SiteReadiness> = readiness
            .sites
            .iter()
            .map(|s| (s.site.as_str(), s))
            .collect();
        html!(
            out,
            "<tr data-channel=\"{}\"><th>{}",
            readiness.channel,
            readiness.channel
        );
        if let Some(path) = &readiness.path {
            html!(out, "<br><span class=\"muted\">{}</span>", path);
        }
        let (class, word) = if readiness.ready {
            ("complete", "yes")
        } else {
            ("failed", "no")
        };
        html!(
            out,
            "</th><td><span class=\"state {}\">{}</span></td>",
            class,
            word
        );
        for site in &sites {
            match by_site.get(site) {
                Some(cell) => render_cell(&mut out, cell),
                None => out.raw("<td class=\"muted\" title=\"not assigned\">-</td>"),
            }
        }
        out.raw("</tr>");
    }
    out.raw("</tbody></table><p class=\"muted\"><span id=\"refreshed\"></span></p></div>");
    out
}

/// Counts by state per channel, then the sites that are not complete.
fn render_summary(out: &mut Markup, matrix: &[Readiness], site_count: usize) {
    const STATES: [ReadinessState; 5] = [
        ReadinessState::Complete,
        ReadinessState::Syncing,
        ReadinessState::Failed,
        ReadinessState::Missing,
        ReadinessState::Quarantined,
    ];
    html!(
        out,
        "<p>{} sites: counts per channel, then every site that is not complete.</p>",
        site_count
    );
    out.raw("<table id=\"summary\"><thead><tr><th>Channel</th><th>Ready everywhere</th>");
    for state in STATES {
        html!(out, "<th>{}</th>", state.as_str());
    }
    out.raw("</tr></thead><tbody>");
    for readiness in matrix {
        let (class, word) = if readiness.ready {
            ("complete", "yes")
        } else {
            ("failed", "no")
        };
        html!(
            out,
            "<tr data-channel=\"{}\"><th>{}</th><td><span class=\"state {}\">{}</span></td>",
            readiness.channel,
            readiness.channel,
            class,
            word
        );
        for state in STATES {
            let count = readiness.sites.iter().filter(|s| s.state == state).count();
            html!(out, "<td class=\"num\">{}</td>", count);
        }
        out.raw("</tr>");
    }
    out.raw("</tbody></table>");
    for readiness in matrix {
        let not_ready: Vec<&SiteReadiness> = readiness
            .sites
            .iter()
            .filter(|s| s.state != ReadinessState::Complete)
            .collect();
        if not_ready.is_empty() {
            continue;
        }
        html!(
            out,
            "<h2>{}: {} sites not complete</h2><table class=\"not-ready\" data-channel=\"{}\"><thead><tr><th>Site</th><th>State</th></tr></thead><tbody>",
            readiness.channel,
            not_ready.len(),
            readiness.channel
        );
        for cell in not_ready.iter().take(NOT_READY_LISTED) {
            html!(
                out,
                "<tr><th><a href=\"/sites/{}\">{}</a></th>",
                path_segment(&cell.site),
                cell.site
            );
            render_cell(out, cell);
            out.raw("</tr>");
        }
        out.raw("</tbody></table>");
        if not_ready.len() > NOT_READY_LISTED {
            html!(
                out,
                "<p class=\"muted\">and {} more; the API lists them all: GET /api/v1/readiness?channel={}</p>",
                not_ready.len() - NOT_READY_LISTED,
                readiness.channel
            );
        }
    }
    out.raw("<p class=\"muted\"><span id=\"refreshed\"></span></p></div>");
}

fn render_cell(out: &mut Markup, cell: &SiteReadiness) {
    html!(
        out,
        "<td data-site=\"{}\"><span class=\"state {}\">",
        cell.site,
        cell.state.as_str()
    );
    match cell.state {
        ReadinessState::Syncing => html!(out, "syncing {} %", percent(cell)),
        state => out.text(state.as_str()),
    }
    out.raw("</span>");
    if cell.files_total > 0 {
        html!(
            out,
            " <span class=\"muted\">{}/{} files</span>",
            cell.files_present,
            cell.files_total
        );
    }
    if let Some(detail) = &cell.detail {
        html!(out, "<br><span class=\"detail\">{}</span>", detail);
    }
    if cell.edge_state != EdgeState::Up {
        html!(
            out,
            "<br><span class=\"muted\">edge {}</span>",
            cell.edge_state.as_str()
        );
    }
    out.raw("</td>");
}

fn percent(cell: &SiteReadiness) -> u64 {
    let (have, want) = if cell.bytes_total > 0 {
        (cell.bytes_present, cell.bytes_total)
    } else {
        (cell.files_present, cell.files_total)
    };
    have.min(want)
        .saturating_mul(100)
        .checked_div(want)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_fleet_gets_counts_and_the_sites_that_are_not_complete() {
        let mut sites: Vec<SiteReadiness> = (0..100)
            .map(|i| cell(&format!("site{i:03}"), ReadinessState::Complete, 4, None))
            .collect();
        sites[42] = cell(
            "site042",
            ReadinessState::Failed,
            3,
            Some("origin answered 404"),
        );
        let matrix = [Readiness {
            channel: "office".into(),
            path: None,
            ready: false,
            sites,
        }];
        let page = render_readiness(&["office".into()], &matrix, None, None).into_string();
        assert!(!page.contains("id=\"matrix\""), "{page}");
        assert!(page.contains("data-refresh=\"30\""), "{page}");
        assert!(page.contains("<td class=\"num\">99</td>"), "{page}");
        assert!(page.contains("office: 1 sites not complete"), "{page}");
        assert!(page.contains("origin answered 404"), "{page}");
        assert!(!page.contains(">site041<"), "{page}");
    }

    fn cell(
        site: &str,
        state: ReadinessState,
        present: u64,
        detail: Option<&str>,
    ) -> SiteReadiness {
        SiteReadiness {
            site: site.into(),
            state,
            edge_state: EdgeState::Up,
            files_present: present,
            files_total: 4,
            bytes_present: present * 100,
            bytes_total: 400,
            detail: detail.map(str::to_owned),
        }
    }

    #[test]
    fn cells_say_complete_syncing_percent_failed_with_reason_and_missing() {
        let matrix = [Readiness {
            channel: "office".into(),
            path: None,
            ready: false,
            sites: vec![
                cell("a", ReadinessState::Complete, 4, None),
                cell("b", ReadinessState::Syncing, 1, None),
                cell("c", ReadinessState::Failed, 3, Some("digest mismatch <x>")),
                cell("d", ReadinessState::Missing, 0, None),
            ],
        }];
        let page = render_readiness(&["office".into()], &matrix, None, None).into_string();
        assert!(page.contains(">complete</span>"), "{page}");
        assert!(page.contains("syncing 25 %"), "{page}");
        assert!(page.contains("digest mismatch &lt;x&gt;"), "{page}");
        assert!(page.contains(">missing</span>"), "{page}");
        assert!(page.contains(">no</span>"), "{page}");
    }
}
