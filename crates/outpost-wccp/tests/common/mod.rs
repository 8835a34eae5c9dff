//! Sample messages shared by the codec and tshark tests: one per message
//! type and assignment form, written to tests/fixtures/NAME.bin.

#![allow(dead_code)]

use std::net::Ipv4Addr;

use outpost_wccp::assign::{self, Member};
use outpost_wccp::*;

pub const PASSWORD: &str = "s3cret";

/// Sets an IPv4 header's checksum (the header is the whole slice).
pub fn ipv4_checksum(header: &mut [u8]) {
    header[10] = 0;
    header[11] = 0;
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    header[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// An IPv4 packet from `src` to `dst` carrying `payload` as `protocol`.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, protocol, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ipv4_checksum(&mut ip);
    ip.extend_from_slice(payload);
    ip
}

/// Runs tshark on `pcap` (with `extra` arguments, such as a decode-as)
/// and gives its `fields` of every packet, one row each, tab-separated,
/// several occurrences joined by commas. Without user preferences: HOME
/// is the pcap's directory.
pub fn tshark_fields(pcap: &std::path::Path, extra: &[&str], fields: &[&str]) -> String {
    let mut cmd = std::process::Command::new("tshark");
    cmd.env("HOME", pcap.parent().unwrap())
        .args(["-n", "-r"])
        .arg(pcap)
        .args(extra)
        .args(["-T", "fields", "-E", "separator=\t", "-E", "occurrence=a"])
        .args(["-E", "aggregator=,"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd
        .output()
        .expect("tshark is not installed (Debian: apt-get install tshark; .ci/run installs it)");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Writes a classic pcap (microseconds) of `frames` with `linktype` (1:
/// Ethernet, 228: raw IPv4), one a second, for tshark to read.
pub fn write_pcap(path: &std::path::Path, linktype: u32, frames: &[Vec<u8>]) {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&0i32.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&linktype.to_le_bytes());
    for (i, frame) in frames.iter().enumerate() {
        f.extend_from_slice(&(1_796_000_000u32 + i as u32).to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        f.extend_from_slice(frame);
    }
    std::fs::write(path, f).unwrap();
}

pub fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 20, 0, last)
}

pub fn caps(fwd: u32, asg: u32, ret: u32) -> Capabilities {
    Capabilities {
        elements: vec![
            Capability {
                kind: CAP_FORWARDING,
                value: fwd,
            },
            Capability {
                kind: CAP_ASSIGNMENT,
                value: asg,
            },
            Capability {
                kind: CAP_RETURN,
                value: ret,
            },
        ],
    }
}

pub fn dynamic_service() -> ServiceInfo {
    ServiceInfo {
        kind: ServiceType::Dynamic,
        id: 90,
        priority: 240,
        protocol: 6,
        flags: FLAG_SRC_IP_HASH | FLAG_PORTS_DEFINED,
        ports: [80, 8080, 0, 0, 0, 0, 0, 0],
    }
}

pub fn members() -> Vec<Member> {
    vec![
        Member {
            ip: ip(11),
            weight: 0,
        },
        Member {
            ip: ip(12),
            weight: 0,
        },
        Member {
            ip: ip(13),
            weight: 0,
        },
    ]
}

pub fn mask() -> MaskElement {
    MaskElement {
        src_ip: assign::DEFAULT_SOURCE_MASK,
        dst_ip: 0,
        src_port: 0,
        dst_port: 0,
    }
}

/// (fixture name, message, signed with PASSWORD?)
pub fn samples() -> Vec<(&'static str, Message, bool)> {
    let hash = assign::hash_assignment(&members(), None);
    let mut mine = [0u8; 32];
    for b in 0..=255u8 {
        if hash.owner(b) == Some(ip(11)) {
            set_bucket_bit(&mut mine, b);
        }
    }
    let router = RouterId {
        ip: ip(1),
        receive_id: 7,
    };

    let mut here = Message::new(MessageType::HereIAm, ServiceInfo::web_cache());
    here.wc_identity = Some(WebCacheIdentity {
        data: CacheAssignmentData::Hash { buckets: mine },
        ..WebCacheIdentity::new(ip(11), 100)
    });
    here.wc_view = Some(WebCacheViewInfo {
        change: 3,
        routers: vec![router],
        caches: vec![ip(11), ip(12), ip(13)],
    });
    here.capabilities = Some(caps(METHOD_GRE, ASSIGN_HASH, METHOD_GRE));

    let mut here_md5 = Message::new(MessageType::HereIAm, dynamic_service());
    here_md5.wc_identity = Some(WebCacheIdentity::new(ip(12), 0));
    here_md5.wc_view = Some(WebCacheViewInfo {
        change: 1,
        routers: vec![],
        caches: vec![ip(12)],
    });
    here_md5.capabilities = Some(caps(
        METHOD_GRE | METHOD_L2,
        ASSIGN_HASH | ASSIGN_MASK,
        METHOD_GRE | METHOD_L2,
    ));

    let mut shutdown = here.clone();
    shutdown.command = Some(CommandExtension::shutdown(ip(11)));

    let mut see = Message::new(MessageType::ISeeYou, ServiceInfo::web_cache());
    see.router_identity = Some(RouterIdentityInfo {
        router,
        sent_to: ip(11),
        received_from: vec![ip(11), ip(12), ip(13)],
    });
    let mut ids: Vec<WebCacheIdentity> = [11, 12, 13]
        .iter()
        .map(|&l| WebCacheIdentity::new(ip(l), 0))
        .collect();
    ids[0].data = CacheAssignmentData::Hash { buckets: mine };
    see.router_view = Some(RouterViewInfo {
        member_change: 4,
        key: AssignmentKey {
            ip: ip(11),
            change: 2,
        },
        routers: vec![ip(1)],
        caches: ids,
    });
    see.capabilities = Some(caps(
        METHOD_GRE | METHOD_L2,
        ASSIGN_HASH | ASSIGN_MASK,
        METHOD_GRE | METHOD_L2,
    ));

    let routers = vec![RouterAssignment { router, change: 4 }];
    let mut redirect = Message::new(MessageType::RedirectAssign, ServiceInfo::web_cache());
    redirect.assignment = Some(AssignmentInfo {
        key: AssignmentKey {
            ip: ip(11),
            change: 2,
        },
        routers: routers.clone(),
        hash,
    });

    let sets = assign::mask_assignment(mask(), &members(), None);
    let mut redirect_mask = Message::new(MessageType::RedirectAssign, ServiceInfo::web_cache());
    redirect_mask.alt_assignment = Some(AltAssignment {
        key: AssignmentKey {
            ip: ip(11),
            change: 5,
        },
        routers,
        body: AltAssignmentBody::Mask(sets.clone()),
    });

    let mut see_mask = see.clone();
    see_mask.router_view.as_mut().unwrap().caches = [11, 12, 13]
        .iter()
        .map(|&l| WebCacheIdentity {
            data: CacheAssignmentData::Mask {
                sets: vec![MaskValueSet {
                    mask: mask(),
                    values: sets[0]
                        .values
                        .iter()
                        .filter(|v| v.cache == ip(l))
                        .copied()
                        .collect(),
                }],
            },
            ..WebCacheIdentity::new(ip(l), 0)
        })
        .collect();
    see_mask.assignment_map = Some(sets);
    see_mask.capabilities = Some(caps(METHOD_L2, ASSIGN_MASK, METHOD_L2));

    let mut removal = Message::new(MessageType::RemovalQuery, ServiceInfo::web_cache());
    removal.query = Some(QueryInfo {
        router,
        sent_to: ip(12),
        target: ip(12),
    });

    vec![
        ("here_i_am", here, false),
        ("here_i_am_md5_dynamic", here_md5, true),
        ("here_i_am_shutdown", shutdown, false),
        ("i_see_you", see, false),
        ("i_see_you_mask", see_mask, true),
        ("redirect_assign_hash", redirect, true),
        ("redirect_assign_mask", redirect_mask, false),
        ("removal_query", removal, true),
    ]
}

pub fn password_for(signed: bool) -> Option<Password> {
    signed.then(|| Password::new(PASSWORD).unwrap())
}

pub fn fixture_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.bin"))
}
