//! `cargo xtask setup`: what the other commands need on a fresh Debian machine, installed.
//!
//! Docker and the Rust toolchain (with a C compiler and linker, which it needs anyway) are
//! taken as given; the package names are Debian 12's (bookworm). Debian packages are installed with
//! apt-get when this runs as root on a machine that has it; otherwise the missing ones are
//! named with the command that installs them, and nothing is changed. mdBook, which Debian
//! does not package at the version the site is built with, comes from crates.io.
//!
//! `cargo xtask ci` and `cargo xtask demo` call this first, so the README's two commands work
//! on a fresh machine; `.ci/run` calls it on its own, then runs `cargo xtask ci`. The benchmark
//! installs nothing itself (`cargo xtask setup bench` does).

use anyhow::{Context, bail};
use xshell::{Shell, cmd};

use crate::docs::MDBOOK_VERSION;
use crate::step;

/// What every test needs besides Docker and Rust:
/// - mmdebstrap: the local Postgres and base images (no registry can be reached);
/// - postgresql-15, postgresql-client-15: pgbench and psql, which the end-to-end tests drive;
/// - ca-certificates: pip and cargo over TLS;
/// - python3-venv: the psycopg and asyncpg clients of the cancel tests, in target/e2e-venv;
/// - nix-bin: `cargo xtask nix` parses the .nix files and evaluates the flake against stubs;
/// - ruby: `cargo xtask dist` checks the Homebrew formula and runs its blocks;
/// - tmux: the picker test types into the client proxy on a terminal;
/// - procps: `kill`, with which the tests signal the proxies;
/// - git: the release tests commit into scratch repositories, and `dist` dates archives by the
///   last commit.
///
/// The versioned names are Debian 12's (bookworm).
pub(crate) const CI_PACKAGES: &[&str] = &[
    "mmdebstrap",
    "postgresql-15",
    "postgresql-client-15",
    "ca-certificates",
    "python3-venv",
    "nix-bin",
    "ruby",
    "tmux",
    "procps",
    "git",
];

/// What `cargo xtask bench` needs: pgbench, psql, pgbouncer (the peer it compares against),
/// the images, perf for the profiles and valgrind for `--callgrind`.
pub(crate) const BENCH_PACKAGES: &[&str] = &[
    "mmdebstrap",
    "postgresql-15",
    "postgresql-client-15",
    "pgbouncer",
    "linux-perf",
    "valgrind",
    "ca-certificates",
];

/// What the demo needs: the images, and psql for the line it prints.
pub(crate) const DEMO_PACKAGES: &[&str] = &["mmdebstrap", "postgresql-client-15", "ca-certificates"];

const HELP: &str = "\
cargo xtask setup [ci|demo|bench]

Installs what `cargo xtask ci` (the default), `cargo xtask demo` or `cargo xtask bench` needs
on a fresh Debian machine: Debian packages with apt-get when run as root, and mdBook with cargo install (ci
only). Docker and the Rust toolchain must already be there. Without root, it names the
missing packages and the command that installs them.
";

pub(crate) fn run(sh: &Shell, args: &[String]) -> anyhow::Result<()> {
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] | ["ci"] => for_ci(sh),
        ["demo"] => debian_packages(sh, DEMO_PACKAGES),
        ["bench"] => debian_packages(sh, BENCH_PACKAGES),
        ["-h" | "--help"] => {
            #[allow(clippy::print_stdout, reason = "help goes to stdout")]
            {
                print!("{HELP}");
            }
            Ok(())
        }
        other => {
            bail!("unexpected arguments {other:?} for `cargo xtask setup`; see `cargo xtask setup --help`")
        }
    }
}

/// Everything `cargo xtask ci` needs.
pub(crate) fn for_ci(sh: &Shell) -> anyhow::Result<()> {
    debian_packages(sh, CI_PACKAGES)?;
    mdbook(sh)
}

/// Installs the packages of `wanted` that are missing. On a machine without dpkg (not
/// Debian) it checks nothing: each command then names the tool it lacks.
pub(crate) fn debian_packages(sh: &Shell, wanted: &[&str]) -> anyhow::Result<()> {
    if cmd!(sh, "dpkg-query --version").quiet().ignore_stdout().ignore_stderr().run().is_err() {
        return Ok(());
    }
    let missing: Vec<&str> = wanted.iter().copied().filter(|package| !installed(sh, package)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let root = cmd!(sh, "id -u").quiet().read().is_ok_and(|uid| uid.trim() == "0");
    let apt = cmd!(sh, "apt-get --version").quiet().ignore_stdout().ignore_stderr().run().is_ok();
    let list = missing.join(" ");
    if !(root && apt) {
        bail!(
            "missing Debian packages: {list}\ninstall them with `sudo apt-get install -y {list}` and rerun"
        );
    }
    step(&format!("apt-get install {list}"));
    let _frontend = sh.push_env("DEBIAN_FRONTEND", "noninteractive");
    // A fresh machine may have no package lists yet.
    cmd!(sh, "apt-get update -qq").run().context("apt-get update failed")?;
    cmd!(sh, "apt-get install -y -qq --no-install-recommends {missing...}")
        .run()
        .with_context(|| format!("cannot install {list}"))?;
    Ok(())
}

fn installed(sh: &Shell, package: &str) -> bool {
    let format = "-f=${Status}";
    cmd!(sh, "dpkg-query -W {format} {package}")
        .quiet()
        .ignore_stderr()
        .read()
        .is_ok_and(|status| status.contains("install ok installed"))
}

/// mdBook at [`MDBOOK_VERSION`], with only the search feature, from crates.io.
fn mdbook(sh: &Shell) -> anyhow::Result<()> {
    let version = cmd!(sh, "mdbook --version").quiet().ignore_stderr().read().unwrap_or_default();
    if version.trim() == format!("mdbook v{MDBOOK_VERSION}") {
        return Ok(());
    }
    step(&format!("cargo install mdbook {MDBOOK_VERSION}"));
    cmd!(
        sh,
        "cargo install mdbook --locked --version {MDBOOK_VERSION} --no-default-features --features search"
    )
    .run()
    .context("cannot install mdbook")?;
    Ok(())
}
