//! A read-only view of the channels' files for the site library: per
//! channel, a tree of folders and files with size, modified date, SHA-256
//! where known, state and origin URL, and the mapping between a library
//! path (`/CHANNEL/sub/dir/file`) and a file of the channel.
//!
//! Invariants:
//! - the view is a copy taken from the channel database and the store; it
//!   names files by their origin URL only, never by a path on disk, so a
//!   request path cannot reach anything outside it whatever it spells;
//! - [`parse_library_path`] decodes a request path exactly once and
//!   refuses every spelling of traversal (`..`, `%2e%2e`, `%2f`, `\`,
//!   `%5c`, NUL, overlong UTF-8, double encoding) instead of normalising
//!   it: a refused path is a client error, not a file that is missing;
//! - a file whose origin URL maps to no clean library path (an encoded
//!   slash in a segment, a dot segment) is left out of the view rather
//!   than shown under a name that cannot be asked for.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use outpost_http::CacheKey;
use url::Url;

use crate::Channels;

/// Why a request path is refused (answer 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LibraryPathError {
    #[error("the path does not start with '/'")]
    NotAbsolute,
    #[error("an empty path segment ('//')")]
    EmptySegment,
    #[error("a '.' or '..' segment")]
    DotSegment,
    #[error("a slash or backslash inside a segment (literal or encoded)")]
    Separator,
    #[error("a NUL or control character")]
    Control,
    #[error("a malformed percent-escape")]
    BadEscape,
    #[error("the path is not valid UTF-8 (overlong forms included)")]
    NotUtf8,
    #[error("an escape that decodes to another escape (double encoding)")]
    DoubleEncoded,
}

/// A request path, decoded and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryPath {
    /// The decoded segments: empty for `/`, then the channel, then the
    /// path below it.
    pub segments: Vec<String>,
    /// The path ended in `/` (a folder's canonical form).
    pub trailing_slash: bool,
}

/// Decodes and checks a request path (without its query).
pub fn parse_library_path(raw: &str) -> Result<LibraryPath, LibraryPathError> {
    let rest = raw.strip_prefix('/').ok_or(LibraryPathError::NotAbsolute)?;
    if raw.contains('\\') {
        return Err(LibraryPathError::Separator);
    }
    if rest.is_empty() {
        return Ok(LibraryPath {
            segments: Vec::new(),
            trailing_slash: true,
        });
    }
    let trailing_slash = rest.ends_with('/');
    let body = rest.strip_suffix('/').unwrap_or(rest);
    let segments = body
        .split('/')
        .map(decode_segment)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LibraryPath {
        segments,
        trailing_slash,
    })
}

/// Decodes one percent-encoded segment and checks the result is a plain
/// name.
fn decode_segment(raw: &str) -> Result<String, LibraryPathError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(LibraryPathError::BadEscape)?;
            // from_str_radix would take a sign ("%+1").
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(LibraryPathError::BadEscape);
            }
            let value = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(LibraryPathError::BadEscape)?;
            out.push(value);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let name = String::from_utf8(out).map_err(|_| LibraryPathError::NotUtf8)?;
    check_name(&name)?;
    Ok(name)
}

/// Whether a decoded segment is a plain name.
fn check_name(name: &str) -> Result<(), LibraryPathError> {
    if name.is_empty() {
        return Err(LibraryPathError::EmptySegment);
    }
    if name == "." || name == ".." {
        return Err(LibraryPathError::DotSegment);
    }
    if name.contains(['/', '\\']) {
        return Err(LibraryPathError::Separator);
    }
    if name.chars().any(char::is_control) {
        return Err(LibraryPathError::Control);
    }
    // "%252e" decodes to "%2e": harmless here (names are looked up, never
    // opened), but a client that sends it is probing, and a second decoder
    // further on would not be harmless.
    let b = name.as_bytes();
    if b.windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
    {
        return Err(LibraryPathError::DoubleEncoded);
    }
    Ok(())
}

