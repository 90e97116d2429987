use rds_auth_codec::SqlState;

/// A startup packet the proxies refuse. Each variant knows the SQLSTATE and the hint a person
/// sees in psql.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    #[error("no PostgreSQL user name specified in startup packet")]
    MissingUser,
    #[error("the user name is not valid UTF-8")]
    UserNotUtf8,
    #[error("startup parameter \"{0}\" is reserved by rds-auth-proxy")]
    ReservedParameter(String),
    #[error("startup parameter \"{0}\" was sent more than once")]
    DuplicateParameter(String),
    #[error("replication connections are not supported through rds-auth-proxy")]
    Replication,
    #[error("the startup packet names no target database")]
    MissingTarget,
    #[error("invalid target: {0}")]
    InvalidTarget(&'static str),
    #[error("the credential parameter is empty or cannot be encoded")]
    InvalidCredential,
}

impl StartupError {
    pub fn sqlstate(&self) -> SqlState {
        match self {
            StartupError::MissingUser | StartupError::UserNotUtf8 => SqlState::INVALID_AUTHORIZATION,
            StartupError::Replication => SqlState::FEATURE_NOT_SUPPORTED,
            StartupError::InvalidTarget(_) | StartupError::InvalidCredential => {
                SqlState::INVALID_AUTHORIZATION
            }
            StartupError::ReservedParameter(_)
            | StartupError::DuplicateParameter(_)
            | StartupError::MissingTarget => SqlState::PROTOCOL_VIOLATION,
        }
    }

    /// What a person can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            StartupError::MissingUser => "pass a user name, for example psql -U <user>",
            StartupError::UserNotUtf8 => "IAM database users are plain names; check the -U value",
            StartupError::ReservedParameter(_) => {
                "the proxies carry the target and the credential in the \"host\" and \"password\" \
                 startup parameters; remove them from the client's connection options"
            }
            StartupError::DuplicateParameter(_) => "send each startup parameter once",
            StartupError::Replication => {
                "IAM database authentication cannot be used for replication connections; \
                 connect without replication=true"
            }
            StartupError::MissingTarget => {
                "connect through the rds-auth-proxy client, which names the target database"
            }
            StartupError::InvalidTarget(_) => {
                "targets are written endpoint:port with a DNS name or an IP address"
            }
            StartupError::InvalidCredential => {
                "the client proxy sends the credential; check its version and configuration"
            }
        }
    }
}
