//! HTTP caching rules (RFC 9111, RFC 5861), one case per rule: what the
//! origin sends, what clients ask in order, what each client sees and how
//! many requests reach the origin. Each case runs against a fresh edge and
//! origin; a failing rule names itself.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::StatusCode;
use outpost_proxy::{ManualClock, ProxyConfig};
use outpost_store::StoreConfig;
use outpost_testkit::{Origin, Resource, content, wait_until};

use crate::common::{Edge, override_for};

mod exchanges;
mod freshness;
mod overrides;
mod requests_and_stale;
mod targeted;
mod validation;

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

fn bypass_x_tenant(c: &mut ProxyConfig) {
    c.bypass_request_headers = vec![http::HeaderName::from_static("x-tenant")];
}

fn keep_for_days(c: &mut ProxyConfig) {
    let mut r = override_for("/r*");
    r.freshness.min_fresh = Some(Duration::from_secs(2 * 86_400));
    c.overrides.push(r);
}

fn at_most_a_minute(c: &mut ProxyConfig) {
    let mut r = override_for("/r");
    r.freshness.max_fresh = Some(Duration::from_secs(60));
    c.overrides.push(r);
}

fn ignore_query(c: &mut ProxyConfig) {
    let mut r = override_for("/r");
    r.ignore_query = true;
    c.overrides.push(r);
}

fn never_cache(c: &mut ProxyConfig) {
    let mut r = override_for("/r");
    r.never_cache = true;
    c.overrides.push(r);
}

fn cache_private(c: &mut ProxyConfig) {
    let mut r = override_for("/r");
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

/// Every rule table, by topic; the interpreter above runs them all alike.
fn cases() -> Vec<Case> {
    [
        freshness::cases(),
        requests_and_stale::cases(),
        validation::cases(),
        overrides::cases(),
        targeted::cases(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

async fn run(case: &Case) -> Result<(), String> {
    let origin = Origin::start().await;
    origin.put(PATH, case.resource.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut config = ProxyConfig {
        origin: Some(origin.url("/").parse().unwrap()),
        ..ProxyConfig::default()
    };
    (case.config)(&mut config);
    let clock = Arc::new(ManualClock::starting_at(SystemTime::now()));
    let store = StoreConfig::new(dir.path(), 1 << 30);
    let edge = Edge::start_with_clock(config, store, clock.clone())
        .await
        .owning(dir);
    let engine = &edge.engine;
    let client = edge.client();
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
    edge.stop().await;
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
