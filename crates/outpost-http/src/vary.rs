//! Secondary cache keys (RFC 9111 section 4.1): a response with `Vary` is
//! stored once per combination of the listed request headers' values.
//!
//! A variant's key is the URL's key, a separator that cannot occur in a
//! URL, and the normalised values: `http://h/p\u{1f}accept-encoding=gzip`.
//! `Accept-Encoding` is normalised to what the edge asks the origin for
//! (`gzip` when the client accepts it, else `identity`), so package
//! downloads from PCs with different browsers do not fragment into copies.

use http::header::{ACCEPT_ENCODING, HeaderMap, HeaderName, HeaderValue, VARY};

use crate::CacheKey;

/// Separates the URL from the variant in a key.
pub const VARIANT_SEPARATOR: char = '\u{1f}';

/// The header names a response varies on, lower case; `None` for `Vary: *`
/// (never reusable) and an empty list for no `Vary`.
pub fn vary_names(response: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in response.get_all(VARY).iter() {
        let Ok(value) = value.to_str() else {
            return None;
        };
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            let Ok(name) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) else {
                return None;
            };
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Some(names)
}

/// The `Accept-Encoding` the edge sends upstream and keys variants by.
pub fn normalize_accept_encoding(value: Option<&HeaderValue>) -> HeaderValue {
    let accepts_gzip = value.and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',').any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
    });
    HeaderValue::from_static(if accepts_gzip { "gzip" } else { "identity" })
}

/// Rewrites the request's `Accept-Encoding` to its normalised form.
pub fn normalize_request(headers: &mut HeaderMap) {
    let normalized = normalize_accept_encoding(headers.get(ACCEPT_ENCODING));
    headers.insert(ACCEPT_ENCODING, normalized);
}

/// The key of the variant of `base` that a request with `request` headers
/// selects, given the response's `names`.
pub fn variant_key(base: &CacheKey, names: &[HeaderName], request: &HeaderMap) -> CacheKey {
    let mut key = base.as_str().to_string();
    key.push(VARIANT_SEPARATOR);
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            key.push('&');
        }
        key.push_str(name.as_str());
        key.push('=');
        let value = if *name == ACCEPT_ENCODING {
            normalize_accept_encoding(request.get(name))
                .to_str()
                .unwrap_or("")
                .to_string()
        } else {
            let values: Vec<&str> = request
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            // Whitespace around commas carries no meaning (RFC 9111 4.1).
            values
                .join(",")
                .split(',')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(",")
        };
        for c in value.chars() {
            // Keep the separators unambiguous.
            if c == '&' || c == '%' || c == VARIANT_SEPARATOR {
                key.push_str(&format!("%{:02X}", c as u32));
            } else {
                key.push(c);
            }
        }
    }
    CacheKey::from_stored(key)
}

/// For a variant key: the URL's key and the header names it varies on.
pub fn split_variant(key: &str) -> Option<(CacheKey, Vec<HeaderName>)> {
    let (base, variant) = key.split_once(VARIANT_SEPARATOR)?;
    let names = variant
        .split('&')
        .filter_map(|pair| pair.split_once('=').map(|(n, _)| n))
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    Some((CacheKey::from_stored(base.to_string()), names))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn accept_encoding_collapses_to_what_the_edge_asks_for() {
        let norm = |v: Option<&str>| {
            normalize_accept_encoding(v.map(|v| v.parse().unwrap()).as_ref())
                .to_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(norm(Some("gzip, deflate, br")), "gzip");
        assert_eq!(norm(Some("br;q=1.0, GZIP;q=0.5")), "gzip");
        assert_eq!(norm(Some("gzip;q=0, deflate")), "identity");
        assert_eq!(norm(Some("*")), "gzip");
        assert_eq!(norm(None), "identity");
    }

    #[test]
    fn variant_keys_and_names_round_trip() {
        let base = CacheKey::from_stored("http://h/p".into());
        let names = vary_names(&headers(&[
            ("vary", "Accept-Encoding, User-Agent"),
            ("vary", "accept-encoding"),
        ]))
        .unwrap();
        assert_eq!(names, ["accept-encoding", "user-agent"]);
        let a = variant_key(
            &base,
            &names,
            &headers(&[("accept-encoding", "gzip, br"), ("user-agent", "A&B")]),
        );
        let b = variant_key(
            &base,
            &names,
            &headers(&[("accept-encoding", "deflate, gzip"), ("user-agent", "A&B")]),
        );
        assert_eq!(a, b, "browsers that all accept gzip share a variant");
        let c = variant_key(&base, &names, &headers(&[("user-agent", "A&B")]));
        assert_ne!(a, c);
        let (back, back_names) = split_variant(a.as_str()).unwrap();
        assert_eq!((back, back_names), (base, names));
        assert!(vary_names(&headers(&[("vary", "*")])).is_none());
        assert_eq!(vary_names(&HeaderMap::new()), Some(vec![]));
    }
}
