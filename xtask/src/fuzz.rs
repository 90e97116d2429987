//! `cargo xtask fuzz`.

use xshell::Shell;

pub(crate) fn run(_sh: &Shell, _args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("`cargo xtask fuzz` is not implemented yet")
}
