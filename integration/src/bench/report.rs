//! What a run found: the samples, their medians and ratios to direct, the issue's goals with
//! met or not met, and the Markdown report.
//!
//! Ratios are medians of per-repeat ratios: each repeat runs every route back to back, so a
//! route is compared with the direct run next to it in time, which cancels most of the drift
//! of a shared machine.

use std::fmt::Write as _;

use serde::Serialize;

use crate::bench::profile::{Counts, Entry, Profile};
use crate::bench::setup::Route;
use crate::bench::stats::median;
use crate::bench::workloads::Metrics;

/// One workload run on one route.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub workload: String,
    pub route: String,
    pub repeat: u32,
    pub metrics: Metrics,
}

/// The machine and the software under test.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub date: String,
    pub commit: String,
    pub postgres: String,
    pub pgbench: String,
    pub pgbouncer: String,
    pub load_before: String,
    pub load_after: String,
}

/// The settings of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub quick: bool,
    pub repeats: u32,
    pub select_seconds: u32,
    pub connect_seconds: u32,
    pub copy_mib: u64,
    pub scale: u32,
    pub clients: Vec<u32>,
    pub idle_sessions: Vec<usize>,
    pub burst: usize,
    pub workloads: Vec<String>,
}

/// Medians of every metric of one workload on one route, and their ratios to direct.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub workload: String,
    pub route: String,
    pub medians: Metrics,
    pub ratios_to_direct: Metrics,
}

/// One of the issue's goals.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub goal: String,
    pub target: String,
    pub measured: String,
    /// `None` when the workload did not run or the row is for information.
    pub met: Option<bool>,
}

/// Everything a run produced; `results.json` is this.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub machine: Machine,
    pub settings: Settings,
    pub duration_s: f64,
    pub samples: Vec<Sample>,
    pub summary: Vec<Summary>,
    pub goals: Vec<Goal>,
    pub profiles: Vec<Profile>,
    pub counts: Vec<Counts>,
    pub notes: Vec<String>,
}

/// The pgbouncer ratios and costs the issue measured, for reference next to this run's.
const ISSUE_PGBOUNCER_SELECT: &[(u32, f64)] = &[(1, 0.77), (8, 0.59), (32, 0.55)];

/// Bytes in a GiB over bytes in a GB: seconds per GiB times this is seconds per GB.
const GB_PER_GIB: f64 = 1e9 / (1u64 << 30) as f64;

/// Reads samples by workload, route and metric.
#[derive(Debug)]
pub struct Table<'a> {
    samples: &'a [Sample],
}

