//! Scoped desired config: drafts per scope, groups, diff, publish,
//! history, rollback, and a site's rendered document with the scope each
//! entry came from.
//!
//! Drafts (scope texts, groups, membership) live in SQLite and change
//! nothing an edge runs until published; a publish snapshots them whole
//! into `config_versions`, so membership and priorities are versioned with
//! the texts, and a rollback restores all of it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Actor, Manager, unix_secs};
use crate::error::{DbContext, ManagerError, Result};
use crate::fleet::{Published, snapshot_sites};
use crate::model::merge::{GroupDef, Origin, Snapshot, render};
use crate::scope::{Scope, check_name};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScopeDiff {
    /// The scope, or `groups` for membership and priorities.
    pub scope: String,
    /// Unified diff, published (`-`) to draft (`+`).
    pub diff: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiffReply {
    pub published_version: u64,
    pub changed: bool,
    pub scopes: Vec<ScopeDiff>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub version: u64,
    pub created: i64,
    pub created_by: String,
    pub comment: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteConfig {
    pub site: String,
    /// The published version, or none for a draft preview.
    pub version: Option<u64>,
    /// Scopes applied, first to last.
    pub layers: Vec<String>,
    pub toml: String,
    pub origins: Vec<Origin>,
}

/// A TOML document's text after a syntax check.
fn parse_table(scope: &str, text: &str) -> Result<toml::Table> {
    text.parse::<toml::Table>()
        .map_err(|e| ManagerError::BadRequest(format!("{scope}: not valid TOML: {e}")))
}

/// A scope's text for editing in place: comments, order and layout stay.
fn parse_doc(scope: &str, text: &str) -> Result<toml_edit::DocumentMut> {
    text.parse::<toml_edit::DocumentMut>()
        .map_err(|e| ManagerError::BadRequest(format!("{scope}: not valid TOML: {e}")))
}

/// `table` as an `[[channel]]` table of the editable document, by way of
/// its TOML text (the one conversion both crates agree on).
fn channel_item(scope: &str, table: &toml::Table) -> Result<toml_edit::Table> {
    let mut wrapper = toml::Table::new();
    wrapper.insert(
        "channel".into(),
        toml::Value::Array(vec![toml::Value::Table(table.clone())]),
    );
    let text =
        toml::to_string(&wrapper).map_err(|e| ManagerError::BadRequest(format!("{scope}: {e}")))?;
    parse_doc(scope, &text)?
        .get("channel")
        .and_then(|c| c.as_array_of_tables())
        .and_then(|a| a.get(0))
        .cloned()
        .ok_or_else(|| ManagerError::Internal("the channel did not render as [[channel]]".into()))
}

/// The `[[channel]]` list of a scope's document (created empty when the
/// scope has none; an inline `channel = [{...}]` array becomes one), or
/// the error for a `channel` that is something else.
fn channel_tables<'d>(
    scope: &str,
    doc: &'d mut toml_edit::DocumentMut,
) -> Result<&'d mut toml_edit::ArrayOfTables> {
    use toml_edit::{ArrayOfTables, Item, Value};
    let item = doc
        .entry("channel")
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()));
    if !item.is_array_of_tables() {
        *item = match std::mem::take(item) {
            Item::Value(Value::Array(a)) if a.is_empty() => {
                Item::ArrayOfTables(ArrayOfTables::new())
            }
            other => other
                .into_array_of_tables()
                .map(Item::ArrayOfTables)
                .map_err(|_| {
                    ManagerError::BadRequest(format!(
                        "{scope}: channel is not a list of [[channel]] tables"
                    ))
                })?,
        };
    }
    item.as_array_of_tables_mut()
        .ok_or_else(|| ManagerError::Internal("channel list lost".into()))
}

/// The channel's JSON body as a TOML table named `name`.
pub fn channel_from_json(name: &str, body: serde_json::Value) -> Result<toml::Table> {
    let serde_json::Value::Object(map) = body else {
        return Err(ManagerError::BadRequest(
            "the body must be a JSON object: the channel's keys as in the edge's TOML".into(),
        ));
    };
    let mut table = toml::Table::new();
    for (key, value) in map {
        if value.is_null() {
            continue;
        }
        let value = toml::Value::try_from(value)
            .map_err(|e| ManagerError::BadRequest(format!("channel key {key}: {e}")))?;
        table.insert(key, value);
    }
    table.insert("name".into(), toml::Value::String(name.to_string()));
    Ok(table)
}

fn line_diff(scope: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("published/{scope}"), &format!("draft/{scope}"))
        .to_string()
}

