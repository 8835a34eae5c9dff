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

/// `offset_secs` from now in the obsolete RFC 850 form
/// (`Thursday, 18-Aug-50 02:01:18 GMT`).
fn rfc850_date(offset_secs: i64) -> String {
    let imf = http_date(offset_secs);
    let long = [
        ("Mon", "Monday"),
        ("Tue", "Tuesday"),
        ("Wed", "Wednesday"),
        ("Thu", "Thursday"),
        ("Fri", "Friday"),
        ("Sat", "Saturday"),
        ("Sun", "Sunday"),
    ]
    .into_iter()
    .find(|(short, _)| imf.starts_with(short))
    .map(|(_, long)| long)
    .unwrap();
    // `Thu, 18 Aug 2050 02:01:18 GMT`
    format!(
        "{long}, {}-{}-{} {} GMT",
        &imf[5..7],
        &imf[8..11],
        &imf[14..16],
        &imf[17..25]
    )
}

/// `offset_secs` from now in asctime form (`Thu Aug  8 02:01:18 2050`).
fn asctime_date(offset_secs: i64) -> String {
    let imf = http_date(offset_secs);
    let day = imf[5..7].trim_start_matches('0');
    format!(
        "{} {} {day:>2} {} {}",
        &imf[0..3],
        &imf[8..11],
        &imf[17..25],
        &imf[12..16]
    )
}

/// `res` with `name` sent on several field lines.
fn with_lines(mut res: Resource, name: &str, values: &[&str]) -> Resource {
    res.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    for v in values {
        res.headers.push((name.to_string(), v.to_string()));
    }
    res
}

/// A response whose freshness can only come from its `Expires` (no
/// Cache-Control, no Last-Modified for a heuristic).
fn expires(value: &str) -> Resource {
    let mut r = Resource::new(content(2000, 1))
        .no_cache_headers()
        .header("expires", value);
    r.last_modified = None;
    r
}

fn lower_case_month(imf: &str) -> String {
    format!(
        "{}{}{}",
        &imf[..8],
        imf[8..11].to_ascii_lowercase(),
        &imf[11..]
    )
}

/// `Thu, 18 Aug 50 02:01:18 GMT`
fn two_digit_year(imf: &str) -> String {
    format!("{}{}", &imf[..12], &imf[14..])
}

