//! WCCP's GRE encapsulation as we build it (`gre::encapsulate`), read by
//! Wireshark's GRE dissector (Debian's `tshark`): protocol 0x883E, the
//! redirect header's flags, service id and buckets as we wrote them, and
//! the inner IPv4/TCP packet dissected after it; no malformed packet.

use std::net::Ipv4Addr;

mod common;

use common::{ipv4, ipv4_checksum, tshark_fields, write_pcap};
use outpost_wccp::gre::{RedirectHeader, encapsulate};

/// A TCP SYN 10.99.1.2:40000 -> 10.99.3.2:80.
fn syn() -> Vec<u8> {
    let mut p = vec![
        0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 99, 1, 2, 10, 99, 3, 2,
    ];
    ipv4_checksum(&mut p[..20]);
    p.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02]);
    p.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    p
}

/// A classic pcap, raw IPv4 link type, one GRE packet per payload from
/// the router 10.99.2.1 to the edge 10.99.2.2.
fn write_gre_pcap(path: &std::path::Path, payloads: &[Vec<u8>]) {
    let frames: Vec<Vec<u8>> = payloads
        .iter()
        .map(|gre| {
            ipv4(
                Ipv4Addr::new(10, 99, 2, 1),
                Ipv4Addr::new(10, 99, 2, 2),
                47,
                gre,
            )
        })
        .collect();
    write_pcap(path, 228, &frames); // LINKTYPE_IPV4
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
    write_gre_pcap(&pcap, &payloads);
    let text = tshark_fields(&pcap, &[], FIELDS);
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
