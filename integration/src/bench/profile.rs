//! Where the proxies spend their time, under the same loads the benchmark measures.
//!
//! - `perf record -e cpu-clock` samples each proxy while pgbench or a COPY runs. Hardware
//!   counters are often missing on virtual machines (`perf stat -e instructions` says
//!   `<not supported>`), so the software clock is used; it samples user and kernel time alike.
//! - `valgrind --tool=callgrind` counts the server proxy's instructions under a smaller load:
//!   slower, but repeatable on a noisy machine, and it needs no kernel support.
//!
//! The release binaries keep their symbol tables (`strip = "debuginfo"`), so both tools name
//! functions; inlined functions are counted in their callers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, ensure};
use serde::Serialize;
use tokio::process::Command;

use crate::bench::procs::Proc;
use crate::bench::setup::{DATABASE, IAM_USER, Rig, Route, output, start_proxies};

/// One profile: a process under one load, and its top functions.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    /// `perf` or `callgrind`.
    pub tool: String,
    /// `rds-auth-proxy-server` or `rds-auth-proxy`.
    pub process: String,
    /// What ran, in words.
    pub load: String,
    /// Samples (perf) or instructions (callgrind).
    pub total: f64,
    /// Instructions per transaction or per MiB, for callgrind.
    pub per_unit: Option<(f64, String)>,
    /// Shares by object: the binary, the kernel, libc.
    pub objects: Vec<Entry>,
    /// Shares by where the time was spent: user space, or the system call the kernel was
    /// serving (from kernel call chains), or neither (interrupts, softirqs).
    pub by_syscall: Vec<Entry>,
    pub top: Vec<Entry>,
    /// The raw report, kept next to the results.
    pub report_file: PathBuf,
}

/// A function or object and its share of the total, in percent.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub percent: f64,
    pub name: String,
    pub object: String,
}

/// System calls and context switches of one process per unit of work, from `perf stat`.
#[derive(Debug, Clone, Serialize)]
pub struct Counts {
    pub route: String,
    pub process: String,
    pub load: String,
    pub unit: String,
    pub syscalls: f64,
    pub context_switches: f64,
}