/// `Thu, 18 Aug 2050 2:01:18 GMT` (for an hour before 10), else the hour
/// with a leading space dropped: either way not the grammar.
fn one_digit_hour(imf: &str) -> String {
    format!("{}{}", &imf[..17], &imf[18..])
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

fn own_targeted_field(c: &mut ProxyConfig) {
    c.targeted_cache_control = Some(http::HeaderName::from_static("outpost-cache-control"));
}

/// `res` with a `CDN-Cache-Control` field.
fn cdn(cache_control: &str, cdn_cache_control: &str) -> Resource {
    res(cache_control).header("cdn-cache-control", cdn_cache_control)
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
            rule: "Expires in the obsolete RFC 850 form gives freshness",
            resource: expires(&rfc850_date(3600)),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "HIT")],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "Expires in asctime form gives freshness",
            resource: expires(&asctime_date(3600)),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "HIT")],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "Expires that is not an HTTP-date (doubled spaces) means already expired",
            resource: expires(&http_date(3600).replacen(" 2", "  2", 1)),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "Expires that is not an HTTP-date (UTC for GMT) means already expired",
            resource: expires(&http_date(3600).replace("GMT", "UTC")),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "Expires that is not an HTTP-date (no zone) means already expired",
            resource: expires(&http_date(3600).replace(" GMT", "")),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "Expires that is not an HTTP-date (lower-case month) means already expired",
            resource: expires(&lower_case_month(&http_date(3600))),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "Expires that is not an HTTP-date (trailing garbage) means already expired",
            resource: expires(&format!("{} x", http_date(3600))),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "Expires that is not an HTTP-date (two-digit year) means already expired",
            resource: expires(&two_digit_year(&http_date(3600))),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "Expires that is not an HTTP-date (no comma) means already expired",
            resource: expires(&http_date(3600).replacen(",", "", 1)),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "Expires that is not an HTTP-date (1-digit hour) means already expired",
            resource: expires(&one_digit_hour(&http_date(3600))),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "Expires on two field lines that differ means already expired",
            resource: with_lines(
                expires(""),
                "expires",
                &[&http_date(3600), &http_date(3601)],
            ),
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
            rule: "stale-close: s-maxage forbids serving stale on error (proxy-revalidate), \
                   the admin switch notwithstanding",
            resource: res("max-age=1, s-maxage=1").header("age", "10"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), origin_down(), get(&[], 500, None)],
            origin_requests: 2,
            conditional: None,
        },
        Case {
            rule: "stale-close: proxy-revalidate is never served stale on error",
            resource: res("max-age=1, proxy-revalidate").header("age", "10"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), origin_down(), get(&[], 500, None)],
            origin_requests: 2,
            conditional: None,
        },
        Case {
            rule: "stale-close: no-cache is never served stale on error",
            resource: res("no-cache"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), origin_down(), get(&[], 500, None)],
            origin_requests: 2,
            conditional: None,
        },
        Case {
            rule: "stale-close: s-maxage with an explicit stale-if-error serves stale in its window",
            resource: res("max-age=1, s-maxage=1, stale-if-error=3600").header("age", "10"),
            config: no_stale_on_error,
            steps: vec![get_body(1, "MISS"), origin_down(), get_body(1, "STALE")],
            origin_requests: 2,
            conditional: None,
        },
        Case {
            rule: "stale-close: an elapsed stale-if-error window closes the admin switch",
            resource: res("max-age=1, stale-if-error=5").header("age", "100"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), origin_down(), get(&[], 500, None)],
            origin_requests: 2,
            conditional: None,
        },
        Case {
            rule: "stale-close: a request's elapsed stale-if-error window closes the admin switch",
            resource: res("max-age=1").header("age", "100"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                origin_down(),
                get(&[("cache-control", "stale-if-error=5")], 500, None),
            ],
            origin_requests: 2,
            conditional: None,
        },
        Case {
            rule: "stale-close: must-revalidate forbids stale-while-revalidate",
            resource: res("max-age=1, must-revalidate, stale-while-revalidate=3600")
                .header("age", "10"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "stale-close: proxy-revalidate forbids stale-while-revalidate",
            resource: res("max-age=1, proxy-revalidate, stale-while-revalidate=3600")
                .header("age", "10"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "stale-close: no-cache forbids stale-while-revalidate",
            resource: res("no-cache, stale-while-revalidate=3600"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "s-maxage with stale-while-revalidate answers at once and refreshes behind",
            resource: res("s-maxage=1, stale-while-revalidate=3600").header("age", "10"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                get_body(1, "STALE"),
                Step::OriginSees(2),
            ],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "the stale-while-revalidate window counts from the end of freshness, \
                   not from storage",
            resource: res("max-age=1, stale-while-revalidate=60").header("age", "120"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
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
            rule: "Age: an invalid value (non-numeric: `abc`) is ignored, not taken as old",
            resource: res("max-age=3600").header("age", "abc"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "HIT")],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "Age: an invalid value (negative: `-7200`) is ignored, not taken as old",
            resource: res("max-age=3600").header("age", "-7200"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "HIT")],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "Age: an invalid value (a float: `7200.0`) is ignored, not taken as old",
            resource: res("max-age=3600").header("age", "7200.0"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "HIT")],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "Age: an invalid value (a float: `1.5`) is ignored, not taken as old",
            resource: res("max-age=3600").header("age", "1.5"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "HIT")],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "Age: an invalid value (a prefix: `+5`) is ignored, not taken as old",
            resource: res("max-age=3600").header("age", "+5"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "HIT")],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "Age: an invalid value (a prefix: `a5`) is ignored, not taken as old",
            resource: res("max-age=3600").header("age", "a5"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "HIT")],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "Age: an invalid value (empty: ``) is ignored, not taken as old",
            resource: res("max-age=3600").header("age", ""),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "HIT")],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "Age: an invalid value (a parameter: `7200;foo=bar`) is ignored, not taken as old",
            resource: res("max-age=3600").header("age", "7200;foo=bar"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "HIT")],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "Age: a list uses its first member (0, 7200 is fresh)",
            resource: res("max-age=3600").header("age", "0, 7200"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "HIT")],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "Age: a list uses its first member (0, 0 is fresh)",
            resource: res("max-age=3600").header("age", "0, 0"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "HIT")],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "Age: two field lines use the first (0, then 7200: fresh)",
            resource: with_lines(res("max-age=3600"), "age", &["0", "7200"]),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "HIT")],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "Age: a list uses its first member (7200, 0 is stale)",
            resource: res("max-age=3600").header("age", "7200, 0"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "Age: two field lines use the first (7200, then 0: stale)",
            resource: with_lines(res("max-age=3600"), "age", &["7200", "0"]),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "Age: a value past 2^31 is very old, not ignored",
            resource: res("max-age=3600").header("age", "99999999999999999999999"),
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
            rule: "CDN-Cache-Control max-age lets the reverse edge keep a no-store response, \
                   and is not passed on to clients",
            resource: cdn("no-store", "max-age=3600"),
            config: no_config,
            steps: vec![
                get_fields(
                    "MISS",
                    &[
                        ("cdn-cache-control", None),
                        ("cache-control", Some("no-store")),
                    ],
                ),
                get_fields("HIT", &[("cdn-cache-control", None)]),
            ],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "CDN-Cache-Control no-store keeps the reverse edge from storing",
            resource: cdn("max-age=3600", "no-store"),
            config: no_config,
            steps: vec![get_body(1, "PASS"), get_body(1, "PASS")],
            origin_requests: 2,
            conditional: Some(0),
        },
        Case {
            rule: "CDN-Cache-Control private keeps the reverse edge from storing",
            resource: cdn("max-age=3600", "private"),
            config: no_config,
            steps: vec![get_body(1, "PASS"), get_body(1, "PASS")],
            origin_requests: 2,
            conditional: Some(0),
        },
        Case {
            rule: "CDN-Cache-Control no-cache makes the reverse edge validate every use",
            resource: cdn("max-age=10000", "no-cache"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "CDN-Cache-Control max-age=0 wins over a long Cache-Control max-age and Expires",
            resource: cdn("max-age=3600", "max-age=0").header("expires", &http_date(3600)),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "CDN-Cache-Control max-age: a past Expires is ignored",
            resource: Resource::new(content(2000, 1))
                .no_cache_headers()
                .header("cdn-cache-control", "max-age=3600")
                .header("expires", &http_date(-3600)),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "HIT")],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "CDN-Cache-Control s-maxage gives the reverse edge freshness",
            resource: cdn("max-age=0", "s-maxage=3600"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "HIT")],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "CDN-Cache-Control: Age counts against its max-age",
            resource: cdn("max-age=100000", "max-age=3600").header("age", "7200"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "REVALIDATED")],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "CDN-Cache-Control directive names are read case-insensitively (MaX-aGe)",
            resource: cdn("no-store", "MaX-aGe=3600"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), get_body(1, "HIT")],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "CDN-Cache-Control must-revalidate forbids serving stale on error",
            resource: cdn("max-age=1", "max-age=1, must-revalidate").header("age", "10"),
            config: no_config,
            steps: vec![get_body(1, "MISS"), origin_down(), get(&[], 500, None)],
            origin_requests: 2,
            conditional: None,
        },
        Case {
            rule: "CDN-Cache-Control stale-while-revalidate answers at once and refreshes behind",
            resource: cdn("max-age=1", "max-age=1, stale-while-revalidate=3600")
                .header("age", "10"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                get_body(1, "STALE"),
                Step::OriginSees(2),
            ],
            origin_requests: 2,
            conditional: Some(1),
        },
        Case {
            rule: "CDN-Cache-Control stale-if-error serves stale when the origin fails",
            resource: cdn("max-age=1", "max-age=1, stale-if-error=3600").header("age", "10"),
            config: no_stale_on_error,
            steps: vec![get_body(1, "MISS"), origin_down(), get_body(1, "STALE")],
            origin_requests: 2,
            conditional: None,
        },
        Case {
            rule: "an invalid CDN-Cache-Control (a string for max-age) is ignored whole",
            resource: cdn("no-store", "max-age=\"10000\""),
            config: no_config,
            steps: vec![get_body(1, "PASS"), get_body(1, "PASS")],
            origin_requests: 2,
            conditional: Some(0),
        },
        Case {
            rule: "an invalid CDN-Cache-Control (not a dictionary) is ignored whole",
            resource: cdn("no-store", "max-age=10000, &&&&&"),
            config: no_config,
            steps: vec![get_body(1, "PASS"), get_body(1, "PASS")],
            origin_requests: 2,
            conditional: Some(0),
        },
        Case {
            rule: "an invalid CDN-Cache-Control (space before =) is ignored whole",
            resource: cdn("no-store", "max-age =10000"),
            config: no_config,
            steps: vec![get_body(1, "PASS"), get_body(1, "PASS")],
            origin_requests: 2,
            conditional: Some(0),
        },
        Case {
            rule: "the edge's own targeted field wins over CDN-Cache-Control, \
                   and neither is passed on to clients",
            resource: cdn("no-store", "no-store").header("outpost-cache-control", "max-age=3600"),
            config: own_targeted_field,
            steps: vec![
                get_fields(
                    "MISS",
                    &[("outpost-cache-control", None), ("cdn-cache-control", None)],
                ),
                get_fields("HIT", &[("outpost-cache-control", None)]),
            ],
            origin_requests: 1,
            conditional: Some(0),
        },
        Case {
            rule: "the edge's own targeted field no-store keeps it from storing \
                   what CDN-Cache-Control allows",
            resource: cdn("max-age=3600", "max-age=3600")
                .header("outpost-cache-control", "no-store"),
            config: own_targeted_field,
            steps: vec![get_body(1, "PASS"), get_body(1, "PASS")],
            origin_requests: 2,
            conditional: Some(0),
        },
        Case {
            rule: "without the setting, another CDN's targeted field is not the edge's",
            resource: cdn("max-age=3600", "max-age=3600")
                .header("outpost-cache-control", "no-store"),
            config: no_config,
            steps: vec![
                get_fields("MISS", &[("outpost-cache-control", Some("no-store"))]),
                get_body(1, "HIT"),
            ],
            origin_requests: 1,
            conditional: Some(0),
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

/// A fake origin on a raw socket (the testkit origin cannot send 1xx): every
/// request gets `103 Early Hints` and `102 Processing` before a storable
/// 200. Returns its address and a count of the requests it answered.
async fn interim_origin() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        count.fetch_add(1, Ordering::SeqCst);
                        let answer = b"HTTP/1.1 103 Early Hints\r\n\
                            Link: </style.css>; rel=preload; as=style\r\n\r\n\
                            HTTP/1.1 102 Processing\r\n\r\n\
                            HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\
                            Cache-Control: max-age=3600\r\nETag: \"e1\"\r\n\r\nhello";
                        if socket.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, answered)
}

