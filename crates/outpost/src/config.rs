//! The TOML configuration file: a raw `FileConfig` where every field is
//! optional and unknown keys are errors, resolved (with the command line on
//! top) into the proxy's and store's configurations.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bytesize::ByteSize;
use ipnet::IpNet;
use outpost_channel::{ChannelConfig, ChannelLimits, SourceKind};
use outpost_proxy::wan::{LocalClock, WanPolicy};
use outpost_proxy::{FillConfig, ProxyConfig, RangeMissPolicy, Site};
use outpost_shaper::{LocalTime, Rate, RateRule, RateSchedule};
use outpost_store::StoreConfig;
use serde::{Deserialize, Deserializer};

/// A port (`80`) or an inclusive range of ports (`"1025-65535"`).
#[derive(Debug, Clone, Copy)]
pub struct PortRange(pub u16, pub u16);

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Port(u16),
            Text(String),
        }
        let bad = |s: &str| {
            serde::de::Error::custom(format!(
                "invalid port or range {s:?} (write e.g. 443 or \"1025-65535\")"
            ))
        };
        match Raw::deserialize(d)? {
            Raw::Port(p) => Ok(PortRange(p, p)),
            Raw::Text(s) => {
                let (low, high) = match s.split_once('-') {
                    Some((a, b)) => (a.trim().parse(), b.trim().parse()),
                    None => (s.trim().parse(), s.trim().parse()),
                };
                match (low, high) {
                    (Ok(low), Ok(high)) if low <= high => Ok(PortRange(low, high)),
                    _ => Err(bad(&s)),
                }
            }
        }
    }
}

/// The longest duration a setting may have.
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// A duration written as "30s", "5m", "200ms".
#[derive(Debug, Clone, Copy)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let duration = humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?}: {e} (write e.g. \"30s\", \"5m\")"
            ))
        })?;
        // Deadlines are computed as now + duration: a century-long one
        // would overflow the clock and stop every connection.
        if duration > MAX_DURATION {
            return Err(serde::de::Error::custom(format!(
                "duration {s:?} is longer than a year"
            )));
        }
        Ok(HumanDuration(duration))
    }
}

/// A URL with an http or https scheme and a host.
#[derive(Debug, Clone)]
pub struct OriginUrl(pub http::Uri);

impl<'de> Deserialize<'de> for OriginUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_origin(&s)
            .map(OriginUrl)
            .map_err(serde::de::Error::custom)
    }
}

pub fn parse_origin(s: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("invalid URL {s:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(format!(
                "origin URL {s:?} must start with http:// or https://"
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("origin URL {s:?} has no host"));
    }
    Ok(uri)
}

/// Implements `Deserialize` for a wrapper around a type parsed from a
/// string, so that a bad value is reported with its key and line.
macro_rules! from_str_value {
    ($name:ident, $inner:ty) => {
        #[derive(Debug, Clone)]
        pub struct $name(pub $inner);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse::<$inner>()
                    .map($name)
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}

from_str_value!(RateValue, outpost_shaper::Rate);
from_str_value!(WindowValue, outpost_shaper::TimeWindow);
from_str_value!(CronValue, outpost_channel::CronSchedule);
from_str_value!(HeaderNameValue, http::HeaderName);

/// An http or https URL.
#[derive(Debug, Clone)]
pub struct UrlValue(pub url::Url);

impl<'de> Deserialize<'de> for UrlValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let url = url::Url::parse(&s)
            .map_err(|e| serde::de::Error::custom(format!("invalid URL {s:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(serde::de::Error::custom(format!(
                "URL {s:?} must be http:// or https:// with a host"
            )));
        }
        Ok(UrlValue(url))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub cache: CacheSection,
    #[serde(default)]
    pub fill: FillSection,
    #[serde(default, rename = "site")]
    pub sites: Vec<SiteSection>,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub wan: WanSection,
    #[serde(default, rename = "channel")]
    pub channels: Vec<ChannelSection>,
    #[serde(default, rename = "override")]
    pub overrides: Vec<OverrideSection>,
}

/// Caching rules for URLs matching `host` and `path` (globs).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideSection {
    /// Glob on the host name; default "*".
    pub host: Option<String>,
    /// Glob on the path (without query); default "*".
    pub path: Option<String>,
    pub min_fresh: Option<HumanDuration>,
    pub max_fresh: Option<HumanDuration>,
    pub ignore_query: Option<bool>,
    pub never_cache: Option<bool>,
    pub cache_private: Option<bool>,
}

