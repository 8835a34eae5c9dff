//! Secondary cache keys (RFC 9111 section 4.1): a response with `Vary` is
//! stored once per combination of the listed request headers' values.
//!
//! A variant's key is the URL's key, a separator that cannot occur in a
//! URL, and the normalised values: `http://h/p\u{1f}accept-encoding=gzip`.
//! `Accept-Encoding` is normalised to what the edge asks the origin for
//! (`gzip` when the client accepts it, else `identity`), so package
//! downloads from PCs with different browsers do not fragment into copies.

use http::header::{ACCEPT_ENCODING, ACCEPT_LANGUAGE, HeaderMap, HeaderName, HeaderValue, VARY};

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

/// The value by which a request's `name` fields select a variant: every
/// field line joined, list elements trimmed and empty ones dropped
/// (white space around commas and line splits carry no meaning, RFC 9110
/// section 5.3), language tags in lower case (compared case-insensitively,
/// RFC 4647), `Accept-Encoding` as the edge normalises it. `None` when the
/// request has no such field.
pub fn canonical_value(name: &HeaderName, request: &HeaderMap) -> Option<String> {
    if *name == ACCEPT_ENCODING {
        return normalize_accept_encoding(request.get(name))
            .to_str()
            .ok()
            .map(str::to_string);
    }
    let mut lines = request.get_all(name).iter().peekable();
    lines.peek()?;
    let joined = lines
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect::<Vec<_>>()
        .join(",");
    let mut value = joined
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect::<Vec<_>>()
        .join(",");
    if *name == ACCEPT_LANGUAGE {
        value.make_ascii_lowercase();
    }
    Some(value)
}

/// Rewrites the request's fields listed in `names` to their canonical
/// values, one line each, so that the policy compares selections the way
/// variant keys do.
pub fn canonicalize_request(headers: &mut HeaderMap, names: &[HeaderName]) {
    for name in names {
        if let Some(value) = canonical_value(name, headers)
            && let Ok(value) = HeaderValue::from_str(&value)
        {
            headers.insert(name.clone(), value);
        }
    }
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
        let value = canonical_value(name, request).unwrap_or_default();
        if is_secret(name) || value.len() > MAX_PLAIN_VALUE {
            // Credentials never land in the index (or in `cache ls`), and a
            // client cannot grow keys with long values: a digest selects
            // the same variant just as well.
            key.push('#');
            key.push_str(&blake3::hash(value.as_bytes()).to_hex()[..32]);
            continue;
        }
        for c in value.chars() {
            // Keep the separators unambiguous.
            if matches!(c, '&' | '%' | '#') || c == VARIANT_SEPARATOR {
                key.push_str(&format!("%{:02X}", c as u32));
            } else {
                key.push(c);
            }
        }
    }
    CacheKey::from_stored(key)
}

/// Values longer than this are keyed by their digest.
const MAX_PLAIN_VALUE: usize = 128;

/// Request fields whose values are credentials or session state.
fn is_secret(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "cookie" | "authorization" | "proxy-authorization"
    )
}

/// The URL part of a key that may name a variant (the key itself when it
/// names none), without copying it.
pub fn url_part(key: &str) -> &str {
    key.split_once(VARIANT_SEPARATOR)
        .map_or(key, |(url, _)| url)
}

/// The URL's key of a key that may name a variant: what quarantines,
/// expected digests and the variant map are kept by.
pub fn url_key(key: &CacheKey) -> CacheKey {
    match key.as_str().split_once(VARIANT_SEPARATOR) {
        Some((url, _)) => CacheKey::from_stored(url.to_string()),
        None => key.clone(),
    }
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
    fn selections_compare_by_their_canonical_values() {
        let lang = HeaderName::from_static("accept-language");
        let foo = HeaderName::from_static("foo");
        let value =
            |name: &HeaderName, pairs: &[(&str, &str)]| canonical_value(name, &headers(pairs));
        assert_eq!(
            value(&lang, &[("accept-language", " EN ,De")]).as_deref(),
            Some("en,de")
        );
        assert_eq!(
            value(&foo, &[("foo", "1"), ("foo", " 2 ")]).as_deref(),
            Some("1,2")
        );
        assert_eq!(value(&foo, &[("foo", "A, ,b")]).as_deref(), Some("A,b"));
        assert_eq!(value(&foo, &[]), None);
        let mut request = headers(&[("foo", "1"), ("foo", "2"), ("bar", "x , y")]);
        canonicalize_request(&mut request, std::slice::from_ref(&foo));
        assert_eq!(request.get_all(&foo).iter().count(), 1);
        assert_eq!(request.get(&foo).unwrap(), "1,2");
        assert_eq!(
            request.get("bar").unwrap(),
            "x , y",
            "unlisted fields are left alone"
        );
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
        let secret = variant_key(
            &base,
            &[HeaderName::from_static("cookie")],
            &headers(&[("cookie", "session=s3cr3t")]),
        );
        assert!(!secret.as_str().contains("s3cr3t"), "{secret}");
        let long = "x".repeat(60_000);
        let long_key = variant_key(&base, &names, &headers(&[("user-agent", &long)]));
        assert!(long_key.as_str().len() < 200, "keys stay short");
        assert_ne!(
            long_key,
            variant_key(
                &base,
                &names,
                &headers(&[("user-agent", &"y".repeat(60_000))])
            )
        );
        let (back, back_names) = split_variant(a.as_str()).unwrap();
        assert_eq!((back, back_names), (base, names));
        assert!(vary_names(&headers(&[("vary", "*")])).is_none());
        assert_eq!(vary_names(&HeaderMap::new()), Some(vec![]));
    }
}
