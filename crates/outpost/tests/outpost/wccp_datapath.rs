//! The WCCP data path in network namespaces the test creates: a client, a
//! router and an edge. The router namespace stands in for the branch
//! router's redirect with policy routing: client port-80 packets are
//! marked and routed into a GRE tunnel to the edge (WCCP GRE forwarding),
//! or, on a kernel without GRE (ip_gre), to the edge's address as next hop
//! with the packet unchanged (WCCP L2 forwarding: only the frame's
//! destination MAC changes). The edge decapsulates on `wccp0` (GRE) and
//! nftables redirects port 80 to `outpost serve`, as docs/wccp.md tells an
//! admin to set it up. The test says which method it exercised.
//! The edge also runs WCCP against the simulated router (in the test's own
//! namespace, behind the router, where the origin is too).
//!
//! Asserted as the client sees it: the body is the origin's bytes, the
//! second fetch is a hit (the origin counts one request), and the answer
//! comes from the origin's address and port (curl's remote_ip/port), not
//! the edge's.

use std::process::Command;
use std::time::Duration;

use outpost_testkit::wccp_router::{RouterConfig, SimRouter};
use outpost_testkit::{Origin, Resource, content, wait_until};

use crate::support::Serve;

/// Runs a command, panicking with its output when it fails.
pub(crate) fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect(args[0]);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn ns(name: &str, args: &[&str]) {
    let mut full = vec!["ip", "netns", "exec", name];
    full.extend_from_slice(args);
    sh(&full);
}

/// Three namespaces and this one, wired as a branch:
///
/// ```text
/// client (10.99.1.2) -- router (10.99.1.1 | 10.99.2.1 | 10.99.3.1) -- edge (10.99.2.2)
///                                   `-- this namespace (10.99.3.2: origin, simulated WCCP router)
/// ```
///
/// The router forwards, nobody filters reverse paths (the edge answers
/// the client directly, so the router sees the origin's address arrive
/// from the edge, and the edge sees the client's packets arrive on the
/// tunnel: docs/wccp.md). Removed on drop.
pub(crate) struct Lab {
    pub client: String,
    pub router: String,
    pub edge: String,
    /// The router's interfaces: towards the client, the edge, the WAN.
    pub rc_if: String,
    pub re_if: String,
    /// The edge's interface.
    pub e_if: String,
    /// This namespace's end of the WAN link.
    pub wan_if: String,
    /// Both labs use the same addresses in this namespace: one at a time
    /// (CI runs the ignored tests with several threads). Released after
    /// the cleanup in `drop`.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Drop for Lab {
    fn drop(&mut self) {
        for n in [&self.client, &self.router, &self.edge] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.wan_if])
            .status();
    }
}

