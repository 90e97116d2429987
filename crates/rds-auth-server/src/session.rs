use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::BytesMut;
use rds_auth_codec::backend::{BackendKeyData, BackendMessage};
use rds_auth_codec::startup::{CancelRequest, StartupMessage};
use rds_auth_codec::{ErrorFields, ProtocolVersion, SqlState};
use rds_auth_io::accept::{self, AcceptPolicy, Accepted};
use rds_auth_io::relay::{self, NoObserver, RelayEnd};
use rds_auth_io::tls::PeerIdentity;
use rds_auth_io::{IoError, PgStream, Transport, socket};
use rds_auth_startup::{Endpoint, Injection, Secret};
use rds_auth_upstream::{Credential, UpstreamError};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, field, info, info_span, warn};

use crate::cancel::{self, UPSTREAM_CANCEL_TIMEOUT};
use crate::{AuthMode, ServerConfig, SessionError, TargetRule};

/// The newest protocol minor version the server proxy speaks with the client proxy.
const NEWEST_MINOR: u16 = 2;
/// The largest backend message read during the startup tail.
const MAX_TAIL_MESSAGE: usize = 1 << 20;

type ClientStream = PgStream<Transport<TcpStream>>;

/// One connection, from accept to close, inside its span.
pub(crate) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    terminate: CancellationToken,
) {
    let span = info_span!(
        "conn",
        conn.id = %uuid::Uuid::new_v4().simple(),
        client.addr = %peer,
        client.identity = field::Empty,
        db.user = field::Empty,
        db.target = field::Empty,
        auth.mode = field::Empty,
        aws.access_key_id = field::Empty,
        upstream.addr = field::Empty,
    );
    async move {
        let _ = socket::tune(&tcp);
        let policy = AcceptPolicy { tls: config.tls.clone(), max_startup_len: config.max_startup_len };
        let Ok(accepted) = tokio::time::timeout(config.startup_timeout, accept::accept(tcp, &policy)).await
        else {
            debug!("startup timeout");
            return;
        };
        match accepted {
            Accepted::Startup { stream, message } => session(stream, message, &config, &terminate).await,
            Accepted::Cancel { stream, request } => crate::cancel::serve(stream, request, &config).await,
            Accepted::Refuse { mut stream, error } => {
                debug!(error = %error, "refused during startup");
                refuse(&mut stream, &SessionError::Wire(error)).await;
            }
            Accepted::Close(reason) => debug!(reason = reason.label(), "closed during startup"),
        }
    }
    .instrument(span)
    .await;
}

/// Sends a refusal to the client. Nothing else is sent on this connection afterwards.
async fn refuse(stream: &mut ClientStream, error: &SessionError) {
    let _ = stream.send(&error.to_error_fields().to_error_bytes()).await;
}

async fn session(
    mut client: ClientStream,
    message: StartupMessage,
    config: &ServerConfig,
    terminate: &CancellationToken,
) {
    let started = std::time::Instant::now();
    let identity = client
        .get_ref()
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| PeerIdentity::from_der(cert));
    if let Some(identity) = &identity {
        Span::current().record("client.identity", identity.name());
    }
    // Everything from the StartupMessage to ReadyForQuery is bounded: a database that accepts
    // TCP and then says nothing must not hold the session, and its sockets, forever.
    let ready = tokio::time::timeout(
        config.handshake_timeout,
        setup(&mut client, message, identity.as_ref(), config),
    )
    .await
    .unwrap_or(Err(SessionError::SetupTimeout(config.handshake_timeout)));
    match ready {
        Ok(upstream) => {
            let Upstream { stream, target, backend_key } = upstream;
            let (mut server, server_ahead) = stream.into_parts();
            let (mut client_io, client_ahead) = client.into_parts();
            let closing = ErrorFields::fatal(
                SqlState::ADMIN_SHUTDOWN,
                "terminating connection because the server proxy is shutting down",
            )
            .hint("reconnect: another server proxy replica takes new sessions")
            .to_error_bytes();
            let outcome = relay::relay(
                &mut client_io,
                &mut server,
                client_ahead,
                server_ahead,
                config.relay,
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
            // A client that vanished mid-query left a statement running on the database; a
            // backend notices a dead client only when it next writes, so cancel it now.
            // The same when the drain deadline ended the session under a running query: the
            // client was told it is over, so the statement must not go on (and commit) behind
            // its back.
            let vanished =
                matches!(outcome.end, RelayEnd::ClientClosed | RelayEnd::ClientError(_) | RelayEnd::Shutdown)
                    && outcome.queries_in_flight > 0
                    && !outcome.terminated;
            if vanished && let Some((peer, key)) = backend_key {
                let request = CancelRequest { pid: key.pid, key: key.key };
                let sent = rds_auth_upstream::send_cancel(
                    peer,
                    &target,
                    request,
                    &config.upstream.tls,
                    UPSTREAM_CANCEL_TIMEOUT,
                )
                .await;
                info!(sent = sent.is_ok(), "the client vanished mid-query: cancelled its statement");
            }
            info!(
                outcome = end,
                bytes.to_db = outcome.bytes_client_to_server,
                bytes.from_db = outcome.bytes_server_to_client,
                queries_in_flight = outcome.queries_in_flight,
                duration_ms = started.elapsed().as_millis() as u64,
                "session ended"
            );
        }
        Err(error) => {
            let level_is_warn = matches!(error, SessionError::Upstream(ref e) if !e.is_client_side() && !matches!(e, UpstreamError::Rejected(_)));
            if level_is_warn {
                warn!(reason = error.reason(), error = %error, "session refused");
            } else {
                info!(reason = error.reason(), error = %error, "session refused");
            }
            if !matches!(error, SessionError::Upstream(UpstreamError::ClientGone)) {
                refuse(&mut client, &error).await;
            }
        }
    }
}

