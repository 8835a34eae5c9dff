//! Test support: a fake origin server that tests script (content, headers,
//! throttling, dropped connections, changing content, latency) and that
//! records every request it receives; a minimal HTTP/1.1 client; and
//! deterministic test content.
//!
//! Everything runs in-process on loopback sockets bound to port 0, except
//! the root-only helpers for network-namespace tests: [`netns`] (run code
//! inside a namespace) and [`gre_redirector`] (a router's WCCP GRE
//! redirect and packet return, in userspace).

mod client;
pub mod gre_redirector;
pub mod netns;
mod origin;
pub mod wccp_router;

pub use client::{Client, Reply};
pub use origin::{Origin, RecordedRequest, Resource};

use std::time::Duration;

/// Deterministic pseudo-random content of `len` bytes, different per `seed`.
pub fn content(len: usize, seed: u64) -> bytes::Bytes {
    let mut out = Vec::with_capacity(len);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.truncate(len);
    out.into()
}

/// Polls `check` until it returns true or `deadline` passes. Returns whether
/// it became true: tests assert on that instead of sleeping and hoping.
pub async fn wait_until(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
