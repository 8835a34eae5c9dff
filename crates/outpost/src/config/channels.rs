//! The `[[channel]]` tables: each resolved into a [`ChannelConfig`], with
//! its limits bounded, its patterns and aliases checked, names unique, and
//! its aliases added to the proxy's host map.

use std::collections::HashMap;

use outpost_channel::{ChannelConfig, ChannelLimits, DEFAULT_GRACE, Revalidate, SourceKind};
use outpost_proxy::ProxyConfig;
use outpost_shaper::Rate;

use super::file::FileConfig;
use super::resolver::{Resolver, at_least, in_range};
use super::values::{RevalidateValue, Setting, Size, SourceKindValue};

/// Bounds of the channel limit keys: a value outside is a typo or would
/// let one sync hold millions of entries in memory.
const MAX_DEPTH: (u64, u64) = (0, 1000);
const MAX_PAGES: (u64, u64) = (1, 1_000_000);
const MAX_PAGE_LINKS: (u64, u64) = (1, 1_000_000);
const MAX_FILES: (u64, u64) = (1, 10_000_000);
/// The longest `revalidate_grace`.
const MAX_GRACE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

pub(super) fn channel_configs(
    r: &mut Resolver<'_>,
    file: &FileConfig,
    cache_size: u64,
    cache_dir: &std::path::Path,
    proxy: &mut ProxyConfig,
) -> Vec<ChannelConfig> {
    // Where each name was first used, for "used twice" errors.
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut channels = Vec::new();
    for ch in &file.channels {
        let table = ch.span();
        let ch = ch.get_ref();
        let name = r.required(&table, "channel.name", &ch.name);
        let Some(name) = name else { continue };
        let name_span = ch.name.as_ref().map_or(table.clone(), |s| s.span.clone());
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            r.error_at(
                &name_span,
                format!("channel.name: {name:?} must be letters, digits, '-', '_' or '.'"),
            );
        }
        if let Some(&first) = names.get(&name) {
            let here = r.line(&name_span);
            r.error_at(
                &name_span,
                format!("channel.name {name:?} is used twice: on line {first} and line {here}"),
            );
        } else {
            let line = r.line(&name_span);
            names.insert(name.clone(), line);
        }
        let key = |k: &str| format!("channel {name:?}: {k}");
        let source = r.required(&table, &key("source"), &ch.source);
        let kind = r.get(&key("kind"), &ch.kind);
        let include = r.get(&key("include"), &ch.include).unwrap_or_default();
        let exclude = r.get(&key("exclude"), &ch.exclude).unwrap_or_default();
        for (k, setting, patterns) in [
            ("include", &ch.include, &include),
            ("exclude", &ch.exclude, &exclude),
        ] {
            for p in patterns {
                if let Err(e) = outpost_channel::PathFilter::check(p) {
                    let span = setting.as_ref().map_or(table.clone(), |s| s.span.clone());
                    r.error_at(&span, format!("{}: {e}", key(k)));
                }
            }
        }
        let schedule = r.get(&key("schedule"), &ch.schedule).map(|s| s.0);
        let rate = r
            .get(&key("rate"), &ch.rate)
            .map_or(Rate::UNLIMITED, |r| r.0);
        let window = r.get(&key("window"), &ch.window).map(|w| w.0);
        let verify = r.get(&key("verify"), &ch.verify).unwrap_or(true);
        let aliases = r.get(&key("aliases"), &ch.aliases).unwrap_or_default();
        for alias in &aliases {
            if alias.is_empty() || alias.contains(['/', ':', ' ']) {
                let span = ch
                    .aliases
                    .as_ref()
                    .map_or(table.clone(), |s| s.span.clone());
                r.error_at(
                    &span,
                    format!("{}: {alias:?} must be a bare host name", key("aliases")),
                );
            }
        }
        let concurrency = r
            .checked(&key("concurrency"), &ch.concurrency, at_least(1))
            .unwrap_or(2);
        let d = ChannelLimits::default();
        let count =
            |r: &mut Resolver<'_>, k: &str, s: &Option<Setting<u64>>, (min, max), default| {
                r.checked(&key(k), s, in_range(min, max)).unwrap_or(default)
            };
        let limits = ChannelLimits {
            max_depth: count(r, "max_depth", &ch.max_depth, MAX_DEPTH, d.max_depth),
            max_pages: count(r, "max_pages", &ch.max_pages, MAX_PAGES, d.max_pages),
            max_page_links: count(
                r,
                "max_page_links",
                &ch.max_page_links,
                MAX_PAGE_LINKS,
                d.max_page_links,
            ),
            max_files: count(r, "max_files", &ch.max_files, MAX_FILES, d.max_files),
            // Pinned files are never evicted: by default one channel
            // leaves at least half the cache to the PCs' traffic.
            max_bytes: Some(
                r.checked(&key("max_bytes"), &ch.max_bytes, |b| {
                    if b.0 < 1 << 20 {
                        Err(format!("must be at least 1 MiB, got {b}"))
                    } else if b.0 > cache_size {
                        Err(format!(
                            "{b} is larger than the cache ({}); pinned files are never evicted",
                            Size(cache_size)
                        ))
                    } else {
                        Ok(())
                    }
                })
                .map_or(cache_size / 2, |b| b.0),
            ),
        };
        let revalidate = match r.get(&key("revalidate"), &ch.revalidate) {
            Some(RevalidateValue::Origin) => Revalidate::Origin,
            Some(RevalidateValue::Sync) | None => Revalidate::Sync,
        };
        let revalidate_grace = r
            .checked(&key("revalidate_grace"), &ch.revalidate_grace, |d| {
                if d.0 > MAX_GRACE {
                    Err(format!(
                        "{} is above the longest grace ({}): a channel that stopped syncing \
                         would keep PCs on old files for that long",
                        humantime::format_duration(d.0),
                        humantime::format_duration(MAX_GRACE)
                    ))
                } else {
                    Ok(())
                }
            })
            .map_or(DEFAULT_GRACE, |d| d.0);
        let export = r.checked(&key("export"), &ch.export, |dir| {
            outpost_channel::export::check_export_dir(dir, cache_dir)
        });
        let Some(source) = source.map(|s| s.0) else {
            continue;
        };
        let kind = match kind {
            Some(SourceKindValue::Listing) => SourceKind::Listing,
            Some(SourceKindValue::Manifest) => SourceKind::Manifest,
            None if source.path().ends_with('/') => SourceKind::Listing,
            None => SourceKind::Manifest,
        };
        if let Some(host) = source.host_str() {
            let authority = match source.port() {
                Some(port) => format!("{}:{port}", host.to_ascii_lowercase()),
                None => host.to_ascii_lowercase(),
            };
            for alias in &aliases {
                proxy
                    .host_aliases
                    .insert(alias.to_ascii_lowercase(), authority.clone());
            }
        }
        channels.push(ChannelConfig {
            name,
            source,
            kind,
            include,
            exclude,
            schedule,
            rate,
            window,
            verify,
            aliases,
            concurrency,
            limits,
            managed: false,
            revalidate,
            revalidate_grace,
            export,
        });
    }
    channels
}
