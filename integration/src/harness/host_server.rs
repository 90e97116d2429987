//! The server proxy as a process on the host, for the operations tests: its health port,
//! metrics, signals, open files and memory are all within reach, and it can reach moto's STS
//! on loopback. It talks to the stand-in by the stand-in's address on its Docker network.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::harness::proxies::{AllowedTarget, ProxyPki, SERVER_NAME};
use crate::harness::{HarnessError, StandIn, built_binary, scratch_dir};

/// How to start a host server proxy.
#[derive(Debug, Clone)]
pub struct HostServerOptions {
    pub targets: Vec<AllowedTarget>,
    /// TOML appended to the generated configuration.
    pub extra_toml: String,
    /// Runs the proxy under `prlimit --nofile=SOFT:HARD`, the limits a user's shell gives.
    pub nofile: Option<(u64, u64)>,
    pub log_level: String,
    /// Log as JSON.
    pub json_logs: bool,
    /// More keys of the `[listen]` section, one per line.
    pub listen_toml: String,
    /// More fixed addresses for endpoint names, besides the stand-in's.
    pub resolve: Vec<(String, std::net::IpAddr)>,
}

impl HostServerOptions {
    pub fn new(targets: Vec<AllowedTarget>) -> HostServerOptions {
        HostServerOptions {
            targets,
            extra_toml: String::new(),
            nofile: None,
            log_level: "info".to_owned(),
            json_logs: false,
            listen_toml: String::new(),
            resolve: Vec::new(),
        }
    }
}

/// A running host server proxy; dropping it kills the process.
#[derive(Debug)]
pub struct HostServer {
    child: Child,
    addr: SocketAddr,
    health: SocketAddr,
    dir: PathBuf,
    stderr: PathBuf,
}

/// A free port on 127.0.0.1, released for the proxy to bind.
fn free_port() -> Result<u16, HarnessError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(HarnessError::io("cannot bind"))?;
    Ok(listener.local_addr().map_err(HarnessError::io("no address"))?.port())
}

impl HostServer {
    /// Starts the proxy on 127.0.0.1 with the proxies' PKI, trusting the stand-in's CA and
    /// naming the stand-in's endpoint by its network address, and waits until `/readiness`
    /// answers 200.
    pub async fn start(
        standin: &StandIn,
        pki: &ProxyPki,
        options: &HostServerOptions,
    ) -> Result<HostServer, HarnessError> {
        let dir = scratch_dir("host-server")?;
        let (port, health_port) = (free_port()?, free_port()?);
        let ip = standin
            .network_ip()
            .ok_or_else(|| HarnessError::Docker("the stand-in has no network address".into()))?;
        let cancel_key = dir.join("cancel.key");
        std::fs::write(&cancel_key, &pki.cancel_key)
            .map_err(HarnessError::io("cannot write the cancel key"))?;
        let mut toml = format!(
            "[listen]\naddress = \"127.0.0.1:{port}\"\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n{}\n\
             [upstream]\nca_file = \"{}\"\nconnect_timeout = \"2s\"\nconnect_attempts = 2\n\
             resolve = {{ \"{}\" = [\"{ip}\"]{} }}\n\n\
             [health]\naddress = \"127.0.0.1:{health_port}\"\n\n\
             [cancel]\nkey_files = [\"{}\"]\n\n\
             [log]\nlevel = \"{}\"\nformat = \"{}\"\n\n",
            pki.server.cert.display(),
            pki.server.key.display(),
            pki.pki.ca_pem_path().display(),
            options.listen_toml,
            standin.ca_pem_path().display(),
            standin.alias(),
            options.resolve.iter().map(|(name, ip)| format!(", \"{name}\" = [\"{ip}\"]")).collect::<String>(),
            cancel_key.display(),
            options.log_level,
            if options.json_logs { "json" } else { "text" },
        );
        for target in &options.targets {
            let auth: Vec<String> = target.auth.iter().map(|a| format!("\"{a}\"")).collect();
            toml.push_str(&format!(
                "[[targets]]\nendpoint = \"{}\"\nauth = [{}]\n\n",
                target.endpoint,
                auth.join(", ")
            ));
        }
        // Identity proofs go to STS, which tests never reach unless they bring moto.
        if !options.extra_toml.contains("[identity]") {
            toml.push_str("[identity]\nverify = false\n\n");
        }
        toml.push_str(&options.extra_toml);
        let config = dir.join("server.toml");
        std::fs::write(&config, toml).map_err(HarnessError::io("cannot write the server configuration"))?;
        let stderr_path = dir.join("stderr.log");
        let stderr =
            std::fs::File::create(&stderr_path).map_err(HarnessError::io("cannot create the log"))?;
        let binary = built_binary("rds-auth-proxy-server")?;
        let mut command = match options.nofile {
            Some((soft, hard)) => {
                let mut command = Command::new("prlimit");
                command.arg(format!("--nofile={soft}:{hard}")).arg("--").arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .arg("--config")
            .arg(&config)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true);
        let child = command.spawn().map_err(HarnessError::io("cannot start rds-auth-proxy-server"))?;
        let server = HostServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            health: SocketAddr::from(([127, 0, 0, 1], health_port)),
            dir,
            stderr: stderr_path,
        };
        for _ in 0..200 {
            if server.get("/readiness").await.is_ok_and(|(status, _)| status == 200) {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(HarnessError::Docker(format!("the host server proxy did not become ready:\n{}", server.log())))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn health_addr(&self) -> SocketAddr {
        self.health
    }

    /// The name its certificate carries.
    pub fn server_name(&self) -> &'static str {
        SERVER_NAME
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// `GET path` on the health server: the status code and the body.
    pub async fn get(&self, path: &str) -> Result<(u16, String), HarnessError> {
        http_get(self.health, path).await
    }

    /// One sample of a metric: the value of the first line that starts with `series`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await.ok()?;
        metric_value(&body, series)
    }

    /// Sends a signal by name (`TERM`, `INT`, `HUP`).
    pub async fn signal(&self, name: &str) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().await;
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait()).await.ok().and_then(Result::ok)
    }

