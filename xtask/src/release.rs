//! `cargo xtask release`.

use xshell::Shell;

pub(crate) fn run(_sh: &Shell, _args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("`cargo xtask release` is not implemented yet")
}