/// Sends `request` on a new connection and reads until the final response
/// (the first non-1xx head) and its 5-byte body are in: everything the
/// client saw, as text.
async fn raw_exchange(edge: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut socket = tokio::net::TcpStream::connect(edge).await.unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&seen).to_string();
            let final_head = text
                .match_indices("HTTP/1.")
                .map(|(at, _)| at)
                .find(|&at| !text[at + 9..].starts_with('1'));
            if let Some(at) = final_head
                && let Some(end) = text[at..].find("\r\n\r\n")
                && text.len() >= at + end + 4 + 5
            {
                return text;
            }
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return text,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("no final response within 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_responses_reach_the_client_that_caused_them_and_are_never_stored() {
    use std::sync::atomic::Ordering;
    let (origin, answered) = interim_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let config = ProxyConfig {
        origin: Some(format!("http://{origin}/").parse().unwrap()),
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        ..ProxyConfig::default()
    };
    let store = Store::open(StoreConfig::new(dir.path(), 1 << 30)).unwrap();
    let engine: Arc<Engine> = Engine::new(config, store);
    let server = Server::bind(engine.clone()).await.unwrap();
    let edge = server.local_addrs()[0];
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));

    let miss = raw_exchange(edge, "GET /r HTTP/1.1\r\nHost: site\r\n\r\n").await;
    let early = miss.find("HTTP/1.1 103 Early Hints\r\n");
    let processing = miss.find("HTTP/1.1 102 Processing\r\n");
    let ok = miss.find("HTTP/1.1 200 OK\r\n");
    assert!(
        early.is_some() && early < processing && processing < ok,
        "the 1xx come first, in order:\n{miss}"
    );
    let hints = &miss[early.unwrap()..processing.unwrap()];
    assert!(
        hints
            .to_ascii_lowercase()
            .contains("link: </style.css>; rel=preload; as=style"),
        "the hint's fields are passed on:\n{hints}"
    );
    assert!(miss.ends_with("hello"), "{miss}");
    assert!(
        wait_until(Duration::from_secs(10), || engine
            .fills
            .progress()
            .is_empty())
        .await,
        "fill never finished"
    );

    let hit = raw_exchange(edge, "GET /r HTTP/1.1\r\nHost: site\r\n\r\n").await;
    assert!(
        hit.starts_with("HTTP/1.1 200 OK\r\n"),
        "a hit has no 1xx:\n{hit}"
    );
    assert!(hit.to_ascii_lowercase().contains("x-cache: hit"), "{hit}");
    assert_eq!(answered.load(Ordering::SeqCst), 1);

    // An HTTP/1.0 client must not get a 1xx (RFC 9110 section 15.2), even
    // when its request reaches the origin, which sends them.
    let old = raw_exchange(
        edge,
        "GET /r HTTP/1.0\r\nHost: site\r\nCache-Control: no-cache\r\n\r\n",
    )
    .await;
    assert_eq!(answered.load(Ordering::SeqCst), 2, "the origin was asked");
    assert!(
        old.starts_with("HTTP/1.1 200 OK\r\n"),
        "no 1xx for HTTP/1.0:\n{old}"
    );

    shutdown.cancel();
    let _ = task.await;
}

