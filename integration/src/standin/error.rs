//! The stand-in's one error type, for everything that is not a refused token.

use std::io;
use std::path::PathBuf;

/// Starting or running a stand-in subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum StandinError {
    #[error("cannot read {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid configuration {path}: {message}")]
    ParseConfig { path: PathBuf, message: String },
    #[error("cannot write the configuration: {0}")]
    WriteConfig(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Tls(#[from] rds_auth_io::tls::TlsError),
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}
