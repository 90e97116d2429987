//! The two proxies as users run them: the server proxy in a container built from the binary
//! just compiled, the client proxy as a process on the host.
//!
//! [`Topology`] is the production shape in miniature:
//!
//! ```text
//!  host: client proxy ──► 127.0.0.1:<published> ──► server proxy ──► stand-in (Postgres)
//!                          edge network               both networks   internal network
//! ```
//!
//! The stand-in sits on an internal network that only the server proxy joins as well, so a
//! probe container on the edge network cannot reach the database, and the proxies can.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use aws_lc_rs::digest;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::OnceCell;

use crate::harness::container::{Container, ContainerSpec};
use crate::harness::{
    CertFiles, HarnessError, Signer, StandIn, StandInOptions, TestPki, built_binary, check_docker,
    docker_task, ensure_network, scratch_dir,
};

/// The server-proxy image `cargo xtask images` builds from the debug binary.
pub const SERVER_IMAGE: &str = "rds-auth-proxy-test/server:latest";
const BINARY_LABEL: &str = "rds-auth-proxy.binary-sha256";
/// The server proxy's name on its certificate, as client proxies address it.
pub const SERVER_NAME: &str = "proxy.test";
const SERVER_PORT: u16 = 5432;
const LIFELINE_PORT: u16 = 5439;
const READY_LINE: &str = "SERVER PROXY READY";

/// A target the server proxy allows: endpoint and accepted auth modes.
#[derive(Debug, Clone)]
pub struct AllowedTarget {
    pub endpoint: String,
    pub auth: Vec<&'static str>,
}

impl AllowedTarget {
    pub fn new(endpoint: impl Into<String>, auth: &[&'static str]) -> AllowedTarget {
        AllowedTarget { endpoint: endpoint.into(), auth: auth.to_vec() }
    }
}

/// How to start a server proxy.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub targets: Vec<AllowedTarget>,
    pub log_level: String,
    /// TOML appended to the generated configuration, for settings a test needs.
    pub extra_toml: String,
}

/// A server proxy in a container.
#[derive(Debug)]
pub struct ServerProxy {
    container: Container,
    addr: SocketAddr,
    db_ip: IpAddr,
    _lifeline: TcpStream,
}

impl ServerProxy {
    /// Where the host reaches it: 127.0.0.1 and a published port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn container(&self) -> &Container {
        &self.container
    }

    /// Its address on the database network: the client address Postgres sees for its sessions.
    pub fn db_ip(&self) -> IpAddr {
        self.db_ip
    }
}

/// The PKI of the proxies: their CA, the server proxy's certificate, and client certificates
/// for `alice@corp` and `bob@corp`.
#[derive(Debug)]
pub struct ProxyPki {
    pub pki: TestPki,
    pub server: CertFiles,
    pub alice: CertFiles,
    pub bob: CertFiles,
    /// The cancel key every replica shares, as 64 hex digits.
    pub cancel_key: String,
}

impl ProxyPki {
    pub fn new() -> Result<ProxyPki, HarnessError> {
        let pki = TestPki::new("proxies")?;
        let server = pki.server("server", &[SERVER_NAME, "localhost", "127.0.0.1"])?;
        let alice = pki.client("alice", "alice@corp")?;
        let bob = pki.client("bob", "bob@corp")?;
        let cancel_key: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        Ok(ProxyPki { pki, server, alice, bob, cancel_key })
    }
}

/// The stand-in on an internal network, and two server-proxy replicas joining it from the
/// edge, which share a cancel key. `server` is the first replica; `front` spreads connections
/// over both in turn, as a TCP load balancer does.
#[derive(Debug)]
pub struct Topology {
    pub standin: StandIn,
    pub server: ServerProxy,
    pub replica: ServerProxy,
    pub front: RoundRobin,
    pub pki: ProxyPki,
    pub db_network: String,
    pub edge_network: String,
}

