//! What a request on the library listener is (sans-io): the PAC file, a
//! Delivery Optimization cache-host request, a DNS-mode request, or the
//! site library's. Refusals come first: the listener faces every PC (and
//! every web page a PC opens), and it is not a proxy.

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, StatusCode, Uri, header};

use super::config::{HostPattern, LibraryConfig};

/// The query parameter that names a Delivery Optimization request's origin
/// (`GET /path?cacheHostOrigin=host`).
pub const CACHE_HOST_ORIGIN: &str = "cacheHostOrigin";

/// Longest query the listener looks into for `cacheHostOrigin`.
const MAX_QUERY: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    /// Answered at once with this status and text.
    Refused(StatusCode, &'static str),
    /// `/wpad.dat` or `/proxy.pac`.
    Pac,
    /// A Delivery Optimization request for an allowed origin, as the origin
    /// URL (the `cacheHostOrigin` parameter removed).
    Delivery(Uri),
    /// A Delivery Optimization request for an origin not in `do_hosts`.
    DeliveryRefused(String),
    /// A request whose Host is a DNS-mode name, as the origin URL.
    DnsMode(Uri),
    /// Everything else: the site library's.
    Local,
}

/// Decides what a request on the library listener is.
pub fn classify(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    config: &LibraryConfig,
) -> Classified {
    if method == Method::CONNECT {
        return Classified::Refused(
            StatusCode::METHOD_NOT_ALLOWED,
            "this is the edge's library listener, not a proxy: CONNECT is refused",
        );
    }
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Classified::Refused(
            StatusCode::BAD_REQUEST,
            "this is the edge's library listener, not a proxy: absolute URLs are refused",
        );
    }
    let Some(path_and_query) = uri.path_and_query() else {
        return Classified::Refused(StatusCode::BAD_REQUEST, "no request path");
    };
    if !path_and_query.path().starts_with('/') {
        // `OPTIONS *` and the like: nothing here answers for the server.
        return Classified::Refused(StatusCode::BAD_REQUEST, "the request target must be a path");
    }
    let read = method == Method::GET || method == Method::HEAD;
    let path = path_and_query.path();
    if read && (path == "/wpad.dat" || path == "/proxy.pac") {
        return Classified::Pac;
    }
    if let Some(query) = path_and_query.query()
        && query.len() <= MAX_QUERY
        && let Some(origin) = query_param(query, CACHE_HOST_ORIGIN)
    {
        if !read {
            // A cache host only downloads: DO never posts through one.
            return Classified::Refused(
                StatusCode::METHOD_NOT_ALLOWED,
                "Delivery Optimization requests are GET or HEAD",
            );
        }
        let Ok(authority) = plain_authority(origin) else {
            return Classified::Refused(StatusCode::BAD_REQUEST, "cacheHostOrigin is not a host");
        };
        if !allowed(&config.do_hosts, &authority) {
            return Classified::DeliveryRefused(authority.to_string());
        }
        let rest = strip_param(query, CACHE_HOST_ORIGIN);
        return origin_url(authority, path, rest.as_deref())
            .map_or_else(|r| r, Classified::Delivery);
    }
    let Some(host) = host_header(headers) else {
        return Classified::Local;
    };
    // Configuration Manager's form: the cache server is asked with the
    // origin's name in Host (`Host: b1.download.windowsupdate.com`).
    if allowed(&config.do_hosts, &host) {
        if !read {
            return Classified::Refused(
                StatusCode::METHOD_NOT_ALLOWED,
                "Delivery Optimization requests are GET or HEAD",
            );
        }
        return origin_url(host, path, path_and_query.query())
            .map_or_else(|r| r, Classified::Delivery);
    }
    if allowed(&config.dns.names, &host) {
        return origin_url(host, path, path_and_query.query())
            .map_or_else(|r| r, Classified::DnsMode);
    }
    Classified::Local
}

/// `http://authority/path?query`, dot-segments removed (no request leaves
/// the origin's root in a way the origin would read differently).
fn origin_url(authority: Authority, path: &str, query: Option<&str>) -> Result<Uri, Classified> {
    let refused = |why| Classified::Refused(StatusCode::BAD_REQUEST, why);
    let path =
        outpost_http::path::remove_dot_segments(path).map_err(|_| refused("bad request path"))?;
    let target = match query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path,
    };
    let path_and_query = target
        .parse::<PathAndQuery>()
        .map_err(|_| refused("bad request path"))?;
    Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority)
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| refused("bad origin URL"))
}

fn allowed(patterns: &[HostPattern], authority: &Authority) -> bool {
    let port = authority.port_u16().unwrap_or(80);
    patterns.iter().any(|p| p.matches(authority.host(), port))
}

