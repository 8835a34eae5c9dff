//! `/metrics`: the engine's, the shaper's and the channels' counters in
//! the OpenMetrics text format.
//!
//! The registry is built once, at bind, with one [`Collector`] that reads
//! the live counters where they are kept (the engine's atomics, the
//! store's and the channels' status) at each scrape: the edge keeps one
//! copy of each count, so `/metrics`, `/status` and the access log cannot
//! disagree. Every label set is a typed struct (`#[derive(EncodeLabelSet)]`)
//! and every fixed label value an enum, so a label cannot be misspelt in
//! one place only. A document is rendered at most once per [`CACHE_FOR`]
//! whatever the number of scrapers: the endpoint needs no token, and a
//! render reads the index and every channel's files.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use outpost_channel::Channels;
use outpost_protocol::SyncResult;
use outpost_proxy::h1::{LibraryWay, Mode, ServedBytes};
use outpost_proxy::{CacheStatus, Engine};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// How long a rendered `/metrics` document is served again.
const CACHE_FOR: Duration = Duration::from_secs(1);

pub(super) struct Metrics {
    registry: Registry,
    /// The last document and when it was rendered.
    cache: tokio::sync::Mutex<Option<(Instant, Bytes)>>,
}

impl Metrics {
    pub(super) fn new(engine: Arc<Engine>, channels: Arc<Channels>) -> Self {
        let mut registry = Registry::with_prefix("outpost");
        registry.register_collector(Box::new(EdgeCollector { engine, channels }));
        Self {
            registry,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// Adds a collector read at each scrape (WCCP's, once it runs).
    pub(super) fn register(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
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
        let body = tokio::task::block_in_place(|| {
            let mut out = String::new();
            encode(&mut out, &self.registry).ok().map(|()| out)
        })?;
        let body = Bytes::from(body);
        *cache = Some((Instant::now(), body.clone()));
        Some(body)
    }
}

/// Label values from a closed set: written as their lowercase word.
macro_rules! label_enum {
    ($name:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        enum $name {
            $($variant),+
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
                use fmt::Write;
                encoder.write_str(match self {
                    $(Self::$variant => $word),+
                })
            }
        }
    };
}

label_enum!(RequestResult {
    Hit => "hit",
    Miss => "miss",
    Collapsed => "collapsed",
    Revalidated => "revalidated",
    Stale => "stale",
    Passthrough => "passthrough",
    Error => "error",
});

label_enum!(ServedFrom {
    Cache => "cache",
    Fill => "fill",
    Other => "other",
});

label_enum!(ProxyMode {
    Forward => "forward",
    Transparent => "transparent",
    Reverse => "reverse",
});

label_enum!(LibraryWayLabel {
    DeliveryOptimization => "delivery_optimization",
    DnsMode => "dns_mode",
    Pac => "pac",
    Library => "library",
});

label_enum!(FileState {
    Present => "present",
    Total => "total",
});

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: RequestResult,
}

/// A response's cache verdict, as its snake_case name
/// ([`CacheStatus::label`]): one value per verdict, where Squid's codes
/// fold several into one (`TCP_MISS`) and depend on the status sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Verdict(CacheStatus);

