//! The `outpost` binary: command line, configuration, wiring and signals.
//! Everything else lives in the library crates.

mod admin;
mod cli;
mod fleet;
mod manager_cli;
mod manager_user;
mod reload;
mod wccp;
use outpost::config;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bytesize::ByteSize;
use clap::{Parser, Subcommand};
use outpost_channel::Channels;
use outpost_protocol::ObjectAction;
use outpost_proxy::access_log::{AccessLog, LogFormat, LogTarget};
use outpost_proxy::{Engine, Server};
use outpost_store::Store;
use tokio_util::sync::CancellationToken;

use crate::config::Overrides;

// The hit path allocates small, short-lived buffers (headers, keys) on many
// threads; glibc's malloc showed up as 15 % of a 4 KiB-hit profile.
// `--features system-allocator` keeps the C library's, so heap profilers
// that interpose malloc (heaptrack) see every allocation.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "outpost",
    version,
    about = "Branch-office content engine: an HTTP caching edge for large software packages"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the edge in the foreground (logs to stderr; SIGTERM drains, a second one stops at once).
    Serve(ServeArgs),
    /// Check a configuration file as `serve` would; reports every error with
    /// its line and column.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Show what a running edge holds and does (via its admin API).
    Status(cli::Target),
    /// Remove an object from a running edge's cache.
    Purge {
        /// The object's URL, e.g. http://fileserver/pkgs/app.msi
        url: String,
        #[command(flatten)]
        target: cli::Target,
    },
    /// Pin an object: never evicted.
    Pin {
        url: String,
        #[command(flatten)]
        target: cli::Target,
    },
    /// What the running edge stores.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Unpin an object: evictable again.
    Unpin {
        url: String,
        #[command(flatten)]
        target: cli::Target,
    },
    /// Run a pre-positioning sync now (one channel, or all) and follow it.
    Sync {
        /// The channel's name; all channels when omitted.
        channel: Option<String>,
        #[command(flatten)]
        target: cli::Target,
    },
    /// Write a channel's files as a plain read-only tree at DIR (hard
    /// links into the store where possible), for a Samba share.
    Export {
        channel: String,
        dir: std::path::PathBuf,
        #[command(flatten)]
        target: cli::Target,
    },
    /// Each pre-positioning channel's state.
    Channels(cli::Target),
    /// Re-read the running edge's config file and apply what can change
    /// live (same as SIGHUP); lists what needs a restart.
    Reload(cli::Target),
    /// WCCP with the site's routers (see docs/wccp.md).
    #[command(subcommand)]
    Wccp(WccpCommand),
    /// Run or administer a fleet manager (see docs/manager.md).
    #[command(subcommand)]
    Manager(manager_cli::ManagerCommand),
    /// Ask a fleet manager about the fleet (exit codes for scripts).
    #[command(subcommand)]
    Fleet(manager_cli::FleetCommand),
}

