//! Targeted cache-control fields for the reverse edge as a CDN (RFC 9213):
//! CDN-Cache-Control, the edge's own configurable field, and
//! Surrogate-Control.

use super::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
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
            rule: "Surrogate-Control max-age keeps the origin's private: a per-user answer is \
                   not stored",
            resource: res("private").header("surrogate-control", "max-age=3600"),
            config: no_config,
            steps: vec![get_body(1, "PASS"), get_body(1, "PASS")],
            origin_requests: 2,
            conditional: None,
        },
        Case {
            rule: "Surrogate-Control max-age does not share an answer to a request with \
                   credentials (RFC 9111 section 3.5 wants the origin's public or s-maxage)",
            resource: Resource::new(content(2000, 1)).header("surrogate-control", "max-age=3600"),
            config: no_config,
            steps: vec![
                get(&[("authorization", "Basic dTpw")], 200, Some("PASS")),
                get(&[], 200, Some("MISS")),
                get(&[], 200, Some("HIT")),
            ],
            origin_requests: 2,
            conditional: None,
        },
        Case {
            rule: "with Surrogate-Control, the browsers' stale-while-revalidate does not let \
                   the reverse edge serve stale",
            resource: res("max-age=0, stale-while-revalidate=86400")
                .header("surrogate-control", "max-age=60"),
            config: no_config,
            steps: vec![
                get_body(1, "MISS"),
                Step::Advance(120),
                get(&[], 200, Some("REVALIDATED")),
            ],
            origin_requests: 2,
            conditional: Some(1),
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