impl EncodeLabelValue for Verdict {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        use fmt::Write;
        encoder.write_str(self.0.label())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VerdictLabels {
    cache_status: Verdict,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SourceLabels {
    source: ServedFrom,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModeLabels {
    mode: ProxyMode,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LibraryLabels {
    way: LibraryWayLabel,
    source: ServedFrom,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ChannelFileLabels {
    channel: String,
    state: FileState,
}

/// Reads the edge's counters at each scrape.
struct EdgeCollector {
    engine: Arc<Engine>,
    channels: Arc<Channels>,
}

impl fmt::Debug for EdgeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EdgeCollector")
    }
}

fn load(v: &AtomicU64) -> u64 {
    v.load(Ordering::Relaxed)
}

fn load_usize(v: &AtomicUsize) -> u64 {
    v.load(Ordering::Relaxed) as u64
}

pub(super) fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One metric without labels.
pub(super) fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: impl EncodeMetric,
) -> fmt::Result {
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

/// One metric family: a value per label set.
pub(super) fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    values: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result {
    let mut metric_encoder = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, metric) in values {
        metric.encode(metric_encoder.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for EdgeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let e = &self.engine;
        let s = &e.stats;
        let f = &e.fills.stats;
        let enc = &mut encoder;
        family(
            enc,
            "requests",
            "Client requests by cache result",
            MetricType::Counter,
            [
                (RequestResult::Hit, &s.hits),
                (RequestResult::Miss, &s.misses),
                (RequestResult::Collapsed, &s.collapsed),
                (RequestResult::Revalidated, &s.revalidated),
                (RequestResult::Stale, &s.stale),
                (RequestResult::Passthrough, &s.passthrough),
                (RequestResult::Error, &s.errors),
            ]
            .map(|(result, v)| (ResultLabels { result }, ConstCounter::new(load(v)))),
        )?;
        single(
            enc,
            "wan_body_bytes",
            "Body bytes fetched from origins",
            ConstCounter::new(load(&f.wan_bytes)),
        )?;
        single(
            enc,
            "upstream_requests",
            "Requests sent to origins",
            ConstCounter::new(load_usize(&f.upstream_requests)),
        )?;
        single(
            enc,
            "upstream_retries",
            "Upstream fetches retried after a drop or an error",
            ConstCounter::new(load_usize(&f.upstream_retries)),
        )?;
        single(
            enc,
            "fills_completed",
            "Objects completed by fills",
            ConstCounter::new(load_usize(&f.completed)),
        )?;
        single(
            enc,
            "fills_active",
            "Fills running now",
            ConstGauge::new(gauge_value(e.fills.progress().len() as u64)),
        )?;
        if let Ok(store) = e.store.stats() {
            for (name, help, value) in [
                ("cache_bytes", "Bytes of bodies on disk", store.bytes),
                (
                    "cache_limit_bytes",
                    "Configured cache size",
                    store.max_bytes,
                ),
                ("cache_objects", "Objects in the index", store.objects),
                (
                    "cache_pinned_bytes",
                    "Bytes of pinned objects",
                    store.pinned_bytes,
                ),
            ] {
                single(enc, name, help, ConstGauge::new(gauge_value(value)))?;
            }
            single(
                enc,
                "cache_evictions",
                "Objects evicted",
                ConstCounter::new(store.evictions),
            )?;
        }
        let modes = Mode::ALL.map(|m| {
            let mode = match m {
                Mode::Forward => ProxyMode::Forward,
                Mode::Transparent => ProxyMode::Transparent,
                Mode::Reverse => ProxyMode::Reverse,
            };
            (
                ModeLabels { mode },
                load(&e.served.mode_requests[m as usize]),
                load(&e.served.mode_bytes[m as usize]),
            )
        });
        family(
            enc,
            "mode_requests",
            "Proxied requests by how they reached the edge: forward, transparent, reverse",
            MetricType::Counter,
            modes
                .clone()
                .map(|(labels, requests, _)| (labels, ConstCounter::new(requests))),
        )?;
        family(
            enc,
            "mode_served_bytes",
            "Bytes written to clients by how their requests reached the edge",
            MetricType::Counter,
            modes.map(|(labels, _, bytes)| (labels, ConstCounter::new(bytes))),
        )?;
        family(
            enc,
            "served_bytes",
            "Bytes written to clients: from disk (cache), streamed from fills, or other (passthrough, errors)",
            MetricType::Counter,
            [
                (ServedFrom::Cache, &e.served.from_cache),
                (ServedFrom::Fill, &e.served.from_fills),
                (ServedFrom::Other, &e.served.other),
            ]
            .map(|(source, v)| (SourceLabels { source }, ConstCounter::new(load(v)))),
        )?;
        encode_responses(enc, &e.served)?;
        encode_library(enc, &e.served)?;
        self.encode_wan(enc)?;
        self.encode_channels(enc)?;
        if let Some(log) = e.access_log() {
            single(
                enc,
                "access_log_dropped_lines",
                "Access log lines dropped because the writer fell behind",
                ConstCounter::new(load(&log.dropped)),
            )?;
        }
        Ok(())
    }
}

/// `library_requests_total{way, source}` and
/// `library_served_bytes_total{way, source}`: the library listener's ways
/// in (Delivery Optimization, DNS mode, PAC, the site library) by where
/// the bytes came from (cache: a hit, fill: a miss, other).
fn encode_library(enc: &mut DescriptorEncoder, served: &ServedBytes) -> fmt::Result {
    let ways = [
        (
            LibraryWay::DeliveryOptimization,
            LibraryWayLabel::DeliveryOptimization,
        ),
        (LibraryWay::DnsMode, LibraryWayLabel::DnsMode),
        (LibraryWay::Pac, LibraryWayLabel::Pac),
        (LibraryWay::Local, LibraryWayLabel::Library),
    ];
    let sources = [ServedFrom::Cache, ServedFrom::Fill, ServedFrom::Other];
    let series = |counters: &[[std::sync::atomic::AtomicU64; 3]; LibraryWay::ALL.len()]| {
        ways.iter()
            .flat_map(|&(w, way)| {
                sources.iter().enumerate().map(move |(i, &source)| {
                    let n = counters[w as usize][i].load(std::sync::atomic::Ordering::Relaxed);
                    (LibraryLabels { way, source }, ConstCounter::new(n))
                })
            })
            .collect::<Vec<_>>()
    };
    family(
        enc,
        "library_requests",
        "Requests on the library listener by way in (delivery_optimization, dns_mode, pac, library) and source (cache: hit, fill: miss, other)",
        MetricType::Counter,
        series(&served.library_requests),
    )?;
    family(
        enc,
        "library_served_bytes",
        "Bytes written to clients of the library listener by way in and source",
        MetricType::Counter,
        series(&served.library_bytes),
    )
}

/// `responses_total{cache_status}`: every verdict, zeros included, so
/// that a series never appears out of nowhere.
fn encode_responses(enc: &mut DescriptorEncoder, served: &ServedBytes) -> fmt::Result {
    family(
        enc,
        "responses",
        "Responses sent to clients by the engine's cache verdict",
        MetricType::Counter,
        served.responses().map(|(status, n)| {
            (
                VerdictLabels {
                    cache_status: Verdict(status),
                },
                ConstCounter::new(n),
            )
        }),
    )
}

impl EdgeCollector {
    fn encode_wan(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let classes = self.engine.fills.shaper.status();
        let labels = |c: &outpost_proxy::wan::ClassStatus| ClassLabels { class: c.class };
        family(
            enc,
            "wan_class_bytes",
            "Upstream body bytes read, by traffic class",
            MetricType::Counter,
            classes
                .iter()
                .map(|c| (labels(c), ConstCounter::new(c.bytes_total))),
        )?;
        family(
            enc,
            "wan_class_rate_bytes_per_second",
            "Upstream read rate over the last 5 s, by traffic class",
            MetricType::Gauge,
            classes.iter().map(|c| (labels(c), ConstGauge::new(c.rate))),
        )?;
        family(
            enc,
            "wan_class_limit_bytes_per_second",
            "Limit in force now, by class (-1: unlimited)",
            MetricType::Gauge,
            classes
                .iter()
                .map(|c| (labels(c), ConstGauge::new(c.limit.unwrap_or(-1.0)))),
        )?;
        family(
            enc,
            "wan_class_queued_reads",
            "Upstream reads waiting for the shaper, by class",
            MetricType::Gauge,
            classes.iter().map(|c| {
                (
                    labels(c),
                    ConstGauge::new(gauge_value(c.queued_reads as u64)),
                )
            }),
        )
    }

    fn encode_channels(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let channels = self.channels.status();
        let name = |ch: &outpost_protocol::ChannelStatus| ChannelLabels {
            channel: ch.name.clone(),
        };
        let by_state = |ch: &outpost_protocol::ChannelStatus, present: u64, total: u64| {
            [(FileState::Present, present), (FileState::Total, total)].map(|(state, v)| {
                (
                    ChannelFileLabels {
                        channel: ch.name.clone(),
                        state,
                    },
                    ConstGauge::new(gauge_value(v)),
                )
            })
        };
        family(
            enc,
            "channel_files",
            "Files of each channel",
            MetricType::Gauge,
            channels
                .iter()
                .flat_map(|ch| by_state(ch, ch.files_present, ch.files_total)),
        )?;
        family(
            enc,
            "channel_bytes",
            "Bytes of each channel",
            MetricType::Gauge,
            channels
                .iter()
                .flat_map(|ch| by_state(ch, ch.bytes_present, ch.bytes_total)),
        )?;
        family(
            enc,
            "channel_quarantined_files",
            "Files refused for a digest mismatch",
            MetricType::Gauge,
            channels.iter().map(|ch| {
                (
                    name(ch),
                    ConstGauge::new(gauge_value(ch.quarantined.len() as u64)),
                )
            }),
        )?;
        family(
            enc,
            "channel_sync_running",
            "1 while a sync runs",
            MetricType::Gauge,
            channels
                .iter()
                .map(|ch| (name(ch), ConstGauge::new(i64::from(ch.running.is_some())))),
        )?;
        family(
            enc,
            "channel_last_sync_ok",
            "1 if the last sync finished without errors",
            MetricType::Gauge,
            channels.iter().filter_map(|ch| {
                let last = ch.last_run.as_ref()?;
                Some((
                    name(ch),
                    ConstGauge::new(i64::from(last.result == SyncResult::Ok)),
                ))
            }),
        )?;
        family(
            enc,
            "channel_last_sync_finished_seconds",
            "Unix time the last sync finished",
            MetricType::Gauge,
            channels.iter().filter_map(|ch| {
                let last = ch.last_run.as_ref()?;
                Some((name(ch), ConstGauge::new(last.finished)))
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders only the responses family of `served`.
    struct Responses(Arc<ServedBytes>);

    impl fmt::Debug for Responses {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Responses")
        }
    }

    impl Collector for Responses {
        fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
            encode_responses(&mut encoder, &self.0)
        }
    }

    #[test]
    fn responses_are_counted_by_verdict_with_every_verdict_served() {
        let served = Arc::new(ServedBytes::default());
        let refreshed = CacheStatus::ALL
            .iter()
            .position(|s| *s == CacheStatus::Refreshed)
            .unwrap();
        served.by_status[refreshed].store(3, Ordering::Relaxed);
        let mut registry = Registry::with_prefix("outpost");
        registry.register_collector(Box::new(Responses(served)));
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains("# TYPE outpost_responses counter"), "{text}");
        assert!(
            text.contains("outpost_responses_total{cache_status=\"refreshed\"} 3"),
            "{text}"
        );
        for status in CacheStatus::ALL {
            let zero_or_more = format!(
                "outpost_responses_total{{cache_status=\"{}\"}} ",
                status.label()
            );
            assert!(text.contains(&zero_or_more), "{status:?} missing:\n{text}");
        }
    }
}
