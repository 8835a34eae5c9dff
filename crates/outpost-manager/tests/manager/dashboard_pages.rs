//! The dashboard's pages over HTTP: roles, the config editor's round trip
//! (draft, diff, publish, refusal with check-config's messages, rollback),
//! the audit log, and escaping of everything an edge reports.

use outpost_protocol::{AppliedConfig, FileProblem, Heartbeat};

use crate::dashboard_harness::{ADMIN, TestDashboard, VIEWER, Web};
use crate::support::{channel, report};

const OFFICE: &str = "[[channel]]\nname = \"office\"\nsource = \"http://files.example/office/\"\n";

async fn logged_in(manager: &TestDashboard, who: (&str, &str)) -> anyhow::Result<(Web, String)> {
    let mut web = Web::new(manager.addr);
    assert_eq!(web.login(who.0, who.1).await?.status, 303);
    let csrf = web.csrf("/").await?;
    Ok((web, csrf))
}

#[tokio::test]
async fn a_viewer_reads_every_page_but_changes_nothing() -> anyhow::Result<()> {
    let manager = TestDashboard::start().await?;
    manager.enrol("bergen", "bergen.example").await?;
    let (web, csrf) = logged_in(&manager, VIEWER).await?;
    for path in [
        "/",
        "/readiness",
        "/alerts",
        "/config",
        "/audit",
        "/sites/bergen",
    ] {
        let page = web.get(path).await?;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(!page.body.contains("action=\"/config/publish\""), "{path}");
        assert!(!page.body.contains("/revoke\""), "{path}");
    }
    assert_eq!(web.get("/tokens").await?.status, 403);
    let refusals = [
        ("/config/draft", vec![("scope", "global"), ("toml", OFFICE)]),
        ("/config/publish", vec![("comment", "sneaky")]),
        ("/config/rollback", vec![("version", "1")]),
        ("/tokens", vec![("label", "mine"), ("hours", "1")]),
        ("/sites/bergen/revoke", vec![]),
        ("/sites/bergen/sync", vec![("channel", "office")]),
        (
            "/actions",
            vec![
                ("kind", "purge"),
                ("target", "http://x/a"),
                ("scope", "global"),
            ],
        ),
    ];
    for (path, mut form) in refusals {
        form.push(("csrf", &csrf));
        let reply = web.post(path, &form).await?;
        assert_eq!(reply.status, 403, "{path}: {}", reply.body);
        assert!(reply.body.contains("your role is viewer"), "{path}");
    }
    assert_eq!(manager.manager.published_version(), 0);
    assert_eq!(
        manager
            .manager
            .scope_text(&outpost_manager::Scope::Global)?,
        ""
    );
    assert_eq!(
        manager.manager.edge("bergen")?.state,
        outpost_protocol::EdgeState::Up
    );
    Ok(())
}

#[tokio::test]
async fn an_admin_saves_a_draft_sees_the_diff_publishes_and_rolls_back() -> anyhow::Result<()> {
    let manager = TestDashboard::start().await?;
    let (web, csrf) = logged_in(&manager, ADMIN).await?;

    let saved = web
        .post(
            "/config/draft",
            &[
                ("csrf", &csrf),
                ("scope", "global"),
                ("toml", &OFFICE.replace('\n', "\r\n")),
            ],
        )
        .await?;
    assert_eq!(saved.status, 303, "{}", saved.body);
    assert_eq!(saved.location(), "/config?scope=global&saved=1");
    let page = web.get(saved.location()).await?;
    assert!(page.body.contains("Draft of global saved"), "{}", page.body);
    assert!(
        page.body
            .contains("<span class=\"diff-add\">+name = &quot;office&quot;</span>"),
        "{}",
        page.body
    );

    let published = web
        .post(
            "/config/publish",
            &[("csrf", &csrf), ("comment", "office to everyone")],
        )
        .await?;
    assert_eq!(published.location(), "/config?published=1");
    assert_eq!(manager.manager.published_version(), 1);
    let page = web.get("/config?published=1").await?;
    assert!(page.body.contains("Published version 1."), "{}", page.body);
    assert!(page.body.contains("The drafts are what is published."));
    assert!(page.body.contains("office to everyone"));

    // A second version, then back to the first: a third version with the
    // first one's content.
    web.post(
        "/config/draft",
        &[("csrf", &csrf), ("scope", "global"), ("toml", "")],
    )
    .await?;
    web.post(
        "/config/publish",
        &[("csrf", &csrf), ("comment", "nothing")],
    )
    .await?;
    assert_eq!(manager.manager.published_version(), 2);
    let rolled = web
        .post("/config/rollback", &[("csrf", &csrf), ("version", "1")])
        .await?;
    assert_eq!(rolled.location(), "/config?published=3");
    assert_eq!(
        manager
            .manager
            .scope_text(&outpost_manager::Scope::Global)?,
        OFFICE
    );

    let audit = web.get("/audit").await?;
    for needle in ["user:alice", "login", "publish", "office to everyone"] {
        assert!(audit.body.contains(needle), "{needle}: {}", audit.body);
    }
    Ok(())
}

