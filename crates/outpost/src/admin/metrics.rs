//! `/metrics`: the Prometheus text rendering of the engine's, the
//! shaper's and the channels' counters, rendered at most once per
//! [`CACHE_FOR`] whatever the number of scrapers: the endpoint needs no
//! token, and a render reads the index and every channel's files.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use outpost_channel::Channels;
use outpost_proxy::Engine;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// How long a rendered `/metrics` document is served again.
const CACHE_FOR: Duration = Duration::from_secs(1);

pub(super) struct Metrics {
    engine: Arc<Engine>,
    channels: Arc<Channels>,
    /// The last document and when it was rendered.
    cache: tokio::sync::Mutex<Option<(Instant, Bytes)>>,
}

impl Metrics {
    pub(super) fn new(engine: Arc<Engine>, channels: Arc<Channels>) -> Self {
        Self {
            engine,
            channels,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// The document, rendered at most once per `CACHE_FOR` (renders wait
    /// for each other), off the async workers; `None` if encoding failed.
    pub(super) async fn document(&self) -> Option<Bytes> {
        let mut cache = self.cache.lock().await;
        if let Some((at, body)) = cache.as_ref()
            && at.elapsed() < CACHE_FOR
        {
            return Some(body.clone());
        }
        let body = Bytes::from(tokio::task::block_in_place(|| self.render())?);
        *cache = Some((Instant::now(), body.clone()));
        Some(body)
    }

    fn render(&self) -> Option<String> {
        let e = &self.engine;
        let s = &e.stats;
        let f = &e.fills.stats;
        let mut registry = Registry::with_prefix("outpost");
        let requests = Family::<Vec<(String, String)>, Counter>::default();
        for (result, value) in [
            ("hit", &s.hits),
            ("miss", &s.misses),
            ("collapsed", &s.collapsed),
            ("revalidated", &s.revalidated),
            ("stale", &s.stale),
            ("passthrough", &s.passthrough),
            ("error", &s.errors),
        ] {
            requests
                .get_or_create(&vec![("result".into(), result.into())])
                .inc_by(value.load(Ordering::Relaxed));
        }
        registry.register("requests", "Client requests by cache result", requests);
        let counter = |v: u64| {
            let c = Counter::<u64>::default();
            c.inc_by(v);
            c
        };
        let gauge = |v: u64| {
            let g = Gauge::<i64>::default();
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
            g
        };
        registry.register(
            "wan_body_bytes",
            "Body bytes fetched from origins",
            counter(f.wan_bytes.load(Ordering::Relaxed)),
        );
        registry.register(
            "upstream_requests",
            "Requests sent to origins",
            counter(f.upstream_requests.load(Ordering::Relaxed) as u64),
        );
        registry.register(
            "upstream_retries",
            "Upstream fetches retried after a drop or an error",
            counter(f.upstream_retries.load(Ordering::Relaxed) as u64),
        );
        registry.register(
            "fills_completed",
            "Objects completed by fills",
            counter(f.completed.load(Ordering::Relaxed) as u64),
        );
        registry.register(
            "fills_active",
            "Fills running now",
            gauge(e.fills.progress().len() as u64),
        );
        if let Ok(store) = e.store.stats() {
            registry.register("cache_bytes", "Bytes of bodies on disk", gauge(store.bytes));
            registry.register(
                "cache_limit_bytes",
                "Configured cache size",
                gauge(store.max_bytes),
            );
            registry.register(
                "cache_objects",
                "Objects in the index",
                gauge(store.objects),
            );
            registry.register(
                "cache_pinned_bytes",
                "Bytes of pinned objects",
                gauge(store.pinned_bytes),
            );
            registry.register(
                "cache_evictions",
                "Objects evicted",
                counter(store.evictions),
            );
        }
        let served = Family::<Vec<(String, String)>, Counter>::default();
        for (source, value) in [
            ("cache", &e.served.from_cache),
            ("fill", &e.served.from_fills),
            ("other", &e.served.other),
        ] {
            served
                .get_or_create(&vec![("source".into(), source.into())])
                .inc_by(value.load(Ordering::Relaxed));
        }
        let mode_requests = Family::<Vec<(String, String)>, Counter>::default();
        let mode_bytes = Family::<Vec<(String, String)>, Counter>::default();
        for mode in outpost_proxy::h1::Mode::ALL {
            let labels = vec![("mode".to_string(), mode.name().to_string())];
            mode_requests
                .get_or_create(&labels)
                .inc_by(e.served.mode_requests[mode as usize].load(Ordering::Relaxed));
            mode_bytes
                .get_or_create(&labels)
                .inc_by(e.served.mode_bytes[mode as usize].load(Ordering::Relaxed));
        }
        registry.register(
            "mode_requests",
            "Proxied requests by how they reached the edge: forward, transparent, reverse",
            mode_requests,
        );
        registry.register(
            "mode_served_bytes",
            "Bytes written to clients by how their requests reached the edge",
            mode_bytes,
        );
        registry.register(
            "served_bytes",
            "Bytes written to clients: from disk (cache), streamed from fills, or other (passthrough, errors)",
            served,
        );
        self.register_wan_and_channels(&mut registry);
        if let Some(log) = e.access_log() {
            registry.register(
                "access_log_dropped_lines",
                "Access log lines dropped because the writer fell behind",
                counter(log.dropped.load(Ordering::Relaxed)),
            );
        }
        let mut out = String::new();
        encode(&mut out, &registry).ok()?;
        Some(out)
    }
    fn register_wan_and_channels(&self, registry: &mut Registry) {
        type Labels = Vec<(String, String)>;
        let wan_bytes = Family::<Labels, Counter>::default();
        let wan_rate = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let wan_limit = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let wan_queued = Family::<Labels, Gauge>::default();
        for class in self.engine.fills.shaper.status() {
            let labels = vec![("class".to_string(), class.class.to_string())];
            wan_bytes.get_or_create(&labels).inc_by(class.bytes_total);
            wan_rate.get_or_create(&labels).set(class.rate);
            wan_limit
                .get_or_create(&labels)
                .set(class.limit.unwrap_or(-1.0));
            wan_queued
                .get_or_create(&labels)
                .set(class.queued_reads as i64);
        }
        registry.register(
            "wan_class_bytes",
            "Upstream body bytes read, by traffic class",
            wan_bytes,
        );
        registry.register(
            "wan_class_rate_bytes_per_second",
            "Upstream read rate over the last 5 s, by traffic class",
            wan_rate,
        );
        registry.register(
            "wan_class_limit_bytes_per_second",
            "Limit in force now, by class (-1: unlimited)",
            wan_limit,
        );
        registry.register(
            "wan_class_queued_reads",
            "Upstream reads waiting for the shaper, by class",
            wan_queued,
        );
        let files = Family::<Labels, Gauge>::default();
        let bytes = Family::<Labels, Gauge>::default();
        let quarantined = Family::<Labels, Gauge>::default();
        let running = Family::<Labels, Gauge>::default();
        let last_ok = Family::<Labels, Gauge>::default();
        let last_finished = Family::<Labels, Gauge>::default();
        for ch in self.channels.status() {
            let with = |k: &str, v: &str| {
                vec![
                    ("channel".to_string(), ch.name.clone()),
                    (k.to_string(), v.to_string()),
                ]
            };
            let name = vec![("channel".to_string(), ch.name.clone())];
            files
                .get_or_create(&with("state", "present"))
                .set(ch.files_present as i64);
            files
                .get_or_create(&with("state", "total"))
                .set(ch.files_total as i64);
            bytes
                .get_or_create(&with("state", "present"))
                .set(ch.bytes_present as i64);
            bytes
                .get_or_create(&with("state", "total"))
                .set(ch.bytes_total as i64);
            quarantined
                .get_or_create(&name)
                .set(ch.quarantined.len() as i64);
            running
                .get_or_create(&name)
                .set(i64::from(ch.running.is_some()));
            if let Some(last) = &ch.last_run {
                last_ok
                    .get_or_create(&name)
                    .set(i64::from(last.result == outpost_protocol::SyncResult::Ok));
                last_finished.get_or_create(&name).set(last.finished);
            }
        }
        registry.register("channel_files", "Files of each channel", files);
        registry.register("channel_bytes", "Bytes of each channel", bytes);
        registry.register(
            "channel_quarantined_files",
            "Files refused for a digest mismatch",
            quarantined,
        );
        registry.register("channel_sync_running", "1 while a sync runs", running);
        registry.register(
            "channel_last_sync_ok",
            "1 if the last sync finished without errors",
            last_ok,
        );
        registry.register(
            "channel_last_sync_finished_seconds",
            "Unix time the last sync finished",
            last_finished,
        );
    }
}
