//! The TOML configuration: any text is either a clear error or a config
//! that validates and resolves; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost::config::{FileConfig, Overrides};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = FileConfig::parse(text)
        && config.validate(text).is_ok()
    {
        let _ = config.resolve(&Overrides::default());
    }
});
