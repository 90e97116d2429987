//! The rig every workload runs on: one Postgres 15 (the RDS stand-in, reached by its address on
//! a Docker bridge so no docker-proxy sits in the path), pgbouncer, and the two proxies as host
//! processes from the release build.
//!
//! ```text
//! direct:          libpq ══ TLS, password ══════════════════════════════════════► Postgres
//! pgbouncer:       libpq ══ TLS ══► pgbouncer (session mode) ══ TLS, password ══► Postgres
//! proxy-iam:       libpq ── plain ──► client proxy ══ mTLS ══► server proxy ══ TLS, token ══► Postgres
//! proxy-password:  the same, with the password the client proxy holds
//! ```
//!
//! Every TLS leg verifies the peer: libpq with `verify-full` (the stand-in's name through
//! `hostaddr`), the proxies as they always do, and pgbouncer with `verify-ca`, since it connects
//! to an address its certificate does not name.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use tokio::process::Command;

use crate::bench::options::Options;
use crate::bench::procs::{Proc, free_port};
use crate::harness::proxies::{ProxyPki, SERVER_NAME};
use crate::harness::{Listener, Signer, StandIn, StandInOptions};

/// The database every workload uses; `iam_user` owns it.
pub const DATABASE: &str = "app";
/// The IAM user: PAM checks its tokens, as RDS does.
pub const IAM_USER: &str = "iam_user";
/// The password user: Postgres's `password` method, a cleartext password over TLS.
pub const PASSWORD_USER: &str = "password_user";
const PASSWORD: &str = "clear-secret";
/// Rows of the COPY table are this long in COPY's text format, newline included.
pub const COPY_ROW_BYTES: u64 = 1024;

/// A way from the client to Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    Direct,
    Pgbouncer,
    ProxyIam,
    ProxyPassword,
}

impl Route {
    pub const ALL: [Route; 4] = [Route::Direct, Route::Pgbouncer, Route::ProxyIam, Route::ProxyPassword];

    /// The name in JSON and file names.
    pub fn name(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Pgbouncer => "pgbouncer",
            Route::ProxyIam => "proxy-iam",
            Route::ProxyPassword => "proxy-password",
        }
    }

    /// The name in the report.
    pub fn label(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Pgbouncer => "pgbouncer",
            Route::ProxyIam => "rds-auth-proxy, IAM",
            Route::ProxyPassword => "rds-auth-proxy, password",
        }
    }

    pub fn user(self) -> &'static str {
        match self {
            Route::ProxyIam => IAM_USER,
            _ => PASSWORD_USER,
        }
    }
}

/// The client and server proxies, as host processes.
#[derive(Debug)]
pub struct Proxies {
    pub server: Proc,
    pub client: Proc,
    pub iam_port: u16,
    pub password_port: u16,
}

impl Proxies {
    pub fn pids(&self) -> Vec<u32> {
        vec![self.client.pid, self.server.pid]
    }

    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.client.stop(Duration::from_secs(5)).await?;
        self.server.stop(Duration::from_secs(60)).await
    }
}

/// Everything running.
#[derive(Debug)]
pub struct Rig {
    pub options: Options,
    pub standin: StandIn,
    /// Postgres, by the stand-in's address on its bridge network.
    pub pg_addr: SocketAddr,
    pub pki: ProxyPki,
    pub work: PathBuf,
    pub pgbouncer: Proc,
    pub pgbouncer_port: u16,
    pub proxies: Proxies,
    /// How many rows the COPY table holds.
    pub copy_rows: u64,
}

impl Rig {
    pub async fn start(options: &Options, work: &Path) -> anyhow::Result<Rig> {
        let network = format!("rds-auth-bench-{}", std::process::id());
        crate::bench::say("starting the RDS stand-in (Postgres 15)");
        let standin = StandIn::start(StandInOptions::new().with_internal_network(&network)).await?;
        let pg_addr = standin.addr(Listener::Pam);
        let pki = ProxyPki::new()?;
        let copy_rows = options.copy_mib * 1024 * 1024 / COPY_ROW_BYTES;
        let pgbouncer_port = free_port()?;
        let pgbouncer = start_pgbouncer(options, &standin, &pki, pg_addr.ip(), pgbouncer_port, work).await?;
        let proxies = start_proxies(options, &standin, &pki, pg_addr.ip(), work, "proxies", &[]).await?;
        let rig = Rig {
            options: options.clone(),
            standin,
            pg_addr,
            pki,
            work: work.to_owned(),
            pgbouncer,
            pgbouncer_port,
            proxies,
            copy_rows,
        };
        rig.prepare_data().await?;
        for route in Route::ALL {
            let out = rig.psql(route, &["-c", "SELECT current_user"]).await?;
            ensure!(out.trim() == route.user(), "{} logged in as {out:?}", route.name());
        }
        Ok(rig)
    }

