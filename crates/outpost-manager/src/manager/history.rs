//! A site's history for its page: state changes, config versions applied
//! or refused, sync runs finished; from the database.

use outpost_protocol::EdgeState;
use serde::{Deserialize, Serialize};

use super::{Manager, parse_state};
use crate::error::{DbContext, Result};
use crate::model::events::SiteEvent;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    /// Unix seconds.
    pub at: i64,
    pub state: EdgeState,
}

impl Manager {
    /// The site's state changes, newest first, at most `limit`. Changes
    /// reach the database with the next flush (within ~2 s).
    pub fn state_history(&self, site: &str, limit: u32) -> Result<Vec<StateChange>> {
        let conn = self.db().connection();
        let mut stmt = conn
            .prepare(
                "SELECT at, state FROM edge_states WHERE site = ?1
                 ORDER BY at DESC, rowid DESC LIMIT ?2",
            )
            .db("read state history")?;
        let rows = stmt
            .query_map(rusqlite::params![site, limit], |r| {
                Ok(StateChange {
                    at: r.get(0)?,
                    state: parse_state(&r.get::<_, String>(1)?),
                })
            })
            .db("read state history")?;
        rows.collect::<Result<_, _>>().db("read state history")
    }

    /// The site's config and sync events, newest first, at most `limit`
    /// (written by the flush, within ~2 s of the heartbeat).
    pub fn site_events(&self, site: &str, limit: u32) -> Result<Vec<SiteEvent>> {
        let conn = self.db().connection();
        let mut stmt = conn
            .prepare(
                "SELECT site, at, kind, detail FROM site_events WHERE site = ?1
                 ORDER BY at DESC, id DESC LIMIT ?2",
            )
            .db("read site events")?;
        let rows = stmt
            .query_map(rusqlite::params![site, limit], |r| {
                Ok(SiteEvent {
                    site: r.get(0)?,
                    at: r.get(1)?,
                    kind: r.get(2)?,
                    detail: r.get(3)?,
                })
            })
            .db("read site events")?;
        rows.collect::<Result<_, _>>().db("read site events")
    }
}

/// A site's traffic today and over the last 30 days (UTC days, today
/// included), as flushed to the database: at most one flush interval
/// behind the heartbeats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SiteTraffic {
    pub today: crate::model::traffic::Traffic,
    pub last_30_days: crate::model::traffic::Traffic,
}

impl SiteTraffic {
    /// As the automation API gives it.
    pub fn wire(&self) -> outpost_protocol::SiteTraffic {
        let totals = |t: &crate::model::traffic::Traffic| outpost_protocol::TrafficTotals {
            lan_bytes_out: t.lan_out,
            wan_bytes_in: t.wan_in,
            bytes_saved: t.saved,
            bytes_from_cache: t.from_cache,
        };
        outpost_protocol::SiteTraffic {
            today: totals(&self.today),
            last_30_days: totals(&self.last_30_days),
        }
    }
}

impl Manager {
    /// Every site's [`SiteTraffic`] on the day of `now_secs`.
    pub fn site_traffic(
        &self,
        now_secs: i64,
    ) -> Result<std::collections::HashMap<String, SiteTraffic>> {
        self.traffic_where(now_secs, None)
    }

    /// One site's [`SiteTraffic`] on the day of `now_secs`.
    pub fn traffic_of(&self, site: &str, now_secs: i64) -> Result<SiteTraffic> {
        Ok(self
            .traffic_where(now_secs, Some(site))?
            .remove(site)
            .unwrap_or_default())
    }

    fn traffic_where(
        &self,
        now_secs: i64,
        site: Option<&str>,
    ) -> Result<std::collections::HashMap<String, SiteTraffic>> {
        let today = crate::model::traffic::day(now_secs);
        let conn = self.db().connection();
        let mut stmt = conn
            .prepare_cached(if site.is_some() {
                "SELECT site, day, lan_out, wan_in, saved, from_cache FROM site_traffic
                 WHERE day > ?1 - 30 AND day <= ?1 AND site = ?2"
            } else {
                "SELECT site, day, lan_out, wan_in, saved, from_cache FROM site_traffic
                 WHERE day > ?1 - 30 AND day <= ?1 AND ?2 IS NULL"
            })
            .db("read traffic")?;
        let rows = stmt
            .query_map(rusqlite::params![today, site], |r| {
                let unsigned = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    crate::model::traffic::Traffic {
                        lan_out: unsigned(2)?,
                        wan_in: unsigned(3)?,
                        saved: unsigned(4)?,
                        from_cache: unsigned(5)?,
                    },
                ))
            })
            .db("read traffic")?;
        let mut out: std::collections::HashMap<String, SiteTraffic> = Default::default();
        for row in rows {
            let (site, day, traffic) = row.db("read traffic")?;
            let entry = out.entry(site).or_default();
            entry.last_30_days.add(traffic);
            if day == today {
                entry.today.add(traffic);
            }
        }
        Ok(out)
    }
}
