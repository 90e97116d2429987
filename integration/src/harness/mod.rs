//! The end-to-end harness: what the tests in `tests/e2e` build on.
//!
//! - [`TestPki`]: a private CA with helpers that write PEM files into a scratch directory under
//!   the target directory;
//! - [`StandIn`]: the RDS stand-in container (Postgres 15 checking IAM tokens as RDS does),
//!   either one per test binary ([`StandIn::shared`]) or one per caller ([`StandIn::start`]),
//!   with its ports, CA, endpoint names, AWS credentials and a token signer;
//! - [`Container`] and [`ContainerSpec`]: any other test container (a proxy, a network probe)
//!   from a local image, with files copied in, published ports, a network alias and a
//!   readiness line;
//! - [`pg`]: tokio-postgres over rustls, with channel binding, for clients that must verify the
//!   server as libpq's `verify-full` does;
//! - [`Psql`]: the real `psql`, for checks that should not depend on our own client code;
//! - [`host_server`]: the server proxy as a host process, for health, metrics, signals and
//!   resource checks;
//! - [`built_binary`]: the workspace binaries the last cargo build left.
//!
//! Docker rules: every container and network carries [`TEST_LABEL`], so `cargo xtask test`
//! removes leftovers; every Docker call runs on one long-lived runtime ([`docker_task`]),
//! because each `#[tokio::test]` has its own runtime and the Docker client's connections die
//! with the runtime that opened them; a missing engine or image fails with a hint
//! ([`check_docker`]), never a skip.

mod container;
mod docker;
mod error;
pub mod host_server;
pub mod moto;
mod paths;
pub mod pg;
mod pki;
pub mod proxies;
mod psql;
mod standin;

pub use crate::harness::container::{Container, ContainerSpec};
pub use crate::harness::docker::{
    TEST_LABEL, TEST_LABEL_KEY, check_docker, docker_task, ensure_internal_network, ensure_network,
};
pub use crate::harness::error::HarnessError;
pub use crate::harness::paths::{built_binary, scratch_dir, target_dir};
pub use crate::harness::pki::{CertFiles, TestPki};
pub use crate::harness::psql::{Psql, PsqlOutput};
pub use crate::harness::standin::{
    IMAGE, Listener, SESSION_ACCESS_KEY_ID, STATIC_ACCESS_KEY_ID, Signer, StandIn, StandInOptions,
};