/// WAN bandwidth policy for all upstream traffic.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WanSection {
    /// Site-wide limit. Default unlimited.
    pub rate: Option<RateValue>,
    /// Limit for fetches a client waits for. Default unlimited.
    pub interactive_rate: Option<RateValue>,
    /// Limit for pre-positioning, all channels together. Default unlimited.
    pub prepos_rate: Option<RateValue>,
    /// Time-of-day rules; the first whose window matches wins.
    #[serde(default, rename = "rule")]
    pub rules: Vec<WanRuleSection>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WanClass {
    Site,
    Interactive,
    Prepos,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WanRuleSection {
    /// Which limit the rule sets.
    pub class: WanClass,
    /// "mon-fri 08:00-18:00", "22:00-06:00", "sat,sun".
    pub when: WindowValue,
    pub rate: RateValue,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKindValue {
    Listing,
    Manifest,
}

/// A pre-positioning channel.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSection {
    pub name: String,
    /// A folder URL (ending in "/") whose listings are crawled, or a
    /// manifest URL.
    pub source: UrlValue,
    /// Default: "listing" when the source ends in "/", else "manifest".
    pub kind: Option<SourceKindValue>,
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
    /// Cron expression in the edge's local time.
    pub schedule: Option<CronValue>,
    pub rate: Option<RateValue>,
    /// Transfers only inside this window.
    pub window: Option<WindowValue>,
    /// Check SHA-256 where the manifest gives one. Default true.
    pub verify: Option<bool>,
    pub aliases: Option<Vec<String>>,
    /// Files fetched at once. Default 2.
    pub concurrency: Option<usize>,
    /// Folder levels below the source that are listed. Default 16.
    pub max_depth: Option<u64>,
    /// Listing pages one sync reads. Default 10000.
    pub max_pages: Option<u64>,
    /// Entries read from one listing page. Default 10000.
    pub max_page_links: Option<u64>,
    /// Files the channel holds. Default 100000.
    pub max_files: Option<u64>,
    /// Bytes the channel holds. Default half the cache's size.
    pub max_bytes: Option<ByteSize>,
}

/// Bounds of the channel limit keys: a value outside is a typo or would
/// let one sync hold millions of entries in memory.
const CHANNEL_COUNT_LIMITS: [(&str, u64, u64); 4] = [
    ("max_depth", 0, 1000),
    ("max_pages", 1, 1_000_000),
    ("max_page_links", 1, 1_000_000),
    ("max_files", 1, 10_000_000),
];

impl ChannelSection {
    fn count_limit(&self, key: &str) -> Option<u64> {
        match key {
            "max_depth" => self.max_depth,
            "max_pages" => self.max_pages,
            "max_page_links" => self.max_page_links,
            "max_files" => self.max_files,
            _ => None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Option<Vec<SocketAddr>>,
    pub allowed_clients: Option<Vec<IpNet>>,
    pub connect_ports: Option<Vec<u16>>,
    /// Host globs or address ranges forward/transparent clients may reach.
    pub allowed_destinations: Option<Vec<String>>,
    /// Loopback or link-local ranges forward/transparent clients may reach
    /// all the same (refused by default; the edge's own addresses always).
    pub internal_destinations: Option<Vec<IpNet>>,
    /// Proxy absolute-form requests for any host. Default: only when no
    /// `origin` or `[[site]]` is configured.
    pub forward: Option<bool>,
    /// Ports forward and transparent requests may reach.
    pub forward_ports: Option<Vec<PortRange>>,
    /// PEM file of CA certificates trusted for https origins, beside the
    /// OS trust store.
    pub upstream_ca_file: Option<PathBuf>,
    pub origin: Option<OriginUrl>,
    pub header_read_timeout: Option<HumanDuration>,
    pub idle_timeout: Option<HumanDuration>,
    pub max_header_size: Option<ByteSize>,
    pub max_headers: Option<usize>,
    pub max_connections: Option<usize>,
    /// A request body read that waits this long ends the connection.
    pub body_timeout: Option<HumanDuration>,
    /// Bytes per second a request body must average after body_timeout.
    pub body_min_rate: Option<u64>,
    /// A client that takes no response byte for this long is cut off.
    pub send_timeout: Option<HumanDuration>,
    /// A CONNECT tunnel with no byte either way for this long is closed.
    pub tunnel_idle_timeout: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    pub dir: Option<PathBuf>,
    pub max_size: Option<ByteSize>,
    pub high_watermark: Option<f64>,
    pub low_watermark: Option<f64>,
    /// Request headers, beyond the built-in list, that make a request
    /// bypass the cache (the origin builds its answer from them).
    #[serde(default)]
    pub bypass_request_headers: Vec<HeaderNameValue>,
    /// Free space always left on the cache's file system: a size
    /// ("2 GiB") or a share of the file system ("1%"). Default: 1 % of
    /// the file system, at least 16 MiB and at most 4 GiB.
    pub disk_reserve: Option<DiskReserveValue>,
}

/// `cache.disk_reserve`: a size or a percentage of the file system.
#[derive(Debug, Clone, Copy)]
pub struct DiskReserveValue(pub outpost_store::DiskReserve);

impl<'de> Deserialize<'de> for DiskReserveValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use outpost_store::DiskReserve;
        let s = String::deserialize(d)?;
        let bad = || {
            serde::de::Error::custom(format!(
                "invalid disk_reserve {s:?}: write a size (\"2 GiB\") or a percentage of the file system (\"1%\")"
            ))
        };
        match s.trim().strip_suffix('%') {
            Some(p) => {
                let p: f64 = p.trim().parse().map_err(|_| bad())?;
                if !(0.0..=50.0).contains(&p) {
                    return Err(serde::de::Error::custom(format!(
                        "disk_reserve {s:?}: a percentage must be from 0 to 50"
                    )));
                }
                Ok(Self(DiskReserve::Percent(p)))
            }
            None => s
                .trim()
                .parse::<ByteSize>()
                .map(|b| Self(DiskReserve::Bytes(b.as_u64())))
                .map_err(|_| bad()),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RangeMiss {
    Fetch,
    Wait,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FillSection {
    pub continue_on_client_abort: Option<bool>,
    pub range_miss: Option<RangeMiss>,
    pub background_fill: Option<bool>,
    pub range_concurrency: Option<usize>,
    pub background_chunk: Option<ByteSize>,
    pub max_retries: Option<u32>,
    pub retry_for: Option<HumanDuration>,
    pub retry_backoff_initial: Option<HumanDuration>,
    pub retry_backoff_max: Option<HumanDuration>,
    pub checkpoint_every: Option<ByteSize>,
    pub upstream_header_timeout: Option<HumanDuration>,
    pub upstream_idle_timeout: Option<HumanDuration>,
    pub serve_stale_on_error: Option<bool>,
    pub max_fills: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSection {
    pub host: String,
    pub origin: OriginUrl,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// A tracing filter: "info", "outpost_proxy=debug,info", ...
    pub level: Option<String>,
    /// Access log file, or "-" for stdout. Unset: no access log.
    pub access_log: Option<String>,
    pub access_log_format: Option<AccessFormat>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessFormat {
    Squid,
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Admin API address. Default 127.0.0.1:3180.
    pub listen: Option<SocketAddr>,
    /// File holding the bearer token; required when `listen` is not
    /// loopback. Unset: `admin.token` in the cache directory, generated at
    /// first start.
    pub token_file: Option<PathBuf>,
    /// Time a client has to send a request's headers. Default 10 s.
    pub header_read_timeout: Option<HumanDuration>,
    /// Connections at once; one more is closed at once. Default 64.
    pub max_connections: Option<usize>,
}

/// The admin API's resolved settings.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// The token file the admin configured, if any.
    pub token_file: Option<PathBuf>,
    /// Where the edge keeps the token it generates when none is configured.
    pub generated_token_file: PathBuf,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

pub const DEFAULT_ADMIN: &str = "127.0.0.1:3180";
/// The generated admin token's file name, in the cache directory.
pub const ADMIN_TOKEN_FILE_NAME: &str = "admin.token";
pub const DEFAULT_ADMIN_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 64;

impl FileConfig {
    /// The token file the edge run with this file uses: `admin.token_file`,
    /// else `admin.token` in the cache directory (relative paths are the
    /// edge's: relative to the directory it was started in).
    pub fn admin_token_file(&self) -> PathBuf {
        self.admin.token_file.clone().unwrap_or_else(|| {
            self.cache
                .dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR))
                .join(ADMIN_TOKEN_FILE_NAME)
        })
    }
}

/// Command-line values that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Vec<SocketAddr>,
    pub cache_dir: Option<PathBuf>,
    pub cache_size: Option<ByteSize>,
    pub origin: Option<http::Uri>,
    pub access_log: Option<String>,
    pub admin: Option<SocketAddr>,
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub proxy: ProxyConfig,
    pub store: StoreConfig,
    pub log_level: Option<String>,
    /// Access log target ("-" = stdout) and format.
    pub access_log: Option<(String, AccessFormat)>,
    pub admin: AdminConfig,
    pub channels: Vec<ChannelConfig>,
}

pub const DEFAULT_CACHE_DIR: &str = "./outpost-cache";
pub const DEFAULT_CACHE_SIZE: u64 = 10 * 1024 * 1024 * 1024;

impl FileConfig {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let config =
            Self::parse(&text).with_context(|| format!("config file {}", path.display()))?;
        config
            .validate(&text)
            .with_context(|| format!("config file {}", path.display()))?;
        Ok(config)
    }

    /// Checks what the types alone cannot; errors name the key and its line.
    pub fn validate(&self, text: &str) -> anyhow::Result<()> {
        let at = |key: &str| {
            line_of(text, key)
                .map(|l| format!(" (line {l})"))
                .unwrap_or_default()
        };
        let high = self.cache.high_watermark.unwrap_or(0.95);
        let low = self.cache.low_watermark.unwrap_or(0.90);
        if !(0.0 < high && high <= 1.0) {
            bail!(
                "cache.high_watermark{}: must be in (0, 1], got {high}",
                at("high_watermark")
            );
        }
        if !(0.0 < low && low < high) {
            bail!(
                "cache.low_watermark{}: must be above 0 and below cache.high_watermark ({high}), got {low}",
                at("low_watermark")
            );
        }
        if self
            .cache
            .max_size
            .is_some_and(|s| s.as_u64() < 1024 * 1024)
        {
            bail!("cache.max_size{}: must be at least 1 MiB", at("max_size"));
        }
        let in_admin = |key: &str| {
            line_in_section(text, "admin", key)
                .map(|l| format!(" (line {l})"))
                .unwrap_or_default()
        };
        if self
            .admin
            .max_connections
            .is_some_and(|n| n == 0 || n > 4096)
        {
            bail!(
                "admin.max_connections{}: must be from 1 to 4096",
                in_admin("max_connections")
            );
        }
        if self
            .admin
            .header_read_timeout
            .is_some_and(|d| d.0.is_zero())
        {
            bail!(
                "admin.header_read_timeout{}: must be above 0",
                in_admin("header_read_timeout")
            );
        }
        if self.fill.max_fills == Some(0) {
            bail!("fill.max_fills{}: must be at least 1", at("max_fills"));
        }
        if self.fill.range_concurrency == Some(0) {
            bail!(
                "fill.range_concurrency{}: must be at least 1",
                at("range_concurrency")
            );
        }
        if self
            .fill
            .background_chunk
            .is_some_and(|c| c.as_u64() < 64 * 1024)
        {
            bail!(
                "fill.background_chunk{}: must be at least 64 KiB",
                at("background_chunk")
            );
        }
        if self.server.listen.as_ref().is_some_and(Vec::is_empty) {
            bail!("server.listen{}: needs at least one address", at("listen"));
        }
        for site in &self.sites {
            if site.host.is_empty() {
                bail!("site.host{}: must not be empty", at("host"));
            }
        }
        for o in &self.overrides {
            for pattern in [&o.host, &o.path].into_iter().flatten() {
                if let Err(e) = globset::Glob::new(pattern) {
                    bail!("override: bad pattern {pattern:?}{}: {e}", at("host"));
                }
            }
            if let (Some(min), Some(max)) = (&o.min_fresh, &o.max_fresh)
                && min.0 > max.0
            {
                bail!("override{}: min_fresh is above max_fresh", at("min_fresh"));
            }
        }
        if let Some(path) = &self.server.upstream_ca_file
            && let Err(e) = outpost_proxy::upstream::load_ca_file(path)
        {
            bail!("server.upstream_ca_file{}: {e}", at("upstream_ca_file"));
        }
        if self
            .server
            .max_connections
            .is_some_and(|n| n == 0 || n > 1_000_000)
        {
            bail!(
                "server.max_connections{}: must be from 1 to 1000000",
                at("max_connections")
            );
        }
        for d in self.server.allowed_destinations.iter().flatten() {
            if let Err(e) = outpost_proxy::config::Destination::parse(d) {
                bail!(
                    "server.allowed_destinations{}: {e}",
                    at("allowed_destinations")
                );
            }
        }
        let mut names = std::collections::HashSet::new();
        for (index, ch) in self.channels.iter().enumerate() {
            let at_channel = |key: &str| {
                channel_line(text, index, key)
                    .map(|l| format!(" (line {l})"))
                    .unwrap_or_else(|| at(key))
            };
            let valid = !ch.name.is_empty()
                && ch
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                bail!(
                    "channel.name{}: {:?} must be letters, digits, '-', '_' or '.'",
                    at("name"),
                    ch.name
                );
            }
            if !names.insert(ch.name.as_str()) {
                bail!("channel.name: {:?} is used twice", ch.name);
            }
            if ch.concurrency == Some(0) {
                bail!(
                    "channel {:?}: concurrency{} must be at least 1",
                    ch.name,
                    at("concurrency")
                );
            }
            for pattern in ch.include.iter().chain(ch.exclude.iter()).flatten() {
                if let Err(e) = globset::Glob::new(pattern) {
                    bail!("channel {:?}: bad pattern {pattern:?}: {e}", ch.name);
                }
            }
            for alias in ch.aliases.iter().flatten() {
                if alias.is_empty() || alias.contains(['/', ':', ' ']) {
                    bail!(
                        "channel {:?}: alias {alias:?} must be a bare host name",
                        ch.name
                    );
                }
            }
            for (key, min, max) in CHANNEL_COUNT_LIMITS {
                if let Some(v) = ch.count_limit(key)
                    && !(min..=max).contains(&v)
                {
                    bail!(
                        "channel {:?}: {key}{} must be from {min} to {max}, got {v}",
                        ch.name,
                        at_channel(key)
                    );
                }
            }
            if let Some(bytes) = ch.max_bytes {
                if bytes.as_u64() < 1024 * 1024 {
                    bail!(
                        "channel {:?}: max_bytes{} must be at least 1 MiB, got {bytes}",
                        ch.name,
                        at_channel("max_bytes")
                    );
                }
                if let Some(cache) = self.cache.max_size
                    && bytes > cache
                {
                    bail!(
                        "channel {:?}: max_bytes{} ({bytes}) is larger than cache.max_size ({cache}); pinned files are never evicted",
                        ch.name,
                        at_channel("max_bytes")
                    );
                }
            }
        }
        Ok(())
    }

    pub fn resolve(self, overrides: &Overrides) -> Resolved {
        let defaults = ProxyConfig::default();
        let fill_defaults = FillConfig::default();
        let f = self.fill;
        let fill = FillConfig {
            continue_on_client_abort: f
                .continue_on_client_abort
                .unwrap_or(fill_defaults.continue_on_client_abort),
            range_miss: match f.range_miss {
                Some(RangeMiss::Wait) => RangeMissPolicy::Wait,
                Some(RangeMiss::Fetch) => RangeMissPolicy::Fetch,
                None => fill_defaults.range_miss,
            },
            background_fill: f.background_fill.unwrap_or(fill_defaults.background_fill),
            range_concurrency: f
                .range_concurrency
                .unwrap_or(fill_defaults.range_concurrency),
            background_chunk: f
                .background_chunk
                .map_or(fill_defaults.background_chunk, |b| b.as_u64()),
            max_retries: f.max_retries.unwrap_or(fill_defaults.max_retries),
            retry_for: f.retry_for.map_or(fill_defaults.retry_for, |d| d.0),
            retry_backoff_initial: f
                .retry_backoff_initial
                .map_or(fill_defaults.retry_backoff_initial, |d| d.0),
            retry_backoff_max: f
                .retry_backoff_max
                .map_or(fill_defaults.retry_backoff_max, |d| d.0),
            checkpoint_bytes: f
                .checkpoint_every
                .map_or(fill_defaults.checkpoint_bytes, |b| b.as_u64()),
            upstream_header_timeout: f
                .upstream_header_timeout
                .map_or(fill_defaults.upstream_header_timeout, |d| d.0),
            upstream_idle_timeout: f
                .upstream_idle_timeout
                .map_or(fill_defaults.upstream_idle_timeout, |d| d.0),
            serve_stale_on_error: f
                .serve_stale_on_error
                .unwrap_or(fill_defaults.serve_stale_on_error),
            max_fills: f.max_fills.unwrap_or(fill_defaults.max_fills),
        };
        let s = self.server;
        let listen = if overrides.listen.is_empty() {
            s.listen.unwrap_or(defaults.listen)
        } else {
            overrides.listen.clone()
        };
        let proxy = ProxyConfig {
            overrides: Vec::new(),
            bypass_request_headers: Vec::new(),
            wan: WanPolicy::default(),
            local_clock: outpost_proxy::wan::WanShaper::utc_clock(),
            host_aliases: Default::default(),
            listen,
            allowed_clients: s.allowed_clients.unwrap_or(defaults.allowed_clients),
            connect_ports: s.connect_ports.unwrap_or(defaults.connect_ports),
            upstream_ca: s
                .upstream_ca_file
                .as_deref()
                .and_then(|p| outpost_proxy::upstream::load_ca_file(p).ok())
                .unwrap_or_default(),
            allowed_destinations: s.allowed_destinations.as_ref().map(|list| {
                list.iter()
                    .filter_map(|d| outpost_proxy::config::Destination::parse(d).ok())
                    .collect()
            }),
            origin: overrides.origin.clone().or(s.origin.map(|o| o.0)),
            sites: self
                .sites
                .into_iter()
                .map(|site| Site {
                    host: site.host.to_ascii_lowercase(),
                    origin: site.origin.0,
                })
                .collect(),
            fill,
            h1: outpost_proxy::h1::H1Config {
                header_read_timeout: s
                    .header_read_timeout
                    .map_or(defaults.h1.header_read_timeout, |d| d.0),
                idle_timeout: s.idle_timeout.map_or(defaults.h1.idle_timeout, |d| d.0),
                max_head_bytes: s
                    .max_header_size
                    .map_or(defaults.h1.max_head_bytes, |b| b.as_u64() as usize),
                max_headers: s.max_headers.unwrap_or(defaults.h1.max_headers),
                body_timeout: s.body_timeout.map_or(defaults.h1.body_timeout, |d| d.0),
                body_min_rate: s.body_min_rate.unwrap_or(defaults.h1.body_min_rate),
                send_timeout: s.send_timeout.map_or(defaults.h1.send_timeout, |d| d.0),
                tunnel_idle_timeout: s
                    .tunnel_idle_timeout
                    .map_or(defaults.h1.tunnel_idle_timeout, |d| d.0),
            },
            max_connections: s.max_connections.unwrap_or(defaults.max_connections),
            internal_destinations: s.internal_destinations.unwrap_or_default(),
            forward: s.forward,
            forward_ports: s.forward_ports.map_or(defaults.forward_ports, |ports| {
                ports.iter().map(|p| (p.0, p.1)).collect()
            }),
            drain: defaults.drain,
        };
        let mut proxy = proxy;
        proxy.overrides = self.overrides.iter().filter_map(cache_override).collect();
        proxy.bypass_request_headers = self
            .cache
            .bypass_request_headers
            .iter()
            .map(|h| h.0.clone())
            .collect();
        proxy.wan = wan_policy(&self.wan);
        let channel_limits = self
            .channels
            .iter()
            .filter_map(|c| c.rate.as_ref().and_then(|r| r.0.limit()));
        proxy.local_clock = local_clock();
        let site_and_prepos = [&proxy.wan.site, &proxy.wan.prepos]
            .into_iter()
            .flat_map(|s| {
                std::iter::once(s.default)
                    .chain(s.rules.iter().map(|r| r.rate))
                    .filter_map(|r| r.limit())
            })
            .filter(|&r| r > 0.0);
        let slowest = channel_limits
            .filter(|&r| r > 0.0)
            .chain(site_and_prepos)
            .reduce(f64::min);
        proxy.wan.bulk_receive_buffer = WanPolicy::receive_buffer_for(slowest);
        let cache_size = overrides
            .cache_size
            .or(self.cache.max_size)
            .map_or(DEFAULT_CACHE_SIZE, |s| s.as_u64());
        let channels: Vec<ChannelConfig> = self
            .channels
            .into_iter()
            .map(|ch| channel_config(ch, cache_size))
            .collect();
        for ch in &channels {
            if let Some(host) = ch.source.host_str() {
                let authority = match ch.source.port() {
                    Some(port) => format!("{}:{port}", host.to_ascii_lowercase()),
                    None => host.to_ascii_lowercase(),
                };
                for alias in &ch.aliases {
                    proxy
                        .host_aliases
                        .insert(alias.to_ascii_lowercase(), authority.clone());
                }
            }
        }
        let c = self.cache;
        let dir = overrides
            .cache_dir
            .clone()
            .or(c.dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR));
        let size = overrides
            .cache_size
            .or(c.max_size)
            .map_or(DEFAULT_CACHE_SIZE, |s| s.as_u64());
        let mut store = StoreConfig::new(dir, size);
        store.high_watermark = c.high_watermark.unwrap_or(store.high_watermark);
        store.low_watermark = c.low_watermark.unwrap_or(store.low_watermark);
        store.disk_reserve = c.disk_reserve.map_or(store.disk_reserve, |r| r.0);
        let access_log = overrides
            .access_log
            .clone()
            .or(self.log.access_log)
            .map(|target| {
                (
                    target,
                    self.log.access_log_format.unwrap_or(AccessFormat::Squid),
                )
            });
        let admin = AdminConfig {
            listen: overrides
                .admin
                .or(self.admin.listen)
                .unwrap_or_else(|| DEFAULT_ADMIN.parse().expect("default admin address")),
            token_file: self.admin.token_file,
            generated_token_file: store.dir.join(ADMIN_TOKEN_FILE_NAME),
            header_read_timeout: self
                .admin
                .header_read_timeout
                .map_or(DEFAULT_ADMIN_HEADER_READ_TIMEOUT, |d| d.0),
            max_connections: self
                .admin
                .max_connections
                .unwrap_or(DEFAULT_ADMIN_MAX_CONNECTIONS),
        };
        Resolved {
            proxy,
            store,
            log_level: self.log.level,
            access_log,
            admin,
            channels,
        }
    }
}

fn cache_override(o: &OverrideSection) -> Option<outpost_proxy::CacheOverride> {
    let glob = |p: &Option<String>| {
        globset::GlobBuilder::new(p.as_deref().unwrap_or("*"))
            .case_insensitive(true)
            .build()
            .map(|g| g.compile_matcher())
    };
    Some(outpost_proxy::CacheOverride {
        host: glob(&o.host).ok()?,
        path: glob(&o.path).ok()?,
        freshness: outpost_http::policy::FreshnessOverride {
            min_fresh: o.min_fresh.map(|d| d.0),
            max_fresh: o.max_fresh.map(|d| d.0),
            cache_private: o.cache_private.unwrap_or(false),
        },
        ignore_query: o.ignore_query.unwrap_or(false),
        never_cache: o.never_cache.unwrap_or(false),
    })
}

fn wan_policy(wan: &WanSection) -> WanPolicy {
    let schedule = |class: WanClass, default: &Option<RateValue>| RateSchedule {
        default: default.as_ref().map_or(Rate::UNLIMITED, |r| r.0),
        rules: wan
            .rules
            .iter()
            .filter(|r| r.class == class)
            .map(|r| RateRule {
                window: r.when.0.clone(),
                rate: r.rate.0,
            })
            .collect(),
    };
    WanPolicy {
        site: schedule(WanClass::Site, &wan.rate),
        interactive: schedule(WanClass::Interactive, &wan.interactive_rate),
        prepos: schedule(WanClass::Prepos, &wan.prepos_rate),
        bulk_receive_buffer: None,
    }
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

fn channel_config(ch: ChannelSection, cache_size: u64) -> ChannelConfig {
    let source = ch.source.0;
    let kind = match ch.kind {
        Some(SourceKindValue::Listing) => SourceKind::Listing,
        Some(SourceKindValue::Manifest) => SourceKind::Manifest,
        None if source.path().ends_with('/') => SourceKind::Listing,
        None => SourceKind::Manifest,
    };
    ChannelConfig {
        name: ch.name,
        source,
        kind,
        include: ch.include.unwrap_or_default(),
        exclude: ch.exclude.unwrap_or_default(),
        schedule: ch.schedule.map(|s| s.0),
        rate: ch.rate.map_or(Rate::UNLIMITED, |r| r.0),
        window: ch.window.map(|w| w.0),
        verify: ch.verify.unwrap_or(true),
        aliases: ch.aliases.unwrap_or_default(),
        concurrency: ch.concurrency.unwrap_or(2),
        limits: {
            let d = ChannelLimits::default();
            ChannelLimits {
                max_depth: ch.max_depth.unwrap_or(d.max_depth),
                max_pages: ch.max_pages.unwrap_or(d.max_pages),
                max_page_links: ch.max_page_links.unwrap_or(d.max_page_links),
                max_files: ch.max_files.unwrap_or(d.max_files),
                // Pinned files are never evicted: by default one channel
                // leaves at least half the cache to the PCs' traffic.
                max_bytes: Some(ch.max_bytes.map_or(cache_size / 2, |b| b.as_u64())),
            }
        },
    }
}

/// The 1-based line where `key = ` is set in the `index`-th (0-based)
/// `[[channel]]` table, so that an error names the channel's own line.
fn channel_line(text: &str, index: usize, key: &str) -> Option<usize> {
    let mut tables = 0;
    let mut inside = false;
    for (i, line) in text.lines().enumerate() {
        let l = line.trim_start();
        if l.starts_with('[') {
            let header: String = l.chars().filter(|c| !c.is_whitespace()).collect();
            inside = false;
            if header.starts_with("[[channel]]") {
                tables += 1;
                inside = tables == index + 1;
            }
            continue;
        }
        if inside
            && l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return Some(i + 1);
        }
    }
    None
}

/// The 1-based line where `key = ` is first set.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// The 1-based line where `key = ` is first set inside the `[section]`
/// table (keys of the same name in other tables are skipped).
fn line_in_section(text: &str, section: &str, key: &str) -> Option<usize> {
    let header = format!("[{section}]");
    let mut inside = false;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.starts_with('[') {
            inside = line.trim_end().starts_with(&header);
            continue;
        }
        if inside
            && line
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_validates() {
        let text = include_str!("../../../outpost.example.toml");
        let config = FileConfig::parse(text).unwrap();
        config.validate(text).unwrap();
    }

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let text = "[server]\nlisten = [\"127.0.0.1:3128\"]\nlisen = 1\n";
        let err = FileConfig::parse(text).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn bad_value_is_reported_with_key_and_line() {
        let text = "[cache]\nmax_size = \"10 GiB\"\nlow_watermark = 0.99\n";
        let config = FileConfig::parse(text).unwrap();
        let err = config.validate(text).unwrap_err().to_string();
        assert!(
            err.contains("cache.low_watermark") && err.contains("line 3"),
            "{err}"
        );
        let err = FileConfig::parse("[fill]\nupstream_idle_timeout = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("invalid duration"),
            "{err}"
        );
    }

    #[test]
    fn channels_and_wan_rules_resolve() {
        let text = r#"
[wan]
rate = "18 Mbit/s"
[[wan.rule]]
class = "prepos"
when = "mon-fri 08:00-18:00"
rate = "256 kbit/s"
[[channel]]
name = "packages"
source = "http://fileserver.corp.example:8080/packages/"
schedule = "0 1 * * *"
rate = "2 Mbit/s"
window = "19:00-07:00"
aliases = ["fileserver"]
[[channel]]
name = "av"
source = "http://fileserver.corp.example/av/SHA256SUMS"
"#;
        let config = FileConfig::parse(text).unwrap();
        config.validate(text).unwrap();
        let r = config.resolve(&Overrides::default());
        assert_eq!(r.channels.len(), 2);
        assert_eq!(r.channels[0].kind, SourceKind::Listing);
        assert_eq!(r.channels[1].kind, SourceKind::Manifest);
        assert_eq!(r.channels[0].rate.limit(), Some(250_000.0));
        assert_eq!(
            r.proxy.host_aliases.get("fileserver").map(String::as_str),
            Some("fileserver.corp.example:8080")
        );
        let weekday_noon = LocalTime::new(2, 12, 0);
        assert_eq!(r.proxy.wan.prepos.at(weekday_noon).limit(), Some(32_000.0));
        assert_eq!(r.proxy.wan.site.at(weekday_noon).limit(), Some(2_250_000.0));
        // The slowest limit (256 kbit/s) sizes the bulk receive buffers.
        assert_eq!(r.proxy.wan.bulk_receive_buffer, Some(32 << 10));
    }

    #[test]
    fn overrides_resolve_in_order() {
        let text = "[[override]]\nhost = \"FileServer*\"\npath = \"/pkgs/*\"\nmin_fresh = \"2days\"\nignore_query = true\n[[override]]\nnever_cache = true\n";
        let config = FileConfig::parse(text).unwrap();
        config.validate(text).unwrap();
        let r = config.resolve(&Overrides::default());
        let o = &r.proxy.overrides;
        assert_eq!(o.len(), 2);
        assert!(o[0].matches("fileserver.corp", "/pkgs/a.msi"));
        assert!(!o[0].matches("other", "/pkgs/a.msi"));
        assert_eq!(
            o[0].freshness.min_fresh,
            Some(std::time::Duration::from_secs(172_800))
        );
        assert!(o[0].ignore_query && !o[0].never_cache);
        assert!(o[1].matches("anything", "/") && o[1].never_cache);
        let bad = "[[override]]\nmin_fresh = \"2days\"\nmax_fresh = \"1day\"\n";
        let err = FileConfig::parse(bad)
            .unwrap()
            .validate(bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("min_fresh"), "{err}");
    }

    #[test]
    fn bad_channel_values_name_key_and_line() {
        let err = FileConfig::parse(
            "[[channel]]\nname = \"x\"\nsource = \"http://h/\"\nrate = \"fast\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("line 4") && err.contains("invalid rate"),
            "{err}"
        );
        let err = FileConfig::parse("[[channel]]\nname = \"x\"\nsource = \"ftp://h/\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3") && err.contains("http"), "{err}");
        let err = FileConfig::parse(
            "[[channel]]\nname = \"x\"\nsource = \"http://h/\"\nschedule = \"every night\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("line 4") && err.contains("invalid schedule"),
            "{err}"
        );
        let text = "[[channel]]\nname = \"a\"\nsource = \"http://h/\"\n[[channel]]\nname = \"a\"\nsource = \"http://h/b/\"\n";
        let err = FileConfig::parse(text)
            .unwrap()
            .validate(text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("used twice"), "{err}");
    }

    #[test]
    fn channel_limits_resolve_with_defaults_and_bad_values_name_key_and_line() {
        let text = "[cache]\nmax_size = \"40 GiB\"\n[[channel]]\nname = \"a\"\nsource = \"http://h/a/\"\n[[channel]]\nname = \"b\"\nsource = \"http://h/b/\"\nmax_depth = 4\nmax_pages = 50\nmax_page_links = 200\nmax_files = 1000\nmax_bytes = \"2 GiB\"\n";
        let config = FileConfig::parse(text).unwrap();
        config.validate(text).unwrap();
        let r = config.resolve(&Overrides::default());
        let defaults = ChannelLimits::default();
        assert_eq!(
            r.channels[0].limits,
            ChannelLimits {
                max_bytes: Some(20 << 30),
                ..defaults
            },
            "max_bytes defaults to half the cache"
        );
        assert_eq!(
            r.channels[1].limits,
            ChannelLimits {
                max_depth: 4,
                max_pages: 50,
                max_page_links: 200,
                max_files: 1000,
                max_bytes: Some(2 << 30),
            }
        );

        // Each bad value: the error names the channel, the key and the
        // key's line in that channel's table (not the first channel's).
        let channels = "[cache]\nmax_size = \"1 GiB\"\n[[channel]]\nname = \"a\"\nsource = \"http://h/a/\"\nmax_pages = 5\n[[channel]]\nname = \"b\"\nsource = \"http://h/b/\"\n";
        for (line, key) in [
            ("max_depth = 5000", "max_depth"),
            ("max_pages = 0", "max_pages"),
            ("max_page_links = 0", "max_page_links"),
            ("max_files = 0", "max_files"),
            ("max_files = 20000000", "max_files"),
            ("max_bytes = \"100 KiB\"", "max_bytes"),
            ("max_bytes = \"2 GiB\"", "max_bytes"),
        ] {
            let text = format!("{channels}{line}\n");
            let err = FileConfig::parse(&text)
                .unwrap()
                .validate(&text)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("channel \"b\"") && err.contains(key) && err.contains("line 10"),
                "{line}: {err}"
            );
        }
        let err = FileConfig::parse(&format!("{channels}max_depth = -1\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 10") && err.contains("max_depth"),
            "{err}"
        );
        let err = FileConfig::parse(&format!("{channels}max_bytes = \"lots\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 10") && err.contains("max_bytes"),
            "{err}"
        );
    }

    #[test]
    fn forward_ports_take_ports_and_ranges() {
        let text = "[server]\nforward_ports = [80, \"8000-8999\", \"443\"]\n";
        let config = FileConfig::parse(text).unwrap();
        config.validate(text).unwrap();
        let proxy = config.resolve(&Overrides::default()).proxy;
        assert_eq!(
            proxy.forward_ports,
            vec![(80, 80), (8000, 8999), (443, 443)]
        );
        assert!(proxy.forward_port_allowed(8080) && !proxy.forward_port_allowed(25));
        let defaults = FileConfig::default().resolve(&Overrides::default()).proxy;
        assert!(!defaults.forward_port_allowed(25) && defaults.forward_port_allowed(3128));
        for bad in ["\"9-1\"", "\"http\"", "70000"] {
            let text = format!("[server]\n\nforward_ports = [{bad}]\n");
            let err = FileConfig::parse(&text).unwrap_err().to_string();
            assert!(
                err.contains("forward_ports") && err.contains("line 3"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn values_that_would_overflow_a_clock_or_a_limit_are_refused() {
        for text in [
            "[server]\nidle_timeout = \"292000000000y\"\n",
            "[admin]\nheader_read_timeout = \"400days\"\n",
        ] {
            let err = FileConfig::parse(text).unwrap_err().to_string();
            assert!(err.contains("longer than a year"), "{text}: {err}");
        }
        for text in [
            "[server]\nmax_connections = 18446744073709551615\n",
            "[admin]\nmax_connections = 1000000\n",
        ] {
            let err = FileConfig::parse(text)
                .unwrap()
                .validate(text)
                .unwrap_err()
                .to_string();
            assert!(err.contains("max_connections"), "{text}: {err}");
        }
    }

    #[test]
    fn disk_reserve_takes_a_size_or_a_percentage() {
        use outpost_store::DiskReserve;
        let reserve = |v: &str| {
            let text = format!("[cache]\ndisk_reserve = \"{v}\"\n");
            let config = FileConfig::parse(&text).unwrap();
            config.validate(&text).unwrap();
            config.resolve(&Overrides::default()).store.disk_reserve
        };
        assert_eq!(reserve("2GiB"), DiskReserve::Bytes(2 << 30));
        assert_eq!(reserve("512 MiB"), DiskReserve::Bytes(512 << 20));
        assert_eq!(reserve("0"), DiskReserve::Bytes(0));
        assert_eq!(reserve("1%"), DiskReserve::Percent(1.0));
        assert_eq!(reserve("2.5 %"), DiskReserve::Percent(2.5));
        assert_eq!(
            FileConfig::default()
                .resolve(&Overrides::default())
                .store
                .disk_reserve,
            DiskReserve::Auto
        );
        for bad in ["lots", "80%", "-1%", "NaN%", "1%%"] {
            let text = format!("[server]\n\n[cache]\ndisk_reserve = \"{bad}\"\n");
            let err = FileConfig::parse(&text).unwrap_err().to_string();
            assert!(
                err.contains("disk_reserve") && err.contains("line 4"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn admin_limits_are_checked_in_their_own_table() {
        let text = "[server]\nmax_connections = 10\nheader_read_timeout = \"5s\"\n[admin]\nheader_read_timeout = \"2s\"\nmax_connections = 0\n";
        let err = FileConfig::parse(text)
            .unwrap()
            .validate(text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("admin.max_connections") && err.contains("line 6"),
            "{err}"
        );
        let text = "[admin]\nheader_read_timeout = \"2s\"\nmax_connections = 8\n";
        let config = FileConfig::parse(text).unwrap();
        config.validate(text).unwrap();
        let admin = config.resolve(&Overrides::default()).admin;
        assert_eq!(
            (admin.header_read_timeout, admin.max_connections),
            (Duration::from_secs(2), 8)
        );
        let admin = FileConfig::default().resolve(&Overrides::default()).admin;
        assert_eq!(
            (admin.header_read_timeout, admin.max_connections),
            (Duration::from_secs(10), 64)
        );
        assert_eq!(
            admin.generated_token_file,
            PathBuf::from("./outpost-cache/admin.token")
        );
    }

    #[test]
    fn command_line_overrides_file() {
        let config = FileConfig::parse("[cache]\ndir = \"/from/file\"\n").unwrap();
        let resolved = config.resolve(&Overrides {
            cache_dir: Some("/from/cli".into()),
            ..Default::default()
        });
        assert_eq!(resolved.store.dir, PathBuf::from("/from/cli"));
    }
}
