//! The configuration file as written: every table and key, each value a
//! [`Setting`] that remembers where it was written. Unknown keys are found
//! by [`unknown_keys`] from the same structs, so the list of keys lives in
//! one place.

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use outpost_channel::CronSchedule;
use outpost_shaper::{Rate, TimeWindow};
use serde::Deserialize;
use toml::Spanned;

use super::values::*;

type S<T> = Option<Setting<T>>;

#[derive(Debug, Default, Deserialize)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub cache: CacheSection,
    #[serde(default)]
    pub fill: FillSection,
    #[serde(default, rename = "site")]
    pub sites: Vec<Spanned<SiteSection>>,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub wan: WanSection,
    #[serde(default, rename = "channel")]
    pub channels: Vec<Spanned<ChannelSection>>,
    #[serde(default, rename = "override")]
    pub overrides: Vec<Spanned<OverrideSection>>,
    #[serde(default)]
    pub manager: ManagerSection,
    #[serde(default)]
    pub library: LibrarySection,
    #[serde(default)]
    pub wccp: super::wccp::WccpSection,
}

/// `[library]`: the edge's own web listener for PCs (issue 14).
#[derive(Debug, Default, Deserialize)]
pub struct LibrarySection {
    pub listen: S<SocketAddr>,
    pub pac_direct: S<Vec<Parsed<outpost_proxy::library::PacDirect>>>,
    pub pac_proxy: S<String>,
    pub do_hosts: S<Vec<Parsed<outpost_proxy::library::HostPattern>>>,
    pub allowed_hosts: S<Vec<String>>,
    #[serde(default)]
    pub dns: LibraryDnsSection,
}