    /// libpq's connection string for `route`.
    pub fn conninfo(&self, route: Route) -> String {
        let common = format!("dbname={DATABASE} user={} gssencmode=disable", route.user());
        match route {
            Route::Direct => self.direct_conninfo(&common),
            Route::Pgbouncer => format!(
                "host=127.0.0.1 port={} {common} sslmode=verify-full sslrootcert={}",
                self.pgbouncer_port,
                self.pki.pki.ca_pem_path().display()
            ),
            Route::ProxyIam => {
                format!("host=127.0.0.1 port={} {common} sslmode=disable", self.proxies.iam_port)
            }
            Route::ProxyPassword => {
                format!("host=127.0.0.1 port={} {common} sslmode=disable", self.proxies.password_port)
            }
        }
    }

    fn direct_conninfo(&self, common: &str) -> String {
        format!(
            "host={} hostaddr={} port={} {common} sslmode=verify-full sslrootcert={}",
            self.standin.alias(),
            self.pg_addr.ip(),
            self.pg_addr.port(),
            self.standin.ca_pem_path().display()
        )
    }

    /// The password libpq sends on `route`: none through the proxies, which bring their own.
    pub fn password(&self, route: Route) -> Option<&'static str> {
        match route {
            Route::Direct | Route::Pgbouncer => Some(PASSWORD),
            Route::ProxyIam | Route::ProxyPassword => None,
        }
    }

    /// The processes between client and Postgres, whose CPU time a workload costs.
    pub fn cpu_pids(&self, route: Route) -> Vec<u32> {
        match route {
            Route::Direct => Vec::new(),
            Route::Pgbouncer => vec![self.pgbouncer.pid],
            Route::ProxyIam | Route::ProxyPassword => self.proxies.pids(),
        }
    }

    /// A libpq tool with nothing of the caller's environment but PATH, and the password of
    /// `route`.
    pub fn libpq_command(&self, program: &Path, route: Route) -> Command {
        let mut command = Command::new(program);
        command.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).env("LC_ALL", "C");
        command.env("PGPASSFILE", "/dev/null").env("PGCONNECT_TIMEOUT", "30");
        if let Some(password) = self.password(route) {
            command.env("PGPASSWORD", password);
        }
        command.kill_on_drop(true);
        command
    }

    /// Runs `psql -XAt <args>` on `route` and returns its stdout.
    pub async fn psql(&self, route: Route, args: &[&str]) -> anyhow::Result<String> {
        let mut command = self.libpq_command(&self.options.psql, route);
        command.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", &self.conninfo(route)]).args(args);
        output(command, "psql").await
    }

    /// Runs SQL as `iam_user`, the owner of the database, straight to Postgres with a token.
    pub async fn admin(&self, statements: &[&str]) -> anyhow::Result<String> {
        let mut command = self.admin_command(&self.options.psql)?;
        command.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", &self.admin_conninfo()]);
        for statement in statements {
            command.args(["-c", statement]);
        }
        output(command, "psql").await
    }

    fn admin_conninfo(&self) -> String {
        self.direct_conninfo(&format!("dbname={DATABASE} user={IAM_USER} gssencmode=disable"))
    }

    fn admin_command(&self, program: &Path) -> anyhow::Result<Command> {
        let token = self.standin.token(IAM_USER, Listener::Pam, Signer::Static)?;
        let mut command = self.libpq_command(program, Route::Direct);
        command.env("PGPASSWORD", token);
        Ok(command)
    }

    /// pgbench's tables, the COPY source table, and the COPY target table.
    async fn prepare_data(&self) -> anyhow::Result<()> {
        crate::bench::say(&format!("pgbench -i at scale {}", self.options.scale));
        let mut command = self.admin_command(&self.options.pgbench)?;
        command.args(["-i", "-q", "-s", &self.options.scale.to_string(), &self.admin_conninfo()]);
        output(command, "pgbench -i").await?;
        crate::bench::say(&format!("a {} MiB table for COPY", self.options.copy_mib));
        let insert = format!(
            "INSERT INTO bench_copy SELECT lpad(g::text, 10, '0'), rpad(md5(g::text), {}, md5((g + 1)::text)) \
             FROM generate_series(1, {}) AS g",
            COPY_ROW_BYTES - 12,
            self.copy_rows
        );
        self.admin(&[
            "DROP TABLE IF EXISTS bench_copy, bench_copy_in",
            "CREATE TABLE bench_copy (id text NOT NULL, payload text NOT NULL)",
            &insert,
            "VACUUM (ANALYZE) bench_copy",
            "CREATE UNLOGGED TABLE bench_copy_in (id text NOT NULL, payload text NOT NULL)",
            &format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {PASSWORD_USER}"),
            &format!("GRANT INSERT, TRUNCATE ON bench_copy_in TO {PASSWORD_USER}"),
        ])
        .await?;
        Ok(())
    }
}

