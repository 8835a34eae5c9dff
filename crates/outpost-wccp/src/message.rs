//! WCCPv2 messages: the header, the component walk, MD5 security and the
//! components each message type must carry.
//!
//! Security (draft-wilson-wrec-wccp-v2 §5.5.1): with a password, the
//! Security Info component carries option 1 and a 16-byte MD5 digest over
//! the password NUL-padded to 8 bytes followed by the whole message (header
//! included) with the digest field zeroed. Without one, option 0. A message
//! whose security does not match ours is refused either way: a cache with
//! no password must not accept a router that uses one, and vice versa.

use std::net::Ipv4Addr;

use md5::{Digest, Md5};

use crate::DecodeError;
use crate::component::*;
use crate::wire::{Put, Reader};

pub const WCCP_PORT: u16 = 2048;
const VERSION_MAJOR: u16 = 0x02;
/// We send 2.0; 2.01 messages are accepted (their additions are optional
/// components, except the address table, which is refused).
const VERSION_SENT: u16 = 0x0200;
const HEADER_LEN: usize = 8;
const SECURITY_NONE: u32 = 0;
const SECURITY_MD5: u32 = 1;
/// Largest datagram we build or accept: WCCP messages are far below it.
pub const MAX_MESSAGE_LEN: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum MessageType {
    HereIAm,
    ISeeYou,
    RedirectAssign,
    RemovalQuery,
}

impl MessageType {
    fn code(self) -> u32 {
        match self {
            MessageType::HereIAm => 10,
            MessageType::ISeeYou => 11,
            MessageType::RedirectAssign => 12,
            MessageType::RemovalQuery => 13,
        }
    }
    fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            10 => MessageType::HereIAm,
            11 => MessageType::ISeeYou,
            12 => MessageType::RedirectAssign,
            13 => MessageType::RemovalQuery,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            MessageType::HereIAm => "here_i_am",
            MessageType::ISeeYou => "i_see_you",
            MessageType::RedirectAssign => "redirect_assign",
            MessageType::RemovalQuery => "removal_query",
        }
    }
}

/// One WCCPv2 message. Which optional fields are set depends on `kind`;
/// [`decode`] guarantees the ones the draft requires are present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: MessageType,
    pub service: ServiceInfo,
    pub router_identity: Option<RouterIdentityInfo>,
    pub wc_identity: Option<WebCacheIdentity>,
    pub router_view: Option<RouterViewInfo>,
    pub wc_view: Option<WebCacheViewInfo>,
    pub assignment: Option<AssignmentInfo>,
    pub query: Option<QueryInfo>,
    pub capabilities: Option<Capabilities>,
    pub alt_assignment: Option<AltAssignment>,
    pub assignment_map: Option<Vec<MaskValueSet>>,
    pub command: Option<CommandExtension>,
}

impl Message {
    /// A message of `kind` for `service` with no optional components.
    pub fn new(kind: MessageType, service: ServiceInfo) -> Self {
        Message {
            kind,
            service,
            router_identity: None,
            wc_identity: None,
            router_view: None,
            wc_view: None,
            assignment: None,
            query: None,
            capabilities: None,
            alt_assignment: None,
            assignment_map: None,
            command: None,
        }
    }
}

/// The password both sides share, at most 8 bytes (the draft pads it to 8
/// with NULs; longer ones cannot be represented and are refused by config).
#[derive(Clone, PartialEq, Eq)]
pub struct Password([u8; 8]);

impl Password {
    pub fn new(password: &str) -> Option<Self> {
        let b = password.as_bytes();
        if b.is_empty() || b.len() > 8 {
            return None;
        }
        let mut p = [0u8; 8];
        p[..b.len()].copy_from_slice(b);
        Some(Password(p))
    }

