//! The WCCPv2 message components and their elements (draft-wilson-wrec-
//! wccp-v2 §5 and §6, draft-mclaggan-wccp-v2rev1 §5.1-5.7), IPv4 only.
//!
//! Each `decode` is handed exactly the bytes its component header
//! announced and must consume all of them; each `encode` writes the body
//! only (the message codec adds the type/length header).

use std::net::Ipv4Addr;

use serde::Serialize;

use crate::DecodeError;
use crate::wire::{Put, Reader};

pub const COMPONENT_SECURITY: u16 = 0;
pub const COMPONENT_SERVICE: u16 = 1;
pub const COMPONENT_ROUTER_ID: u16 = 2;
pub const COMPONENT_WC_ID: u16 = 3;
pub const COMPONENT_ROUTER_VIEW: u16 = 4;
pub const COMPONENT_WC_VIEW: u16 = 5;
pub const COMPONENT_ASSIGNMENT: u16 = 6;
pub const COMPONENT_QUERY: u16 = 7;
pub const COMPONENT_CAPABILITIES: u16 = 8;
pub const COMPONENT_ALT_ASSIGNMENT: u16 = 13;
pub const COMPONENT_ASSIGNMENT_MAP: u16 = 14;
pub const COMPONENT_COMMAND: u16 = 15;
/// WCCP 2.01's address table turns every address field into an index; we
/// speak IPv4 addresses directly, so a message carrying one is refused
/// rather than misread.
pub const COMPONENT_ADDRESS_TABLE: u16 = 17;

/// Service flags (Service Info component).
pub const FLAG_SRC_IP_HASH: u32 = 0x0001;
pub const FLAG_DST_IP_HASH: u32 = 0x0002;
pub const FLAG_SRC_PORT_HASH: u32 = 0x0004;
pub const FLAG_DST_PORT_HASH: u32 = 0x0008;
pub const FLAG_PORTS_DEFINED: u32 = 0x0010;
pub const FLAG_PORTS_SOURCE: u32 = 0x0020;

