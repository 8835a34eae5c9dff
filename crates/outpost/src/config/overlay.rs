//! The managed overlay: a fleet manager's document (`managed.toml` in the
//! cache directory, see [`super::check_managed`]) laid over the edge's own
//! file, at `serve`, `check-config` and every reload.
//!
//! Rule: the managed document wins for the keys it sets. A `[[channel]]`
//! replaces the local one of the same name whole (else it is added); an
//! `[[override]]` replaces the local one with the same `host` and `path`
//! (else it is added); each `[wan]` key (`rule` being one key: the list of
//! rules) and `server.allowed_clients` / `server.allowed_destinations`
//! replace the local key.
//!
//! Invariants:
//! - an error names the file it comes from: the edge's file, the managed
//!   document, or (for what only the combination breaks) both;
//! - the edge's file alone decides where the cache directory, and so the
//!   managed document, is.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::{ConfigError, ConfigErrors, Overrides, Resolved, check_managed, resolve_text};

/// The managed document's file name, in the cache directory.
pub const MANAGED_FILE_NAME: &str = "managed.toml";

/// A configuration with the managed document laid over it.
#[derive(Debug, Clone)]
pub struct Layered {
    pub resolved: Resolved,
    /// The managed document, when there is one.
    pub managed: Option<PathBuf>,
    /// Local channels the managed document replaced, by name.
    pub replaced_channels: Vec<String>,
}

/// Reads the edge's file (or none: the command line alone) and the managed
/// document in its cache directory, and resolves them laid over each other.
pub fn load_layered(path: Option<&Path>, overrides: &Overrides) -> Result<Layered, ConfigErrors> {
    let (local, source) = match path {
        Some(path) => {
            let source = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
                file: source.clone(),
                errors: vec![ConfigError {
                    position: None,
                    message: format!("cannot read the config file: {e}"),
                }],
            })?;
            (text, source)
        }
        None => (String::new(), "command line".to_string()),
    };
    let (_, alone) = resolve_text(&local, &source, overrides)?;
    let managed_path = alone.store.dir.join(MANAGED_FILE_NAME);
    let managed = match std::fs::read_to_string(&managed_path) {
        Ok(text) => text,
        // No cache directory yet (or a file in its place, which the store
        // reports when it opens): no managed document either.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(Layered {
                resolved: alone,
                managed: None,
                replaced_channels: Vec::new(),
            });
        }
        Err(e) => {
            return Err(ConfigErrors {
                file: managed_path.display().to_string(),
                errors: vec![ConfigError {
                    position: None,
                    message: format!("cannot read the managed config: {e}"),
                }],
            });
        }
    };
    let managed_source = managed_path.display().to_string();
    let (resolved, replaced_channels) =
        resolve_layered(&local, &source, &managed, &managed_source, overrides)?;
    Ok(Layered {
        resolved,
        managed: Some(managed_path),
        replaced_channels,
    })
}

/// Resolves `local` with the managed document `managed` laid over it, as
/// `serve` would; also returns the local channels it replaced. The check a
/// fleet client runs on a config before it writes it.
pub fn resolve_layered(
    local: &str,
    local_source: &str,
    managed: &str,
    managed_source: &str,
    overrides: &Overrides,
) -> Result<(Resolved, Vec<String>), ConfigErrors> {
    resolve_text(local, local_source, overrides)?;
    check_managed(managed, managed_source)?;
    let both = format!("{local_source} with {managed_source} laid over");
    let parse = |text: &str| {
        text.parse::<Table>().map_err(|e| ConfigErrors {
            file: both.clone(),
            errors: vec![ConfigError {
                position: None,
                message: e.to_string(),
            }],
        })
    };
    let (mut merged, managed_table) = (parse(local)?, parse(managed)?);
    let managed_names: Vec<String> = managed_table
        .get("channel")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    let replaced = overlay(&mut merged, managed_table);
    let text = toml::to_string(&merged).map_err(|e| ConfigErrors {
        file: both.clone(),
        errors: vec![ConfigError {
            position: None,
            message: format!("cannot combine the two: {e}"),
        }],
    })?;
    // Each document checked clean alone: what is left is about the
    // combination, whose line numbers would point at neither file.
    let (_, mut resolved) = resolve_text(&text, &both, overrides).map_err(|mut e| {
        for error in &mut e.errors {
            error.position = None;
        }
        e
    })?;
    for channel in &mut resolved.channels {
        channel.managed = managed_names.contains(&channel.name);
    }
    Ok((resolved, replaced))
}

/// Lays `managed` over `local` (both checked documents); returns the local
/// channels replaced.
pub fn overlay(local: &mut Table, managed: Table) -> Vec<String> {
    let mut replaced = Vec::new();
    for (key, value) in managed {
        match (key.as_str(), value) {
            ("channel", Value::Array(channels)) => {
                let name = |t: &Value| t.get("name").and_then(Value::as_str).map(str::to_string);
                for channel in channels {
                    let list = array(local, "channel");
                    match list
                        .iter_mut()
                        .find(|c| name(c).is_some() && name(c) == name(&channel))
                    {
                        Some(existing) => {
                            replaced.extend(name(&channel));
                            *existing = channel;
                        }
                        None => list.push(channel),
                    }
                }
            }
            ("override", Value::Array(rules)) => {
                let key = |t: &Value| {
                    (
                        t.get("host").and_then(Value::as_str).map(str::to_string),
                        t.get("path").and_then(Value::as_str).map(str::to_string),
                    )
                };
                for rule in rules {
                    let list = array(local, "override");
                    match list.iter_mut().find(|r| key(r) == key(&rule)) {
                        Some(existing) => *existing = rule,
                        None => list.push(rule),
                    }
                }
            }
            (table @ ("wan" | "server"), Value::Table(keys)) => {
                let target = local
                    .entry(table)
                    .or_insert_with(|| Value::Table(Table::new()));
                if !target.is_table() {
                    *target = Value::Table(Table::new());
                }
                if let Value::Table(target) = target {
                    target.extend(keys);
                }
            }
            (_, value) => {
                // check_managed allows nothing else; kept whole if it did.
                local.insert(key, value);
            }
        }
    }
    replaced
}

