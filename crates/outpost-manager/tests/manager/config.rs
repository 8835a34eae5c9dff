//! Scoped config over the API: channels, scopes, groups, precedence,
//! diff, publish with validation, history, rollback, readiness.

use std::time::Duration;

use http::{Method, StatusCode};
use outpost_manager::http::client::ClientError;
use outpost_protocol::{DesiredConfig, EdgeState, Readiness, ReadinessState};
use serde_json::{Value, json};

use crate::support::{TestManager, channel};

async fn ok(m: &TestManager, method: Method, path: &str, body: Value) {
    let _: Value = m.admin().send(method, path, &body).await.unwrap();
}

#[tokio::test]
async fn precedence_global_groups_site_is_rendered_and_explained() {
    let m = TestManager::start(false, Duration::from_secs(30)).await;
    let oslo = m.enrol("oslo").await;
    m.enrol("bergen").await;
    ok(
        &m,
        Method::PUT,
        "/api/v1/channels/apps?scope=global",
        json!({"source": "http://global/apps/", "verify": true}),
    )
    .await;
    ok(
        &m,
        Method::PUT,
        "/api/v1/channels/docs?scope=global",
        json!({"source": "http://global/docs/"}),
    )
    .await;
    ok(
        &m,
        Method::PUT,
        "/api/v1/groups/east",
        json!({"priority": 10}),
    )
    .await;
    ok(
        &m,
        Method::PUT,
        "/api/v1/groups/lab",
        json!({"priority": 20}),
    )
    .await;
    ok(
        &m,
        Method::PUT,
        "/api/v1/channels/apps?scope=group:east",
        json!({"source": "http://east/apps/"}),
    )
    .await;
    ok(
        &m,
        Method::PUT,
        "/api/v1/channels/apps?scope=group:lab",
        json!({"source": "http://lab/apps/"}),
    )
    .await;
    ok(
        &m,
        Method::PUT,
        "/api/v1/channels/docs?scope=site:oslo",
        json!({"source": "http://oslo/docs/", "include": ["*.pdf"]}),
    )
    .await;
    ok(
        &m,
        Method::PUT,
        "/api/v1/edges/oslo/groups",
        json!({"groups": ["east", "lab"]}),
    )
    .await;
    ok(
        &m,
        Method::PUT,
        "/api/v1/edges/bergen/groups",
        json!({"groups": ["east"]}),
    )
    .await;
    m.put_scope("group:east", &{
        let current: Value = m.admin().get("/api/v1/scopes/group:east").await.unwrap();
        format!(
            "{}\n[wan]\nprepos_rate = \"2 Mbit/s\"\n",
            current["toml"].as_str().unwrap()
        )
    })
    .await;

    // Unpublished: the edge's config is still empty.
    let draft: Value = m
        .admin()
        .get("/api/v1/sites/oslo/config?draft=true")
        .await
        .unwrap();
    assert_eq!(
        draft["layers"],
        json!(["global", "group:east", "group:lab", "site:oslo"])
    );
    let diff: Value = m.admin().get("/api/v1/config/diff").await.unwrap();
    assert_eq!(diff["changed"], true);
    let diffs = diff["scopes"].as_array().unwrap();
    assert!(diffs.iter().any(|d| {
        d["scope"] == "groups"
            && d["diff"]
                .as_str()
                .unwrap()
                .contains("+group east priority 10: bergen, oslo")
    }));
    assert!(diffs.iter().any(|d| {
        d["scope"] == "global"
            && d["diff"]
                .as_str()
                .unwrap()
                .contains("+source = \"http://global/apps/\"")
    }));

    assert_eq!(m.publish().await.unwrap(), 1);
    let site: Value = m.admin().get("/api/v1/sites/oslo/config").await.unwrap();
    let origin = |table: &str, key: &str| {
        site["origins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["table"] == table && o["key"] == key)
            .map(|o| o["scope"].as_str().unwrap().to_string())
    };
    assert_eq!(origin("channel", "apps").as_deref(), Some("group:lab"));
    assert_eq!(origin("channel", "docs").as_deref(), Some("site:oslo"));
    assert_eq!(origin("wan", "prepos_rate").as_deref(), Some("group:east"));
    assert_eq!(site["version"], 1);

    let config: DesiredConfig = oslo.client.get("/edge/v1/config").await.unwrap();
    assert_eq!(config.version, 1);
    let doc: toml::Table = config.toml.parse().unwrap();
    let channels = doc["channel"].as_array().unwrap();
    assert_eq!(channels[0]["name"].as_str(), Some("apps"));
    assert_eq!(channels[0]["source"].as_str(), Some("http://lab/apps/"));
    // Replaced whole: the global entry's `verify` is gone.
    assert!(channels[0].get("verify").is_none());
    assert_eq!(channels[1]["include"].as_array().unwrap().len(), 1);
    assert_eq!(doc["wan"]["prepos_rate"].as_str(), Some("2 Mbit/s"));
    let list: outpost_protocol::EdgeList = m.admin().get("/api/v1/edges").await.unwrap();
    let bergen = list.edges.iter().find(|e| e.site == "bergen").unwrap();
    assert_eq!(bergen.groups, ["east"]);
    let diff: Value = m.admin().get("/api/v1/config/diff").await.unwrap();
    assert_eq!(diff["changed"], false);

    // Channel removed from the site scope: the global one shows through.
    let _: Value = m
        .admin()
        .call(
            Method::DELETE,
            "/api/v1/channels/docs?scope=site:oslo",
            None,
        )
        .await
        .unwrap();
    m.publish().await.unwrap();
    let site: Value = m.admin().get("/api/v1/sites/oslo/config").await.unwrap();
    assert!(
        site["toml"]
            .as_str()
            .unwrap()
            .contains("http://global/docs/")
    );
}

#[tokio::test]
async fn a_publish_the_validator_refuses_changes_nothing_and_says_why() {
    let m = TestManager::start(false, Duration::from_secs(30)).await;
    let edge = m.enrol("oslo").await;
    m.put_scope(
        "global",
        "[[channel]]\nname = \"apps\"\nsource = \"http://o/\"\n",
    )
    .await;
    m.publish().await.unwrap();
    m.put_scope("site:oslo", "[[channel]]\nname = \"x\"\nbogus = 1\n")
        .await;
    let err = m.publish().await.unwrap_err();
    let ClientError::Api { status, error } = err else {
        panic!("{err}")
    };
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error, "site:oslo:3: unknown key `bogus`");
    let reply = edge.heartbeat(vec![]).await.unwrap();
    assert_eq!(reply.desired_config_version, 1);

    // Bad syntax is refused when the draft is written.
    let (status, body) = m
        .admin()
        .request(
            Method::PUT,
            "/api/v1/scopes/global",
            Some("[[channel".into()),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
}

#[tokio::test]
async fn rollback_publishes_an_old_version_again() {
    let m = TestManager::start(false, Duration::from_secs(30)).await;
    let edge = m.enrol("oslo").await;
    m.put_scope(
        "global",
        "[[channel]]\nname = \"apps\"\nsource = \"http://one/\"\n",
    )
    .await;
    m.publish().await.unwrap();
    m.put_scope(
        "global",
        "[[channel]]\nname = \"apps\"\nsource = \"http://two/\"\n",
    )
    .await;
    m.publish().await.unwrap();
    let v: Value = m
        .admin()
        .call(Method::POST, "/api/v1/config/rollback?version=1", None)
        .await
        .unwrap();
    assert_eq!(v["version"], 3);
    let config: DesiredConfig = edge.client.get("/edge/v1/config").await.unwrap();
    assert_eq!(config.version, 3);
    assert!(config.toml.contains("http://one/"));
    let history: Value = m.admin().get("/api/v1/config/history").await.unwrap();
    assert_eq!(history[0]["comment"], "rollback to version 1");
    assert_eq!(history.as_array().unwrap().len(), 3);
    // The draft follows, so the next publish does not undo the rollback.
    let diff: Value = m.admin().get("/api/v1/config/diff").await.unwrap();
    assert_eq!(diff["changed"], false);
    let err = m
        .admin()
        .call::<Value>(Method::POST, "/api/v1/config/rollback?version=9", None)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        ClientError::Api {
            status: StatusCode::NOT_FOUND,
            ..
        }
    ));
}

