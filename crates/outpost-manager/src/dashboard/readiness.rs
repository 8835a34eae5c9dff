//! The readiness matrix: channels (or one package path) by sites.

use std::collections::{BTreeSet, HashMap};

use outpost_protocol::{EdgeState, Readiness, ReadinessState, SiteReadiness};

use super::html::{Markup, html, path_segment};

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
    out.raw("<div id=\"matrix-live\" data-refresh>");
    if matrix.is_empty() {
        out.raw("<p class=\"muted\">No channel is published to any site yet.</p></div>");
        return out;
    }
    let sites: BTreeSet<&str> = matrix
        .iter()
        .flat_map(|r| r.sites.iter().map(|s| s.site.as_str()))
        .collect();
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