/// An authenticated database connection whose startup tail has been relayed.
struct Upstream {
    stream: PgStream<Transport<TcpStream>>,
    target: Endpoint,
    /// The address connected to and the database's own cancel key.
    backend_key: Option<(SocketAddr, BackendKeyData)>,
}

/// Everything between the StartupMessage and ReadyForQuery.
async fn setup(
    client: &mut ClientStream,
    message: StartupMessage,
    identity: Option<&PeerIdentity>,
    config: &ServerConfig,
) -> Result<Upstream, SessionError> {
    if config.tls.is_some() && !client.get_ref().is_tls() {
        return Err(SessionError::PlaintextRefused);
    }
    let StartupMessage { version, mut params } = message;
    let negotiation = rds_auth_startup::negotiate(version, &mut params, NEWEST_MINOR);
    if let Some(reply) = &negotiation.reply {
        client.send(&reply.to_bytes()).await.map_err(|_| UpstreamError::ClientGone)?;
    }
    let (params, Injection { target, credential }) = rds_auth_startup::extract(params)?;
    let user = rds_auth_startup::user(&params)?.to_owned();
    let span = Span::current();
    span.record("db.user", user.as_str());
    span.record("db.target", field::display(&target));

    // The allowlist decides before any socket is opened.
    let allowlist = config.allowlist();
    let rule = allowlist.get(&target).ok_or_else(|| SessionError::NotAllowed { target: target.clone() })?;
    let (mode, credential) = choose_credential(rule, credential, &user, config)?;
    span.record("auth.mode", mode.as_str());

    let passthrough = (mode == AuthMode::Passthrough).then_some(&mut *client);
    let mut connected =
        rds_auth_upstream::login(&target, &config.upstream, params, &user, credential, passthrough).await?;
    span.record("upstream.addr", field::display(connected.peer));
    debug!("authenticated to the database");
    let sealing = Sealing {
        version: negotiation.version,
        peer: connected.peer,
        target: cancel::target_id(&target),
        owner: cancel::owner_id(identity),
        keys: &config.cancel.keys,
    };
    let backend_key = relay_startup_tail(&mut connected.stream, client, &sealing).await?;
    Ok(Upstream {
        stream: connected.stream,
        target,
        backend_key: backend_key.map(|key| (connected.peer, key)),
    })
}

/// Picks the auth mode from what the client proxy sent and what the target accepts, and
/// checks an IAM token before the database ever sees it.
fn choose_credential(
    rule: &TargetRule,
    credential: Option<Secret>,
    user: &str,
    config: &ServerConfig,
) -> Result<(AuthMode, Credential), SessionError> {
    let target = &rule.endpoint;
    let refused = |mode| SessionError::ModeRefused { mode, target: target.clone() };
    let Some(secret) = credential else {
        return if rule.modes.passthrough {
            Ok((AuthMode::Passthrough, Credential::Passthrough))
        } else {
            Err(refused(AuthMode::Passthrough))
        };
    };
    let token = secret.expose_str().and_then(|text| rds_auth_token::parse(text).ok());
    match token {
        Some(info) if rule.modes.iam => {
            check_token(&info, target, user, config)?;
            Span::current().record("aws.access_key_id", info.access_key_id.as_str());
            Ok((AuthMode::Iam, Credential::Token(secret)))
        }
        _ if rule.modes.password => Ok((AuthMode::Password, Credential::Password(secret))),
        _ if rule.modes.iam => Err(SessionError::TokenUnreadable { target: target.clone() }),
        Some(_) => Err(refused(AuthMode::Iam)),
        None => Err(refused(AuthMode::Password)),
    }
}

