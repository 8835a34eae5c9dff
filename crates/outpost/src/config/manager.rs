//! The `[manager]` table (and `--manager`, `--join-token`, `--site`,
//! `--manager-fingerprint`): the fleet manager this edge reports to. The
//! command line wins over the file, key by key. `url` and `site` go
//! together; the join token is needed only until the edge has enrolled.

use std::path::PathBuf;

use super::file::ManagerSection;
use super::resolver::Resolver;
use super::{Overrides, values::Setting};

/// The manager link's resolved settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerConfig {
    pub url: url::Url,
    /// The site's name in the fleet: `[A-Za-z0-9._-]{1,64}`.
    pub site: String,
    pub join_token: Option<JoinToken>,
    /// SHA-256 of the manager's certificate, "aa:bb:..." lower case; the
    /// system's trust store decides without it.
    pub fingerprint: Option<String>,
}

/// Where the join token is: written in the config (or on the command
/// line), or in a file (so that `ps` and the config file do not show it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinToken {
    Inline(String),
    File(PathBuf),
}

/// The fingerprint in its one written form ("aa:bb:...", lower case) from
/// hex pairs with or without colons, any case; `None` unless it is 32
/// bytes.
pub fn normalize_fingerprint(text: &str) -> Option<String> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    let pairs: Vec<&str> = (0..32).filter_map(|i| hex.get(2 * i..2 * i + 2)).collect();
    Some(pairs.join(":"))
}

