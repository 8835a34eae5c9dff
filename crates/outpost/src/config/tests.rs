use std::path::PathBuf;
use std::time::Duration;

use outpost_channel::{ChannelLimits, SourceKind};
use outpost_shaper::LocalTime;

use super::*;

fn resolved(text: &str) -> Resolved {
    resolve_text(text, "t.toml", &Overrides::default())
        .unwrap_or_else(|e| panic!("{e}"))
        .1
}

/// Every error of `text`, one per line, as check-config prints them.
fn errors(text: &str) -> String {
    match resolve_text(text, "t.toml", &Overrides::default()) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn example_config_resolves() {
    resolved(include_str!("../../../../outpost.example.toml"));
}

#[test]
fn unknown_keys_are_reported_with_line_column_and_the_keys_expected() {
    let err = errors(
        "[server]\nlisten = [\"127.0.0.1:3128\"]\nlisen = 1\n[[channel]]\nname = \"a\"\nsource = \"http://h/\"\n  shedule = \"@daily\"\n[sever]\n",
    );
    assert!(
        err.contains("t.toml:3:1: unknown key \"server.lisen\" (expected one of: listen,"),
        "{err}"
    );
    assert!(
        err.contains("t.toml:7:3: unknown key \"channel.shedule\""),
        "{err}"
    );
    assert!(err.contains("t.toml:8:2: unknown key \"sever\""), "{err}");
    assert_eq!(err.lines().count(), 3, "{err}");
}

#[test]
fn every_bad_value_is_reported_not_just_the_first() {
    let text = "[cache]\nmax_size = \"10 GiB\"\nlow_watermark = 0.99\n[fill]\nupstream_idle_timeout = \"soon\"\nmax_fills = 0\n";
    let err = errors(text);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with(
            "t.toml:3:17: cache.low_watermark: must be above 0 and below cache.high_watermark"
        ),
        "{err}"
    );
    assert!(
        lines[1].starts_with("t.toml:5:25: fill.upstream_idle_timeout: invalid duration \"soon\""),
        "{err}"
    );
    assert!(
        lines[2].starts_with("t.toml:6:13: fill.max_fills: must be at least 1"),
        "{err}"
    );
}

#[test]
fn an_error_in_the_third_channel_names_that_tables_line() {
    let text = r#"
[[channel]]
name = "a"
source = "http://h/a/"
max_pages = 5

[[channel]]
name = "b"
source = "http://h/b/"
max_pages = 5

[[channel]]
name = "c"
source = "http://h/c/"
max_pages = 0
schedule = "0 25 * * *"
"#;
    let err = errors(text);
    assert!(
        err.contains("t.toml:15:13: channel \"c\": max_pages: must be from 1 to 1000000, got 0"),
        "{err}"
    );
    assert!(
        err.contains("t.toml:16:12: channel \"c\": schedule: invalid schedule \"0 25 * * *\""),
        "{err}"
    );
    // A missing key names the table's own header line.
    let err = errors(&text.replace("source = \"http://h/c/\"\n", ""));
    assert!(
        err.contains("t.toml:12:1: channel \"c\": source: missing"),
        "{err}"
    );
}

#[test]
fn a_channel_name_used_twice_names_both_lines() {
    let text = "[[channel]]\nname = \"a\"\nsource = \"http://h/\"\n[[channel]]\nname = \"b\"\nsource = \"http://h/b/\"\n[[channel]]\nname = \"a\"\nsource = \"http://h/c/\"\n";
    let err = errors(text);
    assert!(
        err.contains("t.toml:8:8: channel.name \"a\" is used twice: on line 2 and line 8"),
        "{err}"
    );
}

#[test]
fn sizes_say_what_a_size_looks_like() {
    let err = errors("[cache]\nmax_size = \"lots\"\n");
    assert!(
        err.contains(
            "t.toml:2:12: cache.max_size: expected a size like \"512 MiB\" or \"20 GB\", got \"lots\""
        ),
        "{err}"
    );
    let err = errors("[server]\nmax_header_size = -1\n");
    assert!(err.contains("expected a size like"), "{err}");
    assert_eq!(
        resolved("[cache]\nmax_size = 2147483648\n").store.max_bytes,
        2 << 30
    );
}

