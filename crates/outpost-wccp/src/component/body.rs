//! Component bodies as the message codec reads and writes them: one
//! `decode_*` / `encode_*` pair per component type.

use super::*;
use crate::DecodeError;
use crate::wire::{Put, Reader};

pub(crate) fn decode_service(r: &mut Reader) -> Result<ServiceInfo, DecodeError> {
    ServiceInfo::decode(r)
}
pub(crate) fn encode_service(s: &ServiceInfo, out: &mut Vec<u8>) {
    s.encode(out)
}

pub(crate) fn decode_router_identity(r: &mut Reader) -> Result<RouterIdentityInfo, DecodeError> {
    let router = RouterId::decode(r)?;
    let sent_to = r.ip("sent to ip")?;
    let n = r.count("received-from count", 4)?;
    let mut received_from = Vec::with_capacity(n);
    for _ in 0..n {
        received_from.push(r.ip("received-from ip")?);
    }
    Ok(RouterIdentityInfo {
        router,
        sent_to,
        received_from,
    })
}
pub(crate) fn encode_router_identity(c: &RouterIdentityInfo, out: &mut Vec<u8>) {
    c.router.encode(out);
    out.put_ip(c.sent_to);
    out.put_count(c.received_from.len());
    for ip in &c.received_from {
        out.put_ip(*ip);
    }
}

pub(crate) fn decode_wc_identity(r: &mut Reader) -> Result<WebCacheIdentity, DecodeError> {
    WebCacheIdentity::decode(r)
}
pub(crate) fn encode_wc_identity(c: &WebCacheIdentity, out: &mut Vec<u8>) {
    c.encode(out)
}

pub(crate) fn decode_router_view(r: &mut Reader) -> Result<RouterViewInfo, DecodeError> {
    let member_change = r.u32("member change number")?;
    let key = AssignmentKey::decode(r)?;
    let n = r.count("router count", 4)?;
    let mut routers = Vec::with_capacity(n);
    for _ in 0..n {
        routers.push(r.ip("router ip")?);
    }
    // The smallest identity element is 8 bytes of header plus 4 of weight.
    let n = r.count("web-cache count", 12)?;
    let mut caches = Vec::with_capacity(n);
    for _ in 0..n {
        caches.push(WebCacheIdentity::decode(r)?);
    }
    Ok(RouterViewInfo {
        member_change,
        key,
        routers,
        caches,
    })
}
pub(crate) fn encode_router_view(c: &RouterViewInfo, out: &mut Vec<u8>) {
    out.put_u32(c.member_change);
    c.key.encode(out);
    out.put_count(c.routers.len());
    for ip in &c.routers {
        out.put_ip(*ip);
    }
    out.put_count(c.caches.len());
    for wc in &c.caches {
        wc.encode(out);
    }
}

pub(crate) fn decode_wc_view(r: &mut Reader) -> Result<WebCacheViewInfo, DecodeError> {
    let change = r.u32("change number")?;
    let n = r.count("router count", 8)?;
    let mut routers = Vec::with_capacity(n);
    for _ in 0..n {
        routers.push(RouterId::decode(r)?);
    }
    let n = r.count("web-cache count", 4)?;
    let mut caches = Vec::with_capacity(n);
    for _ in 0..n {
        caches.push(r.ip("web-cache ip")?);
    }
    Ok(WebCacheViewInfo {
        change,
        routers,
        caches,
    })
}
pub(crate) fn encode_wc_view(c: &WebCacheViewInfo, out: &mut Vec<u8>) {
    out.put_u32(c.change);
    out.put_count(c.routers.len());
    for rid in &c.routers {
        rid.encode(out);
    }
    out.put_count(c.caches.len());
    for ip in &c.caches {
        out.put_ip(*ip);
    }
}

pub(crate) fn decode_assignment(r: &mut Reader) -> Result<AssignmentInfo, DecodeError> {
    let key = AssignmentKey::decode(r)?;
    let routers = decode_router_assignments(r)?;
    let hash = HashAssignment::decode(r)?;
    Ok(AssignmentInfo { key, routers, hash })
}
pub(crate) fn encode_assignment(c: &AssignmentInfo, out: &mut Vec<u8>) {
    c.key.encode(out);
    encode_router_assignments(&c.routers, out);
    c.hash.encode(out);
}

