//! The dashboard in a real headless Chromium (Debian's chromium and
//! chromium-driver), with simulated edges reporting over the real edge
//! protocol.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_protocol::{AppliedConfig, ChannelReport, FileProblem, Heartbeat, SyncResult};

use crate::dashboard_harness::{ADMIN, Browser, TestDashboard};
use crate::support::{TestEdge, channel, report};

#[tokio::test]
async fn without_chromedriver_the_harness_fails_and_names_the_package() {
    let missing = std::path::Path::new("/nonexistent/chromedriver");
    let error = match Browser::start_with(missing, std::path::Path::new("/usr/bin/chromium")).await
    {
        Ok(_) => panic!("a browser started without chromedriver"),
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains("/nonexistent/chromedriver is missing"),
        "{error}"
    );
    assert!(error.contains("chromium-driver"), "{error}");
}

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
    browser.click("header form button").await?;
    browser.text_of("#login").await?;
    // Logged out on the server: the fleet page sends us back to log in.
    browser.goto(&manager.url("/")).await?;
    browser.text_of("#login").await?;
    browser.close().await
}

/// Channel reports the simulated edges send, by site; a task sends each
/// edge's every 300 ms and marks the desired config applied, as an edge
/// that accepted it would.
type Reports = Arc<Mutex<HashMap<String, Vec<ChannelReport>>>>;

