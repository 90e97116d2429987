//! The startup negotiation both proxies run as servers (protocol.md §1, A1 to A9).
//!
//! - SSLRequest is answered with `S` and a TLS handshake when TLS is configured, `N`
//!   otherwise; bytes that arrive after it in plaintext are refused (buffer stuffing).
//! - GSSENCRequest is always answered `N`.
//! - A TLS ClientHello as the very first bytes is direct TLS: accepted only when TLS is
//!   configured, and only with ALPN `postgresql`, as PostgreSQL requires.
//! - Each request is accepted once; an SSLRequest inside TLS ends the connection.
//! - A CancelRequest ends the negotiation in any of its three shapes: plaintext first,
//!   after `N`, or inside TLS.
//!
//! Nothing here answers a request with an ErrorResponse: clients must not show one sent in
//! reply to SSLRequest (CVE-2024-10977), and a cancel is never answered. Errors are for
//! after the StartupMessage, or for a packet that could only be a startup.

use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use rds_auth_codec::startup::{CancelRequest, StartupMessage, is_tls_client_hello};
use rds_auth_codec::{StartupPacket, WireError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsAcceptor, TlsStream};

use crate::tls::ALPN_POSTGRESQL;
use crate::{IoError, PgStream, Rewind, Transport};

/// How a proxy answers encryption requests.
#[derive(Debug, Clone)]
pub struct AcceptPolicy {
    /// `None`: SSLRequest gets `N` and direct TLS is refused.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The largest startup packet body.
    pub max_startup_len: usize,
}

/// How a startup negotiation ended.
#[derive(Debug)]
pub enum Accepted<S> {
    /// A StartupMessage, on a stream that is TLS if the client asked for it.
    Startup { stream: PgStream<Transport<S>>, message: StartupMessage },
    /// A CancelRequest. It is never answered.
    Cancel { stream: PgStream<Transport<S>>, request: CancelRequest },
    /// The client broke the protocol after encryption was settled; tell it why, then close.
    Refuse { stream: PgStream<Transport<S>>, error: WireError },
    /// Close without a word.
    Close(CloseReason),
}

/// Why a negotiation ended in silence.
#[derive(Debug)]
pub enum CloseReason {
    /// The peer left before sending a startup packet (health checks and port scans do).
    PeerLeft,
    /// The peer completed TLS and closed it cleanly without a startup packet: a client
    /// proxy's warm connection that no session needed.
    Unused,
    /// The TLS handshake failed: a bad or missing client certificate, an unknown CA, a
    /// protocol mismatch.
    Tls(io::Error),
    /// Direct TLS without a TLS configuration, or without ALPN `postgresql`.
    DirectTlsRefused,
    /// A second SSLRequest or GSSENCRequest, or one inside TLS.
    RepeatedRequest,
    /// Plaintext bytes after an SSLRequest, before its answer.
    EarlyData,
    /// A CancelRequest with a key of the wrong size.
    BadCancel,
    Io(io::Error),
}

impl CloseReason {
    pub fn label(&self) -> &'static str {
        match self {
            CloseReason::PeerLeft => "peer_left",
            CloseReason::Unused => "unused",
            CloseReason::Tls(_) => "tls_handshake",
            CloseReason::DirectTlsRefused => "direct_tls_refused",
            CloseReason::RepeatedRequest => "repeated_request",
            CloseReason::EarlyData => "early_data",
            CloseReason::BadCancel => "bad_cancel",
            CloseReason::Io(_) => "io",
        }
    }
}

