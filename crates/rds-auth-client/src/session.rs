use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use bytes::BytesMut;
use rds_auth_codec::backend::{Authentication, BackendKeyData, BackendMessage};
use rds_auth_codec::startup::{CancelRequest, StartupMessage};
use rds_auth_codec::{ErrorFields, Limits, Params, ProtocolVersion, SqlState, StartupPacket};
use rds_auth_io::accept::{self, AcceptPolicy, Accepted};
use rds_auth_io::relay::{self, NoObserver, RelayEnd};
use rds_auth_io::{IoError, PgStream, Rewind, Transport, socket};
use rds_auth_startup::{Endpoint, Injection, Secret};
use rds_auth_token::TokenRequest;
use rds_auth_upstream::{Credential, UpstreamConfig, UpstreamError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, TlsStream};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, field, info, info_span};

use crate::cancel::{CancelGuard, CancelRoute};
use crate::warm::Upstream;
use crate::{
    CancelRegistry, ClientError, IdentitySigning, ProxyAddress, Route, ServerProxy, Shared, Target,
    TargetAuth,
};

/// The newest protocol minor version the client proxy offers its clients, and speaks with the
/// server proxy whatever the client speaks.
const NEWEST_MINOR: u16 = 2;
/// The largest message read before ReadyForQuery.
const MAX_TAIL_MESSAGE: usize = 1 << 20;

