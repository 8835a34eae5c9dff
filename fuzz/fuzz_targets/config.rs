//! The TOML configuration: any text is either a list of clear errors or a
//! resolved config; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost::config::{Overrides, resolve_text};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = resolve_text(text, "fuzz", &Overrides::default());
});