#[tokio::test]
async fn readiness_follows_the_reports_of_the_assigned_sites() {
    let m = TestManager::start(false, Duration::from_secs(30)).await;
    let a = m.enrol("a").await;
    let b = m.enrol("b").await;
    let c = m.enrol("c").await;
    ok(
        &m,
        Method::PUT,
        "/api/v1/groups/pilot",
        json!({"priority": 1}),
    )
    .await;
    ok(
        &m,
        Method::PUT,
        "/api/v1/edges/a/groups",
        json!({"groups": ["pilot"]}),
    )
    .await;
    ok(
        &m,
        Method::PUT,
        "/api/v1/edges/b/groups",
        json!({"groups": ["pilot"]}),
    )
    .await;
    ok(
        &m,
        Method::PUT,
        "/api/v1/channels/apps?scope=group:pilot",
        json!({"source": "http://o/apps/"}),
    )
    .await;
    m.publish().await.unwrap();
    let ready = || async {
        m.admin()
            .get::<Readiness>("/api/v1/readiness?channel=apps")
            .await
            .unwrap()
    };
    let r = ready().await;
    assert!(!r.ready);
    assert_eq!(r.sites.len(), 2, "c is not in the group");
    assert!(r.sites.iter().all(|s| s.state == ReadinessState::Missing));

    a.heartbeat(vec![channel("apps", 4, 4)]).await.unwrap();
    let mut partial = channel("apps", 4, 1);
    partial.missing = vec!["sub/big.msi".into()];
    b.heartbeat(vec![partial]).await.unwrap();
    c.heartbeat(vec![channel("apps", 1, 0)]).await.unwrap();
    let r = ready().await;
    assert!(!r.ready);
    let b_row = r.sites.iter().find(|s| s.site == "b").unwrap();
    assert_eq!(b_row.state, ReadinessState::Syncing);
    assert_eq!(
        (b_row.files_present, b_row.files_total, b_row.bytes_total),
        (1, 4, 400)
    );
    assert_eq!(b_row.edge_state, EdgeState::Up);
    let one: Readiness = m
        .admin()
        .get("/api/v1/readiness?channel=apps&path=sub/big.msi")
        .await
        .unwrap();
    assert_eq!(
        one.sites.iter().find(|s| s.site == "a").unwrap().state,
        ReadinessState::Complete
    );
    assert_eq!(
        one.sites.iter().find(|s| s.site == "b").unwrap().state,
        ReadinessState::Syncing
    );

    b.heartbeat(vec![channel("apps", 4, 4)]).await.unwrap();
    assert!(ready().await.ready);
    let none: Readiness = m
        .admin()
        .get("/api/v1/readiness?channel=nope")
        .await
        .unwrap();
    assert!(!none.ready && none.sites.is_empty());
}

