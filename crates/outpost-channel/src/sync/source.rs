//! Reading a channel's source: its listing pages (followed down, within
//! the channel's depth, page and file limits, loops detected) or its
//! manifest, into the list of wanted files. Only a listing without
//! problems and without limit hits is complete, and only a complete one
//! may unpin what it no longer names.

use std::collections::{HashSet, VecDeque};
use std::ops::ControlFlow;
use std::sync::Arc;

use http::{StatusCode, Uri};
use outpost_protocol::SourceKind;
use url::Url;

use crate::listing::{ListingLink, parse_listing_limited, parse_manifest_each};

use super::budget::LimitLog;
use super::{Channel, ChannelLimits, Channels};

/// Largest listing page or manifest read: a bigger one fails to list
/// rather than be held in memory.
const MAX_DOCUMENT: usize = 16 << 20;

/// What a source listed, within the channel's limits.
#[derive(Default)]
pub(super) struct Listed {
    /// The wanted files, each once.
    pub(super) files: Vec<SourceFile>,
    /// Folders that could not be listed.
    pub(super) problems: Vec<String>,
    pub(super) hits: LimitLog,
}

/// Folder levels of `url` below `base`: 0 for the base itself, 1 for
/// `base/a/`, 2 for `base/a/b/` or `base/a//` (empty segments count, or
/// `a//`, `a///`... would be an endless path at one level).
fn depth_below(url: &Url, base: &Url) -> u64 {
    let rest = url.path().strip_prefix(base.path()).unwrap_or(url.path());
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        0
    } else {
        rest.split('/').count() as u64
    }
}

/// A fingerprint of the set of entry names on a listing page (relative to
/// the page, so that `/a/` and `/a/a/` listing the same folder match).
fn entry_names(links: &[ListingLink], page: &Url) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut names: Vec<&str> = links
        .iter()
        .map(|l| {
            let (ListingLink::Dir(u) | ListingLink::File(u)) = l;
            u.path().strip_prefix(page.path()).unwrap_or(u.path())
        })
        .collect();
    names.sort_unstable();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    names.hash(&mut h);
    h.finish()
}

/// A file a source names.
#[derive(Debug, Clone)]
pub(super) struct SourceFile {
    pub(super) url: Url,
    pub(super) size: Option<u64>,
    pub(super) sha256: Option<String>,
}

pub(super) fn to_uri(url: &Url) -> Result<Uri, String> {
    url.as_str().parse().map_err(|e| format!("{url}: {e}"))
}

impl Channel {
    fn wanted(&self, url: &Url) -> bool {
        let base = self.config.base();
        self.filter
            .wanted(url.path().strip_prefix(base.path()).unwrap_or(url.path()))
    }
}