impl Topology {
    /// The topology every test of this process shares, with the targets the tests use.
    pub async fn shared() -> Result<&'static Topology, HarnessError> {
        static SHARED: OnceCell<Topology> = OnceCell::const_new();
        SHARED.get_or_try_init(|| Topology::start("shared", "info")).await
    }

    /// A topology of its own; `log_level` is the server proxy's.
    pub async fn start(name: &str, log_level: &str) -> Result<Topology, HarnessError> {
        let pid = std::process::id();
        let db_network = format!("rds-auth-db-{name}-{pid}");
        let edge_network = format!("rds-auth-edge-{name}-{pid}");
        let standin = StandIn::start(
            StandInOptions::new().with_internal_network(&db_network).with_extra_alias(UNCERTIFIED_ALIAS),
        )
        .await?;
        let pki = ProxyPki::new()?;
        let alias = standin.alias().to_owned();
        let options = ServerOptions {
            targets: vec![
                AllowedTarget::new(format!("{alias}:5432"), &["iam", "password", "passthrough"]),
                AllowedTarget::new(format!("{alias}:5433"), &["iam"]),
                // The same database under a name its certificate does not carry.
                AllowedTarget::new(format!("{UNCERTIFIED_ALIAS}:5432"), &["iam", "password"]),
                // Allowed, but nothing answers there.
                AllowedTarget::new(format!("{alias}:6543"), &["iam"]),
            ],
            log_level: log_level.to_owned(),
            extra_toml: String::new(),
        };
        let server = start_server(&standin, &pki, &db_network, &edge_network, &options).await?;
        let replica = start_server(&standin, &pki, &db_network, &edge_network, &options).await?;
        let front = RoundRobin::start(vec![server.addr(), replica.addr()]).await?;
        Ok(Topology { standin, server, replica, front, pki, db_network, edge_network })
    }
}

/// Another name of the stand-in on the database network, missing from its certificate.
pub const UNCERTIFIED_ALIAS: &str = "pg-alias.rds.test";

/// Starts a server proxy on `edge_network`, joined to `db_network`, trusting the stand-in's
/// CA for the databases.
pub async fn start_server(
    standin: &StandIn,
    pki: &ProxyPki,
    db_network: &str,
    edge_network: &str,
    options: &ServerOptions,
) -> Result<ServerProxy, HarnessError> {
    check_docker(SERVER_IMAGE).await?;
    check_server_image().await?;
    ensure_network(edge_network).await?;
    let ca = std::fs::read_to_string(standin.ca_pem_path())
        .map_err(HarnessError::io("cannot read the stand-in's CA"))?;
    let config = server_config(options);
    let spec = ContainerSpec::new(SERVER_IMAGE)
        .with_name_prefix("rds-auth-server")
        .with_entrypoint(&["/bin/sh", "/etc/rds-auth-proxy/run.sh"])
        .with_file("/etc/rds-auth-proxy/run.sh", RUN_SH, 0o755)
        .with_file("/etc/rds-auth-proxy/server.toml", config, 0o644)
        .with_file("/etc/rds-auth-proxy/tls/server.crt", pki.server.pem.cert_pem.clone(), 0o644)
        .with_file("/etc/rds-auth-proxy/tls/server.key", pki.server.pem.key_pem.clone(), 0o644)
        .with_file("/etc/rds-auth-proxy/tls/ca.crt", pki.pki.ca().cert_pem().to_owned(), 0o644)
        .with_file("/etc/rds-auth-proxy/tls/db-ca.crt", ca, 0o644)
        .with_file("/etc/rds-auth-proxy/cancel.key", pki.cancel_key.clone(), 0o644)
        .with_port(SERVER_PORT)
        .with_port(LIFELINE_PORT)
        .with_network(edge_network, &[SERVER_NAME])
        .with_ready_line(READY_LINE)
        .with_auto_remove();
    let container = Container::start(spec).await?;
    let db_ip = container.connect_network(db_network, &[]).await?;
    let addr =
        container.host_addr(SERVER_PORT).ok_or_else(|| HarnessError::Docker("port not published".into()))?;
    let lifeline_addr = container
        .host_addr(LIFELINE_PORT)
        .ok_or_else(|| HarnessError::Docker("port not published".into()))?;
    let lifeline = TcpStream::connect_timeout(&lifeline_addr, Duration::from_secs(10))
        .map_err(HarnessError::io("cannot reach the server proxy's lifeline"))?;
    Ok(ServerProxy { container, addr, db_ip, _lifeline: lifeline })
}

