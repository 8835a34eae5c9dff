//! Rules the admin adds on top of the origin's: [[override]] freshness,
//! never_cache, cache_private, ignore_query, and the request headers that
//! bypass the cache.

use super::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
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
    ]
}
