//! What `rds-auth-proxy doctor` asks of the path: can the server proxy be reached and does
//! its TLS verify, and does a real login through the whole path work. Both run the same code
//! as sessions do.

use std::sync::Arc;
use std::time::Duration;

use rds_auth_codec::backend::BackendMessage;
use rds_auth_codec::startup::StartupMessage;
use rds_auth_codec::{ErrorFields, Params, ProtocolVersion, SqlState, StartupPacket};
use rds_auth_io::PgStream;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::session::{connect_server_proxy, serve};
use crate::{ClientError, ServerProxy, Shared, Target};

/// What a reachable server proxy negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyCheck {
    pub tls_version: String,
    pub alpn: Option<String>,
}

/// Connects to a server proxy as sessions do (TLS verified, client certificate presented) and
/// waits briefly for a refusal: TLS 1.3 reports a refused client certificate only after the
/// handshake.
pub async fn check_server_proxy(proxy: &ServerProxy) -> Result<ProxyCheck, ClientError> {
    let mut stream = connect_server_proxy(proxy).await?;
    let transport = stream.get_ref();
    let check = ProxyCheck {
        tls_version: transport.tls_version().unwrap_or("?").to_owned(),
        alpn: transport.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
    };
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(500), stream.get_mut().read(&mut byte)).await {
        // Quiet: the server proxy waits for a startup packet, as it should.
        Err(_) => Ok(check),
        Ok(Ok(_)) => Err(ClientError::ServerProxyClosed),
        Ok(Err(e)) => Err(crate::session::server_error(rds_auth_io::IoError::Io(e), proxy)),
    }
}

/// What a test login learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginCheck {
    pub server_version: Option<String>,
    pub backend_pid: Option<u32>,
}

/// Logs in through the whole path as `user`, exactly as a local client would, and ends the
/// session at once. An ErrorResponse comes back as it would reach psql.
pub async fn check_login(
    target: Arc<Target>,
    shared: Arc<Shared>,
    user: &str,
    database: Option<&str>,
) -> Result<LoginCheck, ErrorFields> {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(serve(theirs, "doctor".to_owned(), target, shared, CancellationToken::new()));
    let mut params = Params::new();
    let invalid =
        |_| ErrorFields::fatal(SqlState::PROTOCOL_VIOLATION, "the user or database name cannot be sent");
    params.push(&b"user"[..], user.as_bytes().to_vec()).map_err(invalid)?;
    if let Some(database) = database {
        params.push(&b"database"[..], database.as_bytes().to_vec()).map_err(invalid)?;
    }
    params.push(&b"application_name"[..], &b"rds-auth-proxy doctor"[..]).map_err(invalid)?;
    let startup = StartupPacket::Startup(StartupMessage { version: ProtocolVersion::V3_0, params });
    let mut stream = PgStream::new(ours);
    let lost = |_| ErrorFields::fatal(SqlState::CONNECTION_FAILURE, "the session ended without an answer");
    stream.send(&startup.to_bytes()).await.map_err(|e| lost(e.to_string()))?;
    let mut check = LoginCheck { server_version: None, backend_pid: None };
    let exchange = async {
        loop {
            match stream.read_backend(1 << 20).await.map_err(|e| lost(e.to_string()))? {
                BackendMessage::ParameterStatus { name, value } if name.as_ref() == b"server_version" => {
                    check.server_version = Some(String::from_utf8_lossy(&value).into_owned());
                }
                BackendMessage::BackendKeyData(key) => check.backend_pid = Some(key.pid),
                BackendMessage::ErrorResponse(fields) => return Err(fields),
                BackendMessage::ReadyForQuery(_) => {
                    let _ = stream.send(&rds_auth_codec::frontend::terminate()).await;
                    return Ok(check);
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), exchange).await.map_err(|_| {
        ErrorFields::fatal(SqlState::CONNECTION_FAILURE, "the login did not finish within 60 s")
    })?
}
