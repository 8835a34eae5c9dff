//! `outpost manager ...` (run and administer a fleet manager) and
//! `outpost fleet ...` (ask a manager about the fleet, for scripts).
//!
//! `manager token ...` works on the data directory (the server reads
//! tokens from the database on every use, so it sees them at once);
//! `manager edge ...` and `fleet ...` go through the manager's API, since
//! the running manager holds the fleet in memory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http::Method;
use outpost_manager::http::client::Client;
use outpost_manager::{Actor, Manager, ManagerOptions, Validator};
use outpost_protocol::{ActionState, ActionStatus, EdgeList, Readiness};

#[derive(clap::Subcommand)]
pub enum ManagerCommand {
    /// Create a manager's data directory: database, TLS certificate, an
    /// admin API token and a join token (printed once).
    Init(InitArgs),
    /// Run the manager in the foreground (SIGTERM/SIGINT stop it cleanly).
    Serve(ServeArgs),
    /// Admin API tokens and join tokens (on the data directory).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Revoke, approve or delete an edge (through the manager's API).
    #[command(subcommand)]
    Edge(EdgeCommand),
}

#[derive(clap::Args)]
pub struct InitArgs {
    #[arg(long)]
    data_dir: PathBuf,
    /// Serve this certificate (PEM) instead of making a self-signed one.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// More names (DNS or IP) for the self-signed certificate.
    #[arg(long)]
    san: Vec<String>,
    /// Print {"join_token", "admin_token", "fingerprint"} as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ServeArgs {
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// How often edges send a heartbeat, e.g. "30s" (1s for tests).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// Plain HTTP: for tests, or behind a TLS-terminating proxy.
    #[arg(long)]
    insecure_http: bool,
    /// At most this many open connections (each edge holds one long poll).
    #[arg(long, default_value_t = 20_000)]
    max_connections: usize,
    /// POST each alert opened or closed (JSON) to this URL, with retries.
    #[arg(long)]
    webhook: Option<String>,
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Make a token and print it (once).
    Create {
        #[arg(long)]
        data_dir: PathBuf,
        /// What it is for (shown in lists and the audit log).
        #[arg(long, default_value = "cli")]
        label: String,
        /// A join token for edges (default: an admin API token).
        #[arg(long)]
        join: bool,
        /// Join tokens: valid for this long, e.g. "7d".
        #[arg(long, value_parser = humantime::parse_duration, requires = "join")]
        expires_in: Option<Duration>,
    },
    /// List tokens (never their secrets).
    Ls {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id.
    Revoke {
        #[arg(long)]
        data_dir: PathBuf,
        id: i64,
        #[arg(long)]
        join: bool,
    },
}

#[derive(clap::Subcommand)]
pub enum EdgeCommand {
    /// Refuse the edge's calls from now on.
    Revoke {
        site: String,
        #[command(flatten)]
        target: ManagerTarget,
    },
    /// Approve an edge enrolled in "approve new edges" mode.
    Approve {
        site: String,
        #[command(flatten)]
        target: ManagerTarget,
    },
    /// Forget an edge, so its site name can enrol again.
    Delete {
        site: String,
        #[command(flatten)]
        target: ManagerTarget,
    },
}

/// How to reach a manager's API.
#[derive(clap::Args, Clone)]
pub struct ManagerTarget {
    /// The manager's URL, e.g. https://manager.example:8443
    #[arg(long, env = "OUTPOST_MANAGER")]
    manager: String,
    /// Admin API token.
    #[arg(long, env = "OUTPOST_MANAGER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the admin API token.
    #[arg(long, env = "OUTPOST_MANAGER_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Trust the manager's certificate by this SHA-256 fingerprint.
    #[arg(long, env = "OUTPOST_MANAGER_FINGERPRINT")]
    fingerprint: Option<String>,
    /// Print the raw JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand)]
pub enum FleetCommand {
    /// Every edge: state, last seen, version, config.
    Ls(ManagerTarget),
    /// Is a channel (or one file of it) complete at every site? Exit 0
    /// when ready everywhere, 1 when not, 2 on error.
    Ready {
        channel: String,
        /// One file, relative to the channel's source.
        path: Option<String>,
        #[command(flatten)]
        target: ManagerTarget,
    },
    /// Sync a channel now at every site of a scope.
    Sync {
        channel: String,
        /// global, group:NAME or site:NAME.
        #[arg(long, default_value = "global")]
        scope: String,
        /// Wait until every site reports; exit 1 if one failed.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        timeout: Duration,
        #[command(flatten)]
        target: ManagerTarget,
    },
}

fn validator() -> Validator {
    Arc::new(|text: &str, source: &str| {
        outpost::config::check_managed(text, source).map_err(|e| e.to_string())
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

pub fn manager(command: ManagerCommand) -> anyhow::Result<()> {
    match command {
        ManagerCommand::Init(args) => init(args),
        ManagerCommand::Serve(args) => serve(args),
        ManagerCommand::Token(command) => token(command),
        ManagerCommand::Edge(command) => edge(command),
    }
}

fn init(args: InitArgs) -> anyhow::Result<()> {
    let made = outpost_manager::init::init(&outpost_manager::init::InitOptions {
        data_dir: args.data_dir.clone(),
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        sans: args.san,
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&made)?);
        return Ok(());
    }
    println!("Manager created in {}.", args.data_dir.display());
    println!();
    println!(
        "Admin API token (shown once; keep it safe):\n  {}",
        made.admin_token
    );
    println!("Certificate fingerprint (SHA-256):\n  {}", made.fingerprint);
    println!();
    println!("Start it:");
    println!(
        "  outpost manager serve --data-dir {} --listen 0.0.0.0:8443",
        args.data_dir.display()
    );
    println!("Join an edge (at the branch):");
    println!(
        "  outpost serve ... --manager https://MANAGER-HOST:8443 --join-token {} --site SITE --manager-fingerprint {}",
        made.join_token, made.fingerprint
    );
    Ok(())
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    crate::init_logging(None);
    let runtime = runtime()?;
    let result = runtime.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let data_dir = args.data_dir.clone();
        let manager = tokio::task::spawn_blocking(move || {
            Manager::open(ManagerOptions {
                data_dir,
                heartbeat: args.heartbeat,
                validator: validator(),
            })
        })
        .await??;
        let (tls, fingerprint) = if args.insecure_http {
            (None, None)
        } else {
            let (cert, key) = outpost_manager::init::tls_paths(manager.db(), &args.data_dir);
            let config = outpost_manager::tls::server_config(&cert, &key)?;
            let der = outpost_manager::tls::load_certs(&cert)?;
            (
                Some(config),
                Some(outpost_manager::tls::fingerprint(&der[0])),
            )
        };
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(
            %addr,
            scheme,
            fingerprint = fingerprint.as_deref().unwrap_or("-"),
            heartbeat = %humantime::format_duration(args.heartbeat),
            "manager listening"
        );
        if let Some(url) = &args.webhook {
            manager.start_webhook(outpost_manager::webhook::WebhookOptions::new(url.clone()))?;
        }
        let background = tokio::spawn(manager.clone().run_background());
        let server = tokio::spawn(outpost_manager::http::serve(
            manager.clone(),
            listener,
            outpost_manager::http::ServeOptions {
                tls,
                max_connections: args.max_connections,
                header_read_timeout: outpost_manager::http::header_read_timeout_for(args.heartbeat),
                ..Default::default()
            },
        ));
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "stopping: answering open requests, saving state"
        );
        manager.shutdown_token().cancel();
        let _ = server.await;
        let _ = background.await;
        tracing::info!("stopped");
        anyhow::Ok(())
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

fn open_local(data_dir: PathBuf) -> anyhow::Result<Arc<Manager>> {
    Ok(Manager::open(ManagerOptions {
        data_dir,
        heartbeat: Duration::from_secs(30),
        validator: validator(),
    })?)
}

fn when(secs: Option<i64>) -> String {
    secs.map(|s| {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(s.max(0) as u64);
        humantime::format_rfc3339_seconds(t).to_string()
    })
    .unwrap_or_else(|| "-".into())
}

fn token(command: TokenCommand) -> anyhow::Result<()> {
    let actor = Actor::local_cli();
    match command {
        TokenCommand::Create {
            data_dir,
            label,
            join,
            expires_in,
        } => {
            let m = open_local(data_dir)?;
            let made = if join {
                let expires = expires_in.map(|d| {
                    outpost_manager::manager::unix_secs()
                        + d.as_secs().min(i64::MAX as u64 / 2) as i64
                });
                m.create_join_token(&label, expires, &actor)?
            } else {
                m.create_api_token(&label, &actor)?
            };
            println!("{}", made.token);
        }
        TokenCommand::Ls { data_dir, json } => {
            let m = open_local(data_dir)?;
            let api = m.api_tokens()?;
            let join = m.join_tokens()?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"api": api, "join": join}))?
                );
                return Ok(());
            }
            println!(
                "{:<5} {:<5} {:<24} {:<21} {:<21} {:<21} USES",
                "KIND", "ID", "LABEL", "CREATED", "EXPIRES", "REVOKED"
            );
            for (kind, list) in [("api", api), ("join", join)] {
                for t in list {
                    println!(
                        "{kind:<5} {:<5} {:<24} {:<21} {:<21} {:<21} {}",
                        t.id,
                        t.label,
                        when(Some(t.created)),
                        when(t.expires),
                        when(t.revoked),
                        t.uses.map(|u| u.to_string()).unwrap_or_else(|| "-".into())
                    );
                }
            }
        }
        TokenCommand::Revoke { data_dir, id, join } => {
            let m = open_local(data_dir)?;
            if join {
                m.revoke_join_token(id, &actor)?;
            } else {
                m.revoke_api_token(id, &actor)?;
            }
            println!("revoked");
        }
    }
    Ok(())
}

