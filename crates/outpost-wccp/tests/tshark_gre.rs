//! WCCP's GRE encapsulation as we build it (`gre::encapsulate`), read by
//! Wireshark's GRE dissector (Debian's `tshark`): protocol 0x883E, the
//! redirect header's flags, service id and buckets as we wrote them, and
//! the inner IPv4/TCP packet dissected after it; no malformed packet.

use std::net::Ipv4Addr;
use std::process::Command;

use outpost_wccp::gre::{RedirectHeader, encapsulate};

fn checksum(ip: &mut [u8]) {
    ip[10] = 0;
    ip[11] = 0;
    let mut sum: u32 = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// A TCP SYN 10.99.1.2:40000 -> 10.99.3.2:80.
fn syn() -> Vec<u8> {
    let mut p = vec![
        0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 99, 1, 2, 10, 99, 3, 2,
    ];
    checksum(&mut p[..20]);
    p.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02]);
    p.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    p
}

/// A classic pcap, raw IPv4 link type, one GRE packet per payload from
/// the router 10.99.2.1 to the edge 10.99.2.2.
fn write_pcap(path: &std::path::Path, payloads: &[Vec<u8>]) {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&0i32.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&228u32.to_le_bytes()); // LINKTYPE_IPV4
    for (i, gre) in payloads.iter().enumerate() {
        let total = (20 + gre.len()) as u16;
        let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 47, 0, 0];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&Ipv4Addr::new(10, 99, 2, 1).octets());
        ip.extend_from_slice(&Ipv4Addr::new(10, 99, 2, 2).octets());
        checksum(&mut ip);
        ip.extend_from_slice(gre);
        f.extend_from_slice(&(1_796_000_000u32 + i as u32).to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&(ip.len() as u32).to_le_bytes());
        f.extend_from_slice(&(ip.len() as u32).to_le_bytes());
        f.extend_from_slice(&ip);
    }
    std::fs::write(path, f).unwrap();
}

const FIELDS: &[&str] = &[
    "_ws.malformed",
    "gre.proto",
    "gre.wccp.dynamic_service",
    "gre.wccp.alternative_bucket_used",
    "gre.wccp.redirect_header_valid",
    "gre.wccp.service_id",
    "gre.wccp.alternative_bucket",
    "gre.wccp.primary_bucket",
    "ip.dst",
    "tcp.dstport",
];

#[test]
fn wireshark_reads_our_gre_redirect_header_as_we_wrote_it() {
    let headers = [
        RedirectHeader {
            service_id: 0,
            primary_bucket: 0xA7,
            ..Default::default()
        },
        RedirectHeader {
            dynamic: true,
            alt_bucket_used: true,
            ignore: false,
            service_id: 90,
            alt_bucket: 12,
            primary_bucket: 200,
        },
    ];
    let payloads: Vec<Vec<u8>> = headers
        .iter()
        .map(|h| encapsulate(Some(*h), &syn()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("gre.pcap");
    write_pcap(&pcap, &payloads);
    let mut cmd = Command::new("tshark");
    cmd.env("HOME", dir.path())
        .args(["-n", "-r"])
        .arg(&pcap)
        .args(["-T", "fields", "-E", "separator=\t", "-E", "occurrence=a"])
        .args(["-E", "aggregator=,"]);
    for f in FIELDS {
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
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), headers.len(), "one row per packet:\n{text}");
    let col = |row: &[&str], name: &str| -> String {
        let i = FIELDS.iter().position(|f| *f == name).unwrap();
        row.get(i).copied().unwrap_or("").to_string()
    };
    let flag = |b: bool| if b { "1" } else { "0" };
    for (h, row) in headers.iter().zip(&rows) {
        assert_eq!(col(row, "_ws.malformed"), "", "malformed:\n{text}");
        assert_eq!(col(row, "gre.proto"), "0x883e", "{text}");
        // Booleans print as 1/0 or True/False depending on the release.
        let b = |name: &str| match col(row, name).as_str() {
            "True" | "1" => "1",
            "False" | "0" => "0",
            other => panic!("{name} = {other:?}\n{text}"),
        };
        assert_eq!(b("gre.wccp.dynamic_service"), flag(h.dynamic), "{text}");
        assert_eq!(
            b("gre.wccp.alternative_bucket_used"),
            flag(h.alt_bucket_used),
            "{text}"
        );
        assert_eq!(
            b("gre.wccp.redirect_header_valid"),
            flag(h.ignore),
            "{text}"
        );
        assert_eq!(col(row, "gre.wccp.service_id"), h.service_id.to_string());
        assert_eq!(
            col(row, "gre.wccp.alternative_bucket"),
            h.alt_bucket.to_string()
        );
        assert_eq!(
            col(row, "gre.wccp.primary_bucket"),
            h.primary_bucket.to_string()
        );
        // The inner packet is dissected after the redirect header: the
        // outer and the inner destination, and the TCP port.
        assert_eq!(col(row, "ip.dst"), "10.99.2.2,10.99.3.2", "{text}");
        assert_eq!(col(row, "tcp.dstport"), "80", "{text}");
    }
}