    fn digest(&self, message: &[u8]) -> [u8; 16] {
        let mut h = Md5::new();
        h.update(self.0);
        h.update(message);
        h.finalize().into()
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

fn component(out: &mut Vec<u8>, kind: u16, body: impl FnOnce(&mut Vec<u8>)) {
    out.put_u16(kind);
    let len_at = out.len();
    out.put_u16(0);
    body(out);
    let len = u16::try_from(out.len() - len_at - 2).unwrap_or(u16::MAX);
    out[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
}

/// Builds the datagram for `msg`, signed with `password` when given.
pub fn encode(msg: &Message, password: Option<&Password>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.put_u32(msg.kind.code());
    out.put_u16(VERSION_SENT);
    out.put_u16(0);
    let digest_at = out.len() + 8;
    component(&mut out, COMPONENT_SECURITY, |o| match password {
        Some(_) => {
            o.put_u32(SECURITY_MD5);
            o.extend_from_slice(&[0; 16]);
        }
        None => o.put_u32(SECURITY_NONE),
    });
    component(&mut out, COMPONENT_SERVICE, |o| {
        encode_service(&msg.service, o)
    });
    if let Some(c) = &msg.router_identity {
        component(&mut out, COMPONENT_ROUTER_ID, |o| {
            encode_router_identity(c, o)
        });
    }
    if let Some(c) = &msg.wc_identity {
        component(&mut out, COMPONENT_WC_ID, |o| encode_wc_identity(c, o));
    }
    if let Some(c) = &msg.router_view {
        component(&mut out, COMPONENT_ROUTER_VIEW, |o| {
            encode_router_view(c, o)
        });
    }
    if let Some(c) = &msg.wc_view {
        component(&mut out, COMPONENT_WC_VIEW, |o| encode_wc_view(c, o));
    }
    if let Some(c) = &msg.assignment {
        component(&mut out, COMPONENT_ASSIGNMENT, |o| encode_assignment(c, o));
    }
    if let Some(c) = &msg.query {
        component(&mut out, COMPONENT_QUERY, |o| encode_query(c, o));
    }
    if let Some(c) = &msg.capabilities {
        component(&mut out, COMPONENT_CAPABILITIES, |o| {
            encode_capabilities(c, o)
        });
    }
    if let Some(c) = &msg.alt_assignment {
        component(&mut out, COMPONENT_ALT_ASSIGNMENT, |o| {
            encode_alt_assignment(c, o)
        });
    }
    if let Some(c) = &msg.assignment_map {
        component(&mut out, COMPONENT_ASSIGNMENT_MAP, |o| {
            encode_assignment_map(c, o)
        });
    }
    if let Some(c) = &msg.command {
        component(&mut out, COMPONENT_COMMAND, |o| encode_command(c, o));
    }
    let len = u16::try_from(out.len() - HEADER_LEN).unwrap_or(u16::MAX);
    out[6..8].copy_from_slice(&len.to_be_bytes());
    if let Some(p) = password {
        let d = p.digest(&out);
        out[digest_at..digest_at + 16].copy_from_slice(&d);
    }
    out
}

fn set_once<T>(slot: &mut Option<T>, v: T, kind: u16) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateComponent(kind));
    }
    *slot = Some(v);
    Ok(())
}

