use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rds_auth_codec::startup::StartupMessage;
use rds_auth_codec::{Params, ProtocolVersion, StartupPacket};
use rds_auth_io::{PgStream, Rewind, Transport, socket};
use rds_auth_startup::Endpoint;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, TlsStream};
use tracing::{debug, instrument};

use crate::channel_binding::tls_server_end_point;
use crate::{AuthLoop, Credential, Resolver, UpstreamError, authenticate};

/// How to reach databases.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Verifies the database: the RDS global bundle in production.
    pub tls: Arc<rustls::ClientConfig>,
    pub resolver: Resolver,
    /// Bounds each TCP connect attempt.
    pub connect_timeout: Duration,
    /// Rounds of attempts over all resolved addresses; at least one.
    pub connect_attempts: u32,
    /// Bounds the whole authentication exchange. RDS's IAM check calls a service of its own,
    /// so this is generous (30 s), not a few seconds.
    pub auth_timeout: Duration,
}

/// A verified TLS connection to a database, before authentication.
#[derive(Debug)]
pub struct Connected {
    pub stream: PgStream<Transport<TcpStream>>,
    /// The address actually connected to. Cancels must go here, not to a fresh DNS answer:
    /// Aurora's reader endpoint picks an instance per connection.
    pub peer: SocketAddr,
    /// The `tls-server-end-point` channel-binding data of the database's certificate.
    pub channel_binding: Option<Vec<u8>>,
    /// How long the TCP connect and the TLS handshake took, DNS excluded.
    pub connect_time: std::time::Duration,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Connects to `endpoint` and negotiates TLS the Postgres way: SSLRequest, exactly one byte of
/// answer, which must be `S`, then a handshake verified for the endpoint name.
#[instrument(level = "debug", skip_all, fields(upstream.endpoint = %endpoint))]
pub async fn connect(endpoint: &Endpoint, config: &UpstreamConfig) -> Result<Connected, UpstreamError> {
    let addrs = config.resolver.resolve(endpoint).await?;
    let started = std::time::Instant::now();
    let (tcp, peer) = connect_tcp(&addrs, config).await?;
    let _ = socket::tune(&tcp);
    let stream = start_tls(tcp, endpoint, &config.tls).await?;
    let channel_binding = stream
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|cert| tls_server_end_point(cert.as_ref()));
    debug!(upstream.addr = %peer, tls = stream.tls_version().unwrap_or("?"), "connected to the database");
    Ok(Connected { stream: PgStream::new(stream), peer, channel_binding, connect_time: started.elapsed() })
}

async fn connect_tcp(
    addrs: &[SocketAddr],
    config: &UpstreamConfig,
) -> Result<(TcpStream, SocketAddr), UpstreamError> {
    let attempts = config.connect_attempts.max(1);
    let mut backoff = FIRST_BACKOFF;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        for addr in addrs {
            match tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => return Ok((tcp, *addr)),
                Ok(Err(e)) => last = e,
                Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
            }
            debug!(upstream.addr = %addr, attempt, error = %last, "connect attempt failed");
        }
    }
    Err(UpstreamError::Connect { attempts, last })
}

/// SSLRequest, then TLS. The answer is read one byte at a time, with no buffering, so that no
/// plaintext byte a server (or anyone in between) sends after `S` can be mistaken for TLS.
pub(crate) async fn start_tls(
    mut tcp: TcpStream,
    endpoint: &Endpoint,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Transport<TcpStream>, UpstreamError> {
    tcp.write_all(&StartupPacket::SslRequest.to_bytes()).await.map_err(UpstreamError::Io)?;
    let mut answer = [0u8; 1];
    match tcp.read_exact(&mut answer).await {
        Ok(_) if answer[0] == b'S' => {}
        Ok(_) => return Err(UpstreamError::TlsRefused),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(UpstreamError::TlsRefused),
        Err(e) => return Err(UpstreamError::Io(e)),
    }
    let server_name = ServerName::try_from(endpoint.host())
        .map_err(|_| UpstreamError::Tls(io::Error::other("invalid server name")))?;
    let stream = TlsConnector::from(tls.clone())
        .connect(server_name, Rewind::new(tcp))
        .await
        .map_err(UpstreamError::Tls)?;
    Ok(Transport::Tls(Box::new(TlsStream::Client(stream))))
}

/// Connects to `endpoint` and logs in: a protocol 3.0 StartupMessage with `params` (the
/// client's, with nothing of ours), then the authentication exchange as `user` with
/// `credential`, asking `client` in passthrough mode. AuthenticationOk has been read when this
/// returns; the startup tail (ParameterStatus, BackendKeyData, ReadyForQuery) follows on the
/// stream.
pub async fn login<C>(
    endpoint: &Endpoint,
    config: &UpstreamConfig,
    params: Params,
    user: &str,
    credential: Credential,
    client: Option<&mut PgStream<C>>,
) -> Result<Connected, UpstreamError>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let mut connected = connect(endpoint, config).await?;
    let startup =
        StartupPacket::Startup(StartupMessage { version: ProtocolVersion::V3_0, params }).to_bytes();
    let mut auth = AuthLoop::new(user, credential, connected.channel_binding.take());
    authenticate(&mut connected.stream, &mut auth, &startup, client, config.auth_timeout).await?;
    Ok(connected)
}