/// One local connection, TCP or Unix socket, from accept to close, inside its span.
pub(crate) async fn serve<S>(
    stream: S,
    peer: String,
    target: Arc<Target>,
    shared: Arc<Shared>,
    terminate: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let span = info_span!(
        "conn",
        conn.id = %uuid::Uuid::new_v4().simple(),
        client.addr = %peer,
        target = %target.name,
        db.user = field::Empty,
        auth.mode = target.auth.name(),
    );
    async move {
        let policy =
            AcceptPolicy { tls: shared.local_tls.clone(), max_startup_len: Limits::POSTGRES_STARTUP };
        let Ok(accepted) =
            tokio::time::timeout(shared.startup_timeout, accept::accept(stream, &policy)).await
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

/// Accepts TCP connections with the socket options every proxy socket gets.
pub(crate) async fn serve_tcp(
    tcp: TcpStream,
    peer: SocketAddr,
    target: Arc<Target>,
    shared: Arc<Shared>,
    terminate: CancellationToken,
) {
    let _ = socket::tune(&tcp);
    serve(tcp, peer.to_string(), target, shared, terminate).await;
}

/// What a session keeps once it is ready for queries.
struct Ready {
    upstream: Upstream,
    /// Unregisters the client's cancel key when the session ends.
    _cancel: Option<CancelGuard>,
    /// In direct mode, the database's own key and address, to cancel a vanished client's query.
    direct_cancel: Option<(SocketAddr, Endpoint, BackendKeyData, Arc<UpstreamConfig>)>,
}

async fn session<S>(
    mut client: PgStream<Transport<S>>,
    message: StartupMessage,
    target: &Target,
    shared: &Shared,
    terminate: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let started = std::time::Instant::now();
    // Everything from the StartupMessage to ReadyForQuery is bounded: credentials, the server
    // proxy and the database each could stall, and a stalled session holds its sockets.
    let ready = tokio::time::timeout(shared.handshake_timeout, setup(&mut client, message, target, shared))
        .await
        .unwrap_or(Err(ClientError::SetupTimeout(shared.handshake_timeout)));
    let ready = match ready {
        Ok(ready) => ready,
        Err(error) => {
            info!(reason = error.reason(), error = %error, "session refused");
            if !matches!(error, ClientError::ClientGone | ClientError::RefusedUpstream { .. }) {
                let _ = client.send(&error.to_error_fields().to_error_bytes()).await;
            }
            return;
        }
    };
    let (mut client_io, client_ahead) = client.into_parts();
    let (mut upstream_io, upstream_ahead) = ready.upstream.into_parts();
    let closing = ErrorFields::fatal(
        SqlState::ADMIN_SHUTDOWN,
        "terminating connection because the client proxy is shutting down",
    )
    .hint("start rds-auth-proxy again and reconnect")
    .to_error_bytes();
    let outcome = relay::relay(
        &mut client_io,
        &mut upstream_io,
        client_ahead,
        upstream_ahead,
        shared.relay,
        terminate.cancelled(),
        closing,
        &mut NoObserver,
    )
    .await;
    // Through a server proxy, it cancels a vanished client's query itself; in direct mode
    // that falls to us.
    let vanished =
        matches!(outcome.end, RelayEnd::ClientClosed | RelayEnd::ClientError(_) | RelayEnd::Shutdown)
            && outcome.queries_in_flight > 0
            && !outcome.terminated;
    if vanished && let Some((addr, endpoint, key, upstream)) = ready.direct_cancel {
        let request = CancelRequest { pid: key.pid, key: key.key };
        let sent = rds_auth_upstream::send_cancel(
            addr,
            &endpoint,
            request,
            &upstream.tls,
            crate::cancel::CANCEL_TIMEOUT,
        )
        .await;
        info!(sent = sent.is_ok(), "the client vanished mid-query: cancelled its statement");
    }
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

async fn setup<S>(
    client: &mut PgStream<Transport<S>>,
    message: StartupMessage,
    target: &Target,
    shared: &Shared,
) -> Result<Ready, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
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
    match &target.route {
        Route::ServerProxy(proxy) => {
            let identity = match &proxy.identity {
                Some(signing) => prove_identity(target, signing, shared).await?,
                None => None,
            };
            let injection = Injection { target: target.endpoint.clone(), credential, identity };
            via_server_proxy(client, params, injection, proxy, negotiation.version, &shared.cancels).await
        }
        Route::Direct(upstream) => {
            direct(client, params, &user, credential, target, upstream, negotiation.version, &shared.cancels)
                .await
        }
    }
}

async fn via_server_proxy<S>(
    client: &mut PgStream<Transport<S>>,
    params: Params,
    injection: Injection,
    proxy: &Arc<ServerProxy>,
    version: ProtocolVersion,
    cancels: &Arc<CancelRegistry>,
) -> Result<Ready, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let params = rds_auth_startup::inject(&params, &injection)?;
    let startup =
        StartupPacket::Startup(StartupMessage { version: ProtocolVersion::V3_2, params }).to_bytes();
    let (mut upstream, answer) = start_on_server_proxy(proxy, &startup).await?;
    let mut guard = None;
    relay_startup_tail(
        &mut upstream,
        client,
        Some(answer),
        |error| server_error(error, proxy),
        |key| {
            let route = CancelRoute::ServerProxy { proxy: proxy.clone(), key: key.key.clone() };
            let (client_key, registered) = cancels.register(key.pid, version, route);
            guard = Some(registered);
            client_key
        },
    )
    .await?;
    refill(proxy);
    Ok(Ready { upstream, _cancel: guard, direct_cancel: None })
}

#[allow(clippy::too_many_arguments, reason = "one call site; the arguments are the session's parts")]
async fn direct<S>(
    client: &mut PgStream<Transport<S>>,
    params: Params,
    user: &str,
    credential: Option<Secret>,
    target: &Target,
    upstream: &Arc<UpstreamConfig>,
    version: ProtocolVersion,
    cancels: &Arc<CancelRegistry>,
) -> Result<Ready, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (credential, passthrough) = match (&target.auth, credential) {
        (TargetAuth::Iam, Some(token)) => (Credential::Token(token), false),
        (TargetAuth::Password(_), Some(password)) => (Credential::Password(password), false),
        _ => (Credential::Passthrough, true),
    };
    let client_for_auth = if passthrough { Some(&mut *client) } else { None };
    let mut connected =
        rds_auth_upstream::login(&target.endpoint, upstream, params, user, credential, client_for_auth)
            .await
            .map_err(ClientError::Upstream)?;
    let peer = connected.peer;
    let mut guard = None;
    let mut backend_key = None;
    relay_startup_tail(
        &mut connected.stream,
        client,
        Some(BackendMessage::Authentication(Authentication::Ok)),
        |error| {
            ClientError::Upstream(match error {
                IoError::Wire(wire) => UpstreamError::Protocol(wire),
                _ => UpstreamError::ClosedDuringAuth,
            })
        },
        |key| {
            let route = CancelRoute::Direct {
                addr: peer,
                endpoint: target.endpoint.clone(),
                key: key.clone(),
                upstream: upstream.clone(),
            };
            let (client_key, registered) = cancels.register(key.pid, version, route);
            guard = Some(registered);
            backend_key = Some(key.clone());
            client_key
        },
    )
    .await?;
    let direct_cancel = backend_key.map(|key| (peer, target.endpoint.clone(), key, upstream.clone()));
    Ok(Ready { upstream: connected.stream, _cancel: guard, direct_cancel })
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

/// A presigned `sts:GetCallerIdentity` with the target's credentials, reused from the cache
/// while it is young. An IAM target cannot go on without one (its token needs the same
/// credentials); for a password or passthrough target the proof is only sent when the
/// credentials can be had, since those targets may not use AWS at all.
async fn prove_identity(
    target: &Target,
    signing: &IdentitySigning,
    shared: &Shared,
) -> Result<Option<Secret>, ClientError> {
    let credentials = match target.credentials.provide_credentials().await {
        Ok(credentials) => credentials,
        Err(_) if !matches!(target.auth, TargetAuth::Iam) => {
            debug!("no AWS credentials: the session goes without an identity proof");
            return Ok(None);
        }
        Err(_) => return Err(ClientError::Credentials { label: target.credentials_label.clone() }),
    };
    let host = signing.sts_host.clone().unwrap_or_else(|| rds_auth_token::sts_host(&target.region));
    let proof =
        shared.tokens.get_or_presign_identity(&credentials, &host, &target.region, SystemTime::now())?;
    Ok(Some(Secret::new(proof.expose().to_owned())))
}

/// Sends the startup packet to the server proxy, on a warm connection when the pool has one,
/// and reads the first answer. A warm connection found closed before it answered anything is
/// replaced once by a fresh one: the server proxy went away (a restart, say) without taking
/// the startup packet up, so sending it again repeats nothing.
async fn start_on_server_proxy(
    proxy: &Arc<ServerProxy>,
    startup: &[u8],
) -> Result<(Upstream, BackendMessage), ClientError> {
    if let Some(mut warm) = proxy.warm.take(Instant::now()) {
        match first_answer(&mut warm, startup).await {
            Ok(answer) => return Ok((warm, answer)),
            Err(IoError::Eof | IoError::Io(_)) => {
                debug!("the warm connection to the server proxy was closed: opening a fresh one");
            }
            Err(error) => return Err(server_error(error, proxy)),
        }
    }
    let mut fresh = connect_server_proxy(proxy).await?;
    let answer = first_answer(&mut fresh, startup).await.map_err(|e| server_error(e, proxy))?;
    Ok((fresh, answer))
}

async fn first_answer(upstream: &mut Upstream, startup: &[u8]) -> Result<BackendMessage, IoError> {
    upstream.send(startup).await.map_err(IoError::Io)?;
    upstream.read_backend(MAX_TAIL_MESSAGE).await
}

/// Tops the server proxy's warm pool up in the background, after a session got through: a
/// server proxy that refuses sessions gets no handshakes ahead of time.
fn refill(proxy: &Arc<ServerProxy>) {
    for _ in 0..proxy.warm.reserve(Instant::now()) {
        let proxy = proxy.clone();
        let span = info_span!(parent: None, "warm", upstream.name = %proxy.name);
        tokio::spawn(
            async move {
                let stream = connect_server_proxy(&proxy).await.ok();
                let Some(id) = proxy.warm.fill(stream, Instant::now()) else { return };
                tokio::time::sleep(proxy.warm.settings().idle).await;
                // Unused: close it with a TLS close_notify, which the server proxy counts as
                // an unused connection rather than a client that vanished.
                if let Some(mut stream) = proxy.warm.expire(id) {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        tokio::io::AsyncWriteExt::shutdown(stream.get_mut()),
                    )
                    .await;
                }
            }
            .instrument(span),
        );
    }
}