impl<'a> Table<'a> {
    pub fn new(samples: &'a [Sample]) -> Table<'a> {
        Table { samples }
    }

    fn values(&self, workload: &str, route: Route, metric: &str) -> Vec<(u32, f64)> {
        self.samples
            .iter()
            .filter(|s| s.workload == workload && s.route == route.name())
            .filter_map(|s| s.metrics.get(metric).map(|v| (s.repeat, *v)))
            .collect()
    }

    pub fn median(&self, workload: &str, route: Route, metric: &str) -> Option<f64> {
        let values: Vec<f64> = self.values(workload, route, metric).into_iter().map(|(_, v)| v).collect();
        median(&values)
    }

    /// The median over repeats of `route`'s value divided by direct's in the same repeat.
    pub fn ratio(&self, workload: &str, route: Route, metric: &str) -> Option<f64> {
        self.paired(workload, route, metric, |value, direct| value / direct)
    }

    /// The median over repeats of `route`'s value minus direct's in the same repeat.
    pub fn difference(&self, workload: &str, route: Route, metric: &str) -> Option<f64> {
        self.paired(workload, route, metric, |value, direct| value - direct)
    }

    fn paired(&self, workload: &str, route: Route, metric: &str, f: impl Fn(f64, f64) -> f64) -> Option<f64> {
        let direct = self.values(workload, Route::Direct, metric);
        let pairs: Vec<f64> = self
            .values(workload, route, metric)
            .into_iter()
            .filter_map(|(repeat, value)| {
                direct.iter().find(|(r, _)| *r == repeat).map(|(_, direct)| f(value, *direct))
            })
            .collect();
        median(&pairs)
    }
}

/// Medians and ratios of every workload and route that ran.
pub fn summarize(samples: &[Sample]) -> Vec<Summary> {
    let table = Table::new(samples);
    let mut keys: Vec<(String, String)> =
        samples.iter().map(|s| (s.workload.clone(), s.route.clone())).collect();
    keys.sort();
    keys.dedup();
    let mut summary = Vec::new();
    for (workload, route_name) in keys {
        let Some(route) = Route::ALL.into_iter().find(|r| r.name() == route_name) else { continue };
        let metrics: Vec<String> = samples
            .iter()
            .filter(|s| s.workload == workload && s.route == route_name)
            .flat_map(|s| s.metrics.keys().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut medians = Metrics::new();
        let mut ratios = Metrics::new();
        for metric in metrics {
            if let Some(m) = table.median(&workload, route, &metric) {
                medians.insert(metric.clone(), m);
            }
            if route != Route::Direct
                && let Some(r) = table.ratio(&workload, route, &metric)
            {
                ratios.insert(metric, r);
            }
        }
        summary.push(Summary { workload, route: route_name, medians, ratios_to_direct: ratios });
    }
    summary
}

/// The issue's goals, judged on this run.
pub fn goals(samples: &[Sample], settings: &Settings) -> Vec<Goal> {
    let t = Table::new(samples);
    let mut goals = Vec::new();
    let at_least = |ours: Option<f64>, theirs: Option<f64>| ours.zip(theirs).map(|(o, t)| o >= t);
    let at_most = |ours: Option<f64>, theirs: Option<f64>| ours.zip(theirs).map(|(o, t)| o <= t);

    for &(clients, issue) in ISSUE_PGBOUNCER_SELECT {
        let workload = format!("select-c{clients}");
        let ours = t.ratio(&workload, Route::ProxyIam, "tps");
        let theirs = t.ratio(&workload, Route::Pgbouncer, "tps");
        goals.push(Goal {
            goal: format!("Select-only throughput, {clients} client{}, IAM", plural(clients)),
            target: format!("ratio to direct ≥ pgbouncer's (issue: {issue:.2})"),
            measured: format!("{} vs pgbouncer {}", ratio(ours), ratio(theirs)),
            met: at_least(ours, theirs),
        });
    }

    let ours = t.median("select-c8", Route::ProxyIam, "cpu_us_per_txn");
    let theirs = t.median("select-c8", Route::Pgbouncer, "cpu_us_per_txn");
    goals.push(Goal {
        goal: "Proxy CPU per select-only transaction, 8 clients, both proxies".to_owned(),
        target: "≤ pgbouncer's (issue: 30 µs)".to_owned(),
        measured: format!("{} µs vs pgbouncer {} µs", num(ours, 1), num(theirs, 1)),
        met: at_most(ours, theirs),
    });

    for (workload, words, issue) in
        [("copy-out", "COPY TO STDOUT", " (issue: 0.50 to 0.55)"), ("copy-in", "COPY FROM STDIN", "")]
    {
        let ours = t.ratio(workload, Route::ProxyIam, "mib_per_s");
        let theirs = t.ratio(workload, Route::Pgbouncer, "mib_per_s");
        goals.push(Goal {
            goal: format!("{words} throughput, IAM"),
            target: format!("ratio to direct ≥ pgbouncer's{issue}"),
            measured: format!("{} vs pgbouncer {}", ratio(ours), ratio(theirs)),
            met: at_least(ours, theirs),
        });
    }
    for (workload, words) in [("copy-out", "COPY TO STDOUT"), ("copy-in", "COPY FROM STDIN")] {
        let per_gb = |route| t.median(workload, route, "cpu_s_per_gib").map(|s| s * GB_PER_GIB);
        let (ours, theirs) = (per_gb(Route::ProxyIam), per_gb(Route::Pgbouncer));
        goals.push(Goal {
            goal: format!("Proxy CPU per GB relayed, {words}, both proxies"),
            target: "≤ pgbouncer's (issue: 2.5 s/GB)".to_owned(),
            measured: format!("{} s/GB vs pgbouncer {} s/GB", num(ours, 2), num(theirs, 2)),
            met: at_most(ours, theirs),
        });
    }

    for (metric, slack) in [("p50_ms", 1.0), ("p99_ms", 3.0)] {
        let name = metric.trim_end_matches("_ms");
        for (route, mode) in [(Route::ProxyPassword, "password"), (Route::ProxyIam, "IAM")] {
            let extra = t.difference("connect", route, metric);
            let information = route == Route::ProxyIam;
            goals.push(Goal {
                goal: format!(
                    "Connect latency {name}, {mode}{}",
                    if information {
                        " (for information: the stand-in's PAM check runs a process)"
                    } else {
                        ""
                    }
                ),
                target: format!("≤ direct + {slack} ms"),
                measured: format!(
                    "direct {} ms, {mode} {} ms ({} ms)",
                    num(t.median("connect", Route::Direct, metric), 2),
                    num(t.median("connect", route, metric), 2),
                    signed(extra)
                ),
                met: if information { None } else { extra.map(|e| e <= slack) },
            });
        }
    }

    let counts = &settings.idle_sessions;
    if let Some(&last) = counts.last() {
        let per_session = t.median("idle", Route::ProxyIam, &format!("server_kib_per_session_{last}"));
        goals.push(Goal {
            goal: format!("Server-proxy RSS per idle session at {last} sessions"),
            target: "≤ 64 KiB".to_owned(),
            measured: format!("{} KiB", num(per_session, 1)),
            met: per_session.map(|kib| kib <= 64.0),
        });
        if let Some(&previous) = counts.iter().rev().nth(1) {
            let rss = |n: usize| t.median("idle", Route::ProxyIam, &format!("server_kib_{n}"));
            let before = t.median("idle", Route::ProxyIam, &format!("server_kib_per_session_{previous}"));
            let marginal = rss(last).zip(rss(previous)).map(|(a, b)| (a - b) / (last - previous) as f64);
            goals.push(Goal {
                goal: format!("Server-proxy RSS grows linearly from {previous} to {last} sessions"),
                target: format!("each session past {previous} costs ≤ 1.25 × the average at {previous}"),
                measured: format!(
                    "{} KiB per session past {previous}, {} KiB at {previous}",
                    num(marginal, 1),
                    num(before, 1)
                ),
                met: marginal.zip(before).map(|(m, b)| m <= 1.25 * b.max(1.0)),
            });
        }
    }
    goals
}

/// The generated part of `docs/performance.md`.
pub fn markdown(results: &Results, chart: Option<&str>) -> String {
    let t = Table::new(&results.samples);
    let m = &results.machine;
    let s = &results.settings;
    let mut out = String::new();
    let _ = writeln!(out, "## Latest run\n");
    let _ = writeln!(out, "- Date: {}; commit {}.", m.date, m.commit);
    let _ = writeln!(
        out,
        "- Machine: {} cores, {}, {:.1} GiB of memory, Linux {}; load average {} before and {} after.",
        m.cores, m.cpu_model, m.memory_gib, m.kernel, m.load_before, m.load_after
    );
    let _ = writeln!(out, "- Software: {}; {}; {}.", m.postgres, m.pgbench, m.pgbouncer);
    let _ = writeln!(
        out,
        "- Settings: {} repeat{}{}; `pgbench -S` for {} s at {} clients; `pgbench -S -C` for {} s; \
         COPY of {} MiB each way; pgbench scale {}; {} sessions at once; idle sessions {}.",
        s.repeats,
        plural(s.repeats),
        if s.quick { " (`--quick`)" } else { "" },
        s.select_seconds,
        s.clients.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
        s.connect_seconds,
        s.copy_mib,
        s.scale,
        s.burst,
        s.idle_sessions.iter().map(usize::to_string).collect::<Vec<_>>().join(", "),
    );
    let _ = writeln!(out, "- The run took {:.0} minutes.\n", results.duration_s / 60.0);
    if let Some(chart) = chart {
        let _ = writeln!(out, "![Ratios to direct, and connect latency]({chart})\n");
    }

    let _ = writeln!(out, "### Ratios to direct\n");
    let _ = writeln!(
        out,
        "Each cell is the median, over repeats, of the route's result divided by the direct run's in the same repeat; the median value itself is in parentheses.\n"
    );
    let routes = Route::ALL;
    let _ = writeln!(
        out,
        "| Workload | {} |\n| --- |{}",
        routes.map(Route::label).join(" | "),
        " ---: |".repeat(routes.len())
    );
    let mut rows: Vec<(String, String, &str, usize)> = Vec::new();
    for clients in &s.clients {
        rows.push((
            format!("select-c{clients}"),
            format!("`pgbench -S`, {clients} client{}: tps, higher is better", plural(*clients)),
            "tps",
            0,
        ));
    }
    rows.push(("connect".into(), "connect, p50: ms, lower is better".into(), "p50_ms", 2));
    rows.push(("connect".into(), "connect, p99: ms, lower is better".into(), "p99_ms", 2));
    rows.push(("copy-out".into(), "COPY TO STDOUT: MiB/s, higher is better".into(), "mib_per_s", 0));
    rows.push(("copy-in".into(), "COPY FROM STDIN: MiB/s, higher is better".into(), "mib_per_s", 0));
    rows.push((
        "burst".into(),
        format!("{} sessions at once, until each has answered a query: ms, lower is better", s.burst),
        "total_ms",
        0,
    ));
    for (workload, label, metric, digits) in &rows {
        if t.median(workload, Route::Direct, metric).is_none() {
            continue;
        }
        let mut cells = Vec::new();
        for route in routes {
            let value = t.median(workload, route, metric);
            cells.push(if route == Route::Direct {
                num(value, *digits)
            } else {
                format!("{} ({})", ratio(t.ratio(workload, route, metric)), num(value, *digits))
            });
        }
        let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
    }

    let _ = writeln!(out, "\n### CPU of what sits in the path\n");
    let _ = writeln!(
        out,
        "User plus system time from `/proc/<pid>/stat`, all threads: pgbouncer's process, or both proxies together.\n"
    );
    let cpu_routes = [Route::Pgbouncer, Route::ProxyIam, Route::ProxyPassword];
    let _ = writeln!(
        out,
        "| Cost | {} |\n| --- |{}",
        cpu_routes.map(Route::label).join(" | "),
        " ---: |".repeat(cpu_routes.len())
    );
    let mut cpu_rows: Vec<(String, String, &str, f64, usize)> = Vec::new();
    for clients in &s.clients {
        cpu_rows.push((
            format!("select-c{clients}"),
            format!("µs per select-only transaction, {clients} client{}", plural(*clients)),
            "cpu_us_per_txn",
            1.0,
            1,
        ));
    }
    cpu_rows.push(("connect".into(), "ms per connection (`-C`)".into(), "cpu_ms_per_connection", 1.0, 2));
    cpu_rows.push(("copy-out".into(), "s per GB, COPY TO STDOUT".into(), "cpu_s_per_gib", GB_PER_GIB, 2));
    cpu_rows.push(("copy-in".into(), "s per GB, COPY FROM STDIN".into(), "cpu_s_per_gib", GB_PER_GIB, 2));
    cpu_rows.push(("burst".into(), format!("s for {} sessions at once", s.burst), "cpu_s", 1.0, 2));
    for (workload, label, metric, scale, digits) in &cpu_rows {
        let cells: Vec<String> = cpu_routes
            .iter()
            .map(|r| num(t.median(workload, *r, metric).map(|v| v * scale), *digits))
            .collect();
        if cells.iter().all(|c| c == "–") {
            continue;
        }
        let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
    }

    if !s.idle_sessions.is_empty() && t.median("idle", Route::ProxyIam, "server_base_kib").is_some() {
        let _ = writeln!(out, "\n### Memory with idle sessions\n");
        let _ = writeln!(
            out,
            "IAM sessions held open through a fresh proxy pair; RSS from `/proc/<pid>/status`, after one session was opened and closed (the baseline).\n"
        );
        let _ = writeln!(
            out,
            "| Sessions | server proxy RSS (MiB) | KiB per session | client proxy RSS (MiB) | KiB per session |"
        );
        let _ = writeln!(out, "| ---: | ---: | ---: | ---: | ---: |");
        let mib = |v: Option<f64>| num(v.map(|kib| kib / 1024.0), 1);
        let get = |key: String| t.median("idle", Route::ProxyIam, &key);
        let _ = writeln!(
            out,
            "| 0 | {} | | {} | |",
            mib(get("server_base_kib".into())),
            mib(get("client_base_kib".into()))
        );
        for n in &s.idle_sessions {
            let _ = writeln!(
                out,
                "| {n} | {} | {} | {} | {} |",
                mib(get(format!("server_kib_{n}"))),
                num(get(format!("server_kib_per_session_{n}")), 1),
                mib(get(format!("client_kib_{n}"))),
                num(get(format!("client_kib_per_session_{n}")), 1),
            );
        }
    }

    let _ = writeln!(out, "\n### Goals of issue 7\n");
    let _ = writeln!(out, "| Goal | Target | Measured | Verdict |\n| --- | --- | --- | --- |");
    for goal in &results.goals {
        let verdict = match goal.met {
            Some(true) => "met",
            Some(false) => "**not met**",
            None => "–",
        };
        let _ = writeln!(out, "| {} | {} | {} | {verdict} |", goal.goal, goal.target, goal.measured);
    }

    if !results.counts.is_empty() {
        let _ = writeln!(out, "\n### System calls and context switches\n");
        let _ = writeln!(
            out,
            "From `perf stat -e raw_syscalls:sys_enter,context-switches` on each process, in separate runs after the measurements.\n"
        );
        let _ = writeln!(
            out,
            "| Process | Load | System calls | Context switches |\n| --- | --- | ---: | ---: |"
        );
        for c in &results.counts {
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} per {} | {:.2} per {} |",
                c.process, c.load, c.syscalls, c.unit, c.context_switches, c.unit
            );
        }
    }