pub(crate) fn decode_query(r: &mut Reader) -> Result<QueryInfo, DecodeError> {
    Ok(QueryInfo {
        router: RouterId::decode(r)?,
        sent_to: r.ip("sent to ip")?,
        target: r.ip("target ip")?,
    })
}
pub(crate) fn encode_query(c: &QueryInfo, out: &mut Vec<u8>) {
    c.router.encode(out);
    out.put_ip(c.sent_to);
    out.put_ip(c.target);
}

pub(crate) fn decode_capabilities(r: &mut Reader) -> Result<Capabilities, DecodeError> {
    let mut elements = Vec::new();
    while !r.is_empty() {
        let kind = r.u16("capability type")?;
        let len = r.u16("capability length")?;
        let body = r.bytes(len.into(), "capability value")?;
        // Every capability the drafts define is one 32-bit value; others
        // are skipped as the draft asks of unknown elements.
        if len == 4 {
            let value = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            elements.push(Capability { kind, value });
        } else if matches!(kind, CAP_FORWARDING | CAP_ASSIGNMENT | CAP_RETURN) {
            return Err(DecodeError::BadValue("capability length", len.into()));
        }
    }
    Ok(Capabilities { elements })
}
pub(crate) fn encode_capabilities(c: &Capabilities, out: &mut Vec<u8>) {
    for e in &c.elements {
        out.put_u16(e.kind);
        out.put_u16(4);
        out.put_u32(e.value);
    }
}

const ASSIGNMENT_TYPE_HASH: u16 = 0;
const ASSIGNMENT_TYPE_MASK: u16 = 1;

pub(crate) fn decode_alt_assignment(r: &mut Reader) -> Result<AltAssignment, DecodeError> {
    let kind = r.u16("assignment type")?;
    let len = r.u16("assignment length")?;
    if usize::from(len) != r.remaining() {
        return Err(DecodeError::BadValue("assignment length", len.into()));
    }
    let key = AssignmentKey::decode(r)?;
    let routers = decode_router_assignments(r)?;
    let body = match kind {
        ASSIGNMENT_TYPE_HASH => AltAssignmentBody::Hash(HashAssignment::decode(r)?),
        ASSIGNMENT_TYPE_MASK => AltAssignmentBody::Mask(decode_mask_value_sets(r)?),
        other => return Err(DecodeError::Unsupported("assignment type", other.into())),
    };
    Ok(AltAssignment { key, routers, body })
}
pub(crate) fn encode_alt_assignment(c: &AltAssignment, out: &mut Vec<u8>) {
    let mut body = Vec::new();
    c.key.encode(&mut body);
    encode_router_assignments(&c.routers, &mut body);
    let kind = match &c.body {
        AltAssignmentBody::Hash(h) => {
            h.encode(&mut body);
            ASSIGNMENT_TYPE_HASH
        }
        AltAssignmentBody::Mask(sets) => {
            encode_mask_value_sets(sets, &mut body);
            ASSIGNMENT_TYPE_MASK
        }
    };
    out.put_u16(kind);
    out.put_u16(u16::try_from(body.len()).unwrap_or(u16::MAX));
    out.extend_from_slice(&body);
}

pub(crate) fn decode_assignment_map(r: &mut Reader) -> Result<Vec<MaskValueSet>, DecodeError> {
    decode_mask_value_sets(r)
}
pub(crate) fn encode_assignment_map(sets: &[MaskValueSet], out: &mut Vec<u8>) {
    encode_mask_value_sets(sets, out)
}

pub(crate) fn decode_command(r: &mut Reader) -> Result<CommandExtension, DecodeError> {
    let mut commands = Vec::new();
    while !r.is_empty() {
        let kind = r.u16("command type")?;
        let len = r.u16("command length")?;
        let data = r.bytes(len.into(), "command data")?.to_vec();
        commands.push(Command { kind, data });
    }
    Ok(CommandExtension { commands })
}
pub(crate) fn encode_command(c: &CommandExtension, out: &mut Vec<u8>) {
    for cmd in &c.commands {
        out.put_u16(cmd.kind);
        out.put_u16(u16::try_from(cmd.data.len()).unwrap_or(u16::MAX));
        out.extend_from_slice(&cmd.data);
    }
}
