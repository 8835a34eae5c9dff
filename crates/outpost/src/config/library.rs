//! `[library]` resolved: the library listener (`--library` wins over the
//! file), the PAC file, Delivery Optimization's allowlist and DNS mode,
//! with the cross-checks `check-config` must make.

use outpost_proxy::ProxyConfig;
use outpost_proxy::library::{DnsModeConfig, LibraryConfig, PacConfig};

use super::Overrides;
use super::file::LibrarySection;
use super::resolver::Resolver;

pub(super) fn library_config(
    r: &mut Resolver<'_>,
    l: &LibrarySection,
    overrides: &Overrides,
    proxy: &ProxyConfig,
) -> LibraryConfig {
    let d = LibraryConfig::default();
    let listen = overrides
        .library
        .or_else(|| r.get("library.listen", &l.listen));
    // Port 0 (any free port) cannot collide.
    if let Some(addr) = listen
        && addr.port() != 0
        && proxy.listen.iter().any(|p| {
            p.port() == addr.port()
                && (p.ip() == addr.ip() || p.ip().is_unspecified() || addr.ip().is_unspecified())
        })
    {
        let why = format!("{addr} is also a proxy listen address (server.listen)");
        match &l.listen {
            Some(setting) if overrides.library.is_none() => {
                r.error_at(&setting.span, format!("library.listen: {why}"))
            }
            _ => r.error(format!("--library: {why}")),
        }
    }
    let pac_proxy = r.checked("library.pac_proxy", &l.pac_proxy, |p| check_pac_proxy(p));
    // PCs must be told an address they can reach: not a wildcard, and not
    // loopback unless the library listener itself is loopback only (a
    // test on one machine).
    let usable = |a: &std::net::SocketAddr| {
        !a.ip().is_unspecified()
            && (!a.ip().is_loopback() || listen.is_some_and(|l| l.ip().is_loopback()))
    };
    if listen.is_some()
        && pac_proxy.is_none()
        && l.pac_proxy.is_none()
        && !proxy.listen.iter().any(usable)
    {
        let why = "the proxy listens only on wildcard or loopback addresses, so the PAC file cannot name it: \
                   set library.pac_proxy = \"host:port\" (the proxy as PCs reach it)";
        match &l.listen {
            Some(setting) if overrides.library.is_none() => {
                r.error_at(&setting.span, format!("library.listen: {why}"))
            }
            _ => r.error(format!("--library: {why}")),
        }
    }
    let pac_direct = r
        .get("library.pac_direct", &l.pac_direct)
        .map(|list| list.into_iter().map(|p| p.0).collect())
        .unwrap_or(d.pac.direct);
    let do_hosts = r
        .get("library.do_hosts", &l.do_hosts)
        .map(|list| list.into_iter().map(|p| p.0).collect())
        .unwrap_or(d.do_hosts);
    let names: Vec<_> = r
        .get("library.dns.names", &l.dns.names)
        .map(|list| list.into_iter().map(|p| p.0).collect())
        .unwrap_or_default();
    let upstreams = r
        .checked("library.dns.upstreams", &l.dns.upstreams, |list| match list
            .iter()
            .find(|a| a.ip().is_unspecified() || a.port() == 0)
        {
            Some(a) => Err(format!("{a} is not a resolver's address")),
            None => Ok(()),
        })
        .unwrap_or_default();
    if !names.is_empty() && upstreams.is_empty() && l.dns.upstreams.is_none() {
        let span = l.dns.names.as_ref().map(|s| s.span.clone()).unwrap_or(0..0);
        r.error_at(
            &span,
            "library.dns.names: needs library.dns.upstreams = [\"IP:port\", ...] \
             (the resolvers that know the real origins; never the site's own DNS, which \
             answers the edge for these names)",
        );
    }
    let allowed_hosts =
        super::resolver::bare_host_names(r, "library.allowed_hosts", &l.allowed_hosts);
    LibraryConfig {
        listen,
        allowed_hosts: outpost_proxy::allowed_hosts::AllowedHosts::new(allowed_hosts)
            .with_single_label_names(),
        pac: PacConfig {
            direct: pac_direct,
            proxy: pac_proxy,
        },
        do_hosts,
        dns: DnsModeConfig { names, upstreams },
    }
}

/// `host:port` with a name or address PCs can use, in characters a PAC
/// string can hold as is.
fn check_pac_proxy(text: &str) -> Result<(), String> {
    let bad = || format!("{text:?} is not host:port (e.g. \"edge.branch.example:3128\")");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = host.parse::<std::net::IpAddr>().ok();
    if port == 0
        || ip.is_some_and(|ip| ip.is_unspecified())
        || (ip.is_none() && !outpost_proxy::library::config::is_host_name(host))
    {
        return Err(bad());
    }
    Ok(())
}
