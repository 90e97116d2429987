//! The end-to-end test crate: an RDS stand-in and the harness that runs it in containers.
//!
//! What it owns:
//! - [`standin`]: the code of the `rds-auth-standin` binary, which makes a Postgres 15 container
//!   check RDS IAM auth tokens the way RDS does. PAM's `pam_exec` calls `verify` for each login
//!   on port 5432, and `front` answers on port 5433 for tokens too long for `pam_exec`
//!   (session-credential tokens), then relays to Postgres. Both use the pure [`standin::verify`];
//! - [`harness`]: a test PKI, the stand-in container ([`harness::StandIn`]), a rustls connector
//!   for tokio-postgres, and a psql runner, shared by every test in `tests/e2e`;
//! - [`bench`]: what `cargo xtask bench` runs (`rds-auth-bench`): direct, pgbouncer and both
//!   proxies against the stand-in's Postgres, and the report in `docs/performance.md`;
//! - `docker/standin/`: the container's entrypoint, copied in when a container is created, so
//!   the image (`cargo xtask images`) never needs rebuilding when the stand-in changes.
//!
//! What it does not do: talk to AWS. The stand-in knows its access keys from its configuration
//! file and checks signatures by recomputing them; it does not ask STS about session tokens.
//! The tests need a Docker engine and the local images, and fail with a hint when either is
//! missing.

pub mod bench;
pub mod harness;
pub mod standin;
