//! Header rules that every path through the proxy applies.

use http::header::{self, HeaderMap, HeaderName};

/// The hop-by-hop headers of RFC 9110 section 7.6.1, plus the legacy ones
/// proxies have always stripped.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes the hop-by-hop headers, including every header that `Connection`
/// lists.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// Request headers the edge controls itself on a cacheable fetch: the client's
/// own validators and ranges belong to the client's conversation with the
/// cache, not to the fill.
pub const FILL_CONTROLLED_REQUEST_HEADERS: &[HeaderName] = &[
    header::RANGE,
    header::IF_RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
];

/// The `Via` token this edge adds (RFC 9110 section 7.6.3).
pub const VIA: &str = "1.1 outpost";

/// Appends our `Via` entry to any existing ones.
pub fn add_via(headers: &mut HeaderMap) {
    add_via_as(headers, VIA);
}

/// Appends the `Via` entry `entry` (`1.1 name`) to any existing ones.
pub fn add_via_as(headers: &mut HeaderMap, entry: &str) {
    if !headers.contains_key(header::VIA) {
        if let Ok(value) = entry.parse() {
            headers.insert(header::VIA, value);
        }
        return;
    }
    let existing: Vec<&str> = headers
        .get_all(header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .collect();
    let value = if existing.is_empty() {
        entry.to_string()
    } else {
        format!("{}, {entry}", existing.join(", "))
    };
    if let Ok(value) = value.parse() {
        headers.insert(header::VIA, value);
    }
}

/// The received-by names of every `Via` entry (`1.1 name (comment)`).
pub fn via_names(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|entry| entry.split_whitespace().nth(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_listed_and_standard_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("content-type", "text/plain".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
    }

    #[test]
    fn via_appends() {
        let mut h = HeaderMap::new();
        add_via(&mut h);
        assert_eq!(h["via"], "1.1 outpost");
        add_via(&mut h);
        assert_eq!(h["via"], "1.1 outpost, 1.1 outpost");
    }
}
