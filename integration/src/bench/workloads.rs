//! One run of one workload on one route, returning its metrics.
//!
//! The pgbench and COPY workloads use libpq's own tools (pgbench, psql), as users do; the burst
//! and idle workloads hold many sessions in this process with tokio-postgres.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;

use crate::bench::procs::CpuMeter;
use crate::bench::setup::{COPY_ROW_BYTES, DATABASE, Rig, Route, output, start_proxies};
use crate::bench::stats::{median, percentile};
use crate::harness::pg::{self, TlsConnector};

/// A run's metrics by name.
pub type Metrics = BTreeMap<String, f64>;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

/// `pgbench -n -S` with `clients` clients for `seconds`.
pub async fn select(rig: &Rig, route: Route, clients: u32, seconds: u32) -> anyhow::Result<Metrics> {
    let threads = clients.min(cores());
    let args = [
        "-n".to_owned(),
        "-S".to_owned(),
        format!("-c{clients}"),
        format!("-j{threads}"),
        format!("-T{seconds}"),
        rig.conninfo(route),
    ];
    let meter = CpuMeter::start(rig.cpu_pids(route))?;
    let text = pgbench(rig, route, &args).await?;
    let cpu = meter.stop()?;
    let transactions = pgbench_value(&text, "number of transactions actually processed:")?;
    let mut metrics = Metrics::new();
    metrics.insert("tps".into(), pgbench_value(&text, "tps =")?);
    metrics.insert("transactions".into(), transactions);
    metrics.insert("latency_ms".into(), pgbench_value(&text, "latency average =")?);
    if let Some(cpu) = cpu {
        metrics.insert("cpu_s".into(), cpu);
        metrics.insert("cpu_us_per_txn".into(), cpu * 1e6 / transactions.max(1.0));
    }
    Ok(metrics)
}

/// `pgbench -n -S -C` with one client: a new connection for every transaction. The connect
/// latency comes from the per-transaction log: the time from one transaction's end to the
/// next one's start is the old connection's close plus the new one's setup.
pub async fn connect(rig: &Rig, route: Route, seconds: u32, repeat: u32) -> anyhow::Result<Metrics> {
    let dir = rig.work.join("connect-logs");
    std::fs::create_dir_all(&dir)?;
    let stem = format!("{}-{repeat}", route.name());
    let prefix = dir.join(&stem);
    let args = [
        "-n".to_owned(),
        "-S".to_owned(),
        "-C".to_owned(),
        "-c1".to_owned(),
        "-j1".to_owned(),
        format!("-T{seconds}"),
        "-l".to_owned(),
        format!("--log-prefix={}", prefix.display()),
        rig.conninfo(route),
    ];
    let meter = CpuMeter::start(rig.cpu_pids(route))?;
    let text = pgbench(rig, route, &args).await?;
    let cpu = meter.stop()?;
    let log = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("{stem}.")))
        })
        .with_context(|| format!("pgbench left no log named {stem}.* in {}", dir.display()))?;
    let connects = connect_times_us(&std::fs::read_to_string(&log)?);
    ensure!(connects.len() >= 10, "only {} connections in {}", connects.len(), log.display());
    let ms: Vec<f64> = connects.iter().map(|us| us / 1000.0).collect();
    let mut metrics = Metrics::new();
    metrics.insert("connections".into(), ms.len() as f64 + 1.0);
    metrics.insert("p50_ms".into(), percentile(&ms, 50.0).unwrap_or(f64::NAN));
    metrics.insert("p99_ms".into(), percentile(&ms, 99.0).unwrap_or(f64::NAN));
    metrics.insert("mean_ms".into(), ms.iter().sum::<f64>() / ms.len() as f64);
    metrics.insert("pgbench_connection_ms".into(), pgbench_value(&text, "average connection time =")?);
    if let Some(cpu) = cpu {
        metrics.insert("cpu_s".into(), cpu);
        metrics.insert("cpu_ms_per_connection".into(), cpu * 1e3 / (ms.len() as f64 + 1.0));
    }
    Ok(metrics)
}

/// The gaps between transactions of a one-client `pgbench -C -l` log, in microseconds: each
/// line is `client transaction latency_us script epoch_s us`, stamped when the transaction
/// ended, so the time between two ends minus the second one's latency is what happened in
/// between: a close and a connect.
pub fn connect_times_us(log: &str) -> Vec<f64> {
    let mut ends: Vec<(f64, f64)> = Vec::new();
    for line in log.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let number = |n: usize| fields.get(n).and_then(|f| f.parse::<f64>().ok());
        if let (Some(latency), Some(epoch), Some(us)) = (number(2), number(4), number(5)) {
            ends.push((epoch * 1e6 + us, latency));
        }
    }
    ends.sort_by(|a, b| a.0.total_cmp(&b.0));
    ends.windows(2).map(|pair| pair[1].0 - pair[0].0 - pair[1].1).filter(|gap| *gap >= 0.0).collect()
}

