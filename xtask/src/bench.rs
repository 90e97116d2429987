//! `cargo xtask bench`.

use xshell::Shell;

pub(crate) fn run(_sh: &Shell, _args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("`cargo xtask bench` is not implemented yet")
}
