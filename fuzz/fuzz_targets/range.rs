//! Range and Content-Range parsing and resolution against any length:
//! resolved ranges always lie inside the representation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_http::ContentRange;
use outpost_http::range::{parse_range_header, resolve_ranges};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let len = u64::from_le_bytes(data[..8].try_into().unwrap()) >> (data[0] % 64);
    let Ok(text) = std::str::from_utf8(&data[8..]) else {
        return;
    };
    if let Ok(specs) = parse_range_header(text)
        && let Ok(ranges) = resolve_ranges(&specs, len)
    {
        for r in ranges {
            assert!(r.start < r.end && r.end <= len, "{r:?} outside {len}");
        }
    }
    if let Some(cr) = ContentRange::parse(text) {
        assert!(cr.range.start < cr.range.end);
        if let Some(total) = cr.complete_len {
            assert!(cr.range.end <= total);
        }
    }
});
