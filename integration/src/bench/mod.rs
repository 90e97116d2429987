//! The benchmark `cargo xtask bench` runs: direct, pgbouncer and rds-auth-proxy side by side
//! against one Postgres 15, and the report in `docs/performance.md`.
//!
//! A run starts the rig ([`setup`]), measures server-proxy memory with idle sessions first
//! (while Postgres has every connection slot free), warms every route up, then repeats the
//! workloads ([`workloads`]): each repeat runs each workload on every route back to back, in
//! an order that rotates between repeats, so slow drift on a shared machine hits all routes
//! alike. After the measurements, the proxies are profiled under the same loads ([`profile`]),
//! since a profiler perturbs what it watches. The results go to `target/bench/<time>/` as JSON,
//! Markdown and SVG ([`report`], [`svg`]); a full run also updates the docs.
//!
//! What it does not do: judge speed in tests. Timing assertions would fail on a busy machine;
//! the report is where speed is judged.

mod options;
pub mod procs;
pub mod profile;
pub mod report;
pub mod setup;
pub mod stats;
pub mod svg;
pub mod workloads;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

pub use crate::bench::options::{Options, WORKLOADS};
use crate::bench::profile::Profile;
use crate::bench::report::{Machine, Results, Sample, Settings};
use crate::bench::setup::{Rig, Route};
use crate::bench::workloads::Metrics;

/// Progress on stderr.
pub fn say(message: &str) {
    #[allow(clippy::print_stderr, reason = "the benchmark reports progress to the person running it")]
    {
        eprintln!("bench: {message}");
    }
}

