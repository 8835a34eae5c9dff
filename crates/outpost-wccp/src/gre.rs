//! WCCP's GRE encapsulation, sans-io: the outer IPv4 header a raw socket
//! hands us, the GRE header (RFC 2784, with RFC 2890's key and sequence
//! number), WCCP's 4-byte redirect header, and the inner IPv4 packet.
//! Parse and build; nothing here touches a socket.
//!
//! A router redirecting with GRE sends protocol type 0x883E followed by
//! the redirect header (draft-wilson-wrec-wccp-v2 section 4.12; the bit
//! layout as Wireshark's GRE dissector reads it):
//!
//! ```text
//!  byte 0: 0000 R U A D   (top nibble zero; D = dynamic service,
//!                          A = alternate bucket used, U = "present but
//!                          ignore the contents", R reserved)
//!  byte 1: service id
//!  byte 2: alternate bucket
//!  byte 3: primary bucket
//! ```
//!
//! WCCPv1 routers (and some v2 ones) send 0x883E with the IPv4 packet
//! right after the GRE header; the first nibble tells them apart (an IPv4
//! header starts with 4, a redirect header with 0), as Linux's `ip_gre` and
//! Wireshark do. Plain IP-in-GRE (0x0800) is accepted too.
//!
//! Everything is hostile input: every length is checked, nothing panics,
//! and the inner packet must be a whole IPv4 packet with a sane header.

use std::net::Ipv4Addr;

/// GRE protocol type for WCCP redirection.
pub const PROTO_WCCP: u16 = 0x883E;
/// GRE protocol type for plain IPv4.
pub const PROTO_IPV4: u16 = 0x0800;
/// IP protocol number of GRE.
pub const IPPROTO_GRE: u8 = 47;

const FLAG_C: u16 = 0x8000;
const FLAG_R: u16 = 0x4000;
const FLAG_K: u16 = 0x2000;
const FLAG_S: u16 = 0x1000;
/// Strict source route and recursion control (RFC 1701), and the
/// reserved bits before the version: all must be zero (RFC 2784).
const FLAGS_MUST_BE_ZERO: u16 = 0x0FF8;
const VERSION_MASK: u16 = 0x0007;

const RH_DYNAMIC: u8 = 0x01;
const RH_ALT_BUCKET: u8 = 0x02;
const RH_IGNORE: u8 = 0x04;

/// Why a packet was refused. Each is counted as "malformed".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GreError {
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("outer packet is not IPv4")]
    OuterNotIpv4,
    #[error("outer IPv4 header length {0} is invalid")]
    OuterHeaderLength(usize),
    #[error("outer packet is not GRE (protocol {0})")]
    NotGre(u8),
    #[error("outer packet is a fragment")]
    OuterFragment,
    #[error("GRE version {0} (only version 0)")]
    Version(u16),
    #[error("GRE routing present or reserved flags set ({0:#06x})")]
    Flags(u16),
    #[error("GRE protocol type {0:#06x} is neither WCCP (0x883e) nor IPv4")]
    Protocol(u16),
    #[error("WCCP redirect header with a non-zero top nibble ({0:#04x})")]
    RedirectHeader(u8),
    #[error("inner packet is not IPv4")]
    InnerNotIpv4,
    #[error("inner IPv4 header length {0} is invalid")]
    InnerHeaderLength(usize),
    #[error("inner IPv4 total length {total} but {have} bytes")]
    InnerTotalLength { total: usize, have: usize },
}

/// The WCCPv2 redirect header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RedirectHeader {
    /// D: the service is dynamic (not the well-known web-cache).
    pub dynamic: bool,
    /// A: the router used the alternate bucket.
    pub alt_bucket_used: bool,
    /// U: the header is there but its contents are to be ignored.
    pub ignore: bool,
    pub service_id: u8,
    pub alt_bucket: u8,
    pub primary_bucket: u8,
}

impl RedirectHeader {
    pub fn to_bytes(self) -> [u8; 4] {
        let mut b0 = 0;
        if self.dynamic {
            b0 |= RH_DYNAMIC;
        }
        if self.alt_bucket_used {
            b0 |= RH_ALT_BUCKET;
        }
        if self.ignore {
            b0 |= RH_IGNORE;
        }
        [b0, self.service_id, self.alt_bucket, self.primary_bucket]
    }