/// Direct TLS 1.3 with ALPN `postgresql` to a server proxy, presenting the client certificate.
pub(crate) async fn connect_server_proxy(proxy: &ServerProxy) -> Result<Upstream, ClientError> {
    let unreachable = || ClientError::ServerProxyUnreachable {
        name: proxy.name.clone(),
        address: proxy.address.to_string(),
    };
    let address = match &proxy.address {
        ProxyAddress::Fixed(address) => address.clone(),
        ProxyAddress::Tunnel(tunnel) => {
            tunnel.addr(proxy.connect_timeout).await.ok_or_else(unreachable)?.to_string()
        }
    };
    let tcp = tokio::time::timeout(proxy.connect_timeout, TcpStream::connect(address.as_str()))
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

/// Relays what comes from upstream until ReadyForQuery, starting with `first` if given, and
/// in passthrough mode the client's answers to authentication requests. BackendKeyData goes
/// through `rekey`, the one place an upstream key becomes the client's: the real pid, and a
/// key of ours. Messages are batched into one write until the client has to act.
async fn relay_startup_tail<S>(
    upstream: &mut Upstream,
    client: &mut PgStream<Transport<S>>,
    mut first: Option<BackendMessage>,
    read_error: impl Fn(IoError) -> ClientError,
    mut rekey: impl FnMut(&BackendKeyData) -> bytes::Bytes,
) -> Result<(), ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = BytesMut::new();
    loop {
        let message = if let Some(message) = first.take() {
            message
        } else {
            tokio::select! {
                message = upstream.read_backend(MAX_TAIL_MESSAGE) => message.map_err(&read_error)?,
                frame = client.read_frame(MAX_TAIL_MESSAGE), if out.is_empty() => {
                    let frame = frame.map_err(|_| ClientError::ClientGone)?;
                    upstream.send(&frame.to_bytes()).await.map_err(|e| read_error(IoError::Io(e)))?;
                    continue;
                }
            }
        };
        let flush_now = match &message {
            BackendMessage::BackendKeyData(key) => {
                let client_key = rekey(key);
                BackendMessage::BackendKeyData(BackendKeyData { pid: key.pid, key: client_key })
                    .encode(&mut out);
                false
            }
            // The server proxy downgraded the leg between the proxies; the client's version
            // was settled already, so this stays between the proxies.
            BackendMessage::NegotiateProtocolVersion { .. } => false,
            BackendMessage::Authentication(Authentication::Ok)
            | BackendMessage::ParameterStatus { .. }
            | BackendMessage::NoticeResponse(_)
            | BackendMessage::Other(_) => {
                message.encode(&mut out);
                false
            }
            BackendMessage::ErrorResponse(_)
            | BackendMessage::ReadyForQuery(_)
            | BackendMessage::Authentication(_) => {
                message.encode(&mut out);
                true
            }
        };
        if flush_now {
            client.send(&out).await.map_err(|_| ClientError::ClientGone)?;
            out.clear();
            match message {
                BackendMessage::ReadyForQuery(_) => return Ok(()),
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
pub(crate) fn server_error(error: IoError, proxy: &ServerProxy) -> ClientError {
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