/// Parses and authenticates one datagram. `password` is ours: `None`
/// accepts only unsecured messages, `Some` only ones with a valid digest.
pub fn decode(datagram: &[u8], password: Option<&Password>) -> Result<Message, DecodeError> {
    if datagram.len() > MAX_MESSAGE_LEN {
        return Err(DecodeError::TooLong(datagram.len()));
    }
    let mut r = Reader::new(datagram);
    let code = r.u32("message type")?;
    let kind = MessageType::from_code(code).ok_or(DecodeError::UnknownMessage(code))?;
    let version = r.u16("version")?;
    if version >> 8 != VERSION_MAJOR {
        return Err(DecodeError::Version(version));
    }
    let len = usize::from(r.u16("message length")?);
    if len != r.remaining() {
        return Err(DecodeError::LengthMismatch {
            header: len,
            actual: r.remaining(),
        });
    }

    let mut security: Option<(u32, usize)> = None;
    let mut service = None;
    let mut msg = Message::new(kind, ServiceInfo::web_cache());
    while !r.is_empty() {
        let ctype = r.u16("component type")?;
        let clen = usize::from(r.u16("component length")?);
        let offset = datagram.len() - r.remaining();
        let body = r.bytes(clen, "component body")?;
        let mut c = Reader::new(body);
        match ctype {
            COMPONENT_SECURITY => {
                let option = c.u32("security option")?;
                match option {
                    SECURITY_NONE => {}
                    SECURITY_MD5 => {
                        c.bytes(16, "md5 digest")?;
                    }
                    other => return Err(DecodeError::Unsupported("security option", other)),
                }
                c.finish("security info")?;
                set_once(&mut security, (option, offset + 4), ctype)?;
            }
            COMPONENT_SERVICE => {
                let s = decode_service(&mut c)?;
                c.finish("service info")?;
                set_once(&mut service, s, ctype)?;
            }
            COMPONENT_ROUTER_ID => {
                let v = decode_router_identity(&mut c)?;
                c.finish("router identity info")?;
                set_once(&mut msg.router_identity, v, ctype)?;
            }
            COMPONENT_WC_ID => {
                let v = decode_wc_identity(&mut c)?;
                c.finish("web-cache identity info")?;
                set_once(&mut msg.wc_identity, v, ctype)?;
            }
            COMPONENT_ROUTER_VIEW => {
                let v = decode_router_view(&mut c)?;
                c.finish("router view info")?;
                set_once(&mut msg.router_view, v, ctype)?;
            }
            COMPONENT_WC_VIEW => {
                let v = decode_wc_view(&mut c)?;
                c.finish("web-cache view info")?;
                set_once(&mut msg.wc_view, v, ctype)?;
            }
            COMPONENT_ASSIGNMENT => {
                let v = decode_assignment(&mut c)?;
                c.finish("assignment info")?;
                set_once(&mut msg.assignment, v, ctype)?;
            }
            COMPONENT_QUERY => {
                let v = decode_query(&mut c)?;
                c.finish("router query info")?;
                set_once(&mut msg.query, v, ctype)?;
            }
            COMPONENT_CAPABILITIES => {
                let v = decode_capabilities(&mut c)?;
                set_once(&mut msg.capabilities, v, ctype)?;
            }
            COMPONENT_ALT_ASSIGNMENT => {
                let v = decode_alt_assignment(&mut c)?;
                c.finish("alternate assignment")?;
                set_once(&mut msg.alt_assignment, v, ctype)?;
            }
            COMPONENT_ASSIGNMENT_MAP => {
                let v = decode_assignment_map(&mut c)?;
                c.finish("assignment map")?;
                set_once(&mut msg.assignment_map, v, ctype)?;
            }
            COMPONENT_COMMAND => {
                let v = decode_command(&mut c)?;
                set_once(&mut msg.command, v, ctype)?;
            }
            COMPONENT_ADDRESS_TABLE => {
                return Err(DecodeError::Unsupported("address table component", 17));
            }
            // Unknown components are skipped (the draft's rule for
            // extensions); their length was checked by the read above.
            _ => {}
        }
    }

    let (option, digest_at) = security.ok_or(DecodeError::MissingComponent("security info"))?;
    match (option, password) {
        (SECURITY_NONE, None) => {}
        (SECURITY_MD5, Some(p)) => {
            let mut copy = datagram.to_vec();
            let got: [u8; 16] = copy
                .get(digest_at..digest_at + 16)
                .and_then(|s| s.try_into().ok())
                .ok_or(DecodeError::SecurityMismatch)?;
            copy[digest_at..digest_at + 16].fill(0);
            let want = p.digest(&copy);
            // Constant time: the digest is a MAC.
            if got
                .iter()
                .zip(want.iter())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                != 0
            {
                return Err(DecodeError::BadDigest);
            }
        }
        _ => return Err(DecodeError::SecurityMismatch),
    }
    msg.service = service.ok_or(DecodeError::MissingComponent("service info"))?;

    match kind {
        MessageType::HereIAm => {
            if msg.wc_identity.is_none() {
                return Err(DecodeError::MissingComponent("web-cache identity info"));
            }
            if msg.wc_view.is_none() {
                return Err(DecodeError::MissingComponent("web-cache view info"));
            }
        }
        MessageType::ISeeYou => {
            if msg.router_identity.is_none() {
                return Err(DecodeError::MissingComponent("router identity info"));
            }
            if msg.router_view.is_none() {
                return Err(DecodeError::MissingComponent("router view info"));
            }
        }
        MessageType::RedirectAssign => {
            if msg.assignment.is_none() && msg.alt_assignment.is_none() {
                return Err(DecodeError::MissingComponent("assignment info"));
            }
        }
        MessageType::RemovalQuery => {
            if msg.query.is_none() {
                return Err(DecodeError::MissingComponent("router query info"));
            }
        }
    }
    Ok(msg)
}

/// The address a HERE_I_AM's sender claims, for checking against the
/// datagram's source.
pub fn claimed_cache(msg: &Message) -> Option<Ipv4Addr> {
    msg.wc_identity.as_ref().map(|w| w.ip)
}
