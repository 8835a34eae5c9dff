//! Precedence: how a site's managed document is rendered from the scopes.
//!
//! Layers apply in order global, then the site's groups by `priority`
//! (lower first; ties by name), then the site itself; a later layer wins:
//! - `[[channel]]` entries are keyed by `name`, `[[override]]` entries by
//!   their `host` + `path`: a later entry with the same key replaces the
//!   earlier one whole (it keeps the earlier one's position);
//! - `[wan]` and `[server]` keys: a later layer replaces the key (so
//!   `wan.rule`, the `[[wan.rule]]` list, is replaced as a whole);
//! - any other top-level key is replaced whole (the validator refuses
//!   them anyway, with `check-config`'s message).
//!
//! The published snapshot holds the scopes' texts and the groups, so a
//! rollback restores membership and priority with the texts.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Everything that decides what every site runs: one published version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Scope (`global`, `group:G`, `site:S`) -> TOML text.
    pub scopes: BTreeMap<String, String>,
    pub groups: BTreeMap<String, GroupDef>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDef {
    pub priority: i64,
    pub sites: BTreeSet<String>,
}

impl Snapshot {
    /// The site's groups in precedence order (applied first to last).
    pub fn groups_of(&self, site: &str) -> Vec<&str> {
        let mut groups: Vec<(&i64, &str)> = self
            .groups
            .iter()
            .filter(|(_, g)| g.sites.contains(site))
            .map(|(name, g)| (&g.priority, name.as_str()))
            .collect();
        groups.sort();
        groups.into_iter().map(|(_, name)| name).collect()
    }

    /// The scopes that apply to `site`, in the order they are laid.
    pub fn layers_of(&self, site: &str) -> Vec<(String, &str)> {
        let mut names = vec!["global".to_string()];
        names.extend(self.groups_of(site).iter().map(|g| format!("group:{g}")));
        names.push(format!("site:{site}"));
        names
            .into_iter()
            .filter_map(|scope| {
                let text = self.scopes.get(&scope)?;
                Some((scope, text.as_str()))
            })
            .collect()
    }
}

/// Where one entry of a rendered document came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// `channel`, `override`, `wan`, `server`, or another top-level key.
    pub table: String,
    /// The channel's name, the override's host+path, the wan/server key.
    pub key: String,
    pub scope: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendered {
    pub toml: String,
    pub origins: Vec<Origin>,
}

impl Rendered {
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.origins
            .iter()
            .filter(|o| o.table == "channel")
            .map(|o| o.key.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{scope}: {message}")]
pub struct MergeError {
    pub scope: String,
    pub message: String,
}

/// Renders `site`'s document from `snapshot`.
pub fn render(snapshot: &Snapshot, site: &str) -> Result<Rendered, MergeError> {
    render_layers(&snapshot.layers_of(site))
}

/// A list of entries keyed for replacement, in first-appearance order.
#[derive(Default)]
struct Keyed {
    entries: Vec<(String, toml::Value, String)>,
}

impl Keyed {
    fn put(&mut self, key: String, value: toml::Value, scope: &str) {
        match self.entries.iter_mut().find(|(k, _, _)| *k == key) {
            Some(slot) => {
                slot.1 = value;
                slot.2 = scope.to_string();
            }
            None => self.entries.push((key, value, scope.to_string())),
        }
    }
}

/// Lays `(scope, text)` layers first to last.
pub fn render_layers(layers: &[(String, &str)]) -> Result<Rendered, MergeError> {
    let mut channels = Keyed::default();
    let mut overrides = Keyed::default();
    let mut tables: BTreeMap<String, BTreeMap<String, (toml::Value, String)>> = BTreeMap::new();
    let mut others: BTreeMap<String, (toml::Value, String)> = BTreeMap::new();
    for (scope, text) in layers {
        let fail = |message: String| MergeError {
            scope: scope.clone(),
            message,
        };
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| fail(format!("not valid TOML: {}", e.message())))?;
        for (key, value) in doc {
            match key.as_str() {
                "channel" | "override" => {
                    let toml::Value::Array(items) = value else {
                        return Err(fail(format!("{key}: expected [[{key}]] entries")));
                    };
                    for (i, item) in items.into_iter().enumerate() {
                        let Some(table) = item.as_table() else {
                            return Err(fail(format!("{key} entry {}: not a table", i + 1)));
                        };
                        if key == "channel" {
                            let Some(name) = table.get("name").and_then(|n| n.as_str()) else {
                                return Err(fail(format!("channel entry {}: no name", i + 1)));
                            };
                            channels.put(name.to_string(), item.clone(), scope);
                        } else {
                            overrides.put(override_key(table), item.clone(), scope);
                        }
                    }
                }
                "wan" | "server" => {
                    let toml::Value::Table(entries) = value else {
                        return Err(fail(format!("{key}: expected a [{key}] table")));
                    };
                    let slot = tables.entry(key).or_default();
                    for (k, v) in entries {
                        slot.insert(k, (v, scope.clone()));
                    }
                }
                _ => {
                    others.insert(key, (value, scope.clone()));
                }
            }
        }
    }
    let mut doc = toml::Table::new();
    let mut origins = Vec::new();
    for (table, keyed) in [("channel", channels), ("override", overrides)] {
        if keyed.entries.is_empty() {
            continue;
        }
        let mut items = Vec::new();
        for (key, value, scope) in keyed.entries {
            origins.push(Origin {
                table: table.into(),
                key,
                scope,
            });
            items.push(value);
        }
        doc.insert(table.into(), toml::Value::Array(items));
    }
    for (table, entries) in tables {
        let mut out = toml::Table::new();
        for (key, (value, scope)) in entries {
            origins.push(Origin {
                table: table.clone(),
                key: key.clone(),
                scope,
            });
            out.insert(key, value);
        }
        doc.insert(table, toml::Value::Table(out));
    }
    for (key, (value, scope)) in others {
        origins.push(Origin {
            table: key.clone(),
            key: key.clone(),
            scope,
        });
        doc.insert(key, value);
    }
    let toml = toml::to_string(&doc).map_err(|e| MergeError {
        scope: "rendered".into(),
        message: e.to_string(),
    })?;
    Ok(Rendered { toml, origins })
}

fn override_key(table: &toml::Table) -> String {
    let part = |k: &str| table.get(k).and_then(|v| v.as_str()).unwrap_or("");
    format!("{}{}", part("host"), part("path"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        s.scopes.insert(
            "global".into(),
            r#"
[wan]
rate = "10 Mbit/s"
prepos_rate = "2 Mbit/s"
[[channel]]
name = "apps"
source = "http://global/apps/"
[[channel]]
name = "docs"
source = "http://global/docs/"
"#
            .into(),
        );
        s.scopes.insert(
            "group:east".into(),
            "[[channel]]\nname = \"apps\"\nsource = \"http://east/apps/\"\n[wan]\nrate = \"5 Mbit/s\"\n"
                .into(),
        );
        s.scopes.insert(
            "group:lab".into(),
            "[[channel]]\nname = \"apps\"\nsource = \"http://lab/apps/\"\n".into(),
        );
        s.scopes.insert(
            "site:oslo".into(),
            "[server]\nallowed_clients = [\"10.1.0.0/16\"]\n[[channel]]\nname = \"docs\"\nsource = \"http://oslo/docs/\"\n"
                .into(),
        );
        s.groups.insert(
            "east".into(),
            GroupDef {
                priority: 10,
                sites: ["oslo".to_string(), "bergen".to_string()].into(),
            },
        );
        s.groups.insert(
            "lab".into(),
            GroupDef {
                priority: 20,
                sites: ["oslo".to_string()].into(),
            },
        );
        s
    }

    fn scope_of<'a>(r: &'a Rendered, table: &str, key: &str) -> &'a str {
        &r.origins
            .iter()
            .find(|o| o.table == table && o.key == key)
            .unwrap()
            .scope
    }

