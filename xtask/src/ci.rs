//! The checks CI runs, one function per step, and `ci` which runs them all in order.

use anyhow::{Context, bail, ensure};
use xshell::{Shell, cmd};

use crate::{images, step};

/// Everything, in the order a failure is cheapest to find.
pub(crate) fn ci(sh: &Shell) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    crate::setup::for_ci(sh)?;
    fmt_check(sh)?;
    tidy(sh)?;
    deps(sh)?;
    lint(sh)?;
    crate::nix::check(sh)?;
    crate::docs::check(sh)?;
    test(sh)?;
    crate::dist::check(sh)?;
    step(&format!("ci passed in {:.0?}", started.elapsed()));
    Ok(())
}

pub(crate) fn fmt(sh: &Shell) -> anyhow::Result<()> {
    cmd!(sh, "cargo fmt --all").run()?;
    Ok(())
}

fn fmt_check(sh: &Shell) -> anyhow::Result<()> {
    step("cargo fmt --check");
    cmd!(sh, "cargo fmt --all --check").run().context("formatting differs: run `cargo xtask fmt`")?;
    Ok(())
}

pub(crate) fn lint(sh: &Shell) -> anyhow::Result<()> {
    step("cargo clippy -D warnings");
    cmd!(sh, "cargo clippy --workspace --all-targets --locked -- -D warnings").run()?;
    Ok(())
}

/// Builds every target with one workspace-wide command, so features unify once and the
/// binaries the end-to-end tests run are the ones just compiled, builds the local images, then
/// runs every test. Test containers left behind by an earlier run, or by this one, are removed.
pub(crate) fn test(sh: &Shell) -> anyhow::Result<()> {
    step("cargo build --workspace --all-targets");
    cmd!(sh, "cargo build --workspace --all-targets --locked").run()?;
    images::build(sh)?;
    images::server_image(sh, "debug")?;
    python_clients(sh)?;
    let _ = images::remove_leftover_containers(sh);
    step("cargo test --workspace");
    let tested = cmd!(sh, "cargo test --workspace --locked").run();
    let _ = images::remove_leftover_containers(sh);
    tested?;
    Ok(())
}

/// The Python drivers the end-to-end tests use (psycopg, asyncpg), in `target/e2e-venv`,
/// installed again only when `integration/python/requirements.txt` changes.
fn python_clients(sh: &Shell) -> anyhow::Result<()> {
    let venv = crate::project_root().join("target/e2e-venv");
    let requirements = crate::project_root().join("integration/python/requirements.txt");
    let wanted = sh.read_file(&requirements)?;
    let stamp = venv.join("requirements.installed");
    if sh.read_file(&stamp).is_ok_and(|installed| installed == wanted) {
        return Ok(());
    }
    step("python clients for the e2e tests");
    if !venv.join("bin/python").exists() {
        cmd!(sh, "python3 -m venv {venv}").run().context("python3 -m venv failed: install python3-venv")?;
    }
    let pip = venv.join("bin/pip");
    cmd!(sh, "{pip} install --quiet --disable-pip-version-check -r {requirements}").run()?;
    sh.write_file(&stamp, wanted)?;
    Ok(())
}

pub(crate) fn demo(sh: &Shell) -> anyhow::Result<()> {
    crate::setup::debian_packages(sh, crate::setup::DEMO_PACKAGES)?;
    step("cargo build --workspace --all-targets");
    cmd!(sh, "cargo build --workspace --all-targets --locked").run()?;
    images::build(sh)?;
    images::server_image(sh, "debug")?;
    step("demo: the stand-in, the server proxy and the client proxy");
    let demo = crate::project_root().join("target/debug/rds-auth-demo");
    // The demo prompts and waits for Ctrl-C: it runs in the foreground with this terminal.
    let status = std::process::Command::new(demo).status()?;
    anyhow::ensure!(status.success(), "the demo ended with {status}");
    Ok(())
}