fn groups_text(groups: &BTreeMap<String, GroupDef>) -> String {
    let mut out = String::new();
    for (name, g) in groups {
        let sites: Vec<&str> = g.sites.iter().map(String::as_str).collect();
        out.push_str(&format!(
            "group {name} priority {}: {}\n",
            g.priority,
            sites.join(", ")
        ));
    }
    out
}

impl Manager {
    /// The draft: every scope's text and the groups, as a publish would
    /// snapshot them.
    pub fn draft(&self) -> Result<Snapshot> {
        let conn = self.db().connection();
        let mut snapshot = Snapshot::default();
        let mut stmt = conn
            .prepare("SELECT scope, toml FROM scope_drafts")
            .db("read drafts")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .db("read drafts")?;
        for row in rows {
            let (scope, text) = row.db("read draft")?;
            snapshot.scopes.insert(scope, text);
        }
        let mut stmt = conn
            .prepare("SELECT name, priority FROM groups")
            .db("read groups")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .db("read groups")?;
        for row in rows {
            let (name, priority) = row.db("read group")?;
            snapshot.groups.insert(
                name,
                GroupDef {
                    priority,
                    sites: BTreeSet::new(),
                },
            );
        }
        let mut stmt = conn
            .prepare("SELECT group_name, site FROM group_members")
            .db("read members")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .db("read members")?;
        for row in rows {
            let (group, site) = row.db("read member")?;
            if let Some(g) = snapshot.groups.get_mut(&group) {
                g.sites.insert(site);
            }
        }
        Ok(snapshot)
    }

    /// A scope's draft text ("" when it has none).
    pub fn scope_text(&self, scope: &Scope) -> Result<String> {
        Ok(self
            .draft()?
            .scopes
            .get(&scope.to_string())
            .cloned()
            .unwrap_or_default())
    }

    /// Replaces a scope's draft text (after a syntax check; the full check
    /// is at publish). An empty text removes the scope.
    pub fn put_scope(&self, scope: &Scope, text: &str, actor: &Actor) -> Result<()> {
        let name = scope.to_string();
        parse_table(&name, text)?;
        let conn = self.db().connection();
        if text.trim().is_empty() {
            conn.execute("DELETE FROM scope_drafts WHERE scope = ?1", [&name])
                .db("delete draft")?;
        } else {
            conn.execute(
                "INSERT INTO scope_drafts (scope, toml) VALUES (?1, ?2)
                 ON CONFLICT(scope) DO UPDATE SET toml = excluded.toml",
                [&name, text],
            )
            .db("write draft")?;
        }
        drop(conn);
        self.audit(actor, "scope put", &format!("{name}: {} bytes", text.len()))
    }

    /// Adds or replaces channel `name` in a scope's draft. The draft is
    /// re-serialised, so comments in that scope's text are not kept.
    pub fn put_channel(
        &self,
        scope: &Scope,
        name: &str,
        body: serde_json::Value,
        actor: &Actor,
    ) -> Result<()> {
        check_name("channel", name)?;
        let channel = channel_from_json(name, body)?;
        let scope_name = scope.to_string();
        let detail = serde_json::to_string(&channel).unwrap_or_default();
        let current = self.scope_text(scope)?;
        // In place, so the admin's comments and layout in the scope stay.
        let mut edited = parse_doc(&scope_name, &current)?;
        let tables = channel_tables(&scope_name, &mut edited)?;
        let mut item = channel_item(&scope_name, &channel)?;
        let existing = tables
            .iter()
            .position(|c| c.get("name").and_then(|n| n.as_str()) == Some(name));
        match existing.and_then(|at| tables.get_mut(at)) {
            // The document prints tables in their position order: a
            // replacement takes the old one's place, a new one goes after
            // everything.
            Some(old) => {
                *item.decor_mut() = old.decor().clone();
                item.set_position(old.position());
                *old = item;
            }
            None => {
                item.set_position(None);
                tables.push(item);
            }
        }
        self.put_scope_quiet(&scope_name, &edited.to_string())?;
        self.audit(
            actor,
            "channel put",
            &format!("{scope_name} {name}: {detail}"),
        )
    }

    pub fn delete_channel(&self, scope: &Scope, name: &str, actor: &Actor) -> Result<()> {
        let scope_name = scope.to_string();
        let current = self.scope_text(scope)?;
        let mut edited = parse_doc(&scope_name, &current)?;
        let tables = channel_tables(&scope_name, &mut edited)?;
        let before = tables.len();
        tables.retain(|c| c.get("name").and_then(|n| n.as_str()) != Some(name));
        if tables.len() == before {
            return Err(ManagerError::NotFound(format!(
                "{scope_name} has no channel {name}"
            )));
        }
        if tables.is_empty() {
            edited.remove("channel");
        }
        self.put_scope_quiet(&scope_name, &edited.to_string())?;
        self.audit(actor, "channel delete", &format!("{scope_name} {name}"))
    }

