//! The RDS stand-in: what makes a local Postgres 15 accept RDS IAM auth tokens as RDS does.
//!
//! - [`config`]: the TOML file the harness writes and every subcommand reads;
//! - [`verify`](mod@verify): the token check, a pure function of the policy, the login user,
//!   the token text and the current time;
//! - [`pam`]: the `verify` subcommand's work for `pam_exec` (password on standard input, user in
//!   `PAM_USER`, one log line per attempt);
//! - [`front`]: the TLS front on port 5433 for tokens longer than `pam_exec` passes on;
//! - [`lifeline`]: the container's tie to the test process, so a container outlives no test
//!   binary by more than a moment.

pub mod config;
mod error;
pub mod front;
pub mod lifeline;
pub mod pam;
pub mod verify;

pub use crate::standin::config::Config;
pub use crate::standin::error::StandinError;
pub use crate::standin::verify::{Accepted, Policy, Refusal, verify};

/// The message Postgres (and so RDS) sends when PAM refuses a login, SQLSTATE 28000.
pub fn pam_failure_message(user: &str) -> String {
    format!("PAM authentication failed for user \"{user}\"")
}
