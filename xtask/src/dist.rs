//! `cargo xtask dist`.

use xshell::Shell;

pub(crate) fn run(_sh: &Shell, _args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("`cargo xtask dist` is not implemented yet")
}

/// The part of this command that `cargo xtask ci` runs.
pub(crate) fn check(_sh: &Shell) -> anyhow::Result<()> {
    Ok(())
}