/// Runs the server proxy next to a lifeline: the container stops when the test process lets
/// go of its connection to port 5439, even if the process is killed.
const RUN_SH: &str = r#"#!/bin/sh
/usr/local/bin/rds-auth-proxy-server --config /etc/rds-auth-proxy/server.toml &
server=$!
until nc -z 127.0.0.1 5432 2>/dev/null; do
  kill -0 "$server" 2>/dev/null || { echo "the server proxy exited during startup" >&2; exit 1; }
  sleep 0.05
done
echo "SERVER PROXY READY"
nc -l 5439 </dev/null >/dev/null
kill -TERM "$server"
wait "$server"
"#;

fn server_config(options: &ServerOptions) -> String {
    let mut toml = String::from(
        "[listen]\n\
         address = \"0.0.0.0:5432\"\n\
         cert = \"/etc/rds-auth-proxy/tls/server.crt\"\n\
         key = \"/etc/rds-auth-proxy/tls/server.key\"\n\
         client_ca = \"/etc/rds-auth-proxy/tls/ca.crt\"\n\n\
         [upstream]\n\
         ca_file = \"/etc/rds-auth-proxy/tls/db-ca.crt\"\n\
         connect_timeout = \"2s\"\n\
         connect_attempts = 2\n\n\
         [cancel]\n\
         key_files = [\"/etc/rds-auth-proxy/cancel.key\"]\n\n",
    );
    let _ = writeln!(toml, "[log]\nlevel = \"{}\"\n", options.log_level);
    for target in &options.targets {
        let auth: Vec<String> = target.auth.iter().map(|a| format!("\"{a}\"")).collect();
        let _ =
            writeln!(toml, "[[targets]]\nendpoint = \"{}\"\nauth = [{}]\n", target.endpoint, auth.join(", "));
    }
    // Identity proofs go to STS, which tests never reach: only a test that brings its own STS
    // (moto) turns verification on.
    if !options.extra_toml.contains("[identity]") {
        toml.push_str("[identity]\nverify = false\n\n");
    }
    toml.push_str(&options.extra_toml);
    toml
}

