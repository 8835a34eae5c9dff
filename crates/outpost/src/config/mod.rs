//! The TOML configuration file, read in one pass: the text is parsed with
//! its spans, every key is checked and every value resolved (with the
//! command line on top) into the proxy's, store's, admin API's and
//! channels' configurations. The result is either a whole [`Resolved`]
//! configuration or the list of everything wrong with the file, each error
//! with the line and column of the value (or key, or table) it is about.
//!
//! Invariants:
//! - what `check-config`, `serve` and a reload accept is the same: they all
//!   go through [`load_layered`] (the edge's file with a fleet manager's
//!   `managed.toml` laid over it), which checks everything `serve` would
//!   refuse;
//! - no setting is dropped silently: a value that does not resolve is an
//!   error, never a default.

mod channels;
mod file;
mod library;
mod managed;
mod manager;
mod overlay;
mod resolve;
mod resolver;
mod values;
mod wccp;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use outpost_channel::ChannelConfig;
use outpost_proxy::ProxyConfig;
use outpost_store::StoreConfig;

pub use file::FileConfig;
pub use managed::{MANAGED_SERVER_KEYS, MANAGED_TABLES, check_managed};
pub use manager::{JoinToken, ManagerConfig, normalize_fingerprint};
pub use overlay::{Layered, MANAGED_FILE_NAME, load_layered, overlay, resolve_layered};
pub use values::{AccessFormat, parse_origin};
pub use wccp::{Datapath as WccpDatapath, WccpConfig};

/// The TUN name of `wccp.datapath = "outpost"` unless `wccp.tunnel` is set.
pub fn wccp_default_tunnel() -> &'static str {
    wccp::DEFAULT_TUNNEL
}

pub const DEFAULT_ADMIN: &str = "127.0.0.1:3180";
/// The generated admin token's file name, in the cache directory.
pub const ADMIN_TOKEN_FILE_NAME: &str = "admin.token";
pub const DEFAULT_ADMIN_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 64;
pub const DEFAULT_CACHE_DIR: &str = "./outpost-cache";
pub const DEFAULT_CACHE_SIZE: u64 = 10 * 1024 * 1024 * 1024;

/// The admin API's resolved settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// The token file the admin configured, if any.
    pub token_file: Option<PathBuf>,
    /// Where the edge keeps the token it generates when none is configured.
    pub generated_token_file: PathBuf,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// Host names (lower case) the admin API accepts in `Host` besides
    /// address literals, localhost and the machine's host name.
    pub allowed_hosts: Vec<String>,
}

/// Command-line values that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Vec<SocketAddr>,
    /// `--library`: the library listener.
    pub library: Option<SocketAddr>,
    pub cache_dir: Option<PathBuf>,
    pub cache_size: Option<bytesize::ByteSize>,
    pub origin: Option<http::Uri>,
    pub access_log: Option<String>,
    pub admin: Option<SocketAddr>,
    /// `--manager`, `--join-token`, `--site`, `--manager-fingerprint`.
    pub manager_url: Option<String>,
    pub join_token: Option<String>,
    pub site: Option<String>,
    pub manager_fingerprint: Option<String>,
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub proxy: ProxyConfig,
    pub store: StoreConfig,
    /// The log filter, checked to name only known levels.
    pub log_level: Option<String>,
    /// Access log target ("-" = stdout) and format.
    pub access_log: Option<(String, AccessFormat)>,
    pub admin: AdminConfig,
    pub channels: Vec<ChannelConfig>,
    /// The fleet manager this edge reports to, if any.
    pub manager: Option<ManagerConfig>,
    /// WCCPv2 with the site's routers, if `[wccp]` is set.
    pub wccp: Option<WccpConfig>,
}

/// One thing wrong with a configuration: where (when it is in the file)
/// and what, with what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line and column in the file; `None` for a problem of the
    /// command line or of the combination.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

/// Everything wrong with one configuration, in file order.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    /// The file's name, as the errors print it.
    pub file: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match e.position {
                Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.file, e.message)?,
                None => write!(f, "{}: {}", self.file, e.message)?,
            }
        }
        Ok(())
    }
}

/// Reads and resolves the configuration file at `path`.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Resolved, ConfigErrors> {
    load_with(path, overrides).map(|(_, resolved)| resolved)
}

/// Reads `path` and resolves it; a file that cannot be read is one error
/// naming it.
fn load_with(path: &Path, overrides: &Overrides) -> Result<(FileConfig, Resolved), ConfigErrors> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        file: source.clone(),
        errors: vec![ConfigError {
            position: None,
            message: format!("cannot read the config file: {e}"),
        }],
    })?;
    resolve_text(&text, &source, overrides)
}

/// Resolves configuration text; `source` names it in errors. Also returns
/// the file as written, for the few callers that want a raw value.
pub fn resolve_text(
    text: &str,
    source: &str,
    overrides: &Overrides,
) -> Result<(FileConfig, Resolved), ConfigErrors> {
    resolve::resolve(text, overrides).map_err(|errors| ConfigErrors {
        file: source.to_string(),
        errors,
    })
}

/// The configuration of an edge started without a file.
pub fn without_file(overrides: &Overrides) -> Result<Resolved, ConfigErrors> {
    resolve_text("", "command line", overrides).map(|(_, resolved)| resolved)
}

impl FileConfig {
    /// Reads, checks and resolves `path` as `serve` would, and returns the
    /// file as written (the CLI reads the admin settings from it).
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        load_with(path, &Overrides::default()).map(|(file, _)| file)
    }

    /// `admin.listen` as the file sets it.
    pub fn admin_listen(&self) -> Option<SocketAddr> {
        self.admin.listen.as_ref()?.value.as_ref().ok().copied()
    }

    /// The token file the edge run with this file uses: `admin.token_file`,
    /// else `admin.token` in the cache directory (relative paths are the
    /// edge's: relative to the directory it was started in).
    pub fn admin_token_file(&self) -> PathBuf {
        let configured = |s: &Option<values::Setting<PathBuf>>| {
            s.as_ref().and_then(|s| s.value.as_ref().ok()).cloned()
        };
        configured(&self.admin.token_file).unwrap_or_else(|| {
            configured(&self.cache.dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR))
                .join(ADMIN_TOKEN_FILE_NAME)
        })
    }
}
