use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use rds_auth_codec::backend::{BackendKeyData, BackendMessage};
use rds_auth_codec::startup::{CancelRequest, StartupMessage};
use rds_auth_codec::{ErrorFields, ProtocolVersion, SqlState};
use rds_auth_io::accept::{self, AcceptPolicy, Accepted, CloseReason};
use rds_auth_io::relay::{self, RelayEnd};
use rds_auth_io::tls::PeerIdentity;
use rds_auth_io::{IoError, PgStream, Transport, socket};
use rds_auth_startup::{Endpoint, Injection, Secret};
use rds_auth_upstream::{Credential, UpstreamError};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, field, info, info_span, warn};

use crate::cancel::{self, UPSTREAM_CANCEL_TIMEOUT};
use crate::identity::{CallerIdentity, IdentityError};
use crate::metrics::Metrics;
use crate::{AuthMode, ServerConfig, SessionError, TargetRule, proxy_protocol};

/// The newest protocol minor version the server proxy speaks with the client proxy.
const NEWEST_MINOR: u16 = 2;
/// The largest backend message read during the startup tail.
const MAX_TAIL_MESSAGE: usize = 1 << 20;

type ClientStream = PgStream<Transport<TcpStream>>;

/// One connection, from accept to close, inside its span.
pub(crate) async fn serve(
    mut tcp: TcpStream,
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    terminate: CancellationToken,
) {
    let Some(open) = config.gate.admit() else {
        config.metrics.refused("max_connections");
        return;
    };
    let id = uuid::Uuid::new_v4().simple().to_string();
    let span = info_span!(
        "conn",
        conn.id = %id,
        client.addr = %peer,
        client.identity = field::Empty,
        aws.arn = field::Empty,
        db.user = field::Empty,
        db.target = field::Empty,
        auth.mode = field::Empty,
        aws.access_key_id = field::Empty,
        upstream.addr = field::Empty,
    );
    async move {
        let _open = open;
        let _ = socket::tune(&tcp);
        let metrics = &config.metrics;
        let mut client_addr = peer;
        if config.proxy_protocol {
            match tokio::time::timeout(config.startup_timeout, proxy_protocol::read_header(&mut tcp, peer))
                .await
            {
                Ok(Ok(addr)) => client_addr = addr,
                Ok(Err(e)) => {
                    debug!(error = %e, "refused: PROXY protocol header");
                    metrics.refused("proxy_protocol");
                    return;
                }
                Err(_) => {
                    metrics.refused("startup_timeout");
                    return;
                }
            }
            Span::current().record("client.addr", field::display(client_addr));
        }
        let policy = AcceptPolicy { tls: config.tls(), max_startup_len: config.max_startup_len };
        let mut own = Duration::ZERO;
        let accepted =
            tokio::time::timeout(config.startup_timeout, timed(accept::accept(tcp, &policy), &mut own));
        let Ok(accepted) = accepted.await else {
            debug!("startup timeout");
            metrics.refused("startup_timeout");
            return;
        };
        match accepted {
            Accepted::Startup { mut stream, message } => match config.gate.admit_session() {
                Some(_place) => {
                    let context = Context { id, client_addr, own };
                    session(stream, message, &config, &terminate, context).await;
                }
                None => {
                    let error = SessionError::TooManyConnections { max: config.limits.max_connections };
                    info!(reason = error.reason(), "session refused");
                    metrics.refused(error.reason());
                    refuse(&mut stream, &error).await;
                }
            },
            Accepted::Cancel { stream, request } => crate::cancel::serve(stream, request, &config).await,
            Accepted::Refuse { mut stream, error } => {
                debug!(error = %error, "refused during startup");
                metrics.refused("protocol");
                refuse(&mut stream, &SessionError::Wire(error)).await;
            }
            Accepted::Close(CloseReason::Unused) => {
                debug!("a warm connection closed unused");
                metrics.unused();
            }
            Accepted::Close(reason) => {
                debug!(reason = reason.label(), "closed during startup");
                if matches!(reason, CloseReason::Tls(_)) {
                    metrics.tls_handshake_failures.inc();
                }
                metrics.refused(reason.label());
            }
        }
    }
    .instrument(span)
    .await;
}

/// Polls `future` to completion, adding the time spent inside its polls to `spent`: the
/// proxy's own work (TLS, parsing, checks), without the time spent waiting for peers.
async fn timed<F: Future>(future: F, spent: &mut Duration) -> F::Output {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        let started = Instant::now();
        let polled = future.as_mut().poll(cx);
        *spent += started.elapsed();
        polled
    })
    .await
}

