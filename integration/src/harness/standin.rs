//! The RDS stand-in container: Postgres 15 that checks IAM tokens the way RDS does.
//!
//! The container runs the image `rds-auth-proxy-test/postgres:15` (`cargo xtask images`) with
//! everything that changes with the code copied in when it is created: the entrypoint and SQL
//! from `integration/docker/standin/`, the freshly built `rds-auth-standin` binary, its
//! configuration, and a server certificate from a [`TestPki`] whose names are the endpoint
//! alias, `localhost` and `127.0.0.1`.
//!
//! Ports inside the container: 5432 is Postgres itself, where `rds_iam` members log in through
//! PAM (tokens up to 511 bytes, as `pam_exec` cuts the rest); 5433 is the stand-in's TLS front,
//! which takes tokens of any length; 5439 is the lifeline the harness holds open.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, SystemTime};

use rds_auth_token::{Credentials, TokenRequest};
use rustls::RootCertStore;
use tokio::sync::OnceCell;

use crate::harness::container::{Container, ContainerSpec};
use crate::harness::{
    HarnessError, TestPki, built_binary, check_docker, ensure_internal_network, ensure_network,
};
use crate::standin::Config;
use crate::standin::config::{EndpointConfig, LifelineConfig, TlsFiles};

/// The image the stand-in runs on.
pub const IMAGE: &str = "rds-auth-proxy-test/postgres:15";

/// The static test credentials' access key id.
pub const STATIC_ACCESS_KEY_ID: &str = "AKIDSTANDIN";
const STATIC_SECRET: &str = "standin/StaticSecret+Key0123456789abcdef";
/// The session test credentials' access key id.
pub const SESSION_ACCESS_KEY_ID: &str = "ASIASTANDIN";
const SESSION_SECRET: &str = "standin/SessionSecret+Key0123456789abcde";

const REGION: &str = "us-east-1";
const PAM_PORT: u16 = 5432;
const FRONT_PORT: u16 = 5433;
const LIFELINE_PORT: u16 = 5439;
const READY_LINE: &str = "STANDIN READY";
const DIR: &str = "/standin";

const ENTRYPOINT: &str = include_str!("../../docker/standin/entrypoint.sh");
const INIT_SQL: &str = include_str!("../../docker/standin/init.sql");

/// Which listener of the stand-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Postgres on 5432: IAM logins go through PAM, so tokens over 511 bytes fail.
    Pam,
    /// The TLS front on 5433: any token length.
    Front,
}

impl Listener {
    /// The port inside the container, which tokens name.
    pub fn port(self) -> u16 {
        match self {
            Listener::Pam => PAM_PORT,
            Listener::Front => FRONT_PORT,
        }
    }
}

/// Which test credentials sign a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// Long-term keys (`AKIDSTANDIN`): tokens of about 330 bytes.
    Static,
    /// Temporary keys with a session token (`ASIASTANDIN`): tokens of over 1,000 bytes, as
    /// SSO and assumed roles give.
    Session,
}

/// How to start a stand-in.
#[derive(Debug, Clone)]
pub struct StandInOptions {
    /// The endpoint name tokens must be signed for, and the container's alias on `network`.
    pub alias: String,
    /// A user-defined Docker network to join (created if missing), where other containers
    /// reach the stand-in as `alias`. Without one, only the published ports reach it.
    pub network: Option<String>,
    /// Make `network` internal: nothing outside it reaches the stand-in, except the test
    /// process by the stand-in's address on it (Linux routes the host to every bridge).
    pub internal: bool,
    /// More names on `network`, which the stand-in's certificate does not carry.
    pub extra_aliases: Vec<String>,
}

impl StandInOptions {
    /// Endpoint `pg.rds.test`, no network.
    pub fn new() -> StandInOptions {
        StandInOptions {
            alias: "pg.rds.test".to_owned(),
            network: None,
            internal: false,
            extra_aliases: Vec::new(),
        }
    }

    pub fn with_network(mut self, network: &str) -> StandInOptions {
        self.network = Some(network.to_owned());
        self
    }

    /// Joins `network` as an internal network.
    pub fn with_internal_network(mut self, network: &str) -> StandInOptions {
        self.network = Some(network.to_owned());
        self.internal = true;
        self
    }