/// Runs the benchmark and writes its results.
pub async fn run(options: Options) -> anyhow::Result<()> {
    raise_open_file_limit().await;
    let started = Instant::now();
    let stamp = text_of("date", &["-u", "+%Y%m%dT%H%M%SZ"]).await.unwrap_or_else(|| "run".to_owned());
    let run_dir = options.out_dir.join(&stamp);
    let work = run_dir.join("work");
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    say(&format!("results go to {}", run_dir.display()));
    let load_before = load_average();
    let date = text_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).await.unwrap_or_default();

    let mut rig = Rig::start(&options, &work).await?;
    let mut samples = Vec::new();
    let mut notes = Vec::new();
    let repeats = options.repeats;
    let record = |samples: &mut Vec<Sample>, workload: &str, route: Route, repeat: u32, metrics: Metrics| {
        say(&format!("[{}/{repeats}] {workload} via {}: {}", repeat + 1, route.name(), brief(&metrics)));
        samples.push(Sample {
            workload: workload.to_owned(),
            route: route.name().to_owned(),
            repeat,
            metrics,
        });
    };

    if options.runs("idle") {
        for repeat in 0..repeats {
            let metrics = workloads::idle(&rig, &options.idle_sessions, repeat).await?;
            record(&mut samples, "idle", Route::ProxyIam, repeat, metrics);
        }
    }
    say("warming every route up");
    workloads::warm_up(&rig, if options.quick { 1 } else { 3 }).await?;
    let copy_file = work.join("copy.dat");
    if options.runs("copy") {
        say("writing the COPY FROM file");
        workloads::copy_file(&rig, &copy_file).await?;
    }

    for repeat in 0..repeats {
        let mut order = Route::ALL.to_vec();
        order.rotate_left(repeat as usize % Route::ALL.len());
        if options.runs("select") {
            for &clients in &options.clients {
                for &route in &order {
                    let metrics = workloads::select(&rig, route, clients, options.select_seconds)
                        .await
                        .with_context(|| format!("select-only, {clients} clients, via {}", route.name()))?;
                    record(&mut samples, &format!("select-c{clients}"), route, repeat, metrics);
                }
            }
        }
        if options.runs("connect") {
            for &route in &order {
                let metrics = workloads::connect(&rig, route, options.connect_seconds, repeat)
                    .await
                    .with_context(|| format!("connect via {}", route.name()))?;
                record(&mut samples, "connect", route, repeat, metrics);
            }
        }
        if options.runs("copy") {
            for &route in &order {
                let metrics = workloads::copy_out(&rig, route)
                    .await
                    .with_context(|| format!("COPY TO STDOUT via {}", route.name()))?;
                record(&mut samples, "copy-out", route, repeat, metrics);
            }
            for &route in &order {
                let metrics = workloads::copy_in(&rig, route, &copy_file)
                    .await
                    .with_context(|| format!("COPY FROM STDIN via {}", route.name()))?;
                record(&mut samples, "copy-in", route, repeat, metrics);
            }
        }
        if options.runs("burst") {
            for &route in &order {
                let metrics = workloads::burst(&rig, route, options.burst)
                    .await
                    .with_context(|| format!("{} sessions at once via {}", options.burst, route.name()))?;
                record(&mut samples, "burst", route, repeat, metrics);
            }
        }
    }
    let _ = std::fs::remove_file(&copy_file);

    let profiles_dir = run_dir.join("profiles");
    let mut profiles = Vec::new();
    let mut counts = Vec::new();
    if options.perf {
        if profile::perf_works().await {
            profiles.extend(perf_profiles(&rig, &profiles_dir).await?);
            match perf_counts(&rig).await {
                Ok(found) => counts = found,
                Err(e) => {
                    let note = format!("perf stat could not count system calls: {e:#}");
                    say(&note);
                    notes.push(note);
                }
            }
        } else {
            let note = "perf cannot sample on this machine (install the linux-perf package, or check \
                        kernel.perf_event_paranoid): no perf profiles";
            say(note);
            notes.push(note.to_owned());
        }
    }
    if options.callgrind {
        say("callgrind: the server proxy under valgrind (slow)");
        profiles.extend(profile::callgrind(&rig, &profiles_dir).await?);
    }

    let postgres = rig
        .psql(Route::Direct, &["-c", "SHOW server_version"])
        .await
        .map(|v| format!("Postgres {}", v.trim()))
        .unwrap_or_default();
    rig.proxies.stop().await?;
    rig.pgbouncer.stop(Duration::from_secs(5)).await?;
    let machine = Machine {
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        cpu_model: cpu_model(),
        memory_gib: memory_gib(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
        date,
        commit: commit().await,
        postgres,
        pgbench: first_line_of(&options.pgbench, &["--version"]).await,
        pgbouncer: first_line_of(&options.pgbouncer, &["--version"]).await,
        load_before,
        load_after: load_average(),
    };
    let settings = Settings {
        quick: options.quick,
        repeats,
        select_seconds: options.select_seconds,
        connect_seconds: options.connect_seconds,
        copy_mib: options.copy_mib,
        scale: options.scale,
        clients: options.clients.clone(),
        idle_sessions: if options.runs("idle") { options.idle_sessions.clone() } else { Vec::new() },
        burst: options.burst,
        workloads: options.workloads.clone(),
    };
    let results = Results {
        summary: report::summarize(&samples),
        goals: report::goals(&samples, &settings),
        machine,
        settings,
        duration_s: started.elapsed().as_secs_f64(),
        samples,
        profiles,
        counts,
        notes,
    };
    write_outputs(&options, &run_dir, &results)?;
    say(&format!("done in {:.1} minutes", results.duration_s / 60.0));
    Ok(())
}

/// 1 000 idle sessions need more than the usual 1 024 file descriptors: the soft limit is
/// raised to the hard one with util-linux's `prlimit` (no unsafe code, no dependency).
async fn raise_open_file_limit() {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let hard = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(4))
        .map(str::to_owned);
    if let Some(hard) = hard {
        let nofile = format!("--nofile={hard}:");
        let pid = std::process::id().to_string();
        if text_of("prlimit", &["--pid", &pid, &nofile]).await.is_none() {
            say("cannot raise the open-file limit with prlimit: 1 000 idle sessions may fail");
        }
    }
}

/// perf on both proxies under select-only load and under each COPY.
async fn perf_profiles(rig: &Rig, dir: &Path) -> anyhow::Result<Vec<Profile>> {
    let seconds = if rig.options.quick { 2 } else { 6 };
    let procs = [&rig.proxies.client, &rig.proxies.server];
    let until = Duration::from_secs(u64::from(seconds)) + Duration::from_millis(500);
    let mut profiles = Vec::new();
    say("perf: pgbench -S, 8 clients, IAM");
    profiles.extend(
        profile::perf_during(&procs, seconds, dir, "select-c8", "pgbench -S, 8 clients, IAM", async {
            workloads::select(rig, Route::ProxyIam, 8, seconds + 1).await.map(|_| ())
        })
        .await?,
    );
    say("perf: COPY TO STDOUT, IAM");
    profiles.extend(
        profile::perf_during(&procs, seconds, dir, "copy-out", "COPY TO STDOUT, IAM", async {
            let started = Instant::now();
            while started.elapsed() < until {
                workloads::copy_out(rig, Route::ProxyIam).await?;
            }
            Ok(())
        })
        .await?,
    );
    Ok(profiles)
}

