//! Tunnels to a server proxy that is not directly reachable: `kubectl port-forward`, or any
//! command that opens a local port (`aws ssm start-session ... AWS-StartPortForwardingSession`).
//!
//! A tunnel is a supervised child process. It is started when the client proxy starts; when it
//! dies (the pod went away, the SSM session timed out) it is started again with a growing
//! delay; sessions wait for it, up to their connect timeout, while it is down. The address is
//! read from kubectl's `Forwarding from 127.0.0.1:<port>` line, or is the fixed port the
//! command was told to open, once that port accepts connections.
//!
//! A tunnel command never outlives the client proxy: it is killed when the proxy drops it or
//! exits, and on Linux the kernel also sends it SIGTERM when the proxy dies without a chance to
//! clean up (SIGKILL, OOM), so no `kubectl port-forward` is left holding a port. That reaches
//! the command itself, not processes it starts and leaves behind. macOS has no such signal;
//! there a killed proxy leaves the command running until it exits on its own.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Where the local end of a tunnel appears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelPort {
    /// The command prints it: kubectl's `Forwarding from 127.0.0.1:<port> -> <remote>`.
    Announced,
    /// The command opens this port on 127.0.0.1.
    Fixed(u16),
}

/// A command that opens a local port leading to a server proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelSpec {
    pub name: String,
    pub program: String,
    pub args: Vec<String>,
    pub port: TunnelPort,
}

impl TunnelSpec {
    /// `kubectl port-forward` to a Service or Deployment (`svc/rds-auth-proxy`,
    /// `deployment/rds-auth-proxy`), on a port kubectl picks. KUBECONFIG is inherited.
    pub fn kubectl(
        name: &str,
        resource: &str,
        remote_port: u16,
        namespace: Option<&str>,
        context: Option<&str>,
        kubeconfig: Option<&str>,
        kubectl: &str,
    ) -> TunnelSpec {
        let mut args = vec!["port-forward".to_owned()];
        if let Some(namespace) = namespace {
            args.extend(["--namespace".to_owned(), namespace.to_owned()]);
        }
        if let Some(context) = context {
            args.extend(["--context".to_owned(), context.to_owned()]);
        }
        if let Some(kubeconfig) = kubeconfig {
            args.extend(["--kubeconfig".to_owned(), kubeconfig.to_owned()]);
        }
        args.extend(["--address".to_owned(), "127.0.0.1".to_owned()]);
        args.push(resource.to_owned());
        args.push(format!(":{remote_port}"));
        TunnelSpec { name: name.to_owned(), program: kubectl.to_owned(), args, port: TunnelPort::Announced }
    }
}

/// A running, supervised tunnel.
#[derive(Debug)]
pub struct Tunnel {
    name: String,
    addr: watch::Receiver<Option<SocketAddr>>,
    stop: CancellationToken,
}

const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// How long a fixed-port command may take to open its port.
const PORT_WAIT: Duration = Duration::from_secs(30);

impl Tunnel {
    /// Starts the tunnel and its supervisor on the current runtime.
    pub fn spawn(spec: TunnelSpec) -> Tunnel {
        let (tx, rx) = watch::channel(None);
        let stop = CancellationToken::new();
        let name = spec.name.clone();
        tokio::spawn(supervise(spec, tx, stop.clone()));
        Tunnel { name, addr: rx, stop }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The local address, waiting up to `timeout` for the tunnel to be up.
    pub async fn addr(&self, timeout: Duration) -> Option<SocketAddr> {
        let mut rx = self.addr.clone();
        let wait = async {
            loop {
                if let Some(addr) = *rx.borrow_and_update() {
                    return Some(addr);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn supervise(spec: TunnelSpec, addr: watch::Sender<Option<SocketAddr>>, stop: CancellationToken) {
    let mut delay = FIRST_RETRY;
    loop {
        let started = std::time::Instant::now();
        tokio::select! {
            () = stop.cancelled() => return,
            () = run_once(&spec, &addr) => {}
        }
        let _ = addr.send(None);
        // A tunnel that stayed up a while gets a quick restart; one that keeps dying backs off.
        if started.elapsed() > MAX_RETRY {
            delay = FIRST_RETRY;
        }
        warn!(tunnel = %spec.name, retry_in = ?delay, "the tunnel exited; restarting it");
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_RETRY);
    }
}

/// Runs the command once, publishing its address while it is up.
async fn run_once(spec: &TunnelSpec, addr: &watch::Sender<Option<SocketAddr>>) {
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(target_os = "linux")]
    die_with_parent(&mut command);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            warn!(tunnel = %spec.name, program = %spec.program, error = %e, "cannot start the tunnel");
            return;
        }
    };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let name = spec.name.clone();
    if let Some(stderr) = stderr {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                warn!(tunnel = %name, "{line}");
            }
        });
    }
    let announced = match &spec.port {
        TunnelPort::Announced => {
            let Some(stdout) = stdout else { return };
            let mut lines = BufReader::new(stdout).lines();
            let mut found = None;
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(port) = forwarded_port(&line) {
                    found = Some(SocketAddr::from(([127, 0, 0, 1], port)));
                    break;
                }
            }
            // Keep reading, so the command never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            found
        }
        TunnelPort::Fixed(port) => {
            let target = SocketAddr::from(([127, 0, 0, 1], *port));
            if let Some(stdout) = stdout {
                tokio::spawn(async move {
                    let mut lines = BufReader::new(stdout).lines();
                    while let Ok(Some(_)) = lines.next_line().await {}
                });
            }
            wait_for_port(target).await.then_some(target)
        }
    };
    match announced {
        Some(local) => {
            info!(tunnel = %spec.name, local = %local, "tunnel up");
            let _ = addr.send(Some(local));
        }
        None => warn!(tunnel = %spec.name, "the tunnel never reported a local port"),
    }
    let _ = child.wait().await;
}

