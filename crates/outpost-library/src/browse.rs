//! The library's pages: a listing of channels at `/`, of a folder below a
//! channel, and a file's details, each as HTML or JSON (sans-io: data in,
//! bytes out).
//!
//! Every name on a page comes from an origin's listing or manifest, so it
//! is escaped for HTML and percent-encoded in links; the pages carry a
//! CSP that allows no script at all. Origin URLs are shown without their
//! query and user info: a channel's URL may hold an access token, and the
//! library is open to every PC the edge allows.

use std::time::SystemTime;

use outpost_channel::{FileState, LibraryEntry, LibraryFile, LibraryFolder};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

/// Characters of a name kept as they are in a link.
const NAME: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `segments` as an absolute, encoded library path.
pub fn href(segments: &[String], folder: bool) -> String {
    let mut out = String::from("/");
    for (i, s) in segments.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.extend(utf8_percent_encode(s, NAME));
    }
    if folder && !segments.is_empty() {
        out.push('/');
    }
    out
}

/// An origin URL without user info, query or fragment.
pub fn public_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => String::new(),
    }
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn rfc3339(t: Option<SystemTime>) -> Option<String> {
    let t: chrono::DateTime<chrono::Utc> = t?.into();
    Some(t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

fn short_date(t: Option<SystemTime>) -> String {
    t.map(|t| {
        let t: chrono::DateTime<chrono::Utc> = t.into();
        t.format("%Y-%m-%d %H:%M").to_string()
    })
    .unwrap_or_default()
}

/// A size for people, in binary units, as the CLI writes them.
fn human_size(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}

fn state_text(state: FileState) -> String {
    match state {
        FileState::Syncing { percent } => format!("syncing {percent}%"),
        other => other.as_str().to_string(),
    }
}

/// One row of a listing page.
pub enum Row<'a> {
    /// A channel at `/`, or a folder below one.
    Folder {
        folder: LibraryFolder,
        href: String,
        source: Option<String>,
    },
    File {
        file: &'a LibraryFile,
        href: String,
    },
}

/// The rows of a folder's entries; `base` is the folder's segments.
pub fn rows<'a>(base: &[String], entries: &[LibraryEntry<'a>]) -> Vec<Row<'a>> {
    entries
        .iter()
        .map(|e| match e {
            LibraryEntry::Folder(folder) => {
                let mut segs = base.to_vec();
                segs.push(folder.name.clone());
                Row::Folder {
                    href: href(&segs, true),
                    folder: folder.clone(),
                    source: None,
                }
            }
            LibraryEntry::File(file) => {
                let mut segs = base.to_vec();
                segs.push(file.name().to_string());
                Row::File {
                    file,
                    href: href(&segs, false),
                }
            }
        })
        .collect()
}

fn file_json(file: &LibraryFile, href: &str) -> Value {
    json!({
        "name": file.name(),
        "type": "file",
        "href": href,
        "size": file.len,
        "modified": rfc3339(file.modified),
        "sha256": file.sha256,
        "state": file.state.as_str(),
        "percent": match file.state {
            FileState::Syncing { percent } => Some(percent),
            _ => None,
        },
        "url": public_url(&file.url),
    })
}

