//! The cache verdict of one response, from the lookup's decision to the
//! `X-Cache` header, the access log's Squid code and the byte counters.
//!
//! The engine puts a [`CacheStatus`] in the extensions of every response it
//! makes; the connection reads it back from there (never from the header,
//! which is for clients). A response without one was made before the
//! engine saw the request (a parse error, a refused client), except a
//! CONNECT tunnel, which the connection recognises by its method.

use http::HeaderValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheStatus {
    /// A complete stored copy, fresh for the request.
    Hit,
    /// A complete stored copy of an error response the origin gave a
    /// lifetime (a 404 or 503 with `max-age`).
    NegativeHit,
    /// A stored partial copy: what is on disk, and the rest fetched from
    /// the origin (a range fill, a fill cut short by a restart).
    PartialHit,
    /// Fetched from the origin, or shared from a fetch already running.
    Miss,
    /// The stored copy was stale and the origin confirmed it (304).
    Revalidated,
    /// The stored copy was stale, the edge asked with its validators, and
    /// the origin sent a new one (200).
    Refreshed,
    /// The stored copy was stale and the origin could not be asked (or
    /// answered 5xx): served stale, with `Warning: 111`.
    StaleOnError,
    /// The stored copy is stale within its stale-while-revalidate window:
    /// served at once and refreshed in the background.
    StaleWhileRevalidate,
    /// Passed between client and origin, not stored (other methods,
    /// uncacheable responses, requests that may not share a copy).
    Pass,
    /// The edge refused the destination.
    Denied,
    /// A CONNECT tunnel.
    Tunnel,
    /// The edge's own answer: without asking the origin (a quarantined
    /// URL, `only-if-cached` with nothing stored, `max_fills`, a malformed
    /// request), or a failure on its own side (the store refused the
    /// object, the request could not be built).
    Edge,
    /// The origin could not be reached or failed, and nothing stored could
    /// stand in: the edge's 502.
    OriginFailed,
}

impl CacheStatus {
    pub const ALL: [CacheStatus; 13] = [
        Self::Hit,
        Self::NegativeHit,
        Self::PartialHit,
        Self::Miss,
        Self::Revalidated,
        Self::Refreshed,
        Self::StaleOnError,
        Self::StaleWhileRevalidate,
        Self::Pass,
        Self::Denied,
        Self::Tunnel,
        Self::Edge,
        Self::OriginFailed,
    ];

    /// The `X-Cache` value clients see, if the response carries one.
    pub fn header(self) -> Option<HeaderValue> {
        let value = match self {
            Self::Hit | Self::NegativeHit => "HIT",
            Self::PartialHit => "PARTIAL_HIT",
            // Clients got a body from the origin either way; the log tells
            // a refresh from a plain miss.
            Self::Miss | Self::Refreshed => "MISS",
            Self::Revalidated => "REVALIDATED",
            Self::StaleOnError | Self::StaleWhileRevalidate => "STALE",
            Self::Pass => "PASS",
            Self::Denied | Self::Tunnel | Self::Edge | Self::OriginFailed => return None,
        };
        Some(HeaderValue::from_static(value))
    }

