//! The one pass from configuration text to [`Resolved`]: parse with spans,
//! report unknown keys, then resolve every table, checking each value where
//! it is used and collecting every error with its position.

use std::collections::HashMap;
use std::path::PathBuf;

use outpost_channel::ChannelConfig;
use outpost_proxy::wan::{LocalClock, WanPolicy};
use outpost_proxy::{FillConfig, ProxyConfig, RangeMissPolicy, Site};
use outpost_shaper::{LocalTime, Rate, RateRule, RateSchedule};
use outpost_store::StoreConfig;
use serde::Deserialize;
use toml::Spanned;

use super::file::*;
use super::resolver::{Resolver, at_least, in_range};
use super::values::*;
use super::*;

/// The edge removes its targeted field from every response of a reverse
/// site, so the name must be one no client needs: a field of its own
/// (RFC 9213 section 2 names them `*-Cache-Control`), never `Cache-Control`
/// itself or `CDN-Cache-Control` (which every CDN reads already).
fn check_targeted_field(name: &http::HeaderName) -> Result<(), String> {
    let name = name.as_str();
    if name == "cache-control" || name == "cdn-cache-control" || !name.ends_with("-cache-control") {
        return Err(format!(
            "expected a field of the edge's own ending in -Cache-Control, like \"Outpost-Cache-Control\", got \"{name}\""
        ));
    }
    Ok(())
}

/// The levels a log filter may name.
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks a log filter: a bare word must be a level (tracing would take
/// `"verbose"` for a module name and log nothing else), and `target=level`
/// must name a level.
fn check_log_level(filter: &String) -> Result<(), String> {
    let expected = || {
        format!(
            "expected a level ({}) or target=level directives like \"outpost_proxy=debug,info\"",
            LOG_LEVELS.join(", ")
        )
    };
    for directive in filter.split(',').map(str::trim) {
        if directive.contains('[') {
            // Span filters: leave their syntax to tracing's parser below.
            continue;
        }
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LOG_LEVELS.contains(&level.trim().to_ascii_lowercase().as_str()) {
            return Err(format!("{directive:?} is not a log level: {}", expected()));
        }
    }
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(|_| ())
        .map_err(|e| format!("{e}: {}", expected()))
}

fn glob_check(pattern: &String) -> Result<(), String> {
    globset::Glob::new(pattern)
        .map(|_| ())
        .map_err(|e| format!("bad pattern {pattern:?}: {e}"))
}

pub(super) fn resolve(
    text: &str,
    overrides: &Overrides,
) -> Result<(FileConfig, Resolved), Vec<ConfigError>> {
    let mut r = Resolver::new(text);
    let doc = match toml::de::DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            r.error_at(&span, format!("not valid TOML: {}", e.message().trim()));
            return Err(r.into_errors());
        }
    };
    for unknown in unknown_keys(doc.get_ref()) {
        r.error_at(
            &unknown.span,
            format!(
                "unknown key {:?} (expected one of: {})",
                unknown.name,
                unknown.expected.join(", ")
            ),
        );
    }
    let file = match FileConfig::deserialize(toml::de::Deserializer::from(doc)) {
        Ok(file) => file,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let message = match r.key_before(span.start) {
                Some(key) => format!("{key}: {}", e.message().trim()),
                None => e.message().trim().to_string(),
            };
            r.error_at(&span, message);
            FileConfig::default()
        }
    };
    let resolved = resolve_file(&mut r, &file, overrides);
    if r.is_clean() {
        Ok((file, resolved))
    } else {
        Err(r.into_errors())
    }
}