/// Crate hygiene: every crate shares the workspace version and lints, is unpublished, opens
/// with a `//!` header, and no `dbg!` or `todo!` is left behind.
pub(crate) fn tidy(sh: &Shell) -> anyhow::Result<()> {
    step("tidy");
    let mut problems = Vec::new();
    let mut manifests = vec!["integration/Cargo.toml".to_owned(), "xtask/Cargo.toml".to_owned()];
    for dir in sh.read_dir("crates")? {
        manifests.push(format!("{}/Cargo.toml", dir.display()));
    }
    for manifest in &manifests {
        let text = sh.read_file(manifest)?;
        for needle in ["version.workspace = true", "publish.workspace = true", "[lints]\nworkspace = true"] {
            if !text.contains(needle) {
                problems.push(format!("{manifest}: missing `{}`", needle.replace('\n', " ")));
            }
        }
        let dir = manifest.trim_end_matches("/Cargo.toml");
        let root =
            ["src/lib.rs", "src/main.rs"].iter().map(|f| format!("{dir}/{f}")).find(|f| sh.path_exists(f));
        if let Some(root) = root {
            let first =
                sh.read_file(&root)?.lines().find(|l| !l.trim().is_empty()).unwrap_or_default().to_owned();
            if !first.starts_with("//!") {
                problems.push(format!("{root}: does not open with a //! header saying what the crate owns"));
            }
        }
    }
    let forbidden = [concat!("dbg", "!("), concat!("todo", "!(")];
    for file in rust_files(sh, &["crates", "integration", "xtask"])? {
        let text = sh.read_file(&file)?;
        for (n, line) in text.lines().enumerate() {
            if let Some(bad) = forbidden.iter().find(|f| line.contains(**f)) {
                problems.push(format!("{file}:{}: `{bad}` left behind", n + 1));
            }
        }
    }
    ensure!(problems.is_empty(), "tidy found problems:\n  {}", problems.join("\n  "));
    Ok(())
}

fn rust_files(sh: &Shell, roots: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack: Vec<std::path::PathBuf> = roots.iter().map(Into::into).collect();
    while let Some(dir) = stack.pop() {
        for entry in sh.read_dir(&dir)? {
            if entry.is_dir() {
                if !entry.ends_with("target") {
                    stack.push(entry);
                }
            } else if entry.extension().is_some_and(|e| e == "rs") {
                out.push(entry.display().to_string());
            }
        }
    }
    Ok(out)
}

/// Which crates may not depend on what (`cargo tree -i`), so the pure crates stay pure.
const FORBIDDEN: &[(&str, &[&str])] = &[
    ("rds-auth-codec", &["tokio", "rustls", "aws-config", "aws-smithy-http-client"]),
    ("rds-auth-startup", &["tokio", "rustls", "aws-config", "aws-smithy-http-client"]),
    ("rds-auth-token", &["mio", "socket2", "hyper", "aws-config", "aws-smithy-http-client"]),
];

/// Features a crate may not switch on in its own graph. The token crate reaches tokio through
/// aws-sigv4's credential types, but only for its sync primitives: no I/O driver, no network.
const FORBIDDEN_FEATURES: &[(&str, &str, &[&str])] =
    &[("rds-auth-token", "tokio", &["net", "rt", "io-util", "time", "process", "fs"])];

/// Crates only the binaries (and `rds-auth-cli`, the edge they share) may use: configuration,
/// CLI and output formatting live at the edge.
const EDGE_ONLY: &[&str] = &["figment", "clap", "miette", "tracing-subscriber", "inquire", "indicatif"];
const BINARIES: &[&str] = &["rds-auth-proxy", "rds-auth-proxy-server", "rds-auth-cli", "xtask"];

pub(crate) fn deps(sh: &Shell) -> anyhow::Result<()> {
    step("dependency direction");
    let mut problems = Vec::new();
    for (krate, banned) in FORBIDDEN {
        for dep in *banned {
            let out = cmd!(sh, "cargo tree --locked -e normal,build -p {krate} -i {dep} --prefix none")
                .ignore_status()
                .quiet()
                .ignore_stderr()
                .read()?;
            if !out.trim().is_empty() {
                problems.push(format!("{krate} depends on {dep}:\n{out}"));
            }
        }
    }
    for (krate, dep, features) in FORBIDDEN_FEATURES {
        let out = cmd!(sh, "cargo tree --locked -e features -p {krate} -i {dep} --prefix none")
            .ignore_status()
            .quiet()
            .ignore_stderr()
            .read()?;
        for feature in *features {
            if out.lines().any(|l| l.trim() == format!("{dep} feature \"{feature}\"")) {
                problems.push(format!("{krate} switches on {dep}'s `{feature}` feature"));
            }
        }
    }
    for dep in EDGE_ONLY {
        let out = cmd!(sh, "cargo tree --locked -e normal --workspace -i {dep} --depth 1 --prefix none")
            .ignore_status()
            .quiet()
            .ignore_stderr()
            .read()?;
        // Only workspace members matter: their lines carry a path.
        for line in out.lines().skip(1).filter(|l| l.contains(" (/")) {
            let name = line.split_whitespace().next().unwrap_or_default();
            if !BINARIES.contains(&name) {
                problems.push(format!("{name} depends on {dep}, which belongs in the binaries"));
            }
        }
    }
    if !problems.is_empty() {
        bail!("dependency direction violated:\n{}", problems.join("\n"));
    }
    Ok(())
}
