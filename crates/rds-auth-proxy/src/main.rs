//! `rds-auth-proxy`: the client proxy, run on a laptop with AWS credentials.
//!
//! This binary reads configuration, builds the targets and their credential providers, binds
//! the local listeners, prints how to connect, and calls `rds_auth_client::run`.

mod catalog;
mod config;
mod connect;
mod doctor;
mod import;
mod list;
mod picker;
mod workspace;

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};
use miette::IntoDiagnostic;
use rds_auth_cli::config::{ConfigError, Loaded};
use rds_auth_cli::telemetry::LogFormat;

use crate::config::{AwsFlags, FlagOverrides, LogFlags, Settings};

/// The client proxy of rds-auth-proxy: reach private RDS PostgreSQL with your IAM identity.
#[derive(Debug, Parser)]
#[command(name = "rds-auth-proxy", version, about)]
struct Cli {
    /// The configuration file (default: ~/.config/rds-auth-proxy/config.toml).
    #[arg(long, global = true, value_name = "PATH", env = "RDS_AUTH_PROXY_CONFIG")]
    config: Option<PathBuf>,
    /// The AWS profile that signs tokens, overriding `aws.profile`.
    #[arg(long, global = true, value_name = "NAME")]
    profile: Option<String>,
    /// text or json, overriding `log.format`.
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// A log filter such as info or debug, overriding `log.level`.
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open a local listener per target and proxy connections until Ctrl-C.
    Connect(connect::ConnectArgs),
    /// List the targets: static ones and those discovery found.
    List(list::ListArgs),
    /// Check the configuration, credentials, clock, discovery and the path to a target.
    Doctor(doctor::DoctorArgs),
    /// Print the effective configuration, secrets redacted, or import an old one.
    Config(ConfigArgs),
    /// Print an IAM token, as `aws rds generate-db-auth-token` does.
    Token(connect::TokenArgs),
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
struct ConfigArgs {
    #[command(subcommand)]
    action: Option<ConfigAction>,
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Convert the Go predecessor's YAML configuration into this proxy's TOML.
    Import(import::ImportArgs),
}

/// Configuration and usage errors exit with 64 (EX_USAGE); runtime failures with 1.
const EX_USAGE: i32 = 64;

fn main() -> miette::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Connect(args) => connect::run(&load(&cli).unwrap_or_else(|e| usage_error(e)), args),
        Command::Config(ConfigArgs { action: Some(ConfigAction::Import(args)) }) => import::run(args),
        Command::Config(ConfigArgs { action: None }) => {
            let loaded = load(&cli).unwrap_or_else(|e| usage_error(e));
            #[allow(clippy::print_stdout, reason = "printing the configuration is this command's job")]
            {
                println!("{}", serde_json::to_string_pretty(&loaded.value).into_diagnostic()?);
            }
            Ok(())
        }
        Command::Token(args) => connect::token(&load(&cli).unwrap_or_else(|e| usage_error(e)), args),
        Command::List(args) => list::run(&load(&cli).unwrap_or_else(|e| usage_error(e)), args),
        Command::Doctor(args) => doctor::run(&load(&cli).unwrap_or_else(|e| usage_error(e)), args),
        Command::Completions { shell } => {
            rds_auth_cli::shell::completions(Cli::command(), *shell, &mut std::io::stdout());
            Ok(())
        }
        Command::Manpages { dir } => {
            rds_auth_cli::shell::manpages(Cli::command(), dir).into_diagnostic()?;
            Ok(())
        }
    }
}

fn load(cli: &Cli) -> Result<Loaded<Settings>, ConfigError> {
    let (path, required) = match &cli.config {
        Some(path) => (path.clone(), true),
        None => (config::default_path(), false),
    };
    let flags = FlagOverrides {
        log: (cli.log_format.is_some() || cli.log_level.is_some())
            .then(|| LogFlags { format: cli.log_format, level: cli.log_level.clone() }),
        aws: cli.profile.clone().map(|profile| AwsFlags { profile: Some(profile) }),
    };
    rds_auth_cli::config::load(&path, required, config::ENV_PREFIX, &flags)
}

pub(crate) fn usage_error(error: ConfigError) -> ! {
    #[allow(clippy::print_stderr, reason = "the diagnostic is for the person who ran the command")]
    {
        eprintln!("{:?}", miette::Report::new(error));
    }
    std::process::exit(EX_USAGE)
}