impl Lab {
    /// `tag` keeps the names of two tests' labs apart (one letter).
    pub(crate) fn build(tag: &str) -> Lab {
        let id = std::process::id() % 10_000;
        let p = |role: &str| format!("wc{tag}{role}{id}");
        let lab = Lab {
            _one_at_a_time: ONE_LAB.lock().unwrap_or_else(|e| e.into_inner()),
            client: p("c"),
            router: p("r"),
            edge: p("e"),
            rc_if: format!("{}c", p("r")),
            re_if: format!("{}e", p("r")),
            e_if: format!("{}e", p("e")),
            wan_if: p("w"),
        };
        for n in [&lab.client, &lab.router, &lab.edge] {
            sh(&["ip", "netns", "add", n]);
            ns(n, &["ip", "link", "set", "lo", "up"]);
        }
        let link = |a: &str, a_ns: Option<&str>, b: &str, b_ns: &str| {
            sh(&["ip", "link", "add", a, "type", "veth", "peer", "name", b]);
            if let Some(a_ns) = a_ns {
                sh(&["ip", "link", "set", a, "netns", a_ns]);
            }
            sh(&["ip", "link", "set", b, "netns", b_ns]);
        };
        let c_if = format!("{}c", lab.client);
        let rw_if = format!("{}w", lab.router);
        link(&c_if, Some(&lab.client), &lab.rc_if, &lab.router);
        link(&lab.e_if, Some(&lab.edge), &lab.re_if, &lab.router);
        link(&lab.wan_if, None, &rw_if, &lab.router);
        let addr = |n: Option<&str>, dev: &str, cidr: &str| {
            let a = ["ip", "addr", "add", cidr, "dev", dev];
            let up = ["ip", "link", "set", dev, "up"];
            match n {
                Some(n) => {
                    ns(n, &a);
                    ns(n, &up);
                }
                None => {
                    sh(&a);
                    sh(&up);
                }
            }
        };
        // Reverse-path filtering off before any interface (the tests' TUNs
        // among them) is created: new interfaces take `default`.
        for n in [&lab.router, &lab.edge] {
            ns(n, &["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"]);
            ns(n, &["sysctl", "-qw", "net.ipv4.conf.default.rp_filter=0"]);
        }
        addr(Some(&lab.client), &c_if, "10.99.1.2/24");
        addr(Some(&lab.router), &lab.rc_if, "10.99.1.1/24");
        addr(Some(&lab.router), &lab.re_if, "10.99.2.1/24");
        addr(Some(&lab.router), &rw_if, "10.99.3.1/24");
        addr(Some(&lab.edge), &lab.e_if, "10.99.2.2/24");
        addr(None, &lab.wan_if, "10.99.3.2/24");
        ns(
            &lab.client,
            &["ip", "route", "add", "default", "via", "10.99.1.1"],
        );
        ns(
            &lab.edge,
            &["ip", "route", "add", "default", "via", "10.99.2.1"],
        );
        sh(&["ip", "route", "add", "10.99.0.0/16", "via", "10.99.3.1"]);
        ns(&lab.router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        // The router's redirect: TCP port 80 from the client is marked
        // 0x57 and routed by table 57 (the tests add its default route).
        nft(
            &lab.router,
            &format!(
                "table ip wccp {{\n chain pre {{\n  type filter hook prerouting priority mangle; policy accept;\n  iifname \"{}\" tcp dport 80 meta mark set 0x57\n }}\n}}\n",
                lab.rc_if
            ),
        );
        ns(
            &lab.router,
            &["ip", "rule", "add", "fwmark", "0x57", "table", "57"],
        );
        lab
    }
}

/// An origin as the client addresses it: `front:80` in this namespace,
/// relayed to the fake origin on loopback.
pub(crate) async fn origin_front(front: &str, backend: std::net::SocketAddr) {
    let front = tokio::net::TcpListener::bind(format!("{front}:80"))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = front.accept().await {
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
}

/// `outpost serve` in the edge namespace with `config` as its file (and a
/// cache) under `dir`: any port, admin on loopback.
pub(crate) fn serve_in(edge: &str, dir: &std::path::Path, config: &str) -> Serve {
    let file = dir.join("edge.toml");
    std::fs::write(&file, config).unwrap();
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        edge,
        env!("CARGO_BIN_EXE_outpost"),
        "serve",
    ])
    .args([
        "--listen",
        "0.0.0.0:0",
        "--admin",
        "127.0.0.1:0",
        "--cache-dir",
    ])
    .arg(dir.join("cache"))
    .arg("--config")
    .arg(&file);
    Serve::run(cmd)
}

/// curl in the client namespace: response head plus "remote=IP:PORT", and
/// the body it saved.
pub(crate) fn curl(client: &str, url: &str, out_file: &std::path::Path) -> (String, Vec<u8>) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            client,
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-D",
            "-",
        ])
        .args(["-w", "\nremote=%{remote_ip}:%{remote_port}\n", "-o"])
        .arg(out_file)
        .arg(url)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (text, std::fs::read(out_file).unwrap())
}