fn array<'t>(table: &'t mut Table, key: &str) -> &'t mut Vec<Value> {
    let entry = table.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if !entry.is_array() {
        *entry = Value::Array(Vec::new());
    }
    match entry {
        Value::Array(list) => list,
        _ => unreachable!("made an array above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = r#"
[server]
listen = ["127.0.0.1:3128"]
allowed_clients = ["10.0.0.0/8"]
[wan]
rate = "10 Mbit/s"
prepos_rate = "1 Mbit/s"
[[channel]]
name = "apps"
source = "http://local.example/apps/"
[[channel]]
name = "local-only"
source = "http://local.example/tools/"
[[override]]
path = "/pkgs/*"
min_fresh = "1h"
"#;

    fn layered(managed: &str) -> Result<(Resolved, Vec<String>), ConfigErrors> {
        resolve_layered(
            LOCAL,
            "outpost.toml",
            managed,
            "managed.toml",
            &Overrides::default(),
        )
    }

    #[test]
    fn managed_values_win_for_the_keys_they_set_and_the_rest_stays_local() {
        let managed = r#"
[server]
allowed_clients = ["192.168.0.0/16"]
[wan]
prepos_rate = "2 Mbit/s"
[[wan.rule]]
class = "prepos"
when = "mon-fri 08:00-18:00"
rate = "512 kbit/s"
[[channel]]
name = "apps"
source = "http://manager.example/apps/"
[[channel]]
name = "drivers"
source = "http://manager.example/drivers/"
[[override]]
path = "/pkgs/*"
min_fresh = "1day"
[[override]]
path = "/iso/*"
never_cache = true
"#;
        let (resolved, replaced) = layered(managed).unwrap();
        assert_eq!(replaced, vec!["apps".to_string()]);
        let channels: Vec<(&str, &str)> = resolved
            .channels
            .iter()
            .map(|c| (c.name.as_str(), c.source.as_str()))
            .collect();
        assert_eq!(
            channels,
            vec![
                ("apps", "http://manager.example/apps/"),
                ("local-only", "http://local.example/tools/"),
                ("drivers", "http://manager.example/drivers/"),
            ]
        );
        let p = &resolved.proxy;
        assert_eq!(p.allowed_clients, vec!["192.168.0.0/16".parse().unwrap()]);
        assert_eq!(p.listen, vec!["127.0.0.1:3128".parse().unwrap()]);
        assert_eq!(p.overrides.len(), 2, "{:?}", p.overrides);
        // The local site rate stays, the managed prepos rate wins.
        let (_, local) = resolve_text(LOCAL, "l", &Overrides::default()).unwrap();
        assert_eq!(p.wan.site, local.proxy.wan.site);
        assert_ne!(p.wan.prepos, local.proxy.wan.prepos);
    }

    #[test]
    fn errors_name_the_file_they_come_from() {
        let err = layered("[cache]\nmax_size = \"1G\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("managed.toml: cache: not set centrally"),
            "{err}"
        );
        let err = layered("[[channel]]\nname = \"x\"\nsource = \"http://o/x/\"\nrate = \"fast\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("managed.toml:4:"), "{err}");
        let err = resolve_layered(
            "[wan]\nrate = \"slow\"\n",
            "outpost.toml",
            "",
            "managed.toml",
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("outpost.toml:2:"), "{err}");
    }

    #[test]
    fn what_only_the_combination_breaks_names_both_files() {
        // Fine alone (10 GiB default cache); not with the edge's 100 MiB.
        let local = "[cache]\nmax_size = \"100 MiB\"\n";
        let managed =
            "[[channel]]\nname = \"big\"\nsource = \"http://o/big/\"\nmax_bytes = \"1 GiB\"\n";
        let err = resolve_layered(
            local,
            "outpost.toml",
            managed,
            "managed.toml",
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("outpost.toml with managed.toml laid over: channel \"big\": max_bytes"),
            "{err}"
        );
    }

    #[test]
    fn load_reads_the_managed_file_in_the_cache_dir() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("outpost.toml");
        let cache = dir.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        std::fs::write(
            &config,
            format!("[cache]\ndir = {:?}\n", cache.display().to_string()),
        )
        .unwrap();
        let alone = load_layered(Some(&config), &Overrides::default()).unwrap();
        assert!(alone.managed.is_none() && alone.resolved.channels.is_empty());
        std::fs::write(
            cache.join(MANAGED_FILE_NAME),
            "[[channel]]\nname = \"apps\"\nsource = \"http://o/apps/\"\n",
        )
        .unwrap();
        let layered = load_layered(Some(&config), &Overrides::default()).unwrap();
        assert_eq!(layered.managed, Some(cache.join(MANAGED_FILE_NAME)));
        assert_eq!(layered.resolved.channels[0].name, "apps");
        std::fs::write(cache.join(MANAGED_FILE_NAME), "[log]\nlevel = \"debug\"\n").unwrap();
        let err = load_layered(Some(&config), &Overrides::default()).unwrap_err();
        assert_eq!(
            err.file,
            cache.join(MANAGED_FILE_NAME).display().to_string()
        );
    }
}