#[tokio::test]
async fn bad_requests_are_answered_with_json_errors() {
    let m = TestManager::start(false, Duration::from_secs(30)).await;
    for (method, path, status) in [
        (Method::GET, "/api/v1/readiness", StatusCode::BAD_REQUEST),
        (
            Method::POST,
            "/api/v1/config/rollback?version=x",
            StatusCode::BAD_REQUEST,
        ),
        (Method::GET, "/api/v1/nothing", StatusCode::NOT_FOUND),
        (
            Method::PUT,
            "/api/v1/channels/a%2Fb?scope=global",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            "/api/v1/channels/apps?scope=planet",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (got, body) = m
            .admin()
            .request(method.clone(), path, Some("{}".into()))
            .await
            .unwrap();
        assert_eq!(got, status, "{method} {path}: {body:?}");
        let error: outpost_protocol::ApiError = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}: {body:?}"));
        assert!(!error.error.is_empty());
    }
    // A body over the limit is refused, not read.
    let big = vec![b' '; outpost_manager::http::MAX_BODY + 1];
    let (got, _) = m
        .admin()
        .request(Method::PUT, "/api/v1/scopes/global", Some(big.into()))
        .await
        .unwrap();
    assert_eq!(got, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn putting_and_deleting_a_channel_keeps_the_scopes_comments_and_layout() {
    let m = TestManager::start(false, Duration::from_secs(30)).await;
    let written = "\
# Owned by the desktop team: ask #desktop before changing.
[wan]
prepos_rate = \"2 Mbit/s\"   # the branch links are 10 Mbit/s

# Office, monthly.
[[channel]]
name = \"office\"
source = \"http://pkgs.example/office/\"

# Drivers: replaced below.
[[channel]]
name = \"drivers\"
source = \"http://pkgs.example/old-drivers/\"
";
    m.put_scope("global", written).await;
    let text = || async {
        let scope: Value = m.admin().get("/api/v1/scopes/global").await.unwrap();
        scope["toml"].as_str().unwrap().to_string()
    };

    ok(
        &m,
        Method::PUT,
        "/api/v1/channels/drivers?scope=global",
        json!({"source": "http://pkgs.example/drivers/", "schedule": "0 2 * * *"}),
    )
    .await;
    ok(
        &m,
        Method::PUT,
        "/api/v1/channels/fonts?scope=global",
        json!({"source": "http://pkgs.example/fonts/"}),
    )
    .await;
    let after = text().await;
    for kept in [
        "# Owned by the desktop team: ask #desktop before changing.",
        "prepos_rate = \"2 Mbit/s\"   # the branch links are 10 Mbit/s",
        "# Office, monthly.",
        "# Drivers: replaced below.",
    ] {
        assert!(after.contains(kept), "lost {kept:?}:\n{after}");
    }
    assert!(!after.contains("old-drivers"), "{after}");
    assert!(after.contains("http://pkgs.example/drivers/"), "{after}");
    assert!(after.contains("0 2 * * *"), "{after}");
    assert!(after.contains("http://pkgs.example/fonts/"), "{after}");
    // Still the order the admin wrote: office, drivers, then the new one.
    let at = |s: &str| after.find(s).unwrap();
    assert!(at("office/") < at("/drivers/") && at("/drivers/") < at("fonts/"));

    let (status, _) = m
        .admin()
        .request(Method::DELETE, "/api/v1/channels/office?scope=global", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let after = text().await;
    assert!(!after.contains("office/"), "{after}");
    assert!(after.contains("# Owned by the desktop team"), "{after}");
    assert!(after.contains("# Drivers: replaced below."), "{after}");
    // What is left is what the edge would read.
    let parsed: toml::Table = after.parse().unwrap();
    assert_eq!(parsed["channel"].as_array().unwrap().len(), 2);

    // Channels written as an inline array are a list too.
    m.put_scope(
        "group:east",
        "channel = [{ name = \"a\", source = \"http://pkgs.example/a/\" }]\n",
    )
    .await;
    ok(
        &m,
        Method::PUT,
        "/api/v1/channels/b?scope=group:east",
        json!({"source": "http://pkgs.example/b/"}),
    )
    .await;
    let scope: Value = m.admin().get("/api/v1/scopes/group:east").await.unwrap();
    let parsed: toml::Table = scope["toml"].as_str().unwrap().parse().unwrap();
    let names: Vec<&str> = parsed["channel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
}
