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
    /// The commands below take their own arguments, which their modules parse.
    Bench(Vec<String>),
    Fuzz(Vec<String>),
    Dist(Vec<String>),
    Release(Vec<String>),
    Docs(Vec<String>),
    Nix(Vec<String>),
    Setup(Vec<String>),
}

const HELP: &str = "\
cargo xtask <command>

  ci       everything CI runs: fmt check, clippy -D warnings, tidy, dependency
           direction checks, and every test (after `setup`)
  setup    install what ci (or `setup demo`: the demo) needs on a fresh Debian machine
  fmt      format the workspace
  lint     clippy on all targets with -D warnings
  tidy     crate hygiene: lints, versions, //! headers, no dbg!/todo!
  deps     dependency-direction checks (cargo tree -i)
  test     build everything, build the local images, and run every test
  images   build the local container images the end-to-end tests run
           (mmdebstrap | docker import; skipped when the recipe is unchanged)
  demo     explain and run the local demo of the whole path
  bench    the benchmark report: direct, pgbouncer and rds-auth-proxy, side by side
           (docs/performance.md; `cargo xtask bench --help`)
  fuzz     run the cargo-fuzz targets for a while (`--time SECONDS`, needs nightly)
  dist     release archives with completions and man pages, sha256 sums, and the
           Homebrew formula
  release  next version and changelog from conventional commits (`--dry-run`)
  docs     build the documentation site and check its links
  nix      the Nix checks that run without nixpkgs: parse, and evaluate the flake's shape
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
        "bench" => Ok(Command::Bench(rest)),
        "fuzz" => Ok(Command::Fuzz(rest)),
        "dist" => Ok(Command::Dist(rest)),
        "release" => Ok(Command::Release(rest)),
        "docs" => Ok(Command::Docs(rest)),
        "nix" => Ok(Command::Nix(rest)),
        "setup" => Ok(Command::Setup(rest)),
        other => bail!("unknown command {other:?}; run `cargo xtask --help`"),
    }
}