    /// Open file descriptors, from /proc.
    pub fn open_files(&self) -> Option<usize> {
        let pid = self.child.id()?;
        Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        proc_rss_kib(self.child.id()?)
    }
}

/// VmRSS of a process, in KiB.
pub fn proc_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The value of the first exposition line that starts with `series` (name and labels).
pub fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A bare HTTP/1.0 GET, enough for the health server.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), HarnessError> {
    let attempt = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
        let mut response = String::new();
        tcp.read_to_string(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .map_err(|_| HarnessError::Docker(format!("{addr}{path} did not answer")))?
        .map_err(HarnessError::io("health request failed"))?;
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// A TCP load balancer in front of server proxies, as an NLB with health checks is: it polls
/// each backend's `/readiness` every 100 ms and hands new connections, in turn, only to the
/// backends that answered 200. Backends come and go with [`HealthFront::set_backends`].
#[derive(Debug)]
pub struct HealthFront {
    addr: SocketAddr,
    backends: std::sync::Arc<std::sync::Mutex<Vec<(SocketAddr, SocketAddr, bool)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl HealthFront {
    /// Starts the front on 127.0.0.1 on the current runtime.
    pub async fn start() -> Result<HealthFront, HarnessError> {
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(HarnessError::io("cannot bind"))?;
        let addr = listener.local_addr().map_err(HarnessError::io("no address"))?;
        let backends =
            std::sync::Arc::new(std::sync::Mutex::new(Vec::<(SocketAddr, SocketAddr, bool)>::new()));
        let polled = backends.clone();
        let poller = tokio::spawn(async move {
            loop {
                let list: Vec<(SocketAddr, SocketAddr)> = polled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .map(|(a, h, _)| (*a, *h))
                    .collect();
                for (addr, health) in list {
                    let ready = http_get(health, "/readiness").await.is_ok_and(|(status, _)| status == 200);
                    let mut backends = polled.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(entry) = backends.iter_mut().find(|(a, _, _)| *a == addr) {
                        entry.2 = ready;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let routed = backends.clone();
        let acceptor = tokio::spawn(async move {
            let mut next = 0usize;
            while let Ok((mut inbound, _)) = listener.accept().await {
                let ready: Vec<SocketAddr> = routed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .filter(|(_, _, ready)| *ready)
                    .map(|(a, _, _)| *a)
                    .collect();
                if ready.is_empty() {
                    continue;
                }
                let backend = ready[next % ready.len()];
                next += 1;
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(HealthFront { addr, backends, tasks: vec![poller, acceptor] })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the backends: each server proxy's address and health address. New ones take
    /// connections once their first readiness check passes.
    pub fn set_backends(&self, servers: &[&HostServer]) {
        let mut backends = self.backends.lock().unwrap_or_else(|p| p.into_inner());
        let old = std::mem::take(&mut *backends);
        for server in servers {
            let ready = old.iter().any(|(a, _, ready)| *a == server.addr() && *ready);
            backends.push((server.addr(), server.health_addr(), ready));
        }
    }
}

impl Drop for HealthFront {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
