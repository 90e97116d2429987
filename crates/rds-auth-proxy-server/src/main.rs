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
    let flags = FlagOverrides {
        listen: cli.listen.clone().map(|address| ListenFlags { address: Some(address) }),
        log: (cli.log_format.is_some() || cli.log_level.is_some())
            .then(|| LogFlags { format: cli.log_format, level: cli.log_level.clone() }),
    };
    rds_auth_cli::config::load(&path, required, config::ENV_PREFIX, &flags)
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
    let (listen, server_config, discovery) = config::build(&loaded).unwrap_or_else(|e| usage_error(e));
    let log = &loaded.value.log;
    telemetry::init(log.format, &log.level).map_err(|e| miette::miette!(e))?;
    if loaded.value.cancel.key_files.is_empty() {
        warn!(
            "no cancel.key_files: cancel keys are sealed with a key of this process, so a cancel reaches \
             its query only through the replica that served the session"
        );
    }
    match rds_auth_cli::limits::raise_open_files() {
        Ok(limit) => info!(open_files = limit, "open-file limit"),
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
        let server_config = Arc::new(server_config);
        let stop = tokio_util::sync::CancellationToken::new();
        if let Some(plan) = discovery {
            let discovery = Arc::new(rds_auth_discovery::Discovery::new(plan.config).await);
            tokio::spawn(rds_auth_server::follow_discovery(
                server_config.clone(),
                discovery,
                plan.follow,
                stop.clone(),
            ));
        }
        let served = rds_auth_server::run(listener, server_config, shutdown_signal()).await.into_diagnostic();
        stop.cancel();
        served
    })
}

/// SIGTERM starts a graceful drain; SIGINT exits at once.
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
