//! The stored response head of an object: status, headers and the freshness
//! policy computed when it was received.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use outpost_http::cache_control;
use outpost_http::policy::CachePolicy;
use serde::{Deserialize, Serialize};

/// What the edge keeps of an origin response besides its body.
#[derive(Debug, Clone)]
pub struct StoredHead {
    pub status: StatusCode,
    /// End-to-end headers only (hop-by-hop ones and the framing headers
    /// `Content-Length`/`Content-Range` are not kept: the edge sets them).
    pub headers: HeaderMap,
    pub policy: CachePolicy,
    /// Derived from the policy when the head is made: the instant its age
    /// was zero, and the instant it stops being fresh. Hits compare against
    /// these instead of re-parsing dates on every request.
    born: SystemTime,
    fresh_until: SystemTime,
    /// When it became (or becomes) stale: `born` plus its freshness
    /// lifetime. Unlike `fresh_until` this lies in the past for a response
    /// that arrived already stale (its Age beyond its max-age).
    stale_since: SystemTime,
}

/// The explicit freshness lifetime (s-maxage, max-age, Expires - Date),
/// for responses that arrive with no lifetime left.
fn explicit_lifetime(headers: &HeaderMap) -> Duration {
    if let Some(secs) = cache_control::seconds(headers, "s-maxage")
        .or_else(|| cache_control::seconds(headers, "max-age"))
    {
        return Duration::from_secs(secs);
    }
    let date = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
    };
    match (date(http::header::EXPIRES), date(http::header::DATE)) {
        (Some(expires), Some(date)) => expires.duration_since(date).unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

#[derive(Serialize, Deserialize)]
struct HeadRecord {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    policy: CachePolicy,
}

impl StoredHead {
    pub fn new(status: StatusCode, headers: HeaderMap, policy: CachePolicy) -> Self {
        let now = SystemTime::now();
        let born = now.checked_sub(policy.age(now)).unwrap_or(now);
        let ttl = policy.time_to_live(now);
        let fresh_until = now + ttl;
        let lifetime = if ttl.is_zero() {
            explicit_lifetime(&headers)
        } else {
            ttl + policy.age(now)
        };
        let stale_since = (born + lifetime).min(fresh_until);
        Self {
            status,
            headers,
            policy,
            born,
            fresh_until,
            stale_since,
        }
    }

    /// The response's current age (RFC 9111 section 4.2.3).
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.born).unwrap_or_default()
    }

    /// How long the response has been stale at `now` (zero while fresh),
    /// counted from the end of its freshness lifetime, even when that ended
    /// before it reached us.
    pub fn staleness(&self, now: SystemTime) -> Duration {
        now.duration_since(self.stale_since).unwrap_or_default()
    }

    /// Fresh for a request that sets no freshness requirements of its own.
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        now < self.fresh_until
    }

    pub(crate) fn to_json(&self) -> String {
        let record = HeadRecord {
            status: self.status.as_u16(),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
                .collect(),
            policy: self.policy.clone(),
        };
        // Serialising owned strings, byte vectors and the policy cannot fail.
        serde_json::to_string(&record).unwrap_or_default()
    }

    pub(crate) fn from_json(json: &str) -> Result<Self, String> {
        let record: HeadRecord = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let status = StatusCode::from_u16(record.status).map_err(|e| e.to_string())?;
        let mut headers = HeaderMap::with_capacity(record.headers.len());
        for (name, value) in record.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            let value = HeaderValue::from_bytes(&value).map_err(|e| e.to_string())?;
            headers.append(name, value);
        }
        Ok(Self::new(status, headers, record.policy))
    }

    /// The strong or weak entity tag, if any.
    pub fn etag(&self) -> Option<&HeaderValue> {
        self.headers.get(http::header::ETAG)
    }

    pub fn last_modified(&self) -> Option<&HeaderValue> {
        self.headers.get(http::header::LAST_MODIFIED)
    }

    /// The validator to put in `If-Range` when resuming: a strong ETag, else
    /// Last-Modified (RFC 9110 section 13.1.5 forbids weak tags there).
    pub fn if_range_validator(&self) -> Option<HeaderValue> {
        match self.etag() {
            Some(tag) if !tag.as_bytes().starts_with(b"W/") => Some(tag.clone()),
            _ => self.last_modified().cloned(),
        }
    }
}
