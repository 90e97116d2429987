//! `rds-auth-standin`: the RDS stand-in's processes inside the Postgres test container.
//!
//! ```text
//! rds-auth-standin verify   --config FILE   pam_exec's check: token on stdin, user in PAM_USER
//! rds-auth-standin front    --config FILE   the TLS front for long (session) tokens
//! rds-auth-standin lifeline --config FILE   returns once the test process lets go
//! ```
//!
//! The work lives in `rds_auth_integration::standin`; this file reads arguments and maps
//! results to exit statuses. `verify` exits 0 to accept and 1 to refuse, as pam_exec expects.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use rds_auth_integration::standin::{Config, StandinError, front, lifeline, pam};
use tokio::net::TcpListener;

const USAGE: &str = "usage: rds-auth-standin <verify|front|lifeline> --config FILE";

/// `EX_USAGE`: the command line was wrong.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, config_path) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(message) => {
            report(&format!("{message}\n{USAGE}"));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let config = match Config::load(&config_path) {
        Ok(config) => config,
        Err(e) => {
            report(&e.to_string());
            // For pam_exec any failure refuses; 1 says so.
            return ExitCode::FAILURE;
        }
    };
    match command.as_str() {
        "verify" => verify(&config),
        "front" => serve(front_main(config)),
        "lifeline" => serve(lifeline_main(config)),
        other => {
            report(&format!("unknown command {other:?}\n{USAGE}"));
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn parse_args(args: &[String]) -> Result<(String, PathBuf), String> {
    match args {
        [command, flag, path] if flag == "--config" => Ok((command.clone(), PathBuf::from(path))),
        _ => Err(format!("unexpected arguments {args:?}")),
    }
}

fn verify(config: &Config) -> ExitCode {
    let mut stdin = Vec::new();
    // A read error leaves whatever arrived, which then fails the check.
    let _ = std::io::stdin().take(pam::MAX_STDIN as u64).read_to_end(&mut stdin);
    let user = std::env::var("PAM_USER").ok();
    match pam::check_login(config, user.as_deref(), &stdin, SystemTime::now()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn serve(work: impl Future<Output = Result<(), StandinError>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            report(&format!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e.to_string());
            ExitCode::FAILURE
        }
    }
}

async fn front_main(config: Config) -> Result<(), StandinError> {
    let listener = listen(config.endpoint.front_port).await?;
    front::run(listener, &config).await
}

async fn lifeline_main(config: Config) -> Result<(), StandinError> {
    let listener = listen(config.lifeline.port).await?;
    let end = lifeline::run(listener, Duration::from_secs(config.lifeline.first_contact_secs)).await?;
    report(&format!("lifeline: {end:?}"));
    Ok(())
}

async fn listen(port: u16) -> Result<TcpListener, StandinError> {
    let addr = format!("0.0.0.0:{port}");
    TcpListener::bind(&addr).await.map_err(|source| StandinError::Listen { addr, source })
}

fn report(message: &str) {
    #[allow(clippy::print_stderr, reason = "the stand-in's diagnostics go to the container log")]
    {
        eprintln!("rds-auth-standin: {message}");
    }
}
