//! Login, sessions, throttling, CSRF and headers over real HTTP.

use crate::dashboard_harness::{ADMIN, TestDashboard, VIEWER, Web};

#[tokio::test]
async fn login_sets_a_strict_http_only_cookie_and_opens_the_dashboard() -> anyhow::Result<()> {
    let manager = TestDashboard::start().await?;
    let mut web = Web::new(manager.addr);

    let before = web.get("/").await?;
    assert_eq!(before.status, 303);
    assert_eq!(before.location(), "/login");

    let reply = web.login(ADMIN.0, ADMIN.1).await?;
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert_eq!(reply.location(), "/");
    let cookie = reply.header("set-cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    // Served over plain HTTP here: a Secure cookie would never come back.
    assert!(!cookie.contains("Secure"), "{cookie}");
    // Behind a TLS-terminating proxy that says so, it is Secure.
    let proxied = web
        .post_with(
            "/login",
            &[("name", ADMIN.0), ("password", ADMIN.1)],
            &[("x-forwarded-proto", "https")],
        )
        .await?;
    assert!(
        proxied.header("set-cookie").contains("; Secure"),
        "{:?}",
        proxied.headers
    );

    let home = web.get("/").await?;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("alice (admin)"), "{}", home.body);
    // Logged in already: the login page sends on.
    assert_eq!(web.get("/login?next=/audit").await?.location(), "/audit");
    Ok(())
}

