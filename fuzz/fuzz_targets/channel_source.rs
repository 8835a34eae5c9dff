//! What a channel reads from the network and its config: directory listing
//! pages, manifests, cron schedules, rates and time windows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_channel::listing::{
    ListingLink, is_under, parse_listing, parse_listing_limited, parse_manifest,
    parse_manifest_each,
};

fuzz_target!(|data: &[u8]| {
    let base = url::Url::parse("http://fileserver.test/pkgs/").unwrap();
    let page = url::Url::parse("http://fileserver.test/pkgs/sub/").unwrap();
    let html = String::from_utf8_lossy(data);
    for link in parse_listing(&html, &page, &base) {
        let (ListingLink::Dir(u) | ListingLink::File(u)) = link;
        assert!(is_under(&u, &page) && u.query().is_none(), "{u}");
    }
    // A page read up to a limit holds at most that many entries.
    let limit = usize::from(data.first().copied().unwrap_or(0) % 16);
    let limited = parse_listing_limited(&html, &page, &base, limit);
    assert!(limited.links.len() <= limit);
    let manifest = url::Url::parse("http://fileserver.test/pkgs/SHA256SUMS").unwrap();
    if let Ok(entries) = parse_manifest(data, &manifest) {
        for e in entries {
            assert_eq!(e.url.host_str(), Some("fileserver.test"));
        }
    }
    let mut taken = 0;
    let _ = parse_manifest_each(data, &manifest, |e| {
        assert_eq!(e.url.host_str(), Some("fileserver.test"));
        taken += 1;
        if taken >= limit {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    });
    assert!(taken <= limit.max(1));
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cron) = text.parse::<outpost_channel::CronSchedule>() {
            let t = chrono_free_start();
            let _ = cron.next_after(t);
        }
        let _ = text.parse::<outpost_shaper::Rate>();
        let _ = text.parse::<outpost_shaper::TimeWindow>();
    }
});

fn chrono_free_start() -> outpost_channel::cron::NaiveDateTime {
    outpost_channel::cron::NaiveDateTime::default()
}