fn resolve_file(r: &mut Resolver<'_>, file: &FileConfig, overrides: &Overrides) -> Resolved {
    let store = store_config(r, file, overrides);
    let mut proxy = proxy_config(r, file, overrides);
    proxy.library = super::library::library_config(r, &file.library, overrides, &proxy);
    proxy.wan = wan_policy(r, &file.wan);
    let channels =
        super::channels::channel_configs(r, file, store.max_bytes, &store.dir, &mut proxy);
    proxy.wan.bulk_receive_buffer = WanPolicy::receive_buffer_for(slowest_limit(&proxy, &channels));
    let l = &file.log;
    let log_level = r.checked("log.level", &l.level, check_log_level);
    let access_format = r.get("log.access_log_format", &l.access_log_format);
    let access_log = overrides
        .access_log
        .clone()
        .or_else(|| r.get("log.access_log", &l.access_log))
        .map(|target| (target, access_format.unwrap_or(AccessFormat::Squid)));
    let admin = admin_config(r, file, overrides, &store);
    let manager = super::manager::manager_config(r, &file.manager, overrides);
    let wccp = super::wccp::wccp_config(r, &file.wccp);
    Resolved {
        proxy,
        store,
        log_level,
        access_log,
        admin,
        channels,
        manager,
        wccp,
    }
}

fn store_config(r: &mut Resolver<'_>, file: &FileConfig, overrides: &Overrides) -> StoreConfig {
    let c = &file.cache;
    let dir = overrides
        .cache_dir
        .clone()
        .or_else(|| r.get("cache.dir", &c.dir))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR));
    let file_size = r.checked("cache.max_size", &c.max_size, |s| {
        if s.0 >= 1 << 20 {
            Ok(())
        } else {
            Err(format!("must be at least 1 MiB, got {s}"))
        }
    });
    let size = overrides
        .cache_size
        .map(|s| s.as_u64())
        .or(file_size.map(|s| s.0))
        .unwrap_or(DEFAULT_CACHE_SIZE);
    let mut store = StoreConfig::new(dir, size);
    let high = r
        .checked("cache.high_watermark", &c.high_watermark, |&h| {
            if 0.0 < h && h <= 1.0 {
                Ok(())
            } else {
                Err(format!("must be above 0 and at most 1, got {h}"))
            }
        })
        .unwrap_or(store.high_watermark);
    let low = r
        .checked("cache.low_watermark", &c.low_watermark, |&l| {
            if 0.0 < l && l < high {
                Ok(())
            } else {
                Err(format!(
                    "must be above 0 and below cache.high_watermark ({high}), got {l}"
                ))
            }
        })
        .unwrap_or(store.low_watermark);
    store.high_watermark = high;
    store.low_watermark = low;
    if let Some(reserve) = r.get("cache.disk_reserve", &c.disk_reserve) {
        store.disk_reserve = reserve.0;
    }
    store
}

