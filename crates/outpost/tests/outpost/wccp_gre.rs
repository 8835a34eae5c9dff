//! The edge's own GRE data path (`wccp.datapath = "outpost"`) in network
//! namespaces, on a kernel without `ip_gre` (CI's): the router namespace
//! redirects the client's port-80 packets with the testkit's userspace
//! redirector (a TUN the packets are policy-routed into, GRE 0x883E with a
//! WCCP redirect header, a raw socket), the edge decapsulates them with a
//! raw socket into its TUN `wccp0`, and nftables hands them to `outpost
//! serve`. Returned packets go back to the router in GRE, which
//! decapsulates them into a second TUN whose ingress is not redirected, so
//! they reach the origin. The simulated WCCP router runs inside the router
//! namespace, at the address its GRE comes from, as a real router's does.
//!
//! Asserted as the client sees it:
//! (a) through GRE: the origin's bytes, then a hit (the origin counts one
//!     request), both from the origin's address and port; the edge counts
//!     delivered packets;
//! (b) a bypassed destination: the origin's bytes from the origin itself,
//!     every request reaches the origin; the edge counts returned packets
//!     (reason bypass) and the router decapsulated them;
//! (c) GRE from a host that is not a router is dropped and counted;
//! (d) overload: with `max_redirected_flows = 1` held by an open
//!     connection, a second connection is returned and completes against
//!     the origin;
//! (e) full-size packets (an upload; 1524 bytes with GRE, over the MTU)
//!     reach the origin whole, through the edge and returned.
//!
//! It fails, not skips, if the userspace path cannot be set up here.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;
use std::time::Duration;

use outpost_testkit::gre_redirector::{GreRedirector, RedirectorConfig, send_gre_from};
use outpost_testkit::netns::in_netns;
use outpost_testkit::wccp_router::{RouterConfig, SimRouter};
use outpost_testkit::{Origin, Resource, content, wait_until};

use crate::wccp_datapath::{Lab, curl, nft, ns, origin_front};

const EDGE: Ipv4Addr = Ipv4Addr::new(10, 99, 2, 2);
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 99, 2, 1);

/// The edge's `/metrics`, fetched inside its namespace.
fn metrics(edge: &str, admin: std::net::SocketAddr) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", edge, "curl", "-sS", "--max-time", "5"])
        .arg(format!("http://{admin}/metrics"))
        .output()
        .expect("curl /metrics");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One sample of a counter, by its name and labels as written.
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn delivered(m: &str) -> u64 {
    sample(
        m,
        r#"outpost_wccp_datapath_packets_total{action="delivered",reason="redirected"}"#,
    )
}