/// Counts each process's system calls and context switches while `load` runs; `load` returns
/// how many units (transactions, MiB) it did.
pub async fn perf_counts<F>(
    procs: &[&Proc],
    route: Route,
    load_name: &str,
    unit: &str,
    load: F,
) -> anyhow::Result<Vec<Counts>>
where
    F: std::future::Future<Output = anyhow::Result<f64>>,
{
    let mut counters = Vec::new();
    for proc in procs {
        let mut command = Command::new("perf");
        command
            .args(["stat", "-x", ",", "-e", "raw_syscalls:sys_enter,context-switches", "-p"])
            .arg(proc.pid.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        counters.push((proc.name.clone(), command.spawn().context("cannot start perf stat")?));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let units = load.await?;
    let mut counts = Vec::new();
    for (process, counter) in counters {
        if let Some(pid) = counter.id() {
            let _ = Command::new("kill").arg("-INT").arg(pid.to_string()).status().await;
        }
        let out = counter.wait_with_output().await?;
        let text = String::from_utf8_lossy(&out.stderr);
        let value = |event: &str| -> anyhow::Result<f64> {
            text.lines()
                .map(|line| line.split(',').collect::<Vec<_>>())
                .find(|fields| fields.get(2) == Some(&event))
                .and_then(|fields| fields.first().and_then(|v| v.parse::<f64>().ok()))
                .with_context(|| format!("perf stat counted no {event}:\n{text}"))
        };
        counts.push(Counts {
            route: route.name().to_owned(),
            process,
            load: load_name.to_owned(),
            unit: unit.to_owned(),
            syscalls: value("raw_syscalls:sys_enter")? / units,
            context_switches: value("context-switches")? / units,
        });
    }
    Ok(counts)
}

/// Whether `perf` can sample here.
pub async fn perf_works() -> bool {
    Command::new("perf")
        .args(["stat", "-e", "cpu-clock", "--", "true"])
        .output()
        .await
        .is_ok_and(|out| out.status.success())
}

/// Samples each of `procs` for `seconds` while `load` runs, and reads the profiles.
pub async fn perf_during<F>(
    procs: &[&Proc],
    seconds: u32,
    dir: &Path,
    label: &str,
    load_name: &str,
    load: F,
) -> anyhow::Result<Vec<Profile>>
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    std::fs::create_dir_all(dir)?;
    let mut recorders = Vec::new();
    let seconds = seconds.max(1);
    for proc in procs {
        let data = dir.join(format!("{label}-{}.perf.data", proc.name));
        let mut command = Command::new("perf");
        command
            .args(["record", "-e", "cpu-clock", "-F", "999", "-g", "-q", "-o"])
            .arg(&data)
            .args(["-p", &proc.pid.to_string(), "--", "sleep", &seconds.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        recorders.push((proc.name.clone(), data, command.spawn().context("cannot start perf record")?));
    }
    load.await?;
    let mut profiles = Vec::new();
    for (process, data, recorder) in recorders {
        let out = recorder.wait_with_output().await?;
        ensure!(out.status.success(), "perf record failed: {}", String::from_utf8_lossy(&out.stderr));
        let symbols = perf_report(&data, "dso,symbol").await?;
        let objects = perf_report(&data, "dso").await?;
        let report_file = dir.join(format!("{label}-{process}.perf.txt"));
        std::fs::write(&report_file, &symbols)?;
        let samples = perf_samples(&data).await.unwrap_or(0.0);
        let mut script = Command::new("perf");
        script.args(["script", "-F", "ip,sym", "-i"]).arg(&data);
        let script = output(script, "perf script").await?;
        profiles.push(Profile {
            tool: "perf".to_owned(),
            process,
            load: load_name.to_owned(),
            total: samples,
            per_unit: None,
            objects: parse_perf(&objects, false),
            by_syscall: by_syscall(&script),
            top: parse_perf(&symbols, true),
            report_file,
        });
    }
    Ok(profiles)
}

async fn perf_report(data: &Path, sort: &str) -> anyhow::Result<String> {
    let mut command = Command::new("perf");
    command.args([
        "report",
        "--stdio",
        "--no-children",
        "-q",
        "--percent-limit",
        "0.3",
        "--sort",
        sort,
        "-i",
    ]);
    command.arg(data);
    output(command, "perf report").await
}

async fn perf_samples(data: &Path) -> anyhow::Result<f64> {
    let mut command = Command::new("perf");
    command.args(["report", "--stdio", "--no-children", "--sort", "dso", "-i"]).arg(data);
    let text = output(command, "perf report").await?;
    text.lines()
        .find_map(|line| line.strip_prefix("# Samples: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(parse_count)
        .context("no sample count")
}

/// `12.34%  object  [.] symbol` lines (or `12.34%  object` with `--sort dso`).
fn parse_perf(text: &str, with_symbol: bool) -> Vec<Entry> {
    let mut entries = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(percent) = words.next().and_then(|p| p.strip_suffix('%')).and_then(|p| p.parse().ok())
        else {
            continue;
        };
        let Some(object) = words.next() else { continue };
        let name = if with_symbol {
            let _kind = words.next();
            // perf pads unknown columns (source lines) with `-`.
            let mut rest: Vec<&str> = words.collect();
            while rest.last() == Some(&"-") {
                rest.pop();
            }
            clean_symbol(&rest.join(" "))
        } else {
            String::new()
        };
        entries.push(Entry { percent, name, object: object.to_owned() });
    }
    entries
}

/// Shares of `perf script -F ip,sym` samples (call chains, leaf first) by where they fell:
/// user space, a system call (named after the libc function that made it, the first user
/// frame above the kernel's entry), or kernel work outside any system call.
fn by_syscall(script: &str) -> Vec<Entry> {
    let mut counts: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    let mut total = 0usize;
    let mut frames: Vec<(bool, String)> = Vec::new();
    let mut flush = |frames: &mut Vec<(bool, String)>| {
        let Some((leaf_in_kernel, _)) = frames.first() else { return };
        let place = if !leaf_in_kernel {
            "user space".to_owned()
        } else if let Some(entry) = frames.iter().position(|(_, s)| s.starts_with("entry_SYSCALL")) {
            let caller = frames.get(entry + 1).map_or("?", |(_, s)| s.as_str());
            format!("system call: {}", libc_name(caller))
        } else {
            "kernel, outside system calls (interrupts, softirqs)".to_owned()
        };
        *counts.entry(place).or_default() += 1;
        total += 1;
        frames.clear();
    };
    for line in script.lines() {
        let line = line.trim();
        if line.is_empty() {
            flush(&mut frames);
            continue;
        }
        let Some((address, symbol)) = line.split_once(' ') else { continue };
        let Ok(address) = u64::from_str_radix(address, 16) else { continue };
        frames.push((address >= 0xffff_8000_0000_0000, symbol.trim().to_owned()));
    }
    flush(&mut frames);
    let mut entries: Vec<Entry> = counts
        .into_iter()
        .map(|(name, n)| Entry {
            percent: 100.0 * n as f64 / total.max(1) as f64,
            name,
            object: String::new(),
        })
        .collect();
    entries.sort_by(|a, b| b.percent.total_cmp(&a.percent));
    entries
}

/// `__GI___libc_write` is `write`; Rust's futex calls go through `syscall`.
fn libc_name(symbol: &str) -> String {
    let name = symbol.trim_start_matches("__GI_").trim_start_matches("__libc_").trim_start_matches("__");
    let name = name.trim_start_matches("libc_");
    match name {
        "syscall" => "futex (through syscall)".to_owned(),
        "[unknown]" | "" => "unknown".to_owned(),
        other => other.to_owned(),
    }
}

/// Drops a legacy-mangled Rust symbol's hash (`::h0123456789abcdef`).
fn clean_symbol(symbol: &str) -> String {
    match symbol.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            head.to_owned()
        }
        _ => symbol.to_owned(),
    }
}

fn parse_count(text: &str) -> Option<f64> {
    let text = text.replace(',', "");
    if let Some(k) = text.strip_suffix('K') {
        return k.parse::<f64>().ok().map(|k| k * 1e3);
    }
    if let Some(m) = text.strip_suffix('M') {
        return m.parse::<f64>().ok().map(|m| m * 1e6);
    }
    text.parse().ok()
}

/// The server proxy under callgrind, for select-only transactions and for a COPY.
///
/// Each load runs twice, each time in a fresh server proxy: in full, and reduced to almost
/// nothing (one transaction per client, one row) after the same startup and the same session
/// setups. The difference, divided by the work, is the cost per transaction or per MiB; the
/// top functions are the full run's. (Zeroing the counters of a running process with
/// `callgrind_control -z` would be simpler, but callgrind then books every later cost to the
/// frames that were live at that moment.)
pub async fn callgrind(rig: &Rig, dir: &Path) -> anyhow::Result<Vec<Profile>> {
    std::fs::create_dir_all(dir)?;
    let transactions_per_client: u32 = if rig.options.quick { 300 } else { 2500 };
    let copy_mib = rig.options.copy_mib.min(128);
    let mut profiles = Vec::new();
    for (load, units, unit) in [
        ("select", f64::from((transactions_per_client - 1) * 8), "transaction"),
        ("copy", copy_mib as f64, "MiB"),
    ] {
        let (base, base_functions, _) = callgrind_once(rig, dir, load, "base", 1, 1).await?;
        let (total, functions, report_file) =
            callgrind_once(rig, dir, load, "full", transactions_per_client, copy_mib * 1024).await?;
        let top = subtract(&functions, &base_functions, total - base);
        let load_name = match load {
            "select" => "pgbench -S, 8 clients".to_owned(),
            _ => format!("COPY TO STDOUT, {copy_mib} MiB"),
        };
        profiles.push(Profile {
            tool: "callgrind".to_owned(),
            process: "rds-auth-proxy-server".to_owned(),
            load: load_name,
            total: total - base,
            per_unit: Some(((total - base) / units, format!("instructions per {unit}"))),
            objects: Vec::new(),
            by_syscall: Vec::new(),
            top,
            report_file,
        });
    }
    Ok(profiles)
}

/// One server proxy under callgrind, from start to exit, running `load` at a size: pgbench -S
/// with 8 clients and `transactions` each, or a COPY of `rows` rows (1 KiB each).
async fn callgrind_once(
    rig: &Rig,
    dir: &Path,
    load: &str,
    size: &str,
    transactions: u32,
    rows: u64,
) -> anyhow::Result<(f64, Vec<(Entry, f64)>, PathBuf)> {
    let out_file = dir.join(format!("callgrind-{load}-{size}.out"));
    let wrapper = vec![
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        format!("--callgrind-out-file={}", out_file.display()),
    ];
    let name = format!("callgrind-{load}-{size}");
    let mut proxies =
        start_proxies(&rig.options, &rig.standin, &rig.pki, rig.pg_addr.ip(), &rig.work, &name, &wrapper)
            .await?;
    let conninfo = format!(
        "host=127.0.0.1 port={} dbname={DATABASE} user={IAM_USER} sslmode=disable gssencmode=disable",
        proxies.iam_port
    );
    // A first session pays for lazy initialisation, as in the measured runs.
    let mut warm = rig.libpq_command(&rig.options.psql, Route::ProxyIam);
    warm.args(["-X", "-A", "-t", "-c", "SELECT 1", "-d", &conninfo]);
    output(warm, "psql").await?;
    if load == "select" {
        let mut command = rig.libpq_command(&rig.options.pgbench, Route::ProxyIam);
        command.args(["-n", "-S", "-c8", "-j2", &format!("-t{transactions}"), &conninfo]);
        output(command, "pgbench under callgrind").await?;
    } else {
        let mut command = rig.libpq_command(&rig.options.psql, Route::ProxyIam);
        let sql = format!("\\copy (SELECT * FROM bench_copy LIMIT {rows}) TO '/dev/null'");
        command.args(["-X", "-A", "-t", "-c", &sql, "-d", &conninfo]);
        output(command, "COPY under callgrind").await?;
    }
    proxies.client.stop(Duration::from_secs(5)).await?;
    proxies.server.stop(Duration::from_secs(120)).await?;
    let mut command = Command::new("callgrind_annotate");
    command.args(["--inclusive=no", "--threshold=100"]).arg(&out_file);
    let text = output(command, "callgrind_annotate").await?;
    let report_file = dir.join(format!("callgrind-{load}-{size}.txt"));
    std::fs::write(&report_file, &text)?;
    let (total, top) = parse_callgrind(&text);
    Ok((total, top, report_file))
}

/// Each function's cost in `full` minus its cost in `base`, as a share of `total`, largest
/// first.
fn subtract(full: &[(Entry, f64)], base: &[(Entry, f64)], total: f64) -> Vec<Entry> {
    let mut entries: Vec<Entry> = full
        .iter()
        .map(|(entry, count)| {
            let before = base.iter().find(|(b, _)| b.name == entry.name).map_or(0.0, |(_, c)| *c);
            Entry { percent: 100.0 * (count - before) / total.max(1.0), ..entry.clone() }
        })
        .collect();
    entries.sort_by(|a, b| b.percent.total_cmp(&a.percent));
    entries.truncate(40);
    entries
}

/// `1,234 (12.34%)  file:function [object]` lines; the `PROGRAM TOTALS` line is the total.
fn parse_callgrind(text: &str) -> (f64, Vec<(Entry, f64)>) {
    let mut total = 0.0;
    let mut top = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some((count, rest)) = line.split_once(' ') else { continue };
        let Some(count) = parse_count(count) else { continue };
        let rest = rest.trim_start();
        let Some((percent, rest)) = rest.strip_prefix('(').and_then(|r| r.split_once("%)")) else { continue };
        let Ok(percent) = percent.trim().parse::<f64>() else { continue };
        let rest = rest.trim();
        if rest == "PROGRAM TOTALS" {
            total = count;
            continue;
        }
        let (function, object) = match rest.rsplit_once(" [") {
            Some((function, object)) => (function, object.trim_end_matches(']')),
            None => (rest, ""),
        };
        let function = function.split_once(':').map_or(function, |(_, f)| f);
        let object = Path::new(object).file_name().and_then(|n| n.to_str()).unwrap_or(object);
        top.push((Entry { percent, name: clean_symbol(function), object: object.to_owned() }, count));
    }
    (total, top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_perf_and_callgrind_reports() {
        let perf = "    12.50%  rds-auth-proxy-server  [.] rustls::conn::Foo::bar::h0123456789abcdef   -   -\n\
                    \n     3.00%  [kernel.kallsyms]      [k] copy_user_enhanced_fast_string\n";
        let entries = parse_perf(perf, true);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].name, "rustls::conn::Foo::bar");
        assert_eq!(entries[1].object, "[kernel.kallsyms]");
        let callgrind = "1,000,000 (100.0%)  PROGRAM TOTALS\n\
                         250,000 (25.00%)  ???:aws_gcm_enc [/usr/bin/x]\n";
        let (total, top) = parse_callgrind(callgrind);
        assert_eq!(total, 1e6);
        assert_eq!(top[0].0.name, "aws_gcm_enc");
        assert_eq!(top[0].0.object, "x");
        let base = vec![(top[0].0.clone(), 50_000.0)];
        assert_eq!(subtract(&top, &base, 400_000.0)[0].percent, 50.0);
        assert_eq!(parse_count("12K"), Some(12e3));
        let script = "\n\t    5636eb0dd341 tokio::runtime::Foo\n\n\
                      \tffffffff816dbaf5 vfs_read\n\tffffffff81000130 entry_SYSCALL_64_after_hwframe\n\
                      \t           f82ad __GI___libc_read\n\n\
                      \tffffffff81eb0375 __napi_poll\n\tffffffff81eb0376 do_softirq\n\n\
                      \tffffffff816dbaf5 do_futex\n\tffffffff81000130 entry_SYSCALL_64\n\t    7f01 syscall\n";
        let places = by_syscall(script);
        assert_eq!(places.len(), 4);
        assert!(places.iter().all(|p| p.percent == 25.0));
        let names: Vec<&str> = places.iter().map(|p| p.name.as_str()).collect();
        assert!(names.contains(&"system call: read"));
        assert!(names.contains(&"system call: futex (through syscall)"));
        assert!(names.contains(&"user space"));
    }
}
