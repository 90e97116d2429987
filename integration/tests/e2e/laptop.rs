//! The laptop experience: Unix-socket listeners, direct mode, tunnels to a server proxy behind
//! `kubectl port-forward` or any command, the interactive picker on a terminal, and the
//! error that lists the targets when there is none.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use rds_auth_integration::harness::proxies::{
    ClientOptions, ClientProxy, ClientTarget, SERVER_NAME, Topology,
};
use rds_auth_integration::harness::{Listener, Psql, scratch_dir};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::proxies::connect;
use crate::support::{topology, wait_running};

#[tokio::test]
async fn unix_sockets_in_a_private_directory() {
    let topology = topology().await;
    let dir = scratch_dir("sockets").unwrap().join("run");
    let target = ClientTarget::iam("db", topology.standin.endpoint(Listener::Pam));
    let mut options = ClientOptions::new(topology, vec![target]);
    options.extra_toml = format!("[proxy]\nunix_sockets = true\nunix_socket_dir = \"{}\"\n", dir.display());
    let proxy = ClientProxy::start(&topology.standin, &options).await.unwrap();
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "other users must not reach the socket");
    let port = proxy.addr("db").port();
    assert!(dir.join(format!(".s.PGSQL.{port}")).exists());
    // libpq's own convention: a directory as the host, the port picks the socket.
    let mut psql = Psql::local(proxy.addr("db"), "iam_user");
    psql.host = dir.display().to_string();
    let output = psql.run("SELECT current_user").await.unwrap();
    assert!(output.success, "{}\n{}", output.stderr, proxy.log());
    assert_eq!(output.stdout.trim(), "iam_user");
}

/// Direct mode needs the laptop to reach the database: the test process reaches the
/// stand-in on its internal network by address, named through the resolver override.
fn direct_options(topology: &Topology, targets: Vec<ClientTarget>) -> ClientOptions {
    let ip = topology.standin.network_ip().expect("the stand-in has an address");
    let mut options = ClientOptions::new(topology, targets);
    options.upstream_toml = Some(format!(
        "[upstreams.default]\nkind = \"direct\"\nca = \"{}\"\n",
        topology.standin.ca_pem_path().display()
    ));
    options.extra_toml = format!("[resolve]\n\"{}\" = [\"{ip}\"]\n", topology.standin.alias());
    options
}

#[tokio::test]
async fn direct_mode_logs_in_and_cancels_without_a_server_proxy() {
    let topology = topology().await;
    let endpoint = topology.standin.endpoint(Listener::Pam);
    let targets = vec![
        ClientTarget::iam("iam", &endpoint),
        ClientTarget::iam("pass", &endpoint).with_auth("passthrough"),
        ClientTarget::iam("scram", &endpoint).with_password("scram-secret"),
    ];
    let proxy = ClientProxy::start(&topology.standin, &direct_options(topology, targets)).await.unwrap();
    let output = Psql::local(proxy.addr("iam"), "iam_user").run("SELECT current_user").await.unwrap();
    assert!(output.success, "{}\n{}", output.stderr, proxy.log());
    assert_eq!(output.stdout.trim(), "iam_user");
    let output = Psql::local(proxy.addr("pass"), "scram_user")
        .password("scram-secret")
        .run("SELECT current_user")
        .await
        .unwrap();
    assert!(output.success, "{}", output.stderr);
    let output = Psql::local(proxy.addr("scram"), "scram_user").run("SELECT current_user").await.unwrap();
    assert!(output.success, "{}", output.stderr);

    // Cancel goes straight to the database, at the address the session used.
    let client = connect(&proxy, "iam", "iam_user", "app").await;
    let watcher = connect(&proxy, "iam", "iam_user", "app").await;
    let query = "SELECT pg_sleep(60) /* direct cancel */";
    let token = client.cancel_token();
    let running =
        tokio::spawn(async move { client.batch_execute(query).await.err().and_then(|e| e.code().cloned()) });
    wait_running(&watcher, query, true).await;
    token.cancel_query(NoTls).await.unwrap();
    let code = tokio::time::timeout(Duration::from_secs(30), running).await.unwrap().unwrap();
    assert_eq!(code, Some(SqlState::QUERY_CANCELED));

    // The database's refusals reach the client whole; ours carry a hint.
    let output =
        Psql::local(proxy.addr("iam"), "iam_user").dbname("no_such_db").run("SELECT 1").await.unwrap();
    assert!(output.stderr.contains("FATAL:  database \"no_such_db\" does not exist"), "{}", output.stderr);
    let output = Psql::local(proxy.addr("iam"), "scram_user").run("SELECT 1").await.unwrap();
    assert!(
        output.stderr.contains("role \"scram_user\" is not enabled for IAM authentication"),
        "{}",
        output.stderr
    );
    assert!(output.stderr.contains("HINT:  GRANT rds_iam TO the user"), "{}", output.stderr);
}

