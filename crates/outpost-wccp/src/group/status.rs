//! What a service group shows: `/status`'s and `outpost wccp status`'s
//! view of the routers, the group and the assignment.

use std::net::Ipv4Addr;
use std::time::Instant;

use serde::Serialize;

use super::{AssignMethod, Assignment, Negotiated, ServiceGroup};
use crate::assign;
use crate::component::*;

/// A router as the status shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RouterStatus {
    pub address: Ipv4Addr,
    pub router_id: Option<Ipv4Addr>,
    pub receive_id: u32,
    pub live: bool,
    pub last_heard_ms_ago: Option<u64>,
    pub member_change: u32,
    pub caches: Vec<Ipv4Addr>,
    pub assignment_key: Option<AssignmentKey>,
}

/// The group as `/status` and `outpost wccp status` show it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct GroupStatus {
    pub service_id: u8,
    pub service_type: ServiceType,
    pub cache_ip: Ipv4Addr,
    pub routers: Vec<RouterStatus>,
    pub view_change: u32,
    pub usable_caches: Vec<Ipv4Addr>,
    pub designated_cache: Option<Ipv4Addr>,
    pub designated: bool,
    pub negotiated: Option<Negotiated>,
    pub negotiation_error: Option<String>,
    pub assignment_method: Option<AssignMethod>,
    pub assignment_change: u32,
    /// Hash buckets (of 256) or mask values this cache serves, as the
    /// assignment in force says.
    pub buckets_owned: usize,
    pub mask_values_owned: usize,
    /// Per cache, how many buckets or mask values it serves.
    pub shares: Vec<(Ipv4Addr, usize)>,
}

impl ServiceGroup {
    pub fn status(&self, now: Instant) -> GroupStatus {
        let routers = self
            .routers
            .iter()
            .map(|r| RouterStatus {
                address: r.addr,
                router_id: r.id.map(|i| i.ip),
                receive_id: r.id.map(|i| i.receive_id).unwrap_or(0),
                live: self.live(r, now),
                last_heard_ms_ago: r
                    .last_heard
                    .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                member_change: r.member_change,
                caches: r.caches.iter().map(|c| c.ip).collect(),
                assignment_key: r.key,
            })
            .collect();
        let (negotiated, negotiation_error) = match &self.negotiated {
            Ok(n) => (*n, None),
            Err(e) => (None, Some(e.clone())),
        };
        let held = self.identity();
        let buckets_owned = (0..=255u8).filter(|&b| held.holds_bucket(b)).count();
        let mask_values_owned = match &held.data {
            CacheAssignmentData::Mask { sets } => sets.iter().map(|s| s.values.len()).sum(),
            CacheAssignmentData::Hash { .. } => 0,
        };
        let shares = match &self.assignment {
            Some(Assignment::Hash(h)) => assign::bucket_counts(h),
            Some(Assignment::Mask(sets)) => {
                let mut v: Vec<(Ipv4Addr, usize)> = Vec::new();
                for e in sets.iter().flat_map(|s| s.values.iter()) {
                    match v.iter_mut().find(|(ip, _)| *ip == e.cache) {
                        Some(x) => x.1 += 1,
                        None => v.push((e.cache, 1)),
                    }
                }
                v
            }
            None => Vec::new(),
        };
        GroupStatus {
            service_id: self.cfg.service.id,
            service_type: self.cfg.service.kind,
            cache_ip: self.cfg.cache_ip,
            routers,
            view_change: self.change,
            usable_caches: self.usable.iter().map(|m| m.ip).collect(),
            designated_cache: self.designated_cache(),
            designated: self.designated_cache() == Some(self.cfg.cache_ip),
            negotiated,
            negotiation_error,
            assignment_method: negotiated.map(|n| n.assignment),
            assignment_change: self.assignment_change,
            buckets_owned,
            mask_values_owned,
            shares,
        }
    }
}