#[derive(Subcommand)]
enum WccpCommand {
    /// Routers, views, designated cache, methods, buckets owned, counters.
    Status(cli::Target),
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Re-check every complete object against its recorded length and
    /// SHA-256; drop (and report) the ones that no longer match.
    Verify {
        #[command(flatten)]
        target: cli::Target,
    },
    /// List stored objects: size, state, pin, hits, URL.
    Ls {
        /// Only URLs matching this glob (`*` matches anything).
        glob: Option<String>,
        #[command(flatten)]
        target: cli::Target,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Configuration file (TOML); the flags below override it.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Address to listen on (repeatable). Default 127.0.0.1:3128.
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// Cache directory. Default ./outpost-cache.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Cache size limit, e.g. "50 GiB". Default 10 GiB.
    #[arg(long)]
    cache_size: Option<ByteSize>,
    /// Run as a single-site reverse proxy for this origin base URL.
    #[arg(long, value_parser = parse_origin_arg)]
    origin: Option<http::Uri>,
    /// Access log file ("-" for stdout), Squid format unless the config says json.
    #[arg(long)]
    access_log: Option<String>,
    /// The library listener for PCs (PAC/WPAD, Delivery Optimization, DNS
    /// mode, the site library), e.g. 0.0.0.0:80. Off unless set.
    #[arg(long)]
    library: Option<SocketAddr>,
    /// Admin API address. Default 127.0.0.1:3180.
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// The fleet manager to report to, e.g. https://manager.example:8443.
    #[arg(long)]
    manager: Option<String>,
    /// The join token, for the first contact only (`manager.join_token_file`
    /// keeps it out of `ps`).
    #[arg(long)]
    join_token: Option<String>,
    /// This edge's site name in the fleet.
    #[arg(long)]
    site: Option<String>,
    /// SHA-256 of the manager's certificate ("aa:bb:..."), as
    /// `outpost manager init` prints it.
    #[arg(long)]
    manager_fingerprint: Option<String>,
}

fn parse_origin_arg(s: &str) -> Result<http::Uri, String> {
    config::parse_origin(s)
}

fn main() -> ExitCode {
    // mimalloc asks for transparent huge pages on its arenas, so on hosts
    // where THP is `madvise` or `always` every 2 MiB region the heap touches
    // becomes resident whole: one 256 MiB fill raised the edge's anonymous
    // RSS from 9 to 27 MB, against 2 to 7 MB without. The heap is small and
    // bodies never pass through it (sendfile), so huge pages buy nothing.
    // Done first, before the heap grows; failure (old kernels) is harmless.
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::CheckConfig { file } => check_config(&file),
        Command::Status(target) => cli::status(&target),
        Command::Cache(CacheCommand::Ls { glob, target }) => {
            cli::cache_ls(&target, glob.as_deref())
        }
        Command::Cache(CacheCommand::Verify { target }) => cli::cache_verify(&target),
        Command::Purge { url, target } => cli::action(&target, ObjectAction::Purge, &url),
        Command::Pin { url, target } => cli::action(&target, ObjectAction::Pin, &url),
        Command::Unpin { url, target } => cli::action(&target, ObjectAction::Unpin, &url),
        Command::Sync { channel, target } => cli::sync(&target, channel.as_deref()),
        Command::Export {
            channel,
            dir,
            target,
        } => cli::export(&target, &channel, &dir),
        Command::Channels(target) => cli::channels(&target),
        Command::Reload(target) => cli::reload(&target),
        Command::Wccp(WccpCommand::Status(target)) => cli::wccp_status(&target),
        Command::Manager(command) => manager_cli::manager(command),
        Command::Fleet(command) => return manager_cli::fleet(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outpost: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let layered = config::load_layered(Some(file), &Overrides::default())?;
    match &layered.managed {
        Some(managed) => println!(
            "{}: ok (with {} laid over)",
            file.display(),
            managed.display()
        ),
        None => println!("{}: ok", file.display()),
    }
    Ok(())
}

fn init_logging(level: Option<&str>) {
    use tracing_subscriber::prelude::*;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| level.map(str::to_string))
        .unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let _ = reload::LOG_FILTER.set(handle);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        );
    tracing_subscriber::registry().with(filter).with(fmt).init();
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        listen: args.listen,
        library: args.library,
        cache_dir: args.cache_dir,
        cache_size: args.cache_size,
        origin: args.origin,
        access_log: args.access_log,
        admin: args.admin,
        manager_url: args.manager,
        join_token: args.join_token,
        site: args.site,
        manager_fingerprint: args.manager_fingerprint,
    };
    let layered = config::load_layered(args.config.as_deref(), &overrides)?;
    let resolved = layered.resolved;
    init_logging(resolved.log_level.as_deref());
    if let Some(managed) = &layered.managed {
        tracing::info!(file = %managed.display(), "a fleet manager's config is laid over the edge's own");
    }
    for name in &layered.replaced_channels {
        tracing::info!(channel = %name, "the managed config replaces the local channel of this name");
    }
    let config_path = args.config.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let result = runtime.block_on(run(resolved, config_path, overrides));
    // Blocking work still running (hashing a multi-GB file for its digest)
    // is not waited for: fills are checkpointed, and a restart redoes it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

