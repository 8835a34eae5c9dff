//! Security, what one client's answer can leak to another: private and
//! credentialed answers, cookies, forwarding headers, variant floods, and
//! a PC's POST against a pinned file.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use outpost_testkit::{Origin, Resource, content};
use tokio::net::TcpListener;

use crate::common::{Edge, loopback_allowed};

/// An origin whose answer to each request is computed by `respond`.
async fn scripted_origin<F>(respond: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(&Request<hyper::body::Incoming>) -> (Duration, Response<Full<Bytes>>)
        + Send
        + Sync
        + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let respond = Arc::new(respond);
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let respond = respond.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let (delay, resp) = respond(&req);
                    async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_answer_goes_only_to_the_client_it_was_fetched_for() {
    // The origin answers each user with their own page, private, after a
    // while: long enough for a second client to collapse onto the first.
    let (origin, _) = scripted_origin(|req| {
        let user = req
            .headers()
            .get("cookie")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("anonymous")
            .to_string();
        let mut resp = Response::new(Full::new(Bytes::from(format!("page of {user}"))));
        resp.headers_mut()
            .insert("cache-control", "private".parse().unwrap());
        if user != "anonymous" {
            resp.headers_mut()
                .insert("set-cookie", format!("{user}; session=1").parse().unwrap());
        }
        (Duration::from_millis(400), resp)
    })
    .await;
    let edge = Edge::start_in_tempdir(loopback_allowed()).await;
    let mut races = Vec::new();
    for i in 0..50 {
        let client = edge.client();
        races.push(tokio::spawn(async move {
            let url = format!("http://{origin}/account/{i}");
            let alice = {
                let url = url.clone();
                tokio::spawn(async move { client.get(&url, &[("cookie", "user=alice")]).await })
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
            let bob = client.get(&url, &[]).await.unwrap();
            let alice = alice.await.unwrap().unwrap();
            (alice, bob)
        }));
    }
    for race in races {
        let (alice, bob) = race.await.unwrap();
        assert_eq!(alice.body, "page of user=alice");
        assert_eq!(bob.status, 200);
        assert_eq!(bob.body, "page of anonymous", "B received A's page");
        assert!(bob.header("set-cookie").is_none(), "B received A's cookie");
    }
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_credentials_gets_its_own_answer_unless_the_origin_shares_it() {
    let origin = Origin::start().await;
    origin.put(
        "/report",
        Resource::new(content(1000, 1)).header("cache-control", "max-age=600"),
    );
    origin.put(
        "/public",
        Resource::new(content(1000, 2)).header("cache-control", "public, max-age=600"),
    );
    let edge = Edge::start_in_tempdir(loopback_allowed()).await;
    let client = edge.client();
    for path in ["/report", "/public"] {
        let reply = client.get(&origin.url(path), &[]).await.unwrap();
        assert_eq!(reply.status, 200);
    }
    let auth = [("authorization", "Basic Ym9iOnB3")];
    let reply = client.get(&origin.url("/report"), &auth).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        origin.count("/report"),
        2,
        "a stored response is not shared with credentials"
    );
    let reply = client
        .request("HEAD", &origin.url("/report"), &auth)
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(origin.count("/report"), 3, "nor with a HEAD");
    let reply = client.get(&origin.url("/public"), &auth).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(origin.count("/public"), 1, "public: shared");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_set_on_a_304_is_not_served_to_other_clients() {
    let origin = Origin::start().await;
    let body = content(1000, 1);
    origin.put(
        "/app.msi",
        Resource::new(body.clone())
            .etag("\"v1\"")
            .header("cache-control", "max-age=0"),
    );
    let edge = Edge::start_in_tempdir(loopback_allowed()).await;
    let client = edge.client();
    let url = origin.url("/app.msi");
    assert_eq!(client.get(&url, &[]).await.unwrap().status, 200);
    // The origin now sets a session cookie on its 304 to whoever asks.
    origin.put(
        "/app.msi",
        Resource::new(body.clone())
            .etag("\"v1\"")
            .header("cache-control", "max-age=3600")
            .header("set-cookie", "session=for-the-first-pc"),
    );
    let reply = client.get(&url, &[]).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(origin.count("/app.msi"), 2, "revalidated");
    let reply = client.get(&url, &[]).await.unwrap();
    assert_eq!(origin.count("/app.msi"), 2, "a hit now");
    assert_eq!(reply.body, body);
    assert!(
        reply.header("set-cookie").is_none(),
        "another PC got the first PC's cookie"
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_make_a_request_bypass_the_cache() {
    let origin = Origin::start().await;
    origin.put(
        "/index.html",
        Resource::new(content(500, 1)).header("cache-control", "max-age=600"),
    );
    let edge = Edge::start_in_tempdir(loopback_allowed()).await;
    let client = edge.client();
    let url = origin.url("/index.html");
    for (name, value) in [
        ("x-forwarded-proto", "http"),
        ("forwarded", "proto=http"),
        ("x-forwarded-ssl", "off"),
        ("front-end-https", "off"),
        ("x-url-scheme", "http"),
        ("x-forwarded-uri", "/other"),
        ("x-original-url", "/other"),
        ("x-rewrite-url", "/other"),
    ] {
        let reply = client.get(&url, &[(name, value)]).await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-cache"), Some("PASS"), "{name}");
    }
    assert_eq!(origin.count("/index.html"), 8);
    let reply = client.get(&url, &[]).await.unwrap();
    assert_eq!(
        reply.header("x-cache"),
        Some("MISS"),
        "nothing was stored from a request with a forwarding header"
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_per_url_are_capped() {
    let origin = Origin::start().await;
    origin.put(
        "/ua",
        Resource::new(content(200, 1))
            .header("cache-control", "max-age=600")
            .header("vary", "User-Agent"),
    );
    let edge = Edge::start_in_tempdir(loopback_allowed()).await;
    let url = origin.url("/ua");
    let base = outpost_http::CacheKey::from_uri(&url.parse().unwrap()).unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (client, url, next) = (edge.client(), url.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= 10_000 {
                    return;
                }
                let ua = format!("agent-{i}-{}", "x".repeat(1000));
                let reply = client.get(&url, &[("user-agent", &ua)]).await.unwrap();
                assert_eq!(reply.status, 200);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let known = edge.engine.variant_count(&base);
    assert!(
        known <= outpost_proxy::engine::MAX_VARIANTS,
        "{known} variants kept"
    );
    let stored = edge.engine.store.list(100_000).unwrap().len();
    assert!(
        stored <= outpost_proxy::engine::MAX_VARIANTS,
        "{stored} objects stored"
    );
    // A variant already stored is still a hit.
    let reply = edge
        .client()
        .get(
            &url,
            &[("user-agent", &format!("agent-0-{}", "x".repeat(1000)))],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_that_turns_a_response_private_is_not_shared_with_waiters() {
    // The page is public at first; later the origin answers conditionals
    // with a private 304 carrying a field for the requesting user.
    let private_now = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = private_now.clone();
    let (origin, _) = scripted_origin(move |req| {
        let user = req
            .headers()
            .get("cookie")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("anonymous")
            .to_string();
        let conditional = req.headers().contains_key("if-none-match");
        if !flag.load(Ordering::SeqCst) {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"the page")));
            resp.headers_mut()
                .insert("cache-control", "max-age=0".parse().unwrap());
            resp.headers_mut().insert("etag", "\"v1\"".parse().unwrap());
            return (Duration::ZERO, resp);
        }
        let mut resp = Response::new(Full::new(if conditional {
            Bytes::new()
        } else {
            Bytes::from(format!("the page for {user}"))
        }));
        if conditional {
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
        }
        resp.headers_mut()
            .insert("cache-control", "private, max-age=3600".parse().unwrap());
        resp.headers_mut().insert("etag", "\"v1\"".parse().unwrap());
        resp.headers_mut().insert(
            "authentication-info",
            format!("nextnonce=\"{user}\"").parse().unwrap(),
        );
        (Duration::from_millis(400), resp)
    })
    .await;
    let edge = Edge::start_in_tempdir(loopback_allowed()).await;
    let client = edge.client();
    let url = format!("http://{origin}/account");
    assert_eq!(client.get(&url, &[]).await.unwrap().status, 200);
    private_now.store(true, Ordering::SeqCst);
    let alice = {
        let url = url.clone();
        tokio::spawn(async move { client.get(&url, &[("cookie", "user=alice")]).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let bob = client.get(&url, &[]).await.unwrap();
    let alice = alice.await.unwrap().unwrap();
    assert_eq!(alice.status, 200);
    assert_eq!(bob.status, 200);
    assert!(
        !bob.header("authentication-info")
            .is_some_and(|v| v.contains("alice")),
        "B got the field the origin sent for A: {:?}",
        bob.headers
    );
    // Nor is the copy kept for everyone before served any more.
    let later = client.get(&url, &[]).await.unwrap();
    assert!(
        !later
            .header("authentication-info")
            .is_some_and(|v| v.contains("alice")),
        "{:?}",
        later.headers
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_from_a_pc_does_not_drop_a_pinned_file() {
    let origin = Origin::start().await;
    origin.put("/pkgs/app.msi", Resource::new(content(10_000, 1)));
    origin.put("/pkgs/other.msi", Resource::new(content(10_000, 2)));
    let edge = Edge::start_in_tempdir(loopback_allowed()).await;
    let client = edge.client();
    for path in ["/pkgs/app.msi", "/pkgs/other.msi"] {
        let url = origin.url(path);
        assert_eq!(client.get(&url, &[]).await.unwrap().status, 200);
        let key = outpost_http::CacheKey::from_uri(&url.parse().unwrap()).unwrap();
        assert!(edge.completes(&key, Duration::from_secs(5)).await);
    }
    // The admin pins one (as a channel does).
    let pinned =
        outpost_http::CacheKey::from_uri(&origin.url("/pkgs/app.msi").parse().unwrap()).unwrap();
    assert!(edge.engine.store.set_pinned(&pinned, true).unwrap());
    // A web page makes a PC POST to both URLs; the origin answers 200.
    for path in ["/pkgs/app.msi", "/pkgs/other.msi"] {
        let reply = client
            .request("POST", &origin.url(path), &[])
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
    }
    let reply = client.get(&origin.url("/pkgs/app.msi"), &[]).await.unwrap();
    assert_eq!(
        reply.header("x-cache"),
        Some("HIT"),
        "the pinned file stays"
    );
    let reply = client
        .get(&origin.url("/pkgs/other.msi"), &[])
        .await
        .unwrap();
    assert_eq!(
        reply.header("x-cache"),
        Some("MISS"),
        "an ordinary entry is invalidated as RFC 9111 says"
    );
    edge.stop().await;
}
