use std::io;

use rds_auth_codec::{ErrorFields, SqlState, WireError};

/// The hint added to RDS's catch-all IAM failure, which says nothing about the cause.
pub const PAM_FAILURE_HINT: &str = "RDS answers every failed IAM login this way. \
The usual causes: the database user lacks `GRANT rds_iam`; the IAM identity lacks \
rds-db:connect for this database user; the token expired, or the laptop clock is off; the \
user name's case differs from the database role; the IAM policy has not propagated yet. \
RDS writes the exact reason to its iam-db-auth-error log (export it to CloudWatch).";

/// Reaching or authenticating to the database failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot resolve {host}")]
    Resolve { host: String },
    #[error("{host} resolves only to addresses the proxy refuses to connect to")]
    ForbiddenAddress { host: String },
    #[error("cannot connect to the database after {attempts} attempts")]
    Connect {
        attempts: u32,
        #[source]
        last: io::Error,
    },
    #[error("the database refused TLS")]
    TlsRefused,
    #[error("TLS with the database failed")]
    Tls(#[source] io::Error),
    #[error("the database closed the connection during authentication")]
    ClosedDuringAuth,
    #[error("the database did not finish authentication in time")]
    AuthTimeout,
    #[error("the database rejected the login")]
    Rejected(ErrorFields),
    #[error("role \"{user}\" is not enabled for IAM authentication (the database asked for {asked})")]
    NotIamRole { user: String, asked: &'static str },
    #[error("the database asked for {0}, which rds-auth-proxy does not support")]
    UnsupportedAuth(&'static str),
    #[error("SCRAM authentication with the database failed")]
    Scram(#[source] io::Error),
    #[error("channel binding cannot pass through rds-auth-proxy")]
    ChannelBindingThroughProxy,
    #[error("the client sent an unexpected message during authentication")]
    ClientProtocol,
    #[error("the client went away during authentication")]
    ClientGone,
    #[error("the database sent bytes that are not the protocol")]
    Protocol(#[from] WireError),
    #[error("I/O error talking to the database")]
    Io(#[source] io::Error),
}

impl UpstreamError {
    pub fn sqlstate(&self) -> SqlState {
        match self {
            UpstreamError::Resolve { .. }
            | UpstreamError::Connect { .. }
            | UpstreamError::TlsRefused
            | UpstreamError::Tls(_) => SqlState::UNABLE_TO_CONNECT,
            UpstreamError::ClosedDuringAuth
            | UpstreamError::AuthTimeout
            | UpstreamError::Io(_)
            | UpstreamError::ClientGone => SqlState::CONNECTION_FAILURE,
            UpstreamError::ForbiddenAddress { .. }
            | UpstreamError::NotIamRole { .. }
            | UpstreamError::Scram(_)
            | UpstreamError::ChannelBindingThroughProxy => SqlState::INVALID_AUTHORIZATION,
            UpstreamError::UnsupportedAuth(_) => SqlState::FEATURE_NOT_SUPPORTED,
            UpstreamError::ClientProtocol | UpstreamError::Protocol(_) => SqlState::PROTOCOL_VIOLATION,
            UpstreamError::Rejected(fields) => fields.sqlstate().unwrap_or(SqlState::INVALID_AUTHORIZATION),
        }
    }

    pub fn hint(&self) -> &'static str {
        match self {
            UpstreamError::Resolve { .. } => {
                "check the endpoint name, and that the server proxy can resolve it (or set a resolver override)"
            }
            UpstreamError::ForbiddenAddress { .. } => {
                "names must not lead to loopback, link-local or metadata addresses; list an IP \
                 address literally in the allowlist if it is really meant"
            }
            UpstreamError::Connect { .. } => {
                "check that the database is running and that its security group lets the server proxy in"
            }
            UpstreamError::TlsRefused => {
                "IAM authentication needs TLS; check that the database has SSL enabled (rds.force_ssl)"
            }
            UpstreamError::Tls(_) => {
                "check the CA bundle the proxy trusts (the RDS global bundle for RDS) and that the \
                 target is the endpoint name on the database's certificate, not an alias"
            }
            UpstreamError::ClosedDuringAuth | UpstreamError::AuthTimeout => {
                "RDS may be throttling IAM logins (about 200 new connections per second) or its \
                 IAM service failed; check the database's iam-db-auth-error log"
            }
            UpstreamError::Rejected(_) => "",
            UpstreamError::NotIamRole { .. } => {
                "GRANT rds_iam TO the user on the database, or choose the password auth mode for this target"
            }
            UpstreamError::UnsupportedAuth(_) => {
                "use IAM, password (cleartext, MD5 or SCRAM) or passthrough authentication for this user"
            }
            UpstreamError::Scram(_) => "check the password configured for this target",
            UpstreamError::ChannelBindingThroughProxy => {
                "a proxy cannot pass SCRAM channel binding through; connect with channel_binding=disable, \
                 or with sslmode=disable toward the local proxy"
            }
            UpstreamError::ClientProtocol => {
                "the client sent something other than an authentication response"
            }
            UpstreamError::ClientGone => "",
            UpstreamError::Protocol(_) => "the target does not speak the PostgreSQL protocol",
            UpstreamError::Io(_) => "the connection to the database broke; try again",
        }
    }

    /// The ErrorResponse a client sees. A database's own error is kept whole, with a hint
    /// added to RDS's PAM failure; our own errors carry fixed text only, never an inner
    /// error's `Display`, which could leak addresses or credentials.
    pub fn to_error_fields(&self) -> ErrorFields {
        match self {
            UpstreamError::Rejected(fields) => {
                let mut fields = fields.clone();
                if is_pam_failure(&fields) {
                    fields.add_hint_if_missing(PAM_FAILURE_HINT);
                }
                fields
            }
            other => {
                let fields = ErrorFields::fatal(other.sqlstate(), other.to_string());
                let hint = other.hint();
                if hint.is_empty() { fields } else { fields.hint(hint) }
            }
        }
    }

    /// Whether the failure was the client's doing rather than the database's or ours.
    pub fn is_client_side(&self) -> bool {
        matches!(self, UpstreamError::ClientGone | UpstreamError::ClientProtocol)
    }
}

/// RDS's IAM failure is PostgreSQL's PAM failure: SQLSTATE 28000 and this message.
pub fn is_pam_failure(fields: &ErrorFields) -> bool {
    fields.sqlstate() == Some(SqlState::INVALID_AUTHORIZATION)
        && fields.message().starts_with("PAM authentication failed")
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use rds_auth_codec::error_fields::code;

    #[test]
    fn pam_failure_gets_a_hint_once_and_keeps_its_fields() {
        let rds: ErrorFields = [
            (code::SEVERITY, Bytes::from_static(b"FATAL")),
            (code::SEVERITY_NONLOCALIZED, Bytes::from_static(b"FATAL")),
            (code::SQLSTATE, Bytes::from_static(b"28000")),
            (code::MESSAGE, Bytes::from_static(b"PAM authentication failed for user \"alice\"")),
            (code::FILE, Bytes::from_static(b"auth.c")),
            (code::ROUTINE, Bytes::from_static(b"auth_failed")),
        ]
        .into_iter()
        .collect();
        let sent = UpstreamError::Rejected(rds.clone()).to_error_fields();
        assert_eq!(sent.get(code::HINT).map(|h| h.as_ref()), Some(PAM_FAILURE_HINT.as_bytes()));
        assert_eq!(sent.get(code::ROUTINE), rds.get(code::ROUTINE));
        assert_eq!(sent.iter().count(), rds.iter().count() + 1);

        let other = ErrorFields::fatal(SqlState(*b"3D000"), "database \"nope\" does not exist");
        assert_eq!(UpstreamError::Rejected(other.clone()).to_error_fields(), other);
    }

    #[test]
    fn our_errors_never_show_inner_details() {
        let e = UpstreamError::Connect {
            attempts: 3,
            last: io::Error::other("10.1.2.3:5432 refused, token=secret"),
        };
        let fields = e.to_error_fields();
        assert_eq!(fields.sqlstate(), Some(SqlState::UNABLE_TO_CONNECT));
        assert!(!format!("{fields:?}").contains("secret"));
        assert!(!format!("{fields:?}").contains("10.1.2.3"));
    }
}
