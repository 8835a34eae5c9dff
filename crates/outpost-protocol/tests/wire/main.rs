//! The wire format as readers see it: documents an edge sends decode into
//! the types, a field the edge did not send is an error, and enums travel
//! as their snake_case names.

use outpost_protocol::{
    ActionOutcome, ChannelStatus, EdgeStatus, ObjectAction, RunPhase, RunSummary, SyncResult,
};

const STATUS: &str = include_str!("../fixtures/status.json");

#[test]
fn a_status_document_decodes_and_encodes_back_the_same() {
    let status: EdgeStatus = serde_json::from_str(STATUS).unwrap();
    assert_eq!(status.cache.bytes_used, 1_048_576);
    assert_eq!(status.requests.hit, 7);
    let ch = &status.channels[0];
    assert_eq!(ch.last_run.as_ref().unwrap().result, SyncResult::Ok);
    assert_eq!(
        ch.running.as_ref().unwrap().phase,
        RunPhase::WaitingForWindow
    );
    let again: serde_json::Value = serde_json::to_value(&status).unwrap();
    let original: serde_json::Value = serde_json::from_str(STATUS).unwrap();
    assert_eq!(again, original);
}

/// An edge with a fleet manager adds its link; one without (or older)
/// sends none, and both read.
#[test]
fn the_manager_block_is_optional_and_its_state_a_word() {
    let mut doc: serde_json::Value = serde_json::from_str(STATUS).unwrap();
    assert!(
        serde_json::from_value::<EdgeStatus>(doc.clone())
            .unwrap()
            .manager
            .is_none()
    );
    doc["manager"] = serde_json::json!({
        "url": "https://m:8443",
        "site": "oslo",
        "state": "revoked",
        "last_contact": 100,
        "applied_version": 3,
        "last_error": "the manager refuses this edge (revoked): 403"
    });
    let status: EdgeStatus = serde_json::from_value(doc.clone()).unwrap();
    let manager = status.manager.as_ref().unwrap();
    assert_eq!(manager.state, outpost_protocol::ManagerLink::Revoked);
    assert_eq!(manager.state.to_string(), "revoked");
    assert_eq!(serde_json::to_value(&status).unwrap(), doc);
}

/// The bug this crate exists for: a renamed key used to print 0.
#[test]
fn a_missing_or_renamed_field_is_an_error_not_a_zero() {
    let mut doc: serde_json::Value = serde_json::from_str(STATUS).unwrap();
    let cache = doc["cache"].as_object_mut().unwrap();
    let used = cache.remove("bytes_used").unwrap();
    cache.insert("used_bytes".into(), used);
    let err = serde_json::from_value::<EdgeStatus>(doc).unwrap_err();
    assert!(err.to_string().contains("bytes_used"), "{err}");
}

#[test]
fn enums_travel_as_snake_case_words_and_display_the_same() {
    for (result, word) in [
        (SyncResult::Ok, "ok"),
        (SyncResult::Errors, "errors"),
        (SyncResult::Limit, "limit"),
        (SyncResult::Failed, "failed"),
        (SyncResult::Interrupted, "interrupted"),
    ] {
        assert_eq!(serde_json::to_value(result).unwrap(), word);
        assert_eq!(result.to_string(), word);
        assert_eq!(result, word);
    }
    assert_eq!(
        serde_json::to_value(RunPhase::WaitingForWindow).unwrap(),
        "waiting_for_window"
    );
    let outcome: ActionOutcome =
        serde_json::from_str(r#"{"action":"pin","url":"http://h/a","done":false}"#).unwrap();
    assert_eq!(outcome.action, ObjectAction::Pin);
    assert!(serde_json::from_str::<SyncResult>("\"unchanged\"").is_err());
}

/// What the channel database holds for runs recorded before `skipped`
/// and `limits` existed.
#[test]
fn stored_run_summaries_of_older_versions_still_decode() {
    let old = r#"{"run":3,"started":1,"finished":2,"result":"errors","message":null,"files":4,
        "fetched":1,"not_modified":1,"unchanged":1,"failed":1,"quarantined":0,"removed":0,
        "fetched_bytes":10}"#;
    let summary: RunSummary = serde_json::from_str(old).unwrap();
    assert_eq!((summary.result, summary.skipped), (SyncResult::Errors, 0));
    let channel: ChannelStatus = serde_json::from_value(serde_json::json!({
        "name": "pkgs", "source": "http://h/pkgs/", "kind": "listing", "schedule": null,
        "rate": "unlimited", "window": null, "limit_now": null, "files_total": 0,
        "files_present": 0, "bytes_total": 0, "bytes_present": 0, "pinned_files": 0,
        "quarantined": [], "errors": [], "running": null, "last_run": null, "next_run": null
    }))
    .unwrap();
    assert_eq!(channel.name, "pkgs");
}

/// The CLI prints a run's counts under these names: they must be the
/// summary's own keys, so the text and the JSON say the same thing.
#[test]
fn file_outcomes_are_named_as_the_summary_keys() {
    let summary = RunSummary {
        fetched: 1,
        not_modified: 2,
        unchanged: 3,
        failed: 4,
        quarantined: 5,
        removed: 6,
        skipped: 7,
        ..RunSummary::default()
    };
    let doc = serde_json::to_value(&summary).unwrap();
    for (outcome, count) in summary.outcomes() {
        assert_eq!(doc[outcome.as_str()], count, "{outcome}");
    }
}