/// What a session knows about its connection before the StartupMessage.
struct Context {
    id: String,
    /// The client's address: the PROXY header's when one was read.
    client_addr: SocketAddr,
    /// The proxy's own time so far.
    own: Duration,
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
    context: Context,
) {
    let started = Instant::now();
    let metrics = &config.metrics;
    let identity = client
        .get_ref()
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| PeerIdentity::from_der(cert));
    if let Some(identity) = &identity {
        Span::current().record("client.identity", identity.name());
    }
    let mut audit = Audit::new(&context, identity.as_ref(), &message);
    // Everything from the StartupMessage to ReadyForQuery is bounded: a database that accepts
    // TCP and then says nothing must not hold the session, and its sockets, forever.
    let mut own = context.own;
    let ready = tokio::time::timeout(
        config.handshake_timeout,
        timed(setup(&mut client, message, identity.as_ref(), config, &mut audit), &mut own),
    )
    .await
    .unwrap_or(Err(SessionError::SetupTimeout(config.handshake_timeout)));
    let upstream = match ready {
        Ok(upstream) => upstream,
        Err(error) => {
            let level_is_warn = matches!(error, SessionError::Upstream(ref e) if !e.is_client_side() && !matches!(e, UpstreamError::Rejected(_)))
                || matches!(error, SessionError::Identity(ref e) if !e.is_caller_fault());
            if level_is_warn {
                warn!(reason = error.reason(), error = %error, "session refused");
            } else {
                info!(reason = error.reason(), error = %error, "session refused");
            }
            metrics.refused(error.reason());
            if !matches!(error, SessionError::Upstream(UpstreamError::ClientGone)) {
                refuse(&mut client, &error).await;
            }
            audit.emit("refused", error.reason(), 0, 0, started.elapsed());
            return;
        }
    };
    // The proxy's own cost: everything the handshake polled, minus the database's share of
    // the upstream connect (its TLS handshake runs inside the same polls).
    Metrics::observe(&metrics.handshake_own_seconds, own);
    metrics.accepted();
    metrics.sessions_open.inc();
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
        &mut metrics.relay_observer(),
    )
    .await;
    metrics.sessions_open.dec();
    let end = match &outcome.end {
        RelayEnd::ClientClosed => "client_closed",
        RelayEnd::ServerClosed => "server_closed",
        RelayEnd::ClientError(_) => "client_error",
        RelayEnd::ServerError(_) => "server_error",
        RelayEnd::Protocol(..) => "protocol_error",
        RelayEnd::Shutdown => "shutdown",
    };
    Metrics::outcome(&metrics.sessions_ended, end);
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
        Metrics::outcome(
            &metrics.cancels,
            if sent.is_ok() { "vanished_client" } else { "vanished_client_failed" },
        );
        info!(sent = sent.is_ok(), "the client vanished mid-query: cancelled its statement");
    }
    debug!(queries_in_flight = outcome.queries_in_flight, "relay ended");
    audit.emit(
        "ended",
        end,
        outcome.bytes_client_to_server,
        outcome.bytes_server_to_client,
        started.elapsed(),
    );
}

/// The audit line of one session: who, from where, to which database, how much, how long,
/// and how it ended. Field names are stable (docs/operations.md); no secret is ever one.
struct Audit {
    id: String,
    client_addr: SocketAddr,
    subject: String,
    arn: String,
    access_key_id: String,
    user: String,
    database: String,
    application: String,
    target: String,
    auth_mode: &'static str,
}

impl Audit {
    fn new(context: &Context, identity: Option<&PeerIdentity>, message: &StartupMessage) -> Audit {
        let param = |name: &[u8]| {
            let value =
                message.params.get(name).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
            value.chars().take(256).collect::<String>()
        };
        let user = param(b"user");
        let database = Some(param(b"database")).filter(|d| !d.is_empty()).unwrap_or_else(|| user.clone());
        Audit {
            id: context.id.clone(),
            client_addr: context.client_addr,
            subject: identity.map(|i| i.subject.clone()).unwrap_or_default(),
            arn: String::new(),
            access_key_id: String::new(),
            user,
            database,
            application: param(b"application_name"),
            target: String::new(),
            auth_mode: "",
        }
    }