/// A listing page as JSON: `{"path", "parent", "entries": [...]}`.
pub fn listing_json(path: &[String], rows: &[Row<'_>]) -> Vec<u8> {
    let entries: Vec<Value> = rows
        .iter()
        .map(|row| match row {
            Row::Folder {
                folder,
                href,
                source,
            } => {
                let mut v = json!({
                    "name": folder.name,
                    "type": "folder",
                    "href": href,
                    "files": folder.files,
                    "size": folder.bytes,
                    "modified": rfc3339(folder.modified),
                });
                if let Some(source) = source {
                    v["source"] = json!(public_url(source));
                }
                v
            }
            Row::File { file, href } => file_json(file, href),
        })
        .collect();
    let parent = (!path.is_empty()).then(|| href(&path[..path.len() - 1], true));
    let page = json!({
        "path": href(path, true),
        "parent": parent,
        "entries": entries,
    });
    let mut out = serde_json::to_vec_pretty(&page).unwrap_or_default();
    out.push(b'\n');
    out
}

/// A file's details as JSON (`?format=json` on a file).
pub fn file_json_page(path: &[String], file: &LibraryFile) -> Vec<u8> {
    let mut out =
        serde_json::to_vec_pretty(&file_json(file, &href(path, false))).unwrap_or_default();
    out.push(b'\n');
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3em .8em;border-bottom:1px solid #ddd}\
td.n{text-align:right;white-space:nowrap}td.h{font-family:monospace;font-size:.85em}\
.present{color:#080}.syncing{color:#a60}.missing,.quarantined{color:#b00}";

/// A listing page as HTML.
pub fn listing_html(path: &[String], rows: &[Row<'_>]) -> Vec<u8> {
    let title = escape(&format!("/{}", path.join("/")));
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Library {title}</title>\
         <style>{STYLE}</style></head><body><h1>Library {title}</h1>\n"
    );
    if !path.is_empty() {
        html.push_str(&format!(
            "<p><a href=\"{}\">Parent folder</a> &middot; <a href=\"?format=json\">JSON</a></p>\n",
            escape(&href(&path[..path.len() - 1], true))
        ));
    } else {
        html.push_str("<p><a href=\"?format=json\">JSON</a></p>\n");
    }
    html.push_str(
        "<table><thead><tr><th>Name</th><th>Size</th><th>Modified (UTC)</th><th>SHA-256</th><th>State</th></tr></thead><tbody>\n",
    );
    for row in rows {
        match row {
            Row::Folder { folder, href, .. } => html.push_str(&format!(
                "<tr><td><a href=\"{}\">{}/</a></td><td class=\"n\">{} in {} files</td><td>{}</td><td></td><td></td></tr>\n",
                escape(href),
                escape(&folder.name),
                human_size(folder.bytes),
                folder.files,
                short_date(folder.modified),
            )),
            Row::File { file, href } => html.push_str(&format!(
                "<tr><td><a href=\"{}\">{}</a></td><td class=\"n\" title=\"{} bytes\">{}</td><td>{}</td><td class=\"h\">{}</td><td class=\"{}\">{}</td></tr>\n",
                escape(href),
                escape(file.name()),
                file.len.map(|n| n.to_string()).unwrap_or_default(),
                file.len.map(human_size).unwrap_or_default(),
                short_date(file.modified),
                escape(file.sha256.as_deref().unwrap_or("")),
                file.state.as_str(),
                state_text(file.state),
            )),
        }
    }
    html.push_str("</tbody></table></body></html>\n");
    html.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn file(name: &str) -> LibraryFile {
        LibraryFile {
            path: vec!["d".into(), name.into()],
            url: "http://u:p@files.corp/lib/d/x?token=secret#f".into(),
            len: Some(3 * 1024 * 1024),
            modified: Some(UNIX_EPOCH + Duration::from_secs(1_795_000_000)),
            sha256: Some("ab".repeat(32)),
            state: FileState::Syncing { percent: 40 },
            etag: None,
            content_type: None,
        }
    }

    #[test]
    fn names_are_escaped_in_html_and_encoded_in_links() {
        let f = file("<script>alert(1)</script> & \"x\".msi");
        let base = vec!["pkgs".to_string(), "d".to_string()];
        let rows = rows(&base, &[LibraryEntry::File(&f)]);
        let html = String::from_utf8(listing_html(&base, &rows)).unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;x&quot;.msi"));
        assert!(html.contains(
            "href=\"/pkgs/d/%3Cscript%3Ealert%281%29%3C%2Fscript%3E%20%26%20%22x%22.msi\""
        ));
        assert!(html.contains("syncing 40%"));
        assert!(html.contains("3.0 MiB"));
    }

    #[test]
    fn json_pages_hide_url_secrets_and_give_every_field() {
        let f = file("x");
        let base = vec!["pkgs".to_string(), "d".to_string()];
        let rows = rows(&base, &[LibraryEntry::File(&f)]);
        let page: Value = serde_json::from_slice(&listing_json(&base, &rows)).unwrap();
        assert_eq!(page["path"], "/pkgs/d/");
        assert_eq!(page["parent"], "/pkgs/");
        let e = &page["entries"][0];
        assert_eq!(e["url"], "http://files.corp/lib/d/x");
        assert_eq!(e["size"], 3 * 1024 * 1024);
        assert_eq!(e["state"], "syncing");
        assert_eq!(e["percent"], 40);
        assert_eq!(e["href"], "/pkgs/d/x");
        assert_eq!(e["modified"], "2026-11-18T11:06:40Z");
        let root: Value = serde_json::from_slice(&listing_json(&[], &[])).unwrap();
        assert_eq!(root["parent"], Value::Null);
        assert_eq!(root["path"], "/");
    }
}
