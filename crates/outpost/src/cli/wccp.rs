//! `outpost wccp status`: the `wccp` block of a running edge's `/status`,
//! for a network admin: each service group's routers, view, designated
//! cache, negotiated methods, buckets owned, and the message counters.

use anyhow::bail;
use http::Method;
use outpost_wccp::WccpStatus;
use outpost_wccp::gre_io::DatapathStatus;

use super::{Endpoint, Target};

#[derive(serde::Deserialize)]
struct WithWccp {
    wccp: Option<serde_json::Value>,
}

pub fn wccp_status(target: &Target) -> anyhow::Result<()> {
    let doc: WithWccp = Endpoint::resolve(target)?.call(Method::GET, "/status")?;
    let Some(value) = doc.wccp else {
        bail!("WCCP is not configured on this edge (no [wccp] table in its config)");
    };
    if target.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let tunnel = value.get("tunnel").cloned();
    let datapath = value
        .get("datapath")
        .cloned()
        .and_then(|d| serde_json::from_value::<DatapathStatus>(d).ok());
    let s: WccpStatus = match serde_json::from_value(value) {
        Ok(s) => s,
        Err(e) => bail!("the edge's wccp status is not what this CLI understands: {e}"),
    };
    print!("{}", render(&s));
    if let Some(t) = tunnel {
        let n = |k: &str| t.get(k).and_then(|v| v.as_u64());
        match (n("rx_packets"), n("tx_packets")) {
            (Some(rx), Some(tx)) => println!(
                "\ntunnel   {}: {rx} packets in (redirected), {tx} out",
                t.get("interface").and_then(|v| v.as_str()).unwrap_or("?")
            ),
            _ => println!(
                "\ntunnel   {}: NOT FOUND (set it up: docs/wccp.md)",
                t.get("interface").and_then(|v| v.as_str()).unwrap_or("?")
            ),
        }
    }
    if let Some(d) = datapath {
        print!("{}", render_datapath(&d));
    }
    Ok(())
}

fn render_datapath(d: &DatapathStatus) -> String {
    use std::fmt::Write;
    let c = &d.counters;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\ndatapath {} (GRE decapsulated by the edge on {}, to TUN {})",
        d.mode, d.address, d.tunnel
    );
    let _ = writeln!(
        out,
        "  delivered {} packets, {} bytes",
        c.delivered.packets, c.delivered.bytes
    );
    let returned: std::collections::BTreeMap<String, u64> = c
        .returned
        .iter()
        .map(|(k, t)| (k.clone(), t.packets))
        .collect();
    let _ = writeln!(out, "  returned  {}", counts(&returned));
    if !c.kept_no_gre_return.is_empty() {
        let _ = writeln!(
            out,
            "  kept      {} (return method is not GRE: served instead)",
            counts(&c.kept_no_gre_return)
        );
    }
    let _ = writeln!(
        out,
        "  dropped   {}{}",
        counts(&c.dropped),
        c.last_drop
            .as_deref()
            .map(|r| format!(" (last: {r})"))
            .unwrap_or_default()
    );
    let limit = d
        .max_redirected_flows
        .map(|m| format!(" of {m}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  flows     {} accepted{limit}, {} returned",
        c.flows_accepted, c.flows_returned
    );
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(" ")
        }
    };
    let _ = writeln!(
        out,
        "  bypass    destinations {}; clients {}",
        list(&d.bypass_destinations),
        list(&d.bypass_clients)
    );
    let services: Vec<String> = d
        .gre_return_services
        .iter()
        .map(|s| s.to_string())
        .collect();
    let _ = writeln!(
        out,
        "  return    {}",
        if services.is_empty() {
            "not possible: no service negotiated GRE return (declined packets are served)"
                .to_string()
        } else {
            format!("GRE for service(s) {}", services.join(", "))
        }
    );
    out
}

fn counts(map: &std::collections::BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn render(s: &WccpStatus) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let c = &s.counters;
    let _ = writeln!(out, "wccp     listening {}", s.listen);
    let _ = writeln!(out, "sent     {}", counts(&c.sent));
    let _ = writeln!(out, "received {}", counts(&c.received));
    let _ = writeln!(
        out,
        "refused  {} datagram(s){}; {} from non-routers",
        c.refused,
        c.last_refusal
            .as_deref()
            .map(|r| format!(" (last: {r})"))
            .unwrap_or_default(),
        c.foreign
    );
    for g in &s.groups {
        let _ = writeln!(out);
        let kind = match g.service_type {
            outpost_wccp::ServiceType::Standard => "standard",
            outpost_wccp::ServiceType::Dynamic => "dynamic",
        };
        let role = if g.designated {
            "designated web-cache".to_string()
        } else {
            match g.designated_cache {
                Some(d) => format!("designated web-cache is {d}"),
                None => "no usable caches yet".to_string(),
            }
        };
        let _ = writeln!(
            out,
            "service {} ({kind}), as {}: {role}",
            g.service_id, g.cache_ip
        );
        match (&g.negotiated, &g.negotiation_error) {
            (Some(n), _) => {
                let _ = writeln!(
                    out,
                    "  methods   forwarding {:?}, return {:?}, assignment {:?}",
                    n.forwarding, n.return_method, n.assignment
                );
            }
            (None, Some(e)) => {
                let _ = writeln!(out, "  methods   NOT AGREED: {e}");
            }
            (None, None) => {
                let _ = writeln!(out, "  methods   not negotiated yet (no router heard)");
            }
        }
        let usable: Vec<String> = g.usable_caches.iter().map(|c| c.to_string()).collect();
        let _ = writeln!(
            out,
            "  view      change {}, usable caches: {}",
            g.view_change,
            if usable.is_empty() {
                "none".into()
            } else {
                usable.join(" ")
            }
        );
        let held = if g.mask_values_owned > 0 {
            format!("{} mask values", g.mask_values_owned)
        } else {
            format!("{} of 256 buckets", g.buckets_owned)
        };
        let _ = writeln!(
            out,
            "  serving   {held} (assignment change {})",
            g.assignment_change
        );
        if !g.shares.is_empty() {
            let shares: Vec<String> = g.shares.iter().map(|(ip, n)| format!("{ip} {n}")).collect();
            let _ = writeln!(out, "  shares    {}", shares.join(", "));
        }
        for r in &g.routers {
            let heard = r
                .last_heard_ms_ago
                .map(|ms| format!("heard {:.1} s ago", ms as f64 / 1000.0))
                .unwrap_or_else(|| "never heard".into());
            let _ = writeln!(
                out,
                "  router    {} {}  {heard}  receive id {}  member change {}  sees {} cache(s)",
                r.address,
                if r.live { "LIVE" } else { "DOWN" },
                r.receive_id,
                r.member_change,
                r.caches.len()
            );
        }
    }
    out
}