#[test]
fn log_levels_must_be_levels() {
    for bad in ["verbose", "outpost_proxy=loud,info", "info,chatty"] {
        let err = errors(&format!("[log]\nlevel = \"{bad}\"\n"));
        assert!(
            err.contains("t.toml:2:9: log.level:")
                && err.contains("trace, debug, info, warn, error, off"),
            "{bad}: {err}"
        );
    }
    for good in ["info", "WARN", "outpost_proxy=debug,info", "off"] {
        let r = resolved(&format!("[log]\nlevel = \"{good}\"\n"));
        assert_eq!(r.log_level.as_deref(), Some(good));
    }
}

#[test]
fn an_admin_listener_off_loopback_needs_a_token_file() {
    let err = errors("[admin]\nlisten = \"0.0.0.0:3180\"\n");
    assert!(
        err.contains(
            "t.toml:2:10: admin.listen 0.0.0.0:3180 is not loopback: set admin.token_file"
        ),
        "{err}"
    );
    resolved("[admin]\nlisten = \"0.0.0.0:3180\"\ntoken_file = \"/etc/outpost/admin.token\"\n");
    let err = resolve_text(
        "",
        "t.toml",
        &Overrides {
            admin: Some("10.1.2.3:3180".parse().unwrap()),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("--admin 10.1.2.3:3180"), "{err}");
}

#[test]
fn admin_allowed_hosts_and_the_new_server_keys_resolve() {
    let r = resolved(
        "[server]\ndrain = \"5s\"\ntargeted_cache_control = \"Outpost-Cache-Control\"\n[admin]\nallowed_hosts = [\"Edge.Branch.example\"]\n",
    );
    assert_eq!(r.proxy.drain, Duration::from_secs(5));
    assert_eq!(
        r.proxy.targeted_cache_control.as_ref().map(|h| h.as_str()),
        Some("outpost-cache-control")
    );
    assert_eq!(
        r.admin.allowed_hosts,
        vec!["edge.branch.example".to_string()]
    );
    let d = resolved("");
    assert_eq!(d.proxy.drain, Duration::from_secs(30));
    assert!(d.proxy.targeted_cache_control.is_none() && d.admin.allowed_hosts.is_empty());
    let err = errors(
        "[server]\ntargeted_cache_control = \"bad header\"\n[admin]\nallowed_hosts = [\"h:80\"]\n",
    );
    assert!(
        err.contains("t.toml:2:26: server.targeted_cache_control"),
        "{err}"
    );
    assert!(
        err.contains("t.toml:4:17: admin.allowed_hosts: \"h:80\""),
        "{err}"
    );
    // The edge strips its targeted field from what clients get: a name
    // clients rely on would strip their own caching rules.
    for name in ["Cache-Control", "CDN-Cache-Control", "Vary"] {
        let err = errors(&format!("[server]\ntargeted_cache_control = \"{name}\"\n"));
        assert!(
            err.contains(
                "t.toml:2:26: server.targeted_cache_control: expected a field of the edge's own"
            ),
            "{name}: {err}"
        );
    }
}

#[test]
fn a_toml_syntax_error_has_its_position() {
    let err = errors("[server]\nlisten = [\"127.0.0.1:3128\"\n");
    assert!(
        err.starts_with("t.toml:") && err.contains("not valid TOML"),
        "{err}"
    );
}

#[test]
fn channels_and_wan_rules_resolve() {
    let r = resolved(
        r#"
[wan]
rate = "18 Mbit/s"
[[wan.rule]]
class = "prepos"
when = "mon-fri 08:00-18:00"
rate = "256 kbit/s"
[[channel]]
name = "packages"
source = "http://fileserver.corp.example:8080/packages/"
schedule = "0 1 * * *"
rate = "2 Mbit/s"
window = "19:00-07:00"
aliases = ["fileserver"]
[[channel]]
name = "av"
source = "http://fileserver.corp.example/av/SHA256SUMS"
"#,
    );
    assert_eq!(r.channels.len(), 2);
    assert_eq!(r.channels[0].kind, SourceKind::Listing);
    assert_eq!(r.channels[1].kind, SourceKind::Manifest);
    assert_eq!(r.channels[0].rate.limit(), Some(250_000.0));
    assert_eq!(
        r.proxy.host_aliases.get("fileserver").map(String::as_str),
        Some("fileserver.corp.example:8080")
    );
    let weekday_noon = LocalTime::new(2, 12, 0);
    assert_eq!(r.proxy.wan.prepos.at(weekday_noon).limit(), Some(32_000.0));
    assert_eq!(r.proxy.wan.site.at(weekday_noon).limit(), Some(2_250_000.0));
    // The slowest limit (256 kbit/s) sizes the bulk receive buffers.
    assert_eq!(r.proxy.wan.bulk_receive_buffer, Some(32 << 10));
    let err = errors("[[wan.rule]]\nclass = \"bulk\"\nwhen = \"22:00-06:00\"\n");
    assert!(
        err.contains("t.toml:2:9: wan.rule.class: unknown variant"),
        "{err}"
    );
    assert!(err.contains("t.toml:1:1: wan.rule.rate: missing"), "{err}");
}

#[test]
fn overrides_resolve_in_order() {
    let r = resolved(
        "[[override]]\nhost = \"FileServer*\"\npath = \"/pkgs/*\"\nmin_fresh = \"2days\"\nignore_query = true\n[[override]]\nnever_cache = true\n",
    );
    let o = &r.proxy.overrides;
    assert_eq!(o.len(), 2);
    assert!(o[0].matches("fileserver.corp", "/pkgs/a.msi"));
    assert!(!o[0].matches("other", "/pkgs/a.msi"));
    assert_eq!(o[0].freshness.min_fresh, Some(Duration::from_secs(172_800)));
    assert!(o[0].ignore_query && !o[0].never_cache);
    assert!(o[1].matches("anything", "/") && o[1].never_cache);
    // The second override's error names its own line, not the first's.
    let err = errors(
        "[[override]]\nmin_fresh = \"1day\"\n[[override]]\nmin_fresh = \"2days\"\nmax_fresh = \"1day\"\n",
    );
    assert!(
        err.contains("t.toml:4:13: override.min_fresh: 2days is above max_fresh (1day)"),
        "{err}"
    );
    let err = errors("[[override]]\npath = \"/a/[\"\n");
    assert!(
        err.contains("t.toml:2:8: override.path: bad pattern"),
        "{err}"
    );
}

#[test]
fn bad_channel_values_name_key_line_and_column() {
    let err = errors("[[channel]]\nname = \"x\"\nsource = \"http://h/\"\nrate = \"fast\"\n");
    assert!(
        err.contains("t.toml:4:8: channel \"x\": rate: invalid rate"),
        "{err}"
    );
    let err = errors("[[channel]]\nname = \"x\"\nsource = \"ftp://h/\"\n");
    assert!(
        err.contains("t.toml:3:10: channel \"x\": source:") && err.contains("http"),
        "{err}"
    );
    let err = errors("[[channel]]\nname = \"x\"\nsource = \"http://h/\"\nexclude = [\"a[\"]\n");
    assert!(
        err.contains("t.toml:4:11: channel \"x\": exclude: bad pattern"),
        "{err}"
    );
}

#[test]
fn channel_limits_resolve_with_defaults_and_bad_values_name_their_line() {
    let r = resolved(
        "[cache]\nmax_size = \"40 GiB\"\n[[channel]]\nname = \"a\"\nsource = \"http://h/a/\"\n[[channel]]\nname = \"b\"\nsource = \"http://h/b/\"\nmax_depth = 4\nmax_pages = 50\nmax_page_links = 200\nmax_files = 1000\nmax_bytes = \"2 GiB\"\n",
    );
    let defaults = ChannelLimits::default();
    assert_eq!(
        r.channels[0].limits,
        ChannelLimits {
            max_bytes: Some(20 << 30),
            ..defaults
        },
        "max_bytes defaults to half the cache"
    );
    assert_eq!(
        r.channels[1].limits,
        ChannelLimits {
            max_depth: 4,
            max_pages: 50,
            max_page_links: 200,
            max_files: 1000,
            max_bytes: Some(2 << 30),
        }
    );
    let channels = "[cache]\nmax_size = \"1 GiB\"\n[[channel]]\nname = \"a\"\nsource = \"http://h/a/\"\nmax_pages = 5\n[[channel]]\nname = \"b\"\nsource = \"http://h/b/\"\n";
    for (line, key) in [
        ("max_depth = 5000", "max_depth"),
        ("max_pages = 0", "max_pages"),
        ("max_page_links = 0", "max_page_links"),
        ("max_files = 0", "max_files"),
        ("max_files = 20000000", "max_files"),
        ("max_bytes = \"100 KiB\"", "max_bytes"),
        ("max_bytes = \"2 GiB\"", "max_bytes"),
        ("max_depth = -1", "max_depth"),
        ("max_bytes = \"lots\"", "max_bytes"),
    ] {
        let err = errors(&format!("{channels}{line}\n"));
        assert!(
            err.contains(&format!(
                "t.toml:10:{}: channel \"b\": {key}:",
                key.len() + 4
            )),
            "{line}: {err}"
        );
    }
}

#[test]
fn forward_ports_take_ports_and_ranges() {
    let proxy = resolved("[server]\nforward_ports = [80, \"8000-8999\", \"443\"]\n").proxy;
    assert_eq!(
        proxy.forward_ports,
        vec![(80, 80), (8000, 8999), (443, 443)]
    );
    assert!(proxy.forward_port_allowed(8080) && !proxy.forward_port_allowed(25));
    let defaults = resolved("").proxy;
    assert!(!defaults.forward_port_allowed(25) && defaults.forward_port_allowed(3128));
    for bad in ["\"9-1\"", "\"http\"", "70000"] {
        let err = errors(&format!("[server]\n\nforward_ports = [{bad}]\n"));
        assert!(
            err.contains("t.toml:3:17: server.forward_ports: invalid port or range"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn values_that_would_overflow_a_clock_or_a_limit_are_refused() {
    for text in [
        "[server]\nidle_timeout = \"292000000000y\"\n",
        "[admin]\nheader_read_timeout = \"400days\"\n",
    ] {
        let err = errors(text);
        assert!(err.contains("longer than a year"), "{text}: {err}");
    }
    for text in [
        "[server]\nmax_connections = 18446744073709551615\n",
        "[admin]\nmax_connections = 1000000\n",
    ] {
        let err = errors(text);
        assert!(err.contains("max_connections"), "{text}: {err}");
    }
}

#[test]
fn disk_reserve_takes_a_size_or_a_percentage() {
    use outpost_store::DiskReserve;
    let reserve = |v: &str| {
        resolved(&format!("[cache]\ndisk_reserve = \"{v}\"\n"))
            .store
            .disk_reserve
    };
    assert_eq!(reserve("2GiB"), DiskReserve::Bytes(2 << 30));
    assert_eq!(reserve("512 MiB"), DiskReserve::Bytes(512 << 20));
    assert_eq!(reserve("0"), DiskReserve::Bytes(0));
    assert_eq!(reserve("1%"), DiskReserve::Percent(1.0));
    assert_eq!(reserve("2.5 %"), DiskReserve::Percent(2.5));
    assert_eq!(resolved("").store.disk_reserve, DiskReserve::Auto);
    for bad in ["lots", "80%", "-1%", "NaN%", "1%%"] {
        let err = errors(&format!("[server]\n\n[cache]\ndisk_reserve = \"{bad}\"\n"));
        assert!(
            err.contains("t.toml:4:16: cache.disk_reserve:"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn admin_limits_are_checked_in_their_own_table() {
    let err = errors(
        "[server]\nmax_connections = 10\nheader_read_timeout = \"5s\"\n[admin]\nheader_read_timeout = \"2s\"\nmax_connections = 0\n",
    );
    assert!(err.contains("t.toml:6:19: admin.max_connections"), "{err}");
    let admin = resolved("[admin]\nheader_read_timeout = \"2s\"\nmax_connections = 8\n").admin;
    assert_eq!(
        (admin.header_read_timeout, admin.max_connections),
        (Duration::from_secs(2), 8)
    );
    let admin = resolved("").admin;
    assert_eq!(
        (admin.header_read_timeout, admin.max_connections),
        (Duration::from_secs(10), 64)
    );
    assert_eq!(
        admin.generated_token_file,
        PathBuf::from("./outpost-cache/admin.token")
    );
}

#[test]
fn command_line_overrides_file() {
    let (_, r) = resolve_text(
        "[cache]\ndir = \"/from/file\"\n",
        "t.toml",
        &Overrides {
            cache_dir: Some("/from/cli".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.store.dir, PathBuf::from("/from/cli"));
}

#[test]
fn tables_of_the_wrong_shape_are_errors_with_a_position() {
    for (text, expected) in [
        ("server = 5\n", "t.toml:1:10: server: invalid type"),
        ("[[server]]\nlisten = []\n", "t.toml:1:"),
        ("channel = 3\n", "t.toml:1:11: channel: invalid type"),
        ("[wan]\nrule = 5\n", "t.toml:2:8: rule: invalid type"),
        (
            "[[channel]]\nname = 5\nsource = \"http://h/\"\n",
            "t.toml:2:8: channel.name: invalid type",
        ),
        (
            "[cache]\nhigh_watermark = \"high\"\n",
            "t.toml:2:18: cache.high_watermark: invalid type",
        ),
    ] {
        let err = errors(text);
        assert!(err.contains(expected), "{text:?}: {err}");
    }
}

#[test]
fn channel_revalidate_defaults_to_sync_with_an_hour_of_grace_and_bad_values_name_their_line() {
    let r = resolved(
        "[[channel]]\nname = \"a\"\nsource = \"http://h/a/\"\n[[channel]]\nname = \"b\"\nsource = \"http://h/b/\"\nrevalidate = \"origin\"\nrevalidate_grace = \"10m\"\n",
    );
    assert_eq!(
        (r.channels[0].revalidate, r.channels[0].revalidate_grace),
        (outpost_channel::Revalidate::Sync, Duration::from_secs(3600))
    );
    assert_eq!(
        (r.channels[1].revalidate, r.channels[1].revalidate_grace),
        (
            outpost_channel::Revalidate::Origin,
            Duration::from_secs(600)
        )
    );
    let channel = "[[channel]]\nname = \"b\"\nsource = \"http://h/b/\"\n";
    for (line, key) in [
        ("revalidate = \"never\"", "revalidate"),
        ("revalidate = true", "revalidate"),
        ("revalidate_grace = \"soon\"", "revalidate_grace"),
        ("revalidate_grace = \"90days\"", "revalidate_grace"),
    ] {
        let err = errors(&format!("{channel}{line}\n"));
        assert!(err.contains("t.toml:4:"), "{line}: {err}");
        assert!(err.contains(key), "{line}: {err}");
    }
    // A fleet manager may set them: channels come from it too.
    check_managed(
        "[[channel]]\nname = \"a\"\nsource = \"http://h/a/\"\nrevalidate = \"origin\"\nrevalidate_grace = \"2h\"\n",
        "site x",
    )
    .unwrap();
}

#[test]
fn channel_export_must_stay_out_of_the_cache_and_is_never_set_centrally() {
    let r = resolved(
        "[cache]\ndir = \"/var/cache/outpost\"\n[[channel]]\nname = \"a\"\nsource = \"http://h/a/\"\nexport = \"/srv/packages\"\n",
    );
    assert_eq!(r.channels[0].export, Some(PathBuf::from("/srv/packages")));
    let channel = "[cache]\ndir = \"/var/cache/outpost\"\n[[channel]]\nname = \"a\"\nsource = \"http://h/a/\"\n";
    for bad in ["/", "srv/packages", "/var/cache/outpost/share", "/var"] {
        let err = errors(&format!("{channel}export = \"{bad}\"\n"));
        assert!(
            err.contains("t.toml:6:10: channel \"a\": export:"),
            "{bad}: {err}"
        );
    }
    let err = check_managed(
        "[[channel]]\nname = \"a\"\nsource = \"http://h/a/\"\nexport = \"/srv/packages\"\n",
        "site x",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("channel.export: not set centrally"), "{err}");
}

/// `ChannelConfig::new` (what tests, examples and benches build channels
/// with) gives what a `[[channel]]` table of only a name and a source
/// resolves to, but for the byte limit the file bounds by the cache size.
#[test]
fn a_bare_channel_table_resolves_to_channel_config_new() {
    let r = resolved(
        "[cache]\nmax_size = \"10 GiB\"\n[[channel]]\nname = \"a\"\nsource = \"http://h/a/\"\n[[channel]]\nname = \"b\"\nsource = \"http://h/b/SHA256SUMS\"\n",
    );
    for (got, (name, source)) in r
        .channels
        .iter()
        .zip([("a", "http://h/a/"), ("b", "http://h/b/SHA256SUMS")])
    {
        let mut new = outpost_channel::ChannelConfig::new(name, source.parse().unwrap());
        assert_eq!(new.limits.max_bytes, None);
        new.limits.max_bytes = Some(5 << 30);
        assert_eq!(got, &new);
    }
    assert_eq!(r.channels[0].kind, SourceKind::Listing);
    assert_eq!(r.channels[1].kind, SourceKind::Manifest);
}