pub(crate) fn nft(namespace: &str, rules: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", namespace, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "nft in {namespace}: {rules}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: creates network namespaces, GRE tunnels and nftables rules"]
async fn redirected_port_80_is_served_by_the_edge_as_the_origin() {
    let lab = Lab::build("k");
    let (client, router, edge) = (lab.client.clone(), lab.router.clone(), lab.edge.clone());
    let re_if = lab.re_if.clone();
    let e_if = lab.e_if.clone();

    // The router's redirect: client TCP port 80 into GRE towards the edge,
    // or (no GRE in this kernel) routed to the edge as next hop.
    let gre = Command::new("ip")
        .args([
            "netns", "exec", &router, "ip", "tunnel", "add", "wccp0", "mode", "gre",
        ])
        .args(["local", "10.99.2.1", "remote", "10.99.2.2"])
        .output()
        .unwrap()
        .status
        .success();
    eprintln!(
        "WCCP data path exercised with {} forwarding",
        if gre {
            "GRE"
        } else {
            "L2 (this kernel has no GRE)"
        }
    );
    let redirected_in = if gre {
        ns(&router, &["ip", "link", "set", "wccp0", "up"]);
        ns(
            &router,
            &[
                "ip", "route", "add", "default", "dev", "wccp0", "table", "57",
            ],
        );
        // The edge: the tunnel from docs/wccp.md.
        ns(
            &edge,
            &[
                "ip",
                "tunnel",
                "add",
                "wccp0",
                "mode",
                "gre",
                "local",
                "10.99.2.2",
                "remote",
                "10.99.2.1",
            ],
        );
        ns(&edge, &["ip", "link", "set", "wccp0", "up"]);
        ns(&edge, &["sysctl", "-qw", "net.ipv4.conf.wccp0.rp_filter=0"]);
        "wccp0".to_string()
    } else {
        ns(
            &router,
            &[
                "ip",
                "route",
                "add",
                "default",
                "via",
                "10.99.2.2",
                "dev",
                &re_if,
                "table",
                "57",
            ],
        );
        e_if.clone()
    };

    let origin = Origin::start().await;
    let body = content(300_000, 15);
    origin.put("/pkgs/tool.msi", Resource::new(body.clone()));
    origin_front("10.99.3.2", origin.addr()).await;
    let mut wccp = RouterConfig::new("10.99.3.2".parse().unwrap());
    wccp.interval = Duration::from_millis(500);
    let sim = SimRouter::start(wccp, "10.99.3.2:0".parse().unwrap())
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let serve = serve_in(
        &edge,
        dir.path(),
        &format!(
            "[wccp]\nrouters = [\"{}\"]\nlisten = \"10.99.2.2:0\"\ninterval = \"500ms\"\n",
            sim.addr
        ),
    );
    let port = serve.listening().port();
    // With L2 forwarding the edge declines a destination (the bypass list
    // of docs/wccp.md) by not redirecting it: forwarding on, the kernel
    // sends the packet back to the router with only the frame's address
    // changed, which is WCCP's L2 return. 10.99.3.3 is bypassed.
    let bypass = if gre {
        String::new()
    } else {
        ns(&edge, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        "  ip daddr 10.99.3.3 accept\n".to_string()
    };
    nft(
        &edge,
        &format!(
            "table ip outpost {{\n chain prerouting {{\n  type nat hook prerouting priority dstnat; policy accept;\n{bypass}  iifname \"{redirected_in}\" tcp dport 80 redirect to :{port}\n }}\n}}\n"
        ),
    );
    let edge_ip: std::net::Ipv4Addr = "10.99.2.2".parse().unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || sim
            .with(|c| c.bucket_counts().get(&edge_ip) == Some(&256)))
        .await,
        "the edge never joined the simulated router: {}",
        serve.stderr()
    );

    let get = |n: u32| {
        let (client, out_file) = (client.clone(), dir.path().join(format!("got{n}")));
        tokio::task::spawn_blocking(move || {
            curl(&client, "http://10.99.3.2/pkgs/tool.msi", &out_file)
        })
    };
    let (head, got) = get(1).await.unwrap();
    assert!(got == body, "the first body is not the origin's bytes");
    assert!(head.contains("remote=10.99.3.2:80"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("via: 1.1 outpost"),
        "not through the edge: {head}"
    );
    assert_eq!(origin.count("/pkgs/tool.msi"), 1);

    // Once the fill has completed, the object is a hit, served to the
    // client as the origin.
    let mut hit = None;
    for n in 2..50 {
        let (head, got) = get(n).await.unwrap();
        if head.to_ascii_lowercase().contains("x-cache: hit") {
            hit = Some((head, got));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (head, got) = hit.expect("never a hit within 5 s");
    assert!(got == body, "the hit's body is not the origin's bytes");
    assert!(head.contains("remote=10.99.3.2:80"), "{head}");
    assert_eq!(
        origin.count("/pkgs/tool.msi"),
        1,
        "the hit went to the origin"
    );

    if !gre {
        // L2 return of a bypassed destination: each request reaches the
        // origin itself, through the router, not the edge.
        sh(&["ip", "addr", "add", "10.99.3.3/24", "dev", &lab.wan_if]);
        origin_front("10.99.3.3", origin.addr()).await;
        for n in 0..2u32 {
            let (client, out_file) = (client.clone(), dir.path().join(format!("bypassed{n}")));
            let (head, got) = tokio::task::spawn_blocking(move || {
                curl(&client, "http://10.99.3.3/pkgs/tool.msi", &out_file)
            })
            .await
            .unwrap();
            assert!(got == body, "the bypassed body is not the origin's bytes");
            assert!(head.contains("remote=10.99.3.3:80"), "{head}");
            assert!(
                !head.to_ascii_lowercase().contains("via: 1.1 outpost"),
                "a bypassed destination went through the edge: {head}"
            );
        }
        assert_eq!(
            origin.count("/pkgs/tool.msi"),
            3,
            "each bypassed request reaches the origin"
        );
    }
    drop(serve);
    drop(lab);
}
