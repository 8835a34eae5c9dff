//! Cache keys: one normalised absolute URL per representation.
//!
//! Every mode (forward, transparent, reverse) reduces a request to the URL of
//! the origin it is routed to, so the same origin URL hits the same entry
//! whichever way the client reached the edge. The authority in the key is the
//! one the request is *routed* to, never a header such as `X-Forwarded-Host`.

use std::fmt::{self, Write as _};

use http::uri::{Authority, PathAndQuery, Scheme, Uri};

/// A normalised origin URL: lower-case scheme and host, no default port,
/// path and query kept byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("unsupported scheme {0:?}: only http and https are proxied")]
    Scheme(String),
    #[error("request target has no host")]
    NoHost,
    #[error("invalid request target: {0}")]
    Invalid(String),
}

impl CacheKey {
    /// Builds the key of `path_and_query` on `scheme://authority`.
    pub fn new(
        scheme: &Scheme,
        authority: &Authority,
        path_and_query: Option<&PathAndQuery>,
    ) -> Result<Self, KeyError> {
        let scheme = scheme.as_str();
        let default_port = if scheme.eq_ignore_ascii_case("http") {
            80
        } else if scheme.eq_ignore_ascii_case("https") {
            443
        } else {
            return Err(KeyError::Scheme(scheme.to_ascii_lowercase()));
        };
        let host = authority.host();
        if host.is_empty() {
            return Err(KeyError::NoHost);
        }
        let port = authority.port_u16().unwrap_or(default_port);
        let path = path_and_query.map_or("/", |pq| pq.as_str());
        let path = if path.is_empty() { "/" } else { path };
        // Built by hand: this runs for every request.
        let mut key = String::with_capacity(scheme.len() + host.len() + path.len() + 9);
        key.push_str(scheme);
        key.push_str("://");
        key.push_str(host);
        key.make_ascii_lowercase();
        if port != default_port {
            let _ = write!(key, ":{port}");
        }
        key.push_str(path);
        Ok(Self(key))
    }

    /// The key of an absolute URI (`http://host[:port]/path?query`).
    pub fn from_uri(uri: &Uri) -> Result<Self, KeyError> {
        let scheme = uri
            .scheme()
            .ok_or_else(|| KeyError::Invalid(uri.to_string()))?;
        let authority = uri.authority().ok_or(KeyError::NoHost)?;
        Self::new(scheme, authority, uri.path_and_query())
    }

    /// Wraps a string that is already a key (as read back from the index).
    pub fn from_stored(key: String) -> Self {
        Self(key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as an absolute URI, for the upstream request.
    pub fn to_uri(&self) -> Result<Uri, KeyError> {
        self.0
            .parse()
            .map_err(|e: http::uri::InvalidUri| KeyError::Invalid(e.to_string()))
    }
}

/// Maps keyed by `CacheKey` can be searched by `&str` (a key's URL part,
/// say) without building a key: the derived `Hash` and `Eq` are the
/// string's.
impl std::borrow::Borrow<str> for CacheKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uri: &str) -> String {
        CacheKey::from_uri(&uri.parse().unwrap())
            .unwrap()
            .to_string()
    }

    #[test]
    fn normalises_case_and_default_port() {
        assert_eq!(
            key("HTTP://Example.COM:80/a/B?x=Y"),
            "http://example.com/a/B?x=Y"
        );
        assert_eq!(key("http://example.com:8080"), "http://example.com:8080/");
        assert_eq!(key("https://example.com:443/p"), "https://example.com/p");
    }

    #[test]
    fn rejects_other_schemes() {
        assert!(matches!(
            CacheKey::from_uri(&"ftp://example.com/x".parse().unwrap()),
            Err(KeyError::Scheme(_))
        ));
    }
}
