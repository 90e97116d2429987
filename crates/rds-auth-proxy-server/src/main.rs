//! `rds-auth-proxy-server`: the server proxy, run in the VPC next to the databases.
//!
//! This binary only reads configuration, sets up logging and signals, and calls
//! `rds_auth_server::run`; everything testable lives in the library.

mod certs;
mod config;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{CommandFactory, Parser, Subcommand};
use miette::IntoDiagnostic;
use rds_auth_cli::config::{ConfigError, Loaded};
use rds_auth_cli::telemetry::{self, LogFormat};
use tracing::{info, warn};

use crate::config::{FlagOverrides, ListenFlags, LogFlags, Settings};

/// The server proxy of rds-auth-proxy: mutual TLS in, verified TLS and IAM to RDS out.
#[derive(Debug, Parser)]
#[command(name = "rds-auth-proxy-server", version, about)]
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, value_name = "PATH", env = "RDS_AUTH_SERVER_CONFIG")]
    config: Option<PathBuf>,
    /// The address to listen on, overriding `listen.address`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// text or json, overriding `log.format`.
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// A log filter such as info or debug, overriding `log.level`.
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server proxy (the default).
    Run,
    /// Check the configuration and print it, without binding any port.
    CheckConfig,
    /// Write a development CA, a server certificate, and a client certificate per user.
    GenCerts(certs::GenCerts),
    /// Probe the health endpoint, for container health checks in images with no shell or curl:
    /// exits 0 when it answers 200.
    Healthcheck(HealthcheckArgs),
    /// Print the completion script for a shell: bash, zsh, fish, elvish or powershell.
    Completions {
        /// The shell to complete for.
        shell: rds_auth_cli::shell::Shell,
    },
    /// Write the man pages into a directory (used when packaging).
    #[command(hide = true)]
    Manpages {
        /// Where the pages go.
        dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct HealthcheckArgs {
    /// The endpoint to probe.
    #[arg(long, default_value = "/readiness", value_parser = ["/startup", "/liveness", "/readiness"])]
    path: String,
    /// The health server, overriding `health.address` (0.0.0.0 and [::] are probed on loopback).
    #[arg(long, value_name = "ADDR")]
    address: Option<std::net::SocketAddr>,
    /// How long to wait for an answer.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
}

/// Configuration and usage errors exit with 64 (EX_USAGE); runtime failures with 1.
const EX_USAGE: i32 = 64;

fn main() -> miette::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::GenCerts(args)) => certs::run(args),
        Some(Command::Completions { shell }) => {
            rds_auth_cli::shell::completions(Cli::command(), *shell, &mut std::io::stdout());
            Ok(())
        }
        Some(Command::Manpages { dir }) => {
            rds_auth_cli::shell::manpages(Cli::command(), dir).into_diagnostic()?;
            Ok(())
        }
        Some(Command::Healthcheck(args)) => healthcheck(&cli, args),
        Some(Command::CheckConfig) => {
            let loaded = load(&cli).unwrap_or_else(|e| usage_error(e));
            let _ = config::build(&loaded).unwrap_or_else(|e| usage_error(e));
            #[allow(clippy::print_stdout, reason = "printing the configuration is this command's job")]
            {
                println!("{}", serde_json::to_string_pretty(&loaded.value).into_diagnostic()?);
            }
            Ok(())
        }
        Some(Command::Run) | None => run(&cli),
    }
}

fn load(cli: &Cli) -> Result<Loaded<Settings>, ConfigError> {
    let (path, required) = match &cli.config {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from(config::DEFAULT_PATH), false),
    };
    rds_auth_cli::config::load(&path, required, config::ENV_PREFIX, &load_flags(cli))
}

fn load_flags(cli: &Cli) -> FlagOverrides {
    FlagOverrides {
        listen: cli.listen.clone().map(|address| ListenFlags { address: Some(address) }),
        log: (cli.log_format.is_some() || cli.log_level.is_some())
            .then(|| LogFlags { format: cli.log_format, level: cli.log_level.clone() }),
    }
}

fn usage_error(error: ConfigError) -> ! {
    #[allow(clippy::print_stderr, reason = "the diagnostic is for the person who ran the command")]
    {
        eprintln!("{:?}", miette::Report::new(error));
    }
    std::process::exit(EX_USAGE)
}