/// Runs `command` to the end and returns its stdout, or fails with its stderr.
pub async fn output(mut command: Command, what: &str) -> anyhow::Result<String> {
    command.stdin(Stdio::null());
    let out = command.output().await.with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The uid and gid pgbouncer runs as: ours, or nobody's when we are root, which pgbouncer
/// refuses to run as.
fn pgbouncer_user() -> anyhow::Result<Option<(u32, u32)>> {
    let me = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m))?;
    if me != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    let nobody = passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&"nobody"))
        .context("no user nobody in /etc/passwd to run pgbouncer as")?;
    let id = |n: usize| -> anyhow::Result<u32> { Ok(nobody.get(n).context("short passwd line")?.parse()?) };
    Ok(Some((id(2)?, id(3)?)))
}

async fn start_pgbouncer(
    options: &Options,
    standin: &StandIn,
    pki: &ProxyPki,
    pg_ip: IpAddr,
    port: u16,
    work: &Path,
) -> anyhow::Result<Proc> {
    let dir = work.join("pgbouncer");
    std::fs::create_dir_all(&dir)?;
    let user = pgbouncer_user()?;
    let write = |name: &str, text: &str, mode: u32| -> anyhow::Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
        }
        Ok(path)
    };
    let cert = write("server.crt", &pki.server.pem.cert_pem, 0o644)?;
    let key = write("server.key", &pki.server.pem.key_pem, 0o600)?;
    let db_ca = write("db-ca.crt", &std::fs::read_to_string(standin.ca_pem_path())?, 0o644)?;
    let users = write("userlist.txt", &format!("\"{PASSWORD_USER}\" \"{PASSWORD}\"\n"), 0o600)?;
    let mut ini = String::new();
    let _ = writeln!(ini, "[databases]\n{DATABASE} = host={pg_ip} port=5432 dbname={DATABASE}\n");
    let _ = writeln!(
        ini,
        "[pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         pool_mode = session\n\
         auth_type = plain\n\
         auth_file = {users}\n\
         max_client_conn = 2000\n\
         default_pool_size = 1100\n\
         server_idle_timeout = 10\n\
         ignore_startup_parameters = extra_float_digits\n\
         client_tls_sslmode = require\n\
         client_tls_cert_file = {cert}\n\
         client_tls_key_file = {key}\n\
         server_tls_sslmode = verify-ca\n\
         server_tls_ca_file = {db_ca}",
        users = users.display(),
        cert = cert.display(),
        key = key.display(),
        db_ca = db_ca.display(),
    );
    let ini_path = write("pgbouncer.ini", &ini, 0o644)?;
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
    }
    let mut command = Command::new(&options.pgbouncer);
    command.arg(&ini_path).env_clear();
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    let mut proc = Proc::spawn("pgbouncer", command, &dir.join("pgbouncer.log"))?;
    proc.wait_listening(&[SocketAddr::from(([127, 0, 0, 1], port))], Duration::from_secs(10)).await?;
    Ok(proc)
}