#[tokio::test]
async fn a_config_check_config_refuses_is_not_published_and_its_message_is_shown()
-> anyhow::Result<()> {
    let manager = TestDashboard::start().await?;
    let (web, csrf) = logged_in(&manager, ADMIN).await?;
    let broken = web
        .post(
            "/config/draft",
            &[
                ("csrf", &csrf),
                ("scope", "global"),
                ("toml", "[[channel]\nname ="),
            ],
        )
        .await?;
    assert_eq!(broken.status, 400);
    assert!(broken.body.contains("not valid TOML"), "{}", broken.body);
    // What was typed is still in the editor.
    assert!(
        broken.body.contains("[[channel]\nname =</textarea>"),
        "{}",
        broken.body
    );

    let bogus = format!("{OFFICE}bogus = 1\n");
    web.post(
        "/config/draft",
        &[("csrf", &csrf), ("scope", "global"), ("toml", &bogus)],
    )
    .await?;
    let refused = web
        .post("/config/publish", &[("csrf", &csrf), ("comment", "try")])
        .await?;
    assert!(refused.status.is_client_error(), "{}", refused.status);
    assert!(refused.body.contains("Not published"), "{}", refused.body);
    assert!(
        refused.body.contains("unknown key `bogus`"),
        "{}",
        refused.body
    );
    assert_eq!(manager.manager.published_version(), 0);
    Ok(())
}

#[tokio::test]
async fn what_an_edge_reports_is_shown_escaped_everywhere() -> anyhow::Result<()> {
    let manager = TestDashboard::start().await?;
    let (web, csrf) = logged_in(&manager, ADMIN).await?;
    web.post(
        "/config/draft",
        &[("csrf", &csrf), ("scope", "global"), ("toml", OFFICE)],
    )
    .await?;
    web.post("/config/publish", &[("csrf", &csrf), ("comment", "v1")])
        .await?;

    let edge = manager
        .enrol("bergen", "<script>alert('host')</script>")
        .await?;
    let mut office = channel("office", 4, 2);
    office.missing = vec!["<img src=x onerror=alert(1)>.msi".into()];
    office.files_failed = 1;
    office.problems = vec![FileProblem {
        url: "http://files.example/office/<script>alert('url')</script>".into(),
        error: "digest mismatch <script>alert('err')</script>".into(),
        at: 1,
    }];
    let mut report = report(vec![office]);
    report.version = "<script>alert('version')</script>".into();
    edge.heartbeat_with(Heartbeat {
        report,
        config: AppliedConfig {
            applied_version: 0,
            rejected: Some(outpost_protocol::ConfigRejection {
                version: 1,
                error: "<script>alert('rejected')</script>".into(),
            }),
        },
        action_results: vec![],
    })
    .await?;

    // A site name with markup never gets in at all.
    let refused = manager.enrol("<script>", "x").await;
    assert!(refused.is_err(), "a site named <script> was enrolled");

    for path in [
        "/",
        "/sites/bergen",
        "/readiness",
        "/readiness?channel=office&path=%3Cscript%3E",
    ] {
        let page = web.get(path).await?;
        assert_eq!(page.status, 200, "{path}");
        for raw in ["<script>alert", "<img src=x"] {
            assert!(
                !page.body.contains(raw),
                "{path} holds {raw}: {}",
                page.body
            );
        }
    }
    let site = web.get("/sites/bergen").await?;
    for shown in [
        "&lt;script&gt;alert(&#39;host&#39;)&lt;/script&gt;",
        "&lt;script&gt;alert(&#39;version&#39;)&lt;/script&gt;",
        "&lt;img src=x onerror=alert(1)&gt;.msi",
        "digest mismatch &lt;script&gt;",
        "&lt;script&gt;alert(&#39;rejected&#39;)&lt;/script&gt;",
    ] {
        assert!(site.body.contains(shown), "{shown}: {}", site.body);
    }
    Ok(())
}