#[tokio::test]
async fn a_page_asked_for_before_login_is_shown_after_it() -> anyhow::Result<()> {
    let manager = TestDashboard::start().await?;
    let web = Web::new(manager.addr);
    let reply = web.get("/?x=1").await?;
    assert_eq!(reply.location(), "/login?next=%2F%3Fx%3D1");
    let form = web.get(reply.location()).await?;
    assert!(
        form.body.contains("name=\"next\" value=\"/?x=1\""),
        "{}",
        form.body
    );

    // A next that leaves the site is dropped.
    let reply = web
        .post(
            "/login",
            &[
                ("name", ADMIN.0),
                ("password", ADMIN.1),
                ("next", "//evil.example/"),
            ],
        )
        .await?;
    assert_eq!(reply.location(), "/");
    Ok(())
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_name_get_the_same_answer() -> anyhow::Result<()> {
    let manager = TestDashboard::start().await?;
    let mut web = Web::new(manager.addr);
    let wrong = web.login(ADMIN.0, "not-the-password").await?;
    let unknown = web.login("mallory", "not-the-password").await?;
    for reply in [&wrong, &unknown] {
        assert_eq!(reply.status, 401);
        assert!(
            reply.body.contains("Wrong name or password."),
            "{}",
            reply.body
        );
        assert!(reply.headers.get("set-cookie").is_none());
    }
    assert_eq!(
        wrong.body.replace("alice", "NAME"),
        unknown.body.replace("mallory", "NAME")
    );
    Ok(())
}

#[tokio::test]
async fn five_failures_in_a_minute_lock_the_name_even_for_the_right_password() -> anyhow::Result<()>
{
    let manager = TestDashboard::start().await?;
    let mut web = Web::new(manager.addr);
    for _ in 0..5 {
        assert_eq!(web.login(ADMIN.0, "guess-guess-guess").await?.status, 401);
    }
    let locked = web.login(ADMIN.0, ADMIN.1).await?;
    assert_eq!(locked.status, 429);
    assert!(
        locked.body.contains("Too many failed logins"),
        "{}",
        locked.body
    );
    assert!(web.cookie.is_none());
    // Another name is not affected.
    assert_eq!(web.login(VIEWER.0, VIEWER.1).await?.status, 303);
    Ok(())
}

#[tokio::test]
async fn a_post_without_or_with_a_wrong_csrf_token_is_refused() -> anyhow::Result<()> {
    let manager = TestDashboard::start().await?;
    let mut web = Web::new(manager.addr);
    web.login(ADMIN.0, ADMIN.1).await?;
    let token = web.csrf("/").await?;

    let missing = web.post("/logout", &[]).await?;
    assert_eq!(missing.status, 403);
    assert!(missing.body.contains("CSRF token"), "{}", missing.body);
    let wrong = web.post("/logout", &[("csrf", &"0".repeat(64))]).await?;
    assert_eq!(wrong.status, 403);
    // Still logged in: neither request did anything.
    assert_eq!(web.get("/").await?.status, 200);

    // Another user's token does not work either.
    let mut other = Web::new(manager.addr);
    other.login(VIEWER.0, VIEWER.1).await?;
    let theirs = other.csrf("/").await?;
    assert_ne!(theirs, token);
    assert_eq!(web.post("/logout", &[("csrf", &theirs)]).await?.status, 403);

    let right = web.post("/logout", &[("csrf", &token)]).await?;
    assert_eq!(right.status, 303);
    assert!(right.header("set-cookie").contains("Max-Age=0"));
    // The session is over on the server, not only in the browser.
    assert_eq!(web.get("/").await?.status, 303);
    Ok(())
}

#[tokio::test]
async fn a_post_from_another_origin_is_refused_even_with_the_token() -> anyhow::Result<()> {
    let manager = TestDashboard::start().await?;
    let mut web = Web::new(manager.addr);
    web.login(ADMIN.0, ADMIN.1).await?;
    let token = web.csrf("/").await?;
    let reply = web
        .post_with(
            "/logout",
            &[("csrf", &token)],
            &[("origin", "http://evil.example")],
        )
        .await?;
    assert_eq!(reply.status, 403);
    assert!(reply.body.contains("another site"), "{}", reply.body);
    let login = web
        .post_with(
            "/login",
            &[("name", ADMIN.0), ("password", ADMIN.1)],
            &[("referer", "http://evil.example/phish")],
        )
        .await?;
    assert_eq!(login.status, 403);
    assert_eq!(web.get("/").await?.status, 200);
    Ok(())
}

#[tokio::test]
async fn pages_carry_security_headers_and_are_not_cached() -> anyhow::Result<()> {
    let manager = TestDashboard::start().await?;
    let web = Web::new(manager.addr);
    for path in ["/login", "/"] {
        let reply = web.get(path).await?;
        let csp = reply.header("content-security-policy");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(reply.header("x-frame-options"), "DENY");
        assert_eq!(reply.header("cache-control"), "no-store");
        assert_eq!(reply.header("x-content-type-options"), "nosniff");
    }
    let script = web.get("/assets/dashboard.js").await?;
    assert_eq!(script.status, 200);
    assert!(script.header("content-type").starts_with("text/javascript"));
    Ok(())
}

#[tokio::test]
async fn a_forged_or_malformed_cookie_is_no_session() -> anyhow::Result<()> {
    let manager = TestDashboard::start().await?;
    let mut web = Web::new(manager.addr);
    for cookie in [
        format!("outpost_session={}", "a".repeat(64)),
        "outpost_session=' OR 1=1 --".to_owned(),
        "outpost_session=".to_owned(),
    ] {
        web.cookie = Some(cookie);
        assert_eq!(web.get("/").await?.status, 303);
    }
    Ok(())
}

#[tokio::test]
async fn a_name_or_password_no_user_can_have_is_refused_like_a_wrong_one() -> anyhow::Result<()> {
    let manager = TestDashboard::start().await?;
    let mut web = Web::new(manager.addr);
    let long_name = "a".repeat(100_000);
    let long_password = "p".repeat(5_000);
    for (name, password) in [
        (long_name.as_str(), ADMIN.1),
        ("<script>", ADMIN.1),
        (ADMIN.0, long_password.as_str()),
    ] {
        let reply = web.login(name, password).await?;
        assert_eq!(reply.status, 401);
        assert!(reply.body.contains("Wrong name or password."));
        assert!(!reply.body.contains("<script>"), "{}", reply.body);
    }
    // Not counted against the real name.
    assert_eq!(web.login(ADMIN.0, ADMIN.1).await?.status, 303);
    Ok(())
}