    fn parse(b: [u8; 4]) -> Result<RedirectHeader, GreError> {
        if b[0] & 0xF0 != 0 {
            return Err(GreError::RedirectHeader(b[0]));
        }
        Ok(RedirectHeader {
            dynamic: b[0] & RH_DYNAMIC != 0,
            alt_bucket_used: b[0] & RH_ALT_BUCKET != 0,
            ignore: b[0] & RH_IGNORE != 0,
            service_id: b[1],
            alt_bucket: b[2],
            primary_bucket: b[3],
        })
    }
}

/// The fields of a GRE header that matter to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GreHeader {
    pub protocol: u16,
    pub checksum_present: bool,
    pub key: Option<u32>,
    pub sequence: Option<u32>,
}

/// The outer IPv4 header of a received GRE packet, as a raw socket hands
/// it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outer {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
}

/// What the router sent: the redirect header (if any) and the inner packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapsulated<'a> {
    pub gre: GreHeader,
    pub redirect: Option<RedirectHeader>,
    /// The whole inner IPv4 packet, cut to its total length.
    pub inner: &'a [u8],
    pub summary: InnerSummary,
}

/// The inner packet's addresses and, for TCP and UDP that are not later
/// fragments, its ports (and TCP flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InnerSummary {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10).
    pub tcp_flags: Option<u8>,
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

fn addr(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    be32(b, at).map(Ipv4Addr::from)
}

/// Splits what a raw IPv4 socket returned into the outer header and the
/// GRE payload. The payload is cut to the outer total length (the kernel
/// hands over whole reassembled datagrams, so a fragment is refused).
pub fn parse_outer(packet: &[u8]) -> Result<(Outer, &[u8]), GreError> {
    let first = *packet.first().ok_or(GreError::Truncated("outer header"))?;
    if first >> 4 != 4 {
        return Err(GreError::OuterNotIpv4);
    }
    let ihl = usize::from(first & 0x0F) * 4;
    if ihl < 20 {
        return Err(GreError::OuterHeaderLength(ihl));
    }
    if packet.len() < ihl {
        return Err(GreError::Truncated("outer header"));
    }
    let total = usize::from(be16(packet, 2).ok_or(GreError::Truncated("outer header"))?);
    // Linux hands raw sockets the header with the total length as
    // received; anything shorter than the header or longer than the
    // bytes we got is refused.
    if total < ihl || total > packet.len() {
        return Err(GreError::Truncated("outer packet"));
    }
    let frag = be16(packet, 6).ok_or(GreError::Truncated("outer header"))?;
    if frag & 0x3FFF != 0 {
        return Err(GreError::OuterFragment);
    }
    let proto = packet[9];
    if proto != IPPROTO_GRE {
        return Err(GreError::NotGre(proto));
    }
    let outer = Outer {
        src: addr(packet, 12).ok_or(GreError::Truncated("outer header"))?,
        dst: addr(packet, 16).ok_or(GreError::Truncated("outer header"))?,
    };
    Ok((outer, &packet[ihl..total]))
}