fn run(cli: &Cli) -> miette::Result<()> {
    let loaded = load(cli).unwrap_or_else(|e| usage_error(e));
    let config::Built { listen, health, config: server_config, discovery } =
        config::build(&loaded).unwrap_or_else(|e| usage_error(e));
    let log = &loaded.value.log;
    telemetry::init(log.format, &log.level).map_err(|e| miette::miette!(e))?;
    if loaded.value.cancel.key_files.is_empty() {
        warn!(
            "no cancel.key_files: cancel keys are sealed with a key of this process, so a cancel reaches \
             its query only through the replica that served the session"
        );
    }
    match rds_auth_cli::limits::raise_open_files() {
        Ok(limit) => {
            info!(open_files = limit, "open-file limit");
            // Each session holds two sockets; keep room for the health server and discovery.
            let needed = 2 * server_config.limits.max_connections as u64 + 64;
            if limit < needed {
                warn!(
                    open_files = limit,
                    max_connections = server_config.limits.max_connections,
                    "the open-file limit is below what limits.max_connections needs (two per session): raise it (ulimit -n) or lower limits.max_connections"
                );
            }
        }
        Err(e) => warn!(error = %e, "cannot raise the open-file limit"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().into_diagnostic()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
            miette::miette!(
                help = "choose another listen.address, or stop whatever holds the port",
                "cannot listen on {listen}: {e}"
            )
        })?;
        let health_listener = match health {
            Some(address) => Some(tokio::net::TcpListener::bind(address).await.map_err(|e| {
                miette::miette!(
                    help = "choose another health.address, or set health.enabled = false",
                    "cannot listen on {address} for health checks: {e}"
                )
            })?),
            None => None,
        };
        let server_config = Arc::new(server_config);
        let stop = tokio_util::sync::CancellationToken::new();
        if let Some(listener) = health_listener {
            tokio::spawn(rds_auth_server::serve_health(listener, server_config.clone(), stop.clone()));
        }
        if let Some(plan) = discovery {
            let discovery = Arc::new(rds_auth_discovery::Discovery::new(plan.config).await);
            tokio::spawn(rds_auth_server::follow_discovery(
                server_config.clone(),
                discovery,
                plan.follow,
                stop.clone(),
            ));
        }
        tokio::spawn(reload_on_hangup(
            cli.config.clone(),
            load_flags(cli),
            loaded.value.clone(),
            server_config.clone(),
        ));
        let served = rds_auth_server::run(listener, server_config, shutdown_signal()).await.into_diagnostic();
        stop.cancel();
        served
    })
}

/// SIGHUP reloads the listener's certificates and the static targets, for new connections;
/// open sessions go on untouched. A configuration that does not validate changes nothing.
async fn reload_on_hangup(
    path: Option<PathBuf>,
    flags: config::FlagOverrides,
    mut current: Settings,
    server: Arc<rds_auth_server::ServerConfig>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        warn!("cannot install the SIGHUP handler: reloading needs a restart");
        return;
    };
    while hangup.recv().await.is_some() {
        let (path, required) = match &path {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(config::DEFAULT_PATH), false),
        };
        let reloaded = rds_auth_cli::config::load(&path, required, config::ENV_PREFIX, &flags)
            .and_then(|loaded| config::reloadable(&loaded).map(|parts| (loaded, parts)));
        match reloaded {
            Ok((loaded, config::Reloadable { tls, targets })) => {
                if tls.is_some() != server.tls().is_some() {
                    warn!("reload refused: listen.tls cannot change without a restart");
                    server.metrics.record_reload(false);
                    continue;
                }
                let needs_restart = config::restart_only_changes(&current, &loaded.value);
                if !needs_restart.is_empty() {
                    warn!(keys = %needs_restart.join(", "), "these changes take effect only after a restart");
                }
                let count = targets.len();
                server.reload(tls, targets);
                server.metrics.record_reload(true);
                info!(static_targets = count, "configuration reloaded: certificates and targets");
                current = loaded.value;
            }
            Err(error) => {
                server.metrics.record_reload(false);
                warn!(error = %error, "reload failed: keeping the running configuration");
            }
        }
    }
}

fn healthcheck(cli: &Cli, args: &HealthcheckArgs) -> miette::Result<()> {
    let address = match args.address {
        Some(address) => address,
        None => {
            let loaded = load(cli).unwrap_or_else(|e| usage_error(e));
            loaded.value.health.address.parse().map_err(|_| {
                miette::miette!(
                    help = "pass --address",
                    "health.address {:?} is not an address",
                    loaded.value.health.address
                )
            })?
        }
    };
    // A wildcard bind is probed on loopback, which it includes.
    let address = match address.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, address.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, address.port()))
        }
        _ => address,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().into_diagnostic()?;
    runtime
        .block_on(rds_auth_server::probe(address, &args.path, args.timeout))
        .map_err(|e| miette::miette!("health check of http://{address}{} failed: {e}", args.path))
}

/// SIGTERM starts a graceful drain (readiness fails, the listener stays open for
/// `shutdown.min_delay`, then sessions get up to `shutdown.max_delay`); SIGINT exits at once.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        warn!("cannot install signal handlers: only a kill will stop the proxy");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: draining"),
        _ = int.recv() => {
            info!("SIGINT: exiting now");
            std::process::exit(130);
        }
    }
}
