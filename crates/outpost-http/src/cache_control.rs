//! `Cache-Control` directives (RFC 9111 section 5.2), as the edge reads them
//! beside the policy library: stale-while-revalidate, stale-if-error,
//! only-if-cached and the revalidation directives.
//!
//! Tolerant like the RFC asks: unknown directives are skipped, names are
//! case-insensitive, quoted values are unquoted, a malformed value counts as
//! absent.

use http::HeaderMap;
use http::header::CACHE_CONTROL;

/// Every directive of every `Cache-Control` field: lower-case name and raw
/// value, in order.
pub fn directives(headers: &HeaderMap) -> impl Iterator<Item = (String, Option<&str>)> {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| {
            let d = d.trim();
            if d.is_empty() {
                return None;
            }
            Some(match d.split_once('=') {
                Some((k, v)) => (
                    k.trim().to_ascii_lowercase(),
                    Some(v.trim().trim_matches('"')),
                ),
                None => (d.to_ascii_lowercase(), None),
            })
        })
}

/// Whether the directive `name` (lower case) is present.
pub fn has(headers: &HeaderMap, name: &str) -> bool {
    directives(headers).any(|(k, _)| k == name)
}

/// The delta-seconds value of `name` (lower case), if present and valid.
pub fn seconds(headers: &HeaderMap, name: &str) -> Option<u64> {
    directives(headers).find_map(|(k, v)| (k == name).then(|| v?.parse().ok()).flatten())
}

/// Whether a stored response forbids serving it stale (RFC 9111 section
/// 4.2.4): must-revalidate, proxy-revalidate, no-cache or no-store.
pub fn forbids_stale(headers: &HeaderMap) -> bool {
    directives(headers).any(|(k, _)| {
        matches!(
            k.as_str(),
            "must-revalidate" | "proxy-revalidate" | "no-cache" | "no-store"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(values: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for v in values {
            m.append(CACHE_CONTROL, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn reads_names_values_and_several_fields() {
        let m = h(&[
            "Max-Age=60, stale-while-revalidate=\"30\"",
            "no-cache=\"set-cookie\", ,public",
        ]);
        assert_eq!(seconds(&m, "max-age"), Some(60));
        assert_eq!(seconds(&m, "stale-while-revalidate"), Some(30));
        assert!(has(&m, "public") && has(&m, "no-cache"));
        assert!(forbids_stale(&m));
        assert_eq!(seconds(&h(&["max-age=soon"]), "max-age"), None);
        assert_eq!(seconds(&h(&["max-age"]), "max-age"), None);
        assert!(!has(&h(&["no-cacheable"]), "no-cache"));
        assert!(!forbids_stale(&h(&["public, max-age=5"])));
    }
}