fn heartbeat_loop(
    mut edge: TestEdge,
    site: &str,
    reports: Reports,
    disk_used_gib: u64,
) -> tokio::task::JoinHandle<()> {
    const GIB: u64 = 1 << 30;
    let site = site.to_owned();
    tokio::spawn(async move {
        loop {
            let channels = reports
                .lock()
                .unwrap()
                .get(&site)
                .cloned()
                .unwrap_or_default();
            let finished = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64 - 600)
                .ok();
            let channels = channels
                .into_iter()
                .map(|mut ch| {
                    ch.last_finished = finished;
                    ch
                })
                .collect();
            let mut report = report(channels);
            report.disk_used = disk_used_gib * GIB;
            report.disk_limit = 500 * GIB;
            report.wan_bytes_in = disk_used_gib * GIB / 3;
            report.lan_bytes_out = disk_used_gib * GIB * 4;
            report.bytes_saved = report.lan_bytes_out - report.wan_bytes_in;
            report.hit_ratio_bytes = 0.917;
            let sent = edge
                .heartbeat_with(Heartbeat {
                    report,
                    config: AppliedConfig {
                        applied_version: edge.applied,
                        rejected: None,
                    },
                    action_results: vec![],
                })
                .await;
            if let Ok(reply) = sent {
                edge.applied = reply.desired_config_version;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

fn failed_channel(name: &str) -> ChannelReport {
    let mut ch = channel(name, 4, 3);
    ch.syncing = false;
    ch.files_syncing = 0;
    ch.files_failed = 1;
    ch.last_result = Some(SyncResult::Errors);
    ch.problems = vec![FileProblem {
        url: "http://files.example/office/setup.cab".into(),
        error: "origin answered 404".into(),
        at: 1,
    }];
    ch.missing = vec!["setup.cab".into()];
    ch
}

/// Screenshots go to a temp dir; with OUTPOST_DOC_SCREENSHOTS=1 also to
/// docs/img, for the docs.
fn screenshot_paths(dir: &tempfile::TempDir, name: &str) -> Vec<PathBuf> {
    let mut paths = vec![dir.path().join(name)];
    if std::env::var_os("OUTPOST_DOC_SCREENSHOTS").is_some() {
        paths.push(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../docs/img")
                .join(name),
        );
    }
    paths
}

async fn screenshot(browser: &Browser, dir: &tempfile::TempDir, name: &str) -> anyhow::Result<()> {
    for path in screenshot_paths(dir, name) {
        browser.screenshot(&path).await?;
        let png = std::fs::read(&path)?;
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{name}: not a real screenshot"
        );
    }
    Ok(())
}

#[tokio::test]
async fn an_admin_publishes_a_channel_and_follows_it_to_every_site_in_chromium()
-> anyhow::Result<()> {
    let manager = TestDashboard::start().await?;
    let reports: Reports = Arc::default();
    let mut heartbeats = Vec::new();
    for (site, host, disk) in [
        ("bergen", "pc-bergen-01", 212),
        ("oslo", "pc-oslo-01", 96),
        ("tromso", "pc-tromso-01", 461),
    ] {
        let edge = manager.enrol(site, host).await?;
        heartbeats.push(heartbeat_loop(edge, site, reports.clone(), disk));
    }
    // Group membership goes out with the next publish.
    let cli = outpost_manager::Actor::local_cli();
    manager.manager.put_group("west", 10, &cli)?;
    for site in ["bergen", "tromso"] {
        manager
            .manager
            .set_site_groups(site, &["west".into()], &cli)?;
    }
    let shots = tempfile::tempdir()?;
    let browser = Browser::start().await?;

    browser.goto(&manager.url("/config?scope=global")).await?;
    browser.fill("#name", ADMIN.0).await?;
    browser.fill("#password", ADMIN.1).await?;
    browser.click("#login").await?;
    // The login came back to the page asked for.
    browser.wait_for_text("h1", "Desired config").await?;

    browser
        .fill(
            "#toml",
            "[[channel]]\nname = \"office\"\nsource = \"http://files.example/office/\"\n",
        )
        .await?;
    browser.click("#save").await?;
    browser
        .wait_for_text("#message", "Draft of global saved")
        .await?;
    browser.wait_for_text("#diff", "+name = \"office\"").await?;
    browser
        .fill("#comment", "Office 2024 for every site")
        .await?;
    browser.click("#publish").await?;
    browser
        .wait_for_text("#message", "Published version 1.")
        .await?;
    browser
        .wait_for_text("#history", "Office 2024 for every site")
        .await?;
    browser.wait_for_text("#history", "user:alice").await?;
    screenshot(&browser, &shots, "dashboard-config.png").await?;

    {
        let mut reports = reports.lock().unwrap();
        reports.insert("bergen".into(), vec![channel("office", 4, 2)]);
        reports.insert("oslo".into(), vec![channel("office", 4, 4)]);
        reports.insert("tromso".into(), vec![failed_channel("office")]);
    }
    browser.click("a[href=\"/readiness\"]").await?;
    browser
        .wait_for_text("td[data-site=\"bergen\"]", "syncing 50 %")
        .await?;
    browser
        .wait_for_text("td[data-site=\"oslo\"]", "complete")
        .await?;
    browser
        .wait_for_text("td[data-site=\"tromso\"]", "origin answered 404")
        .await?;
    browser
        .wait_for_text("tr[data-channel=\"office\"]", "no")
        .await?;
    screenshot(&browser, &shots, "dashboard-readiness.png").await?;

    // Bergen finishes: the page's refresh script shows it without a reload.
    reports
        .lock()
        .unwrap()
        .insert("bergen".into(), vec![channel("office", 4, 4)]);
    browser
        .wait_for_text("td[data-site=\"bergen\"]", "complete")
        .await?;

    // One package: present at oslo, failed at tromso, with the reason.
    browser.fill("#path", "setup.cab").await?;
    browser.click("#ask").await?;
    browser
        .wait_for_text("td[data-site=\"tromso\"]", "failed 0/1 files")
        .await?;
    browser
        .wait_for_text("td[data-site=\"oslo\"]", "complete")
        .await?;

    browser.click("th a[href=\"/sites/bergen\"]").await?;
    browser.wait_for_text("#site-name", "bergen").await?;
    browser.wait_for_text("#site-state", "up").await?;
    browser.wait_for_text("#channels", "office").await?;
    browser
        .wait_for_text("#site-summary", "pc-bergen-01")
        .await?;
    browser.wait_for_text("#site-summary", "v1 applied").await?;
    browser.wait_for_text("#origins", "global").await?;
    browser
        .wait_for_text("#rendered", "files.example/office")
        .await?;
    screenshot(&browser, &shots, "dashboard-site.png").await?;

    browser.click("a[href=\"/\"]").await?;
    browser.wait_for_text("#fleet-counts", "3 edges").await?;
    browser
        .wait_for_text("tr[data-site=\"tromso\"]", "v1 applied")
        .await?;
    browser
        .wait_for_text("tr[data-site=\"oslo\"]", "up")
        .await?;
    screenshot(&browser, &shots, "dashboard-fleet.png").await?;

    for task in heartbeats {
        task.abort();
    }
    browser.close().await
}