    #[test]
    fn site_beats_groups_beat_global_and_higher_priority_groups_win() {
        let s = snapshot();
        let oslo = render(&s, "oslo").unwrap();
        assert_eq!(scope_of(&oslo, "channel", "apps"), "group:lab");
        assert_eq!(scope_of(&oslo, "channel", "docs"), "site:oslo");
        assert_eq!(scope_of(&oslo, "wan", "rate"), "group:east");
        assert_eq!(scope_of(&oslo, "wan", "prepos_rate"), "global");
        assert_eq!(scope_of(&oslo, "server", "allowed_clients"), "site:oslo");
        let doc: toml::Table = oslo.toml.parse().unwrap();
        let channels = doc["channel"].as_array().unwrap();
        // Replaced whole, in the position of the first definition.
        assert_eq!(channels[0]["source"].as_str(), Some("http://lab/apps/"));
        assert_eq!(channels[1]["source"].as_str(), Some("http://oslo/docs/"));
        assert_eq!(doc["wan"]["rate"].as_str(), Some("5 Mbit/s"));

        let bergen = render(&s, "bergen").unwrap();
        assert_eq!(scope_of(&bergen, "channel", "apps"), "group:east");
        assert_eq!(scope_of(&bergen, "channel", "docs"), "global");
        let elsewhere = render(&s, "tromso").unwrap();
        assert_eq!(elsewhere.channels().collect::<Vec<_>>(), ["apps", "docs"]);
    }

    #[test]
    fn equal_priorities_apply_by_name() {
        let mut s = snapshot();
        s.groups.get_mut("lab").unwrap().priority = 10;
        assert_eq!(s.groups_of("oslo"), ["east", "lab"]);
        s.groups.get_mut("east").unwrap().priority = 11;
        assert_eq!(s.groups_of("oslo"), ["lab", "east"]);
    }

    #[test]
    fn overrides_are_keyed_by_host_and_path() {
        let layers = [
            (
                "global".to_string(),
                "[[override]]\nhost = \"a\"\npath = \"/x\"\nmin_fresh = \"1h\"\n[[override]]\nhost = \"b\"\nmin_fresh = \"1h\"\n",
            ),
            (
                "site:s".to_string(),
                "[[override]]\nhost = \"a\"\npath = \"/x\"\nnever_cache = true\n",
            ),
        ];
        let r = render_layers(&layers).unwrap();
        let doc: toml::Table = r.toml.parse().unwrap();
        let o = doc["override"].as_array().unwrap();
        assert_eq!(o.len(), 2);
        assert!(o[0].get("min_fresh").is_none());
        assert_eq!(o[0]["never_cache"].as_bool(), Some(true));
    }

    #[test]
    fn bad_text_names_its_scope() {
        let layers = [("group:g".to_string(), "[[channel]]\nsource = 1\n")];
        let e = render_layers(&layers).unwrap_err();
        assert_eq!(e.to_string(), "group:g: channel entry 1: no name");
        let layers = [("global".to_string(), "[[channel")];
        assert!(
            render_layers(&layers)
                .unwrap_err()
                .to_string()
                .starts_with("global: not valid TOML")
        );
    }

    #[test]
    fn an_empty_fleet_renders_an_empty_document() {
        let r = render(&Snapshot::default(), "x").unwrap();
        assert_eq!(r.toml, "");
        assert!(r.origins.is_empty());
    }
}
