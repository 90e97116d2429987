use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{
    ChannelBinding, SCRAM_SHA_256, SCRAM_SHA_256_PLUS, ScramSha256,
};
use rds_auth_codec::WireError;
use rds_auth_codec::backend::{Authentication, BackendMessage};
use rds_auth_codec::frame::Frame;
use rds_auth_codec::frontend::AuthResponse;
use rds_auth_io::{IoError, PgStream};
use rds_auth_startup::Secret;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use crate::UpstreamError;

/// The largest message accepted during authentication. libpq itself refuses authentication
/// requests over 2 000 bytes and errors over 30 000.
const MAX_AUTH_MESSAGE: usize = 64 * 1024;

/// How the proxy answers the database.
#[derive(Clone)]
pub enum Credential {
    /// An IAM token, sent for a cleartext-password request only. Any other request means the
    /// role is not an IAM role, and the token must not be hashed into a guessable answer.
    Token(Secret),
    /// A static password, used for cleartext, MD5 and SCRAM-SHA-256.
    Password(Secret),
    /// The client authenticates itself; the proxy relays the exchange.
    Passthrough,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Credential::Token(_) => "Token([redacted])",
            Credential::Password(_) => "Password([redacted])",
            Credential::Passthrough => "Passthrough",
        })
    }
}

/// What to do after a message from the database.
#[derive(Debug)]
pub enum AuthStep {
    /// Send these bytes to the database.
    Reply(Bytes),
    /// Passthrough: send this to the client and hand its answer to [`AuthLoop::on_client`].
    AskClient(BackendMessage),
    /// Passthrough: send this to the client; no answer is expected.
    TellClient(BackendMessage),
    /// Nothing to send.
    Wait,
    /// AuthenticationOk arrived.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    Nothing,
    Password,
    SaslInitial,
    SaslResponse,
}

/// The authentication exchange with a database, without I/O.
pub struct AuthLoop {
    user: String,
    credential: Credential,
    channel_binding: Option<Vec<u8>>,
    scram: Option<ScramSha256>,
    awaiting: Awaiting,
    /// Passthrough withheld SCRAM-SHA-256-PLUS from the client.
    plus_withheld: bool,
}

impl fmt::Debug for AuthLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLoop")
            .field("credential", &self.credential)
            .field("awaiting", &self.awaiting)
            .finish_non_exhaustive()
    }
}

impl AuthLoop {
    /// `channel_binding` is the database certificate's `tls-server-end-point` data, which lets
    /// the proxy use SCRAM-SHA-256-PLUS in password mode.
    pub fn new(user: &str, credential: Credential, channel_binding: Option<Vec<u8>>) -> AuthLoop {
        AuthLoop {
            user: user.to_owned(),
            credential,
            channel_binding,
            scram: None,
            awaiting: Awaiting::Nothing,
            plus_withheld: false,
        }
    }

    fn not_iam(&self, asked: &'static str) -> UpstreamError {
        UpstreamError::NotIamRole { user: self.user.clone(), asked }
    }

