//! `cargo xtask fuzz`: the cargo-fuzz targets in `integration/fuzz`, each for a while.
//!
//! cargo-fuzz needs a nightly toolchain for its sanitizer flags. None can be downloaded here,
//! so this uses the one `rustup toolchain list` shows and stops with a clear message when there
//! is none. The same entry points run as proptest cases in every CI run; this is the longer,
//! coverage-guided search. Corpora and crashes stay in `integration/fuzz/{corpus,artifacts}`
//! (ignored by git); a crash fails the command with the path of its input.

use std::time::Instant;

use anyhow::{Context, bail};
use xshell::{Shell, cmd};

use crate::{project_root, step};

const HELP: &str = "\
cargo xtask fuzz [--time SECONDS] [--target NAME]...

Runs each cargo-fuzz target of integration/fuzz for SECONDS (default 60): codec (every wire
decoder), startup (the startup rewrite of both proxies), token (the IAM token and identity proof
parsers) and handshake (the startup negotiation both proxies run, then their checks). Needs a
nightly toolchain (rustup toolchain list) and cargo-fuzz (cargo install cargo-fuzz).";

const TARGETS: &[&str] = &["codec", "startup", "token", "handshake"];

pub(crate) fn run(sh: &Shell, args: &[String]) -> anyhow::Result<()> {
    let mut seconds: u64 = 60;
    let mut only: Vec<String> = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                #[allow(clippy::print_stdout, reason = "help goes to stdout")]
                {
                    println!("{HELP}");
                }
                return Ok(());
            }
            "--time" => {
                let value = args.next().context("--time needs a number of seconds")?;
                seconds =
                    value.parse().with_context(|| format!("--time {value:?} is not a number of seconds"))?;
            }
            "--target" => {
                let name = args.next().context("--target needs a name")?;
                if !TARGETS.contains(&name.as_str()) {
                    bail!("unknown fuzz target {name:?}; the targets are {}", TARGETS.join(", "));
                }
                only.push(name.clone());
            }
            other => bail!("unexpected argument {other:?} for `cargo xtask fuzz`\n\n{HELP}"),
        }
    }
    let toolchains =
        cmd!(sh, "rustup toolchain list").quiet().read().context("rustup is needed to find a nightly")?;
    let Some(nightly) = toolchains
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .find(|name| name.starts_with("nightly"))
        .map(str::to_owned)
    else {
        bail!(
            "cargo-fuzz needs a nightly toolchain and `rustup toolchain list` shows none; none can be downloaded here"
        );
    };
    if cmd!(sh, "cargo fuzz --version").quiet().ignore_stdout().ignore_stderr().run().is_err() {
        bail!("cargo-fuzz is not installed: cargo install cargo-fuzz --locked");
    }
    let fuzz_dir = project_root().join("integration/fuzz");
    let targets: Vec<&str> =
        if only.is_empty() { TARGETS.to_vec() } else { only.iter().map(String::as_str).collect() };
    let max_time = format!("-max_total_time={seconds}");
    for target in targets {
        step(&format!("fuzz {target} for {seconds} s ({nightly})"));
        let started = Instant::now();
        let corpus = fuzz_dir.join("corpus").join(target);
        sh.create_dir(&corpus)?;
        cmd!(
            sh,
            "rustup run {nightly} cargo fuzz run --fuzz-dir {fuzz_dir} {target} {corpus} -- {max_time} -max_len=4096 -print_final_stats=1"
        )
        .run()
        .with_context(|| {
            format!("fuzz target {target} failed: the crashing input is under {}", fuzz_dir.join("artifacts").join(target).display())
        })?;
        #[allow(clippy::print_stderr, reason = "xtask reports on stderr")]
        {
            eprintln!("fuzz {target}: no crash in {:.0?}", started.elapsed());
        }
    }
    Ok(())
}