/// Parses a GRE payload (after the outer IPv4 header): the GRE header,
/// the WCCP redirect header when there is one, and the inner IPv4 packet.
pub fn decapsulate(gre: &[u8]) -> Result<Decapsulated<'_>, GreError> {
    let flags = be16(gre, 0).ok_or(GreError::Truncated("GRE header"))?;
    let protocol = be16(gre, 2).ok_or(GreError::Truncated("GRE header"))?;
    if flags & VERSION_MASK != 0 {
        return Err(GreError::Version(flags & VERSION_MASK));
    }
    if flags & (FLAG_R | FLAGS_MUST_BE_ZERO) != 0 {
        return Err(GreError::Flags(flags));
    }
    let mut at = 4;
    let checksum_present = flags & FLAG_C != 0;
    if checksum_present {
        // Checksum and reserved1: 4 bytes. The checksum is not verified:
        // the inner packet carries its own, and the router is trusted by
        // address already.
        at += 4;
    }
    let key = if flags & FLAG_K != 0 {
        let k = be32(gre, at).ok_or(GreError::Truncated("GRE key"))?;
        at += 4;
        Some(k)
    } else {
        None
    };
    let sequence = if flags & FLAG_S != 0 {
        let s = be32(gre, at).ok_or(GreError::Truncated("GRE sequence number"))?;
        at += 4;
        Some(s)
    } else {
        None
    };
    if gre.len() < at {
        return Err(GreError::Truncated("GRE header"));
    }
    let header = GreHeader {
        protocol,
        checksum_present,
        key,
        sequence,
    };
    let redirect = match protocol {
        PROTO_IPV4 => None,
        PROTO_WCCP => {
            let first = *gre.get(at).ok_or(GreError::Truncated("inner packet"))?;
            if first >> 4 == 4 {
                // WCCPv1 style: the IPv4 header right away.
                None
            } else {
                let b = gre
                    .get(at..at + 4)
                    .ok_or(GreError::Truncated("WCCP redirect header"))?;
                at += 4;
                Some(RedirectHeader::parse([b[0], b[1], b[2], b[3]])?)
            }
        }
        other => return Err(GreError::Protocol(other)),
    };
    let (inner, summary) = inner_ipv4(&gre[at..])?;
    Ok(Decapsulated {
        gre: header,
        redirect,
        inner,
        summary,
    })
}

/// Checks an IPv4 packet (header length, total length) and returns it cut
/// to its total length, with its addresses and ports.
pub fn inner_ipv4(p: &[u8]) -> Result<(&[u8], InnerSummary), GreError> {
    let first = *p.first().ok_or(GreError::Truncated("inner packet"))?;
    if first >> 4 != 4 {
        return Err(GreError::InnerNotIpv4);
    }
    let ihl = usize::from(first & 0x0F) * 4;
    if ihl < 20 {
        return Err(GreError::InnerHeaderLength(ihl));
    }
    if p.len() < ihl {
        return Err(GreError::Truncated("inner header"));
    }
    let total = usize::from(be16(p, 2).ok_or(GreError::Truncated("inner header"))?);
    if total < ihl || total > p.len() {
        return Err(GreError::InnerTotalLength {
            total,
            have: p.len(),
        });
    }
    let p = &p[..total];
    let protocol = p[9];
    let frag = be16(p, 6).ok_or(GreError::Truncated("inner header"))?;
    let first_fragment = frag & 0x1FFF == 0;
    let l4 = &p[ihl..];
    let (mut src_port, mut dst_port, mut tcp_flags) = (None, None, None);
    if first_fragment && (protocol == 6 || protocol == 17) {
        src_port = be16(l4, 0);
        dst_port = be16(l4, 2);
        if protocol == 6 {
            tcp_flags = l4.get(13).copied();
        }
    }
    let summary = InnerSummary {
        src: addr(p, 12).ok_or(GreError::Truncated("inner header"))?,
        dst: addr(p, 16).ok_or(GreError::Truncated("inner header"))?,
        protocol,
        src_port,
        dst_port,
        tcp_flags,
    };
    Ok((p, summary))
}

