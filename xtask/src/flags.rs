//! Command-line flags of `cargo xtask`.

use anyhow::bail;

#[derive(Debug)]
pub(crate) enum Command {
    Help,
    Ci,
    Fmt,
    Lint,
    Tidy,
    Deps,
    Test,
    Images,
    Demo,
}

const HELP: &str = "\
cargo xtask <command>

  ci       everything CI runs: fmt check, clippy -D warnings, tidy, dependency
           direction checks, and every test
  fmt      format the workspace
  lint     clippy on all targets with -D warnings
  tidy     crate hygiene: lints, versions, //! headers, no dbg!/todo!
  deps     dependency-direction checks (cargo tree -i)
  test     build everything, build the local images, and run every test
  images   build the local container images the end-to-end tests run
           (mmdebstrap | docker import; skipped when the recipe is unchanged)
  demo     explain and run the local demo of the whole path
";

pub(crate) fn print_help() {
    #[allow(clippy::print_stdout, reason = "help goes to stdout")]
    {
        print!("{HELP}");
    }
}

pub(crate) fn parse(args: Vec<String>) -> anyhow::Result<Command> {
    let mut args = args.into_iter();
    let Some(command) = args.next() else { return Ok(Command::Help) };
    let rest: Vec<String> = args.collect();
    let no_args = |c: Command| -> anyhow::Result<Command> {
        if let Some(extra) = rest.first() {
            bail!("unexpected argument {extra:?} for `cargo xtask {command}`");
        }
        Ok(c)
    };
    match command.as_str() {
        "-h" | "--help" | "help" => Ok(Command::Help),
        "ci" => no_args(Command::Ci),
        "fmt" => no_args(Command::Fmt),
        "lint" => no_args(Command::Lint),
        "tidy" => no_args(Command::Tidy),
        "deps" => no_args(Command::Deps),
        "test" => no_args(Command::Test),
        "images" => no_args(Command::Images),
        "demo" => no_args(Command::Demo),
        other => bail!("unknown command {other:?}; run `cargo xtask --help`"),
    }
}
