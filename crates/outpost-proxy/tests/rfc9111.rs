//! HTTP caching rules (RFC 9111, RFC 5861), one case per rule: what the
//! origin sends, what clients ask in order, what each client sees and how
//! many requests reach the origin. Each case runs against a fresh edge and
//! origin; a failing rule names itself.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::StatusCode;
use outpost_proxy::{Engine, ManualClock, ProxyConfig, Server};
use outpost_store::{Store, StoreConfig};
use outpost_testkit::{Client, Origin, Resource, content, wait_until};
use tokio_util::sync::CancellationToken;

const PATH: &str = "/r";

fn http_date(offset_secs: i64) -> String {
    let now = SystemTime::now();
    let t = if offset_secs >= 0 {
        now + Duration::from_secs(offset_secs as u64)
    } else {
        now - Duration::from_secs((-offset_secs) as u64)
    };
    httpdate::fmt_http_date(t)
}

/// What a client request must get.
struct Expect {
    status: u16,
    /// `X-Cache` verdict, when the rule is about it.
    cache: Option<&'static str>,
    /// The body must be this resource's (seed) content.
    body_seed: Option<u64>,
    /// Response fields that must have this value (`None`: be absent).
    fields: Vec<(&'static str, Option<&'static str>)>,
}

enum Step {
    Get(Vec<(&'static str, String)>, Expect),
    Request(&'static str, &'static str, Vec<(&'static str, String)>, u16),
    /// Changes what the origin serves.
    Origin(Box<dyn Fn(&Origin) + Send + Sync>),
    /// Waits (with a deadline) until the origin saw this many requests for
    /// PATH: background work (stale-while-revalidate) happens.
    OriginSees(usize),
    /// Moves the edge's clock this many seconds on: what is stored ages.
    Advance(u64),
}

struct Case {
    rule: &'static str,
    resource: Resource,
    config: fn(&mut ProxyConfig),
    steps: Vec<Step>,
    /// Requests for PATH the origin saw in the end.
    origin_requests: usize,
    /// How many of those were conditional.
    conditional: Option<usize>,
}

fn get(headers: &[(&'static str, &str)], status: u16, cache: Option<&'static str>) -> Step {
    Step::Get(
        headers.iter().map(|(n, v)| (*n, v.to_string())).collect(),
        Expect {
            status,
            cache,
            body_seed: None,
            fields: Vec::new(),
        },
    )
}

fn get_body(seed: u64, cache: &'static str) -> Step {
    Step::Get(
        Vec::new(),
        Expect {
            status: 200,
            cache: Some(cache),
            body_seed: Some(seed),
            fields: Vec::new(),
        },
    )
}

/// A plain GET whose response must carry (or lack) these fields.
fn get_fields(cache: &'static str, fields: &[(&'static str, Option<&'static str>)]) -> Step {
    Step::Get(
        Vec::new(),
        Expect {
            status: 200,
            cache: Some(cache),
            body_seed: Some(1),
            fields: fields.to_vec(),
        },
    )
}

fn res(cache_control: &str) -> Resource {
    Resource::new(content(2000, 1)).header("cache-control", cache_control)
}

fn no_config(_: &mut ProxyConfig) {}

fn no_stale_on_error(c: &mut ProxyConfig) {
    c.fill.serve_stale_on_error = false;
}

fn rule(path: &str) -> outpost_proxy::CacheOverride {
    outpost_proxy::CacheOverride {
        host: globset::Glob::new("*").unwrap().compile_matcher(),
        path: globset::Glob::new(path).unwrap().compile_matcher(),
        freshness: Default::default(),
        ignore_query: false,
        never_cache: false,
    }
}

fn bypass_x_tenant(c: &mut ProxyConfig) {
    c.bypass_request_headers = vec![http::HeaderName::from_static("x-tenant")];
}

fn keep_for_days(c: &mut ProxyConfig) {
    let mut r = rule("/r*");
    r.freshness.min_fresh = Some(Duration::from_secs(2 * 86_400));
    c.overrides.push(r);
}

fn at_most_a_minute(c: &mut ProxyConfig) {
    let mut r = rule("/r");
    r.freshness.max_fresh = Some(Duration::from_secs(60));
    c.overrides.push(r);
}

fn ignore_query(c: &mut ProxyConfig) {
    let mut r = rule("/r");
    r.ignore_query = true;
    c.overrides.push(r);
}

fn never_cache(c: &mut ProxyConfig) {
    let mut r = rule("/r");
    r.never_cache = true;
    c.overrides.push(r);
}

fn cache_private(c: &mut ProxyConfig) {
    let mut r = rule("/r");
    r.freshness.cache_private = true;
    c.overrides.push(r);
}

fn origin_down() -> Step {
    Step::Origin(Box::new(|o: &Origin| {
        o.put(
            PATH,
            Resource::new(content(10, 9)).status(StatusCode::INTERNAL_SERVER_ERROR),
        )
    }))
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            rule: "max-age: fresh responses are hits",
            resource: res("max-age=3600"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "HIT")],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "s-maxage overrides max-age in a shared cache",
            resource: res("max-age=3600, s-maxage=0"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "no-store responses are never stored",
            resource: res("no-store"),
            config: no_config,
            steps: vec![get(&[], 200, Some("PASS")), get(&[], 200, Some("PASS"))],
            origin_requests: 2,
            conditional: Some(0),
        },
        Case {
            rule: "private responses are not stored by a shared cache",
            resource: res("private, max-age=3600"),
            config: no_config,
            steps: vec![get(&[], 200, Some("PASS")), get(&[], 200, Some("PASS"))],
            origin_requests: 2,
            conditional: Some(0),
        },
        Case {
            rule: "no-cache responses are stored but validated on every use",
            resource: res("no-cache"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "Expires in the future gives freshness",
            resource: Resource::new(content(2000, 1))
                .no_cache_headers()
                .header("expires", &http_date(3600)),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "HIT")],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "Expires in the past means stale",
            resource: Resource::new(content(2000, 1))
                .no_cache_headers()
                .header("expires", &http_date(-3600)),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "Age from upstream counts against max-age",
            resource: res("max-age=60").header("age", "120"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "heuristic freshness from Last-Modified alone",
            resource: {
                let mut r = Resource::new(content(2000, 1)).no_cache_headers();
                r.last_modified = Some(http_date(-30 * 86_400));
                r
            },
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "HIT")],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "no freshness information and no validators: fetched again",
            resource: {
                let mut r = Resource::new(content(2000, 1)).no_cache_headers();
                r.etag = None;
                r.last_modified = None;
                r
            },
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "MISS")],
            origin_requests: 2,
            conditional: Some(0),
        },
        Case {
            rule: "404 is cacheable by default",
            resource: Resource::new(content(100, 1))
                .status(StatusCode::NOT_FOUND)
                .header("cache-control", "max-age=600"),
            config: no_config,
            steps: vec![get(&[], 404, Some("MISS")), get(&[], 404, Some("HIT"))],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "301 is cacheable by default",
            resource: Resource::new(content(10, 1))
                .status(StatusCode::MOVED_PERMANENTLY)
                .header("location", "/elsewhere")
                .header("cache-control", "max-age=600"),
            config: no_config,
            steps: vec![get(&[], 301, Some("MISS")), get(&[], 301, Some("HIT"))],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "302 is stored only with explicit freshness",
            resource: Resource::new(content(10, 1))
                .no_cache_headers()
                .status(StatusCode::FOUND)
                .header("location", "/elsewhere"),
            config: no_config,
            steps: vec![get(&[], 302, Some("PASS")), get(&[], 302, Some("PASS"))],
            origin_requests: 2,
            conditional: Some(0),
        },
        Case {
            rule: "500 without explicit freshness is not stored, even with Last-Modified",
            resource: Resource::new(content(10, 1))
                .no_cache_headers()
                .status(StatusCode::INTERNAL_SERVER_ERROR),
            config: no_config,
            steps: vec![get(&[], 500, None), get(&[], 500, None)],
            origin_requests: 2,
            conditional: Some(0),
        },
        Case {
            rule: "503 with explicit freshness is stored",
            resource: Resource::new(content(10, 1))
                .no_cache_headers()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .header("cache-control", "max-age=600"),
            config: no_config,
            steps: vec![get(&[], 503, Some("MISS")), get(&[], 503, Some("HIT"))],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "400 with Expires is stored",
            resource: Resource::new(content(10, 1))
                .no_cache_headers()
                .status(StatusCode::BAD_REQUEST)
                .header("expires", &http_date(600)),
            config: no_config,
            steps: vec![get(&[], 400, Some("MISS")), get(&[], 400, Some("HIT"))],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "an undefined status marked public is heuristically fresh from Last-Modified",
            resource: Resource::new(content(10, 1))
                .no_cache_headers()
                .status(StatusCode::from_u16(599).unwrap())
                .header("cache-control", "public"),
            config: no_config,
            steps: vec![get(&[], 599, Some("MISS")), get(&[], 599, Some("HIT"))],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "an undefined status with must-understand is not stored",
            resource: Resource::new(content(10, 1))
                .no_cache_headers()
                .status(StatusCode::from_u16(599).unwrap())
                .header("cache-control", "max-age=600, must-understand"),
            config: no_config,
            steps: vec![get(&[], 599, None), get(&[], 599, None)],
            origin_requests: 2,
            conditional: Some(0),
        },
        Case {
            rule: "204 is stored and served without a body",
            resource: Resource::new(bytes::Bytes::new())
                .status(StatusCode::NO_CONTENT)
                .header("cache-control", "max-age=600"),
            config: no_config,
            steps: vec![get(&[], 204, Some("MISS")), get(&[], 204, Some("HIT"))],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "request max-age=0 forces validation",
            resource: res("max-age=3600"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                // The clock stands still between steps: at age 0 the copy is
                // exactly as old as max-age=0 allows (RFC 9111 5.2.1.1).
                Step::Advance(1),
                get(&[("cache-control", "max-age=0")], 200, Some("REVALIDATED")),
            ],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "request no-cache forces validation",
            resource: res("max-age=3600"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                get(&[("cache-control", "no-cache")], 200, Some("REVALIDATED")),
            ],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "Pragma: no-cache (HTTP/1.0) forces validation",
            resource: res("max-age=3600"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                get(&[("pragma", "no-cache")], 200, Some("REVALIDATED")),
            ],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "request min-fresh beyond the remaining lifetime forces validation",
            resource: res("max-age=60"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                get(
                    &[("cache-control", "min-fresh=600")],
                    200,
                    Some("REVALIDATED"),
                ),
            ],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "request max-stale accepts a stale response",
            resource: res("max-age=60"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                Step::Advance(120),
                get(&[("cache-control", "max-stale=3600")], 200, Some("HIT")),
            ],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "must-revalidate forbids max-stale",
            resource: res("max-age=60, must-revalidate"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                Step::Advance(120),
                get(
                    &[("cache-control", "max-stale=3600")],
                    200,
                    Some("REVALIDATED"),
                ),
            ],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "only-if-cached on a miss is 504 without asking the origin",
            resource: res("max-age=3600"),
            config: no_config,
            steps: vec![
                get(&[("cache-control", "only-if-cached")], 504, None),
                get_body(1, "MISS"),
                get(&[("cache-control", "only-if-cached")], 200, Some("HIT")),
            ],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "immutable fresh responses are hits",
            resource: res("max-age=3600, immutable"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "HIT")],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "stale-while-revalidate answers at once and refreshes behind",
            resource: res("max-age=1, stale-while-revalidate=3600"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                Step::Advance(10),
                get_body(1, "STALE"),
                Step::OriginSees(2),
            ],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "stale-while-revalidate does not stretch past its window",
            resource: res("max-age=1, stale-while-revalidate=5"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                Step::Advance(100),
                get_body(1, "REVALIDATED"),
            ],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "stale-if-error serves stale when the origin fails",
            resource: res("max-age=1, stale-if-error=3600"),
            config: no_stale_on_error,
            steps: vec![
                get_body(1, "MISS"),
                Step::Advance(10),
                origin_down(),
                get_body(1, "STALE"),
            ],
            origin_requests: 2,
            conditional: None,
        },
        Case {
            rule: "without stale-if-error (and the admin switch off) an error is passed on",
            resource: res("max-age=1"),
            config: no_stale_on_error,
            steps: vec![
                get_body(1, "MISS"),
                Step::Advance(10),
                origin_down(),
                get(&[], 500, None),
            ],
            origin_requests: 2,
            conditional: None,
        },
        Case {
            rule: "the admin switch serves stale when the origin fails",
            resource: res("max-age=1"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                Step::Advance(10),
                origin_down(),
                get_body(1, "STALE"),
            ],
            origin_requests: 2,
            conditional: None,
        },
        Case {
            rule: "must-revalidate is never served stale, even on error",
            resource: res("max-age=1, must-revalidate"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                Step::Advance(10),
                origin_down(),
                get(&[], 500, None),
            ],
            origin_requests: 2,
            conditional: None,
        },
        Case {
            rule: "a 304 keeps the body and updates the stored headers",
            resource: res("max-age=0").header("x-version", "1"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                Step::Origin(Box::new(|o: &Origin| {
                    o.put(
                        PATH,
                        Resource::new(content(2000, 1))
                            .header("cache-control", "max-age=3600")
                            .header("x-version", "2"),
                    )
                })),
                get_body(1, "REVALIDATED"),
                get_body(1, "HIT"),
            ],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "a 200 to revalidation replaces the body",
            resource: res("max-age=0"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                Step::Origin(Box::new(|o: &Origin| {
                    o.put(
                        PATH,
                        Resource::new(content(2000, 2))
                            .etag("\"v2\"")
                            .header("cache-control", "max-age=3600"),
                    )
                })),
                get_body(2, "MISS"),
                get_body(2, "HIT"),
            ],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "If-None-Match matching the stored ETag is answered 304 from the cache",
            resource: res("max-age=3600"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                get(&[("if-none-match", "\"v1\"")], 304, Some("HIT")),
                get(&[("if-none-match", "\"other\"")], 200, Some("HIT")),
            ],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "If-Modified-Since not older than Last-Modified is 304",
            resource: res("max-age=3600"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                get(
                    &[("if-modified-since", "Mon, 02 Nov 2026 10:00:00 GMT")],
                    304,
                    Some("HIT"),
                ),
            ],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "If-Modified-Since against a response without Last-Modified compares \
                   with its Date",
            resource: {
                let mut r = res("max-age=3600");
                r.last_modified = None;
                r
            },
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                get(&[("if-modified-since", &http_date(60))], 304, Some("HIT")),
                get(
                    &[("if-modified-since", &http_date(-3600))],
                    200,
                    Some("HIT"),
                ),
            ],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "If-Unmodified-Since is ignored without Last-Modified",
            resource: {
                let mut r = res("max-age=3600");
                r.last_modified = None;
                r
            },
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                get(
                    &[("if-unmodified-since", &http_date(-3600))],
                    200,
                    Some("HIT"),
                ),
            ],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "If-Match that does not match is 412",
            resource: res("max-age=3600"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                get(&[("if-match", "\"other\"")], 412, None),
            ],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "If-Range with another validator gets the whole body",
            resource: res("max-age=3600"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                get(
                    &[("range", "bytes=0-9"), ("if-range", "\"other\"")],
                    200,
                    Some("HIT"),
                ),
                get(
                    &[("range", "bytes=0-9"), ("if-range", "\"v1\"")],
                    206,
                    Some("HIT"),
                ),
            ],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "an unsatisfiable range is 416",
            resource: res("max-age=3600"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                get(&[("range", "bytes=5000-6000")], 416, None),
            ],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "Vary: * is never served from the cache",
            resource: res("max-age=3600").header("vary", "*"),
            config: no_config,
            steps: vec![get(&[], 200, Some("PASS")), get(&[], 200, Some("PASS"))],
            origin_requests: 2,
            conditional: None,
        },
        Case {
            rule: "Set-Cookie responses are not stored",
            resource: res("max-age=3600").header("set-cookie", "session=1"),
            config: no_config,
            steps: vec![get(&[], 200, Some("PASS")), get(&[], 200, Some("PASS"))],
            origin_requests: 2,
            conditional: Some(0),
        },
        Case {
            rule: "an Authorization request is not stored without public",
            resource: res("max-age=3600"),
            config: no_config,
            steps: vec![
                get(&[("authorization", "Basic dTpw")], 200, Some("PASS")),
                get(&[("authorization", "Basic dTpw")], 200, Some("PASS")),
            ],
            origin_requests: 2,
            conditional: Some(0),
        },
        Case {
            rule: "a successful POST invalidates the stored response",
            resource: res("max-age=3600"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                Step::Request("POST", PATH, Vec::new(), 200),
                get_body(1, "MISS"),
            ],
            origin_requests: 3,
            conditional: Some(0),
        },
        Case {
            rule: "DELETE's Location invalidates that URL too",
            resource: res("max-age=3600"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                Step::Origin(Box::new(|o: &Origin| {
                    o.put(
                        "/other",
                        Resource::new(content(10, 5)).header("location", PATH),
                    )
                })),
                Step::Request("DELETE", "/other", Vec::new(), 200),
                get_body(1, "MISS"),
            ],
            origin_requests: 2,
            conditional: Some(0),
        },
        Case {
            rule: "HEAD is answered from the stored headers",
            resource: res("max-age=3600"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                Step::Request("HEAD", PATH, Vec::new(), 200),
            ],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "Vary: Accept-Encoding: every client accepting gzip shares one variant",
            resource: res("max-age=3600").header("vary", "Accept-Encoding"),
            config: no_config,
            steps: vec![
                get(&[("accept-encoding", "gzip, deflate")], 200, Some("MISS")),
                get(
                    &[("accept-encoding", "gzip, deflate, br")],
                    200,
                    Some("HIT"),
                ),
                get(
                    &[("accept-encoding", "br;q=1, gzip;q=0.8")],
                    200,
                    Some("HIT"),
                ),
                get(&[], 200, Some("MISS")),
                get(&[("accept-encoding", "identity")], 200, Some("HIT")),
            ],
            origin_requests: 2,
            conditional: Some(0),
        },
        Case {
            rule: "Vary: several variants per URL, each served to its own clients",
            resource: res("max-age=3600").header("vary", "User-Agent"),
            config: no_config,
            steps: vec![
                get(&[("user-agent", "A")], 200, Some("MISS")),
                get(&[("user-agent", "B")], 200, Some("MISS")),
                get(&[("user-agent", "A")], 200, Some("HIT")),
                get(&[("user-agent", "B")], 200, Some("HIT")),
            ],
            origin_requests: 2,
            conditional: Some(0),
        },
        Case {
            rule: "Vary: a selection spelt differently (tag case, white space, split \
                   lines) is the same variant; another language order is not",
            resource: res("max-age=3600").header("vary", "Accept-Language, Foo"),
            config: no_config,
            steps: vec![
                get(
                    &[("accept-language", "en, de"), ("foo", "1, 2")],
                    200,
                    Some("MISS"),
                ),
                get(
                    &[("accept-language", " EN ,De"), ("foo", "1"), ("foo", "2")],
                    200,
                    Some("HIT"),
                ),
                get(
                    &[("accept-language", "de, en"), ("foo", "1,2")],
                    200,
                    Some("MISS"),
                ),
            ],
            origin_requests: 2,
            conditional: Some(0),
        },
        Case {
            rule: "Vary: a URL that stops varying is one entry again; the request \
                   that learns it is answered by its own fetch",
            resource: res("max-age=3600").header("vary", "User-Agent"),
            config: no_config,
            steps: vec![
                get(&[("user-agent", "A")], 200, Some("MISS")),
                // No Vary any more, nor anything that makes it reusable; an
                // empty body, so that its fill is over before the engine
                // looks again: a second fetch for the same client request
                // shows at the origin.
                Step::Origin(Box::new(|o: &Origin| {
                    let mut plain = Resource::new(content(0, 1)).no_cache_headers();
                    plain.etag = None;
                    plain.last_modified = None;
                    o.put(PATH, plain);
                })),
                get(&[("user-agent", "B")], 200, Some("MISS")),
            ],
            origin_requests: 2,
            conditional: Some(0),
        },
        Case {
            rule: "an unsafe method invalidates every variant",
            resource: res("max-age=3600").header("vary", "User-Agent"),
            config: no_config,
            steps: vec![
                get(&[("user-agent", "A")], 200, Some("MISS")),
                get(&[("user-agent", "B")], 200, Some("MISS")),
                Step::Request("PUT", PATH, Vec::new(), 200),
                get(&[("user-agent", "A")], 200, Some("MISS")),
                get(&[("user-agent", "B")], 200, Some("MISS")),
            ],
            origin_requests: 5,
            conditional: Some(0),
        },
        Case {
            rule: "admin min_fresh keeps a response without cache headers for days",
            resource: {
                let mut r = Resource::new(content(2000, 1)).no_cache_headers();
                r.last_modified = None;
                r
            },
            config: keep_for_days,
            steps: vec![get_body(1, "MISS"), get_body(1, "HIT")],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "admin min_fresh does not override the origin's no-cache",
            resource: res("no-cache"),
            config: keep_for_days,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "admin max_fresh shortens a long max-age",
            resource: res("max-age=86400"),
            config: at_most_a_minute,
            steps: vec![
                get_body(1, "MISS"),
                Step::Advance(120),
                get_body(1, "REVALIDATED"),
            ],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "admin ignore_query: one entry whatever the query",
            resource: res("max-age=3600"),
            config: ignore_query,
            steps: vec![
                get_body(1, "MISS"),
                Step::Request("GET", "/r?session=2", Vec::new(), 200),
                Step::Request("GET", "/r?session=3", Vec::new(), 200),
            ],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "admin never_cache passes everything through",
            resource: res("max-age=3600"),
            config: never_cache,
            steps: vec![get(&[], 200, Some("PASS")), get(&[], 200, Some("PASS"))],
            origin_requests: 2,
            conditional: Some(0),
        },
        Case {
            rule: "admin cache_private stores a private response",
            resource: res("private, max-age=3600"),
            config: cache_private,
            steps: vec![get_body(1, "MISS"), get_body(1, "HIT")],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "a request with an unkeyed override header (X-Forwarded-Host) neither fills nor hits the cache",
            resource: res("max-age=3600"),
            config: no_config,
            steps: vec![
                get(&[("x-forwarded-host", "evil.example")], 200, Some("PASS")),
                get(&[], 200, Some("MISS")),
                get(&[], 200, Some("HIT")),
                get(&[("x-original-url", "/admin")], 200, Some("PASS")),
            ],
            origin_requests: 3,
            conditional: Some(0),
        },
        Case {
            rule: "a request with a header the admin listed in bypass_request_headers \
                   neither fills nor hits the cache",
            resource: res("max-age=3600"),
            config: bypass_x_tenant,
            steps: vec![
                get(&[("x-tenant", "b")], 200, Some("PASS")),
                get(&[], 200, Some("MISS")),
                get(&[("x-tenant", "b")], 200, Some("PASS")),
                get(&[], 200, Some("HIT")),
            ],
            origin_requests: 3,
            conditional: Some(0),
        },
        Case {
            rule: "an Age that is not one non-negative integer makes the response stale",
            resource: res("max-age=3600").header("age", "0, 0"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "Cache-Control directive names are case-insensitive (No-Cache)",
            resource: res("max-age=10000, No-CaChE"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "max-age with white space around = is not recognised",
            resource: {
                // No Last-Modified, so no heuristic freshness either.
                let mut r = res("max-age =3600");
                r.last_modified = None;
                r
            },
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "a 304 updates Content-Type but not Content-MD5 or Content-Encoding",
            resource: res("max-age=0")
                .header("content-type", "text/plain")
                .header("content-md5", "rL0Y20zC+Fzt72VPzMSk2A==")
                .header("x-version", "1"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                Step::Origin(Box::new(|o: &Origin| {
                    o.put(
                        PATH,
                        res("max-age=3600")
                            .header("content-type", "text/plain;charset=utf-8")
                            .header("content-md5", "N7UdGUp1E+RbVvZSTy1R8g==")
                            .header("x-version", "2"),
                    )
                })),
                get_fields(
                    "REVALIDATED",
                    &[
                        ("x-version", Some("2")),
                        ("content-type", Some("text/plain;charset=utf-8")),
                        ("content-md5", Some("rL0Y20zC+Fzt72VPzMSk2A==")),
                    ],
                ),
                get_fields("HIT", &[("x-version", Some("2"))]),
            ],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "a Content-Range sent with a whole 200 is stored and served with it",
            resource: res("max-age=3600").header("content-range", "ANANANANA"),
            config: no_config,
            steps: vec![
                get_fields("MISS", &[("content-range", Some("ANANANANA"))]),
                get_fields("HIT", &[("content-range", Some("ANANANANA"))]),
            ],
            origin_requests: 1,
            conditional: None,
        },
        Case {
            rule: "Surrogate-Control max-age lets the reverse edge keep a no-store response, \
                   and is not passed on to clients",
            resource: res("no-store").header("surrogate-control", "max-age=3600;outpost"),
            config: no_config,
            steps: vec![
                get_fields("MISS", &[("surrogate-control", None)]),
                get_fields("HIT", &[("surrogate-control", None)]),
            ],
            origin_requests: 1,
            conditional: None,
        },
        Case {
            rule: "Surrogate-Control no-store keeps the reverse edge from storing",
            resource: res("max-age=3600").header("surrogate-control", "no-store"),
            config: no_config,
            steps: vec![get_body(1, "PASS"), get_body(1, "PASS")],
            origin_requests: 2,
            conditional: None,
        },
        Case {
            rule: "Surrogate-Control aimed at another surrogate is ignored",
            resource: res("max-age=3600").header("surrogate-control", "no-store;other-cdn"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "HIT")],
            origin_requests: 1,
            conditional: None,
        },
    ]
}

