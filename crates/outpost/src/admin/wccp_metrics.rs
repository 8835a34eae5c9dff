//! `/metrics` for WCCP: messages by direction and type, refused and
//! foreign datagrams, per service group the live routers, whether this
//! edge is the designated cache and how many buckets or mask values it
//! serves, and with the edge's own GRE data path its packets and bytes by
//! action and reason and its flows. Read from the adapter's status at each scrape; nothing when
//! `[wccp]` is not set.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::WccpSlot;

#[derive(Debug)]
pub(super) struct WccpCollector(pub(super) WccpSlot);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    direction: String,
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: String,
}

use super::metrics::family;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

fn gauge(v: usize) -> ConstGauge {
    ConstGauge::new(super::metrics::gauge_value(v as u64))
}

impl Collector for WccpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let Some(view) = self.0.get() else {
            return Ok(());
        };
        let s = view
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let enc = &mut encoder;
        if let Some(name) = &view.tunnel {
            let t = crate::wccp::tunnel_counters(name);
            let values: Vec<(DirectionLabels, ConstCounter)> = [
                ("redirected_in", t.rx_packets),
                ("returned_out", t.tx_packets),
            ]
            .into_iter()
            .filter_map(|(d, v)| {
                v.map(|v| {
                    (
                        DirectionLabels {
                            direction: d.into(),
                        },
                        ConstCounter::new(v),
                    )
                })
            })
            .collect();
            if !values.is_empty() {
                family(
                    enc,
                    "wccp_tunnel_packets",
                    "Packets on the WCCP tunnel interface (kernel counters): redirected to the edge, sent back through it",
                    MetricType::Counter,
                    values,
                )?;
            }
        }
        if let Some(cell) = &view.datapath {
            let d = cell.lock().unwrap_or_else(|p| p.into_inner()).clone();
            datapath(enc, &d.counters)?;
        }
        let messages = s
            .counters
            .sent
            .iter()
            .map(|(t, n)| ("sent", t, n))
            .chain(s.counters.received.iter().map(|(t, n)| ("received", t, n)))
            .map(|(direction, t, n)| {
                (
                    MessageLabels {
                        direction: direction.into(),
                        r#type: t.clone(),
                    },
                    ConstCounter::new(*n),
                )
            });
        family(
            enc,
            "wccp_messages",
            "WCCP messages sent and accepted, by type",
            MetricType::Counter,
            messages,
        )?;
        for (name, help, v) in [
            (
                "wccp_refused_datagrams",
                "Datagrams on the WCCP port refused (malformed, wrong password, wrong version)",
                s.counters.refused,
            ),
            (
                "wccp_foreign_messages",
                "Well-formed WCCP messages from addresses that are not configured routers",
                s.counters.foreign,
            ),
        ] {
            let metric = ConstCounter::new(v);
            let m = enc.encode_descriptor(name, help, None, metric.metric_type())?;
            metric.encode(m)?;
        }
        let service = |g: &outpost_wccp::GroupStatus| ServiceLabels {
            service: g.service_id.to_string(),
        };
        family(
            enc,
            "wccp_routers_live",
            "Routers heard from within 2.5 intervals, per service group",
            MetricType::Gauge,
            s.groups.iter().map(|g| {
                (
                    service(g),
                    gauge(g.routers.iter().filter(|r| r.live).count()),
                )
            }),
        )?;
        family(
            enc,
            "wccp_designated",
            "1 when this edge is the group's designated web-cache",
            MetricType::Gauge,
            s.groups
                .iter()
                .map(|g| (service(g), gauge(usize::from(g.designated)))),
        )?;
        family(
            enc,
            "wccp_buckets_owned",
            "Hash buckets (of 256) the routers redirect to this edge",
            MetricType::Gauge,
            s.groups
                .iter()
                .map(|g| (service(g), gauge(g.buckets_owned))),
        )?;
        family(
            enc,
            "wccp_mask_values_owned",
            "Mask values the routers redirect to this edge",
            MetricType::Gauge,
            s.groups
                .iter()
                .map(|g| (service(g), gauge(g.mask_values_owned))),
        )
    }
}

/// The edge's own GRE data path: `action` is delivered (to the TUN),
/// returned (to the router), kept (would have been returned, but the
/// negotiated return method is not GRE) or dropped; `reason` says why.
fn datapath(
    enc: &mut DescriptorEncoder,
    c: &outpost_wccp::datapath::DatapathCounters,
) -> fmt::Result {
    let labels = |action: &str, reason: &str| ActionLabels {
        action: action.into(),
        reason: reason.into(),
    };
    let mut packets = vec![(labels("delivered", "redirected"), c.delivered.packets)];
    let mut bytes = vec![(labels("delivered", "redirected"), c.delivered.bytes)];
    for (reason, t) in &c.returned {
        packets.push((labels("returned", reason), t.packets));
        bytes.push((labels("returned", reason), t.bytes));
    }
    for (reason, n) in &c.kept_no_gre_return {
        packets.push((labels("kept", reason), *n));
    }
    for (reason, n) in &c.dropped {
        packets.push((labels("dropped", reason), *n));
    }
    family(
        enc,
        "wccp_datapath_packets",
        "GRE packets through the edge's own data path, by action (delivered, returned, kept, dropped) and reason",
        MetricType::Counter,
        packets.into_iter().map(|(l, v)| (l, ConstCounter::new(v))),
    )?;
    family(
        enc,
        "wccp_datapath_bytes",
        "Inner-packet bytes delivered to the tunnel or returned to the router",
        MetricType::Counter,
        bytes.into_iter().map(|(l, v)| (l, ConstCounter::new(v))),
    )?;
    family(
        enc,
        "wccp_datapath_flows",
        "Flows the data path tracks: accepted and open (what max_redirected_flows limits), and returned",
        MetricType::Gauge,
        [
            ("accepted", c.flows_accepted),
            ("returned", c.flows_returned),
        ]
        .into_iter()
        .map(|(state, v)| {
            (
                StateLabels {
                    state: state.into(),
                },
                ConstGauge::new(super::metrics::gauge_value(v)),
            )
        }),
    )
}
