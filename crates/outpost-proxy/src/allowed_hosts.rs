//! Which `Host` values the admin API and the site library answer: the
//! defence against DNS rebinding.
//!
//! A web page open in a browser on the edge's host (or on a PC that can
//! reach the admin port) can point a name of its own at 127.0.0.1 once
//! the page has loaded; the browser then sends the page's requests to the
//! admin API as same-origin, with `Host: the-attackers-name`. Answering
//! only Host values that name this machine (an IP literal, `localhost`,
//! the machine's hostname, names the admin configured) means such a page
//! never reads `/metrics` or anything else. An IP literal is safe to
//! accept: rebinding needs a name the attacker controls.
//!
//! The site library also answers single-label names (`EDGE`): the
//! Windows WebClient sends the NetBIOS name of a UNC path
//! (`\\EDGE\DavWWWRoot`) as `Host`, and a name without a dot cannot be
//! registered on the Internet for a page to rebind.
//!
//! A request without `Host` is let through: every browser sends one, so
//! its absence says the client is not a page (an HTTP/1.0 probe, say).

use std::net::IpAddr;

/// The host names answered besides IP literals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts {
    /// Lowercase, without a trailing dot.
    names: Vec<String>,
    single_label: bool,
}

impl Default for AllowedHosts {
    /// `localhost` and the machine's hostname.
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl AllowedHosts {
    /// `localhost`, the machine's hostname, and `extra` (the config's
    /// `admin.allowed_hosts`).
    pub fn new(extra: Vec<String>) -> Self {
        let hostname = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        let names = ["localhost".to_string(), hostname]
            .into_iter()
            .chain(extra)
            .map(|n| normalize(&n))
            .filter(|n| !n.is_empty())
            .collect();
        Self {
            names,
            single_label: false,
        }
    }

    /// Also answers every name without a dot (a NetBIOS name).
    pub fn with_single_label_names(mut self) -> Self {
        self.single_label = true;
        self
    }

    /// Whether a request with this `Host` header value is answered.
    pub fn allows(&self, host: &str) -> bool {
        let Ok(authority) = host.parse::<http::uri::Authority>() else {
            return false;
        };
        // A Host header never carries user information (RFC 9110 section
        // 7.2); one that does is not from a client we know.
        if authority.as_str().contains('@') {
            return false;
        }
        let name = authority.host();
        let literal = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        if literal.parse::<IpAddr>().is_ok() {
            return true;
        }
        let name = normalize(name);
        (self.single_label && !name.is_empty() && !name.contains('.')) || self.names.contains(&name)
    }
}

fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_localhost_and_configured_names_are_answered() {
        let hosts = AllowedHosts::new(vec!["Edge-12.Branch.example".into()]);
        for host in [
            "127.0.0.1",
            "127.0.0.1:3180",
            "10.1.2.3:3180",
            "[::1]",
            "[::1]:3180",
            "localhost",
            "LOCALHOST:3180",
            "localhost.",
            "edge-12.branch.example",
            "edge-12.branch.example.:3180",
        ] {
            assert!(hosts.allows(host), "{host}");
        }
    }

    #[test]
    fn other_names_are_refused() {
        let hosts = AllowedHosts::default();
        for host in [
            "attacker.example",
            "attacker.example:3180",
            "localhost.attacker.example",
            "127.0.0.1.nip.io",
            "user@127.0.0.1",
            "",
            "[::1",
            "exa mple",
        ] {
            assert!(!hosts.allows(host), "{host}");
        }
    }

    #[test]
    fn single_label_names_only_where_asked() {
        let admin = AllowedHosts::default();
        let library = AllowedHosts::default().with_single_label_names();
        // Only the machine's own name may pass where a dotless or foreign
        // name must not.
        let me = hostname();
        let name = |host: &str| normalize(host.split(':').next().unwrap_or(host));
        for host in ["EDGE", "edge:80", "branch-12-edge"] {
            assert!(!admin.allows(host) || name(host) == me, "{host}");
            assert!(library.allows(host), "{host}");
        }
        for host in ["edge.attacker.example", "a.b"] {
            assert!(!library.allows(host) || name(host) == me, "{host}");
        }
    }

    fn hostname() -> String {
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .to_ascii_lowercase()
    }

    #[test]
    fn the_machines_hostname_is_answered() {
        let name = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        assert!(AllowedHosts::default().allows(&name), "{name}");
    }
}
