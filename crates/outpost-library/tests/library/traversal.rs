//! Paths that try to leave the library, over the wire: every spelling is
//! refused, nothing outside the view is served, and the origin is never
//! asked for anything.

use crate::support::*;

#[tokio::test]
async fn traversal_in_every_form_is_refused_and_reaches_nothing() {
    let site = Site::synced().await;
    // A file the store holds but no channel lists: what a traversal would
    // be after.
    site.origin.put(
        "/secret.txt",
        outpost_testkit::Resource::new(bytes::Bytes::from_static(b"TOP SECRET")),
    );
    let via_proxy = outpost_testkit::Client::new(site.proxy)
        .get(&site.origin.url("/secret.txt"), &[])
        .await
        .unwrap();
    assert_eq!(via_proxy.body.as_ref(), b"TOP SECRET");
    let origin_requests = site.origin.requests().len();

    let host = site.origin.addr().to_string();
    for path in [
        "/packages/../secret.txt".to_string(),
        "/packages/%2e%2e/secret.txt".into(),
        "/packages/%2E%2E/%2E%2E/secret.txt".into(),
        "/packages/..%2fsecret.txt".into(),
        "/packages/%2e%2e%2fsecret.txt".into(),
        "/packages/..%5csecret.txt".into(),
        "/packages/..\\secret.txt".into(),
        "/packages/%00/secret.txt".into(),
        "/packages/%c0%ae%c0%ae/secret.txt".into(),
        "/packages/%252e%252e/secret.txt".into(),
        "/packages//secret.txt".into(),
        "/%2e%2e/secret.txt".into(),
        format!("/packages/{host}/secret.txt"),
        format!("/{host}/secret.txt"),
        "/../../../../etc/passwd".into(),
        "/packages/../../../../etc/passwd".into(),
    ] {
        for method in ["GET", "PROPFIND"] {
            let resp = raw(site.addr, &request(method, &path, &[("Depth", "1")], "")).await;
            assert!(
                resp.status == 400 || resp.status == 404,
                "{method} {path}: {} {}",
                resp.status,
                resp.text()
            );
            assert!(!resp.text().contains("TOP SECRET"), "{method} {path}");
            assert!(!resp.text().contains("root:"), "{method} {path}");
        }
    }
    assert_eq!(
        site.origin.requests().len(),
        origin_requests,
        "the origin was never asked"
    );
    // The refusals are a client error, with the reason.
    let resp = get(&site, "/packages/%2e%2e/secret.txt", &[]).await;
    assert_eq!(resp.status, 400);
    assert!(resp.text().contains("'.' or '..'"), "{}", resp.text());
}