/// Asks the kernel to send the command SIGTERM when the thread that started it ends. Tunnels
/// are started from the runtime's worker threads, which live as long as the process
/// (`block_in_place`, which would turn a worker into a blocking thread that may exit when
/// idle, is disallowed in clippy.toml).
#[cfg(target_os = "linux")]
#[allow(unsafe_code, reason = "pre_exec is the only way to set the death signal of a child")]
fn die_with_parent(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed: signal, prctl and getppid are, and building an io::Error from an OS
    // error code does not allocate.
    unsafe {
        command.pre_exec(move || {
            // Until exec the child still has the proxy's SIGTERM handler, which would swallow the
            // death signal if the proxy died in that window.
            if libc::signal(libc::SIGTERM, libc::SIG_DFL) == libc::SIG_ERR {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The proxy may have died between fork and prctl, before the signal was armed.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// The local port in kubectl's `Forwarding from 127.0.0.1:40123 -> 5432`.
fn forwarded_port(line: &str) -> Option<u16> {
    let rest = line.trim().strip_prefix("Forwarding from ")?;
    let (local, _) = rest.split_once(" -> ")?;
    let (host, port) = local.rsplit_once(':')?;
    (host == "127.0.0.1" || host == "[::1]" || host == "localhost").then_some(())?;
    port.parse().ok()
}

async fn wait_for_port(addr: SocketAddr) -> bool {
    let deadline = tokio::time::Instant::now() + PORT_WAIT;
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_lines() {
        assert_eq!(forwarded_port("Forwarding from 127.0.0.1:40123 -> 5432"), Some(40123));
        assert_eq!(forwarded_port("Forwarding from [::1]:40123 -> 5432"), Some(40123));
        assert_eq!(forwarded_port("Handling connection for 40123"), None);
        assert_eq!(forwarded_port("Forwarding from 0.0.0.0:40123 -> 5432"), None);
    }

    #[test]
    fn kubectl_arguments() {
        let spec = TunnelSpec::kubectl(
            "prod",
            "svc/rds-auth-proxy",
            5432,
            Some("db"),
            Some("eks-prod"),
            None,
            "kubectl",
        );
        assert_eq!(
            spec.args,
            [
                "port-forward",
                "--namespace",
                "db",
                "--context",
                "eks-prod",
                "--address",
                "127.0.0.1",
                "svc/rds-auth-proxy",
                ":5432"
            ]
        );
    }

    /// A stand-in kubectl: a shell script that announces a port like kubectl and listens on
    /// it, then exits on its own (the pod went away); the supervisor must start it again.
    #[tokio::test]
    async fn a_dying_tunnel_comes_back() {
        let dir = std::env::temp_dir().join(format!("rds-auth-tunnel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let count = dir.join("starts");
        let script = format!(
            "echo started >> {count}; port=$((20000 + $$ % 20000)); echo \"Forwarding from 127.0.0.1:$port -> 5432\"; sleep 1",
            count = count.display()
        );
        let spec = TunnelSpec {
            name: "test".into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script],
            port: TunnelPort::Announced,
        };
        let tunnel = Tunnel::spawn(spec);
        let first = tunnel.addr(Duration::from_secs(10)).await.expect("the tunnel comes up");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let second = tunnel.addr(Duration::from_secs(10)).await.expect("the tunnel comes back");
        let starts = std::fs::read_to_string(&count).unwrap().lines().count();
        assert!(starts >= 2, "the tunnel was started {starts} time(s)");
        let _ = (first, second);
        drop(tunnel);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
