//! tokio-postgres over rustls: a client that verifies the server as libpq's `verify-full`
//! does, and binds SCRAM to the TLS channel (`tls-server-end-point`).
//!
//! ```ignore
//! let tls = TlsConnector::new(standin.roots()?, "127.0.0.1")?;
//! let mut config = tokio_postgres::Config::new();
//! config.user("iam_user").password(token).dbname("postgres");
//! let client = connect(standin.addr(Listener::Pam), tls, &config).await?;
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use aws_lc_rs::digest;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::DbError;
use tokio_postgres::tls::{ChannelBinding, TlsConnect};

use crate::harness::HarnessError;

/// Connects over TLS to one server name.
#[derive(Debug, Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl TlsConnector {
    /// Trusts `roots` and expects a certificate for `server_name` (a DNS name or an IP address).
    pub fn new(roots: RootCertStore, server_name: &str) -> Result<TlsConnector, HarnessError> {
        let config = rds_auth_io::tls::client_config(roots, None, &[], false)?;
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| HarnessError::ServerName(server_name.to_owned()))?;
        Ok(TlsConnector { config, server_name })
    }
}

/// The TLS stream [`TlsConnector`] gives tokio-postgres.
#[derive(Debug)]
pub struct TlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S> TlsConnect<S> for TlsConnector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move { connector.connect(self.server_name, stream).await.map(TlsStream) })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for TlsStream<S> {
    /// `tls-server-end-point`: the SHA-256 of the server's certificate (RFC 5929; the test
    /// certificates are signed with ECDSA-SHA256).
    fn channel_binding(&self) -> ChannelBinding {
        match self.0.get_ref().1.peer_certificates().and_then(|chain| chain.first()) {
            Some(cert) => {
                ChannelBinding::tls_server_end_point(digest::digest(&digest::SHA256, cert).as_ref().to_vec())
            }
            None => ChannelBinding::none(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// Connecting failed: before Postgres answered, or with Postgres's own error.
#[derive(Debug, thiserror::Error)]
pub enum PgConnectError {
    #[error("cannot connect to {addr}: {source}")]
    Tcp {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
}

impl PgConnectError {
    /// The server's ErrorResponse, when there was one.
    pub fn db_error(&self) -> Option<&DbError> {
        match self {
            PgConnectError::Postgres(e) => e.as_db_error(),
            PgConnectError::Tcp { .. } => None,
        }
    }
}

/// Connects to `addr` with `config` (user, password, database, ...) over TLS, which is
/// required, and drives the connection on the current runtime.
pub async fn connect(
    addr: SocketAddr,
    tls: TlsConnector,
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, PgConnectError> {
    let stream = TcpStream::connect(addr).await.map_err(|source| PgConnectError::Tcp { addr, source })?;
    stream.set_nodelay(true).map_err(|source| PgConnectError::Tcp { addr, source })?;
    let mut config = config.clone();
    config.ssl_mode(SslMode::Require);
    let (client, connection) = config.connect_raw(stream, tls).await?;
    tokio::spawn(async move {
        // The connection ends when the client is dropped; its error, if any, reached the client.
        let _ = connection.await;
    });
    Ok(client)
}