/// `COPY bench_copy TO STDOUT` through psql, into /dev/null.
pub async fn copy_out(rig: &Rig, route: Route) -> anyhow::Result<Metrics> {
    let meter = CpuMeter::start(rig.cpu_pids(route))?;
    let started = Instant::now();
    let out = rig.psql(route, &["-c", "\\copy bench_copy TO '/dev/null'"]).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = meter.stop()?;
    check_copied(&out, rig.copy_rows)?;
    Ok(copy_metrics(rig, seconds, cpu))
}

/// `COPY bench_copy_in FROM STDIN` through psql, from `file`, into an empty unlogged table.
pub async fn copy_in(rig: &Rig, route: Route, file: &Path) -> anyhow::Result<Metrics> {
    rig.admin(&["TRUNCATE bench_copy_in"]).await?;
    let meter = CpuMeter::start(rig.cpu_pids(route))?;
    let started = Instant::now();
    let sql = format!("\\copy bench_copy_in FROM '{}'", file.display());
    let out = rig.psql(route, &["-c", &sql]).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = meter.stop()?;
    check_copied(&out, rig.copy_rows)?;
    Ok(copy_metrics(rig, seconds, cpu))
}

/// Writes the COPY table's text to `file` (through the direct route), for [`copy_in`].
pub async fn copy_file(rig: &Rig, file: &Path) -> anyhow::Result<()> {
    let sql = format!("\\copy bench_copy TO '{}'", file.display());
    let out = rig.psql(Route::Direct, &["-c", &sql]).await?;
    check_copied(&out, rig.copy_rows)?;
    let len = std::fs::metadata(file)?.len();
    ensure!(len == rig.copy_rows * COPY_ROW_BYTES, "{} holds {len} bytes", file.display());
    Ok(())
}

fn check_copied(out: &str, rows: u64) -> anyhow::Result<()> {
    let copied = out.trim().strip_prefix("COPY ").and_then(|n| n.parse::<u64>().ok());
    ensure!(copied == Some(rows), "expected COPY {rows}, psql said {out:?}");
    Ok(())
}

fn copy_metrics(rig: &Rig, seconds: f64, cpu: Option<f64>) -> Metrics {
    let bytes = (rig.copy_rows * COPY_ROW_BYTES) as f64;
    let mut metrics = Metrics::new();
    metrics.insert("seconds".into(), seconds);
    metrics.insert("mib_per_s".into(), bytes / MIB / seconds);
    if let Some(cpu) = cpu {
        metrics.insert("cpu_s".into(), cpu);
        metrics.insert("cpu_s_per_gib".into(), cpu / (bytes / GIB));
    }
    metrics
}

/// How this process reaches Postgres on a route, with tokio-postgres.
#[derive(Debug, Clone)]
pub struct Connector {
    addr: SocketAddr,
    tls: Option<TlsConnector>,
    config: tokio_postgres::Config,
}

impl Connector {
    pub fn new(rig: &Rig, route: Route) -> anyhow::Result<Connector> {
        let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let (addr, tls) = match route {
            Route::Direct => {
                (rig.pg_addr, Some(TlsConnector::new(rig.standin.roots()?, rig.standin.alias())?))
            }
            Route::Pgbouncer => {
                (local(rig.pgbouncer_port), Some(TlsConnector::new(rig.pki.pki.roots()?, "127.0.0.1")?))
            }
            Route::ProxyIam => (local(rig.proxies.iam_port), None),
            Route::ProxyPassword => (local(rig.proxies.password_port), None),
        };
        let mut config = tokio_postgres::Config::new();
        config.user(route.user()).dbname(DATABASE).connect_timeout(Duration::from_secs(60));
        if let Some(password) = rig.password(route) {
            config.password(password);
        }
        Ok(Connector { addr, tls, config })
    }

    /// The same, to another local port (a client proxy of its own).
    pub fn with_local_port(mut self, port: u16) -> Connector {
        self.addr = SocketAddr::from(([127, 0, 0, 1], port));
        self
    }

    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        match &self.tls {
            Some(tls) => Ok(pg::connect(self.addr, tls.clone(), &self.config).await?),
            None => {
                let mut config = self.config.clone();
                config.host(self.addr.ip().to_string()).port(self.addr.port()).ssl_mode(SslMode::Disable);
                let (client, connection) = config.connect(NoTls).await?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok(client)
            }
        }
    }
}