fn check_token(
    info: &rds_auth_token::TokenInfo,
    target: &Endpoint,
    user: &str,
    config: &ServerConfig,
) -> Result<(), SessionError> {
    let signed_for = Endpoint::new(&info.host, info.port).ok();
    if signed_for.as_ref() != Some(target) {
        return Err(SessionError::TokenTarget {
            signed_for: format!("{}:{}", info.host, info.port),
            target: target.clone(),
        });
    }
    if info.db_user != user {
        return Err(SessionError::TokenUser { signed_for: info.db_user.clone(), user: user.to_owned() });
    }
    match info.check_window(SystemTime::now(), config.token_clock_skew) {
        Ok(()) => Ok(()),
        Err(rds_auth_token::WindowError::NotYetValid { ahead }) => {
            Err(SessionError::TokenNotYetValid { ahead, signed_at: info.signed_at })
        }
        Err(rds_auth_token::WindowError::Expired { ago }) => {
            Err(SessionError::TokenExpired { ago, signed_at: info.signed_at })
        }
    }
}

/// AuthenticationOk, then ParameterStatus, BackendKeyData and notices up to ReadyForQuery,
/// written to the client in one go.
async fn relay_startup_tail(
    upstream: &mut PgStream<Transport<TcpStream>>,
    client: &mut ClientStream,
    sealing: &Sealing<'_>,
) -> Result<Option<BackendKeyData>, SessionError> {
    let mut out = BytesMut::new();
    let mut backend_key = None;
    BackendMessage::Authentication(rds_auth_codec::backend::Authentication::Ok).encode(&mut out);
    loop {
        let message = upstream.read_backend(MAX_TAIL_MESSAGE).await.map_err(|e| match e {
            IoError::Wire(w) => SessionError::Upstream(UpstreamError::Protocol(w)),
            _ => SessionError::Upstream(UpstreamError::ClosedDuringAuth),
        })?;
        match message {
            BackendMessage::BackendKeyData(key) => {
                BackendMessage::BackendKeyData(sealing.downstream_key(&key)).encode(&mut out);
                backend_key = Some(key);
            }
            BackendMessage::ErrorResponse(fields) => {
                return Err(SessionError::Upstream(UpstreamError::Rejected(fields)));
            }
            BackendMessage::ReadyForQuery(_) => {
                message.encode(&mut out);
                break;
            }
            other => other.encode(&mut out),
        }
    }
    client.send(&out).await.map_err(|_| SessionError::Upstream(UpstreamError::ClientGone))?;
    Ok(backend_key)
}

/// What it takes to turn a database's cancel key into the key the client proxy sees.
struct Sealing<'a> {
    version: ProtocolVersion,
    peer: SocketAddr,
    target: [u8; 8],
    owner: [u8; 16],
    keys: &'a cancel::CancelKeys,
}

impl Sealing<'_> {
    /// The one place a database's cancel key becomes the client proxy's: the real pid, and a
    /// sealed cancel token when the leg speaks 3.2. A 3.0 peer (the Go predecessor's client
    /// proxy, which cannot cancel anyway) gets a random key: the database's secret never
    /// leaves the VPC.
    fn downstream_key(&self, key: &BackendKeyData) -> BackendKeyData {
        let random = || BackendKeyData {
            pid: key.pid,
            key: bytes::Bytes::copy_from_slice(&rand::random::<[u8; 4]>()),
        };
        if !self.version.has_long_cancel_keys() {
            return random();
        }
        let closure = cancel::CancelClosure {
            backend: self.peer,
            pid: key.pid,
            secret: key.key.clone(),
            target: self.target,
            owner: self.owner,
        };
        match self.keys.seal(&closure) {
            Some(sealed) => BackendKeyData { pid: key.pid, key: sealed },
            None => random(),
        }
    }
}
