//! `cargo xtask nix`: the Nix checks that run without nixpkgs.
//!
//! nixpkgs, crane and rust-overlay cannot be downloaded where CI runs, so nothing is built
//! here. What can be checked is (`../shared/research/feasibility.md` §7):
//!
//! - every `.nix` file parses (`nix-instantiate --parse`, Debian's `nix-bin`);
//! - flake.nix's outputs have the expected shape and hand the expected arguments to nixpkgs
//!   and crane, evaluated with the stand-ins in `nix/tests/stubs` as inputs: once by calling
//!   the outputs function directly (`nix/tests/shape.nix`), and once through the flake
//!   machinery, with the stubs locked in as the inputs of a scratch copy, where
//!   `nix flake check --no-build` also validates every output's type.
//!
//! The expectations live in `nix/tests/expect.nix`. Both evaluations run on a copy of the
//! files the flake reads, under `target/nix-check`, so that no path can pull `target/` into
//! the Nix store. What remains for a machine with nixpkgs: `docs/releasing.md`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use xshell::{Shell, cmd};

use crate::step;

/// The files and directories the flake and its expectations read, copied for evaluation.
const FLAKE_FILES: &[&str] = &[
    "flake.nix",
    "nix",
    "Cargo.toml",
    "Cargo.lock",
    "rust-toolchain.toml",
    "docs/configuration.md",
    "integration/docker",
];

const NIX_FEATURES: [&str; 4] =
    ["--extra-experimental-features", "nix-command", "--extra-experimental-features", "flakes"];

pub(crate) fn run(sh: &Shell, args: &[String]) -> anyhow::Result<()> {
    if let Some(arg) = args.first() {
        if arg == "-h" || arg == "--help" {
            #[allow(clippy::print_stdout, reason = "help goes to stdout")]
            {
                println!(
                    "cargo xtask nix: parse every .nix file and check the flake's outputs against stubs"
                );
            }
            return Ok(());
        }
        bail!("unexpected argument {arg:?} for `cargo xtask nix`");
    }
    check(sh)
}

/// The part of this command that `cargo xtask ci` runs: all of it.
pub(crate) fn check(sh: &Shell) -> anyhow::Result<()> {
    step("nix: parse, and evaluate the flake against stubs");
    for tool in ["nix-instantiate", "nix"] {
        cmd!(sh, "{tool} --version").quiet().ignore_stdout().run().with_context(|| {
            format!(
                "`{tool}` was not found: install Debian's nix-bin (`apt-get install nix-bin`; `cargo xtask setup` does)"
            )
        })?;
    }

    let root = crate::project_root();
    let files = nix_files(&root)?;
    for file in &files {
        let out =
            cmd!(sh, "nix-instantiate --parse {file}").quiet().ignore_stdout().ignore_status().output()?;
        ensure!(
            out.status.success(),
            "{} does not parse:\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let scratch = root.join("target/nix-check");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).with_context(|| format!("removing {}", scratch.display()))?;
    }
    for name in FLAKE_FILES {
        copy_tree(&root.join(name), &scratch.join(name))?;
    }

    let direct = {
        let _dir = sh.push_dir(&scratch);
        nix_output(cmd!(sh, "nix-instantiate --eval --strict --json nix/tests/shape.nix"))?
    };

    let flake = format!("path:{}", scratch.display());
    let stubs = scratch.join("nix/tests/stubs");
    let overrides: Vec<String> = ["nixpkgs", "crane", "rust-overlay"]
        .iter()
        .flat_map(|input| {
            ["--override-input".to_owned(), (*input).to_owned(), format!("path:{}/{input}", stubs.display())]
        })
        .collect();
    // The lock file is the scratch copy's: it pins the stubs, and never reaches the repository.
    nix_output(cmd!(sh, "nix {NIX_FEATURES...} flake lock {overrides...} {flake}"))?;
    nix_output(cmd!(sh, "nix {NIX_FEATURES...} flake check --no-build {flake}"))?;
    let expression = format!(
        "let f = builtins.getFlake \"{flake}\"; root = /. + builtins.unsafeDiscardStringContext f.outPath; \
         in import (root + \"/nix/tests/expect.nix\") {{ inherit root; outputs = f.outputs; flake = import (root + \"/flake.nix\"); }}"
    );
    let via_flake = nix_output(cmd!(sh, "nix {NIX_FEATURES...} eval --json --impure --expr {expression}"))?;
    ensure!(
        direct == via_flake,
        "the two evaluations of the flake disagree:\n  direct: {direct}\n  flake:  {via_flake}"
    );

    #[allow(clippy::print_stderr, reason = "xtask reports on stderr")]
    {
        eprintln!(
            "{} .nix files parse; the flake's outputs meet nix/tests/expect.nix: {direct}",
            files.len()
        );
        if direct.contains("placeholder") {
            eprintln!(
                "note: the RDS bundle's hash in nix/rds-ca.nix is still lib.fakeHash; docs/releasing.md says how to pin it"
            );
        }
    }
    Ok(())
}

/// flake.nix and every `.nix` file under `nix/`, sorted.
fn nix_files(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = vec![root.join("flake.nix")];
    let mut dirs = vec![root.join("nix")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "nix") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Runs a Nix command and returns its stdout; on failure, the error carries Nix's stderr.
fn nix_output(command: xshell::Cmd<'_>) -> anyhow::Result<String> {
    let shown = command.to_string();
    let out = command.quiet().ignore_status().output()?;
    if !out.status.success() {
        bail!("`{shown}` failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// Copies a file, or a directory with everything under it.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
    } else {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    }
    Ok(())
}
