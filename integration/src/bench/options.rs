//! The runner's flags. `cargo xtask bench` passes the tools' and binaries' paths and forwards
//! the user's own flags, which are listed in `cargo xtask bench --help`.

use std::path::PathBuf;

use anyhow::{Context, bail};

/// Every workload, in the order a repeat runs them.
pub const WORKLOADS: &[&str] = &["select", "connect", "copy", "burst", "idle"];

/// What to run and where things are.
#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    /// How many times each workload runs on each path.
    pub repeats: u32,
    /// Seconds of each `pgbench -S` run.
    pub select_seconds: u32,
    /// Seconds of each `pgbench -S -C` run.
    pub connect_seconds: u32,
    /// Bytes of each COPY, in MiB.
    pub copy_mib: u64,
    /// pgbench's scale factor.
    pub scale: u32,
    /// The select-only client counts.
    pub clients: Vec<u32>,
    /// Idle session counts held through the proxies while their memory is read.
    pub idle_sessions: Vec<usize>,
    /// Sessions opened at once.
    pub burst: usize,
    /// The workloads to run (a subset of [`WORKLOADS`]).
    pub workloads: Vec<String>,
    /// Sample the proxies with `perf` after the measurements.
    pub perf: bool,
    /// Count the server proxy's instructions with callgrind after the measurements.
    pub callgrind: bool,
    pub client_binary: PathBuf,
    pub server_binary: PathBuf,
    pub pgbench: PathBuf,
    pub psql: PathBuf,
    pub pgbouncer: PathBuf,
    /// Where results go: a directory per run, and `latest.json`.
    pub out_dir: PathBuf,
    /// Where `performance.md`, `performance.svg` and `performance.json` are updated after a
    /// full run; quick and partial runs never touch them.
    pub docs_dir: Option<PathBuf>,
}

impl Options {
    pub fn parse(args: impl IntoIterator<Item = String>) -> anyhow::Result<Options> {
        let args: Vec<String> = args.into_iter().collect();
        let quick = args.iter().any(|a| a == "--quick");
        let mut options = Options {
            quick,
            repeats: if quick { 1 } else { 5 },
            select_seconds: if quick { 3 } else { 10 },
            connect_seconds: if quick { 3 } else { 8 },
            copy_mib: if quick { 64 } else { 1024 },
            scale: if quick { 1 } else { 10 },
            clients: vec![1, 8, 32],
            idle_sessions: if quick { vec![10, 100] } else { vec![10, 100, 1000] },
            burst: 200,
            workloads: WORKLOADS.iter().map(|w| (*w).to_owned()).collect(),
            perf: true,
            callgrind: false,
            client_binary: "target/release/rds-auth-proxy".into(),
            server_binary: "target/release/rds-auth-proxy-server".into(),
            pgbench: "pgbench".into(),
            psql: "psql".into(),
            pgbouncer: "pgbouncer".into(),
            out_dir: "target/bench".into(),
            docs_dir: None,
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--quick" => {}
                "--repeats" => options.repeats = number(&value()?)?,
                "--duration" => options.select_seconds = number(&value()?)?,
                "--connect-duration" => options.connect_seconds = number(&value()?)?,
                "--copy-mib" => options.copy_mib = number(&value()?)?,
                "--scale" => options.scale = number(&value()?)?,
                "--clients" => options.clients = list(&value()?)?,
                "--idle" => options.idle_sessions = list(&value()?)?,
                "--burst" => options.burst = number(&value()?)?,
                "--only" => {
                    let only: Vec<String> = value()?.split(',').map(str::to_owned).collect();
                    if let Some(unknown) = only.iter().find(|w| !WORKLOADS.contains(&w.as_str())) {
                        bail!("unknown workload {unknown:?}; the workloads are {}", WORKLOADS.join(", "));
                    }
                    options.workloads = only;
                }
                "--no-perf" => options.perf = false,
                "--callgrind" => options.callgrind = true,
                "--client-binary" => options.client_binary = value()?.into(),
                "--server-binary" => options.server_binary = value()?.into(),
                "--pgbench" => options.pgbench = value()?.into(),
                "--psql" => options.psql = value()?.into(),
                "--pgbouncer" => options.pgbouncer = value()?.into(),
                "--out" => options.out_dir = value()?.into(),
                "--docs" => options.docs_dir = Some(value()?.into()),
                "--no-docs" => options.docs_dir = None,
                other => bail!("unknown flag {other:?}; see `cargo xtask bench --help`"),
            }
        }
        if options.repeats == 0 || options.select_seconds == 0 || options.connect_seconds == 0 {
            bail!("--repeats, --duration and --connect-duration must be at least 1");
        }
        if options.copy_mib == 0 || options.burst == 0 || options.clients.is_empty() {
            bail!("--copy-mib, --burst and --clients must not be zero or empty");
        }
        options.idle_sessions.sort_unstable();
        options.idle_sessions.dedup();
        if options.idle_sessions.iter().any(|n| *n == 0 || *n > 1100) {
            bail!("--idle counts must be between 1 and 1100 (Postgres allows 1200 connections)");
        }
        if options.burst > 1000 {
            bail!("--burst must be at most 1000 (Postgres allows 1200 connections)");
        }
        Ok(options)
    }

    pub fn runs(&self, workload: &str) -> bool {
        self.workloads.iter().any(|w| w == workload)
    }

    /// A full run: every workload at the default sizes, worth publishing in the docs.
    pub fn is_full(&self) -> bool {
        !self.quick && self.workloads.len() == WORKLOADS.len()
    }
}

fn number<T: std::str::FromStr>(text: &str) -> anyhow::Result<T> {
    text.parse().ok().with_context(|| format!("{text:?} is not a number"))
}

fn list<T: std::str::FromStr>(text: &str) -> anyhow::Result<Vec<T>> {
    text.split(',').map(number).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Options> {
        Options::parse(args.iter().map(|a| (*a).to_owned()))
    }

    #[test]
    fn defaults_quick_and_flags() {
        let full = parse(&[]).unwrap();
        assert!(full.is_full());
        assert_eq!(full.copy_mib, 1024);
        let quick = parse(&["--repeats", "2", "--quick"]).unwrap();
        assert!(!quick.is_full());
        assert_eq!((quick.repeats, quick.copy_mib), (2, 64));
        let only = parse(&["--only", "select,copy", "--clients", "1,8"]).unwrap();
        assert!(only.runs("copy") && !only.runs("idle") && !only.is_full());
        assert_eq!(only.clients, vec![1, 8]);
        assert!(parse(&["--only", "nope"]).is_err());
        assert!(parse(&["--repeats"]).is_err());
        assert!(parse(&["--idle", "5000"]).is_err());
    }
}