/// A stand-in `kubectl`: for `port-forward ... :5432` it forwards a free local port to the
/// server proxy named in FAKE_KUBECTL_TARGET, announces it as kubectl does, and records each
/// start; it exits when the file FAKE_KUBECTL_DIE appears, as kubectl does when its pod goes.
/// With FAKE_KUBECTL_PID set it writes its process id there.
const FAKE_KUBECTL: &str = r#"#!/usr/bin/env python3
import os, socket, sys, threading, time
assert sys.argv[1] == "port-forward" and sys.argv[-1] == ":5432", sys.argv
if "FAKE_KUBECTL_PID" in os.environ:
    with open(os.environ["FAKE_KUBECTL_PID"] + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(os.environ["FAKE_KUBECTL_PID"] + ".tmp", os.environ["FAKE_KUBECTL_PID"])
with open(os.environ["FAKE_KUBECTL_LOG"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\n")
host, port = os.environ["FAKE_KUBECTL_TARGET"].rsplit(":", 1)
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print(f"Forwarding from 127.0.0.1:{listener.getsockname()[1]} -> 5432", flush=True)
def pipe(a, b):
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try: s.shutdown(socket.SHUT_RDWR)
            except OSError: pass
def serve():
    while True:
        client, _ = listener.accept()
        upstream = socket.create_connection((host, int(port)))
        threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
threading.Thread(target=serve, daemon=True).start()
while not os.path.exists(os.environ["FAKE_KUBECTL_DIE"]):
    time.sleep(0.1)
os.remove(os.environ["FAKE_KUBECTL_DIE"])
sys.exit(1)
"#;

/// The files the fake kubectl of one test writes and watches.
struct FakeKubectl {
    /// One line of arguments per start.
    log: PathBuf,
    /// Created by the test to make kubectl exit.
    die: PathBuf,
    /// The running kubectl's process id.
    pid: PathBuf,
}

/// Options for a client proxy with one target, `db`, whose server proxy it reaches through
/// the fake kubectl, installed in a scratch directory of its own.
fn through_fake_kubectl(topology: &Topology, name: &str) -> (ClientOptions, FakeKubectl) {
    let dir = scratch_dir(name).unwrap();
    let kubectl = dir.join("kubectl");
    std::fs::write(&kubectl, FAKE_KUBECTL).unwrap();
    std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let files =
        FakeKubectl { log: dir.join("starts.log"), die: dir.join("die"), pid: dir.join("kubectl.pid") };
    let target = ClientTarget::iam("db", topology.standin.endpoint(Listener::Pam));
    let mut options = ClientOptions::new(topology, vec![target]);
    let identity = &topology.pki.alice;
    options.upstream_toml = Some(format!(
        "[upstreams.default]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nserver_name = \"{SERVER_NAME}\"\n\
         tunnel = {{ kind = \"kubectl\", resource = \"svc/rds-auth-proxy\", namespace = \"db\", context = \"test\", kubectl = \"{}\" }}\n",
        topology.pki.pki.ca_pem_path().display(),
        identity.cert.display(),
        identity.key.display(),
        kubectl.display(),
    ));
    options.env = vec![
        ("FAKE_KUBECTL_TARGET".to_owned(), topology.server.addr().to_string()),
        ("FAKE_KUBECTL_LOG".to_owned(), files.log.display().to_string()),
        ("FAKE_KUBECTL_DIE".to_owned(), files.die.display().to_string()),
        ("FAKE_KUBECTL_PID".to_owned(), files.pid.display().to_string()),
    ];
    (options, files)
}

#[tokio::test]
async fn a_kubectl_tunnel_survives_its_pod_going_away() {
    let topology = topology().await;
    let (options, FakeKubectl { log, die, .. }) = through_fake_kubectl(topology, "kubectl");
    let proxy = ClientProxy::start(&topology.standin, &options).await.unwrap();
    let output = Psql::local(proxy.addr("db"), "iam_user").run("SELECT 'through the tunnel'").await.unwrap();
    assert!(output.success, "{}\n{}", output.stderr, proxy.log());
    let first = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        first.lines().next(),
        Some("port-forward --namespace db --context test --address 127.0.0.1 svc/rds-auth-proxy :5432")
    );

    // The pod goes away: kubectl exits, the proxy starts it again, sessions work again.
    std::fs::write(&die, "").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&log).unwrap().lines().count() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = Psql::local(proxy.addr("db"), "iam_user").run("SELECT 'after the restart'").await.unwrap();
    assert!(output.success, "{}\n{}", output.stderr, proxy.log());
    assert!(std::fs::read_to_string(&log).unwrap().lines().count() >= 2, "kubectl was not started again");
}

/// A client proxy killed with SIGKILL cannot stop its tunnel itself; the kernel must (Linux's
/// parent-death signal), or every crash would leave a `kubectl port-forward` behind.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_killed_client_proxy_takes_its_tunnel_with_it() {
    let topology = topology().await;
    let (options, files) = through_fake_kubectl(topology, "kubectl-orphan");
    let mut proxy = ClientProxy::start(&topology.standin, &options).await.unwrap();
    let output = Psql::local(proxy.addr("db"), "iam_user").run("SELECT 'through the tunnel'").await.unwrap();
    assert!(output.success, "{}\n{}", output.stderr, proxy.log());
    let kubectl_pid: u32 = std::fs::read_to_string(&files.pid).unwrap().trim().parse().unwrap();
    assert!(alive(kubectl_pid), "the tunnel runs while the proxy does");

    let status = proxy.kill().await.expect("the client proxy dies");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive(kubectl_pid) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(kubectl_pid), "kubectl (pid {kubectl_pid}) outlived the client proxy that started it");
}