/// Runs the negotiation on a fresh connection until a StartupMessage or CancelRequest
/// arrives. The caller bounds it with its startup timeout.
pub async fn accept<S>(raw: S, policy: &AcceptPolicy) -> Accepted<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stream = PgStream::new(Transport::plain(raw));
    match stream.fill_first().await {
        Ok(true) => {}
        Ok(false) => return Accepted::Close(CloseReason::PeerLeft),
        Err(e) => return Accepted::Close(io_reason(e)),
    }
    let mut ssl_requested = false;
    let mut gss_requested = false;
    if is_tls_client_hello(stream.buffered()) {
        let Some(tls) = &policy.tls else { return Accepted::Close(CloseReason::DirectTlsRefused) };
        let (transport, read_ahead) = stream.into_parts();
        stream = match start_tls(transport, read_ahead, tls, true).await {
            Ok(s) => s,
            Err(reason) => return Accepted::Close(reason),
        };
        ssl_requested = true;
    }
    loop {
        let packet = match stream.read_startup(policy.max_startup_len).await {
            Ok(Some(packet)) => packet,
            Ok(None) if stream.get_ref().is_tls() => return Accepted::Close(CloseReason::Unused),
            Ok(None) => return Accepted::Close(CloseReason::PeerLeft),
            // A cancel is never answered, even a malformed one.
            Err(IoError::Wire(WireError::BadCancelRequest)) => {
                return Accepted::Close(CloseReason::BadCancel);
            }
            Err(IoError::Wire(error)) => return Accepted::Refuse { stream, error },
            Err(e) => return Accepted::Close(io_reason(e)),
        };
        match packet {
            StartupPacket::SslRequest => {
                if ssl_requested || stream.get_ref().is_tls() {
                    return Accepted::Close(CloseReason::RepeatedRequest);
                }
                ssl_requested = true;
                // Bytes after an SSLRequest, before the answer, are a buffer-stuffing attempt.
                // Nothing may answer an SSLRequest but S or N, so the connection just closes.
                if !stream.buffered().is_empty() {
                    return Accepted::Close(CloseReason::EarlyData);
                }
                let Some(tls) = &policy.tls else {
                    if let Err(e) = stream.send(b"N").await {
                        return Accepted::Close(CloseReason::Io(e));
                    }
                    continue;
                };
                if let Err(e) = stream.send(b"S").await {
                    return Accepted::Close(CloseReason::Io(e));
                }
                let (transport, read_ahead) = stream.into_parts();
                stream = match start_tls(transport, read_ahead, tls, false).await {
                    Ok(s) => s,
                    Err(reason) => return Accepted::Close(reason),
                };
            }
            StartupPacket::GssEncRequest => {
                if gss_requested || stream.get_ref().is_tls() {
                    return Accepted::Close(CloseReason::RepeatedRequest);
                }
                gss_requested = true;
                if let Err(e) = stream.send(b"N").await {
                    return Accepted::Close(CloseReason::Io(e));
                }
            }
            StartupPacket::CancelRequest(request) => return Accepted::Cancel { stream, request },
            StartupPacket::Startup(message) => return Accepted::Startup { stream, message },
        }
    }
}

fn io_reason(e: IoError) -> CloseReason {
    match e {
        IoError::Io(e) => CloseReason::Io(e),
        _ => CloseReason::PeerLeft,
    }
}

/// Hands the raw connection, with whatever was read ahead of the handshake, to rustls.
async fn start_tls<S>(
    transport: Transport<S>,
    read_ahead: BytesMut,
    config: &Arc<rustls::ServerConfig>,
    direct: bool,
) -> Result<PgStream<Transport<S>>, CloseReason>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Transport::Plain(rewind) = transport else { return Err(CloseReason::RepeatedRequest) };
    let (prefix, raw) = rewind.into_inner();
    let mut ahead = BytesMut::from(&prefix[..]);
    ahead.extend_from_slice(&read_ahead);
    let tls = TlsAcceptor::from(config.clone())
        .accept(Rewind::with_prefix(ahead.freeze(), raw))
        .await
        .map_err(CloseReason::Tls)?;
    // Direct TLS must name the protocol; PostgreSQL refuses it otherwise, and so do we.
    if direct && tls.get_ref().1.alpn_protocol() != Some(ALPN_POSTGRESQL) {
        return Err(CloseReason::DirectTlsRefused);
    }
    Ok(PgStream::new(Transport::Tls(Box::new(TlsStream::Server(tls)))))
}

#[cfg(test)]
mod tests;
