//! Directory listings and manifests: what a channel's source says it holds.
//!
//! Listings are the HTML pages that IIS ("directory browsing"), nginx
//! (`autoindex`) and Apache (`mod_autoindex`) generate. They differ in
//! layout but all link each entry with `<a href>`, folders ending in `/`;
//! so the parser reads links, not layouts, and keeps those that lead
//! further down from the page (never up, never to sort links with a query,
//! never off the base URL).

use std::ops::ControlFlow;

use url::Url;

/// One entry of a listing page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListingLink {
    Dir(Url),
    File(Url),
}

/// One file a manifest names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    pub url: Url,
    pub size: Option<u64>,
    /// Lower-case hex.
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("manifest line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("manifest entry {0:?} is not a URL under the manifest's origin")]
    OutsideOrigin(String),
    #[error("manifest is not UTF-8")]
    Encoding,
}

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';').filter(|&e| e <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ if entity.starts_with("#x") || entity.starts_with("#X") => {
                u32::from_str_radix(&entity[2..], 16)
                    .ok()
                    .and_then(char::from_u32)
            }
            _ if entity.starts_with('#') => entity[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `href` values of the `<a>` tags of an HTML page, in order.
pub fn hrefs(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    each_href(html, |href| {
        out.push(href);
        ControlFlow::Continue(())
    });
    out
}

/// Hands each `href` of the page's `<a>` tags to `each`, in order, until it
/// breaks: a page of a million links is read only as far as it is wanted.
fn each_href(html: &str, mut each: impl FnMut(String) -> ControlFlow<()>) {
    let bytes = html.as_bytes();
    let lower = html.to_ascii_lowercase();
    let lb = lower.as_bytes();
    let mut pos = 0;
    while let Some(found) = lower[pos..].find("<a") {
        let start = pos + found + 2;
        pos = start;
        if !lb.get(start).is_some_and(|c| c.is_ascii_whitespace()) {
            continue;
        }
        let Some(tag_len) = lower[start..].find('>') else {
            break;
        };
        let tag_end = start + tag_len;
        let mut i = start;
        while i < tag_end {
            // Attribute name.
            while i < tag_end && lb[i].is_ascii_whitespace() {
                i += 1;
            }
            let name_start = i;
            while i < tag_end && !lb[i].is_ascii_whitespace() && lb[i] != b'=' {
                i += 1;
            }
            let name = &lower[name_start..i];
            while i < tag_end && lb[i].is_ascii_whitespace() {
                i += 1;
            }
            if i >= tag_end || lb[i] != b'=' {
                if i == name_start {
                    i += 1;
                }
                continue;
            }
            i += 1;
            while i < tag_end && lb[i].is_ascii_whitespace() {
                i += 1;
            }
            let (value_start, value_end) = match lb.get(i) {
                Some(&q @ (b'"' | b'\'')) => {
                    let vs = i + 1;
                    let ve = lower[vs..tag_end]
                        .find(q as char)
                        .map_or(tag_end, |e| vs + e);
                    i = ve + 1;
                    (vs, ve)
                }
                _ => {
                    let vs = i;
                    while i < tag_end && !lb[i].is_ascii_whitespace() {
                        i += 1;
                    }
                    (vs, i)
                }
            };
            if name == "href" {
                if let Ok(v) = std::str::from_utf8(&bytes[value_start..value_end])
                    && each(decode_entities(v.trim())).is_break()
                {
                    return;
                }
                break;
            }
        }
        pos = tag_end;
    }
}

/// Whether `url` lies under `base` (same origin, path prefix).
pub fn is_under(url: &Url, base: &Url) -> bool {
    url.scheme() == base.scheme()
        && url.host_str().map(str::to_ascii_lowercase)
            == base.host_str().map(str::to_ascii_lowercase)
        && url.port_or_known_default() == base.port_or_known_default()
        && url.path().starts_with(base.path())
}

/// The entries one listing page links to, below `page` and within `base`.
pub fn parse_listing(html: &str, page: &Url, base: &Url) -> Vec<ListingLink> {
    parse_listing_limited(html, page, base, usize::MAX).links
}

/// What [`parse_listing_limited`] read of one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListingPage {
    pub links: Vec<ListingLink>,
    /// The page has more entries than were read.
    pub truncated: bool,
}

/// The first `max_links` entries of one listing page (links that are not
/// entries, such as the parent and sort links, do not count).
pub fn parse_listing_limited(html: &str, page: &Url, base: &Url, max_links: usize) -> ListingPage {
    let mut seen = std::collections::HashSet::new();
    let mut links = Vec::new();
    let mut truncated = false;
    each_href(html, |href| {
        if href.is_empty() || href.starts_with('#') || href.starts_with('?') {
            return ControlFlow::Continue(());
        }
        let Ok(mut url) = page.join(&href) else {
            return ControlFlow::Continue(());
        };
        url.set_fragment(None);
        if url.query().is_some() || !matches!(url.scheme(), "http" | "https") {
            return ControlFlow::Continue(());
        }
        // Children only: parents, the page itself and siblings elsewhere
        // ("[To Parent Directory]", "Parent Directory", "../") are not.
        if !is_under(&url, page) || url.path() == page.path() || !is_under(&url, base) {
            return ControlFlow::Continue(());
        }
        if seen.contains(url.as_str()) {
            return ControlFlow::Continue(());
        }
        if links.len() >= max_links {
            truncated = true;
            return ControlFlow::Break(());
        }
        seen.insert(url.as_str().to_string());
        links.push(if url.path().ends_with('/') {
            ListingLink::Dir(url)
        } else {
            ListingLink::File(url)
        });
        ControlFlow::Continue(())
    });
    ListingPage { links, truncated }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn resolve(manifest: &Url, path: &str) -> Result<Url, ManifestError> {
    let url = manifest
        .join(path)
        .map_err(|_| ManifestError::OutsideOrigin(path.to_string()))?;
    let mut origin = manifest.clone();
    origin.set_path("/");
    origin.set_query(None);
    if !is_under(&url, &origin) {
        return Err(ManifestError::OutsideOrigin(path.to_string()));
    }
    Ok(url)
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum JsonEntry {
    Path(String),
    Full {
        #[serde(alias = "url")]
        path: String,
        #[serde(default)]
        size: Option<u64>,
        #[serde(default)]
        sha256: Option<String>,
    },
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum JsonManifest {
    List(Vec<JsonEntry>),
    Object { files: Vec<JsonEntry> },
}

/// Parses a manifest: JSON (a list of paths or `{path, size, sha256}`
/// objects, bare or under `"files"`), or text with one file a line as
/// `path [size] [sha256]` or in `sha256sum` output form (`<sha256>  path`).
/// Paths are relative to the manifest's URL.
pub fn parse_manifest(body: &[u8], manifest: &Url) -> Result<Vec<ManifestEntry>, ManifestError> {
    let mut entries = Vec::new();
    parse_manifest_each(body, manifest, |e| {
        entries.push(e);
        ControlFlow::Continue(())
    })?;
    Ok(entries)
}

/// [`parse_manifest`], handing each entry to `each` in order until it
/// breaks; what follows a break is neither read nor checked, so that a
/// sync bounded to N files holds N entries, not the whole manifest.
pub fn parse_manifest_each(
    body: &[u8],
    manifest: &Url,
    mut each: impl FnMut(ManifestEntry) -> ControlFlow<()>,
) -> Result<(), ManifestError> {
    let text = std::str::from_utf8(body).map_err(|_| ManifestError::Encoding)?;
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        let parsed: JsonManifest =
            serde_json::from_str(trimmed).map_err(|e| ManifestError::Json(e.to_string()))?;
        let entries = match parsed {
            JsonManifest::List(l) | JsonManifest::Object { files: l } => l,
        };
        for e in entries {
            let (path, size, sha256) = match e {
                JsonEntry::Path(p) => (p, None, None),
                JsonEntry::Full { path, size, sha256 } => (path, size, sha256),
            };
            if let Some(d) = &sha256
                && !is_sha256(d)
            {
                return Err(ManifestError::Json(format!(
                    "{path}: sha256 {d:?} is not 64 hex digits"
                )));
            }
            let entry = ManifestEntry {
                url: resolve(manifest, &path)?,
                size,
                sha256: sha256.map(|d| d.to_ascii_lowercase()),
            };
            if each(entry).is_break() {
                break;
            }
        }
        return Ok(());
    }
    for (i, line) in trimmed.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: String| ManifestError::Line {
            line: i + 1,
            reason,
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let (path, size, sha256) = if words.len() >= 2 && is_sha256(words[0]) {
            // sha256sum: "<digest>  path" or "<digest> *path" (binary mode).
            let path = line[64..].trim_start().trim_start_matches('*');
            (path, None, Some(words[0]))
        } else {
            let mut size = None;
            let mut sha = None;
            for w in &words[1..] {
                if is_sha256(w) {
                    sha = Some(*w);
                } else if let Ok(n) = w.parse::<u64>() {
                    size = Some(n);
                } else {
                    return Err(err(format!("{w:?} is neither a size nor a SHA-256")));
                }
            }
            (words[0], size, sha)
        };
        let entry = ManifestEntry {
            url: resolve(manifest, path)?,
            size,
            sha256: sha256.map(str::to_ascii_lowercase),
        };
        if each(entry).is_break() {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn files_and_dirs(links: Vec<ListingLink>) -> (Vec<String>, Vec<String>) {
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        for l in links {
            match l {
                ListingLink::File(u) => files.push(u.path().to_string()),
                ListingLink::Dir(u) => dirs.push(u.path().to_string()),
            }
        }
        (files, dirs)
    }

    #[test]
    fn nginx_autoindex() {
        let html = r#"<html><head><title>Index of /lib/</title></head><body><h1>Index of /lib/</h1><hr><pre><a href="../">../</a>
<a href="drivers/">drivers/</a>                                           24-Nov-2026 03:00       -
<a href="Office%202024.msi">Office 2024.msi</a>                                   24-Nov-2026 03:00   1048576
<a href="a&amp;b.cab">a&amp;b.cab</a>                                   24-Nov-2026 03:00   10
</pre><hr></body></html>"#;
        let page = url("http://origin.test/lib/");
        let (files, dirs) = files_and_dirs(parse_listing(html, &page, &page));
        assert_eq!(files, ["/lib/Office%202024.msi", "/lib/a&b.cab"]);
        assert_eq!(dirs, ["/lib/drivers/"]);
    }

    #[test]
    fn apache_autoindex_skips_sort_links_and_parent() {
        let html = r#"<table><tr><th><a href="?C=N;O=D">Name</a></th><th><a href="?C=M;O=A">Last modified</a></th></tr>
<tr><td valign="top"><img src="/icons/back.gif" alt="[PARENTDIR]"></td><td><a href="/lib/">Parent Directory</a></td></tr>
<tr><td><a href="setup.exe">setup.exe</a></td><td align="right">2026-11-24 03:00  </td><td align="right">1.2M</td></tr>
<tr><td><a href='sub/'>sub/</a></td></tr></table>"#;
        let page = url("http://origin.test/lib/apps/");
        let base = url("http://origin.test/lib/");
        let (files, dirs) = files_and_dirs(parse_listing(html, &page, &base));
        assert_eq!(files, ["/lib/apps/setup.exe"]);
        assert_eq!(dirs, ["/lib/apps/sub/"]);
    }

    #[test]
    fn iis_directory_browsing_with_absolute_links() {
        let html = r#"<html><body><H1>fileserver - /pkgs/</H1><hr>
<pre><A HREF="/">[To Parent Directory]</A><br><br> 11/24/2026  3:00 AM        &lt;dir&gt; <A HREF="/pkgs/Drivers/">Drivers</A><br>11/24/2026  3:00 AM      1048576 <A HREF="/pkgs/KB5031234.msu">KB5031234.msu</A><br>
<A HREF="http://elsewhere.test/pkgs/x.msi">x.msi</A><A HREF=/pkgs/unquoted.cab>u</A></pre><hr></body></html>"#;
        let page = url("http://fileserver/pkgs/");
        let (files, dirs) = files_and_dirs(parse_listing(html, &page, &page));
        assert_eq!(files, ["/pkgs/KB5031234.msu", "/pkgs/unquoted.cab"]);
        assert_eq!(dirs, ["/pkgs/Drivers/"]);
    }

    #[test]
    fn a_page_is_read_up_to_max_links_entries() {
        let page = url("http://origin.test/lib/");
        let mut html = String::from("<a href=\"../\">../</a><a href=\"?C=N\">Name</a>");
        for i in 0..5 {
            html.push_str(&format!(
                "<a href=\"f{i}.msi\">f</a><a href=\"f{i}.msi\">again</a>"
            ));
        }
        let all = parse_listing_limited(&html, &page, &page, 5);
        assert_eq!((all.links.len(), all.truncated), (5, false));
        let cut = parse_listing_limited(&html, &page, &page, 3);
        assert_eq!((cut.links.len(), cut.truncated), (3, true));
        assert_eq!(cut.links, all.links[..3]);
        let none = parse_listing_limited(&html, &page, &page, 0);
        assert_eq!((none.links.len(), none.truncated), (0, true));
    }

    #[test]
    fn a_manifest_is_read_only_until_the_reader_stops() {
        let m = url("http://origin.test/lib/files.txt");
        // The bad line after the stop is never read.
        let text = b"a.msi\nb.msi\nc.msi big\n";
        let mut seen = Vec::new();
        parse_manifest_each(text, &m, |e| {
            seen.push(e.url.path().to_string());
            if seen.len() == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
        assert_eq!(seen, ["/lib/a.msi", "/lib/b.msi"]);
        let mut n = 0;
        parse_manifest_each(br#"["a.msi", "b.msi", "c.msi"]"#, &m, |_| {
            n += 1;
            ControlFlow::Break(())
        })
        .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn manifests_in_json_text_and_sha256sum_form() {
        let m = url("http://origin.test/lib/manifest.json");
        let digest = "ab".repeat(32);
        let json = format!(
            r#"{{"files": ["a.msi", {{"path": "sub/b.cab", "size": 10, "sha256": "{}"}}]}}"#,
            digest.to_uppercase()
        );
        let entries = parse_manifest(json.as_bytes(), &m).unwrap();
        assert_eq!(entries[0].url.path(), "/lib/a.msi");
        assert_eq!(entries[1].size, Some(10));
        assert_eq!(entries[1].sha256.as_deref(), Some(digest.as_str()));

        let text = format!("# packages\n{digest}  c.msi\n{digest} *d e.msi\nf.msi 42\n");
        let entries = parse_manifest(text.as_bytes(), &m).unwrap();
        let paths: Vec<_> = entries.iter().map(|e| e.url.path().to_string()).collect();
        assert_eq!(paths, ["/lib/c.msi", "/lib/d%20e.msi", "/lib/f.msi"]);
        assert_eq!(entries[2].size, Some(42));

        assert!(matches!(
            parse_manifest(b"http://elsewhere.test/x.msi\n", &m),
            Err(ManifestError::OutsideOrigin(_))
        ));
        assert!(matches!(
            parse_manifest(b"a.msi big\n", &m),
            Err(ManifestError::Line { line: 1, .. })
        ));
        assert!(parse_manifest(b"[1, 2", &m).is_err());
    }
}