impl Channels {
    /// Lists the source: the wanted files it names, up to the channel's
    /// limits. Only a listing without problems and without limit hits is
    /// complete (only then may files missing from it be unpinned).
    pub(super) async fn list(
        &self,
        ch: &Channel,
        limits: &ChannelLimits,
    ) -> Result<Listed, String> {
        let config = &ch.config;
        let mut listed = Listed::default();
        let max_files = limits.max_files;
        match config.kind {
            SourceKind::Manifest => {
                let body = self.fetch_document(&config.source, config).await?;
                let mut seen = HashSet::new();
                let files = &mut listed.files;
                let hits = &mut listed.hits;
                parse_manifest_each(&body, &config.source, |e| {
                    if !ch.wanted(&e.url) || !seen.insert(e.url.to_string()) {
                        return ControlFlow::Continue(());
                    }
                    if files.len() as u64 >= max_files {
                        hits.hit("max_files", Some(max_files), e.url.as_str());
                        return ControlFlow::Break(());
                    }
                    files.push(SourceFile {
                        url: e.url,
                        size: e.size,
                        sha256: e.sha256,
                    });
                    ControlFlow::Continue(())
                })
                .map_err(|e| e.to_string())?;
            }
            SourceKind::Listing => {
                let base = config.base();
                let page_links = usize::try_from(limits.max_page_links).unwrap_or(usize::MAX);
                // Each folder waits with the entry names of the pages above
                // it: a page that lists what an ancestor listed is a
                // symlink loop (`a -> .` or `a -> ..`) whatever its URL.
                let mut queue = VecDeque::from([(base.clone(), Arc::new(Vec::new()))]);
                let mut queued = HashSet::from([base.to_string()]);
                let mut files_seen = HashSet::new();
                let mut pages: u64 = 0;
                'crawl: while let Some((dir, ancestors)) = queue.pop_front() {
                    pages += 1;
                    let body = match self.fetch_document(&dir, config).await {
                        Ok(b) => b,
                        // The root must list; a subfolder failing makes
                        // the listing incomplete.
                        Err(e) if dir == base => return Err(e),
                        Err(e) => {
                            listed.problems.push(format!("{dir}: {e}"));
                            continue;
                        }
                    };
                    let html = String::from_utf8_lossy(&body);
                    let page = parse_listing_limited(&html, &dir, &base, page_links);
                    if page.truncated {
                        tracing::warn!(channel = %config.name, url = %dir, limit = limits.max_page_links, "listing page has more entries than max_page_links; the rest are ignored");
                        listed.hits.hit(
                            "max_page_links",
                            Some(limits.max_page_links),
                            dir.as_str(),
                        );
                    }
                    let names = entry_names(&page.links, &dir);
                    if ancestors.contains(&names) {
                        tracing::warn!(channel = %config.name, url = %dir, "folder lists the same entries as a folder above it (a symlink loop?); not followed");
                        listed.hits.hit("loop", None, dir.as_str());
                        continue;
                    }
                    let lineage =
                        Arc::new(ancestors.iter().copied().chain([names]).collect::<Vec<_>>());
                    for link in page.links {
                        match link {
                            ListingLink::Dir(u) => {
                                if queued.contains(u.as_str()) {
                                    continue;
                                }
                                if depth_below(&u, &base) > limits.max_depth {
                                    listed.hits.hit(
                                        "max_depth",
                                        Some(limits.max_depth),
                                        u.as_str(),
                                    );
                                    continue;
                                }
                                // Counting the queue keeps it (and the
                                // memory of a crawl) within max_pages.
                                if pages + queue.len() as u64 >= limits.max_pages {
                                    listed.hits.hit(
                                        "max_pages",
                                        Some(limits.max_pages),
                                        u.as_str(),
                                    );
                                    continue;
                                }
                                queued.insert(u.to_string());
                                queue.push_back((u, lineage.clone()));
                            }
                            ListingLink::File(u) => {
                                if !ch.wanted(&u) || !files_seen.insert(u.to_string()) {
                                    continue;
                                }
                                if listed.files.len() as u64 >= max_files {
                                    listed.hits.hit("max_files", Some(max_files), u.as_str());
                                    break 'crawl;
                                }
                                listed.files.push(SourceFile {
                                    url: u,
                                    size: None,
                                    sha256: None,
                                });
                            }
                        }
                    }
                }
                if !listed.hits.0.is_empty() {
                    tracing::warn!(channel = %config.name, pages, files = listed.files.len(), "listing stopped at a limit");
                }
            }
        }
        Ok(listed)
    }

    async fn fetch_document(
        &self,
        url: &Url,
        config: &crate::ChannelConfig,
    ) -> Result<bytes::Bytes, String> {
        let uri = to_uri(url)?;
        let uri = self.engine.canonical_uri(uri);
        match (self.engine)
            .fetch_document(&uri, MAX_DOCUMENT, config.reach())
            .await
        {
            Ok((StatusCode::OK, _, body)) => Ok(body),
            Ok((status, _, _)) => Err(format!("{url}: origin answered {status}")),
            Err(e) => Err(format!("{url}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_every_segment_below_the_base() {
        let base = Url::parse("http://h/pkgs/").unwrap();
        let depth = |p: &str| depth_below(&base.join(p).unwrap(), &base);
        assert_eq!(depth("/pkgs/"), 0);
        assert_eq!(depth("/pkgs/a/"), 1);
        assert_eq!(depth("/pkgs/a/b/"), 2);
        // Empty segments are levels too, or `a//...` would never end.
        assert_eq!(depth("/pkgs/a//"), 2);
        assert_eq!(depth("/pkgs/a////"), 4);
    }
}
