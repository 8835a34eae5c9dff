//! The edge's report in each heartbeat ([`EdgeReport`]), from the engine's
//! counters (the same ones `/status` reads) and the channels.

use std::sync::atomic::Ordering;
use std::time::Instant;

use outpost_channel::Channels;
use outpost_protocol::EdgeReport;
use outpost_proxy::Engine;

pub fn edge_report(engine: &Engine, channels: &Channels, started: Instant) -> EdgeReport {
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let from_cache = load(&engine.served.from_cache);
    let from_fills = load(&engine.served.from_fills);
    let other = load(&engine.served.other);
    let lan_bytes_out = from_cache + from_fills + other;
    let wan_bytes_in = load(&engine.fills.stats.wan_bytes);
    let store = engine.store.stats().unwrap_or_default();
    EdgeReport {
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_seconds: started.elapsed().as_secs(),
        disk_used: store.bytes,
        disk_limit: store.max_bytes,
        hit_ratio_bytes: if lan_bytes_out == 0 {
            0.0
        } else {
            from_cache as f64 / lan_bytes_out as f64
        },
        wan_bytes_in,
        lan_bytes_out,
        // As /status counts it: what clients got from stored copies (and
        // the fills they shared) beyond what those copies cost.
        bytes_saved: (from_cache + from_fills).saturating_sub(wan_bytes_in),
        active_fills: engine.fills.progress().len() as u64,
        channels: channels.fleet_report(),
    }
}