#[tokio::test]
async fn a_silent_edge_shows_as_down_with_an_alert_on_the_fleet_alerts_and_site_pages()
-> anyhow::Result<()> {
    let manager = TestDashboard::start().await?;
    let edge = manager.enrol("bergen", "pc-bergen").await?;
    edge.heartbeat(vec![]).await?;
    let (web, _) = logged_in(&manager, VIEWER).await?;
    // Heartbeat 1 s: down after 2.5 s without one; the alert opens at the
    // next evaluation.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let alerts = web.get("/alerts").await?;
        if alerts.body.contains("site_down") {
            assert!(alerts.body.contains(">open</span>"), "{}", alerts.body);
            assert!(
                alerts.body.contains("href=\"/sites/bergen\""),
                "{}",
                alerts.body
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no site_down alert: {}",
            alerts.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let fleet = web.get("/").await?;
    assert!(
        fleet
            .body
            .contains("<span class=\"state down\">down</span>"),
        "{}",
        fleet.body
    );
    let site = web.get("/sites/bergen").await?;
    assert!(site.body.contains("site_down"), "{}", site.body);
    assert!(
        site.body.contains("id=\"site-state\">down</span>"),
        "{}",
        site.body
    );
    Ok(())
}

#[tokio::test]
async fn an_admin_makes_and_revokes_a_join_token_revokes_an_edge_and_starts_a_sync()
-> anyhow::Result<()> {
    let manager = TestDashboard::start().await?;
    let (web, csrf) = logged_in(&manager, ADMIN).await?;

    let made = web
        .post(
            "/tokens",
            &[
                ("csrf", &csrf),
                ("label", "branch <rollout>"),
                ("hours", "24"),
            ],
        )
        .await?;
    assert_eq!(made.status, 200, "{}", made.body);
    let start = made.body.find("ojt_").expect("the new token is shown");
    let token = made.body[start..start + 4 + 64].to_owned();
    assert!(
        made.body.contains("branch &lt;rollout&gt;"),
        "{}",
        made.body
    );
    // Shown once: the list holds the label, never the secret.
    let list = web.get("/tokens").await?;
    assert!(!list.body.contains(&token));
    assert!(list.body.contains(">valid</span>"), "{}", list.body);
    let id = manager
        .manager
        .join_tokens()?
        .into_iter()
        .find(|t| t.label == "branch <rollout>")
        .expect("token listed")
        .id;
    let revoked = web
        .post(&format!("/tokens/{id}/revoke"), &[("csrf", &csrf)])
        .await?;
    assert_eq!(revoked.location(), "/tokens");
    assert!(web.get("/tokens").await?.body.contains(">revoked</span>"));

    // An edge: a sync started from its page reaches it with its next
    // heartbeat; revoked from its page, it is refused.
    web.post(
        "/config/draft",
        &[("csrf", &csrf), ("scope", "global"), ("toml", OFFICE)],
    )
    .await?;
    web.post("/config/publish", &[("csrf", &csrf), ("comment", "v1")])
        .await?;
    let edge = manager.enrol("bergen", "pc-bergen").await?;
    edge.heartbeat(vec![channel("office", 2, 2)]).await?;
    let sync = web
        .post(
            "/sites/bergen/sync",
            &[("csrf", &csrf), ("channel", "office")],
        )
        .await?;
    assert_eq!(sync.location(), "/sites/bergen");
    let reply = edge.heartbeat(vec![channel("office", 2, 2)]).await?;
    assert_eq!(
        reply.actions.first().map(|a| a.action.clone()),
        Some(outpost_protocol::FleetAction::Sync {
            channel: "office".into()
        })
    );
    let revoke = web.post("/sites/bergen/revoke", &[("csrf", &csrf)]).await?;
    assert_eq!(revoke.location(), "/sites/bergen");
    assert!(
        edge.heartbeat(vec![]).await.is_err(),
        "a revoked edge was answered"
    );
    let page = web.get("/sites/bergen").await?;
    assert!(
        page.body.contains("id=\"site-state\">revoked</span>"),
        "{}",
        page.body
    );
    let audit = web.get("/audit").await?;
    for needle in ["join-token create", "revoke", "user:alice"] {
        assert!(audit.body.contains(needle), "{needle}: {}", audit.body);
    }
    Ok(())
}

#[tokio::test]
async fn an_action_started_on_the_actions_page_shows_each_sites_result() -> anyhow::Result<()> {
    let manager = TestDashboard::start().await?;
    let bergen = manager.enrol("bergen", "pc-bergen").await?;
    let oslo = manager.enrol("oslo", "pc-oslo").await?;
    let (web, csrf) = logged_in(&manager, ADMIN).await?;
    let started = web
        .post(
            "/actions",
            &[
                ("csrf", &csrf),
                ("kind", "purge"),
                ("target", "http://files.example/office/setup.msi"),
                ("scope", "global"),
            ],
        )
        .await?;
    assert_eq!(started.location(), "/actions", "{}", started.body);
    let page = web.get("/actions").await?;
    assert!(
        page.body
            .contains("purge http://files.example/office/setup.msi"),
        "{}",
        page.body
    );
    assert!(page.body.contains("2 pending"), "{}", page.body);

    // Each edge gets the order with its heartbeat and reports back.
    for (edge, ok, detail) in [
        (&bergen, true, "purged"),
        (&oslo, false, "no such object <x>"),
    ] {
        let order = edge.heartbeat(vec![]).await?.actions[0].clone();
        edge.heartbeat_with(Heartbeat {
            report: report(vec![]),
            config: AppliedConfig::default(),
            action_results: vec![outpost_protocol::ActionResult {
                id: order.id,
                ok,
                detail: detail.into(),
            }],
        })
        .await?;
    }
    let page = web.get("/actions").await?;
    assert!(page.body.contains("1 done"), "{}", page.body);
    assert!(page.body.contains("1 failed"), "{}", page.body);
    assert!(
        page.body.contains("no such object &lt;x&gt;"),
        "{}",
        page.body
    );

    let bad = web
        .post(
            "/actions",
            &[
                ("csrf", &csrf),
                ("kind", "sync"),
                ("target", "office"),
                ("scope", "group:nobody"),
            ],
        )
        .await?;
    assert_eq!(bad.status, 400, "{}", bad.body);
    Ok(())
}

#[tokio::test]
async fn a_site_page_lists_the_config_versions_applied_and_the_syncs_finished() -> anyhow::Result<()>
{
    let manager = TestDashboard::start().await?;
    let (web, _) = logged_in(&manager, VIEWER).await?;
    let edge = manager.enrol("bergen", "pc-bergen").await?;
    let mut syncing = channel("office", 2, 1);
    syncing.last_finished = Some(1_000);
    edge.heartbeat(vec![syncing]).await?;
    let mut done = channel("office", 2, 2);
    done.last_finished = Some(2_000);
    edge.heartbeat_with(Heartbeat {
        report: report(vec![done]),
        config: AppliedConfig {
            applied_version: 0,
            rejected: Some(outpost_protocol::ConfigRejection {
                version: 4,
                error: "line 2: unknown key `bogus`".into(),
            }),
        },
        action_results: vec![],
    })
    .await?;
    // Events reach the database with the next flush (about 2 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let page = web.get("/sites/bergen").await?;
        if page.body.contains("id=\"events\"") {
            assert!(
                page.body.contains("office: ok (2/2 files)"),
                "{}",
                page.body
            );
            assert!(
                page.body
                    .contains("refused version 4: line 2: unknown key `bogus`"),
                "{}",
                page.body
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no history: {}",
            page.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test]
async fn groups_made_on_the_config_page_order_the_scopes_once_published() -> anyhow::Result<()> {
    let manager = TestDashboard::start().await?;
    let edge = manager.enrol("bergen", "pc-bergen").await?;
    edge.heartbeat(vec![]).await?;
    let (web, csrf) = logged_in(&manager, ADMIN).await?;
    for (name, priority) in [("west", "10"), ("pilot", "20")] {
        let made = web
            .post(
                "/config/group",
                &[("csrf", &csrf), ("name", name), ("priority", priority)],
            )
            .await?;
        assert_eq!(made.location(), "/config?groups=1", "{}", made.body);
    }
    let set = web
        .post(
            "/config/site-groups",
            &[
                ("csrf", &csrf),
                ("site", "bergen"),
                ("groups", "pilot, west"),
            ],
        )
        .await?;
    assert_eq!(set.location(), "/config?groups=1", "{}", set.body);
    let unknown = web
        .post(
            "/config/site-groups",
            &[("csrf", &csrf), ("site", "bergen"), ("groups", "nosuch")],
        )
        .await?;
    assert_eq!(unknown.status, 400);
    assert!(unknown.body.contains("no group nosuch"), "{}", unknown.body);

    for (scope, text) in [
        (
            "group:west",
            "[[channel]]\nname = \"office\"\nsource = \"http://west.example/\"\n",
        ),
        (
            "group:pilot",
            "[[channel]]\nname = \"office\"\nsource = \"http://pilot.example/\"\n",
        ),
    ] {
        web.post(
            "/config/draft",
            &[("csrf", &csrf), ("scope", scope), ("toml", text)],
        )
        .await?;
    }
    let page = web.get("/config?groups=1").await?;
    assert!(
        page.body.contains("Groups saved in the draft"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("<td>pilot</td><td class=\"num\">20</td><td>bergen</td>"),
        "{}",
        page.body
    );
    web.post("/config/publish", &[("csrf", &csrf), ("comment", "groups")])
        .await?;
    // pilot (priority 20) comes after west (10): its channel wins.
    let site = web.get("/sites/bergen").await?;
    assert!(site.body.contains("pilot.example"), "{}", site.body);
    assert!(!site.body.contains("west.example"), "{}", site.body);
    assert!(
        site.body
            .contains("scopes applied in order: group:west &lt; group:pilot."),
        "{}",
        site.body
    );
    Ok(())
}

#[tokio::test]
async fn with_approval_on_a_new_edge_waits_until_approved_on_its_page() -> anyhow::Result<()> {
    let manager = TestDashboard::start().await?;
    let (web, csrf) = logged_in(&manager, ADMIN).await?;
    let on = web
        .post("/tokens/approval", &[("csrf", &csrf), ("on", "true")])
        .await?;
    assert_eq!(on.location(), "/tokens");
    assert!(
        web.get("/tokens")
            .await?
            .body
            .contains("Approve new edges: <span id=\"approval\">on")
    );
    let edge = manager.enrol("bergen", "pc-bergen").await?;
    assert!(!edge.reply.approved);
    let page = web.get("/sites/bergen").await?;
    assert!(
        page.body.contains("id=\"site-state\">pending</span>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("id=\"approve\""), "{}", page.body);
    let approved = web
        .post("/sites/bergen/approve", &[("csrf", &csrf)])
        .await?;
    assert_eq!(approved.location(), "/sites/bergen");
    assert!(edge.heartbeat(vec![]).await?.approved);
    let audit = web.get("/audit").await?;
    assert!(
        audit.body.contains("approve_new_edges = true"),
        "{}",
        audit.body
    );
    assert!(audit.body.contains("edge approve"), "{}", audit.body);
    Ok(())
}

#[tokio::test]
async fn a_site_scope_opens_from_the_form_and_is_listed_once_it_has_text() -> anyhow::Result<()> {
    let manager = TestDashboard::start().await?;
    manager.enrol("bergen", "pc-bergen").await?;
    let (web, csrf) = logged_in(&manager, ADMIN).await?;
    let page = web.get("/config").await?;
    assert!(page.body.contains("id=\"scope-form\""), "{}", page.body);
    // An enrolled site without a text of its own is not a link of its own.
    assert!(!page.body.contains("scope=site%3Abergen"), "{}", page.body);
    let site = web.get("/config?scope=site%3Abergen").await?;
    assert!(site.body.contains("Draft of site:bergen"), "{}", site.body);
    web.post(
        "/config/draft",
        &[("csrf", &csrf), ("scope", "site:bergen"), ("toml", OFFICE)],
    )
    .await?;
    let page = web.get("/config").await?;
    assert!(page.body.contains("scope=site%3Abergen"), "{}", page.body);
    let bad = web.get("/config?scope=site%3A..%2Fx").await?;
    assert_eq!(bad.status, 400, "{}", bad.body);
    Ok(())
}