    if !results.profiles.is_empty() {
        let _ = writeln!(out, "\n### Profiles\n");
        let _ = writeln!(
            out,
            "Self time, with inlined functions counted in their callers. The perf tables list user-space \
             functions only, as shares of all samples; the kernel's share is in the lines above each table. \
             The raw reports are in `target/bench/<run>/profiles/`.\n"
        );
        for profile in &results.profiles {
            let total = if profile.tool == "perf" {
                format!("{:.0} samples", profile.total)
            } else {
                format!("{:.3e} instructions", profile.total)
            };
            let _ = write!(out, "**{}, {} ({}, {total}", profile.process, profile.load, profile.tool);
            if let Some((value, unit)) = &profile.per_unit {
                let _ = write!(out, ", {value:.0} {unit}");
            }
            let _ = writeln!(out, ")**");
            if !profile.objects.is_empty() {
                let objects: Vec<String> = profile
                    .objects
                    .iter()
                    .take(5)
                    .map(|e| format!("{} {:.1}%", e.object, e.percent))
                    .collect();
                let _ = writeln!(out, "\nBy object: {}.", objects.join(", "));
            }
            if !profile.by_syscall.is_empty() {
                let places: Vec<String> = profile
                    .by_syscall
                    .iter()
                    .take(8)
                    .map(|e| format!("{} {:.1}%", e.name, e.percent))
                    .collect();
                let _ = writeln!(out, "\nBy place: {}.", places.join(", "));
            }
            // The kernel's share is in the lines above; the perf tables show where user space goes.
            let entries: Vec<&Entry> = if profile.tool == "perf" {
                profile.top.iter().filter(|e| !e.object.starts_with("[kernel")).collect()
            } else {
                profile.top.iter().collect()
            };
            let _ = writeln!(out, "\n| Share | Function | Object |\n| ---: | --- | --- |");
            for entry in entries.into_iter().take(12) {
                let _ = writeln!(
                    out,
                    "| {:.1}% | `{}` | {} |",
                    entry.percent,
                    shorten(&entry.name, 110).replace('|', "\\|"),
                    entry.object
                );
            }
            let _ = writeln!(out);
        }
    }
    for note in &results.notes {
        let _ = writeln!(out, "- {note}");
    }
    out
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max).collect();
    format!("{cut}…")
}

