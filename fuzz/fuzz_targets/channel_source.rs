//! What a channel reads from the network and its config: directory listing
//! pages, manifests, cron schedules, rates and time windows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_channel::listing::{ListingLink, is_under, parse_listing, parse_manifest};

fuzz_target!(|data: &[u8]| {
    let base = url::Url::parse("http://fileserver.test/pkgs/").unwrap();
    let page = url::Url::parse("http://fileserver.test/pkgs/sub/").unwrap();
    let html = String::from_utf8_lossy(data);
    for link in parse_listing(&html, &page, &base) {
        let (ListingLink::Dir(u) | ListingLink::File(u)) = link;
        assert!(is_under(&u, &page) && u.query().is_none(), "{u}");
    }
    let manifest = url::Url::parse("http://fileserver.test/pkgs/SHA256SUMS").unwrap();
    if let Ok(entries) = parse_manifest(data, &manifest) {
        for e in entries {
            assert_eq!(e.url.host_str(), Some("fileserver.test"));
        }
    }
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