/// A file's state as the library shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FileState {
    /// A complete copy is in the store.
    Present,
    /// The running sync is fetching it; `percent` of its bytes are in.
    Syncing { percent: u8 },
    /// Listed by the channel but not (or no longer) in the store.
    Missing,
    /// Its body failed the manifest's digest; refused to clients.
    Quarantined,
}

impl FileState {
    pub fn as_str(&self) -> &'static str {
        match self {
            FileState::Present => "present",
            FileState::Syncing { .. } => "syncing",
            FileState::Missing => "missing",
            FileState::Quarantined => "quarantined",
        }
    }
}

/// One file of a channel.
#[derive(Debug, Clone)]
pub struct LibraryFile {
    /// The decoded path below the channel.
    pub path: Vec<String>,
    /// The origin URL, which is also the store's key for it.
    pub url: String,
    pub len: Option<u64>,
    /// The origin's Last-Modified, else when the channel last synced it.
    pub modified: Option<SystemTime>,
    /// Hex SHA-256: the one the sync computed, else the manifest's.
    pub sha256: Option<String>,
    pub state: FileState,
    /// The origin's ETag and Content-Type, from the stored head.
    pub etag: Option<String>,
    pub content_type: Option<String>,
}

impl LibraryFile {
    pub fn name(&self) -> &str {
        self.path.last().map_or("", String::as_str)
    }
}

/// A folder below a channel, summarised.
#[derive(Debug, Clone, PartialEq)]
pub struct LibraryFolder {
    pub name: String,
    pub files: u64,
    pub bytes: u64,
    pub modified: Option<SystemTime>,
}

/// One entry of a folder's listing.
#[derive(Debug, Clone)]
pub enum LibraryEntry<'a> {
    Folder(LibraryFolder),
    File(&'a LibraryFile),
}

/// What a path below a channel names.
#[derive(Debug, Clone)]
pub enum LibraryNode<'a> {
    /// A folder (the channel itself for an empty path) and its entries,
    /// folders first, each group by name.
    Folder(Vec<LibraryEntry<'a>>),
    File(&'a LibraryFile),
}

/// A copy of one channel's files.
#[derive(Debug, Clone)]
pub struct LibraryChannel {
    pub name: String,
    pub source: String,
    pub files: Vec<LibraryFile>,
}

impl LibraryChannel {
    /// Totals for the channel as a folder of the library's root.
    pub fn summary(&self) -> LibraryFolder {
        summarise(self.name.clone(), self.files.iter())
    }

    /// What `rel` (decoded segments below the channel) names, if anything.
    pub fn lookup(&self, rel: &[String]) -> Option<LibraryNode<'_>> {
        if let Some(file) = self.files.iter().find(|f| f.path == rel) {
            return Some(LibraryNode::File(file));
        }
        let mut folders: BTreeMap<&str, Vec<&LibraryFile>> = BTreeMap::new();
        let mut files = Vec::new();
        let mut found = rel.is_empty();
        for file in &self.files {
            let Some(below) = file.path.strip_prefix(rel) else {
                continue;
            };
            found = true;
            match below {
                [] => {}
                [_] => files.push(file),
                [folder, ..] => folders.entry(folder.as_str()).or_default().push(file),
            }
        }
        if !found {
            return None;
        }
        files.sort_by(|a, b| a.name().cmp(b.name()));
        let mut entries: Vec<LibraryEntry<'_>> = folders
            .into_iter()
            .map(|(name, files)| {
                LibraryEntry::Folder(summarise(name.to_string(), files.into_iter()))
            })
            .collect();
        entries.extend(files.into_iter().map(LibraryEntry::File));
        Some(LibraryNode::Folder(entries))
    }
}