fn plural<N: PartialEq + From<u8>>(n: N) -> &'static str {
    if n == N::from(1) { "" } else { "s" }
}

fn ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v:.2}"))
}

fn signed(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v:+.2}"))
}

/// A number with thin grouping of thousands, or `–`.
pub fn num(value: Option<f64>, digits: usize) -> String {
    let Some(value) = value.filter(|v| v.is_finite()) else { return "–".to_owned() };
    let text = format!("{value:.digits$}");
    let (int, frac) = text.split_once('.').map_or((text.as_str(), None), |(i, f)| (i, Some(f)));
    let (sign, int) = int.strip_prefix('-').map_or(("", int), |i| ("-", i));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(' ');
        }
        grouped.push(c);
    }
    match frac {
        Some(frac) => format!("{sign}{grouped}.{frac}"),
        None => format!("{sign}{grouped}"),
    }
}

/// Replaces what lies between the markers in `doc` with `block`, or appends the markers and
/// the block when the document has none.
pub fn splice(doc: &str, block: &str) -> String {
    const BEGIN: &str = "<!-- bench:begin (generated by cargo xtask bench; edit outside the markers) -->";
    const END: &str = "<!-- bench:end -->";
    let begin = doc.find("<!-- bench:begin");
    let end = doc.find(END);
    match (begin, end) {
        (Some(begin), Some(end)) if begin < end => {
            format!("{}{BEGIN}\n{block}{END}{}", &doc[..begin], &doc[end + END.len()..])
        }
        _ => format!("{}\n\n{BEGIN}\n{block}{END}\n", doc.trim_end()),
    }
}

