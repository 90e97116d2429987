//! The harness's one error type. Each variant that a missing prerequisite causes says how to
//! fix it.

use std::io;
use std::path::PathBuf;

/// Setting up or talking to a test container failed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(
        "no Docker engine is reachable ({reason}); the end-to-end tests need one: start dockerd or \
         set DOCKER_HOST, check that `docker info` works, then run `cargo xtask images`"
    )]
    DockerUnreachable { reason: String },
    #[error("the image {image} is missing; build it with `cargo xtask images` (`cargo xtask test` does too)")]
    ImageMissing { image: String },
    #[error(
        "{name} is not built (looked in {looked_in:?}); run `cargo xtask test` or \
         `cargo build --workspace --all-targets`"
    )]
    BinaryMissing { name: String, looked_in: Vec<PathBuf> },
    #[error("docker: {0}")]
    Docker(String),
    #[error("container {name} did not become ready: {reason}\n--- container log ---\n{log}")]
    ContainerStart { name: String, reason: String, log: String },
    #[error("container {name} never logged {needle:?}\n--- container log ---\n{log}")]
    ContainerLog { name: String, needle: String, log: String },
    #[error(transparent)]
    Cert(#[from] rds_auth_io::certgen::CertError),
    #[error(transparent)]
    Tls(#[from] rds_auth_io::tls::TlsError),
    #[error(transparent)]
    Standin(#[from] crate::standin::StandinError),
    #[error("{0:?} is neither a DNS name nor an IP address")]
    ServerName(String),
    #[error("cannot sign a token: {0}")]
    Token(#[from] rds_auth_token::TokenError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl HarnessError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> HarnessError {
        let what = what.into();
        move |source| HarnessError::Io { what, source }
    }
}
