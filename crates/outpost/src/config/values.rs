//! Value types of the configuration file: each parses one TOML value and
//! says what it expected when the value is wrong. A `Setting` wraps a value
//! with where it was written, and keeps a bad value's error instead of
//! failing, so that one read of the file reports every bad value.

use std::fmt::Display;
use std::ops::Range;
use std::str::FromStr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// A value as written in the file: its byte span, and the value or what is
/// wrong with it.
#[derive(Debug, Clone)]
pub struct Setting<T> {
    pub span: Range<usize>,
    pub value: Result<T, String>,
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Setting<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = toml::Spanned::<toml::Value>::deserialize(d)?;
        let span = raw.span();
        let value = raw
            .into_inner()
            .try_into::<T>()
            .map_err(|e| e.message().to_string());
        Ok(Self { span, value })
    }
}

/// The longest duration a setting may have: deadlines are computed as
/// now + duration, and a century-long one would overflow the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// A duration written as "30s", "5m", "200ms" (humantime's syntax), at
/// most a year.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a duration string like \"30s\" or \"5m\"")
        })?;
        let duration: Duration = humantime_serde::deserialize(serde::de::value::StrDeserializer::<
            serde::de::value::Error,
        >::new(&text))
        .map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}: {e} (expected e.g. \"30s\", \"5m\", \"2days\")"
            ))
        })?;
        if duration > MAX_DURATION {
            return Err(serde::de::Error::custom(format!(
                "duration {text:?} is longer than a year"
            )));
        }
        Ok(Dur(duration))
    }
}

/// A size in bytes: "512 MiB", "20 GB", or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        bytesize::ByteSize(self.0).fmt(f)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = toml::Value::deserialize(d)?;
        let parsed = match &raw {
            toml::Value::Integer(n) => u64::try_from(*n).ok(),
            toml::Value::String(s) => s.trim().parse::<bytesize::ByteSize>().ok().map(|b| b.0),
            _ => None,
        };
        parsed.map(Size).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "expected a size like \"512 MiB\" or \"20 GB\", got {raw}"
            ))
        })
    }
}

/// A value parsed from a string by its `FromStr` (rates, windows,
/// schedules, header names); the parser's error says what it expected.
#[derive(Debug, Clone)]
pub struct Parsed<T>(pub T);

impl<'de, T> Deserialize<'de> for Parsed<T>
where
    T: FromStr,
    T::Err: Display,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<T>()
            .map(Parsed)
            .map_err(serde::de::Error::custom)
    }
}

/// A port (`80`) or an inclusive range of ports (`"1025-65535"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange(pub u16, pub u16);

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = toml::Value::deserialize(d)?;
        let bad = || {
            serde::de::Error::custom(format!(
                "invalid port or range {raw} (expected e.g. 443 or \"1025-65535\")"
            ))
        };
        match &raw {
            toml::Value::Integer(p) => u16::try_from(*p)
                .map(|p| PortRange(p, p))
                .map_err(|_| bad()),
            toml::Value::String(s) => {
                let (low, high) = match s.split_once('-') {
                    Some((a, b)) => (a.trim().parse(), b.trim().parse()),
                    None => (s.trim().parse(), s.trim().parse()),
                };
                match (low, high) {
                    (Ok(low), Ok(high)) if low <= high => Ok(PortRange(low, high)),
                    _ => Err(bad()),
                }
            }
            _ => Err(bad()),
        }
    }
}

/// An origin URL: http or https, with a host.
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

/// An http or https URL with a host (channel sources).
#[derive(Debug, Clone)]
pub struct HttpUrl(pub url::Url);

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let url = url::Url::parse(&s)
            .map_err(|e| serde::de::Error::custom(format!("invalid URL {s:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(serde::de::Error::custom(format!(
                "URL {s:?} must be http:// or https:// with a host"
            )));
        }
        Ok(HttpUrl(url))
    }
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
                "invalid disk_reserve {s:?}: expected a size (\"2 GiB\") or a percentage of the file system (\"1%\")"
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
                .parse::<bytesize::ByteSize>()
                .map(|b| Self(DiskReserve::Bytes(b.as_u64())))
                .map_err(|_| bad()),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RangeMiss {
    Fetch,
    Wait,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AccessFormat {
    Squid,
    Json,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WanClass {
    Site,
    Interactive,
    Prepos,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceKindValue {
    Listing,
    Manifest,
}

/// `[[channel]] revalidate`: who PCs' requests for a channel file are
/// checked with.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RevalidateValue {
    Sync,
    Origin,
}