/// Fails unless the server image was built from the binary on disk.
async fn check_server_image() -> Result<(), HarnessError> {
    let binary = built_binary("rds-auth-proxy-server")?;
    let bytes = std::fs::read(&binary).map_err(HarnessError::io("cannot read the server binary"))?;
    let sha: String =
        digest::digest(&digest::SHA256, &bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let label = docker_task(async move {
        let docker = crate::harness::container::client().await?;
        let image = docker
            .inspect_image(SERVER_IMAGE)
            .await
            .map_err(|e| HarnessError::Docker(format!("cannot inspect {SERVER_IMAGE}: {e}")))?;
        Ok(image.config.and_then(|c| c.labels).and_then(|l| l.get(BINARY_LABEL).cloned()).unwrap_or_default())
    })
    .await?;
    if label != sha {
        return Err(HarnessError::Docker(format!(
            "{SERVER_IMAGE} was built from another rds-auth-proxy-server than {}: run `cargo xtask images` \
             (cargo xtask test does it) so the tests never run a stale binary",
            binary.display()
        )));
    }
    Ok(())
}

/// A TCP front that hands each new connection to the next backend in turn, as a load
/// balancer in front of server-proxy replicas does. It runs as long as it is kept.
#[derive(Debug)]
pub struct RoundRobin {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl RoundRobin {
    pub async fn start(backends: Vec<SocketAddr>) -> Result<RoundRobin, HarnessError> {
        let runtime = crate::harness::docker::docker_runtime()?;
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(HarnessError::io("cannot bind the front"))?;
        listener.set_nonblocking(true).map_err(HarnessError::io("cannot configure the front"))?;
        let addr = listener.local_addr().map_err(HarnessError::io("the front has no address"))?;
        let task = runtime.spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            let mut next = 0usize;
            while let Ok((mut inbound, _)) = listener.accept().await {
                let first = next;
                next += 1;
                let backends = backends.clone();
                tokio::spawn(async move {
                    // A backend that refuses the connection is skipped, as a load balancer's
                    // failed health check would take it out.
                    for i in 0..backends.len() {
                        let backend = backends[(first + i) % backends.len()];
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(backend).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Ok(RoundRobin { addr, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A target of a client proxy.
#[derive(Debug, Clone)]
pub struct ClientTarget {
    pub name: String,
    pub endpoint: String,
    pub auth: &'static str,
    pub database: Option<String>,
    pub user: Option<String>,
    /// In password mode: the variable name and its value.
    pub password: Option<(String, String)>,
    /// A fixed local port; a free one when `None`.
    pub local_port: Option<u16>,
}

impl ClientTarget {
    pub fn iam(name: &str, endpoint: impl Into<String>) -> ClientTarget {
        ClientTarget {
            name: name.to_owned(),
            endpoint: endpoint.into(),
            auth: "iam",
            database: None,
            user: None,
            password: None,
            local_port: None,
        }
    }

    pub fn with_auth(mut self, auth: &'static str) -> ClientTarget {
        self.auth = auth;
        self
    }

    pub fn with_password(mut self, password: &str) -> ClientTarget {
        self.auth = "password";
        let var = format!("TEST_PW_{}", self.name.to_ascii_uppercase().replace('-', "_"));
        self.password = Some((var, password.to_owned()));
        self
    }
}

/// Which AWS credentials the client proxy finds in its environment.
#[derive(Debug, Clone)]
pub enum ClientCredentials {
    /// The stand-in's keys.
    StandIn(Signer),
    /// Keys the stand-in does not know, or knows with another secret.
    Custom { access_key_id: String, secret: String },
}

/// How to start a client proxy.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub targets: Vec<ClientTarget>,
    pub credentials: ClientCredentials,
    /// Which client certificate to present; `None` presents none.
    pub identity: Option<CertFiles>,
    /// The CA the client proxy trusts for the server proxy.
    pub server_ca: PathBuf,
    pub server_addr: SocketAddr,
    pub server_name: String,
    pub local_tls: bool,
    pub log_level: String,
    /// Replaces the generated `[upstreams.default]` section (direct mode, tunnels).
    pub upstream_toml: Option<String>,
    /// Appended to the configuration as it is (discovery, accounts, resolve, proxy keys).
    pub extra_toml: String,
    /// More environment variables for the process.
    pub env: Vec<(String, String)>,
    /// Runs the proxy under `prlimit --nofile=SOFT:HARD`, the limits a user's shell gives.
    pub nofile: Option<(u64, u64)>,
}

impl ClientOptions {
    /// Targets through `topology`'s server proxy, as alice, with the stand-in's static keys.
    pub fn new(topology: &Topology, targets: Vec<ClientTarget>) -> ClientOptions {
        ClientOptions::to_server(&topology.pki, topology.server.addr(), targets)
    }

    /// Targets through the server proxy at `server_addr`, which `pki` certified, as alice,
    /// with the stand-in's static keys.
    pub fn to_server(pki: &ProxyPki, server_addr: SocketAddr, targets: Vec<ClientTarget>) -> ClientOptions {
        ClientOptions {
            targets,
            credentials: ClientCredentials::StandIn(Signer::Static),
            identity: Some(pki.alice.clone()),
            server_ca: pki.pki.ca_pem_path().to_owned(),
            server_addr,
            server_name: SERVER_NAME.to_owned(),
            local_tls: false,
            log_level: "debug".to_owned(),
            upstream_toml: None,
            extra_toml: String::new(),
            env: Vec::new(),
            nofile: None,
        }
    }
}

/// A client proxy process. Dropping it kills the process.
#[derive(Debug)]
pub struct ClientProxy {
    child: Child,
    ports: BTreeMap<String, u16>,
    dir: PathBuf,
    stderr: PathBuf,
}

impl ClientProxy {
    /// Writes the configuration, starts `rds-auth-proxy connect` with every target, and waits
    /// until it has printed how to connect to each.
    pub async fn start(standin: &StandIn, options: &ClientOptions) -> Result<ClientProxy, HarnessError> {
        let names: Vec<&str> = options.targets.iter().map(|t| t.name.as_str()).collect();
        ClientProxy::start_named(standin, options, &names).await
    }

    /// Like [`ClientProxy::start`], connecting to `names`, which may be discovered targets.
    pub async fn start_named(
        standin: &StandIn,
        options: &ClientOptions,
        names: &[&str],
    ) -> Result<ClientProxy, HarnessError> {
        let dir = scratch_dir("client-proxy")?;
        let stderr_path = dir.join("stderr.log");
        let stderr =
            std::fs::File::create(&stderr_path).map_err(HarnessError::io("cannot create the log file"))?;
        let mut command = match options.nofile {
            Some((soft, hard)) => {
                let mut command = Command::new("prlimit");
                command.arg(format!("--nofile={soft}:{hard}")).arg("--").arg(built_binary("rds-auth-proxy")?);
                command
            }
            None => Command::new(built_binary("rds-auth-proxy")?),
        };
        command.env_clear();
        for (name, value) in client_environment(standin, options, &dir)? {
            command.env(name, value);
        }
        command.args(client_arguments(options, &dir, &["connect"])).args(names);
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr).kill_on_drop(true);
        let mut child = command.spawn().map_err(HarnessError::io("cannot start rds-auth-proxy"))?;
        let stdout = child.stdout.take().ok_or_else(|| HarnessError::Docker("no stdout".into()))?;
        let ports = tokio::time::timeout(Duration::from_secs(30), read_ports(stdout, names.len()))
            .await
            .ok()
            .flatten();
        let Some(ports) = ports else {
            let _ = child.start_kill();
            let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            return Err(HarnessError::Docker(format!("rds-auth-proxy did not start:\n{log}")));
        };
        Ok(ClientProxy { child, ports, dir, stderr: stderr_path })
    }

    /// Where the local listener of `target` is.
    pub fn addr(&self, target: &str) -> SocketAddr {
        let port = self.ports.get(target).copied().unwrap_or_default();
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The scratch directory: configuration, log, and the local CA when local TLS is on.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends SIGINT, as Ctrl-C does, and waits up to `timeout` for the process to exit.
    pub async fn interrupt(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.child.id()?;
        let _ = Command::new("kill").arg("-INT").arg(pid.to_string()).status().await;
        tokio::time::timeout(timeout, self.child.wait()).await.ok().and_then(Result::ok)
    }

    /// Sends SIGKILL, leaving the process no chance to clean up, and waits for it to exit.
    pub async fn kill(&mut self) -> Option<std::process::ExitStatus> {
        self.child.start_kill().ok()?;
        self.child.wait().await.ok()
    }
}

/// `rds-auth-proxy connect` with every target of `options`: its configuration is written to
/// `dir`, and its environment holds the chosen AWS keys and nothing of the user's own.
pub fn client_command(
    standin: &StandIn,
    options: &ClientOptions,
    dir: &Path,
) -> Result<Command, HarnessError> {
    let mut command = Command::new(built_binary("rds-auth-proxy")?);
    command.env_clear();
    for (name, value) in client_environment(standin, options, dir)? {
        command.env(name, value);
    }
    command.args(client_arguments(options, dir, &["connect"]));
    command.args(options.targets.iter().map(|t| t.name.as_str()));
    Ok(command)
}

fn client_arguments<'a>(options: &'a ClientOptions, dir: &Path, command: &[&'a str]) -> Vec<String> {
    let mut args = vec![
        "--config".to_owned(),
        dir.join("config.toml").display().to_string(),
        "--log-level".to_owned(),
        options.log_level.clone(),
    ];
    args.extend(command.iter().map(|a| (*a).to_owned()));
    args
}

/// The whole environment of a client proxy: PATH, a scratch HOME, the chosen AWS keys, the
/// passwords, and `options.env`. The configuration is written to `dir` on the way.
fn client_environment(
    standin: &StandIn,
    options: &ClientOptions,
    dir: &Path,
) -> Result<Vec<(String, String)>, HarnessError> {
    std::fs::write(dir.join("config.toml"), client_config(standin, options))
        .map_err(HarnessError::io("cannot write the client proxy's configuration"))?;
    // Empty AWS files: the user's own profiles never leak into a test.
    let (aws_config, aws_credentials) = (dir.join("aws-config"), dir.join("aws-credentials"));
    for file in [&aws_config, &aws_credentials] {
        std::fs::write(file, "").map_err(HarnessError::io("cannot write an empty AWS file"))?;
    }
    let mut env = vec![
        ("PATH".to_owned(), std::env::var("PATH").unwrap_or_default()),
        ("HOME".to_owned(), dir.display().to_string()),
        ("XDG_CONFIG_HOME".to_owned(), dir.join("xdg").display().to_string()),
        ("XDG_CACHE_HOME".to_owned(), dir.join("cache").display().to_string()),
        ("AWS_EC2_METADATA_DISABLED".to_owned(), "true".to_owned()),
        ("AWS_CONFIG_FILE".to_owned(), aws_config.display().to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE".to_owned(), aws_credentials.display().to_string()),
    ];
    if let Ok(term) = std::env::var("TERM") {
        env.push(("TERM".to_owned(), term));
    }
    match &options.credentials {
        ClientCredentials::StandIn(signer) => {
            let credentials = standin.credentials(*signer);
            env.push(("AWS_ACCESS_KEY_ID".to_owned(), credentials.access_key_id().to_owned()));
            env.push(("AWS_SECRET_ACCESS_KEY".to_owned(), credentials.secret_access_key().to_owned()));
            if let Some(token) = credentials.session_token() {
                env.push(("AWS_SESSION_TOKEN".to_owned(), token.to_owned()));
            }
        }
        ClientCredentials::Custom { access_key_id, secret } => {
            env.push(("AWS_ACCESS_KEY_ID".to_owned(), access_key_id.clone()));
            env.push(("AWS_SECRET_ACCESS_KEY".to_owned(), secret.clone()));
        }
    }
    for target in &options.targets {
        if let Some((var, value)) = &target.password {
            env.push((var.clone(), value.clone()));
        }
    }
    env.extend(options.env.iter().cloned());
    Ok(env)
}

impl ClientProxy {
    /// Runs `rds-auth-proxy <args>` once to the end, with stdin closed, and returns its output.
    pub async fn run_once(
        standin: &StandIn,
        options: &ClientOptions,
        args: &[&str],
    ) -> Result<std::process::Output, HarnessError> {
        let dir = scratch_dir("client-once")?;
        let mut command = Command::new(built_binary("rds-auth-proxy")?);
        command.env_clear();
        for (name, value) in client_environment(standin, options, &dir)? {
            command.env(name, value);
        }
        command.args(client_arguments(options, &dir, args)).stdin(Stdio::null()).kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .map_err(|_| HarnessError::Docker("rds-auth-proxy did not finish within 60 s".into()))?
            .map_err(HarnessError::io("cannot run rds-auth-proxy"))
    }

    /// A shell script in `dir` that runs `rds-auth-proxy <args>` with the environment of
    /// `options`, for a terminal (tmux) to run.
    pub fn script(
        standin: &StandIn,
        options: &ClientOptions,
        dir: &Path,
        args: &[&str],
    ) -> Result<PathBuf, HarnessError> {
        let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
        let mut script = String::from("#!/bin/sh\nexec env -i");
        for (name, value) in client_environment(standin, options, dir)? {
            script.push_str(&format!(" {}", quote(&format!("{name}={value}"))));
        }
        script.push_str(&format!(" {}", quote(&built_binary("rds-auth-proxy")?.display().to_string())));
        for arg in client_arguments(options, dir, args) {
            script.push_str(&format!(" {}", quote(&arg)));
        }
        script.push('\n');
        let path = dir.join("run.sh");
        std::fs::write(&path, script).map_err(HarnessError::io("cannot write the script"))?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(HarnessError::io("cannot make the script executable"))?;
        Ok(path)
    }
}

/// Reads `rds-auth-proxy connect`'s stdout until it has named `count` listeners.
async fn read_ports(stdout: tokio::process::ChildStdout, count: usize) -> Option<BTreeMap<String, u16>> {
    let mut lines = BufReader::new(stdout).lines();
    let mut ports = BTreeMap::new();
    let mut current: Option<String> = None;
    while ports.len() < count {
        let line = lines.next_line().await.ok()??;
        if let Some((name, _)) = line.split_once(" -> ") {
            current = Some(name.to_owned());
        } else if let Some(rest) = line.trim_start().strip_prefix("psql ")
            && let Some(name) = current.take()
        {
            // The first psql line of a target names its TCP port (a Unix socket line follows
            // when those are on).
            let port = rest.split_whitespace().find_map(|w| w.strip_prefix("port="))?.parse().ok()?;
            ports.insert(name, port);
        }
    }
    // Keep draining stdout so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Some(ports)
}

fn client_config(standin: &StandIn, options: &ClientOptions) -> String {
    let mut toml = String::new();
    if options.local_tls {
        toml.push_str("[proxy.local_tls]\nenabled = true\n\n");
    }
    match &options.upstream_toml {
        Some(upstream) => toml.push_str(upstream),
        None => {
            let _ = writeln!(toml, "[upstreams.default]\naddress = \"{}\"", options.server_addr);
            let _ = writeln!(toml, "ca = \"{}\"", options.server_ca.display());
            let _ = writeln!(toml, "server_name = \"{}\"", options.server_name);
            if let Some(identity) = &options.identity {
                let _ = writeln!(
                    toml,
                    "cert = \"{}\"\nkey = \"{}\"",
                    identity.cert.display(),
                    identity.key.display()
                );
            }
        }
    }
    toml.push('\n');
    for target in &options.targets {
        let _ = writeln!(toml, "[targets.{}]", target.name);
        let _ = writeln!(toml, "endpoint = \"{}\"", target.endpoint);
        let _ = writeln!(toml, "region = \"{}\"", standin.region());
        let _ = writeln!(toml, "auth = \"{}\"", target.auth);
        if let Some(database) = &target.database {
            let _ = writeln!(toml, "database = \"{database}\"");
        }
        if let Some(user) = &target.user {
            let _ = writeln!(toml, "user = \"{user}\"");
        }
        if let Some((var, _)) = &target.password {
            let _ = writeln!(toml, "password_env = \"{var}\"");
        }
        if let Some(port) = target.local_port {
            let _ = writeln!(toml, "local_port = {port}");
        }
        toml.push('\n');
    }
    toml.push_str(&options.extra_toml);
    toml.push('\n');
    toml
}

/// A server proxy in this process, for tests that need what a container cannot reach: moto on
/// loopback for discovery. It trusts `db_ca` for databases and names them through `resolve`.
#[derive(Debug)]
pub struct InProcessServer {
    addr: SocketAddr,
    config: std::sync::Arc<rds_auth_server::ServerConfig>,
    stop: tokio_util::sync::CancellationToken,
}

/// What an in-process server proxy serves.
#[derive(Debug)]
pub struct InProcessOptions {
    pub targets: Vec<rds_auth_server::TargetRule>,
    pub resolve: std::collections::HashMap<String, Vec<std::net::IpAddr>>,
    pub db_ca: PathBuf,
    pub discovery: Option<(
        rds_auth_discovery::DiscoveryConfig,
        rds_auth_discovery::ProfileFiles,
        rds_auth_server::FollowConfig,
    )>,
    /// Verifies identity proofs, against moto's STS in tests.
    pub identity: Option<rds_auth_server::IdentityConfig>,
    pub limits: rds_auth_server::LimitsConfig,
}

impl InProcessOptions {
    /// Serves `targets`, which name databases through `resolve` and are verified with `db_ca`.
    pub fn new(
        targets: Vec<rds_auth_server::TargetRule>,
        resolve: std::collections::HashMap<String, Vec<std::net::IpAddr>>,
        db_ca: PathBuf,
    ) -> InProcessOptions {
        InProcessOptions {
            targets,
            resolve,
            db_ca,
            discovery: None,
            identity: None,
            limits: rds_auth_server::LimitsConfig::DEFAULT,
        }
    }
}

impl InProcessServer {
    /// Starts it on 127.0.0.1, on the current runtime; it stops when dropped.
    pub async fn start(pki: &ProxyPki, options: InProcessOptions) -> Result<InProcessServer, HarnessError> {
        use rds_auth_io::tls::{self, ALPN_POSTGRESQL, ClientAuth, Identity};
        let identity = Identity::load(&pki.server.cert, &pki.server.key)
            .map_err(|e| HarnessError::Docker(format!("server certificate: {e}")))?;
        let tls_config =
            tls::server_config(identity, ClientAuth::Required(pki.pki.roots()?), &[ALPN_POSTGRESQL], false)
                .map_err(|e| HarnessError::Docker(format!("server TLS: {e}")))?;
        let db_roots =
            tls::load_roots(&options.db_ca).map_err(|e| HarnessError::Docker(format!("database CA: {e}")))?;
        let upstream_tls = tls::client_config(db_roots, None, &[], false)
            .map_err(|e| HarnessError::Docker(e.to_string()))?;
        let config =
            std::sync::Arc::new(rds_auth_server::ServerConfig::new(rds_auth_server::ServerSettings {
                tls: Some(tls_config),
                require_client_cert: true,
                targets: options.targets,
                upstream: rds_auth_upstream::UpstreamConfig {
                    tls: upstream_tls,
                    resolver: rds_auth_upstream::Resolver::new(options.resolve),
                    connect_timeout: Duration::from_secs(2),
                    connect_attempts: 2,
                    auth_timeout: Duration::from_secs(30),
                },
                startup_timeout: Duration::from_secs(15),
                handshake_timeout: Duration::from_secs(60),
                max_startup_len: 32 * 1024,
                token_clock_skew: Duration::from_secs(300),
                relay: rds_auth_io::relay::RelayConfig::default(),
                shutdown: rds_auth_server::ShutdownConfig {
                    min_delay: Duration::ZERO,
                    max_delay: Duration::from_secs(1),
                },
                proxy_protocol: false,
                limits: options.limits,
                cancel: rds_auth_server::CancelState::new(
                    rds_auth_server::CancelKeys::random(),
                    std::num::NonZeroU32::MIN.saturating_add(9),
                    std::num::NonZeroU32::MIN.saturating_add(19),
                ),
                identity: options.identity.map(rds_auth_server::IdentityVerifier::new),
            }));
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(HarnessError::io("cannot bind"))?;
        let addr = listener.local_addr().map_err(HarnessError::io("no address"))?;
        let stop = tokio_util::sync::CancellationToken::new();
        if let Some((discovery, files, follow)) = options.discovery {
            let discovery = std::sync::Arc::new(
                rds_auth_discovery::Discovery::with_profile_files(discovery, files).await,
            );
            tokio::spawn(rds_auth_server::follow_discovery(config.clone(), discovery, follow, stop.clone()));
        }
        let shutdown = stop.clone();
        tokio::spawn(rds_auth_server::run(
            listener,
            config.clone(),
            async move { shutdown.cancelled().await },
        ));
        Ok(InProcessServer { addr, config, stop })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The allowlist as it is now.
    pub fn allowlist(&self) -> std::sync::Arc<rds_auth_server::Allowlist> {
        self.config.allowlist()
    }

    /// The metrics exposition as it is now.
    pub fn metrics(&self) -> String {
        self.config.metrics.encode()
    }
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