fn summarise<'a>(name: String, files: impl Iterator<Item = &'a LibraryFile>) -> LibraryFolder {
    let mut folder = LibraryFolder {
        name,
        files: 0,
        bytes: 0,
        modified: None,
    };
    for file in files {
        folder.files += 1;
        folder.bytes += file.len.unwrap_or(0);
        folder.modified = folder.modified.max(file.modified);
    }
    folder
}

/// The library path of `url` below a channel whose folder is `base`: the
/// decoded segments after the base's path, or for a URL elsewhere (a
/// manifest may name other hosts) its host then its whole path. `None`
/// when a segment is not a plain name.
pub fn library_path_of(base: &Url, url: &Url) -> Option<Vec<String>> {
    let same_origin = url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default();
    let (mut segments, rest) = match url.path().strip_prefix(base.path()) {
        Some(rest) if same_origin && base.path().ends_with('/') => (Vec::new(), rest),
        _ => {
            let host = match url.port() {
                Some(port) => format!("{}:{port}", url.host_str()?),
                None => url.host_str()?.to_string(),
            };
            check_name(&host).ok()?;
            (vec![host], url.path().trim_start_matches('/'))
        }
    };
    if rest.is_empty() {
        return None;
    }
    for raw in rest.split('/') {
        segments.push(decode_segment(raw).ok()?);
    }
    Some(segments)
}

impl Channels {
    /// Channel `name`'s totals, from its database rows alone (no store
    /// lookups: the root of the library lists every channel): files, the
    /// bytes they hold and when the newest was synced.
    pub fn library_summary(&self, name: &str) -> Option<(LibraryFolder, String)> {
        let (config, totals) = self.channel_totals(name)?;
        let folder = LibraryFolder {
            name: config.name.clone(),
            files: totals.files,
            bytes: totals.bytes,
            modified: totals
                .newest
                .and_then(|s| u64::try_from(s).ok())
                .map(|s| UNIX_EPOCH + Duration::from_secs(s)),
        };
        Some((folder, config.source.to_string()))
    }