    fn put_scope_quiet(&self, scope: &str, text: &str) -> Result<()> {
        let conn = self.db().connection();
        if text.trim().is_empty() {
            conn.execute("DELETE FROM scope_drafts WHERE scope = ?1", [scope])
                .db("delete draft")?;
        } else {
            conn.execute(
                "INSERT INTO scope_drafts (scope, toml) VALUES (?1, ?2)
                 ON CONFLICT(scope) DO UPDATE SET toml = excluded.toml",
                [scope, text],
            )
            .db("write draft")?;
        }
        Ok(())
    }

    /// `GET /api/v1/config/diff`: draft against published.
    pub fn diff(&self) -> Result<DiffReply> {
        let draft = self.draft()?;
        let (version, published) = {
            let fleet = self.read();
            (fleet.published.version, fleet.published.snapshot.clone())
        };
        let mut scopes = Vec::new();
        let names: BTreeSet<&String> = draft.scopes.keys().chain(published.scopes.keys()).collect();
        for name in names {
            let old = published.scopes.get(name).map(String::as_str).unwrap_or("");
            let new = draft.scopes.get(name).map(String::as_str).unwrap_or("");
            if old != new {
                scopes.push(ScopeDiff {
                    scope: name.clone(),
                    diff: line_diff(name, old, new),
                });
            }
        }
        let (old, new) = (groups_text(&published.groups), groups_text(&draft.groups));
        if old != new {
            scopes.push(ScopeDiff {
                scope: "groups".into(),
                diff: line_diff("groups", &old, &new),
            });
        }
        Ok(DiffReply {
            published_version: version,
            changed: !scopes.is_empty(),
            scopes,
        })
    }

    /// Every check a publish makes: each scope's text, then each distinct
    /// rendered site document, with the validator (`check-config`'s
    /// messages). All messages, not only the first.
    pub fn validate(&self, snapshot: &Snapshot) -> Result<()> {
        let mut messages = Vec::new();
        for (scope, text) in &snapshot.scopes {
            if let Err(e) = (self.validator)(text, scope) {
                messages.push(e);
            }
        }
        if messages.is_empty() {
            let mut sites: Vec<String> = self.read().edges.keys().cloned().collect();
            sites.extend(snapshot_sites(snapshot));
            // A site in no group and with no scope of its own: global only.
            sites.push(String::new());
            sites.sort();
            sites.dedup();
            // Sites with the same layers render the same document: each
            // set of layers is rendered and checked once.
            let mut seen_layers = BTreeSet::new();
            let mut seen_docs = BTreeSet::new();
            for site in sites {
                let layers: Vec<String> = snapshot
                    .layers_of(&site)
                    .into_iter()
                    .map(|(scope, _)| scope)
                    .collect();
                if !seen_layers.insert(layers) {
                    continue;
                }
                match render(snapshot, &site) {
                    Ok(doc) => {
                        if seen_docs.insert(doc.toml.clone()) {
                            let source = if site.is_empty() {
                                "rendered for sites with global only".to_string()
                            } else {
                                format!("rendered for site:{site}")
                            };
                            if let Err(e) = (self.validator)(&doc.toml, &source) {
                                messages.push(e);
                            }
                        }
                    }
                    Err(e) => messages.push(e.to_string()),
                }
            }
        }
        if messages.is_empty() {
            Ok(())
        } else {
            Err(ManagerError::Invalid(messages.join("\n")))
        }
    }

    /// Validates `snapshot` and makes it the next published version.
    fn publish_snapshot(&self, snapshot: Snapshot, comment: &str, actor: &Actor) -> Result<u64> {
        self.validate(&snapshot)?;
        let json = serde_json::to_string(&snapshot)
            .map_err(|e| ManagerError::Internal(format!("snapshot: {e}")))?;
        // Rendered outside the fleet lock (10,000 sites); a site enrolled
        // meanwhile is rendered when the new version is swapped in.
        let (version, sites) = {
            let fleet = self.read();
            let sites: Vec<String> = fleet.edges.keys().cloned().collect();
            (fleet.published.version + 1, sites)
        };
        let mut published = Published::new(version, snapshot);
        published
            .render_all(sites.iter().map(String::as_str))
            .map_err(|e| ManagerError::Invalid(e.to_string()))?;
        let mut fleet = self.write();
        if fleet.published.version + 1 != version {
            return Err(ManagerError::Conflict(
                "another publish happened meanwhile: try again".into(),
            ));
        }
        self.db()
            .connection()
            .execute(
                "INSERT INTO config_versions (version, created, created_by, comment, snapshot)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![version as i64, unix_secs(), actor.who, comment, json],
            )
            .db("write config version")?;
        let late: Vec<String> = fleet
            .edges
            .keys()
            .filter(|s| !published.rendered.contains_key(*s))
            .cloned()
            .collect();
        for site in late {
            let _ = published.rendered_for(&site);
        }
        fleet.published = published;
        drop(fleet);
        self.wake_long_polls();
        Ok(version)
    }

