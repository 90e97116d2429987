use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rds_auth_codec::StartupPacket;
use rds_auth_codec::startup::CancelRequest;
use rds_auth_startup::Endpoint;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::UpstreamError;
use crate::connect::start_tls;

/// Sends a CancelRequest to the database at `addr`, the address the session actually used,
/// inside TLS verified for `endpoint`, and waits until the database closes the connection.
/// Waiting matters: the caller closes its own client's cancel socket only afterwards, which is
/// how libpq knows a late cancel cannot hit the next query.
pub async fn send_cancel(
    addr: SocketAddr,
    endpoint: &Endpoint,
    request: CancelRequest,
    tls: &Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<(), UpstreamError> {
    let exchange = async {
        let tcp =
            TcpStream::connect(addr).await.map_err(|e| UpstreamError::Connect { attempts: 1, last: e })?;
        let _ = tcp.set_nodelay(true);
        let mut stream = start_tls(tcp, endpoint, tls).await?;
        stream
            .write_all(&StartupPacket::CancelRequest(request).to_bytes())
            .await
            .map_err(UpstreamError::Io)?;
        stream.flush().await.map_err(UpstreamError::Io)?;
        // The server never answers a cancel; it closes the connection when done, without a
        // TLS close_notify, which rustls reports as an unexpected end: that is the close.
        let mut sink = [0u8; 64];
        loop {
            match stream.read(&mut sink).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(UpstreamError::Io(e)),
            }
        }
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| UpstreamError::AuthTimeout)?
}
