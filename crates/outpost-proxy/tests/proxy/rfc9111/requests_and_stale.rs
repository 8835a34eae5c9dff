//! Rules on what a request can ask of the cache (max-age, no-cache,
//! min-fresh, max-stale, only-if-cached) and on serving stale responses
//! (stale-while-revalidate, stale-if-error, and where they close: RFC 9111
//! sections 4.2.4 and 5.2.1, RFC 5861).

use super::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
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
    ]
}