    fn emit(&self, outcome: &str, reason: &str, to_db: u64, from_db: u64, duration: Duration) {
        info!(
            target: "rds_auth_proxy::audit",
            audit = true,
            conn.id = %self.id,
            client.addr = %self.client_addr,
            client.subject = %self.subject,
            aws.arn = %self.arn,
            aws.access_key_id = %self.access_key_id,
            db.user = %self.user,
            db.name = %self.database,
            db.target = %self.target,
            app.name = %self.application,
            auth.mode = self.auth_mode,
            bytes.to_db = to_db,
            bytes.from_db = from_db,
            duration_ms = duration.as_millis() as u64,
            outcome,
            reason,
            "session audit"
        );
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
    audit: &mut Audit,
) -> Result<Upstream, SessionError> {
    if config.tls().is_some() && !client.get_ref().is_tls() {
        return Err(SessionError::PlaintextRefused);
    }
    let StartupMessage { version, mut params } = message;
    let negotiation = rds_auth_startup::negotiate(version, &mut params, NEWEST_MINOR);
    if let Some(reply) = &negotiation.reply {
        client.send(&reply.to_bytes()).await.map_err(|_| UpstreamError::ClientGone)?;
    }
    let (params, Injection { target, credential, identity: proof }) = rds_auth_startup::extract(params)?;
    let user = rds_auth_startup::user(&params)?.to_owned();
    let span = Span::current();
    span.record("db.user", user.as_str());
    span.record("db.target", field::display(&target));
    audit.target = target.to_string();

    // The allowlist decides before any socket is opened.
    let allowlist = config.allowlist();
    let rule = allowlist.get(&target).ok_or_else(|| SessionError::NotAllowed { target: target.clone() })?;
    let caller = caller_identity(proof.as_ref(), rule, config).await?;
    if let Some(caller) = &caller {
        span.record("aws.arn", caller.arn.as_str());
        audit.arn = caller.arn.clone();
    }
    let rate_key = match (&caller, identity) {
        (Some(caller), _) => caller.arn.clone(),
        (None, Some(identity)) => identity.subject.clone(),
        (None, None) => audit.client_addr.ip().to_string(),
    };
    if !config.callers.allow(&rate_key) {
        return Err(SessionError::RateLimited { caller: rate_key });
    }
    if !rule.principals.admits(caller.as_ref()) {
        return Err(SessionError::PrincipalRefused {
            principal: caller.map(|c| c.principal),
            target: target.clone(),
        });
    }
    let (mode, credential, access_key_id) = choose_credential(rule, credential, &user, config)?;
    span.record("auth.mode", mode.as_str());
    audit.auth_mode = mode.as_str();
    if let Some(access_key_id) = access_key_id {
        span.record("aws.access_key_id", access_key_id.as_str());
        // A token signed with other credentials than the identity proof is someone else's.
        if let Some(caller) = &caller
            && caller.access_key_id != access_key_id
        {
            return Err(SessionError::IdentityMismatch);
        }
        audit.access_key_id = access_key_id;
    }

    let passthrough = (mode == AuthMode::Passthrough).then_some(&mut *client);
    let mut connected =
        rds_auth_upstream::login(&target, &config.upstream, params, &user, credential, passthrough).await?;
    Metrics::observe(&config.metrics.upstream_connect_seconds, connected.connect_time);
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

/// The caller's IAM identity, when it sent a proof and this server verifies them. A target
/// that restricts its principals, or a server that requires proofs, refuses a caller without
/// one.
async fn caller_identity(
    proof: Option<&Secret>,
    rule: &TargetRule,
    config: &ServerConfig,
) -> Result<Option<CallerIdentity>, SessionError> {
    let Some(verifier) = &config.identity else {
        return Ok(None);
    };
    let Some(proof) = proof else {
        return if verifier.required() || rule.principals.is_restricted() {
            Err(SessionError::IdentityRequired)
        } else {
            Ok(None)
        };
    };
    let needed = verifier.required() || rule.principals.is_restricted();
    if !needed && verifier.recently_unavailable() {
        Metrics::outcome(&config.metrics.identity_lookups, "skipped");
        return Ok(None);
    }
    let text = proof.expose_str().ok_or(SessionError::Identity(IdentityError::Malformed(
        rds_auth_token::TokenError::Malformed("not UTF-8"),
    )))?;
    match verifier.verify(text, SystemTime::now(), &config.metrics).await {
        Ok(caller) => Ok(Some(caller)),
        // STS being unreachable must not lock out sessions that need no identity.
        Err(e) if !e.is_caller_fault() && !needed => {
            warn!(error = %e, "cannot verify the caller's identity: the session goes on without one");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Picks the auth mode from what the client proxy sent and what the target accepts, and
/// checks an IAM token before the database ever sees it.
fn choose_credential(
    rule: &TargetRule,
    credential: Option<Secret>,
    user: &str,
    config: &ServerConfig,
) -> Result<(AuthMode, Credential, Option<String>), SessionError> {
    let target = &rule.endpoint;
    let refused = |mode| SessionError::ModeRefused { mode, target: target.clone() };
    let Some(secret) = credential else {
        return if rule.modes.passthrough {
            Ok((AuthMode::Passthrough, Credential::Passthrough, None))
        } else {
            Err(refused(AuthMode::Passthrough))
        };
    };
    let token = secret.expose_str().and_then(|text| rds_auth_token::parse(text).ok());
    match token {
        Some(info) if rule.modes.iam => {
            check_token(&info, target, user, config)?;
            Ok((AuthMode::Iam, Credential::Token(secret), Some(info.access_key_id)))
        }
        _ if rule.modes.password => Ok((AuthMode::Password, Credential::Password(secret), None)),
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