/// Builds a GRE payload (the kernel adds the outer IPv4 header): the base
/// 4-byte header with no flags, protocol 0x883E and the redirect header
/// when `redirect` is given, plain 0x0800 otherwise, then `inner`.
pub fn encapsulate(redirect: Option<RedirectHeader>, inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(inner.len() + 8);
    out.extend_from_slice(&[0, 0]);
    match redirect {
        Some(rh) => {
            out.extend_from_slice(&PROTO_WCCP.to_be_bytes());
            out.extend_from_slice(&rh.to_bytes());
        }
        None => out.extend_from_slice(&PROTO_IPV4.to_be_bytes()),
    }
    out.extend_from_slice(inner);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal TCP SYN, 10.1.0.2:40000 -> 10.3.0.2:80, 40 bytes.
    pub(crate) fn syn() -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 1, 0, 2, 10, 3, 0, 2,
        ];
        p.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02]);
        p.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        p
    }

    #[test]
    fn golden_bytes_of_a_wccp_redirect() {
        let rh = RedirectHeader {
            dynamic: true,
            alt_bucket_used: false,
            ignore: false,
            service_id: 90,
            alt_bucket: 0,
            primary_bucket: 0xA7,
        };
        let bytes = encapsulate(Some(rh), &syn());
        assert_eq!(&bytes[..8], &[0x00, 0x00, 0x88, 0x3E, 0x01, 90, 0x00, 0xA7]);
        assert_eq!(&bytes[8..], &syn()[..]);
        let d = decapsulate(&bytes).unwrap();
        assert_eq!(d.redirect, Some(rh));
        assert_eq!(d.inner, &syn()[..]);
        assert_eq!(d.gre.protocol, PROTO_WCCP);
        assert_eq!(d.summary.dst_port, Some(80));
        assert_eq!(d.summary.src_port, Some(40000));
        assert_eq!(d.summary.tcp_flags, Some(TCP_SYN));
        assert_eq!(d.summary.src, Ipv4Addr::new(10, 1, 0, 2));
    }

    #[test]
    fn round_trip_every_flag_combination() {
        for b0 in 0..8u8 {
            let rh = RedirectHeader::parse([b0, 3, 4, 5]).unwrap();
            assert_eq!(rh.to_bytes(), [b0, 3, 4, 5]);
            let bytes = encapsulate(Some(rh), &syn());
            assert_eq!(decapsulate(&bytes).unwrap().redirect, Some(rh));
        }
        let plain = encapsulate(None, &syn());
        assert_eq!(&plain[..4], &[0, 0, 0x08, 0x00]);
        let d = decapsulate(&plain).unwrap();
        assert_eq!((d.redirect, d.inner), (None, &syn()[..]));
    }

    #[test]
    fn wccp_v1_style_has_no_redirect_header() {
        let mut bytes = vec![0, 0, 0x88, 0x3E];
        bytes.extend_from_slice(&syn());
        let d = decapsulate(&bytes).unwrap();
        assert_eq!(d.redirect, None);
        assert_eq!(d.inner, &syn()[..]);
    }

    #[test]
    fn optional_fields_are_skipped_by_their_flags() {
        // C, K and S: 4 + 4 + 4 bytes after the base header.
        let mut bytes = vec![0xB0, 0x00, 0x88, 0x3E];
        bytes.extend_from_slice(&[0xAA, 0xBB, 0, 0]); // checksum + reserved1
        bytes.extend_from_slice(&7u32.to_be_bytes()); // key
        bytes.extend_from_slice(&9u32.to_be_bytes()); // sequence
        bytes.extend_from_slice(&[0, 0, 1, 2]);
        bytes.extend_from_slice(&syn());
        let d = decapsulate(&bytes).unwrap();
        assert!(d.gre.checksum_present);
        assert_eq!((d.gre.key, d.gre.sequence), (Some(7), Some(9)));
        assert_eq!(d.redirect.unwrap().primary_bucket, 2);
        assert_eq!(d.inner, &syn()[..]);
    }

    #[test]
    fn every_truncation_is_refused() {
        let full = encapsulate(
            Some(RedirectHeader {
                service_id: 0,
                primary_bucket: 1,
                ..Default::default()
            }),
            &syn(),
        );
        for n in 0..full.len() {
            assert!(decapsulate(&full[..n]).is_err(), "{n} bytes accepted");
        }
        let mut with_fields = vec![0xB0, 0x00, 0x08, 0x00];
        with_fields.extend_from_slice(&[0; 12]);
        with_fields.extend_from_slice(&syn());
        for n in 0..with_fields.len() {
            assert!(
                decapsulate(&with_fields[..n]).is_err(),
                "{n} bytes accepted"
            );
        }
        assert!(decapsulate(&with_fields).is_ok());
    }

    #[test]
    fn hostile_headers_are_refused() {
        let base = encapsulate(None, &syn());
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = base.clone();
            f(&mut b);
            decapsulate(&b).map(|_| ())
        };
        assert_eq!(with(&|b| b[1] = 1), Err(GreError::Version(1)));
        assert!(matches!(with(&|b| b[0] = 0x40), Err(GreError::Flags(_))));
        assert!(matches!(with(&|b| b[0] = 0x08), Err(GreError::Flags(_))));
        assert_eq!(
            with(&|b| b[2..4].copy_from_slice(&[0x86, 0xDD])),
            Err(GreError::Protocol(0x86DD))
        );
        // Inner header length below 20, total length beyond the bytes,
        // total length below the header, not IPv4.
        assert_eq!(with(&|b| b[4] = 0x44), Err(GreError::InnerHeaderLength(16)));
        assert!(matches!(
            with(&|b| b[6..8].copy_from_slice(&[0xFF, 0xFF])),
            Err(GreError::InnerTotalLength { .. })
        ));
        assert!(matches!(
            with(&|b| b[6..8].copy_from_slice(&[0, 10])),
            Err(GreError::InnerTotalLength { .. })
        ));
        assert_eq!(with(&|b| b[4] = 0x65), Err(GreError::InnerNotIpv4));
        // Header length 60 but only 40 bytes.
        assert!(with(&|b| b[4] = 0x4F).is_err());
        assert_eq!(with(&|_| {}), Ok(()));
        let mut wccp = encapsulate(Some(RedirectHeader::default()), &syn());
        wccp[4] = 0x10;
        assert_eq!(decapsulate(&wccp), Err(GreError::RedirectHeader(0x10)));
    }

    #[test]
    fn trailing_bytes_after_the_inner_packet_are_cut() {
        let mut b = encapsulate(None, &syn());
        b.extend_from_slice(&[0xEE; 6]);
        assert_eq!(decapsulate(&b).unwrap().inner, &syn()[..]);
    }

    fn outer(payload: &[u8]) -> Vec<u8> {
        let total = (20 + payload.len()) as u16;
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 47, 0, 0, 10, 2, 0, 1, 10, 2, 0, 2,
        ];
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn outer_header_is_checked() {
        let gre = encapsulate(None, &syn());
        let pkt = outer(&gre);
        let (o, payload) = parse_outer(&pkt).unwrap();
        assert_eq!(o.src, Ipv4Addr::new(10, 2, 0, 1));
        assert_eq!(o.dst, Ipv4Addr::new(10, 2, 0, 2));
        assert_eq!(payload, &gre[..]);
        for n in 0..pkt.len() {
            assert!(parse_outer(&pkt[..n]).is_err(), "{n}");
        }
        let mut udp = pkt.clone();
        udp[9] = 17;
        assert_eq!(parse_outer(&udp), Err(GreError::NotGre(17)));
        let mut frag = pkt.clone();
        frag[6] = 0x20; // more fragments
        assert_eq!(parse_outer(&frag), Err(GreError::OuterFragment));
        let mut short_ihl = pkt;
        short_ihl[0] = 0x41;
        assert_eq!(parse_outer(&short_ihl), Err(GreError::OuterHeaderLength(4)));
    }

    #[test]
    fn later_fragments_have_no_ports() {
        let mut p = syn();
        p[6] = 0x00;
        p[7] = 0x10; // fragment offset 16 * 8
        let (_, s) = inner_ipv4(&p).unwrap();
        assert_eq!((s.src_port, s.dst_port, s.tcp_flags), (None, None, None));
    }

    /// The fuzz target's properties (fuzz/fuzz_targets/gre.rs) over
    /// pseudo-random inputs and byte flips of valid packets, so they are
    /// checked on every `cargo test` and not only under cargo-fuzz.
    #[test]
    fn random_and_flipped_inputs_parse_or_refuse_and_round_trip() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid = encapsulate(
            Some(RedirectHeader {
                dynamic: true,
                service_id: 90,
                primary_bucket: 3,
                ..Default::default()
            }),
            &syn(),
        );
        for round in 0..20_000 {
            let mut b = if round % 2 == 0 {
                valid.clone()
            } else {
                (0..(next() % 80) as usize).map(|_| next() as u8).collect()
            };
            for _ in 0..(next() % 4) {
                if !b.is_empty() {
                    let i = (next() as usize) % b.len();
                    b[i] = next() as u8;
                }
            }
            let _ = parse_outer(&b);
            if let Ok(d) = decapsulate(&b) {
                let again = encapsulate(d.redirect, d.inner);
                let back = decapsulate(&again).expect("our own encapsulation parses");
                assert_eq!((back.inner, back.redirect), (d.inner, d.redirect));
            }
        }
    }
}