async fn run(case: &Case) -> Result<(), String> {
    let origin = Origin::start().await;
    origin.put(PATH, case.resource.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut config = ProxyConfig {
        origin: Some(origin.url("/").parse().unwrap()),
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        ..ProxyConfig::default()
    };
    (case.config)(&mut config);
    let store = Store::open(StoreConfig::new(dir.path(), 1 << 30)).unwrap();
    let clock = Arc::new(ManualClock::starting_at(SystemTime::now()));
    let engine: Arc<Engine> = Engine::with_clock(config, store, clock.clone());
    let server = Server::bind(engine.clone()).await.unwrap();
    let client = Client::new(server.local_addrs()[0]);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));
    let result = async {
        for (i, step) in case.steps.iter().enumerate() {
            match step {
                Step::Get(headers, expect) => {
                    let h: Vec<(&str, &str)> =
                        headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                    let reply = client.get(PATH, &h).await.map_err(|e| e.to_string())?;
                    if reply.status.as_u16() != expect.status {
                        return Err(format!(
                            "step {i}: status {} (x-cache {:?}), expected {}",
                            reply.status,
                            reply.header("x-cache"),
                            expect.status
                        ));
                    }
                    if let Some(c) = expect.cache
                        && reply.header("x-cache") != Some(c)
                    {
                        return Err(format!(
                            "step {i}: x-cache {:?}, expected {c}",
                            reply.header("x-cache")
                        ));
                    }
                    if let Some(seed) = expect.body_seed
                        && reply.body != content(2000, seed)
                    {
                        return Err(format!("step {i}: wrong body"));
                    }
                    for (name, value) in &expect.fields {
                        if reply.header(name) != *value {
                            return Err(format!(
                                "step {i}: {name} is {:?}, expected {value:?}",
                                reply.header(name)
                            ));
                        }
                    }
                    if reply.header("x-cache") == Some("HIT") && reply.header("age").is_none() {
                        return Err(format!("step {i}: a hit without Age"));
                    }
                    if reply.header("via").is_none() {
                        return Err(format!("step {i}: no Via"));
                    }
                    // The next step starts once this object's fill (of
                    // whichever variant) has recorded it complete: its last
                    // bytes reach the client a moment before.
                    if !wait_until(Duration::from_secs(10), || {
                        engine.fills.progress().is_empty()
                    })
                    .await
                    {
                        return Err(format!("step {i}: fill never finished"));
                    }
                }
                Step::Request(method, path, headers, status) => {
                    let h: Vec<(&str, &str)> =
                        headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                    let reply = client
                        .request(method, path, &h)
                        .await
                        .map_err(|e| e.to_string())?;
                    if reply.status.as_u16() != *status {
                        return Err(format!("step {i}: {method} got {}", reply.status));
                    }
                    if *method == "HEAD" && !reply.body.is_empty() {
                        return Err(format!("step {i}: HEAD with a body"));
                    }
                }
                Step::Origin(change) => change(&origin),
                Step::Advance(secs) => clock.advance(Duration::from_secs(*secs)),
                Step::OriginSees(n) => {
                    if !wait_until(Duration::from_secs(10), || origin.count(PATH) >= *n).await {
                        return Err(format!("step {i}: origin saw {}", origin.count(PATH)));
                    }
                }
            }
        }
        let reqs: Vec<_> = origin
            .requests()
            .into_iter()
            .filter(|r| r.path.split('?').next() == Some(PATH))
            .collect();
        if reqs.len() != case.origin_requests {
            return Err(format!(
                "origin saw {} requests for {PATH}, expected {}",
                reqs.len(),
                case.origin_requests
            ));
        }
        if let Some(n) = case.conditional {
            let got = reqs.iter().filter(|r| r.is_conditional()).count();
            if got != n {
                return Err(format!("{got} conditional requests, expected {n}"));
            }
        }
        Ok(())
    }
    .await;
    shutdown.cancel();
    let _ = task.await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_caching_rule_holds() {
    let mut failures = Vec::new();
    // RULE=substring runs only the matching rules (when debugging one).
    let only = std::env::var("RULE").ok();
    let cases: Vec<Case> = cases()
        .into_iter()
        .filter(|c| only.as_deref().is_none_or(|o| c.rule.contains(o)))
        .collect();
    for case in &cases {
        if let Err(e) = run(case).await {
            failures.push(format!("{}: {e}", case.rule));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rules broken:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
