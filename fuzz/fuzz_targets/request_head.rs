//! The client-side request head parser: any bytes give a head, "need
//! more", or a refusal with a 4xx/5xx status; never a panic. A head that
//! parses has exactly one Host (HTTP/1.1) and unambiguous framing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_proxy::h1::{Framing, H1Config, parse_request_head};

fuzz_target!(|data: &[u8]| {
    let config = H1Config::default();
    match parse_request_head(data, &config) {
        Ok(Some((parts, framing, used))) => {
            assert!(used <= data.len());
            let cl = parts.headers.get_all(http::header::CONTENT_LENGTH).iter().count();
            let te = parts.headers.contains_key(http::header::TRANSFER_ENCODING);
            assert!(!(cl > 0 && te), "CL and TE both accepted");
            if let Framing::Chunked = framing {
                assert!(te);
            }
        }
        Ok(None) => assert!(data.len() < config.max_head_bytes),
        Err(refusal) => assert!(refusal.0.is_client_error() || refusal.0.is_server_error()),
    }
});