/// System calls and context switches per transaction and per MiB, pgbouncer against both
/// proxies.
async fn perf_counts(rig: &Rig) -> anyhow::Result<Vec<profile::Counts>> {
    let seconds = if rig.options.quick { 2 } else { 5 };
    let mut counts = Vec::new();
    for route in [Route::Pgbouncer, Route::ProxyIam] {
        let procs: Vec<&procs::Proc> = match route {
            Route::Pgbouncer => vec![&rig.pgbouncer],
            _ => vec![&rig.proxies.client, &rig.proxies.server],
        };
        say(&format!("perf stat: system calls via {}", route.name()));
        counts.extend(
            profile::perf_counts(&procs, route, "pgbench -S, 8 clients", "transaction", async {
                let metrics = workloads::select(rig, route, 8, seconds).await?;
                metrics.get("transactions").copied().context("pgbench counted no transactions")
            })
            .await?,
        );
        counts.extend(
            profile::perf_counts(&procs, route, "COPY TO STDOUT", "MiB", async {
                workloads::copy_out(rig, route).await?;
                Ok(rig.options.copy_mib as f64)
            })
            .await?,
        );
    }
    Ok(counts)
}

fn write_outputs(options: &Options, run_dir: &Path, results: &Results) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(results)?;
    std::fs::write(run_dir.join("results.json"), &json)?;
    std::fs::write(options.out_dir.join("latest.json"), &json)?;
    let svg = svg::chart(results);
    std::fs::write(run_dir.join("chart.svg"), &svg)?;
    let report = format!("# Benchmark run\n\n{}", report::markdown(results, Some("chart.svg")));
    std::fs::write(run_dir.join("report.md"), report)?;
    say(&format!("report: {}", run_dir.join("report.md").display()));
    match &options.docs_dir {
        Some(docs) if options.is_full() => {
            let path = docs.join("performance.md");
            let doc = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Performance\n".to_owned());
            let block = report::markdown(results, Some("performance.svg"));
            std::fs::write(&path, report::splice(&doc, &block))?;
            std::fs::write(docs.join("performance.svg"), &svg)?;
            std::fs::write(docs.join("performance.json"), &json)?;
            say(&format!("updated {}", path.display()));
        }
        Some(_) => say("a quick or partial run: docs/performance.md is left as it is"),
        None => {}
    }
    Ok(())
}

/// The main numbers of a run, for the progress line.
fn brief(metrics: &Metrics) -> String {
    const SHOWN: &[&str] =
        &["tps", "cpu_us_per_txn", "p50_ms", "p99_ms", "mib_per_s", "cpu_s_per_gib", "total_ms"];
    let parts: Vec<String> = SHOWN
        .iter()
        .filter_map(|name| metrics.get(*name).map(|value| format!("{name} {value:.2}")))
        .chain(
            metrics
                .iter()
                .filter(|(name, _)| name.starts_with("server_kib_per_session_"))
                .map(|(name, value)| format!("{name} {value:.1}")),
        )
        .collect();
    if parts.is_empty() { format!("{} metrics", metrics.len()) } else { parts.join(", ") }
}

async fn text_of(program: &str, args: &[&str]) -> Option<String> {
    let out = tokio::process::Command::new(program).args(args).output().await.ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

async fn first_line_of(program: &Path, args: &[&str]) -> String {
    let out = tokio::process::Command::new(program).args(args).output().await;
    out.map(|out| String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().trim().to_owned())
        .unwrap_or_default()
}

async fn commit() -> String {
    let Some(commit) = text_of("git", &["rev-parse", "--short", "HEAD"]).await else {
        return "unknown".to_owned();
    };
    let dirty = text_of("git", &["status", "--porcelain", "--untracked-files=no"]).await;
    match dirty {
        Some(changes) if !changes.is_empty() => format!("{commit} with uncommitted changes"),
        _ => commit,
    }
}

fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn cpu_model() -> String {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix("model name").and_then(|rest| rest.split_once(':')))
        .map(|(_, model)| model.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

fn memory_gib() -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0)
}