/// Not an RFC rule, but what an admin reads when the origin is down: the
/// 502 says why (refused, and where), not "client error (Connect)".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_origin_says_why_in_its_502() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    for (origin, why) in [
        (
            format!("http://127.0.0.1:{port}/"),
            format!("connection refused (127.0.0.1:{port})"),
        ),
        (
            "http://outpost-test.invalid/".to_string(),
            "DNS lookup failed (outpost-test.invalid:80)".to_string(),
        ),
    ] {
        let config = ProxyConfig {
            origin: Some(origin.parse().unwrap()),
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            ..ProxyConfig::default()
        };
        let store = Store::open(StoreConfig::new(dir.path(), 1 << 30)).unwrap();
        let engine: Arc<Engine> = Engine::new(config, store);
        let server = Server::bind(engine).await.unwrap();
        let client = Client::new(server.local_addrs()[0]);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        let reply = client.get(PATH, &[]).await.unwrap();
        let body = String::from_utf8_lossy(&reply.body).to_string();
        shutdown.cancel();
        let _ = task.await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{body}");
        assert!(body.contains(&why), "{origin}: {body}");
    }
}

/// A forward proxy is not the origin's CDN: `CDN-Cache-Control` neither
/// stores a `no-store` response nor is taken away from the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_mode_ignores_cdn_cache_control_and_passes_it_on() {
    let origin = Origin::start().await;
    origin.put(PATH, cdn("no-store", "max-age=3600"));
    let dir = tempfile::tempdir().unwrap();
    let config = ProxyConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        internal_destinations: vec!["127.0.0.0/8".parse().unwrap()],
        ..ProxyConfig::default()
    };
    let store = Store::open(StoreConfig::new(dir.path(), 1 << 30)).unwrap();
    let engine: Arc<Engine> = Engine::new(config, store);
    let server = Server::bind(engine).await.unwrap();
    let client = Client::new(server.local_addrs()[0]);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));
    let url = origin.url(PATH);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let reply = client.get(&url, &[]).await.unwrap();
        seen.push((
            reply.status,
            reply.header("x-cache").map(str::to_string),
            reply.header("cdn-cache-control").map(str::to_string),
        ));
    }
    shutdown.cancel();
    let _ = task.await;
    let passed = (
        StatusCode::OK,
        Some("PASS".to_string()),
        Some("max-age=3600".to_string()),
    );
    assert_eq!(seen, vec![passed.clone(), passed]);
    assert_eq!(origin.count(PATH), 2);
}
