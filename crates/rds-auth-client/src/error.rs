use rds_auth_codec::{ErrorFields, SqlState, WireError};
use rds_auth_startup::StartupError;
use rds_auth_token::TokenError;

/// A session the client proxy refuses or loses. Each variant becomes a FATAL ErrorResponse
/// with fixed text; no credential and no inner error's `Display` reaches the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("no usable AWS credentials ({label})")]
    Credentials { label: String },
    #[error("cannot sign an IAM token")]
    Token(#[from] TokenError),
    #[error("cannot reach the server proxy {name} at {address}")]
    ServerProxyUnreachable { name: String, address: String },
    #[error("TLS with the server proxy {name} failed")]
    ServerProxyTls { name: String },
    #[error("the server proxy {name} refused the client certificate")]
    ClientCertificateRefused { name: String },
    #[error("the server proxy closed the connection during startup")]
    ServerProxyClosed,
    #[error("the server proxy sent bytes that are not the protocol")]
    ServerProxyProtocol,
    #[error("the client went away")]
    ClientGone,
    /// Direct mode: reaching or authenticating to the database failed.
    #[error(transparent)]
    Upstream(#[from] rds_auth_upstream::UpstreamError),
    #[error("the session was not ready within {} s", .0.as_secs())]
    SetupTimeout(std::time::Duration),
    /// The server proxy or the database refused the session and the client has been told.
    #[error("refused upstream with {sqlstate}: {message}")]
    RefusedUpstream { sqlstate: SqlState, message: String },
}

impl ClientError {
    pub fn sqlstate(&self) -> SqlState {
        match self {
            ClientError::Wire(e) => e.sqlstate(),
            ClientError::Startup(e) => e.sqlstate(),
            ClientError::Credentials { .. } | ClientError::Token(_) => SqlState::INVALID_AUTHORIZATION,
            ClientError::ServerProxyUnreachable { .. }
            | ClientError::ServerProxyTls { .. }
            | ClientError::ClientCertificateRefused { .. } => SqlState::UNABLE_TO_CONNECT,
            ClientError::ServerProxyClosed | ClientError::ClientGone | ClientError::SetupTimeout(_) => {
                SqlState::CONNECTION_FAILURE
            }
            ClientError::ServerProxyProtocol => SqlState::PROTOCOL_VIOLATION,
            ClientError::RefusedUpstream { sqlstate, .. } => *sqlstate,
            ClientError::Upstream(e) => e.sqlstate(),
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            ClientError::Wire(_) => "protocol",
            ClientError::Startup(_) => "startup",
            ClientError::Credentials { .. } => "credentials",
            ClientError::Token(_) => "token",
            ClientError::ServerProxyUnreachable { .. } => "server_proxy_unreachable",
            ClientError::ServerProxyTls { .. } | ClientError::ClientCertificateRefused { .. } => {
                "server_proxy_tls"
            }
            ClientError::ServerProxyClosed | ClientError::ServerProxyProtocol => "server_proxy",
            ClientError::ClientGone => "client_gone",
            ClientError::SetupTimeout(_) => "setup_timeout",
            ClientError::RefusedUpstream { .. } => "refused_upstream",
            ClientError::Upstream(rds_auth_upstream::UpstreamError::Rejected(_)) => "rejected_by_database",
            ClientError::Upstream(_) => "upstream",
        }
    }

    pub fn to_error_fields(&self) -> ErrorFields {
        if let ClientError::Upstream(e) = self {
            return e.to_error_fields();
        }
        let hint = match self {
            ClientError::Wire(_) => "the client does not speak the PostgreSQL protocol, or its packet was damaged".to_owned(),
            ClientError::Startup(e) => e.hint().to_owned(),
            ClientError::Credentials { label } => format!(
                "refresh the credentials, for example `aws sso login` for an SSO profile; run `rds-auth-proxy doctor` to see which identity is used ({label})"
            ),
            ClientError::Token(_) => "run `rds-auth-proxy doctor` to check the credentials and the clock".to_owned(),
            ClientError::ServerProxyUnreachable { .. } => {
                "check the server proxy's address in the configuration, the VPN or tunnel, and that the server proxy runs".to_owned()
            }
            ClientError::ServerProxyTls { .. } => {
                "check the CA that signs the server proxy's certificate, the name it must carry, and your client certificate"
                    .to_owned()
            }
            ClientError::ClientCertificateRefused { name } => format!(
                "the server proxy requires a client certificate signed by its CA: set cert and key under [upstreams.{name}]"
            ),
            ClientError::ServerProxyClosed => "check the server proxy's logs for this session".to_owned(),
            ClientError::SetupTimeout(_) => {
                "the AWS credentials, the server proxy or the database did not answer in time; run `rds-auth-proxy doctor`".to_owned()
            }
            ClientError::ServerProxyProtocol => "the upstream address does not lead to an rds-auth-proxy server".to_owned(),
            ClientError::ClientGone | ClientError::RefusedUpstream { .. } | ClientError::Upstream(_) => String::new(),
        };
        let fields = ErrorFields::fatal(self.sqlstate(), self.to_string());
        if hint.is_empty() { fields } else { fields.hint(hint) }
    }
}