/// Starts a server proxy and a client proxy with two targets, `iam` and `password`, whose
/// files and logs go to `work/<name>`. `server_wrapper` runs the server proxy under another
/// program (valgrind).
pub async fn start_proxies(
    options: &Options,
    standin: &StandIn,
    pki: &ProxyPki,
    pg_ip: IpAddr,
    work: &Path,
    name: &str,
    server_wrapper: &[String],
) -> anyhow::Result<Proxies> {
    let dir = work.join(name);
    std::fs::create_dir_all(&dir)?;
    let server_port = free_port()?;
    // No STS can be reached here, so the server does not verify identity proofs (the client
    // still signs them); the rate limit is raised for the burst and the idle sessions.
    let health_port = free_port()?;
    let endpoint = standin.endpoint(Listener::Pam);
    let server_toml = format!(
        "[listen]\n\
         address = \"127.0.0.1:{server_port}\"\n\
         cert = \"{cert}\"\n\
         key = \"{key}\"\n\
         client_ca = \"{ca}\"\n\n\
         [upstream]\n\
         ca_file = \"{db_ca}\"\n\
         resolve = {{ \"{alias}\" = [\"{pg_ip}\"] }}\n\n\
         [limits]\n\
         per_caller_per_second = 100000\n\
         per_caller_burst = 100000\n\n\
         [shutdown]\n\
         max_delay = \"1s\"\n\n\
         [identity]\n\
         verify = false\n\n\
         [health]\n\
         address = \"127.0.0.1:{health_port}\"\n\n\
         [log]\n\
         level = \"info\"\n\n\
         [[targets]]\n\
         endpoint = \"{endpoint}\"\n\
         auth = [\"iam\", \"password\"]\n",
        cert = pki.server.cert.display(),
        key = pki.server.key.display(),
        ca = pki.pki.ca_pem_path().display(),
        db_ca = standin.ca_pem_path().display(),
        alias = standin.alias(),
    );
    let server_config = dir.join("server.toml");
    std::fs::write(&server_config, server_toml)?;
    let mut command = match server_wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(&options.server_binary);
            command
        }
        None => Command::new(&options.server_binary),
    };
    command.arg("--config").arg(&server_config);
    command.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).env("HOME", &dir);
    let mut server = Proc::spawn("rds-auth-proxy-server", command, &dir.join("server.log"))?;
    let startup = if server_wrapper.is_empty() { Duration::from_secs(10) } else { Duration::from_secs(120) };
    server.wait_listening(&[SocketAddr::from(([127, 0, 0, 1], server_port))], startup).await?;

    let (iam_port, password_port) = (free_port()?, free_port()?);
    let client_toml = format!(
        "[upstreams.default]\n\
         address = \"127.0.0.1:{server_port}\"\n\
         ca = \"{ca}\"\n\
         server_name = \"{SERVER_NAME}\"\n\
         cert = \"{cert}\"\n\
         key = \"{key}\"\n\n\
         [targets.iam]\n\
         endpoint = \"{endpoint}\"\n\
         region = \"{region}\"\n\
         auth = \"iam\"\n\
         database = \"{DATABASE}\"\n\
         user = \"{IAM_USER}\"\n\
         local_port = {iam_port}\n\n\
         [targets.password]\n\
         endpoint = \"{endpoint}\"\n\
         region = \"{region}\"\n\
         auth = \"password\"\n\
         password_env = \"BENCH_PASSWORD\"\n\
         database = \"{DATABASE}\"\n\
         user = \"{PASSWORD_USER}\"\n\
         local_port = {password_port}\n",
        ca = pki.pki.ca_pem_path().display(),
        cert = pki.alice.cert.display(),
        key = pki.alice.key.display(),
        region = standin.region(),
    );
    let client_config = dir.join("client.toml");
    std::fs::write(&client_config, client_toml)?;
    // Empty AWS files: nothing of the user's own profiles is read.
    let (aws_config, aws_credentials) = (dir.join("aws-config"), dir.join("aws-credentials"));
    std::fs::write(&aws_config, "")?;
    std::fs::write(&aws_credentials, "")?;
    let credentials = standin.credentials(Signer::Static);
    let mut command = Command::new(&options.client_binary);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &dir)
        .env("XDG_CONFIG_HOME", dir.join("xdg"))
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", &aws_config)
        .env("AWS_SHARED_CREDENTIALS_FILE", &aws_credentials)
        .env("AWS_ACCESS_KEY_ID", credentials.access_key_id())
        .env("AWS_SECRET_ACCESS_KEY", credentials.secret_access_key())
        .env("BENCH_PASSWORD", PASSWORD)
        .arg("--config")
        .arg(&client_config)
        .args(["connect", "iam", "password"]);
    let mut client = Proc::spawn("rds-auth-proxy", command, &dir.join("client.log"))?;
    let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    client.wait_listening(&[local(iam_port), local(password_port)], Duration::from_secs(30)).await?;
    Ok(Proxies { server, client, iam_port, password_port })
}
