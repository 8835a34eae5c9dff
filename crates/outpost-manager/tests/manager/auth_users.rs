//! `outpost manager user ...` (the library side the binary calls) on a
//! running manager's data directory, seen through the dashboard's login.

use outpost_manager::auth::{Role, UserCommand, run_in_data_dir};

use crate::dashboard_harness::{TestDashboard, Web};

#[tokio::test]
async fn users_made_changed_and_disabled_on_the_data_dir_take_effect_at_once() -> anyhow::Result<()>
{
    let manager = TestDashboard::start().await?;
    let dir = manager.data_dir();
    let out = run_in_data_dir(
        &dir,
        UserCommand::Add {
            name: "olga".into(),
            role: Role::Viewer,
            password: None,
        },
        100,
    )?;
    let password = out
        .rsplit("password: ")
        .next()
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    assert_eq!(password.len(), 20, "{out}");
    let mut web = Web::new(manager.addr);
    assert_eq!(web.login("olga", &password).await?.status, 303);
    assert!(web.get("/").await?.body.contains("olga (viewer)"));

    // A new password ends the running session and replaces the old one.
    run_in_data_dir(
        &dir,
        UserCommand::Passwd {
            name: "olga".into(),
            password: Some("a-brand-new-password".into()),
        },
        101,
    )?;
    assert_eq!(web.get("/").await?.status, 303);
    assert_eq!(web.login("olga", &password).await?.status, 401);
    assert_eq!(web.login("olga", "a-brand-new-password").await?.status, 303);

    run_in_data_dir(
        &dir,
        UserCommand::Disable {
            name: "olga".into(),
        },
        102,
    )?;
    assert_eq!(web.get("/").await?.status, 303);
    let refused = web.login("olga", "a-brand-new-password").await?;
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("Wrong name or password."));

    let listing = run_in_data_dir(&dir, UserCommand::List, 103)?;
    assert!(
        listing.contains("olga") && listing.contains("disabled"),
        "{listing}"
    );
    assert!(
        run_in_data_dir(
            &dir,
            UserCommand::Add {
                name: "short".into(),
                role: Role::Admin,
                password: Some("2short".into()),
            },
            104,
        )
        .is_err()
    );

    // Each change is in the audit log, by the command line, without the
    // password.
    let audit = manager.manager.audit_log(100)?;
    let mine: Vec<_> = audit
        .iter()
        .filter(|e| e.who == "cli" && e.what.starts_with("user "))
        .map(|e| (e.what.as_str(), e.detail.as_str()))
        .collect();
    for expected in [
        ("user add", "olga role viewer"),
        ("user passwd", "olga"),
        ("user disable", "olga"),
    ] {
        assert!(mine.contains(&expected), "{expected:?} not in {mine:?}");
    }
    assert!(!audit.iter().any(|e| e.detail.contains(&password)));
    Ok(())
}