fn valid_site(site: &str) -> bool {
    (1..=64).contains(&site.len())
        && site
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub(super) fn manager_config(
    r: &mut Resolver<'_>,
    m: &ManagerSection,
    overrides: &Overrides,
) -> Option<ManagerConfig> {
    let span = |s: &Option<Setting<_>>| s.as_ref().map(|s: &Setting<_>| s.span.clone());
    let url = match &overrides.manager_url {
        Some(text) => match url::Url::parse(text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
                Some(url)
            }
            _ => {
                r.error(format!(
                    "--manager {text:?}: expected the manager's URL, like https://manager.example:8443"
                ));
                None
            }
        },
        None => r.get("manager.url", &m.url).map(|u| u.0),
    };
    let site = match &overrides.site {
        Some(site) => {
            if !valid_site(site) {
                r.error(format!(
                    "--site {site:?}: must be 1 to 64 letters, digits, '.', '_' or '-'"
                ));
            }
            Some(site.clone())
        }
        None => r.checked("manager.site", &m.site, |s| {
            if valid_site(s) {
                Ok(())
            } else {
                Err(format!(
                    "{s:?} must be 1 to 64 letters, digits, '.', '_' or '-'"
                ))
            }
        }),
    };
    let fingerprint = match &overrides.manager_fingerprint {
        Some(text) => {
            let normalized = normalize_fingerprint(text);
            if normalized.is_none() {
                r.error(format!(
                    "--manager-fingerprint {text:?}: expected the SHA-256 of the manager's certificate: 32 hex pairs like \"ab:cd:...\""
                ));
            }
            normalized
        }
        None => r
            .checked("manager.fingerprint", &m.fingerprint, |f| {
                normalize_fingerprint(f).map(|_| ()).ok_or_else(|| {
                    format!("expected the SHA-256 of the manager's certificate: 32 hex pairs like \"ab:cd:...\", got {f:?}")
                })
            })
            .and_then(|f| normalize_fingerprint(&f)),
    };
    let inline = match &overrides.join_token {
        Some(token) => Some(token.clone()),
        None => r.get("manager.join_token", &m.join_token),
    };
    let token_file = r.get("manager.join_token_file", &m.join_token_file);
    let join_token = match (inline, token_file) {
        (Some(_), Some(_)) if overrides.join_token.is_none() => {
            let at = span(&m.join_token_file).unwrap_or(0..0);
            r.error_at(
                &at,
                "manager.join_token_file: set either join_token or join_token_file, not both",
            );
            None
        }
        (Some(token), _) => Some(JoinToken::Inline(token)),
        (None, Some(file)) => Some(JoinToken::File(file)),
        (None, None) => None,
    };
    let any_set = m.url.is_some()
        || m.site.is_some()
        || m.join_token.is_some()
        || m.join_token_file.is_some()
        || m.fingerprint.is_some()
        || overrides.manager_url.is_some()
        || overrides.site.is_some()
        || overrides.join_token.is_some()
        || overrides.manager_fingerprint.is_some();
    if let (Some(url), Some(_)) = (&url, &fingerprint)
        && url.scheme() == "http"
    {
        // The pin guards a TLS connection; over plain HTTP the join token,
        // the credential and the managed config would cross the WAN in
        // clear text while the admin believes them pinned.
        r.error(format!(
            "manager.url {:?}: a fingerprint pins an https:// manager; with http:// it would              protect nothing",
            url.as_str()
        ));
    }
    match (url, site) {
        (Some(url), Some(site)) => Some(ManagerConfig {
            url,
            site,
            join_token,
            fingerprint,
        }),
        _ if !any_set => None,
        (url, site) => {
            // A bad value was reported already; a missing one is said here.
            if url.is_none() && m.url.is_none() && overrides.manager_url.is_none() {
                r.error(
                    "manager.url (or --manager): missing: the other [manager] settings need it",
                );
            }
            if site.is_none() && m.site.is_none() && overrides.site.is_none() {
                r.error("manager.site (or --site): missing: the fleet knows the edge by it");
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Overrides, resolve_text};

    fn manager(text: &str, overrides: &Overrides) -> Result<Option<ManagerConfig>, String> {
        resolve_text(text, "t.toml", overrides)
            .map(|(_, r)| r.manager)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_pinned_manager_over_plain_http_is_refused() {
        let pin = "ab".repeat(32);
        let text = format!(
            "[manager]\nurl = \"http://m.example:8080\"\nsite = \"b\"\nfingerprint = \"{pin}\"\n"
        );
        let err = manager(&text, &Overrides::default()).unwrap_err();
        assert!(err.contains("protect nothing"), "{err}");
        let https = text.replace("http://", "https://");
        assert!(manager(&https, &Overrides::default()).is_ok());
    }

    #[test]
    fn the_manager_table_resolves_and_the_command_line_wins() {
        assert_eq!(manager("", &Overrides::default()), Ok(None));
        let text = "[manager]\nurl = \"https://m.example:8443\"\nsite = \"branch-1\"\njoin_token_file = \"/etc/outpost/join\"\nfingerprint = \"AB\"\n"
            .replace("\"AB\"", &format!("\"{}\"", "AB".repeat(32)));
        let m = manager(&text, &Overrides::default()).unwrap().unwrap();
        assert_eq!(m.site, "branch-1");
        assert_eq!(
            m.join_token,
            Some(JoinToken::File("/etc/outpost/join".into()))
        );
        assert_eq!(m.fingerprint, Some(vec!["ab"; 32].join(":")));
        let overrides = Overrides {
            site: Some("branch-2".into()),
            join_token: Some("tok".into()),
            ..Overrides::default()
        };
        let m = manager(&text, &overrides).unwrap().unwrap();
        assert_eq!(
            (m.site.as_str(), m.join_token),
            ("branch-2", Some(JoinToken::Inline("tok".into())))
        );
    }

    #[test]
    fn bad_or_missing_manager_settings_are_named() {
        let err = manager(
            "[manager]\nsite = \"a b\"\nfingerprint = \"12:34\"\n",
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(
            err.contains("t.toml:2:8: manager.site: \"a b\" must be"),
            "{err}"
        );
        assert!(
            err.contains("t.toml:3:15: manager.fingerprint: expected the SHA-256"),
            "{err}"
        );
        assert!(err.contains("manager.url (or --manager): missing"), "{err}");
        let overrides = Overrides {
            manager_url: Some("ftp://m".into()),
            ..Overrides::default()
        };
        let err = manager("", &overrides).unwrap_err();
        assert!(err.contains("--manager \"ftp://m\""), "{err}");
        assert!(err.contains("manager.site (or --site): missing"), "{err}");
        let err = manager(
            "[manager]\nurl = \"http://m\"\nsite = \"s\"\njoin_token = \"a\"\njoin_token_file = \"/f\"\n",
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(
            err.contains("set either join_token or join_token_file"),
            "{err}"
        );
    }
}
