//! The dashboard in a real headless Chromium.

use crate::dashboard_harness::{ADMIN, Browser, TestDashboard};

#[tokio::test]
async fn a_person_logs_in_and_out_in_chromium() -> anyhow::Result<()> {
    let manager = TestDashboard::start().await?;
    let browser = Browser::start().await?;
    browser.goto(&manager.url("/")).await?;
    // Not logged in: the login form.
    browser.text_of("#login").await?;
    browser.fill("#name", ADMIN.0).await?;
    browser.fill("#password", "wrong-password").await?;
    browser.click("#login").await?;
    browser
        .wait_for_text("#message", "Wrong name or password.")
        .await?;
    browser.fill("#password", ADMIN.1).await?;
    browser.click("#login").await?;
    browser.wait_for_text("#user", "alice (admin)").await?;
    let shot = tempfile::tempdir()?;
    browser.screenshot(&shot.path().join("home.png")).await?;
    let png = std::fs::read(shot.path().join("home.png"))?;
    assert!(png.starts_with(b"\x89PNG"), "not a PNG screenshot");
    browser.click("header form button").await?;
    browser.text_of("#login").await?;
    browser.close().await
}
