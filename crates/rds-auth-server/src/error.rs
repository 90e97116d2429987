use std::time::{Duration, SystemTime};

use rds_auth_codec::{ErrorFields, SqlState, WireError};
use rds_auth_startup::{Endpoint, StartupError};
use rds_auth_upstream::UpstreamError;

use crate::AuthMode;
use crate::identity::IdentityError;

/// A session the server proxy refuses or loses. Each variant becomes a FATAL ErrorResponse
/// with fixed text: no token, password or inner error's `Display` ever reaches a client.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("the server proxy accepts only TLS connections")]
    PlaintextRefused,
    #[error("target {target} is not allowed by the server proxy")]
    NotAllowed { target: Endpoint },
    #[error("target {target} does not accept {mode} authentication")]
    ModeRefused { mode: AuthMode, target: Endpoint },
    #[error("the credential for {target} is not a readable IAM token")]
    TokenUnreadable { target: Endpoint },
    #[error("the IAM token was signed for {signed_for}, but the target is {target}")]
    TokenTarget { signed_for: String, target: Endpoint },
    #[error("the IAM token was signed for user \"{signed_for}\", but the session's user is \"{user}\"")]
    TokenUser { signed_for: String, user: String },
    #[error("the IAM token is not valid yet: it was signed {} s in the future", ahead.as_secs())]
    TokenNotYetValid { ahead: Duration, signed_at: SystemTime },
    #[error("the IAM token expired {} s ago", ago.as_secs())]
    TokenExpired { ago: Duration, signed_at: SystemTime },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("the session was not ready within {} s", .0.as_secs())]
    SetupTimeout(Duration),
    #[error("sorry, too many clients already: the server proxy holds its maximum of {max} connections")]
    TooManyConnections { max: usize },
    #[error("too many new connections from {caller}: the server proxy's rate limit per caller was reached")]
    RateLimited { caller: String },
    #[error("the server proxy requires proof of the caller's IAM identity, and none was sent")]
    IdentityRequired,
    #[error("the caller's IAM identity could not be verified: {0}")]
    Identity(#[from] IdentityError),
    #[error("{} may not reach target {target}", principal.as_deref().unwrap_or("this caller"))]
    PrincipalRefused { principal: Option<String>, target: Endpoint },
    #[error("the IAM token and the identity proof were signed with different credentials")]
    IdentityMismatch,
}

const CLOCK_HINT: &str = "check the clock of the machine running the client proxy (enable NTP); \
an IAM token is valid for 15 minutes from the time it was signed";

impl SessionError {
    pub fn sqlstate(&self) -> SqlState {
        match self {
            SessionError::Wire(e) => e.sqlstate(),
            SessionError::Startup(e) => e.sqlstate(),
            SessionError::Upstream(e) => e.sqlstate(),
            SessionError::SetupTimeout(_) => SqlState::CONNECTION_FAILURE,
            SessionError::TooManyConnections { .. } | SessionError::RateLimited { .. } => {
                SqlState::TOO_MANY_CONNECTIONS
            }
            SessionError::Identity(e) if !e.is_caller_fault() => SqlState::UNABLE_TO_CONNECT,
            _ => SqlState::INVALID_AUTHORIZATION,
        }
    }