/// The medians of one metric, for the chart: `(label, values by route)`.
pub fn chart_groups(
    samples: &[Sample],
    rows: &[(&str, &str, &str)],
    routes: &[Route],
    ratios: bool,
) -> Vec<(String, Vec<Option<f64>>)> {
    let t = Table::new(samples);
    rows.iter()
        .map(|(workload, metric, label)| {
            let values = routes
                .iter()
                .map(|r| if ratios { t.ratio(workload, *r, metric) } else { t.median(workload, *r, metric) })
                .collect();
            ((*label).to_owned(), values)
        })
        .filter(|(_, values): &(String, Vec<Option<f64>>)| values.iter().any(Option::is_some))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(workload: &str, route: Route, repeat: u32, metric: &str, value: f64) -> Sample {
        Sample {
            workload: workload.to_owned(),
            route: route.name().to_owned(),
            repeat,
            metrics: Metrics::from([(metric.to_owned(), value)]),
        }
    }

    #[test]
    fn ratios_pair_repeats() {
        let samples = vec![
            sample("select-c1", Route::Direct, 0, "tps", 100.0),
            sample("select-c1", Route::Direct, 1, "tps", 200.0),
            sample("select-c1", Route::Direct, 2, "tps", 400.0),
            sample("select-c1", Route::ProxyIam, 0, "tps", 80.0),
            sample("select-c1", Route::ProxyIam, 1, "tps", 100.0),
            sample("select-c1", Route::ProxyIam, 2, "tps", 360.0),
        ];
        let t = Table::new(&samples);
        assert_eq!(t.ratio("select-c1", Route::ProxyIam, "tps"), Some(0.8));
        assert_eq!(t.median("select-c1", Route::ProxyIam, "tps"), Some(100.0));
        assert_eq!(t.ratio("select-c1", Route::Pgbouncer, "tps"), None);
        let summary = summarize(&samples);
        assert_eq!(summary.len(), 2);
        assert_eq!(summary[1].ratios_to_direct["tps"], 0.8);
    }

    #[test]
    fn numbers_and_splicing() {
        assert_eq!(num(Some(1234567.891), 1), "1 234 567.9");
        assert_eq!(num(Some(-1234.0), 0), "-1 234");
        assert_eq!(num(Some(12.0), 2), "12.00");
        assert_eq!(num(None, 2), "–");
        let doc = "# Title\n\nintro\n";
        let once = splice(doc, "A\n");
        assert!(once.starts_with("# Title\n\nintro\n\n<!-- bench:begin"));
        let twice = splice(&format!("{once}\n## After\n"), "B\n");
        assert!(twice.contains("\nB\n<!-- bench:end -->\n\n## After\n"));
        assert!(!twice.contains("\nA\n"));
    }
}
