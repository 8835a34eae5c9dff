//! The origin URL a stored response's freshness policy is judged with.

/// The URL a stored response's policy is judged with: the origin URL
/// without its scheme's default port. A reverse site's origin
/// `http://files:80` and a channel's source `http://files/` name one
/// representation (one cache key); were the URL or `Host` the policy
/// compares to differ, it would find the stored response not matching the
/// request, and a stale copy would be fetched whole instead of revalidated.
pub(super) fn policy_uri(uri: &http::Uri) -> http::Uri {
    let Some(authority) = uri.authority() else {
        return uri.clone();
    };
    let default_port = match uri.scheme_str() {
        Some("http") => Some(80),
        Some("https") => Some(443),
        _ => None,
    };
    if authority.port_u16().is_none() || authority.port_u16() != default_port {
        return uri.clone();
    }
    let mut parts = uri.clone().into_parts();
    match authority.host().parse() {
        Ok(host) => {
            parts.authority = Some(host);
            http::Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
        }
        Err(_) => uri.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::policy_uri;

    #[test]
    fn the_policy_url_drops_only_the_schemes_default_port() {
        let judged = |u: &str| policy_uri(&u.parse().unwrap()).to_string();
        for (uri, want) in [
            ("http://files:80/a?b", "http://files/a?b"),
            ("http://files/a", "http://files/a"),
            ("https://files:443/a", "https://files/a"),
            ("http://files:8080/a", "http://files:8080/a"),
            ("https://files:80/a", "https://files:80/a"),
            ("http://[::1]:80/a", "http://[::1]/a"),
        ] {
            assert_eq!(judged(uri), want, "{uri}");
        }
    }
}