/// Whether a process runs: it exists and is not a zombie waiting for its new parent to reap it.
#[cfg(target_os = "linux")]
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn a_command_tunnel_with_a_fixed_port() {
    let topology = topology().await;
    let dir = scratch_dir("command-tunnel").unwrap();
    // socat-like forwarder in Python, as `aws ssm start-session` would open a fixed port.
    let forwarder = dir.join("forward.py");
    let port = free_port();
    std::fs::write(
        &forwarder,
        FAKE_KUBECTL
            .replace("listener.bind((\"127.0.0.1\", 0))", &format!("listener.bind((\"127.0.0.1\", {port}))")),
    )
    .unwrap();
    let target = ClientTarget::iam("db", topology.standin.endpoint(Listener::Pam));
    let mut options = ClientOptions::new(topology, vec![target]);
    let identity = &topology.pki.alice;
    options.upstream_toml = Some(format!(
        "[upstreams.default]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nserver_name = \"{SERVER_NAME}\"\n\
         tunnel = {{ kind = \"command\", command = [\"python3\", \"{}\", \"port-forward\", \":5432\"], local_port = {port} }}\n",
        topology.pki.pki.ca_pem_path().display(),
        identity.cert.display(),
        identity.key.display(),
        forwarder.display(),
    ));
    options.env = vec![
        ("FAKE_KUBECTL_TARGET".to_owned(), topology.server.addr().to_string()),
        ("FAKE_KUBECTL_LOG".to_owned(), dir.join("starts.log").display().to_string()),
        ("FAKE_KUBECTL_DIE".to_owned(), dir.join("die").display().to_string()),
    ];
    let proxy = ClientProxy::start(&topology.standin, &options).await.unwrap();
    let output = Psql::local(proxy.addr("db"), "iam_user").run("SELECT 'through the command'").await.unwrap();
    assert!(output.success, "{}\n{}", output.stderr, proxy.log());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn without_a_terminal_connect_lists_the_targets() {
    let topology = topology().await;
    let targets = vec![
        ClientTarget::iam("orders", topology.standin.endpoint(Listener::Pam)),
        ClientTarget::iam("billing", topology.standin.endpoint(Listener::Pam)),
    ];
    let options = ClientOptions::new(topology, targets);
    let output = ClientProxy::run_once(&topology.standin, &options, &["connect"]).await.unwrap();
    assert_eq!(output.status.code(), Some(64), "a usage error exits with EX_USAGE");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no target given, and no terminal to pick one on"), "{stderr}");
    assert!(stderr.contains("targets: billing, orders"), "{stderr}");
}

#[tokio::test]
async fn the_picker_filters_as_you_type_and_takes_several() {
    let topology = topology().await;
    let targets = vec![
        ClientTarget::iam("orders-primary", topology.standin.endpoint(Listener::Pam)),
        ClientTarget::iam("orders-replica", topology.standin.endpoint(Listener::Pam)),
        ClientTarget::iam("billing", topology.standin.endpoint(Listener::Pam)),
    ];
    let options = ClientOptions::new(topology, targets);
    let dir = scratch_dir("picker").unwrap();
    let script = ClientProxy::script(&topology.standin, &options, &dir, &["connect"]).unwrap();
    let session = format!("rds-auth-picker-{}", std::process::id());
    let tmux = |args: &[&str]| {
        std::process::Command::new("tmux").args(args).stdout(Stdio::piped()).output().unwrap()
    };
    let out = dir.join("stdout");
    // stdout to a file for the psql lines; stdin and stderr stay the terminal, where the
    // picker draws.
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "160",
        "-y",
        "40",
        &format!("{} > {}", script.display(), out.display()),
    ]);
    assert!(started.status.success(), "tmux: {}", String::from_utf8_lossy(&started.stderr));
    let screen = |session: &str| {
        String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", session]).stdout).into_owned()
    };
    wait_for(|| screen(&session).contains("Targets to connect to"), "the picker").await;
    // Type to filter (fuzzy: a typo still matches), select both matches, confirm.
    tmux(&["send-keys", "-t", &session, "ordrs"]);
    wait_for(
        || {
            let s = screen(&session);
            s.contains("ordrs") && !s.contains("billing")
        },
        "the filtered list",
    )
    .await;
    tmux(&["send-keys", "-t", &session, "Space", "Down", "Space", "Enter"]);
    wait_for(
        || std::fs::read_to_string(&out).unwrap_or_default().matches("  psql ").count() >= 2,
        "two listeners",
    )
    .await;
    let printed = std::fs::read_to_string(&out).unwrap();
    let _ = tmux(&["kill-session", "-t", &session]);
    assert!(printed.contains("orders-primary -> "), "{printed}");
    assert!(printed.contains("orders-replica -> "), "{printed}");
    assert!(!printed.contains("billing -> "), "filtered out, yet connected:\n{printed}");
}

async fn wait_for(mut ready: impl FnMut() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "{what} did not appear within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
