//! WCCPv2 datagrams as a hostile host on the LAN (or a broken router)
//! sends them: the codec refuses or parses without panicking; whatever it
//! parses re-encodes to a message that parses back equal; and a parsed
//! message fed to a service group (as if from a configured router) never
//! panics the state machine.

#![no_main]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use outpost_wccp::{GroupConfig, Password, ServiceGroup, decode, encode};

fuzz_target!(|data: &[u8]| {
    let password = Password::new("s3cret").unwrap();
    for pw in [None, Some(&password)] {
        let Ok(msg) = decode(data, pw) else { continue };
        let again = decode(&encode(&msg, pw), pw).expect("our own encoding parses");
        assert_eq!(again, msg, "re-encoding changed the message");
        let router = Ipv4Addr::new(10, 0, 0, 1);
        let now = Instant::now();
        let mut group = ServiceGroup::new(
            GroupConfig::web_cache(Ipv4Addr::new(10, 0, 0, 11), vec![router]),
            now,
        );
        let _ = group.handle(router, &msg, now);
        let _ = group.poll(now + Duration::from_secs(16));
        let _ = group.status(now + Duration::from_secs(16));
    }
});
