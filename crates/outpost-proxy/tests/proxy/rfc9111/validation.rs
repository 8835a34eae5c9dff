//! Rules on validation and what is stored per URL: 304s and the fields
//! they update, conditional requests answered from the cache, ranges, Vary,
//! invalidation by unsafe methods, HEAD (RFC 9111 sections 4.1, 4.3, 4.4;
//! RFC 9110 sections 13 and 14).

use super::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
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
    ]
}