    /// Squid's result code (`squid -k parse` documents the list). `status`
    /// is the status sent: a hit answered 304 is Squid's TCP_IMS_HIT.
    pub fn squid_code(self, status: u16) -> &'static str {
        match self {
            Self::Hit if status == 304 => "TCP_IMS_HIT",
            // Served from the store without waiting; the refresh is a
            // request of its own.
            Self::Hit | Self::StaleWhileRevalidate => "TCP_HIT",
            Self::NegativeHit => "TCP_NEGATIVE_HIT",
            // Bytes came from the origin too: never logged as a hit.
            Self::PartialHit | Self::Miss | Self::Pass | Self::OriginFailed => "TCP_MISS",
            Self::Revalidated => "TCP_REFRESH_UNMODIFIED",
            Self::Refreshed => "TCP_REFRESH_MODIFIED",
            Self::StaleOnError => "TCP_REFRESH_FAIL_OLD",
            Self::Denied => "TCP_DENIED",
            Self::Tunnel => "TCP_TUNNEL",
            Self::Edge => "NONE_NONE",
        }
    }

    /// Whether the bytes came from the origin (Squid's HIER_DIRECT) rather
    /// than from the store or the edge itself (HIER_NONE).
    pub fn went_upstream(self) -> bool {
        matches!(
            self,
            Self::PartialHit
                | Self::Miss
                | Self::Revalidated
                | Self::Refreshed
                | Self::StaleOnError
                | Self::Pass
                | Self::Tunnel
                | Self::OriginFailed
        )
    }

    /// Where the body bytes were read: the store, a fill, or neither.
    pub fn source(self) -> ByteSource {
        match self {
            Self::Hit
            | Self::NegativeHit
            | Self::Revalidated
            | Self::StaleOnError
            | Self::StaleWhileRevalidate => ByteSource::Cache,
            Self::PartialHit | Self::Miss | Self::Refreshed => ByteSource::Fill,
            Self::Pass | Self::Denied | Self::Tunnel | Self::Edge | Self::OriginFailed => {
                ByteSource::Other
            }
        }
    }

    /// The status of a response the engine did not make: CONNECT tunnels
    /// and the connection's and router's own answers.
    pub fn unmarked(method: &str, status: u16) -> Self {
        match (method, status) {
            ("CONNECT", 200) => Self::Tunnel,
            ("CONNECT", _) | (_, 403) => Self::Denied,
            _ => Self::Edge,
        }
    }

    /// A name for metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::NegativeHit => "negative_hit",
            Self::PartialHit => "partial_hit",
            Self::Miss => "miss",
            Self::Revalidated => "revalidated",
            Self::Refreshed => "refreshed",
            Self::StaleOnError => "stale_on_error",
            Self::StaleWhileRevalidate => "stale_while_revalidate",
            Self::Pass => "pass",
            Self::Denied => "denied",
            Self::Tunnel => "tunnel",
            Self::Edge => "edge",
            Self::OriginFailed => "origin_failed",
        }
    }
}

/// Where a response's body bytes came from, for the served-bytes counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteSource {
    Cache,
    Fill,
    Other,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_a_squid_code_and_a_distinct_label() {
        let mut labels = std::collections::HashSet::new();
        for status in CacheStatus::ALL {
            assert!(labels.insert(status.label()), "{status:?}");
            assert!(!status.squid_code(200).is_empty());
        }
    }

    #[test]
    fn squid_codes_follow_what_happened() {
        assert_eq!(CacheStatus::Hit.squid_code(200), "TCP_HIT");
        assert_eq!(CacheStatus::Hit.squid_code(304), "TCP_IMS_HIT");
        assert_eq!(
            CacheStatus::Refreshed.squid_code(200),
            "TCP_REFRESH_MODIFIED"
        );
        assert_eq!(
            CacheStatus::Revalidated.squid_code(200),
            "TCP_REFRESH_UNMODIFIED"
        );
        assert_eq!(
            CacheStatus::StaleOnError.squid_code(200),
            "TCP_REFRESH_FAIL_OLD"
        );
        assert_eq!(CacheStatus::NegativeHit.squid_code(404), "TCP_NEGATIVE_HIT");
        assert_eq!(
            CacheStatus::PartialHit.squid_code(206),
            "TCP_MISS",
            "a resumed partial object fetched bytes: not a hit"
        );
        assert_eq!(CacheStatus::Edge.squid_code(502), "NONE_NONE");
        assert_eq!(CacheStatus::unmarked("CONNECT", 200), CacheStatus::Tunnel);
        assert_eq!(CacheStatus::unmarked("CONNECT", 403), CacheStatus::Denied);
        assert_eq!(CacheStatus::unmarked("GET", 400), CacheStatus::Edge);
    }
}