fn proxy_config(r: &mut Resolver<'_>, file: &FileConfig, overrides: &Overrides) -> ProxyConfig {
    let d = ProxyConfig::default();
    let s = &file.server;
    let file_listen = r.checked("server.listen", &s.listen, |l| {
        if l.is_empty() {
            Err("needs at least one address".into())
        } else {
            Ok(())
        }
    });
    let listen = if overrides.listen.is_empty() {
        file_listen.unwrap_or(d.listen.clone())
    } else {
        overrides.listen.clone()
    };
    let upstream_ca = match r.get("server.upstream_ca_file", &s.upstream_ca_file) {
        Some(path) => match outpost_proxy::upstream::load_ca_file(&path) {
            Ok(certs) => certs,
            Err(e) => {
                let span = s
                    .upstream_ca_file
                    .as_ref()
                    .map(|s| s.span.clone())
                    .unwrap_or(0..0);
                r.error_at(&span, format!("server.upstream_ca_file: {e}"));
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    let allowed_destinations = s.allowed_destinations.as_ref().and_then(|setting| {
        let list = r.get("server.allowed_destinations", &Some(setting.clone()))?;
        let mut parsed = Vec::new();
        for d in &list {
            match outpost_proxy::config::Destination::parse(d) {
                Ok(dest) => parsed.push(dest),
                Err(e) => r.error_at(&setting.span, format!("server.allowed_destinations: {e}")),
            }
        }
        Some(parsed)
    });
    let file_origin = r.get("server.origin", &s.origin).map(|o| o.0);
    let sites = file
        .sites
        .iter()
        .filter_map(|site| {
            let span = site.span();
            let site = site.get_ref();
            let host = r.required(&span, "site.host", &site.host);
            let origin = r.required(&span, "site.origin", &site.origin);
            if host.as_ref().is_some_and(String::is_empty) {
                let span = site.host.as_ref().map_or(span.clone(), |h| h.span.clone());
                r.error_at(&span, "site.host: must not be empty");
                return None;
            }
            Some(Site {
                host: host?.to_ascii_lowercase(),
                origin: origin?.0,
            })
        })
        .collect();
    let h = &d.h1;
    let h1 = outpost_proxy::h1::H1Config {
        header_read_timeout: r
            .get("server.header_read_timeout", &s.header_read_timeout)
            .map_or(h.header_read_timeout, |d| d.0),
        idle_timeout: r
            .get("server.idle_timeout", &s.idle_timeout)
            .map_or(h.idle_timeout, |d| d.0),
        max_head_bytes: r
            .checked("server.max_header_size", &s.max_header_size, |s| {
                usize::try_from(s.0)
                    .map(|_| ())
                    .map_err(|_| format!("{s} is too large"))
            })
            .map_or(h.max_head_bytes, |s| s.0 as usize),
        max_headers: r
            .get("server.max_headers", &s.max_headers)
            .unwrap_or(h.max_headers),
        body_timeout: r
            .get("server.body_timeout", &s.body_timeout)
            .map_or(h.body_timeout, |d| d.0),
        body_min_rate: r
            .get("server.body_min_rate", &s.body_min_rate)
            .unwrap_or(h.body_min_rate),
        send_timeout: r
            .get("server.send_timeout", &s.send_timeout)
            .map_or(h.send_timeout, |d| d.0),
        tunnel_idle_timeout: r
            .get("server.tunnel_idle_timeout", &s.tunnel_idle_timeout)
            .map_or(h.tunnel_idle_timeout, |d| d.0),
    };
    let cache = &file.cache;
    ProxyConfig {
        listen,
        allowed_clients: r
            .get("server.allowed_clients", &s.allowed_clients)
            .unwrap_or(d.allowed_clients.clone()),
        connect_ports: r
            .get("server.connect_ports", &s.connect_ports)
            .unwrap_or(d.connect_ports.clone()),
        allowed_destinations,
        origin: overrides.origin.clone().or(file_origin),
        sites,
        fill: fill_config(r, &file.fill),
        h1,
        max_connections: r
            .checked(
                "server.max_connections",
                &s.max_connections,
                in_range(1, 1_000_000),
            )
            .unwrap_or(d.max_connections),
        internal_destinations: r
            .get("server.internal_destinations", &s.internal_destinations)
            .unwrap_or_default(),
        forward: r.get("server.forward", &s.forward),
        forward_ports: r
            .get("server.forward_ports", &s.forward_ports)
            .map_or(d.forward_ports.clone(), |ports| {
                ports.iter().map(|p| (p.0, p.1)).collect()
            }),
        upstream_ca,
        overrides: file
            .overrides
            .iter()
            .filter_map(|o| cache_override(r, o))
            .collect(),
        bypass_request_headers: r
            .get(
                "cache.bypass_request_headers",
                &cache.bypass_request_headers,
            )
            .map(|list| list.into_iter().map(|h| h.0).collect())
            .unwrap_or_default(),
        drain: r.get("server.drain", &s.drain).map_or(d.drain, |d| d.0),
        targeted_cache_control: r
            .checked(
                "server.targeted_cache_control",
                &s.targeted_cache_control,
                |h| check_targeted_field(&h.0),
            )
            .map(|h| h.0),
        wan: WanPolicy::default(),
        local_clock: local_clock(),
        host_aliases: HashMap::new(),
        library: Default::default(),
    }
}

fn fill_config(r: &mut Resolver<'_>, f: &FillSection) -> FillConfig {
    let d = FillConfig::default();
    FillConfig {
        continue_on_client_abort: r
            .get("fill.continue_on_client_abort", &f.continue_on_client_abort)
            .unwrap_or(d.continue_on_client_abort),
        range_miss: match r.get("fill.range_miss", &f.range_miss) {
            Some(RangeMiss::Wait) => RangeMissPolicy::Wait,
            Some(RangeMiss::Fetch) => RangeMissPolicy::Fetch,
            None => d.range_miss,
        },
        background_fill: r
            .get("fill.background_fill", &f.background_fill)
            .unwrap_or(d.background_fill),
        range_concurrency: r
            .checked("fill.range_concurrency", &f.range_concurrency, at_least(1))
            .unwrap_or(d.range_concurrency),
        background_chunk: r
            .checked("fill.background_chunk", &f.background_chunk, |c| {
                if c.0 >= 64 << 10 {
                    Ok(())
                } else {
                    Err(format!("must be at least 64 KiB, got {c}"))
                }
            })
            .map_or(d.background_chunk, |s| s.0),
        max_retries: r
            .get("fill.max_retries", &f.max_retries)
            .unwrap_or(d.max_retries),
        retry_for: r
            .get("fill.retry_for", &f.retry_for)
            .map_or(d.retry_for, |d| d.0),
        retry_backoff_initial: r
            .get("fill.retry_backoff_initial", &f.retry_backoff_initial)
            .map_or(d.retry_backoff_initial, |d| d.0),
        retry_backoff_max: r
            .get("fill.retry_backoff_max", &f.retry_backoff_max)
            .map_or(d.retry_backoff_max, |d| d.0),
        checkpoint_bytes: r
            .get("fill.checkpoint_every", &f.checkpoint_every)
            .map_or(d.checkpoint_bytes, |s| s.0),
        upstream_header_timeout: r
            .get("fill.upstream_header_timeout", &f.upstream_header_timeout)
            .map_or(d.upstream_header_timeout, |d| d.0),
        upstream_idle_timeout: r
            .get("fill.upstream_idle_timeout", &f.upstream_idle_timeout)
            .map_or(d.upstream_idle_timeout, |d| d.0),
        serve_stale_on_error: r
            .get("fill.serve_stale_on_error", &f.serve_stale_on_error)
            .unwrap_or(d.serve_stale_on_error),
        max_fills: r
            .checked("fill.max_fills", &f.max_fills, at_least(1))
            .unwrap_or(d.max_fills),
    }
}

fn cache_override(
    r: &mut Resolver<'_>,
    o: &Spanned<OverrideSection>,
) -> Option<outpost_proxy::CacheOverride> {
    let table = o.span();
    let o = o.get_ref();
    let mut glob = |key: &str, setting: &Option<Setting<String>>| {
        let pattern = r.checked(key, setting, glob_check)?;
        globset::GlobBuilder::new(&pattern)
            .case_insensitive(true)
            .build()
            .ok()
            .map(|g| g.compile_matcher())
    };
    let any = || globset::Glob::new("*").map(|g| g.compile_matcher()).ok();
    let host = if o.host.is_some() {
        glob("override.host", &o.host)
    } else {
        any()
    };
    let path = if o.path.is_some() {
        glob("override.path", &o.path)
    } else {
        any()
    };
    let min_fresh = r.get("override.min_fresh", &o.min_fresh).map(|d| d.0);
    let max_fresh = r.get("override.max_fresh", &o.max_fresh).map(|d| d.0);
    if let (Some(min), Some(max)) = (min_fresh, max_fresh)
        && min > max
    {
        let span = o.min_fresh.as_ref().map_or(table, |s| s.span.clone());
        r.error_at(
            &span,
            format!(
                "override.min_fresh: {} is above max_fresh ({})",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        );
    }
    let cache_private = r.get("override.cache_private", &o.cache_private);
    let ignore_query = r.get("override.ignore_query", &o.ignore_query);
    let never_cache = r.get("override.never_cache", &o.never_cache);
    Some(outpost_proxy::CacheOverride {
        host: host?,
        path: path?,
        freshness: outpost_http::policy::FreshnessOverride {
            min_fresh,
            max_fresh,
            cache_private: cache_private.unwrap_or(false),
        },
        ignore_query: ignore_query.unwrap_or(false),
        never_cache: never_cache.unwrap_or(false),
    })
}

fn wan_policy(r: &mut Resolver<'_>, wan: &WanSection) -> WanPolicy {
    let mut rules: Vec<(WanClass, RateRule)> = Vec::new();
    for rule in &wan.rules {
        let table = rule.span();
        let rule = rule.get_ref();
        let class = r.required(&table, "wan.rule.class", &rule.class);
        let when = r.required(&table, "wan.rule.when", &rule.when);
        let rate = r.required(&table, "wan.rule.rate", &rule.rate);
        if let (Some(class), Some(when), Some(rate)) = (class, when, rate) {
            rules.push((
                class,
                RateRule {
                    window: when.0,
                    rate: rate.0,
                },
            ));
        }
    }
    let mut schedule =
        |class: WanClass, key: &str, default: &Option<Setting<Parsed<Rate>>>| RateSchedule {
            default: r.get(key, default).map_or(Rate::UNLIMITED, |r| r.0),
            rules: rules
                .iter()
                .filter(|(c, _)| *c == class)
                .map(|(_, rule)| rule.clone())
                .collect(),
        };
    WanPolicy {
        site: schedule(WanClass::Site, "wan.rate", &wan.rate),
        interactive: schedule(
            WanClass::Interactive,
            "wan.interactive_rate",
            &wan.interactive_rate,
        ),
        prepos: schedule(WanClass::Prepos, "wan.prepos_rate", &wan.prepos_rate),
        bulk_receive_buffer: None,
    }
}

/// The slowest positive limit pre-positioning can run under, which sizes
/// the bulk receive buffers.
fn slowest_limit(proxy: &ProxyConfig, channels: &[ChannelConfig]) -> Option<f64> {
    let site_and_prepos = [&proxy.wan.site, &proxy.wan.prepos]
        .into_iter()
        .flat_map(|s| {
            std::iter::once(s.default)
                .chain(s.rules.iter().map(|r| r.rate))
                .filter_map(|r| r.limit())
        });
    channels
        .iter()
        .filter_map(|c| c.rate.limit())
        .chain(site_and_prepos)
        .filter(|&r| r > 0.0)
        .reduce(f64::min)
}

/// The machine's local time zone, as windows and schedules use it.
fn local_clock() -> LocalClock {
    use chrono::{Datelike, Timelike};
    LocalClock(std::sync::Arc::new(|| {
        let now = chrono::Local::now();
        LocalTime::new(
            now.weekday().num_days_from_monday() as u8,
            now.hour() as u8,
            now.minute() as u8,
        )
    }))
}

fn admin_config(
    r: &mut Resolver<'_>,
    file: &FileConfig,
    overrides: &Overrides,
    store: &StoreConfig,
) -> AdminConfig {
    let a = &file.admin;
    let file_listen = r.get("admin.listen", &a.listen);
    let token_file = r.get("admin.token_file", &a.token_file);
    let default_listen: SocketAddr = DEFAULT_ADMIN
        .parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 3180)));
    let listen = overrides.admin.or(file_listen).unwrap_or(default_listen);
    // The same rule admin::bind applies, so check-config refuses what
    // serve would.
    if !listen.ip().is_loopback() && token_file.is_none() {
        let rule =
            "is not loopback: set admin.token_file so the admin API is not open to the network";
        match (&overrides.admin, &a.listen) {
            (None, Some(setting)) => r.error_at(
                &setting.span.clone(),
                format!("admin.listen {listen} {rule}"),
            ),
            _ => r.error(format!("--admin {listen} {rule}")),
        }
    }
    let allowed_hosts =
        super::resolver::bare_host_names(r, "admin.allowed_hosts", &a.allowed_hosts);
    AdminConfig {
        listen,
        token_file,
        generated_token_file: store.dir.join(ADMIN_TOKEN_FILE_NAME),
        header_read_timeout: r
            .checked("admin.header_read_timeout", &a.header_read_timeout, |d| {
                if d.0.is_zero() {
                    Err("must be above 0".into())
                } else {
                    Ok(())
                }
            })
            .map_or(DEFAULT_ADMIN_HEADER_READ_TIMEOUT, |d| d.0),
        max_connections: r
            .checked(
                "admin.max_connections",
                &a.max_connections,
                in_range(1, 4096),
            )
            .unwrap_or(DEFAULT_ADMIN_MAX_CONNECTIONS),
        allowed_hosts: allowed_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
    }
}
