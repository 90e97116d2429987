//! The TLS front: RDS IAM authentication for tokens `pam_exec` cannot carry.
//!
//! `pam_exec` passes at most 511 bytes of a password, and a token signed with session
//! credentials is longer, so on the PAM port such tokens always fail. The front accepts them
//! the way RDS does: SSLRequest, `S`, TLS with the same certificate as Postgres, a protocol
//! 3.x StartupMessage, AuthenticationCleartextPassword, and the token checked by
//! [`verify`](crate::standin::verify) for the front's own port. A refused token gets RDS's
//! exact ErrorResponse; an accepted one is relayed in plaintext to Postgres on
//! `127.0.0.1:<pam_port>`, which trusts connections from inside the container, with the
//! client's StartupMessage unchanged.
//!
//! Only TLS connections are served: a plaintext StartupMessage is refused as Postgres refuses
//! it when `pg_hba.conf` has only `hostssl` lines. Unlike RDS, the front does not check that
//! the user is a member of `rds_iam`: any user with a valid token gets in.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use rds_auth_codec::backend::{Authentication, BackendMessage};
use rds_auth_codec::error_fields::code;
use rds_auth_codec::frontend::AuthResponse;
use rds_auth_codec::startup::StartupMessage;
use rds_auth_codec::{ErrorFields, Limits, SqlState, StartupPacket, WireError};
use rds_auth_io::relay::{NoObserver, RelayConfig, RelayEnd, relay};
use rds_auth_io::tls::{ClientAuth, Identity, server_config};
use rds_auth_io::{IoError, PgStream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::standin::pam::{log_line, log_verdict};
use crate::standin::{Config, Policy, Refusal, StandinError, pam_failure_message, verify};

/// PostgreSQL's `PG_MAX_AUTH_TOKEN_LENGTH`, plus the length word.
const MAX_PASSWORD_MESSAGE: usize = 65_535 + 4;

/// How long a client may take from connecting to sending its password.
const AUTH_TIMEOUT: Duration = Duration::from_secs(30);

/// The ErrorResponse Postgres sends when PAM refuses a login, field for field as RDS sends it.
pub fn pam_failure(user: &str) -> ErrorFields {
    let mut fields = ErrorFields::fatal(SqlState::INVALID_AUTHORIZATION, pam_failure_message(user));
    fields.push(code::FILE, Bytes::from_static(b"auth.c"));
    fields.push(code::ROUTINE, Bytes::from_static(b"auth_failed"));
    fields
}

/// Why one connection ended badly, for the log.
#[derive(Debug, thiserror::Error)]
enum FrontError {
    #[error(transparent)]
    Stream(#[from] IoError),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Protocol(&'static str),
    #[error("the client took longer than {0:?} to authenticate")]
    Timeout(Duration),
}

/// Everything a connection needs, shared by all of them.
struct Front {
    policy: Policy,
    acceptor: TlsAcceptor,
    upstream: SocketAddr,
    log_path: PathBuf,
}

/// Serves connections on `listener` until the process ends.
pub async fn run(listener: TcpListener, config: &Config) -> Result<(), StandinError> {
    let identity = Identity::load(&config.tls.cert, &config.tls.key)?;
    let tls = server_config(identity, ClientAuth::None, &[], false)?;
    let front = Arc::new(Front {
        policy: config.policy(config.endpoint.front_port),
        acceptor: TlsAcceptor::from(tls),
        upstream: SocketAddr::from(([127, 0, 0, 1], config.endpoint.pam_port)),
        log_path: config.log_path.clone(),
    });
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                log_line(&front.log_path, &format!("standin front: accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let front = front.clone();
        tokio::spawn(async move {
            if let Err(e) = front.serve(stream, peer).await {
                log_line(&front.log_path, &format!("standin front: connection from {peer}: {e}"));
            }
        });
    }
}

impl Front {
    async fn serve(&self, stream: TcpStream, peer: SocketAddr) -> Result<(), FrontError> {
        // Nagle would hold the last small message of each exchange back.
        stream.set_nodelay(true)?;
        let authenticated = tokio::time::timeout(AUTH_TIMEOUT, self.authenticate(stream, peer))
            .await
            .map_err(|_| FrontError::Timeout(AUTH_TIMEOUT))??;
        let Some((mut client, client_ahead, startup)) = authenticated else { return Ok(()) };

        let mut upstream = match TcpStream::connect(self.upstream).await {
            Ok(upstream) => upstream,
            Err(e) => {
                let error = ErrorFields::fatal(
                    SqlState::CONNECTION_FAILURE,
                    "the stand-in front cannot reach Postgres",
                );
                client.write_all(&error.to_error_bytes()).await?;
                return Err(e.into());
            }
        };
        upstream.set_nodelay(true)?;
        upstream.write_all(&StartupPacket::Startup(startup).to_bytes()).await?;
        let outcome = relay(
            &mut client,
            &mut upstream,
            client_ahead,
            BytesMut::new(),
            RelayConfig::new(),
            std::future::pending(),
            Bytes::new(),
            &mut NoObserver,
        )
        .await;
        match outcome.end {
            RelayEnd::ClientError(e) => Err(FrontError::Io(e)),
            RelayEnd::ServerError(e) => Err(FrontError::Io(e)),
            RelayEnd::Protocol(_, e) => Err(FrontError::Wire(e)),
            RelayEnd::ClientClosed | RelayEnd::ServerClosed | RelayEnd::Shutdown => Ok(()),
        }
    }

    /// The handshake up to an accepted token: the TLS stream, bytes already read from it, and
    /// the StartupMessage to send on. `None` when the connection ended without a session
    /// (a refusal already sent, a cancel request forwarded, a silent probe).
    async fn authenticate(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Result<Option<(tokio_rustls::server::TlsStream<TcpStream>, BytesMut, StartupMessage)>, FrontError>
    {
        let mut plain = PgStream::new(stream);
        loop {
            match plain.read_startup(Limits::POSTGRES_STARTUP).await? {
                None => return Ok(None),
                Some(StartupPacket::SslRequest) => break,
                // No GSSAPI here; libpq then asks for TLS.
                Some(StartupPacket::GssEncRequest) => plain.send(b"N").await?,
                Some(cancel @ StartupPacket::CancelRequest(_)) => {
                    self.forward_cancel(&cancel).await?;
                    return Ok(None);
                }
                Some(StartupPacket::Startup(startup)) => {
                    let user = param(&startup, b"user").unwrap_or_default();
                    let database = param(&startup, b"database").unwrap_or_else(|| user.clone());
                    let message = format!(
                        "no pg_hba.conf entry for host \"{}\", user \"{user}\", database \"{database}\", no encryption",
                        peer.ip()
                    );
                    refuse(&mut plain, ErrorFields::fatal(SqlState::INVALID_AUTHORIZATION, message)).await;
                    return Ok(None);
                }
            }
        }
        if !plain.buffered().is_empty() {
            let error = ErrorFields::fatal(
                SqlState::PROTOCOL_VIOLATION,
                "received unencrypted data after SSL request",
            );
            refuse(&mut plain, error).await;
            return Err(FrontError::Protocol("bytes after the SSLRequest, before TLS"));
        }
        plain.send(b"S").await?;
        let (tcp, _) = plain.into_parts();
        let tls = self.acceptor.accept(tcp).await?;

        let mut client = PgStream::new(tls);
        let startup = match client.read_startup(Limits::POSTGRES_STARTUP).await? {
            None => return Ok(None),
            Some(StartupPacket::Startup(startup)) => startup,
            Some(cancel @ StartupPacket::CancelRequest(_)) => {
                self.forward_cancel(&cancel).await?;
                return Ok(None);
            }
            Some(StartupPacket::SslRequest | StartupPacket::GssEncRequest) => {
                let error = ErrorFields::fatal(SqlState::PROTOCOL_VIOLATION, "encryption requested twice");
                refuse(&mut client, error).await;
                return Err(FrontError::Protocol("an encryption request inside TLS"));
            }
        };
        let Some(user) = param(&startup, b"user") else {
            let error = ErrorFields::fatal(
                SqlState::INVALID_AUTHORIZATION,
                "no PostgreSQL user name specified in startup packet",
            );
            refuse(&mut client, error).await;
            return Ok(None);
        };

        client.send(&BackendMessage::Authentication(Authentication::CleartextPassword).to_bytes()).await?;
        let frame = client.read_frame(MAX_PASSWORD_MESSAGE).await?;
        let AuthResponse::Password(password) = AuthResponse::parse_password(frame)? else {
            return Err(FrontError::Protocol("not a PasswordMessage"));
        };
        let verdict = match std::str::from_utf8(&password) {
            Ok(token) => verify(&self.policy, &user, token, SystemTime::now()),
            Err(_) => Err(Refusal::NotUtf8),
        };
        log_verdict(&self.log_path, "front", &user, password.len(), &verdict);
        if verdict.is_err() {
            refuse(&mut client, pam_failure(&user)).await;
            return Ok(None);
        }
        let (tls, ahead) = client.into_parts();
        Ok(Some((tls, ahead, startup)))
    }

    /// Passes a CancelRequest on to Postgres, which answers nothing and closes.
    async fn forward_cancel(&self, cancel: &StartupPacket) -> Result<(), FrontError> {
        let mut upstream = TcpStream::connect(self.upstream).await?;
        upstream.write_all(&cancel.to_bytes()).await?;
        upstream.shutdown().await?;
        Ok(())
    }
}

/// Sends a FATAL error and closes. The client may already be gone, which changes nothing.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut PgStream<S>, error: ErrorFields) {
    if stream.send(&error.to_error_bytes()).await.is_ok() {
        let _ = stream.get_mut().shutdown().await;
    }
}

fn param(startup: &StartupMessage, name: &[u8]) -> Option<String> {
    startup.params.get(name).map(|value| String::from_utf8_lossy(value).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_the_one_rds_sends() {
        let fields = pam_failure("iam_user");
        let got: Vec<(char, String)> =
            fields.iter().map(|(c, v)| (c as char, String::from_utf8_lossy(v).into_owned())).collect();
        let want = [
            ('S', "FATAL"),
            ('V', "FATAL"),
            ('C', "28000"),
            ('M', "PAM authentication failed for user \"iam_user\""),
            ('F', "auth.c"),
            ('R', "auth_failed"),
        ];
        assert_eq!(got, want.map(|(c, v)| (c, v.to_owned())));
    }
}
