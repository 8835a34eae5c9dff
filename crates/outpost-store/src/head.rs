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
    /// When the edge received the response, and the `Age` it arrived with:
    /// what a policy of the same response under other rules starts from.
    received: SystemTime,
    arrival_age: Duration,
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

/// The response headers the policy was built from: for a reverse site,
/// with the targeted field (RFC 9213) in place of `Cache-Control`, and with
/// an admin's freshness rule applied. The library keeps them, and the
/// lifetime they imply, private; its serialised form (`res`, a map of
/// names to a value or a list of values) carries them.
fn policy_response_headers(policy: &CachePolicy) -> Option<HeaderMap> {
    let value = serde_json::to_value(policy).ok()?;
    let mut headers = HeaderMap::new();
    for (name, values) in value.get("res")?.as_object()? {
        let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
        let values = match values {
            serde_json::Value::Array(list) => list.iter().collect(),
            one => vec![one],
        };
        for v in values {
            headers.append(&name, HeaderValue::from_str(v.as_str()?).ok()?);
        }
    }
    Some(headers)
}

/// The instants a policy implies, read off it without a clock. The policy
/// counts age from the instant it received the response (`Age` at arrival
/// plus the time resident since), so: before that instant its age is the
/// arrival `Age`; long after it, the arrival `Age` plus the distance to that
/// instant. The lifetime is what time-to-live plus age add up to while it
/// is still fresh.
struct Timing {
    born: SystemTime,
    fresh_until: SystemTime,
    stale_since: SystemTime,
    received: SystemTime,
    arrival_age: Duration,
}

impl Timing {
    fn of(policy: &CachePolicy, headers: &HeaderMap) -> Self {
        // Far enough ahead of any response time the edge will see, near
        // enough that no arithmetic on it overflows.
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 36);
        let arrival_age = policy.age(SystemTime::UNIX_EPOCH);
        let resident_at_far = policy.age(far).saturating_sub(arrival_age);
        let received = far.checked_sub(resident_at_far).unwrap_or(far);
        let born = received.checked_sub(arrival_age).unwrap_or(received);
        let ttl_on_arrival = policy.time_to_live(SystemTime::UNIX_EPOCH);
        if ttl_on_arrival.is_zero() {
            // Arrived with no lifetime left: never fresh. Its lifetime, for
            // how stale it is, is the explicit one (no longer than its age).
            let lifetime = explicit_lifetime(
                &policy_response_headers(policy).unwrap_or_else(|| headers.clone()),
            )
            .min(arrival_age);
            let stale_since = born + lifetime;
            return Self {
                born,
                fresh_until: stale_since.min(received),
                stale_since,
                received,
                arrival_age,
            };
        }
        let until = born + ttl_on_arrival + arrival_age;
        Self {
            born,
            fresh_until: until,
            stale_since: until,
            received,
            arrival_age,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct HeadRecord {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    policy: CachePolicy,
}

impl StoredHead {
    /// The head of a response, with its freshness instants derived from the
    /// policy alone. They do not depend on when the head is made: a head
    /// loaded lazily after a restart must give the same answers as the one
    /// made when the response arrived (it once took its own later `now`,
    /// and an object long stale looked fresh to the request that loaded it).
    pub fn new(status: StatusCode, headers: HeaderMap, policy: CachePolicy) -> Self {
        let timing = Timing::of(&policy, &headers);
        Self {
            status,
            headers,
            policy,
            born: timing.born,
            fresh_until: timing.fresh_until,
            stale_since: timing.stale_since,
            received: timing.received,
            arrival_age: timing.arrival_age,
        }
    }

    /// When the edge received the response.
    pub fn received(&self) -> SystemTime {
        self.received
    }

    /// The `Age` the response arrived with (zero without one).
    pub fn arrival_age(&self) -> Duration {
        self.arrival_age
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

#[cfg(test)]
mod tests {
    use super::*;

    fn head_received_at(received: SystemTime, cache_control: &str) -> StoredHead {
        let req = http::Request::builder()
            .uri("http://origin/pkg")
            .header("host", "origin")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let res = http::Response::builder()
            .header("cache-control", cache_control)
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let policy = outpost_http::policy::policy_for(&req, &res, received);
        StoredHead::new(res.status, res.headers, policy)
    }

    /// A response that arrives already stale is as stale as the lifetime
    /// the policy read says: for a reverse site that is the targeted field's
    /// (here 60 s, while the browsers' Cache-Control says an hour), so its
    /// stale-while-revalidate and stale-if-error windows count from there.
    #[test]
    fn an_already_stale_arrival_is_as_stale_as_the_lifetime_the_policy_read() {
        let received = SystemTime::now() - Duration::from_secs(1000);
        let req = http::Request::builder()
            .uri("http://origin/pkg")
            .header("host", "origin")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let stored = http::Response::builder()
            .header("cache-control", "max-age=3600")
            .header(
                "cdn-cache-control",
                "max-age=60, stale-while-revalidate=600",
            )
            .header("age", "700")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let targeted = outpost_http::policy::TargetedFields::new(None);
        let policy = outpost_http::policy::policy_with_override(
            &req,
            &stored,
            received,
            None,
            Some(&targeted),
        );
        let head = StoredHead::new(stored.status, stored.headers, policy);
        assert!(!head.is_fresh(received));
        assert_eq!(
            head.staleness(received),
            Duration::from_secs(640),
            "700 s old with a 60 s lifetime, not 3600 s"
        );
    }

    /// Guards the stale-after-restart bug: a head rebuilt long after its
    /// response arrived (loaded from the index after a restart) took its
    /// own `now` and called a long-stale object fresh until that instant.
    #[test]
    fn a_head_made_long_after_its_response_keeps_the_responses_deadline() {
        let received = SystemTime::now() - Duration::from_secs(1000);
        let head = head_received_at(received, "max-age=60");
        assert!(head.is_fresh(received + Duration::from_secs(59)));
        assert!(
            !head.is_fresh(received + Duration::from_secs(61)),
            "stale 61 s after arrival whenever the head was made"
        );
        assert_eq!(
            head.staleness(received + Duration::from_secs(100)),
            Duration::from_secs(40)
        );
        assert_eq!(
            head.age(received + Duration::from_secs(100)),
            Duration::from_secs(100)
        );
    }

    #[test]
    fn a_response_without_lifetime_is_never_fresh() {
        let received = SystemTime::now() - Duration::from_secs(1000);
        let head = head_received_at(received, "no-cache, max-age=60");
        assert!(!head.is_fresh(received));
        assert!(!head.is_fresh(received + Duration::from_secs(1)));
    }
}
