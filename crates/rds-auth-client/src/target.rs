use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::provider::SharedCredentialsProvider;
use rds_auth_startup::{Endpoint, Secret};
use rds_auth_upstream::UpstreamConfig;
use rustls::pki_types::ServerName;

use crate::Tunnel;
use crate::warm::WarmPool;

/// How a target's sessions authenticate to the database.
#[derive(Clone)]
pub enum TargetAuth {
    /// A token signed per connection with the user's AWS credentials.
    Iam,
    /// A static password, from the environment or a prompt.
    Password(Secret),
    /// The client's own authentication flows end to end.
    Passthrough,
}

impl TargetAuth {
    pub fn name(&self) -> &'static str {
        match self {
            TargetAuth::Iam => "iam",
            TargetAuth::Password(_) => "password",
            TargetAuth::Passthrough => "passthrough",
        }
    }
}

impl fmt::Debug for TargetAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How to reach a server proxy.
#[derive(Debug)]
pub enum ProxyAddress {
    /// `host:port`.
    Fixed(String),
    /// The local end of a supervised tunnel.
    Tunnel(Arc<Tunnel>),
}

impl fmt::Display for ProxyAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyAddress::Fixed(address) => f.write_str(address),
            ProxyAddress::Tunnel(tunnel) => write!(f, "tunnel {}", tunnel.name()),
        }
    }
}

/// A server proxy the client proxy forwards sessions to.
#[derive(Debug)]
pub struct ServerProxy {
    pub name: String,
    pub address: ProxyAddress,
    /// The name the server proxy's certificate must carry.
    pub server_name: ServerName<'static>,
    /// Verifies the server proxy against its CA and presents the user's client certificate.
    pub tls: Arc<rustls::ClientConfig>,
    pub connect_timeout: Duration,
    /// Whether sessions carry a presigned `sts:GetCallerIdentity` that tells the server proxy
    /// who the caller is, and where STS is.
    pub identity: Option<IdentitySigning>,
    /// Handshaked connections kept ready for the next session.
    pub warm: WarmPool,
}

/// How the client proxy proves its IAM identity to a server proxy.
#[derive(Debug, Clone, Default)]
pub struct IdentitySigning {
    /// A fixed STS host (`host` or `host:port`): an STS VPC endpoint, or a test double. The
    /// server proxy must send proofs to the same host. `None`: the regional endpoint of the
    /// target's region.
    pub sts_host: Option<String>,
}

/// Where a target's sessions go.
#[derive(Debug, Clone)]
pub enum Route {
    /// Through a server proxy, which reaches the database.
    ServerProxy(Arc<ServerProxy>),
    /// Straight to the database, for laptops that already reach it (over a VPN, say): the
    /// client proxy does the server proxy's upstream work itself.
    Direct(Arc<UpstreamConfig>),
}

/// A database a local listener leads to.
#[derive(Clone)]
pub struct Target {
    pub name: String,
    pub endpoint: Endpoint,
    pub region: String,
    pub database: Option<String>,
    pub auth: TargetAuth,
    pub route: Route,
    /// Signs this target's tokens: a principal in the database's account.
    pub credentials: SharedCredentialsProvider,
    /// Names the credentials in hints, for example the AWS profile.
    pub credentials_label: String,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("auth", &self.auth)
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}