async fn run(
    resolved: config::Resolved,
    config_path: Option<PathBuf>,
    overrides: Overrides,
) -> anyhow::Result<()> {
    // Taken before anything slow (opening the store, the channels): a
    // `systemctl reload` or logrotate's SIGUSR1 during startup would
    // otherwise end the process (their default action), and systemd takes
    // a SIGHUP death for a clean exit that Restart=on-failure leaves down.
    // Signals that arrive early are handled once the handlers run.
    use tokio::signal::unix::{SignalKind, signal};
    let hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let usr1 = signal(SignalKind::user_defined1()).context("cannot install the SIGUSR1 handler")?;
    let store_config = resolved.store.clone();
    // The store's errors name the directory and the cause themselves.
    let store = tokio::task::spawn_blocking(move || Store::open(store_config)).await??;
    let engine = Engine::new(resolved.proxy.clone(), store.clone());
    let channels = Channels::start(
        engine.clone(),
        resolved.channels.clone(),
        &resolved.store.dir,
    )
    .context("cannot start the channels")?;
    let access_log = match &resolved.access_log {
        Some((target, format)) => {
            let target = if target == "-" {
                LogTarget::Stdout
            } else {
                LogTarget::File(target.into())
            };
            let format = match format {
                config::AccessFormat::Squid => LogFormat::Squid,
                config::AccessFormat::Json => LogFormat::Json,
            };
            let log = std::sync::Arc::new(AccessLog::open(target, format)?);
            engine.set_access_log(log.clone());
            Some(log)
        }
        None => None,
    };
    let reloader = std::sync::Arc::new(reload::Reloader::new(
        config_path.clone(),
        overrides.clone(),
        resolved.clone(),
        engine.clone(),
        channels.clone(),
    ));
    {
        let reloader = reloader.clone();
        let mut hup = hup;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                let reloader = reloader.clone();
                match tokio::task::spawn_blocking(move || reloader.reload()).await {
                    Ok(Err(e)) => {
                        tracing::error!(error = %format!("{e:#}"), "reload refused; the running configuration stays")
                    }
                    Err(e) => tracing::error!(error = %e, "reload failed"),
                    Ok(Ok(_)) => {}
                }
            }
        });
    }
    let allowed_hosts = admin::AllowedHosts::new(resolved.admin.allowed_hosts.clone());
    let (admin_listener, admin) = admin::bind(
        &resolved.admin,
        engine.clone(),
        channels.clone(),
        reloader.clone(),
        allowed_hosts,
    )
    .await?;
    if let Ok(addr) = admin_listener.local_addr() {
        // No client may make the proxy connect to the admin API.
        engine.add_own_address(addr);
        tracing::info!(admin = %addr, "admin API listening");
    }
    let mut server = Server::bind(engine.clone()).await?;
    // The library listener's site library: browse, downloads, WebDAV.
    server.set_local_site(std::sync::Arc::new(outpost_library::Library::new(
        channels.clone(),
    )));
    admin.set_listeners(server.local_addrs());
    for addr in server.local_addrs() {
        match &engine.config.origin {
            Some(origin) => tracing::info!(%addr, %origin, "listening (reverse proxy)"),
            None => tracing::info!(%addr, "listening (forward / transparent proxy)"),
        }
    }
    if let Some(addr) = server.library_addr() {
        tracing::info!(%addr, "library listener (PAC, Delivery Optimization, DNS mode, site library)");
    }
    let wccp = match &resolved.wccp {
        Some(cfg) => {
            let started = wccp::start(cfg).await?;
            admin.set_wccp(
                started.handle.status_cell(),
                cfg.tunnel.clone(),
                started.datapath.as_ref().map(|d| d.status_cell()),
            );
            Some(started)
        }
        None => None,
    };
    let open_connections = server.open_connections();
    // Installed before the server runs: from here a signal starts a drain
    // (before, its default action ends a process that serves nothing yet).
    let mut stop_signals = StopSignals::install()?;
    let shutdown = CancellationToken::new();
    if let Some(settings) = resolved.manager.clone() {
        fleet::Fleet {
            settings,
            target: fleet::ConfigTarget {
                config_path: config_path.clone(),
                overrides: overrides.clone(),
                cache_dir: resolved.store.dir.clone(),
                reloader: reloader.clone(),
            },
            engine: engine.clone(),
            channels: channels.clone(),
            status: admin.manager_status(),
            started: std::time::Instant::now(),
        }
        .spawn(shutdown.clone());
    }
    let flusher = {
        let store = store.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => return,
                }
                let store = store.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.flush_access()).await
                {
                    tracing::warn!(error = %e, "could not record access times");
                }
            }
        })
    };
    let server_task = tokio::spawn(server.run(shutdown.clone()));
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin, shutdown.clone()));
    if let Some(log) = access_log {
        let mut usr1 = usr1;
        tokio::spawn(async move {
            while usr1.recv().await.is_some() {
                tracing::info!("SIGUSR1: reopening the access log");
                log.reopen();
            }
        });
    }
    let first = stop_signals.recv().await;
    // The GRE data path stays up through the drain: packets of the
    // connections being drained still arrive through the router.
    let mut _gre_datapath = None;
    if let Some(started) = wccp {
        // Leave the service groups first: the routers stop redirecting to
        // us at once, so new connections go elsewhere during the drain.
        started.handle.stop().await;
        _gre_datapath = started.datapath;
    }
    let drain = engine.config.drain;
    // Listeners close first: a new connection is refused at once (and a
    // load balancer or a PC's retry goes elsewhere), while the responses
    // in flight, a download of a large package among them, run to their end.
    shutdown.cancel();
    let _ = server_task.await;
    tracing::info!(
        signal = first,
        connections = open_connections.count(),
        drain = %humantime::format_duration(drain),
        "draining: no new connections; waiting for the responses in flight (a second signal stops at once)"
    );
    tokio::select! {
        _ = open_connections.all_closed() => tracing::info!("drained: every connection closed"),
        _ = tokio::time::sleep(drain) => tracing::warn!(
            connections = open_connections.count(),
            "drain period over: closing the connections still open"
        ),
        second = stop_signals.recv() => tracing::warn!(
            signal = second,
            connections = open_connections.count(),
            "second signal: stopping now"
        ),
    }
    let _ = admin_task.await;
    let _ = flusher.await;
    tokio::select! {
        _ = engine.fills.checkpoint_all() => {}
        signal = stop_signals.recv() => tracing::warn!(
            signal,
            "another signal: stopping without recording the last fill progress (a restart resumes from the previous checkpoint)"
        ),
    }
    let _ = tokio::task::spawn_blocking(move || store.flush_access()).await;
    tracing::info!("stopped");
    Ok(())
}

/// SIGTERM and SIGINT: the first starts a drain, the next ends it.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?,
        })
    }

    /// Waits for the next one; its name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