impl ManagerTarget {
    fn client(&self) -> anyhow::Result<Client> {
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => t.clone(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?
                .trim()
                .to_string(),
            (None, None) => {
                bail!("no admin API token: give --token, --token-file or OUTPOST_MANAGER_TOKEN")
            }
        };
        Ok(Client::new(&self.manager, self.fingerprint.as_deref())?.bearer(token))
    }
}

fn edge(command: EdgeCommand) -> anyhow::Result<()> {
    let (verb, site, target) = match command {
        EdgeCommand::Revoke { site, target } => ("revoke", site, target),
        EdgeCommand::Approve { site, target } => ("approve", site, target),
        EdgeCommand::Delete { site, target } => ("delete", site, target),
    };
    let client = target.client()?;
    runtime()?.block_on(async {
        let _: serde_json::Value = if verb == "delete" {
            client
                .call(Method::DELETE, &format!("/api/v1/edges/{site}"), None)
                .await?
        } else {
            client
                .call(Method::POST, &format!("/api/v1/edges/{site}/{verb}"), None)
                .await?
        };
        println!("{site}: {verb}d");
        anyhow::Ok(())
    })
}

/// `outpost fleet ...`: exit codes for scripts (2 on any error).
pub fn fleet(command: FleetCommand) -> ExitCode {
    match fleet_inner(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("outpost: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn query_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn fleet_inner(command: FleetCommand) -> anyhow::Result<ExitCode> {
    let runtime = runtime()?;
    match command {
        FleetCommand::Ls(target) => {
            let client = target.client()?;
            let list: EdgeList = runtime.block_on(client.get("/api/v1/edges"))?;
            if target.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<20} {:<8} {:<21} {:<21} {:<10} {:<7} CONFIG ERROR / GROUPS",
                "SITE", "STATE", "SINCE", "LAST SEEN", "VERSION", "CONFIG"
            );
            for e in list.edges {
                println!(
                    "{:<20} {:<8} {:<21} {:<21} {:<10} {:<7} {}",
                    e.site,
                    e.state.as_str(),
                    when(Some(e.state_since)),
                    when(e.last_seen),
                    e.version.as_deref().unwrap_or("-"),
                    e.config_version_applied,
                    e.config_error.unwrap_or_else(|| e.groups.join(","))
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        FleetCommand::Ready {
            channel,
            path,
            target,
        } => {
            let client = target.client()?;
            let mut query = format!("/api/v1/readiness?channel={}", query_escape(&channel));
            if let Some(path) = &path {
                query.push_str(&format!("&path={}", query_escape(path)));
            }
            let ready: Readiness = runtime.block_on(client.get(&query))?;
            if target.json {
                println!("{}", serde_json::to_string_pretty(&ready)?);
            } else {
                for s in &ready.sites {
                    println!(
                        "{:<20} {:<12} {}/{} files {}",
                        s.site,
                        s.state.as_str(),
                        s.files_present,
                        s.files_total,
                        s.detail.as_deref().unwrap_or("")
                    );
                }
                println!(
                    "{}{}: {}",
                    channel,
                    path.map(|p| format!(" {p}")).unwrap_or_default(),
                    if ready.ready {
                        "ready at every site".to_string()
                    } else if ready.sites.is_empty() {
                        "not ready: no site has this channel".to_string()
                    } else {
                        format!(
                            "not ready ({} of {} sites complete)",
                            ready
                                .sites
                                .iter()
                                .filter(|s| s.state == outpost_protocol::ReadinessState::Complete)
                                .count(),
                            ready.sites.len()
                        )
                    }
                );
            }
            Ok(if ready.ready {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        FleetCommand::Sync {
            channel,
            scope,
            wait,
            timeout,
            target,
        } => {
            let client = target.client()?;
            let path = format!(
                "/api/v1/actions/sync?channel={}&scope={}",
                query_escape(&channel),
                query_escape(&scope)
            );
            let mut status: ActionStatus =
                runtime.block_on(client.call(Method::POST, &path, None))?;
            if !target.json {
                println!(
                    "action {}: sync {channel} at {} sites",
                    status.id,
                    status.sites.len()
                );
            }
            if wait {
                let deadline = Instant::now() + timeout;
                while status.sites.iter().any(|s| s.state == ActionState::Pending) {
                    if Instant::now() > deadline {
                        bail!("action {} still pending after {timeout:?}", status.id);
                    }
                    std::thread::sleep(Duration::from_millis(500));
                    status =
                        runtime.block_on(client.get(&format!("/api/v1/actions/{}", status.id)))?;
                }
            }
            if target.json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else if wait {
                for s in &status.sites {
                    println!(
                        "{:<20} {:<8} {}",
                        s.site,
                        s.state.as_str(),
                        s.detail.as_deref().unwrap_or("")
                    );
                }
            }
            let failed = status.sites.iter().any(|s| s.state == ActionState::Failed);
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
