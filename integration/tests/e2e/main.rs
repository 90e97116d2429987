//! End-to-end tests: real Postgres in containers, driven by real clients.
//!
//! One test binary, with a module per area. The tests need a Docker engine and the local
//! images: `cargo xtask test` builds both the binaries and the images, then runs everything;
//! `cargo xtask images` followed by `cargo test --workspace --test e2e` runs just these. A
//! missing engine or image fails the tests with a hint; nothing is skipped.
//!
//! - `standin`: the RDS stand-in accepts and refuses IAM tokens as RDS does, on both its
//!   listeners, and its password users log in with Postgres's own methods;
//! - `harness`: other containers reach the stand-in by its alias on the test network, and the
//!   harness cleans up and fails loudly;
//! - `proxies`: the whole path through both proxies, with psql and tokio-postgres;
//! - `refusals`: every refusal with its SQLSTATE and hint;
//! - `protocol`: hand-built packets for what no client here sends (3.2, GREASE, direct TLS,
//!   GSSENCRequest);
//! - `cancel`: query cancel from psql, tokio-postgres, psycopg and asyncpg, across two
//!   server-proxy replicas, with stale, forged and foreign keys dropped;
//! - `hostile`: a corpus of broken startups sent to both proxies, each answered with its
//!   SQLSTATE or closed, and a scripted list of open-relay attempts, each refused before a
//!   socket opens;
//! - `secrets`: a full session at TRACE level leaves no token or password in any log;
//! - `operations`: the server proxy as a host process: health endpoints, metrics, audit
//!   lines, SIGTERM and SIGHUP, connection limits, PROXY protocol, identities from STS;
//! - `reliability`: 500 sessions of pgbench for a minute, 1 000 sessions under a laptop's
//!   open-file limits, a slowloris of 1 000, a backend or a replica killed mid-session, an
//!   unreachable database, a database refusing TLS, and a rolling restart under load;
//! - `discovery`: RDS discovery against moto (no Docker; moto from `target/e2e-venv`) across two
//!   accounts and two regions, with tag rules, pagination, cluster endpoints and failures.

#![allow(clippy::unwrap_used, reason = "a test's helpers fail the test the same way its body does")]
#![allow(clippy::print_stderr, reason = "tests report what they measured in the test log")]

mod cancel;
mod discovered;
mod discovery;
mod harness;
mod hostile;
mod laptop;
mod operations;
mod protocol;
mod proxies;
mod refusals;
mod reliability;
mod secrets;
mod standin;
mod support;
