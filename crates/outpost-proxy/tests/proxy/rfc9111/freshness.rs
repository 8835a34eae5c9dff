//! Rules on how long a stored response is fresh: Cache-Control and
//! Expires (with the HTTP-date grammar), Age, heuristics, which statuses
//! are stored (RFC 9111 sections 3, 4.2, 5.1 to 5.3; RFC 9110 section 5.6.7).

use super::*;

pub(super) fn cases() -> Vec<Case> {
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
    ]
}
