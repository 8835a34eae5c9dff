//! Real WebDAV clients from Debian against the library: rclone (with an
//! inline `:webdav,url=...:` remote) and cadaver (scripted on stdin) list
//! the share and copy files, and the bytes are the origin's.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::support::*;

/// Runs a client to completion (within a deadline) and returns its stdout;
/// a client that fails or is missing fails the test, saying which.
async fn run(mut cmd: Command, stdin: &str) -> String {
    let name = format!("{:?}", cmd.as_std().get_program());
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{name} cannot start ({e}): install it (.ci/run does)"));
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{name} did not finish"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name} failed: {stdout}\n{stderr}");
    stdout
}

fn rclone(config_dir: &Path) -> Command {
    let mut cmd = Command::new("rclone");
    // An empty config of its own: the inline remote needs none.
    cmd.arg("--config")
        .arg(config_dir.join("rclone.conf"))
        .arg("--low-level-retries")
        .arg("1")
        .arg("--retries")
        .arg("1");
    cmd
}

#[tokio::test]
async fn rclone_lists_the_share_and_copies_a_folder_byte_for_byte() {
    let site = Site::synced().await;
    let dir = tempfile::tempdir().unwrap();
    let remote = format!(":webdav,url='http://{}/':", site.addr);

    let mut list = rclone(dir.path());
    list.arg("lsjson").arg("--recursive").arg(&remote);
    let listing: Vec<Value> = serde_json::from_str(&run(list, "").await).unwrap();
    let mut found: Vec<(String, i64, bool)> = listing
        .iter()
        .map(|e| {
            (
                e["Path"].as_str().unwrap().to_string(),
                e["Size"].as_i64().unwrap(),
                e["IsDir"].as_bool().unwrap(),
            )
        })
        .collect();
    found.sort();
    let mut expected: Vec<(String, i64, bool)> = vec![
        ("packages".into(), -1, true),
        ("packages/drivers".into(), -1, true),
        ("packages/drivers/gpu".into(), -1, true),
        ("tools".into(), -1, true),
        (format!("tools/{}", tool().0), tool().1.len() as i64, false),
    ];
    for (path, body) in files() {
        expected.push((format!("packages/{path}"), body.len() as i64, false));
    }
    expected.sort();
    let dirs_as_minus_one: Vec<(String, i64, bool)> = found
        .into_iter()
        .map(|(p, s, d)| (p, if d { -1 } else { s }, d))
        .collect();
    assert_eq!(dirs_as_minus_one, expected);

    let dest = dir.path().join("copy");
    let mut copy = rclone(dir.path());
    copy.arg("copy")
        .arg(format!("{remote}packages/drivers"))
        .arg(&dest);
    run(copy, "").await;
    for (path, body) in files() {
        if let Some(rel) = path.strip_prefix("drivers/") {
            let copied = std::fs::read(dest.join(rel)).unwrap();
            assert_eq!(copied, body.as_ref(), "{path}");
        }
    }
    assert!(
        !dest.join("setup.msi").exists(),
        "only the folder asked for"
    );
    for (path, _) in files() {
        assert_eq!(
            site.origin_gets(path),
            1,
            "{path}: fetched once, by the sync"
        );
    }
}

#[tokio::test]
async fn cadaver_lists_a_folder_and_gets_a_file_byte_for_byte() {
    let site = Site::synced().await;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("setup.msi");
    let script = format!(
        "ls\ncd drivers\nls\ncd ..\nget setup.msi {}\nquit\n",
        local.display()
    );
    let mut cmd = Command::new("cadaver");
    // cadaver reads ~/.cadaverrc and ~/.netrc: none of the user's.
    cmd.env("HOME", dir.path())
        .arg(format!("http://{}/packages/", site.addr));
    let out = run(cmd, &script).await;
    for name in ["drivers", "setup.msi", "readme.txt", "net card.cab", "gpu"] {
        assert!(out.contains(name), "{name} in {out}");
    }
    assert!(out.contains("700000"), "the size of setup.msi in {out}");
    let copied = std::fs::read(&local).unwrap();
    assert_eq!(copied, files()[0].1.as_ref());
}