/// A bucket nobody serves (the router forwards its traffic normally).
pub const BUCKET_UNASSIGNED: u8 = 0xff;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceType {
    /// A well-known service; id 0 is `web-cache` (TCP port 80).
    Standard,
    /// A service the caches define: protocol, ports and flags travel.
    Dynamic,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ServiceInfo {
    pub kind: ServiceType,
    pub id: u8,
    pub priority: u8,
    pub protocol: u8,
    pub flags: u32,
    pub ports: [u16; 8],
}

impl ServiceInfo {
    /// The standard `web-cache` service: TCP 80, hashed on destination.
    pub fn web_cache() -> Self {
        ServiceInfo {
            kind: ServiceType::Standard,
            id: 0,
            priority: 0,
            protocol: 0,
            flags: 0,
            ports: [0; 8],
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let kind = match r.u8("service type")? {
            0 => ServiceType::Standard,
            1 => ServiceType::Dynamic,
            other => return Err(DecodeError::BadValue("service type", other.into())),
        };
        let id = r.u8("service id")?;
        let priority = r.u8("service priority")?;
        let protocol = r.u8("service protocol")?;
        let flags = r.u32("service flags")?;
        let mut ports = [0u16; 8];
        for p in &mut ports {
            *p = r.u16("service port")?;
        }
        Ok(ServiceInfo {
            kind,
            id,
            priority,
            protocol,
            flags,
            ports,
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(match self.kind {
            ServiceType::Standard => 0,
            ServiceType::Dynamic => 1,
        });
        out.put_u8(self.id);
        out.put_u8(self.priority);
        out.put_u8(self.protocol);
        out.put_u32(self.flags);
        for p in self.ports {
            out.put_u16(p);
        }
    }

    /// Two services are the same group when everything but priority-free
    /// fields agree; a router answering for another service is ignored.
    pub fn same_group(&self, other: &ServiceInfo) -> bool {
        self.kind == other.kind && self.id == other.id
    }
}

/// Router Identity Element: a router and how many I_SEE_YOUs it has sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RouterId {
    pub ip: Ipv4Addr,
    pub receive_id: u32,
}

impl RouterId {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(RouterId {
            ip: r.ip("router ip")?,
            receive_id: r.u32("receive id")?,
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_ip(self.ip);
        out.put_u32(self.receive_id);
    }
}

/// Router Identity Info component (I_SEE_YOU).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterIdentityInfo {
    pub router: RouterId,
    pub sent_to: Ipv4Addr,
    pub received_from: Vec<Ipv4Addr>,
}

/// Assignment Key: who made the assignment in force and its change number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AssignmentKey {
    pub ip: Ipv4Addr,
    pub change: u32,
}

impl AssignmentKey {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(AssignmentKey {
            ip: r.ip("assignment key ip")?,
            change: r.u32("assignment key change number")?,
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_ip(self.ip);
        out.put_u32(self.change);
    }
}

/// Mask Element: which bits of the packet select a mask value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MaskElement {
    pub src_ip: u32,
    pub dst_ip: u32,
    pub src_port: u16,
    pub dst_port: u16,
}

/// Value Element: one masked value and the cache that serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ValueElement {
    pub src_ip: u32,
    pub dst_ip: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub cache: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MaskValueSet {
    pub mask: MaskElement,
    pub values: Vec<ValueElement>,
}

const MASK_ELEMENT_LEN: usize = 12;
const VALUE_ELEMENT_LEN: usize = 16;

fn decode_mask_value_sets(r: &mut Reader) -> Result<Vec<MaskValueSet>, DecodeError> {
    let n = r.count("mask/value set count", MASK_ELEMENT_LEN + 4)?;
    let mut sets = Vec::with_capacity(n);
    for _ in 0..n {
        let mask = MaskElement {
            src_ip: r.u32("mask source address")?,
            dst_ip: r.u32("mask destination address")?,
            src_port: r.u16("mask source port")?,
            dst_port: r.u16("mask destination port")?,
        };
        let nv = r.count("value element count", VALUE_ELEMENT_LEN)?;
        let mut values = Vec::with_capacity(nv);
        for _ in 0..nv {
            values.push(ValueElement {
                src_ip: r.u32("value source address")?,
                dst_ip: r.u32("value destination address")?,
                src_port: r.u16("value source port")?,
                dst_port: r.u16("value destination port")?,
                cache: r.ip("value web-cache ip")?,
            });
        }
        sets.push(MaskValueSet { mask, values });
    }
    Ok(sets)
}

fn encode_mask_value_sets(sets: &[MaskValueSet], out: &mut Vec<u8>) {
    out.put_count(sets.len());
    for s in sets {
        out.put_u32(s.mask.src_ip);
        out.put_u32(s.mask.dst_ip);
        out.put_u16(s.mask.src_port);
        out.put_u16(s.mask.dst_port);
        out.put_count(s.values.len());
        for v in &s.values {
            out.put_u32(v.src_ip);
            out.put_u32(v.dst_ip);
            out.put_u16(v.src_port);
            out.put_u16(v.dst_port);
            out.put_ip(v.cache);
        }
    }
}

/// What a web-cache says it currently holds, in its identity element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheAssignmentData {
    /// A bitmap of the 256 hash buckets it holds (bit i of byte i/8, least
    /// significant first, as Wireshark and the draft's figures number them).
    Hash { buckets: [u8; 32] },
    /// The mask/value sets it holds.
    Mask { sets: Vec<MaskValueSet> },
}

/// Web-Cache Identity Element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebCacheIdentity {
    pub ip: Ipv4Addr,
    pub hash_revision: u16,
    /// Bit 0: the bucket data is historical (U flag).
    pub historical: bool,
    pub data: CacheAssignmentData,
    pub weight: u16,
    pub status: u16,
}

const WC_FLAG_HISTORICAL: u16 = 0x0001;
const WC_FLAG_ASSIGN_TYPE_MASK: u16 = 0x0006;