    /// Another name on the network, absent from the certificate.
    pub fn with_extra_alias(mut self, alias: &str) -> StandInOptions {
        self.extra_aliases.push(alias.to_owned());
        self
    }

    pub fn with_alias(mut self, alias: &str) -> StandInOptions {
        alias.clone_into(&mut self.alias);
        self
    }
}

impl Default for StandInOptions {
    fn default() -> StandInOptions {
        StandInOptions::new()
    }
}

/// A running stand-in. Dropping it removes the container; a stand-in that is never dropped
/// (in a `static`) stops when the test process exits, through its lifeline.
#[derive(Debug)]
pub struct StandIn {
    container: Container,
    pam_addr: SocketAddr,
    front_addr: SocketAddr,
    pki: TestPki,
    alias: String,
    network: Option<String>,
    static_credentials: Credentials,
    session_credentials: Credentials,
    /// Held open for the container's lifetime; see `standin::lifeline`.
    _lifeline: TcpStream,
}

impl StandIn {
    /// The stand-in every test of this process shares: endpoint `pg.rds.test`, on the network
    /// `rds-auth-test-<pid>`. It is started by the first caller and never dropped.
    pub async fn shared() -> Result<&'static StandIn, HarnessError> {
        static SHARED: OnceCell<StandIn> = OnceCell::const_new();
        SHARED
            .get_or_try_init(|| {
                let network = format!("rds-auth-test-{}", std::process::id());
                StandIn::start(StandInOptions::new().with_network(&network))
            })
            .await
    }

    /// Starts a stand-in of its own, for tests that change it or must not share it.
    pub async fn start(options: StandInOptions) -> Result<StandIn, HarnessError> {
        check_docker(IMAGE).await?;
        let binary = built_binary("rds-auth-standin")?;
        let pki = TestPki::new("standin")?;
        let server = pki.server("server", &[&options.alias, "localhost", "127.0.0.1"])?;
        let static_credentials =
            Credentials::new(STATIC_ACCESS_KEY_ID, STATIC_SECRET, None, None, "standin-test");
        let session_credentials = Credentials::new(
            SESSION_ACCESS_KEY_ID,
            SESSION_SECRET,
            Some(fake_session_token()),
            None,
            "standin-test",
        );
        let config = Config {
            region: REGION.to_owned(),
            log_path: format!("{DIR}/verify.log").into(),
            endpoint: EndpointConfig {
                host: options.alias.clone(),
                pam_port: PAM_PORT,
                front_port: FRONT_PORT,
            },
            tls: TlsFiles {
                cert: format!("{DIR}/server.crt").into(),
                key: format!("{DIR}/server.key").into(),
            },
            lifeline: LifelineConfig { port: LIFELINE_PORT, first_contact_secs: 120 },
            credentials: [
                (STATIC_ACCESS_KEY_ID.to_owned(), STATIC_SECRET.to_owned()),
                (SESSION_ACCESS_KEY_ID.to_owned(), SESSION_SECRET.to_owned()),
            ]
            .into(),
        };

        let mut spec = ContainerSpec::new(IMAGE)
            .with_name_prefix("rds-auth-standin")
            .with_entrypoint(&[&format!("{DIR}/entrypoint.sh")])
            .with_file(&format!("{DIR}/entrypoint.sh"), ENTRYPOINT, 0o755)
            .with_file(&format!("{DIR}/init.sql"), INIT_SQL, 0o644)
            .with_file(&format!("{DIR}/standin.toml"), config.to_toml()?, 0o644)
            .with_file(&format!("{DIR}/server.crt"), server.pem.cert_pem.clone(), 0o644)
            .with_file(&format!("{DIR}/server.key"), server.pem.key_pem.clone(), 0o600)
            .with_host_file(&format!("{DIR}/rds-auth-standin"), &binary)
            .with_ready_line(READY_LINE)
            .with_startup_timeout(Duration::from_secs(120))
            .with_auto_remove();
        if !options.internal {
            spec = spec.with_port(PAM_PORT).with_port(FRONT_PORT).with_port(LIFELINE_PORT);
        }
        if let Some(network) = &options.network {
            if options.internal {
                ensure_internal_network(network).await?;
            } else {
                ensure_network(network).await?;
            }
            let mut aliases = vec![options.alias.as_str()];
            aliases.extend(options.extra_aliases.iter().map(String::as_str));
            spec = spec.with_network(network, &aliases);
        }
        let container = Container::start(spec).await?;
        let reach = |port: u16| -> Result<SocketAddr, HarnessError> {
            if options.internal {
                let ip = container.network_ip().ok_or_else(|| missing_port(port))?;
                Ok(SocketAddr::new(ip, port))
            } else {
                container.host_addr(port).ok_or_else(|| missing_port(port))
            }
        };
        let pam_addr = reach(PAM_PORT)?;
        let front_addr = reach(FRONT_PORT)?;
        let lifeline_addr = reach(LIFELINE_PORT)?;
        let lifeline = TcpStream::connect_timeout(&lifeline_addr, Duration::from_secs(10))
            .map_err(HarnessError::io(format!("cannot reach the stand-in's lifeline at {lifeline_addr}")))?;
        Ok(StandIn {
            container,
            pam_addr,
            front_addr,
            pki,
            alias: options.alias,
            network: options.network,
            static_credentials,
            session_credentials,
            _lifeline: lifeline,
        })
    }

    /// The endpoint name tokens are signed for, and the alias on [`StandIn::network`].
    pub fn alias(&self) -> &str {
        &self.alias
    }

    /// `alias:port`, the endpoint as a proxy's configuration names it.
    pub fn endpoint(&self, listener: Listener) -> String {
        format!("{}:{}", self.alias, listener.port())
    }

    /// The network the stand-in joined, if any.
    pub fn network(&self) -> Option<&str> {
        self.network.as_deref()
    }

    /// The stand-in's address on [`StandIn::network`].
    pub fn network_ip(&self) -> Option<IpAddr> {
        self.container.network_ip()
    }

    /// Where the test process reaches a listener: 127.0.0.1 and a published port, or the
    /// stand-in's address on an internal network.
    pub fn addr(&self, listener: Listener) -> SocketAddr {
        match listener {
            Listener::Pam => self.pam_addr,
            Listener::Front => self.front_addr,
        }
    }

    /// The CA that signed the stand-in's certificate, as a PEM file.
    pub fn ca_pem_path(&self) -> &Path {
        self.pki.ca_pem_path()
    }

    /// A root store trusting only that CA.
    pub fn roots(&self) -> Result<RootCertStore, HarnessError> {
        self.pki.roots()
    }

    /// The AWS region tokens must be signed for.
    pub fn region(&self) -> &str {
        REGION
    }

    /// The test credentials the stand-in knows.
    pub fn credentials(&self, signer: Signer) -> &Credentials {
        match signer {
            Signer::Static => &self.static_credentials,
            Signer::Session => &self.session_credentials,
        }
    }

    /// A token for `user` at `listener`, signed now.
    pub fn token(&self, user: &str, listener: Listener, signer: Signer) -> Result<String, HarnessError> {
        self.token_at(user, listener, signer, SystemTime::now())
    }

    /// A token for `user` at `listener`, signed at `at`.
    pub fn token_at(
        &self,
        user: &str,
        listener: Listener,
        signer: Signer,
        at: SystemTime,
    ) -> Result<String, HarnessError> {
        let request = TokenRequest { host: &self.alias, port: listener.port(), user, region: REGION };
        Ok(rds_auth_token::generate(self.credentials(signer), &request, at)?.expose().to_owned())
    }

    /// The container: its log holds Postgres's log and one `standin …` line per login attempt.
    pub fn container(&self) -> &Container {
        &self.container
    }
}

fn missing_port(port: u16) -> HarnessError {
    HarnessError::Docker(format!("the stand-in's port {port} was not published"))
}

/// A stand-in for an STS session token: about 900 characters, with `/`, `+` and `=` in it, so
/// it needs percent-encoding in the token as real ones do.
fn fake_session_token() -> String {
    let mut token = String::from("IQoJb3JpZ2luX2VjEHwaCXVzLWVhc3QtMSJHMEUCIQD");
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state: u32 = std::process::id() | 1;
    while token.len() < 900 {
        // A xorshift: varied text, no dependency.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        token.push(char::from(alphabet[(state % 64) as usize]));
    }
    token.push_str("==");
    token
}
