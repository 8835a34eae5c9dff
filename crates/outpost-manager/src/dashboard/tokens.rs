//! Join tokens (admin only): list, make, revoke.

use super::html::{Markup, html, timestamp};

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: i64,
    pub label: String,
    pub created: i64,
    pub expires: Option<i64>,
    pub revoked: Option<i64>,
    pub uses: Option<u64>,
}

/// A token just made: shown on this one page and never again.
pub struct NewTokenView<'a> {
    pub label: &'a str,
    pub token: &'a str,
}

pub fn render_tokens(
    tokens: &[TokenRow],
    made: Option<NewTokenView<'_>>,
    csrf: &str,
    now: i64,
) -> Markup {
    let mut out = Markup::new();
    out.raw("<h1>Join tokens</h1>");
    if let Some(made) = made {
        html!(
            out,
            "<div class=\"notice\" id=\"new-token\"><p>New join token <strong>{}</strong>; copy it now, it is not shown again:</p><pre>{}</pre><p>On the edge: <code>outpost serve --manager https://MANAGER:PORT --join-token {} --site NAME --manager-fingerprint SHA256</code></p></div>",
            made.label,
            made.token,
            made.token
        );
    }
    html!(
        out,
        "<form method=\"post\" action=\"/tokens\" id=\"token-form\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><label>Label <input name=\"label\" id=\"label\" required maxlength=\"100\"></label> <label>Valid for <input name=\"hours\" id=\"hours\" type=\"number\" min=\"1\" value=\"168\" size=\"5\"> hours</label> <button type=\"submit\" id=\"make-token\">Make a join token</button></form>",
        csrf
    );
    if tokens.is_empty() {
        out.raw("<p class=\"muted\">No join token yet.</p>");
        return out;
    }
    out.raw("<table id=\"tokens\"><thead><tr><th>Label</th><th>Made</th><th>Expires</th><th>Edges enrolled</th><th>State</th><th></th></tr></thead><tbody>");
    for token in tokens {
        let expires = token
            .expires
            .map(timestamp)
            .unwrap_or_else(|| "never".into());
        let (class, state) = match (token.revoked, token.expires) {
            (Some(_), _) => ("revoked", "revoked"),
            (None, Some(expires)) if expires <= now => ("down", "expired"),
            _ => ("up", "valid"),
        };
        html!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td><span class=\"state {}\">{}</span></td><td>",
            token.label,
            timestamp(token.created),
            expires,
            token.uses.unwrap_or(0),
            class,
            state
        );
        if state == "valid" {
            html!(
                out,
                "<form method=\"post\" action=\"/tokens/{}/revoke\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Revoke</button></form>",
                token.id,
                csrf
            );
        }
        out.raw("</td></tr>");
    }
    out.raw("</tbody></table>");
    out
}