fn returned(m: &str, reason: &str) -> u64 {
    sample(
        m,
        &format!(r#"outpost_wccp_datapath_packets_total{{action="returned",reason="{reason}"}}"#),
    )
}

fn dropped(m: &str, reason: &str) -> u64 {
    sample(
        m,
        &format!(r#"outpost_wccp_datapath_packets_total{{action="dropped",reason="{reason}"}}"#),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: creates network namespaces, TUN interfaces, raw sockets and nftables rules"]
async fn gre_redirect_and_return_through_the_edges_own_data_path() {
    let lab = Lab::build("g");
    let (client, router, edge) = (lab.client.clone(), lab.router.clone(), lab.edge.clone());

    // The router's userspace WCCP GRE: must work on any kernel with TUN.
    let redirector = GreRedirector::start(RedirectorConfig {
        netns: router.clone(),
        router: ROUTER,
        edge: EDGE,
        redirect_tun: "wccpr0".into(),
        return_tun: "wccpr1".into(),
        service_id: 0,
    })
    .expect("the router's userspace GRE redirector (TUN + raw socket) must start here");
    ns(
        &router,
        &[
            "ip", "route", "add", "default", "dev", "wccpr0", "table", "57",
        ],
    );
    eprintln!(
        "WCCP data path exercised with GRE forwarding and return (0x883E + redirect header), userspace on both sides"
    );

    let origin = Origin::start().await;
    let body = content(300_000, 16);
    origin.put("/pkgs/tool.msi", Resource::new(body.clone()));
    origin.put("/bypass/tool.msi", Resource::new(content(50_000, 17)));
    origin.put("/over/tool.msi", Resource::new(content(40_000, 18)));
    // A second origin address, on the bypass list.
    crate::wccp_datapath::sh(&["ip", "addr", "add", "10.99.3.3/24", "dev", &lab.wan_if]);
    origin_front("10.99.3.2", origin.addr()).await;
    origin_front("10.99.3.3", origin.addr()).await;

    // The simulated WCCP router, inside the router namespace at the
    // address its GRE comes from.
    let socket = in_netns(&router, || {
        std::net::UdpSocket::bind(SocketAddrV4::new(ROUTER, 0))
    })
    .unwrap();
    let mut wccp = RouterConfig::new(ROUTER);
    wccp.interval = Duration::from_millis(500);
    let sim = SimRouter::start_on(wccp, socket).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let serve = crate::wccp_datapath::serve_in(
        &edge,
        dir.path(),
        &format!(
            "[wccp]\nrouters = [\"{}\"]\nlisten = \"10.99.2.2:0\"\ninterval = \"500ms\"\ndatapath = \"outpost\"\nbypass_destinations = [\"10.99.3.3\"]\nmax_redirected_flows = 1\n",
            sim.addr
        ),
    );
    let cache = dir.path().join("cache");
    let port = serve.listening().port();
    let admin = serve.admin_listening();
    // The data path starts after the listeners: a failure to set it up
    // ends the edge, and this test, here.
    assert!(
        wait_until(Duration::from_secs(10), || serve
            .logged("decapsulating GRE in the edge"))
        .await,
        "the edge's GRE data path did not start: {}",
        serve.stderr()
    );
    nft(
        &edge,
        &format!(
            "table ip outpost {{\n chain prerouting {{\n  type nat hook prerouting priority dstnat; policy accept;\n  iifname \"wccp0\" tcp dport 80 redirect to :{port}\n }}\n}}\n"
        ),
    );
    assert!(
        wait_until(Duration::from_secs(15), || sim
            .with(|c| c.bucket_counts().get(&EDGE) == Some(&256)))
        .await,
        "the edge never joined the simulated router: {}",
        serve.stderr()
    );
    // The data path learns the negotiated return method from the group.
    let status = || {
        let out = Command::new("ip")
            .args(["netns", "exec", &edge, env!("CARGO_BIN_EXE_outpost")])
            .args(["wccp", "status", "--admin", &admin.to_string()])
            .arg("--token-file")
            .arg(cache.join("admin.token"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    assert!(
        wait_until(Duration::from_secs(5), || status()
            .contains("return    GRE for service(s) 0"))
        .await,
        "GRE return never negotiated: {}",
        status()
    );

    let get = |n: u32, url: &'static str| {
        let (client, out_file) = (client.clone(), dir.path().join(format!("got{n}")));
        tokio::task::spawn_blocking(move || curl(&client, url, &out_file))
    };

    // (a) Through GRE: served by the edge as the origin, then a hit.
    let (head, got) = get(1, "http://10.99.3.2/pkgs/tool.msi").await.unwrap();
    assert!(got == body, "the first body is not the origin's bytes");
    assert!(head.contains("remote=10.99.3.2:80"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("via: 1.1 outpost"),
        "not through the edge: {head}"
    );
    let mut hit = None;
    for n in 2..50 {
        let (head, got) = get(n, "http://10.99.3.2/pkgs/tool.msi").await.unwrap();
        if head.to_ascii_lowercase().contains("x-cache: hit") {
            hit = Some((head, got));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (head, got) = hit.expect("never a hit within 5 s");
    assert!(
        got == body && head.contains("remote=10.99.3.2:80"),
        "{head}"
    );
    assert_eq!(
        origin.count("/pkgs/tool.msi"),
        1,
        "the hit went to the origin"
    );
    // The data path publishes its counters within 100 ms.
    assert!(
        wait_until(Duration::from_secs(5), || delivered(&metrics(&edge, admin))
            > 0)
        .await,
        "no packet delivered to wccp0:\n{}",
        status()
    );
    assert!(redirector.redirected() > 0);

    // (b) A bypassed destination: returned to the router, which sends it
    // on to the origin; never cached.
    let router_returned_before = redirector.returned();
    for n in 0..2 {
        let (head, got) = get(100 + n, "http://10.99.3.3/bypass/tool.msi")
            .await
            .unwrap();
        assert!(got == content(50_000, 17), "bypassed body differs");
        assert!(head.contains("remote=10.99.3.3:80"), "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("via: 1.1 outpost"),
            "a bypassed request went through the edge: {head}"
        );
    }
    assert_eq!(
        origin.count("/bypass/tool.msi"),
        2,
        "every bypassed request reaches the origin"
    );
    assert!(
        wait_until(Duration::from_secs(5), || returned(
            &metrics(&edge, admin),
            "bypass"
        ) > 0)
        .await,
        "no bypass return counted:\n{}",
        status()
    );
    assert!(
        redirector.returned() > router_returned_before,
        "the router decapsulated no returned packet"
    );

    // (c) GRE from the client's address (not a router) is dropped.
    let before = dropped(&metrics(&edge, admin), "not_from_router");
    let mut inner = vec![
        0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 99, 1, 2, 10, 99, 3, 2,
    ];
    inner.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02]);
    inner.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    send_gre_from(
        &client,
        Ipv4Addr::new(10, 99, 1, 2),
        EDGE,
        outpost_wccp::gre::encapsulate(Some(Default::default()), &inner),
    )
    .expect("a raw GRE socket in the client namespace");
    assert!(
        wait_until(Duration::from_secs(5), || dropped(
            &metrics(&edge, admin),
            "not_from_router"
        ) > before)
        .await,
        "a GRE packet from a non-router was not counted as dropped"
    );

    // (d) Overload: one open connection holds the only slot; the next
    // connection is returned and completes against the origin.
    let held = in_netns(&client, || {
        std::net::TcpStream::connect_timeout(
            &"10.99.3.2:80".parse().unwrap(),
            Duration::from_secs(5),
        )
    })
    .expect("the held connection");
    let accepted_one = wait_until(Duration::from_secs(5), || {
        metrics(&edge, admin).contains(r#"outpost_wccp_datapath_flows{state="accepted"} 1"#)
    })
    .await;
    assert!(accepted_one, "{}", metrics(&edge, admin));
    let overload_before = returned(&metrics(&edge, admin), "overload");
    let (head, got) = get(200, "http://10.99.3.2/over/tool.msi").await.unwrap();
    assert!(got == content(40_000, 18), "overload body differs");
    assert!(head.contains("remote=10.99.3.2:80"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("via: 1.1 outpost"),
        "an overload connection was served by the edge: {head}"
    );
    assert_eq!(origin.count("/over/tool.msi"), 1);
    assert!(
        wait_until(Duration::from_secs(5), || returned(
            &metrics(&edge, admin),
            "overload"
        ) > overload_before)
        .await,
        "no overload return counted:\n{}",
        status()
    );
    drop(held);

    // (e) Full-size packets: a PC's upload arrives in 1500-byte packets,
    // 1524 with GRE, more than the links' MTU: the router's GRE is
    // fragmented and reassembled before the edge's raw socket, and so are
    // the edge's returns. Through the edge and returned, the origin gets
    // every byte.
    let upload = content(200_000, 19);
    let file = dir.path().join("upload.bin");
    std::fs::write(&file, &upload).unwrap();
    for (url, path) in [
        ("http://10.99.3.2/up/served", "/up/served"),
        ("http://10.99.3.3/up/returned", "/up/returned"),
    ] {
        let out = Command::new("ip")
            .args(["netns", "exec", &client, "curl", "-sS", "--max-time", "20"])
            .args(["-o", "/dev/null", "-w", "%{http_code}", "--data-binary"])
            .arg(format!("@{}", file.display()))
            .arg(url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "upload to {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = origin.requests_for(path);
        assert_eq!(got.len(), 1, "{url}");
        assert!(
            got[0].body == upload,
            "{url}: the origin got {} bytes",
            got[0].body.len()
        );
    }

    // The uploads' packets were counted: over 200 kB delivered, and the
    // returned upload's packets as bypass returns.
    assert!(
        wait_until(Duration::from_secs(5), || {
            let m = metrics(&edge, admin);
            sample(
                &m,
                r#"outpost_wccp_datapath_bytes_total{action="delivered",reason="redirected"}"#,
            ) > 200_000
                && sample(
                    &m,
                    r#"outpost_wccp_datapath_bytes_total{action="returned",reason="bypass"}"#,
                ) > 200_000
        })
        .await,
        "{}",
        metrics(&edge, admin)
    );
    let out = status();
    eprintln!("{out}");
    assert!(out.contains("datapath outpost"), "{out}");
    drop(serve);
    drop(redirector);
    drop(lab);
}