    /// A short label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            SessionError::Wire(_) => "protocol",
            SessionError::Startup(_) => "startup",
            SessionError::PlaintextRefused => "plaintext",
            SessionError::NotAllowed { .. } => "not_allowed",
            SessionError::ModeRefused { .. } => "auth_mode",
            SessionError::TokenUnreadable { .. }
            | SessionError::TokenTarget { .. }
            | SessionError::TokenUser { .. } => "token",
            SessionError::TokenNotYetValid { .. } | SessionError::TokenExpired { .. } => "token_window",
            SessionError::Upstream(UpstreamError::Rejected(_)) => "rejected_by_database",
            SessionError::Upstream(e) if e.is_client_side() => "client",
            SessionError::Upstream(_) => "upstream",
            SessionError::SetupTimeout(_) => "setup_timeout",
            SessionError::TooManyConnections { .. } => "max_connections",
            SessionError::RateLimited { .. } => "rate_limited",
            SessionError::IdentityRequired => "identity_required",
            SessionError::Identity(e) if e.is_caller_fault() => "identity_refused",
            SessionError::Identity(_) => "identity_unavailable",
            SessionError::PrincipalRefused { .. } => "principal_refused",
            SessionError::IdentityMismatch => "identity_mismatch",
        }
    }

    pub fn to_error_fields(&self) -> ErrorFields {
        let fatal = |hint: &str| ErrorFields::fatal(self.sqlstate(), self.to_string()).hint(hint);
        match self {
            SessionError::Wire(_) => {
                fatal("the client does not speak the PostgreSQL protocol, or its packet was damaged")
            }
            SessionError::Startup(e) => fatal(e.hint()),
            SessionError::PlaintextRefused => fatal(
                "connect through the rds-auth-proxy client, which uses mutual TLS to reach the server proxy",
            ),
            SessionError::NotAllowed { .. } => ErrorFields::fatal(self.sqlstate(), self.to_string())
                .detail(
                    "rule: a target must be on the server proxy's allowlist, by exact endpoint name and port",
                )
                .hint(
                    "check the target's endpoint and port, or ask the server proxy's operators to allow it",
                ),
            SessionError::ModeRefused { .. } => fatal(
                "choose an auth mode the server proxy accepts for this target (its configuration decides)",
            ),
            SessionError::TokenUnreadable { .. } => {
                fatal("check that the client proxy uses auth mode iam for this target")
            }
            SessionError::TokenTarget { .. } => fatal(
                "the client proxy must sign for the exact endpoint and port of the target; check its target configuration",
            ),
            SessionError::TokenUser { .. } => {
                fatal("the client proxy signs for the startup user; check the client proxy's version")
            }
            SessionError::TokenNotYetValid { signed_at, .. }
            | SessionError::TokenExpired { signed_at, .. } => {
                let (signed, now) = (rfc3339(*signed_at), rfc3339(SystemTime::now()));
                ErrorFields::fatal(self.sqlstate(), self.to_string())
                    .detail(format!("token signed at {signed}; server proxy time {now}"))
                    .hint(CLOCK_HINT)
            }
            SessionError::Upstream(e) => e.to_error_fields(),
            SessionError::SetupTimeout(_) => fatal(
                "the database accepted the connection but did not finish the login in time; check its load and its logs",
            ),
            SessionError::TooManyConnections { .. } => {
                fatal("retry in a moment; if it persists, ask the operators to add replicas or raise limits.max_connections")
            }
            SessionError::RateLimited { .. } => fatal(
                "wait a few seconds before reconnecting; a connection pool in the application avoids reconnect storms",
            ),
            SessionError::IdentityRequired => fatal(
                "upgrade the rds-auth-proxy client, and keep `identity = true` on its upstream: it sends a presigned sts:GetCallerIdentity",
            ),
            SessionError::Identity(IdentityError::Window(_)) => fatal(CLOCK_HINT),
            SessionError::Identity(e) if e.is_caller_fault() => fatal(
                "check the client proxy's AWS credentials (`rds-auth-proxy doctor`); expired SSO sessions need `aws sso login`",
            ),
            SessionError::Identity(_) => fatal(
                "the server proxy cannot reach STS right now; retry, and tell its operators if it persists",
            ),
            SessionError::PrincipalRefused { .. } => ErrorFields::fatal(self.sqlstate(), self.to_string())
                .detail("rule: the target's `principals` list names the IAM roles and users that may reach it")
                .hint("use an AWS profile whose role is allowed (`--profile`), or ask the operators to add your role"),
            SessionError::IdentityMismatch => {
                fatal("sign the token and the identity proof with the same credentials: one AWS profile per target")
            }
        }
    }
}

/// A time as RFC 3339 in UTC, for any time a peer can put in a token, 1960 included.
fn rfc3339(at: SystemTime) -> String {
    let at = time::OffsetDateTime::from(at);
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "an unprintable time".to_owned())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn times_before_1970_print() {
        let error = SessionError::TokenExpired {
            ago: Duration::from_secs(1),
            signed_at: UNIX_EPOCH - Duration::from_secs(315_619_200),
        };
        let fields = error.to_error_fields();
        let detail = String::from_utf8_lossy(fields.get(b'D').unwrap()).into_owned();
        assert!(detail.starts_with("token signed at 1960-01-01T00:00:00Z"), "{detail}");
    }
}
