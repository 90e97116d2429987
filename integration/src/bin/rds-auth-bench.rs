//! `rds-auth-bench`, what `cargo xtask bench` runs: direct, pgbouncer and rds-auth-proxy
//! against one Postgres 15, and the report. The flags are in `cargo xtask bench --help`;
//! the work is in `rds_auth_integration::bench`.

use std::process::ExitCode;

use rds_auth_integration::bench::{self, Options};

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => bench::run(options).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            bench::say(&format!("failed: {e:#}"));
            ExitCode::FAILURE
        }
    }
}
