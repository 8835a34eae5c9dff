//! The golden fixtures, decoded by Wireshark's own WCCP dissector (Debian's
//! `tshark`): no malformed packet, no expert warning or error, and the
//! fields a router would act on (service, bucket owners, capabilities)
//! read back as we wrote them.

mod common;

use std::net::Ipv4Addr;

use common::*;
use outpost_wccp::*;

/// A classic pcap (Ethernet) with one UDP/IPv4 datagram per payload,
/// 10.20.0.1:2048 -> 10.20.0.11:2048.
fn write_udp_pcap(path: &std::path::Path, payloads: &[Vec<u8>]) {
    let frames: Vec<Vec<u8>> = payloads
        .iter()
        .map(|p| {
            let mut udp = Vec::new();
            udp.extend_from_slice(&2048u16.to_be_bytes());
            udp.extend_from_slice(&2048u16.to_be_bytes());
            udp.extend_from_slice(&((8 + p.len()) as u16).to_be_bytes());
            udp.extend_from_slice(&0u16.to_be_bytes()); // no UDP checksum (IPv4 allows it)
            udp.extend_from_slice(p);
            let mut frame = vec![0x02, 0, 0, 0, 0, 0x0b, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00];
            frame.extend(ipv4(
                Ipv4Addr::new(10, 20, 0, 1),
                Ipv4Addr::new(10, 20, 0, 11),
                17,
                &udp,
            ));
            frame
        })
        .collect();
    write_pcap(path, 1, &frames);
}

const FIELDS: &[&str] = &[
    "frame.number",
    "wccp.message",
    "_ws.malformed",
    "_ws.expert.message",
    "_ws.expert.severity",
    "wccp.service_info_std_id",
    "wccp.service_info_dyn_id",
    "wccp.bucket",
    "wccp.hash_buckets_assignment.wc_ip.ipv4",
    "wccp.capability_element.type",
    "wccp.capability_info.value",
    "wccp.value_element.web_cache_ip.ipv4",
    "wccp.security_info_option",
    "wccp.service_info_destination_port",
];

/// Expert severities below "warning": chat (0x00200000) and note (0x00400000).
const SEVERITY_WARN: u64 = 0x0060_0000;

#[test]
fn wireshark_decodes_every_fixture_without_warnings() {
    let samples = samples();
    let fixtures: Vec<Vec<u8>> = samples
        .iter()
        .map(|(name, _, _)| std::fs::read(fixture_path(name)).unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("wccp.pcap");
    write_udp_pcap(&pcap, &fixtures);

    let text = tshark_fields(&pcap, &["-d", "udp.port==2048,wccp"], FIELDS);
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), samples.len(), "one row per packet:\n{text}");

    let col = |row: &[&str], name: &str| -> Vec<String> {
        let i = FIELDS.iter().position(|f| *f == name).unwrap();
        row.get(i)
            .filter(|s| !s.is_empty())
            .map(|s| s.split(',').map(str::to_owned).collect())
            .unwrap_or_default()
    };

    for ((name, msg, signed), row) in samples.iter().zip(&rows) {
        assert!(
            col(row, "_ws.malformed").is_empty(),
            "{name}: malformed\n{text}"
        );
        let severities = col(row, "_ws.expert.severity");
        let messages = col(row, "_ws.expert.message");
        for (i, s) in severities.iter().enumerate() {
            let s: u64 = s.parse().unwrap_or(u64::MAX);
            let message = messages.get(i).map(String::as_str).unwrap_or("");
            assert!(
                s < SEVERITY_WARN,
                "{name}: expert {message:?} (severity {s:#x})"
            );
            // The one note we accept: a service without PORTS_DEFINED still
            // carries the eight port fields the layout requires, and the
            // dissector notes they are unused. Any other note fails.
            assert!(
                message == "Ports fields not used" && msg.service.flags & FLAG_PORTS_DEFINED == 0,
                "{name}: unexpected expert note {message:?}"
            );
        }
        let kind = match msg.kind {
            MessageType::HereIAm => "10",
            MessageType::ISeeYou => "11",
            MessageType::RedirectAssign => "12",
            MessageType::RemovalQuery => "13",
        };
        assert_eq!(col(row, "wccp.message"), vec![kind], "{name}");
        assert_eq!(
            col(row, "wccp.security_info_option"),
            vec![if *signed { "1" } else { "0" }],
            "{name}"
        );
        match msg.service.kind {
            ServiceType::Standard => {
                assert_eq!(col(row, "wccp.service_info_std_id"), vec!["0"], "{name}")
            }
            ServiceType::Dynamic => {
                assert_eq!(col(row, "wccp.service_info_dyn_id"), vec!["90"], "{name}");
                assert_eq!(
                    col(row, "wccp.service_info_destination_port"),
                    vec!["80", "8080"]
                );
            }
        }
        if let Some(caps) = &msg.capabilities {
            let types: Vec<String> = caps.elements.iter().map(|c| c.kind.to_string()).collect();
            assert_eq!(col(row, "wccp.capability_element.type"), types, "{name}");
            let values: Vec<u32> = col(row, "wccp.capability_info.value")
                .iter()
                .map(|v| match v.strip_prefix("0x") {
                    Some(hex) => u32::from_str_radix(hex, 16).unwrap(),
                    None => v.parse().unwrap(),
                })
                .collect();
            let want: Vec<u32> = caps.elements.iter().map(|c| c.value).collect();
            assert_eq!(values, want, "{name}: capability values");
        }
        if let Some(a) = &msg.assignment {
            let owners: Vec<String> = a.hash.buckets.iter().map(|b| b.to_string()).collect();
            assert_eq!(col(row, "wccp.bucket"), owners, "{name}: bucket owners");
            let caches: Vec<String> = a.hash.caches.iter().map(|c| c.to_string()).collect();
            assert_eq!(
                col(row, "wccp.hash_buckets_assignment.wc_ip.ipv4"),
                caches,
                "{name}"
            );
        }
        if let Some(AltAssignment {
            body: AltAssignmentBody::Mask(sets),
            ..
        }) = &msg.alt_assignment
        {
            let owners: Vec<String> = sets[0].values.iter().map(|v| v.cache.to_string()).collect();
            assert_eq!(
                col(row, "wccp.value_element.web_cache_ip.ipv4"),
                owners,
                "{name}"
            );
        }
    }
}