    /// A copy of channel `name`'s files as the library shows them (`None`
    /// for a channel this edge does not have), with only the files whose path
    /// starts with `under` (a folder's or a file's): a download or a
    /// folder page looks up the store for what it shows, not for the
    /// whole channel.
    pub fn library_channel_under(&self, name: &str, under: &[String]) -> Option<LibraryChannel> {
        let copy = self.channel_rows(name)?;
        let base = copy.config.base();
        let store = self.engine_store();
        let mut files = Vec::with_capacity(copy.rows.len() + copy.active.len());
        let mut seen = std::collections::HashSet::new();
        let rows = copy.rows.iter().map(|r| {
            (
                r.url.as_str(),
                Some(CacheKey::from_stored(r.key.clone())),
                Some(r),
            )
        });
        let in_flight = copy
            .active
            .iter()
            .filter(|(url, _)| !copy.rows.iter().any(|r| &r.url == *url))
            .map(|(url, (key, _))| (url.as_str(), Some(key.clone()), None));
        for (url, key, row) in rows.chain(in_flight) {
            let Some(path) = Url::parse(url)
                .ok()
                .and_then(|u| library_path_of(&base, &u))
            else {
                continue;
            };
            if !path.starts_with(under) {
                continue;
            }
            // Two URLs differing only in their query map to one name;
            // the first keeps it.
            if !seen.insert(path.clone()) {
                continue;
            }
            let stored = key.and_then(|k| store.get(&k).ok().flatten());
            let snapshot = stored.as_ref().map(|o| o.snapshot());
            let header = |name: &str| {
                snapshot
                    .as_ref()
                    .and_then(|s| s.head.headers.get(name))
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let len = row
                .and_then(|r| r.len)
                .or_else(|| snapshot.as_ref().and_then(|s| s.len))
                .or_else(|| copy.active.get(url).and_then(|a| a.1));
            let complete = stored.as_ref().is_some_and(|o| o.is_complete());
            let state = if row.is_some_and(|r| r.state == "quarantined") {
                FileState::Quarantined
            } else if copy.active.contains_key(url) {
                let have = snapshot.as_ref().map_or(0, |s| s.present.covered());
                let percent = match len {
                    Some(0) | None => 0,
                    Some(total) => (have.saturating_mul(100) / total).min(100) as u8,
                };
                FileState::Syncing { percent }
            } else if complete && row.is_some_and(|r| r.state == "ok") {
                FileState::Present
            } else {
                FileState::Missing
            };
            let modified = header("last-modified")
                .and_then(|v| httpdate::parse_http_date(&v).ok())
                .or_else(|| {
                    row.and_then(|r| u64::try_from(r.updated).ok())
                        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
                });
            files.push(LibraryFile {
                path,
                url: url.to_string(),
                len,
                modified,
                sha256: row.and_then(|r| r.sha256.clone().or_else(|| r.expected_sha256.clone())),
                state,
                etag: header("etag"),
                content_type: header("content-type"),
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Some(LibraryChannel {
            name: copy.config.name.clone(),
            source: copy.config.source.to_string(),
            files,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(raw: &str) -> LibraryPathError {
        parse_library_path(raw).expect_err(raw)
    }

    fn segments(raw: &str) -> Vec<String> {
        parse_library_path(raw).expect(raw).segments
    }

    #[test]
    fn plain_paths_decode_once() {
        assert_eq!(segments("/"), Vec::<String>::new());
        assert_eq!(segments("/pkgs/"), ["pkgs"]);
        assert_eq!(
            segments("/pkgs/a%20b/setup.msi"),
            ["pkgs", "a b", "setup.msi"]
        );
        assert_eq!(segments("/pkgs/caf%C3%A9.txt"), ["pkgs", "café.txt"]);
        assert!(parse_library_path("/pkgs/").unwrap().trailing_slash);
        assert!(!parse_library_path("/pkgs").unwrap().trailing_slash);
        // A dot inside a name is a name.
        assert_eq!(
            segments("/pkgs/..hidden/a..b"),
            ["pkgs", "..hidden", "a..b"]
        );
    }

    #[test]
    fn dot_segments_are_refused_literal_or_encoded() {
        for raw in [
            "/pkgs/../etc/passwd",
            "/..",
            "/pkgs/./x",
            "/pkgs/%2e%2e/x",
            "/pkgs/%2E%2E/x",
            "/pkgs/.%2e/x",
            "/pkgs/%2e./x",
            "/pkgs/%2e/x",
            "/pkgs/..",
        ] {
            assert_eq!(refused(raw), LibraryPathError::DotSegment, "{raw}");
        }
    }

    #[test]
    fn encoded_slashes_and_backslashes_are_refused() {
        for raw in [
            "/pkgs/a%2fb",
            "/pkgs/a%2Fb",
            "/pkgs/%2e%2e%2fetc",
            "/pkgs\\..\\x",
            "/pkgs/a\\b",
            "/pkgs/a%5cb",
            "/pkgs/%2e%2e%5cx",
        ] {
            assert_eq!(refused(raw), LibraryPathError::Separator, "{raw}");
        }
    }

    #[test]
    fn nul_and_controls_are_refused() {
        assert_eq!(refused("/pkgs/a%00.msi"), LibraryPathError::Control);
        assert_eq!(refused("/pkgs/a%0d%0aX: y"), LibraryPathError::Control);
    }

    #[test]
    fn overlong_and_invalid_utf8_is_refused() {
        // Overlong '.', '/' and '\'; a lone continuation byte; a surrogate.
        for raw in [
            "/pkgs/%c0%ae%c0%ae/x",
            "/pkgs/%c0%af",
            "/pkgs/%c1%9c",
            "/pkgs/%e0%80%ae",
            "/pkgs/%80",
            "/pkgs/%ed%a0%80",
        ] {
            assert_eq!(refused(raw), LibraryPathError::NotUtf8, "{raw}");
        }
    }

    #[test]
    fn double_encoding_and_bad_escapes_are_refused() {
        for raw in ["/pkgs/%252e%252e/x", "/pkgs/%252f", "/pkgs/%255c"] {
            assert_eq!(refused(raw), LibraryPathError::DoubleEncoded, "{raw}");
        }
        for raw in ["/pkgs/%", "/pkgs/%2", "/pkgs/%zz", "/pkgs/%+1"] {
            assert_eq!(refused(raw), LibraryPathError::BadEscape, "{raw}");
        }
    }

    #[test]
    fn empty_segments_and_relative_paths_are_refused() {
        assert_eq!(refused("/pkgs//x"), LibraryPathError::EmptySegment);
        assert_eq!(refused("//"), LibraryPathError::EmptySegment);
        assert_eq!(refused("pkgs/x"), LibraryPathError::NotAbsolute);
        assert_eq!(refused(""), LibraryPathError::NotAbsolute);
    }

    #[test]
    fn origin_urls_map_below_the_channel_folder() {
        let base = Url::parse("http://files.corp/lib/").unwrap();
        let path = |u: &str| library_path_of(&base, &Url::parse(u).unwrap());
        assert_eq!(
            path("http://files.corp/lib/drivers/net%20card.cab").unwrap(),
            ["drivers", "net card.cab"]
        );
        assert_eq!(
            path("http://other.corp:8080/x/y.msi").unwrap(),
            ["other.corp:8080", "x", "y.msi"]
        );
        // Not a prefix at a segment boundary: treated as elsewhere.
        assert_eq!(
            path("http://files.corp/library/a").unwrap(),
            ["files.corp", "library", "a"]
        );
        assert_eq!(path("http://files.corp/lib/a%2fb"), None);
        assert_eq!(path("http://files.corp/lib/"), None);
    }

    fn file(path: &[&str], len: u64) -> LibraryFile {
        LibraryFile {
            path: path.iter().map(|s| s.to_string()).collect(),
            url: format!("http://o/{}", path.join("/")),
            len: Some(len),
            modified: Some(UNIX_EPOCH + Duration::from_secs(len)),
            sha256: None,
            state: FileState::Present,
            etag: None,
            content_type: None,
        }
    }

    #[test]
    fn lookup_lists_folders_first_then_files_and_finds_files() {
        let channel = LibraryChannel {
            name: "pkgs".into(),
            source: "http://o/".into(),
            files: vec![
                file(&["setup.msi"], 10),
                file(&["drivers", "net.cab"], 20),
                file(&["drivers", "gpu", "gpu.exe"], 30),
                file(&["apps", "a.exe"], 5),
            ],
        };
        let Some(LibraryNode::Folder(root)) = channel.lookup(&[]) else {
            panic!("the channel is a folder")
        };
        let names: Vec<String> = root
            .iter()
            .map(|e| match e {
                LibraryEntry::Folder(f) => format!("{}/ {} {}", f.name, f.files, f.bytes),
                LibraryEntry::File(f) => f.name().to_string(),
            })
            .collect();
        assert_eq!(names, ["apps/ 1 5", "drivers/ 2 50", "setup.msi"]);
        let rel = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches!(
            channel.lookup(&rel(&["drivers", "gpu", "gpu.exe"])),
            Some(LibraryNode::File(f)) if f.len == Some(30)
        ));
        assert!(matches!(
            channel.lookup(&rel(&["drivers", "gpu"])),
            Some(LibraryNode::Folder(e)) if e.len() == 1
        ));
        assert!(channel.lookup(&rel(&["drivers", "nope"])).is_none());
        assert!(channel.lookup(&rel(&["setup.msi", "x"])).is_none());
        assert_eq!(channel.summary().bytes, 65);
    }
}
