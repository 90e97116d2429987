use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use aws_credential_types::provider::ProvideCredentials;
use bytes::BytesMut;
use rds_auth_codec::backend::{Authentication, BackendKeyData, BackendMessage};
use rds_auth_codec::startup::StartupMessage;
use rds_auth_codec::{ErrorFields, Limits, ProtocolVersion, SqlState, StartupPacket};
use rds_auth_io::accept::{self, AcceptPolicy, Accepted};
use rds_auth_io::relay::{self, NoObserver, RelayEnd};
use rds_auth_io::{IoError, PgStream, Rewind, Transport, socket};
use rds_auth_startup::{Injection, Secret};
use rds_auth_token::TokenRequest;
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, TlsStream};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, field, info, info_span};

use crate::cancel::{CancelGuard, CancelRoute};
use crate::{CancelRegistry, ClientError, Route, ServerProxy, Shared, Target, TargetAuth};

/// The newest protocol minor version the client proxy offers its clients, and speaks with the
/// server proxy whatever the client speaks.
const NEWEST_MINOR: u16 = 2;
/// The largest message read before ReadyForQuery.
const MAX_TAIL_MESSAGE: usize = 1 << 20;

type Stream = PgStream<Transport<TcpStream>>;

pub(crate) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    target: Arc<Target>,
    shared: Arc<Shared>,
    terminate: CancellationToken,
) {
    let span = info_span!(
        "conn",
        conn.id = %uuid::Uuid::new_v4().simple(),
        client.addr = %peer,
        target = %target.name,
        db.user = field::Empty,
        auth.mode = target.auth.name(),
    );
    async move {
        let _ = socket::tune(&tcp);
        let policy =
            AcceptPolicy { tls: shared.local_tls.clone(), max_startup_len: Limits::POSTGRES_STARTUP };
        let Ok(accepted) = tokio::time::timeout(shared.startup_timeout, accept::accept(tcp, &policy)).await
        else {
            debug!("startup timeout");
            return;
        };
        match accepted {
            Accepted::Startup { stream, message } => {
                session(stream, message, &target, &shared, &terminate).await
            }
            Accepted::Cancel { stream, request } => {
                crate::cancel::forward(stream, request, &shared.cancels).await
            }
            Accepted::Refuse { mut stream, error } => {
                debug!(error = %error, "refused during startup");
                let _ = stream.send(&ClientError::Wire(error).to_error_fields().to_error_bytes()).await;
            }
            Accepted::Close(reason) => debug!(reason = reason.label(), "closed during startup"),
        }
    }
    .instrument(span)
    .await;
}

async fn session(
    mut client: Stream,
    message: StartupMessage,
    target: &Target,
    shared: &Shared,
    terminate: &CancellationToken,
) {
    let started = std::time::Instant::now();
    // The cancel key stays registered exactly as long as the session runs.
    let (server, _cancel_guard) = match setup(&mut client, message, target, shared).await {
        Ok(server) => server,
        Err(error) => {
            info!(reason = error.reason(), error = %error, "session refused");
            if !matches!(error, ClientError::ClientGone | ClientError::RefusedUpstream { .. }) {
                let _ = client.send(&error.to_error_fields().to_error_bytes()).await;
            }
            return;
        }
    };
    let (mut client_io, client_ahead) = client.into_parts();
    let (mut server_io, server_ahead) = server.into_parts();
    let closing = ErrorFields::fatal(
        SqlState::ADMIN_SHUTDOWN,
        "terminating connection because the client proxy is shutting down",
    )
    .hint("start rds-auth-proxy again and reconnect")
    .to_error_bytes();
    let outcome = relay::relay(
        &mut client_io,
        &mut server_io,
        client_ahead,
        server_ahead,
        shared.relay,
        terminate.cancelled(),
        closing,
        &mut NoObserver,
    )
    .await;
    let end = match &outcome.end {
        RelayEnd::ClientClosed => "client_closed",
        RelayEnd::ServerClosed => "server_closed",
        RelayEnd::ClientError(_) => "client_error",
        RelayEnd::ServerError(_) => "server_error",
        RelayEnd::Protocol(..) => "protocol_error",
        RelayEnd::Shutdown => "shutdown",
    };
    info!(
        outcome = end,
        bytes.to_db = outcome.bytes_client_to_server,
        bytes.from_db = outcome.bytes_server_to_client,
        duration_ms = started.elapsed().as_millis() as u64,
        "session ended"
    );
}

async fn setup(
    client: &mut Stream,
    message: StartupMessage,
    target: &Target,
    shared: &Shared,
) -> Result<(Stream, Option<CancelGuard>), ClientError> {
    let StartupMessage { version, mut params } = message;
    let negotiation = rds_auth_startup::negotiate(version, &mut params, NEWEST_MINOR);
    if let Some(reply) = &negotiation.reply {
        client.send(&reply.to_bytes()).await.map_err(|_| ClientError::ClientGone)?;
    }
    rds_auth_startup::check_client_params(&params)?;
    let user = rds_auth_startup::user(&params)?.to_owned();
    Span::current().record("db.user", user.as_str());

    let credential = match &target.auth {
        TargetAuth::Iam => Some(sign(target, &user, shared).await?),
        TargetAuth::Password(secret) => Some(secret.clone()),
        TargetAuth::Passthrough => None,
    };
    let params =
        rds_auth_startup::inject(&params, &Injection { target: target.endpoint.clone(), credential })?;
    let startup =
        StartupPacket::Startup(StartupMessage { version: ProtocolVersion::V3_2, params }).to_bytes();

    let Route::ServerProxy(proxy) = &target.route;
    let mut server = connect_server_proxy(proxy).await?;
    server.send(&startup).await.map_err(|e| server_error(IoError::Io(e), proxy))?;
    let guard = relay_startup_tail(&mut server, client, negotiation.version, proxy, &shared.cancels).await?;
    Ok((server, guard))
}