    pub fn on_backend(&mut self, message: BackendMessage) -> Result<AuthStep, UpstreamError> {
        let auth = match message {
            BackendMessage::Authentication(auth) => auth,
            BackendMessage::ErrorResponse(fields) => return Err(UpstreamError::Rejected(fields)),
            // libpq refuses a NoticeResponse before authentication completes, so a notice
            // here is dropped rather than relayed.
            BackendMessage::NoticeResponse(_) | BackendMessage::NegotiateProtocolVersion { .. } => {
                return Ok(AuthStep::Wait);
            }
            _ => return Err(unexpected()),
        };
        match (&self.credential, auth) {
            (_, Authentication::Ok) => Ok(AuthStep::Done),
            (Credential::Token(secret) | Credential::Password(secret), Authentication::CleartextPassword) => {
                Ok(AuthStep::Reply(AuthResponse::Password(secret.expose_bytes().clone()).to_bytes()))
            }
            (Credential::Token(_), Authentication::Md5Password { .. }) => Err(self.not_iam("MD5")),
            (Credential::Token(_), Authentication::Sasl { .. }) => Err(self.not_iam("SCRAM")),
            (Credential::Password(secret), Authentication::Md5Password { salt }) => {
                let hash = md5_hash(self.user.as_bytes(), secret.expose_bytes(), salt);
                Ok(AuthStep::Reply(AuthResponse::Password(Bytes::from(hash)).to_bytes()))
            }
            (Credential::Password(secret), Authentication::Sasl { mechanisms }) => {
                let offers = |name: &str| mechanisms.iter().any(|m| m.as_ref() == name.as_bytes());
                let (mechanism, binding) = match &self.channel_binding {
                    Some(data) if offers(SCRAM_SHA_256_PLUS) => {
                        (SCRAM_SHA_256_PLUS, ChannelBinding::tls_server_end_point(data.clone()))
                    }
                    // Over TLS without PLUS on offer: "y", the client could bind but the server
                    // cannot, which lets a server that does support it detect a downgrade.
                    Some(_) if offers(SCRAM_SHA_256) => (SCRAM_SHA_256, ChannelBinding::unrequested()),
                    None if offers(SCRAM_SHA_256) => (SCRAM_SHA_256, ChannelBinding::unsupported()),
                    _ => {
                        return Err(UpstreamError::UnsupportedAuth(
                            "a SASL mechanism other than SCRAM-SHA-256",
                        ));
                    }
                };
                let scram = ScramSha256::new(secret.expose_bytes(), binding);
                let initial = AuthResponse::SaslInitialResponse {
                    mechanism: Bytes::from_static(mechanism.as_bytes()),
                    data: Some(Bytes::copy_from_slice(scram.message())),
                };
                self.scram = Some(scram);
                Ok(AuthStep::Reply(initial.to_bytes()))
            }
            (Credential::Password(_), Authentication::SaslContinue(data)) => {
                let scram = self.scram.as_mut().ok_or_else(unexpected)?;
                scram.update(&data).map_err(UpstreamError::Scram)?;
                Ok(AuthStep::Reply(
                    AuthResponse::SaslResponse(Bytes::copy_from_slice(scram.message())).to_bytes(),
                ))
            }
            (Credential::Password(_), Authentication::SaslFinal(data)) => {
                let scram = self.scram.as_mut().ok_or_else(unexpected)?;
                // Verifies the server's signature: a server that does not know the password
                // cannot finish the exchange.
                scram.finish(&data).map_err(UpstreamError::Scram)?;
                Ok(AuthStep::Wait)
            }
            (
                Credential::Passthrough,
                auth @ (Authentication::CleartextPassword | Authentication::Md5Password { .. }),
            ) => {
                self.awaiting = Awaiting::Password;
                Ok(AuthStep::AskClient(BackendMessage::Authentication(auth)))
            }
            (Credential::Passthrough, Authentication::Sasl { mechanisms }) => {
                // The client would bind to the proxy's certificate, not the database's, so
                // SCRAM-SHA-256-PLUS cannot work end to end and is never offered downstream.
                let before = mechanisms.len();
                let mechanisms: Vec<Bytes> =
                    mechanisms.into_iter().filter(|m| m.as_ref() != SCRAM_SHA_256_PLUS.as_bytes()).collect();
                self.plus_withheld = mechanisms.len() < before;
                if mechanisms.is_empty() {
                    return Err(UpstreamError::ChannelBindingThroughProxy);
                }
                self.awaiting = Awaiting::SaslInitial;
                Ok(AuthStep::AskClient(BackendMessage::Authentication(Authentication::Sasl { mechanisms })))
            }
            (Credential::Passthrough, auth @ Authentication::SaslContinue(_)) => {
                self.awaiting = Awaiting::SaslResponse;
                Ok(AuthStep::AskClient(BackendMessage::Authentication(auth)))
            }
            (Credential::Passthrough, auth @ Authentication::SaslFinal(_)) => {
                self.awaiting = Awaiting::Nothing;
                Ok(AuthStep::TellClient(BackendMessage::Authentication(auth)))
            }
            (_, auth @ (Authentication::SaslContinue(_) | Authentication::SaslFinal(_))) => {
                debug!(request = auth.name(), "SASL message out of order");
                Err(unexpected())
            }
            (_, auth) => Err(UpstreamError::UnsupportedAuth(auth.name())),
        }
    }

