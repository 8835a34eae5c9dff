//! Freshness and storability from arbitrary request and response headers
//! (Cache-Control, Expires, Date, Age, Last-Modified, Vary, Pragma ...):
//! the policy never panics, and a stored head's freshness is consistent.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use outpost_http::policy::policy_for;

fn headers(text: &str, into: &mut http::HeaderMap) {
    for line in text.split('\n') {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name.trim().as_bytes()),
                http::HeaderValue::from_str(value.trim()),
            )
        {
            into.append(n, v);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (req_text, resp_text) = text.split_once("\n\n").unwrap_or(("", text));
    let (mut req, ()) = http::Request::builder()
        .uri("http://origin.test/pkg.msi")
        .body(())
        .unwrap()
        .into_parts();
    req.headers.insert(http::header::HOST, http::HeaderValue::from_static("origin.test"));
    headers(req_text, &mut req.headers);
    // Every kind of status: error statuses with explicit freshness are
    // judged through a stand-in status.
    const STATUSES: [u16; 10] = [200, 203, 204, 301, 302, 400, 404, 500, 503, 599];
    let status = STATUSES[data.len() % STATUSES.len()];
    let (mut resp, ()) = http::Response::builder().status(status).body(()).unwrap().into_parts();
    headers(resp_text, &mut resp.headers);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    for headers in [&req.headers, &resp.headers] {
        let _ = outpost_http::cache_control::directives(headers).count();
        let _ = outpost_http::cache_control::seconds(headers, "max-age");
        let _ = outpost_http::cache_control::forbids_stale(headers);
    }
    if let Some(names) = outpost_http::vary::vary_names(&resp.headers) {
        let mut canonical = req.headers.clone();
        outpost_http::vary::canonicalize_request(&mut canonical, &names);
        let base = outpost_http::CacheKey::from_stored("http://origin.test/pkg.msi".into());
        let _ = outpost_http::vary::variant_key(&base, &names, &req.headers);
    }
    let policy = policy_for(&req, &resp, now);
    let _ = policy.is_storable();
    let ttl = policy.time_to_live(now);
    let _ = policy.before_request(&req, now + ttl);
    let head = outpost_store::StoredHead::new(resp.status, resp.headers.clone(), policy);
    let _ = head.age(now);
    let _ = head.is_fresh(now);
});