/// A token for exactly this user and the target's endpoint, port and region, reused from the
/// cache while it is young.
async fn sign(target: &Target, user: &str, shared: &Shared) -> Result<Secret, ClientError> {
    let credentials = target
        .credentials
        .provide_credentials()
        .await
        .map_err(|_| ClientError::Credentials { label: target.credentials_label.clone() })?;
    let host = target.endpoint.host();
    let request = TokenRequest { host: &host, port: target.endpoint.port(), user, region: &target.region };
    let token = shared.tokens.get_or_generate(&credentials, &request, SystemTime::now())?;
    Ok(Secret::new(token.expose().to_owned()))
}

pub(crate) async fn connect_server_proxy(proxy: &ServerProxy) -> Result<Stream, ClientError> {
    let unreachable =
        || ClientError::ServerProxyUnreachable { name: proxy.name.clone(), address: proxy.address.clone() };
    let tcp = tokio::time::timeout(proxy.connect_timeout, TcpStream::connect(proxy.address.as_str()))
        .await
        .map_err(|_| unreachable())?
        .map_err(|_| unreachable())?;
    let _ = socket::tune(&tcp);
    let tls = TlsConnector::from(proxy.tls.clone())
        .connect(proxy.server_name.clone(), Rewind::new(tcp))
        .await
        .map_err(|e| {
            debug!(error = %e, "TLS with the server proxy failed");
            ClientError::ServerProxyTls { name: proxy.name.clone() }
        })?;
    Ok(PgStream::new(Transport::Tls(Box::new(TlsStream::Client(tls)))))
}

/// Relays what the server proxy says until ReadyForQuery, and in passthrough mode the
/// client's answers to authentication requests. Messages are batched into one write until
/// the client has to act.
async fn relay_startup_tail(
    server: &mut Stream,
    client: &mut Stream,
    version: ProtocolVersion,
    proxy: &Arc<ServerProxy>,
    cancels: &Arc<CancelRegistry>,
) -> Result<Option<CancelGuard>, ClientError> {
    let mut out = BytesMut::new();
    let mut guard = None;
    loop {
        let message = tokio::select! {
            message = server.read_backend(MAX_TAIL_MESSAGE) => message.map_err(|e| server_error(e, proxy))?,
            frame = client.read_frame(MAX_TAIL_MESSAGE), if out.is_empty() => {
                let frame = frame.map_err(|_| ClientError::ClientGone)?;
                server.send(&frame.to_bytes()).await.map_err(|_| ClientError::ServerProxyClosed)?;
                continue;
            }
        };
        let flush_now = match &message {
            BackendMessage::BackendKeyData(key) => {
                // The one place the server proxy's key becomes the client's: the real pid,
                // and a key of ours that leads back to the sealed one.
                let route = CancelRoute::ServerProxy { proxy: proxy.clone(), key: key.key.clone() };
                let (client_key, registered) = cancels.register(key.pid, version, route);
                guard = Some(registered);
                BackendMessage::BackendKeyData(BackendKeyData { pid: key.pid, key: client_key })
                    .encode(&mut out);
                false
            }
            // The server proxy downgraded the leg between the proxies; the client's version
            // was settled already, so this stays between the proxies.
            BackendMessage::NegotiateProtocolVersion { .. } => false,
            BackendMessage::Authentication(Authentication::Ok) => {
                message.encode(&mut out);
                false
            }
            BackendMessage::ParameterStatus { .. } | BackendMessage::NoticeResponse(_) => {
                message.encode(&mut out);
                false
            }
            BackendMessage::ErrorResponse(_)
            | BackendMessage::ReadyForQuery(_)
            | BackendMessage::Authentication(_) => {
                message.encode(&mut out);
                true
            }
            BackendMessage::Other(_) => {
                message.encode(&mut out);
                false
            }
        };
        if flush_now {
            client.send(&out).await.map_err(|_| ClientError::ClientGone)?;
            out.clear();
            match message {
                BackendMessage::ReadyForQuery(_) => return Ok(guard),
                BackendMessage::ErrorResponse(fields) => {
                    let sqlstate = fields.sqlstate().unwrap_or(SqlState::INTERNAL_ERROR);
                    return Err(ClientError::RefusedUpstream { sqlstate, message: fields.message() });
                }
                _ => {}
            }
        }
    }
}

/// Why reading from or writing to the server proxy failed. TLS 1.3 reports a refused client
/// certificate only after the handshake, as an alert on the first read.
fn server_error(error: IoError, proxy: &ServerProxy) -> ClientError {
    use rustls::AlertDescription as Alert;
    match error {
        IoError::Wire(_) => ClientError::ServerProxyProtocol,
        IoError::Io(io) => match io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::AlertReceived(
                Alert::CertificateRequired
                | Alert::BadCertificate
                | Alert::UnknownCA
                | Alert::CertificateUnknown
                | Alert::CertificateExpired
                | Alert::CertificateRevoked
                | Alert::AccessDenied,
            )) => ClientError::ClientCertificateRefused { name: proxy.name.clone() },
            _ => ClientError::ServerProxyClosed,
        },
        IoError::Eof => ClientError::ServerProxyClosed,
    }
}
