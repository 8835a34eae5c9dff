//! GRE packets as a raw socket hands them to the edge's own WCCP data
//! path, from a hostile host or a broken router: the codec refuses or
//! parses without panicking; what it parses re-encapsulates to a payload
//! that parses back to the same inner packet and redirect header; and the
//! data path's decisions (deliver, return, drop; the flow table) never
//! panic, with the bytes taken both as a whole datagram and as the GRE
//! payload of one from a configured router.

#![no_main]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use outpost_wccp::datapath::{Datapath, DatapathConfig, RedirectedService, Verdict};
use outpost_wccp::gre;

const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);

fn from_router(payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + payload.len()).unwrap_or(u16::MAX);
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 47, 0, 0];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&ROUTER.octets());
    p.extend_from_slice(&[10, 2, 0, 2]);
    p.extend_from_slice(payload);
    p
}

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = gre::decapsulate(data) {
        let again = gre::encapsulate(d.redirect, d.inner);
        let back = gre::decapsulate(&again).expect("our own encapsulation parses");
        assert_eq!(back.inner, d.inner);
        // Without a redirect header we write 0x0800; with one, 0x883E.
        assert_eq!(back.redirect, d.redirect);
    }
    let _ = gre::parse_outer(data);
    let mut dp = Datapath::new(DatapathConfig {
        routers: vec![ROUTER],
        bypass_destinations: vec!["10.9.0.0/16".parse().unwrap()],
        bypass_clients: vec!["10.1.0.66/32".parse().unwrap()],
        max_redirected_flows: Some(1),
        services: vec![RedirectedService::of(&outpost_wccp::ServiceInfo::web_cache())],
        local: std::net::Ipv4Addr::new(10, 2, 0, 2),
    });
    let now = Instant::now();
    let wrapped = from_router(data);
    for (i, packet) in [data, &wrapped[..], &wrapped[..], data].into_iter().enumerate() {
        let at = now + Duration::from_secs(60 * i as u64);
        if let Verdict::Return { gre: payload, .. } = dp.handle(packet, at, |_| i % 2 == 1) {
            let back = gre::decapsulate(&payload).expect("a returned packet parses");
            assert!(back.redirect.is_some(), "a return carries the redirect header");
        }
    }
});
