//! `rds-auth-proxy config import OLD.yaml`: converts the Go predecessor's YAML configuration.

use std::path::PathBuf;

/// Arguments of `config import`.
#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// The predecessor's YAML configuration file.
    pub(crate) path: PathBuf,
}

pub(crate) fn run(args: &ImportArgs) -> miette::Result<()> {
    Err(miette::miette!("config import of {} is not implemented yet", args.path.display()))
}
