//! The fleet as the manager holds it in memory: every edge with its last
//! report, the published config with each site's rendered document, and
//! the actions still pending per site. Heartbeats touch only this; the
//! flusher (`crate::flush`) writes changed edges to SQLite in batches.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use outpost_protocol::{ActionOrder, ConfigRejection, EdgeReport, EdgeState};

use crate::model::merge::{MergeError, Rendered, Snapshot, render};
use crate::model::state::{Liveness, edge_state};

#[derive(Debug, Clone)]
pub struct EdgeRecord {
    pub site: String,
    pub hostname: String,
    pub credential_hash: String,
    /// Unix seconds.
    pub enrolled: i64,
    /// Unix milliseconds of enrolment (seconds precision after a restart):
    /// a new edge's grace period starts here.
    pub enrolled_ms: i64,
    /// Liveness counts from no earlier than this: the manager's start, for
    /// edges that were not down when it stopped. A manager outage is not
    /// the edges' fault; without it every edge would turn down (and raise
    /// an alert) at the manager's restart until its next heartbeat.
    pub seen_floor_ms: i64,
    pub approved: bool,
    /// Unix seconds of the revocation.
    pub revoked: Option<i64>,
    pub version: Option<String>,
    /// Unix milliseconds of the last heartbeat.
    pub last_seen_ms: Option<i64>,
    pub config_applied: u64,
    pub config_error: Option<ConfigRejection>,
    pub report: Option<Arc<EdgeReport>>,
    pub state: EdgeState,
    /// Unix seconds.
    pub state_since: i64,
    /// Changed since the last flush to SQLite.
    pub dirty: bool,
    /// `state` changed since the last flush: the flush records it in the
    /// state history.
    pub state_dirty: bool,
    /// Traffic counted since the last flush, by UTC day.
    pub traffic_pending: Vec<(i64, crate::model::traffic::Traffic)>,
    /// The channels of `report` differ from the report last written to
    /// SQLite (see `flush::REPORT_WRITE_EVERY`).
    pub report_changed: bool,
    /// Unix milliseconds when the report was last written.
    pub report_written_ms: i64,
    /// (last heartbeat, state) when the alert conditions were last
    /// evaluated: the evaluator skips an edge where they did not move.
    pub alert_basis: Option<(Option<i64>, EdgeState)>,
}

impl EdgeRecord {
    pub fn liveness(&self) -> Liveness {
        Liveness {
            revoked: self.revoked.is_some(),
            approved: self.approved,
            last_seen_ms: self
                .last_seen_ms
                .unwrap_or(self.enrolled_ms)
                .max(self.seen_floor_ms),
        }
    }

    pub fn compute_state(&self, now_ms: i64, heartbeat_ms: u64) -> EdgeState {
        edge_state(self.liveness(), now_ms, heartbeat_ms)
    }
}

/// The published version and what it renders to.
#[derive(Debug, Default)]
pub struct Published {
    pub version: u64,
    pub snapshot: Snapshot,
    /// Site -> its rendered document. Sites sharing layers share one.
    pub rendered: HashMap<String, Arc<Rendered>>,
    /// The scopes whose layers make a document -> that document: 10,000
    /// sites in a handful of groups hold a handful of documents, whether
    /// they were rendered at publish or one by one as they enrolled.
    by_layers: HashMap<Vec<String>, Arc<Rendered>>,
}

impl Published {
    pub fn new(version: u64, snapshot: Snapshot) -> Self {
        Self {
            version,
            snapshot,
            rendered: HashMap::new(),
            by_layers: HashMap::new(),
        }
    }

    fn layers_key(&self, site: &str) -> Vec<String> {
        self.snapshot
            .layers_of(site)
            .into_iter()
            .map(|(scope, _)| scope)
            .collect()
    }

    /// The document for `site`'s layers: the one already rendered for the
    /// same layers, or a new one.
    fn render_shared(&mut self, site: &str) -> Result<Arc<Rendered>, MergeError> {
        let key = self.layers_key(site);
        if let Some(doc) = self.by_layers.get(&key) {
            return Ok(doc.clone());
        }
        let doc = Arc::new(render(&self.snapshot, site)?);
        self.by_layers.insert(key, doc.clone());
        Ok(doc)
    }

    /// Renders every site in `sites` (and in the snapshot), each distinct
    /// set of layers once: 10,000 sites in a handful of groups cost a
    /// handful of merges.
    pub fn render_all<'a>(
        &mut self,
        sites: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), MergeError> {
        self.by_layers.clear();
        let mut all: Vec<String> = sites.into_iter().map(str::to_string).collect();
        all.extend(snapshot_sites(&self.snapshot));
        let mut rendered = HashMap::with_capacity(all.len());
        for site in all {
            let doc = self.render_shared(&site)?;
            rendered.insert(site, doc);
        }
        self.rendered = rendered;
        Ok(())
    }

    /// The site's rendered document, rendering it if the site is new.
    pub fn rendered_for(&mut self, site: &str) -> Result<Arc<Rendered>, MergeError> {
        if let Some(doc) = self.rendered.get(site) {
            return Ok(doc.clone());
        }
        let doc = self.render_shared(site)?;
        self.rendered.insert(site.to_string(), doc.clone());
        Ok(doc)
    }
}

/// Sites a snapshot names (in groups or as a site scope).
pub fn snapshot_sites(snapshot: &Snapshot) -> Vec<String> {
    let mut sites: Vec<String> = snapshot
        .groups
        .values()
        .flat_map(|g| g.sites.iter().cloned())
        .collect();
    sites.extend(
        snapshot
            .scopes
            .keys()
            .filter_map(|s| s.strip_prefix("site:").map(str::to_string)),
    );
    sites.sort();
    sites.dedup();
    sites
}

#[derive(Debug, Default)]
pub struct Fleet {
    pub edges: BTreeMap<String, EdgeRecord>,
    /// Credential hash -> site.
    pub by_credential: HashMap<String, String>,
    pub published: Published,
    /// Site -> actions it has not reported done, oldest first.
    pub pending: HashMap<String, Vec<ActionOrder>>,
    /// Site history events not yet written (by the next flush).
    pub events: Vec<crate::model::events::SiteEvent>,
}