/// `[library.dns]`: DNS mode.
#[derive(Debug, Default, Deserialize)]
pub struct LibraryDnsSection {
    pub names: S<Vec<Parsed<outpost_proxy::library::HostPattern>>>,
    pub upstreams: S<Vec<SocketAddr>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ManagerSection {
    pub url: S<HttpUrl>,
    pub join_token: S<String>,
    pub join_token_file: S<PathBuf>,
    pub site: S<String>,
    pub fingerprint: S<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ServerSection {
    pub listen: S<Vec<SocketAddr>>,
    pub allowed_clients: S<Vec<IpNet>>,
    pub connect_ports: S<Vec<u16>>,
    pub allowed_destinations: S<Vec<String>>,
    pub internal_destinations: S<Vec<IpNet>>,
    pub forward: S<bool>,
    pub forward_ports: S<Vec<PortRange>>,
    pub upstream_ca_file: S<PathBuf>,
    pub origin: S<OriginUrl>,
    pub header_read_timeout: S<Dur>,
    pub idle_timeout: S<Dur>,
    pub max_header_size: S<Size>,
    pub max_headers: S<usize>,
    pub max_connections: S<usize>,
    pub body_timeout: S<Dur>,
    pub body_min_rate: S<u64>,
    pub send_timeout: S<Dur>,
    pub tunnel_idle_timeout: S<Dur>,
    pub drain: S<Dur>,
    pub targeted_cache_control: S<Parsed<http::HeaderName>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CacheSection {
    pub dir: S<PathBuf>,
    pub max_size: S<Size>,
    pub high_watermark: S<f64>,
    pub low_watermark: S<f64>,
    pub bypass_request_headers: S<Vec<Parsed<http::HeaderName>>>,
    pub disk_reserve: S<DiskReserveValue>,
}

#[derive(Debug, Default, Deserialize)]
pub struct FillSection {
    pub continue_on_client_abort: S<bool>,
    pub range_miss: S<RangeMiss>,
    pub background_fill: S<bool>,
    pub range_concurrency: S<usize>,
    pub background_chunk: S<Size>,
    pub max_retries: S<u32>,
    pub retry_for: S<Dur>,
    pub retry_backoff_initial: S<Dur>,
    pub retry_backoff_max: S<Dur>,
    pub checkpoint_every: S<Size>,
    pub upstream_header_timeout: S<Dur>,
    pub upstream_idle_timeout: S<Dur>,
    pub serve_stale_on_error: S<bool>,
    pub max_fills: S<usize>,
}

#[derive(Debug, Deserialize)]
pub struct SiteSection {
    pub host: S<String>,
    pub origin: S<OriginUrl>,
}

#[derive(Debug, Default, Deserialize)]
pub struct LogSection {
    pub level: S<String>,
    pub access_log: S<String>,
    pub access_log_format: S<AccessFormat>,
}

#[derive(Debug, Default, Deserialize)]
pub struct AdminSection {
    pub listen: S<SocketAddr>,
    pub token_file: S<PathBuf>,
    pub header_read_timeout: S<Dur>,
    pub max_connections: S<usize>,
    pub allowed_hosts: S<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct WanSection {
    pub rate: S<Parsed<Rate>>,
    pub interactive_rate: S<Parsed<Rate>>,
    pub prepos_rate: S<Parsed<Rate>>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<Spanned<WanRuleSection>>,
}

#[derive(Debug, Deserialize)]
pub struct WanRuleSection {
    pub class: S<WanClass>,
    pub when: S<Parsed<TimeWindow>>,
    pub rate: S<Parsed<Rate>>,
}

#[derive(Debug, Deserialize)]
pub struct ChannelSection {
    pub name: S<String>,
    pub source: S<HttpUrl>,
    pub kind: S<SourceKindValue>,
    pub include: S<Vec<String>>,
    pub exclude: S<Vec<String>>,
    pub schedule: S<Parsed<CronSchedule>>,
    pub rate: S<Parsed<Rate>>,
    pub window: S<Parsed<TimeWindow>>,
    pub verify: S<bool>,
    pub aliases: S<Vec<String>>,
    pub concurrency: S<usize>,
    pub max_depth: S<u64>,
    pub max_pages: S<u64>,
    pub max_page_links: S<u64>,
    pub max_files: S<u64>,
    pub max_bytes: S<Size>,
    pub revalidate: S<RevalidateValue>,
    pub revalidate_grace: S<Dur>,
    pub export: S<PathBuf>,
}

#[derive(Debug, Deserialize)]
pub struct OverrideSection {
    pub host: S<String>,
    pub path: S<String>,
    pub min_fresh: S<Dur>,
    pub max_fresh: S<Dur>,
    pub ignore_query: S<bool>,
    pub never_cache: S<bool>,
    pub cache_private: S<bool>,
}

/// The key names serde's derive gives a struct, read by asking it to
/// deserialize from a deserializer that only records them.
fn keys_of<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::value::Error;
    use std::cell::Cell;
    struct Recorder<'a>(&'a Cell<&'static [&'static str]>);
    impl<'de> serde::Deserializer<'de> for Recorder<'_> {
        type Error = Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(serde::de::Error::custom("keys only"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Error> {
            self.0.set(fields);
            Err(serde::de::Error::custom("keys only"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let keys = Cell::new(&[][..]);
    let _ = T::deserialize(Recorder(&keys));
    keys.get()
}

/// A key the file sets that no table has: its dotted name, where it is,
/// and the keys its table does have.
pub struct UnknownKey {
    pub name: String,
    pub span: std::ops::Range<usize>,
    pub expected: &'static [&'static str],
}

/// Every unknown key of the document, in file order within each table.
pub fn unknown_keys(doc: &toml::de::DeTable<'_>) -> Vec<UnknownKey> {
    let mut found = Vec::new();
    walk::<FileConfig>("", doc, &mut found);
    found.sort_by_key(|k| k.span.start);
    found
}

fn walk<T: serde::de::DeserializeOwned>(
    prefix: &str,
    table: &toml::de::DeTable<'_>,
    found: &mut Vec<UnknownKey>,
) {
    let expected = keys_of::<T>();
    for (key, value) in table {
        let name = format!("{prefix}{}", key.get_ref());
        if !expected.contains(&key.get_ref().as_ref()) {
            found.push(UnknownKey {
                name,
                span: key.span(),
                expected,
            });
            continue;
        }
        // Nested tables and arrays of tables are walked with their own
        // struct; anything else is a value the struct's field checks.
        let nested: Option<fn(&str, &toml::de::DeTable<'_>, &mut Vec<UnknownKey>)> =
            match (prefix, key.get_ref().as_ref()) {
                ("", "server") => Some(walk::<ServerSection>),
                ("", "cache") => Some(walk::<CacheSection>),
                ("", "fill") => Some(walk::<FillSection>),
                ("", "log") => Some(walk::<LogSection>),
                ("", "admin") => Some(walk::<AdminSection>),
                ("", "wan") => Some(walk::<WanSection>),
                ("", "site") => Some(walk::<SiteSection>),
                ("", "channel") => Some(walk::<ChannelSection>),
                ("", "override") => Some(walk::<OverrideSection>),
                ("", "manager") => Some(walk::<ManagerSection>),
                ("", "library") => Some(walk::<LibrarySection>),
                ("library.", "dns") => Some(walk::<LibraryDnsSection>),
                ("wan.", "rule") => Some(walk::<WanRuleSection>),
                ("", "wccp") => Some(walk::<super::wccp::WccpSection>),
                ("wccp.", "service") => Some(walk::<super::wccp::WccpServiceSection>),
                _ => None,
            };
        let Some(nested) = nested else { continue };
        let prefix = format!("{name}.");
        match value.get_ref() {
            toml::de::DeValue::Table(t) => nested(&prefix, t, found),
            toml::de::DeValue::Array(items) => {
                for item in items.iter() {
                    if let toml::de::DeValue::Table(t) = item.get_ref() {
                        nested(&prefix, t, found);
                    }
                }
            }
            _ => {}
        }
    }
}
