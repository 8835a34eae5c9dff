//! `outpost check-config`: it refuses what serve refuses, and says which
//! key on which line.

use std::process::Command;

use crate::support::{assert_check_config_refuses, cli_command, outpost};

#[test]
fn check_config_reports_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = env!("CARGO_MANIFEST_DIR").to_string() + "/../../outpost.example.toml";
    let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["check-config", &good])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = [\"127.0.0.1:3128\"]\n\n[cache]\nmax_size = \"lots\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["check-config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:5:12: cache.max_size: expected a size like \"512 MiB\" or \"20 GB\", got \"lots\"",
            bad.display()
        )),
        "{err}"
    );
}

/// What check-config accepts, serve starts with, and what serve refuses,
/// check-config refuses with the same message (and a line and column).
#[test]
fn check_config_refuses_what_serve_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[admin]\nlisten = \"0.0.0.0:3180\"\n",
            ":2:10: admin.listen 0.0.0.0:3180 is not loopback: set admin.token_file",
        ),
        (
            "[log]\nlevel = \"verbose\"\n",
            ":2:9: log.level: \"verbose\" is not a log level: expected a level (trace, debug, info, warn, error, off)",
        ),
        (
            "[[channel]]\nname = \"a\"\nsource = \"http://h/a/\"\n\n[[channel]]\nname = \"a\"\nsource = \"http://h/b/\"\n",
            ":6:8: channel.name \"a\" is used twice: on line 2 and line 6",
        ),
        (
            "[cache]\nmax_size = \"lots\"\n",
            ":2:12: cache.max_size: expected a size like \"512 MiB\" or \"20 GB\", got \"lots\"",
        ),
    ];
    for (text, expected) in cases {
        let path = assert_check_config_refuses(dir.path(), text, expected);
        let path = path.as_str();
        let served = cli_command(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--config", path])
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&served.stderr);
        assert_eq!(served.status.code(), Some(1), "{text}: {err}");
        assert!(err.contains(&format!("{path}{expected}")), "{text}: {err}");
    }
    // Every error at once, not the first only.
    let file = dir.path().join("outpost.toml");
    std::fs::write(
        &file,
        "[log]\nlevel = \"verbose\"\n[cache]\nmax_size = \"lots\"\n",
    )
    .unwrap();
    let checked = outpost(&["check-config", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&checked.stderr);
    assert!(
        err.contains(":2:9: log.level") && err.contains(":4:12: cache.max_size"),
        "{err}"
    );
}

#[test]
fn check_config_reports_a_bad_disk_reserve_or_admin_limit_with_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key, line) in [
        (
            "[server]\nlisten = [\"127.0.0.1:3128\"]\n\n[cache]\ndisk_reserve = \"80%\"\n",
            "disk_reserve",
            ":5:16:",
        ),
        (
            "[cache]\ndisk_reserve = \"plenty\"\n",
            "disk_reserve",
            ":2:16:",
        ),
        (
            "[server]\nmax_connections = 10\n[admin]\nmax_connections = 0\n",
            "admin.max_connections",
            ":4:19:",
        ),
    ] {
        let file = dir.path().join("outpost.toml");
        std::fs::write(&file, text).unwrap();
        let out = outpost(&["check-config", file.to_str().unwrap()]);
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key) && err.contains(line), "{text}: {err}");
    }
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[cache]\ndisk_reserve = \"2GiB\"\n").unwrap();
    let out = outpost(&["check-config", good.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fleet manager's managed.toml in the cache directory is checked with
/// the file: its errors name it, and a clean pair says both were read.
#[test]
fn check_config_checks_the_managed_config_laid_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    let config = dir.path().join("outpost.toml");
    std::fs::write(
        &config,
        format!(
            "[cache]\ndir = {:?}\nmax_size = \"100 MiB\"\n",
            cache.display().to_string()
        ),
    )
    .unwrap();
    let managed = cache.join("managed.toml");
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_outpost"))
            .arg("check-config")
            .arg(&config)
            .output()
            .unwrap()
    };
    std::fs::write(
        &managed,
        "[[channel]]\nname = \"apps\"\nsource = \"http://o/apps/\"\n",
    )
    .unwrap();
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "{}: ok (with {} laid over)\n",
            config.display(),
            managed.display()
        )
    );
    std::fs::write(
        &managed,
        "[[channel]]\nname = \"apps\"\nsource = \"http://o/apps/\"\nmax_bytes = \"1 GiB\"\n",
    )
    .unwrap();
    let out = check();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{} with {} laid over: channel \"apps\": max_bytes: 1.0 GiB is larger than the cache",
            config.display(),
            managed.display()
        )),
        "{err}"
    );
}
