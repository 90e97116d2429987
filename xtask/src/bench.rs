//! `cargo xtask bench`: direct, pgbouncer and rds-auth-proxy side by side against one
//! Postgres 15, and the report in `docs/performance.md`.
//!
//! This module checks the tools the benchmark needs (and names the Debian package of each
//! missing one; it installs nothing), builds the runner and the stand-in (debug, with the rest
//! of the workspace) and both proxies (release), builds the local images, then runs
//! `rds-auth-bench` (`integration/src/bench`), which does the measuring and the writing.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use xshell::{Shell, cmd};

use crate::{images, project_root, step};

const HELP: &str = "\
cargo xtask bench [flags]

Runs every workload on every path, interleaved and repeated, against one Postgres 15 (the RDS
stand-in): direct (TLS, password), pgbouncer (session mode, TLS both sides), and rds-auth-proxy
in IAM and in password mode (client proxy, mTLS, server proxy, TLS). Results go to
target/bench/<time>/ (results.json, report.md, chart.svg, profiles/) and target/bench/latest.json;
a full run also updates docs/performance.md, performance.svg and performance.json.

A full run takes about half an hour on 2 cores. It needs Docker, pgbench (Debian package
postgresql-15), psql (postgresql-client-15) and pgbouncer (pgbouncer); perf (linux-perf) for
the profiles, valgrind for --callgrind.

  --quick                 one short repeat with a 64 MiB COPY, for development (docs untouched)
  --repeats N             repeats of every workload on every path (default 5)
  --duration S            seconds of each pgbench -S run (default 10)
  --connect-duration S    seconds of each pgbench -S -C run (default 8)
  --copy-mib N            size of each COPY (default 1024)
  --scale N               pgbench scale factor (default 10)
  --clients A,B,C         select-only client counts (default 1,8,32)
  --idle A,B,C            idle sessions held through the proxies (default 10,100,1000)
  --burst N               sessions opened at once (default 200)
  --only W,W              only these workloads: select, connect, copy, burst, idle (docs untouched)
  --no-perf               skip the perf profiles
  --callgrind             also count the server proxy's instructions with valgrind
  --no-docs               leave docs/ alone even after a full run
";

pub(crate) fn run(sh: &Shell, args: &[String]) -> anyhow::Result<()> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        #[allow(clippy::print_stdout, reason = "help goes to stdout")]
        {
            print!("{HELP}");
        }
        return Ok(());
    }
    let tools = Tools::find(sh, args)?;
    step("cargo build --workspace --all-targets");
    cmd!(sh, "cargo build --workspace --all-targets --locked").run()?;
    step("cargo build --release: both proxies");
    cmd!(sh, "cargo build --release --locked -p rds-auth-proxy -p rds-auth-proxy-server").run()?;
    images::build(sh)?;

    step("rds-auth-bench");
    let root = project_root();
    let runner = root.join("target/debug/rds-auth-bench");
    let client = root.join("target/release/rds-auth-proxy");
    let server = root.join("target/release/rds-auth-proxy-server");
    let out = root.join("target/bench");
    let docs = root.join("docs");
    let Tools { pgbench, psql, pgbouncer } = tools;
    cmd!(
        sh,
        "{runner} --client-binary {client} --server-binary {server} --pgbench {pgbench} --psql {psql}
         --pgbouncer {pgbouncer} --out {out} --docs {docs} {args...}"
    )
    .run()
    .context("the benchmark failed; its logs are under target/bench/<time>/work/")?;
    Ok(())
}

/// The programs the runner drives.
struct Tools {
    pgbench: PathBuf,
    psql: PathBuf,
    pgbouncer: PathBuf,
}

impl Tools {
    /// Finds each tool, or fails naming the Debian package of every missing one.
    fn find(sh: &Shell, args: &[String]) -> anyhow::Result<Tools> {
        let mut missing = Vec::new();
        let pgbench = postgres_tool("pgbench");
        let psql = postgres_tool("psql");
        let pgbouncer = on_path("pgbouncer", &["/usr/sbin"]);
        if pgbench.is_none() {
            missing.push("pgbench: sudo apt-get install postgresql-15");
        }
        if psql.is_none() {
            missing.push("psql: sudo apt-get install postgresql-client-15");
        }
        if pgbouncer.is_none() {
            missing.push("pgbouncer: sudo apt-get install pgbouncer");
        }
        if on_path("docker", &[]).is_none() {
            missing.push("docker: the benchmark runs Postgres in a container (see .ci/run)");
        }
        if on_path("prlimit", &[]).is_none() {
            missing.push("prlimit: sudo apt-get install util-linux");
        }
        if args.iter().any(|a| a == "--callgrind") && on_path("valgrind", &[]).is_none() {
            missing.push("valgrind (for --callgrind): sudo apt-get install valgrind");
        }
        let image_missing = cmd!(sh, "docker image inspect rds-auth-proxy-test/postgres:15")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()
            .is_err();
        if image_missing && on_path("mmdebstrap", &[]).is_none() {
            missing.push("mmdebstrap (to build the Postgres image): sudo apt-get install mmdebstrap");
        }
        if !missing.is_empty() {
            bail!(
                "cargo xtask bench needs what this machine lacks (it installs nothing itself; \
                 `cargo xtask setup bench` installs all of it):\n  {}",
                missing.join("\n  ")
            );
        }
        if !args.iter().any(|a| a == "--no-perf") && on_path("perf", &[]).is_none() {
            step("perf is missing (Debian package linux-perf): the report will have no perf profiles");
        }
        Ok(Tools {
            pgbench: pgbench.unwrap_or_default(),
            psql: psql.unwrap_or_default(),
            pgbouncer: pgbouncer.unwrap_or_default(),
        })
    }
}

/// A Postgres client program: version 15's if installed, else the newest, else PATH's (the
/// `/usr/bin` wrappers of postgresql-client-common fail without a version behind them).
fn postgres_tool(name: &str) -> Option<PathBuf> {
    let preferred = Path::new("/usr/lib/postgresql/15/bin").join(name);
    if preferred.is_file() {
        return Some(preferred);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let path = entry.path().join("bin").join(name);
            path.is_file().then_some((version, path))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, path)| path).or_else(|| on_path(name, &[]).filter(|p| !is_pg_wrapper(p)))
}

fn is_pg_wrapper(path: &Path) -> bool {
    std::fs::canonicalize(path).is_ok_and(|p| p.ends_with("pg_wrapper"))
}

/// `name` in PATH or in one of `extra` directories.
fn on_path(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