    /// Passthrough: checks the client's answer and returns the bytes for the database.
    pub fn on_client(&mut self, frame: Frame) -> Result<Bytes, UpstreamError> {
        let awaiting = std::mem::replace(&mut self.awaiting, Awaiting::Nothing);
        let bytes = frame.to_bytes();
        let parsed = match awaiting {
            Awaiting::Password => AuthResponse::parse_password(frame),
            Awaiting::SaslInitial => AuthResponse::parse_sasl_initial(frame),
            Awaiting::SaslResponse => AuthResponse::parse_sasl_response(frame),
            Awaiting::Nothing => return Err(UpstreamError::ClientProtocol),
        }
        .map_err(|_| UpstreamError::ClientProtocol)?;
        if let AuthResponse::SaslInitialResponse { mechanism, data } = &parsed {
            // "y": the client can bind but believes the server cannot. The database, which
            // can, would reject that as a downgrade attack with a message that explains
            // nothing; say why here instead.
            let binds = mechanism.as_ref() == SCRAM_SHA_256_PLUS.as_bytes();
            let claims_downgrade =
                self.plus_withheld && data.as_ref().is_some_and(|d| d.first() == Some(&b'y'));
            if binds || claims_downgrade {
                return Err(UpstreamError::ChannelBindingThroughProxy);
            }
        }
        Ok(bytes)
    }
}

fn unexpected() -> UpstreamError {
    UpstreamError::Protocol(WireError::Malformed { what: "authentication", why: "unexpected message" })
}

fn read_error(e: IoError) -> UpstreamError {
    match e {
        e if e.is_disconnect() => UpstreamError::ClosedDuringAuth,
        IoError::Wire(w) => UpstreamError::Protocol(w),
        IoError::Io(io) => UpstreamError::Io(io),
        IoError::Eof => UpstreamError::ClosedDuringAuth,
    }
}

/// Runs the exchange: sends `startup` to the database, then answers it until
/// AuthenticationOk, asking `client` in passthrough mode. The whole exchange is bounded by
/// `timeout`. AuthenticationOk itself is consumed; the caller tells the client.
pub async fn authenticate<S, C>(
    upstream: &mut PgStream<S>,
    auth: &mut AuthLoop,
    startup: &[u8],
    mut client: Option<&mut PgStream<C>>,
    timeout: Duration,
) -> Result<(), UpstreamError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        upstream.send(startup).await.map_err(UpstreamError::Io)?;
        loop {
            let message = upstream.read_backend(MAX_AUTH_MESSAGE).await.map_err(read_error)?;
            match auth.on_backend(message)? {
                AuthStep::Done => return Ok(()),
                AuthStep::Wait => {}
                AuthStep::Reply(bytes) => upstream.send(&bytes).await.map_err(UpstreamError::Io)?,
                AuthStep::TellClient(message) => {
                    let client = client.as_deref_mut().ok_or(UpstreamError::ClientProtocol)?;
                    client.send(&message.to_bytes()).await.map_err(|_| UpstreamError::ClientGone)?;
                }
                AuthStep::AskClient(message) => {
                    let client = client.as_deref_mut().ok_or(UpstreamError::ClientProtocol)?;
                    client.send(&message.to_bytes()).await.map_err(|_| UpstreamError::ClientGone)?;
                    let answer = client.read_frame(MAX_AUTH_MESSAGE).await.map_err(|e| match e {
                        IoError::Wire(_) => UpstreamError::ClientProtocol,
                        _ => UpstreamError::ClientGone,
                    })?;
                    let bytes = auth.on_client(answer)?;
                    upstream.send(&bytes).await.map_err(UpstreamError::Io)?;
                }
            }
        }
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| UpstreamError::AuthTimeout)?
}

#[cfg(test)]
mod tests;