impl WebCacheIdentity {
    /// A hash-mode identity holding no buckets yet.
    pub fn new(ip: Ipv4Addr, weight: u16) -> Self {
        WebCacheIdentity {
            ip,
            hash_revision: 0,
            historical: false,
            data: CacheAssignmentData::Hash { buckets: [0; 32] },
            weight,
            status: 0,
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let ip = r.ip("web-cache ip")?;
        let hash_revision = r.u16("hash revision")?;
        let flags = r.u16("web-cache flags")?;
        let data = match (flags & WC_FLAG_ASSIGN_TYPE_MASK) >> 1 {
            0 => {
                let mut buckets = [0u8; 32];
                buckets.copy_from_slice(r.bytes(32, "bucket block")?);
                CacheAssignmentData::Hash { buckets }
            }
            1 => CacheAssignmentData::Mask {
                sets: decode_mask_value_sets(r)?,
            },
            other => {
                return Err(DecodeError::Unsupported(
                    "web-cache assignment data type",
                    other.into(),
                ));
            }
        };
        let weight = r.u16("assignment weight")?;
        let status = r.u16("assignment status")?;
        Ok(WebCacheIdentity {
            ip,
            hash_revision,
            historical: flags & WC_FLAG_HISTORICAL != 0,
            data,
            weight,
            status,
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_ip(self.ip);
        out.put_u16(self.hash_revision);
        let mut flags = if self.historical {
            WC_FLAG_HISTORICAL
        } else {
            0
        };
        match &self.data {
            CacheAssignmentData::Hash { buckets } => {
                out.put_u16(flags);
                out.extend_from_slice(buckets);
            }
            CacheAssignmentData::Mask { sets } => {
                flags |= 1 << 1;
                out.put_u16(flags);
                encode_mask_value_sets(sets, out);
            }
        }
        out.put_u16(self.weight);
        out.put_u16(self.status);
    }

    /// Whether the bitmap says this cache holds `bucket`.
    pub fn holds_bucket(&self, bucket: u8) -> bool {
        match &self.data {
            CacheAssignmentData::Hash { buckets } => {
                buckets[usize::from(bucket / 8)] & (1 << (bucket % 8)) != 0
            }
            CacheAssignmentData::Mask { .. } => false,
        }
    }
}

/// Sets the bit for `bucket` in a 32-byte bucket block.
pub fn set_bucket_bit(block: &mut [u8; 32], bucket: u8) {
    block[usize::from(bucket / 8)] |= 1 << (bucket % 8);
}

/// Router View Info component (I_SEE_YOU): the router's group membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterViewInfo {
    pub member_change: u32,
    pub key: AssignmentKey,
    pub routers: Vec<Ipv4Addr>,
    pub caches: Vec<WebCacheIdentity>,
}

/// Web-Cache View Info component (HERE_I_AM): the cache's group view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebCacheViewInfo {
    pub change: u32,
    pub routers: Vec<RouterId>,
    pub caches: Vec<Ipv4Addr>,
}

/// Router Assignment Element: a router and the member change number the
/// assignment was computed against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RouterAssignment {
    pub router: RouterId,
    pub change: u32,
}

fn decode_router_assignments(r: &mut Reader) -> Result<Vec<RouterAssignment>, DecodeError> {
    let n = r.count("router count", 12)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let router = RouterId::decode(r)?;
        let change = r.u32("router assignment change number")?;
        out.push(RouterAssignment { router, change });
    }
    Ok(out)
}

fn encode_router_assignments(routers: &[RouterAssignment], out: &mut Vec<u8>) {
    out.put_count(routers.len());
    for ra in routers {
        ra.router.encode(out);
        out.put_u32(ra.change);
    }
}

/// The hash form of an assignment: caches and the 256-bucket table, each
/// entry an index into `caches` (bit 7 marks the alternate hash), or
/// [`BUCKET_UNASSIGNED`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashAssignment {
    pub caches: Vec<Ipv4Addr>,
    /// Boxed: 256 bytes would make every message and enum carrying an
    /// assignment that large.
    pub buckets: Box<[u8; 256]>,
}