/// A `host[:port]` with nothing else in it (no user info, no IP literal
/// brackets games: names and IPv4 only, since the allowlists hold names).
fn plain_authority(text: &str) -> Result<Authority, ()> {
    let decoded = percent_decode(text).ok_or(())?;
    if decoded.contains('@') || decoded.is_empty() {
        return Err(());
    }
    let authority: Authority = decoded.parse().map_err(|_| ())?;
    if !super::config::is_host_name(authority.host().trim_end_matches('.')) {
        return Err(());
    }
    if authority.port().is_some() && authority.port_u16().is_none_or(|p| p == 0) {
        return Err(());
    }
    Ok(authority)
}

fn host_header(headers: &HeaderMap) -> Option<Authority> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next()?;
    if hosts.next().is_some() {
        return None;
    }
    plain_authority(host.to_str().ok()?).ok()
}

/// The first value of `name` in a query string.
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        key.eq_ignore_ascii_case(name).then_some(value)
    })
}

/// The query without any `name` parameter; `None` when nothing is left.
fn strip_param(query: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            !key.eq_ignore_ascii_case(name) && !pair.is_empty()
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    Some(kept.join("&"))
}

/// `text` percent-decoded, or `None` for a malformed escape (a `%` not
/// followed by two hex digits: `%G1`, a truncated `%4`) or a result that
/// is not UTF-8. `percent-encoding` passes a malformed escape through as
/// text; here it is refused, since no host name holds a `%` of its own.
fn percent_decode(text: &str) -> Option<String> {
    let well_formed = text.split('%').skip(1).all(|after| {
        after
            .as_bytes()
            .get(..2)
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return None;
    }
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::library::config::{DnsModeConfig, HostPattern};

    fn config() -> LibraryConfig {
        LibraryConfig {
            dns: DnsModeConfig {
                names: vec![HostPattern::parse("*.steamcontent.com").unwrap()],
                upstreams: vec!["192.0.2.53:53".parse().unwrap()],
            },
            ..LibraryConfig::default()
        }
    }

    fn classify_get(target: &str, host: Option<&str>) -> Classified {
        let mut headers = HeaderMap::new();
        if let Some(host) = host {
            headers.insert(header::HOST, host.parse().unwrap());
        }
        classify(&Method::GET, &target.parse().unwrap(), &headers, &config())
    }

    fn uri(text: &str) -> Uri {
        text.parse().unwrap()
    }

    #[test]
    fn requests_are_dispatched_in_order() {
        assert_eq!(classify_get("/wpad.dat", Some("wpad")), Classified::Pac);
        assert_eq!(classify_get("/proxy.pac", None), Classified::Pac);
        // PAC wins over a DO Host: it is the edge's own file.
        assert_eq!(
            classify_get("/wpad.dat", Some("au.download.windowsupdate.com")),
            Classified::Pac
        );
        assert_eq!(
            classify_get(
                "/filestreamingservice/files/abc?P1=1&cacheHostOrigin=au.download.windowsupdate.com&P2=2",
                Some("10.0.0.5")
            ),
            Classified::Delivery(uri(
                "http://au.download.windowsupdate.com/filestreamingservice/files/abc?P1=1&P2=2"
            ))
        );
        assert_eq!(
            classify_get(
                "/mscomtest/wuidt.gif?cacheHostOrigin=au.download.windowsupdate.com",
                Some("edge")
            ),
            Classified::Delivery(uri(
                "http://au.download.windowsupdate.com/mscomtest/wuidt.gif"
            ))
        );
        // Configuration Manager's form: the origin in Host.
        assert_eq!(
            classify_get(
                "/mscomtest/wuidt.gif",
                Some("b1.download.windowsupdate.com")
            ),
            Classified::Delivery(uri(
                "http://b1.download.windowsupdate.com/mscomtest/wuidt.gif"
            ))
        );
        assert_eq!(
            classify_get("/depot/1/chunk/ab", Some("cache1.steamcontent.com")),
            Classified::DnsMode(uri("http://cache1.steamcontent.com/depot/1/chunk/ab"))
        );
        assert_eq!(classify_get("/packages/", Some("edge")), Classified::Local);
        assert_eq!(classify_get("/packages/", None), Classified::Local);
    }

    #[test]
    fn delivery_origins_outside_the_allowlist_are_refused() {
        assert_eq!(
            classify_get("/x?cacheHostOrigin=evil.example", Some("edge")),
            Classified::DeliveryRefused("evil.example".into())
        );
        // A port the allowlist does not name is another origin.
        assert_eq!(
            classify_get(
                "/x?cacheHostOrigin=au.download.windowsupdate.com:8080",
                None
            ),
            Classified::DeliveryRefused("au.download.windowsupdate.com:8080".into())
        );
        for bad in [
            "/x?cacheHostOrigin=",
            "/x?cacheHostOrigin=user@au.download.windowsupdate.com",
            "/x?cacheHostOrigin=au.download.windowsupdate.com%40evil",
            "/x?cacheHostOrigin=127.0.0.1%2Fx",
            "/x?cacheHostOrigin=%zz",
            "/x?cacheHostOrigin=%G1",
            "/x?cacheHostOrigin=au.download.windowsupdate.com%4",
            "/x?cacheHostOrigin=%4",
            "/x?cacheHostOrigin=[::1]",
        ] {
            assert!(
                matches!(
                    classify_get(bad, None),
                    Classified::Refused(StatusCode::BAD_REQUEST, _)
                ),
                "{bad}"
            );
        }
        // Dot-segments cannot climb out of the origin's root.
        assert!(matches!(
            classify_get(
                "/a/%2e%2e/b?cacheHostOrigin=au.download.windowsupdate.com",
                None
            ),
            Classified::Refused(..)
        ));
    }

    #[test]
    fn percent_decoding_refuses_malformed_escapes_and_non_utf8() {
        let decoded = |t: &str| percent_decode(t);
        assert_eq!(
            decoded("au.download.windowsupdate.com").as_deref(),
            Some("au.download.windowsupdate.com")
        );
        assert_eq!(decoded("%41%62c").as_deref(), Some("Abc"));
        assert_eq!(decoded("%c3%A9.example").as_deref(), Some("é.example"));
        // Decoded once: an encoded '%' stays a '%'.
        assert_eq!(decoded("%2541").as_deref(), Some("%41"));
        // NUL and '/' decode; the authority parse after it refuses them.
        assert_eq!(decoded("a%00b").as_deref(), Some("a\0b"));
        assert_eq!(decoded("127.0.0.1%2Fx").as_deref(), Some("127.0.0.1/x"));
        for bad in [
            "%G1", "%4", "a%4", "%", "a%", "%e", "%zz", "%%41", "%+1", "%é1", // malformed
            "%ff", "%c3", "%c3%28", // not UTF-8
        ] {
            assert_eq!(decoded(bad), None, "{bad}");
        }
        // A Host with a malformed escape is no Delivery Optimization host.
        for host in [
            "au.download.windowsupdate.com%G1",
            "au.download.windowsupdate.com%4",
        ] {
            assert_eq!(classify_get("/x", Some(host)), Classified::Local, "{host}");
        }
    }

    #[test]
    fn hostile_targets_and_hosts_never_panic() {
        let c = &config();
        let targets = [
            "/x?cacheHostOrigin=%",
            "/x?cacheHostOrigin=%e",
            "/x?cacheHostOrigin=%c3%a9.example",
            "/x?cacheHostOrigin=a%00b",
            "/x?cacheHostOrigin=au.download.windowsupdate.com:",
            "/x?cacheHostOrigin=au.download.windowsupdate.com:0",
            "/x?cacheHostOrigin=au.download.windowsupdate.com:99999",
            "/x?&&&cacheHostOrigin&=",
            "/x?=",
            "/%2e%2e/%2e%2e/etc/passwd",
            "/..%5c..%5cwindows",
        ];
        let hosts = [
            "",
            ":",
            "[",
            "[::1]:80",
            "a..b",
            "x.steamcontent.com:",
            "é.steamcontent.com",
            ".steamcontent.com",
            "steamcontent.com",
            "a.steamcontent.com:0",
        ];
        for target in targets {
            let Ok(uri) = target.parse::<Uri>() else {
                continue;
            };
            for host in hosts {
                let mut headers = HeaderMap::new();
                if let Ok(value) = http::HeaderValue::from_bytes(host.as_bytes()) {
                    headers.insert(header::HOST, value);
                }
                let _ = classify(&Method::GET, &uri, &headers, c);
            }
        }
        let mut long = String::from("/x?");
        long.push_str(&"a=b&".repeat(5000));
        long.push_str("cacheHostOrigin=au.download.windowsupdate.com");
        // Past the bound: not looked into, so not a DO request.
        assert_eq!(
            classify(&Method::GET, &long.parse().unwrap(), &HeaderMap::new(), c),
            Classified::Local
        );
    }

    #[test]
    fn proxy_forms_are_refused() {
        let headers = HeaderMap::new();
        let c = &config();
        assert!(matches!(
            classify(
                &Method::GET,
                &uri("http://au.download.windowsupdate.com/x"),
                &headers,
                c
            ),
            Classified::Refused(StatusCode::BAD_REQUEST, _)
        ));
        assert!(matches!(
            classify(&Method::CONNECT, &uri("example.com:443"), &headers, c),
            Classified::Refused(StatusCode::METHOD_NOT_ALLOWED, _)
        ));
        assert!(matches!(
            classify(&Method::OPTIONS, &uri("*"), &headers, c),
            Classified::Refused(StatusCode::BAD_REQUEST, _)
        ));
        // A cache host only downloads.
        for target in ["/x?cacheHostOrigin=au.download.windowsupdate.com", "/x"] {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::HOST,
                "au.download.windowsupdate.com".parse().unwrap(),
            );
            assert_eq!(
                classify(&Method::POST, &uri(target), &headers, c),
                Classified::Refused(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "Delivery Optimization requests are GET or HEAD"
                ),
                "{target}"
            );
        }
        // POST to the PAC path is not the PAC file.
        assert_eq!(
            classify(&Method::POST, &uri("/wpad.dat"), &headers, c),
            Classified::Local
        );
    }
}
