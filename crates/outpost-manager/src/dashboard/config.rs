//! The config editor: a scope's draft TOML, the diff against what is
//! published, publish with a comment, history and rollback.

use super::html::{Markup, html, query_value, timestamp};

/// A published version, for the history table.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    pub version: u64,
    pub created: i64,
    pub created_by: String,
    pub comment: String,
}

/// Everything the editor page shows.
pub struct EditorView<'a> {
    /// Every scope one can edit: global, group:G..., site:S...
    pub scopes: &'a [String],
    pub scope: &'a str,
    /// The draft text of `scope` (or what was just submitted and refused).
    pub text: &'a str,
    /// What the last action did: `Ok` notice or `Err` with check-config's
    /// messages.
    pub message: Option<Result<String, String>>,
    pub published_version: u64,
    /// Per scope: a unified diff, published (`-`) to draft (`+`).
    pub diffs: &'a [(String, String)],
    pub history: &'a [HistoryRow],
    pub is_admin: bool,
    pub csrf: &'a str,
}

pub fn render_editor(view: &EditorView<'_>) -> Markup {
    let mut out = Markup::new();
    out.raw("<h1>Desired config</h1>");
    match &view.message {
        Some(Ok(notice)) => html!(out, "<p class=\"notice\" id=\"message\">{}</p>", notice),
        Some(Err(error)) => html!(out, "<pre class=\"error\" id=\"message\">{}</pre>", error),
        None => {}
    }
    html!(
        out,
        "<p>Published: <strong id=\"published\">v{}</strong>. Precedence: global, then groups (lower priority first, ties by name), then the site; a later scope's channel or override replaces an earlier one of the same name whole, and its <code>[wan]</code> and <code>[server]</code> keys replace the earlier keys.</p>",
        view.published_version
    );
    out.raw("<nav class=\"scopes\">Scope: ");
    for scope in view.scopes {
        if scope == view.scope {
            html!(out, "<strong>{}</strong> ", scope);
        } else {
            html!(
                out,
                "<a href=\"/config?scope={}\">{}</a> ",
                query_value(scope),
                scope
            );
        }
    }
    out.raw("</nav><form method=\"get\" action=\"/config\" id=\"scope-form\"><label>Another scope <input name=\"scope\" id=\"scope\" size=\"24\" placeholder=\"site:NAME or group:NAME\"></label> <button type=\"submit\">Open</button></form>");
    html!(out, "<h2>Draft of {}</h2>", view.scope);
    if view.is_admin {
        html!(
            out,
            "<form method=\"post\" action=\"/config/draft\" id=\"draft-form\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"scope\" value=\"{}\">",
            view.csrf,
            view.scope
        );
        html!(
            out,
            "<textarea name=\"toml\" id=\"toml\" rows=\"18\" spellcheck=\"false\">{}</textarea>",
            view.text
        );
        out.raw("<p><button type=\"submit\" id=\"save\">Save draft</button> <span class=\"muted\">Saving checks the TOML; publishing checks every site's document with check-config's rules.</span></p></form>");
    } else {
        html!(out, "<pre id=\"toml\">{}</pre>", view.text);
    }

    out.raw("<h2>Changes not published</h2>");
    if view.diffs.is_empty() {
        out.raw("<p class=\"muted\" id=\"no-changes\">The drafts are what is published.</p>");
    } else {
        out.raw("<div id=\"diff\">");
        for (scope, diff) in view.diffs {
            html!(out, "<h3>{}</h3><pre>", scope);
            for line in diff.lines() {
                let class = match line.as_bytes().first() {
                    Some(b'+') if !line.starts_with("+++") => "diff-add",
                    Some(b'-') if !line.starts_with("---") => "diff-del",
                    _ => "",
                };
                html!(out, "<span class=\"{}\">{}</span>\n", class, line);
            }
            out.raw("</pre>");
        }
        out.raw("</div>");
        if view.is_admin {
            html!(
                out,
                "<form method=\"post\" action=\"/config/publish\" id=\"publish-form\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><label>Comment <input name=\"comment\" id=\"comment\" size=\"60\" required></label> <button type=\"submit\" id=\"publish\">Publish</button></form>",
                view.csrf
            );
        }
    }

    out.raw("<h2>History</h2>");
    if view.history.is_empty() {
        out.raw("<p class=\"muted\">Nothing published yet.</p>");
        return out;
    }
    out.raw("<table id=\"history\"><thead><tr><th>Version</th><th>When</th><th>Who</th><th>Comment</th><th></th></tr></thead><tbody>");
    for row in view.history {
        html!(
            out,
            "<tr><td>v{}</td><td>{}</td><td>{}</td><td>{}</td><td>",
            row.version,
            timestamp(row.created),
            row.created_by,
            row.comment
        );
        if view.is_admin && row.version != view.published_version {
            html!(
                out,
                "<form method=\"post\" action=\"/config/rollback\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"version\" value=\"{}\"><button type=\"submit\">Roll back to v{}</button></form>",
                view.csrf,
                row.version,
                row.version
            );
        }
        out.raw("</td></tr>");
    }
    out.raw("</tbody></table>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewers_see_no_forms_and_texts_are_escaped() {
        let scopes = ["global".to_owned(), "site:oslo".to_owned()];
        let diffs = [(
            "global".to_owned(),
            "-a = 1\n+a = \"</textarea><script>\"".to_owned(),
        )];
        let mut view = EditorView {
            scopes: &scopes,
            scope: "global",
            text: "a = \"</textarea><script>x</script>\"",
            message: Some(Err("line 1: <bad>".into())),
            published_version: 2,
            diffs: &diffs,
            history: &[],
            is_admin: true,
            csrf: "tok",
        };
        let admin = render_editor(&view).into_string();
        assert!(admin.contains("id=\"publish\""));
        assert!(!admin.contains("</textarea><script>"), "{admin}");
        assert!(admin.contains("line 1: &lt;bad&gt;"));
        view.is_admin = false;
        let viewer = render_editor(&view).into_string();
        assert!(!viewer.contains("<form method=\"post\""), "{viewer}");
    }
}