impl HashAssignment {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        // 256 bucket bytes follow the list, so they bound the count too.
        let n = r.u32("web-cache count")? as usize;
        let room = r.remaining().saturating_sub(256) / 4;
        if n > room {
            return Err(DecodeError::CountTooLarge {
                what: "web-cache count",
                count: n,
                room,
            });
        }
        let mut caches = Vec::with_capacity(n);
        for _ in 0..n {
            caches.push(r.ip("web-cache ip")?);
        }
        let mut buckets = Box::new([0u8; 256]);
        buckets.copy_from_slice(r.bytes(256, "bucket table")?);
        for &b in buckets.iter() {
            if b != BUCKET_UNASSIGNED && usize::from(b & 0x7f) >= caches.len() {
                return Err(DecodeError::BadValue("bucket owner index", b.into()));
            }
        }
        Ok(HashAssignment { caches, buckets })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_count(self.caches.len());
        for ip in &self.caches {
            out.put_ip(*ip);
        }
        out.extend_from_slice(&self.buckets[..]);
    }

    /// The cache serving `bucket`, if any.
    pub fn owner(&self, bucket: u8) -> Option<Ipv4Addr> {
        let b = self.buckets[usize::from(bucket)];
        if b == BUCKET_UNASSIGNED {
            return None;
        }
        self.caches.get(usize::from(b & 0x7f)).copied()
    }
}

/// Assignment Info component (REDIRECT_ASSIGN, hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentInfo {
    pub key: AssignmentKey,
    pub routers: Vec<RouterAssignment>,
    pub hash: HashAssignment,
}

/// The body of an Alternate Assignment component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AltAssignmentBody {
    Hash(HashAssignment),
    Mask(Vec<MaskValueSet>),
}

/// Alternate Assignment component (REDIRECT_ASSIGN; carries mask
/// assignments, or hash ones in the alternate form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AltAssignment {
    pub key: AssignmentKey,
    pub routers: Vec<RouterAssignment>,
    pub body: AltAssignmentBody,
}

/// Router Query Info component (REMOVAL_QUERY).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryInfo {
    pub router: RouterId,
    pub sent_to: Ipv4Addr,
    pub target: Ipv4Addr,
}

/// Capability element types.
pub const CAP_FORWARDING: u16 = 1;
pub const CAP_ASSIGNMENT: u16 = 2;
pub const CAP_RETURN: u16 = 3;
pub const CAP_TRANSMIT_T: u16 = 4;

/// Method bits in forwarding and return capability values.
pub const METHOD_GRE: u32 = 0x1;
pub const METHOD_L2: u32 = 0x2;
/// Method bits in the assignment capability value.
pub const ASSIGN_HASH: u32 = 0x1;
pub const ASSIGN_MASK: u32 = 0x2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    pub kind: u16,
    pub value: u32,
}

/// Capabilities Info component: (type, 32-bit value) elements.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capabilities {
    pub elements: Vec<Capability>,
}

impl Capabilities {
    pub fn get(&self, kind: u16) -> Option<u32> {
        self.elements
            .iter()
            .find(|c| c.kind == kind)
            .map(|c| c.value)
    }
}

/// Command Extension element types (rev1 §5.1.4).
pub const COMMAND_SHUTDOWN: u16 = 1;
pub const COMMAND_SHUTDOWN_RESPONSE: u16 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub kind: u16,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandExtension {
    pub commands: Vec<Command>,
}

impl CommandExtension {
    /// "This web-cache is shutting down": a graceful stop.
    pub fn shutdown(ip: Ipv4Addr) -> Self {
        CommandExtension {
            commands: vec![Command {
                kind: COMMAND_SHUTDOWN,
                data: ip.octets().to_vec(),
            }],
        }
    }

    pub fn has(&self, kind: u16) -> bool {
        self.commands.iter().any(|c| c.kind == kind)
    }
}

mod body;
pub(crate) use body::*;