    /// `POST /api/v1/config/publish`.
    pub fn publish(&self, comment: &str, actor: &Actor) -> Result<u64> {
        let version = self.publish_snapshot(self.draft()?, comment, actor)?;
        self.audit(actor, "publish", &format!("version {version}: {comment}"))?;
        Ok(version)
    }

    /// `POST /api/v1/config/rollback?version=N`: a new version with N's
    /// content; the drafts become N's too, so the next publish starts
    /// from what runs.
    pub fn rollback(&self, to: u64, actor: &Actor) -> Result<u64> {
        let json: String = self
            .db()
            .connection()
            .query_row(
                "SELECT snapshot FROM config_versions WHERE version = ?1",
                [to as i64],
                |r| r.get(0),
            )
            .map_err(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => {
                    ManagerError::NotFound(format!("no config version {to}"))
                }
                e => ManagerError::Db {
                    context: "read config version".into(),
                    source: e,
                },
            })?;
        let snapshot: Snapshot = serde_json::from_str(&json)
            .map_err(|e| ManagerError::Internal(format!("config version {to}: {e}")))?;
        let version = self.publish_snapshot(
            snapshot.clone(),
            &format!("rollback to version {to}"),
            actor,
        )?;
        self.replace_drafts(&snapshot)?;
        self.audit(
            actor,
            "rollback",
            &format!("version {version} = version {to}"),
        )?;
        Ok(version)
    }

    fn replace_drafts(&self, snapshot: &Snapshot) -> Result<()> {
        let mut conn = self.db().connection();
        let tx = conn.transaction().db("begin")?;
        tx.execute_batch(
            "DELETE FROM scope_drafts; DELETE FROM group_members; DELETE FROM groups;",
        )
        .db("clear drafts")?;
        for (scope, text) in &snapshot.scopes {
            tx.execute(
                "INSERT INTO scope_drafts (scope, toml) VALUES (?1, ?2)",
                [scope, text],
            )
            .db("write draft")?;
        }
        for (name, g) in &snapshot.groups {
            tx.execute(
                "INSERT INTO groups (name, priority) VALUES (?1, ?2)",
                rusqlite::params![name, g.priority],
            )
            .db("write group")?;
            for site in &g.sites {
                tx.execute(
                    "INSERT INTO group_members (group_name, site) VALUES (?1, ?2)",
                    [name, site],
                )
                .db("write member")?;
            }
        }
        tx.commit().db("commit drafts")
    }

    /// `GET /api/v1/config/history`, newest first.
    pub fn history(&self) -> Result<Vec<HistoryEntry>> {
        let conn = self.db().connection();
        let mut stmt = conn
            .prepare(
                "SELECT version, created, created_by, comment FROM config_versions
                 ORDER BY version DESC",
            )
            .db("read history")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(HistoryEntry {
                    version: r.get::<_, i64>(0)? as u64,
                    created: r.get(1)?,
                    created_by: r.get(2)?,
                    comment: r.get(3)?,
                })
            })
            .db("read history")?;
        rows.collect::<Result<_, _>>().db("read history")
    }

    /// `GET /api/v1/sites/{site}/config`: published (or draft) rendering.
    pub fn site_config(&self, site: &str, draft: bool) -> Result<SiteConfig> {
        check_name("site", site)?;
        let (snapshot, version) = if draft {
            (self.draft()?, None)
        } else {
            let fleet = self.read();
            (
                fleet.published.snapshot.clone(),
                Some(fleet.published.version),
            )
        };
        let doc = render(&snapshot, site).map_err(|e| ManagerError::Invalid(e.to_string()))?;
        Ok(SiteConfig {
            site: site.to_string(),
            version,
            layers: snapshot
                .layers_of(site)
                .into_iter()
                .map(|(scope, _)| scope)
                .collect(),
            toml: doc.toml,
            origins: doc.origins,
        })
    }
}