/// Opens `sessions` sessions at once and waits until every one has answered a first query
/// (pgbouncer only takes a server connection for a session's first query).
pub async fn burst(rig: &Rig, route: Route, sessions: usize) -> anyhow::Result<Metrics> {
    let connector = Connector::new(rig, route)?;
    let meter = CpuMeter::start(rig.cpu_pids(route))?;
    let started = Instant::now();
    let mut pending: FuturesUnordered<_> = (0..sessions)
        .map(|_| {
            let connector = connector.clone();
            async move {
                let client = connector.connect().await?;
                client.simple_query("SELECT 1").await?;
                Ok::<_, anyhow::Error>((client, started.elapsed()))
            }
        })
        .collect();
    let mut clients = Vec::with_capacity(sessions);
    let mut times = Vec::with_capacity(sessions);
    while let Some(result) = pending.next().await {
        let (client, elapsed) = result.context("a session of the burst failed")?;
        clients.push(client);
        times.push(elapsed.as_secs_f64() * 1e3);
    }
    let total = started.elapsed().as_secs_f64() * 1e3;
    let cpu = meter.stop()?;
    drop(clients);
    let mut metrics = Metrics::new();
    metrics.insert("total_ms".into(), total);
    metrics.insert("p50_ms".into(), median(&times).unwrap_or(f64::NAN));
    if let Some(cpu) = cpu {
        metrics.insert("cpu_s".into(), cpu);
    }
    // Let Postgres reap the backends before the next workload.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(metrics)
}

/// Server-proxy (and client-proxy) memory with `counts` idle IAM sessions open, on a proxy
/// pair of its own, so nothing earlier in the run is in its heap.
pub async fn idle(rig: &Rig, counts: &[usize], repeat: u32) -> anyhow::Result<Metrics> {
    let name = format!("idle-{repeat}");
    let mut proxies =
        start_proxies(&rig.options, &rig.standin, &rig.pki, rig.pg_addr.ip(), &rig.work, &name, &[]).await?;
    let connector = Connector::new(rig, Route::ProxyIam)?.with_local_port(proxies.iam_port);
    // One session opened and closed first: TLS configurations, thread-local arenas and the
    // token cache exist after the first session whatever the count.
    let first = connector.connect().await?;
    first.simple_query("SELECT 1").await?;
    drop(first);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut metrics = Metrics::new();
    let base_server = proxies.server.rss_kib()? as f64;
    let base_client = proxies.client.rss_kib()? as f64;
    metrics.insert("server_base_kib".into(), base_server);
    metrics.insert("client_base_kib".into(), base_client);
    let mut clients = Vec::new();
    for &count in counts {
        let mut opening: FuturesUnordered<_> = FuturesUnordered::new();
        let mut next = clients.len();
        while clients.len() < count {
            while next < count && opening.len() < 16 {
                let connector = connector.clone();
                opening.push(async move { connector.connect().await });
                next += 1;
            }
            match opening.next().await {
                Some(client) => clients.push(client.context("an idle session failed to open")?),
                None => bail!("ran out of sessions to open"),
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let server = proxies.server.rss_kib()? as f64;
        let client = proxies.client.rss_kib()? as f64;
        metrics.insert(format!("server_kib_{count}"), server);
        metrics.insert(format!("server_kib_per_session_{count}"), (server - base_server) / count as f64);
        metrics.insert(format!("client_kib_{count}"), client);
        metrics.insert(format!("client_kib_per_session_{count}"), (client - base_client) / count as f64);
    }
    drop(clients);
    proxies.stop().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(metrics)
}

/// A few seconds of `pgbench -S` on every route, so caches, pools and JITs are warm.
pub async fn warm_up(rig: &Rig, seconds: u32) -> anyhow::Result<()> {
    for route in Route::ALL {
        select(rig, route, 8, seconds).await?;
    }
    Ok(())
}

async fn pgbench(rig: &Rig, route: Route, args: &[String]) -> anyhow::Result<String> {
    let mut command = rig.libpq_command(&rig.options.pgbench, route);
    command.args(args);
    output(command, &format!("pgbench on {}", route.name())).await
}

/// The number after `label` in pgbench's summary, such as `tps = 1234.5 (...)`.
fn pgbench_value(text: &str, label: &str) -> anyhow::Result<f64> {
    text.lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .with_context(|| format!("no {label:?} in pgbench's output:\n{text}"))
}

fn cores() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_gaps_come_from_transaction_ends() {
        // Ends at 1.000000, 1.010000 and 1.025000 s; latencies 300, 400 and 500 us.
        let log = "0 0 300 0 1 0\n0 1 400 0 1 10000\n0 2 500 0 1 25000\nnot a line\n";
        assert_eq!(connect_times_us(log), vec![9600.0, 14500.0]);
    }

    #[test]
    fn reads_pgbench_summaries() {
        let text = "number of transactions actually processed: 1234\n\
                    latency average = 0.405 ms\n\
                    tps = 2466.123456 (without initial connection time)\n";
        assert_eq!(pgbench_value(text, "tps =").unwrap(), 2466.123456);
        assert_eq!(pgbench_value(text, "number of transactions actually processed:").unwrap(), 1234.0);
        assert!(pgbench_value(text, "average connection time =").is_err());
    }
}
