use std::io;

use bytes::BytesMut;
use rds_auth_codec::StartupPacket;
use rds_auth_codec::backend::BackendMessage;
use rds_auth_codec::frame::Frame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::IoError;

/// How much room a read asks for. Reads never reserve what a peer claims a message is long.
const READ_CHUNK: usize = 8 * 1024;

/// A Postgres connection read message by message through the pure codec.
///
/// Bytes read beyond the current message stay in the buffer: [`PgStream::buffered`] shows them
/// (an SSLRequest followed by anything is a buffer-stuffing attempt), and
/// [`PgStream::into_parts`] hands them on when a session becomes a byte relay.
#[derive(Debug)]
pub struct PgStream<S> {
    stream: S,
    buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> PgStream<S> {
    pub fn new(stream: S) -> PgStream<S> {
        PgStream { stream, buf: BytesMut::new() }
    }

    pub fn with_buffer(stream: S, buf: BytesMut) -> PgStream<S> {
        PgStream { stream, buf }
    }

    /// Reads more bytes; `Ok(false)` on a clean end of stream.
    async fn fill(&mut self) -> Result<bool, IoError> {
        self.buf.reserve(READ_CHUNK);
        Ok(self.stream.read_buf(&mut self.buf).await? > 0)
    }

    fn eof(&self) -> IoError {
        if self.buf.is_empty() {
            IoError::Eof
        } else {
            IoError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-message"))
        }
    }

    /// Waits until at least one byte is buffered; `Ok(false)` if the peer closed first.
    pub async fn fill_first(&mut self) -> Result<bool, IoError> {
        while self.buf.is_empty() {
            if !self.fill().await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reads one startup-phase packet. `Ok(None)` means the peer closed without sending a byte,
    /// which health checks and port scans do and which is not worth an error.
    pub async fn read_startup(&mut self, max_len: usize) -> Result<Option<StartupPacket>, IoError> {
        loop {
            if let Some(packet) = StartupPacket::decode(&mut self.buf, max_len)? {
                return Ok(Some(packet));
            }
            if !self.fill().await? {
                return if self.buf.is_empty() { Ok(None) } else { Err(self.eof()) };
            }
        }
    }

    /// Reads one whole message.
    pub async fn read_frame(&mut self, max_len: usize) -> Result<Frame, IoError> {
        loop {
            if let Some(frame) = Frame::decode(&mut self.buf, max_len)? {
                return Ok(frame);
            }
            if !self.fill().await? {
                return Err(self.eof());
            }
        }
    }

    /// Reads one whole backend message, decoded as far as the proxies need.
    pub async fn read_backend(&mut self, max_len: usize) -> Result<BackendMessage, IoError> {
        let frame = self.read_frame(max_len).await?;
        Ok(BackendMessage::parse(frame)?)
    }

    /// Writes `data` and flushes it.
    pub async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data).await?;
        self.stream.flush().await
    }

    /// Bytes read but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The stream and whatever was read ahead of the last message.
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.stream, self.buf)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rds_auth_codec::backend::{BackendMessage, TransactionStatus};

    use super::*;

    #[tokio::test]
    async fn messages_split_across_reads_and_read_ahead_kept() {
        let (client, server) = tokio::io::duplex(4);
        let writer = tokio::spawn(async move {
            let mut client = client;
            let mut bytes = StartupPacket::SslRequest.to_bytes().to_vec();
            bytes.extend_from_slice(&BackendMessage::ReadyForQuery(TransactionStatus::Idle).to_bytes());
            bytes.extend_from_slice(b"extra");
            for b in bytes {
                client.write_all(&[b]).await.unwrap();
            }
        });
        let mut stream = PgStream::new(server);
        assert_eq!(stream.read_startup(100).await.unwrap(), Some(StartupPacket::SslRequest));
        assert_eq!(
            stream.read_backend(100).await.unwrap(),
            BackendMessage::ReadyForQuery(TransactionStatus::Idle)
        );
        writer.await.unwrap();
        while stream.buffered().len() < 5 {
            assert!(stream.fill().await.unwrap());
        }
        let (_, rest) = stream.into_parts();
        assert_eq!(rest.freeze(), Bytes::from_static(b"extra"));
    }

    #[tokio::test]
    async fn silent_close_is_none_and_partial_close_is_an_error() {
        let (client, server) = tokio::io::duplex(64);
        drop(client);
        assert!(PgStream::new(server).read_startup(100).await.unwrap().is_none());

        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(&[0, 0, 0, 8, 4]).await.unwrap();
        drop(client);
        let err = PgStream::new(server).read_startup(100).await.unwrap_err();
        assert!(err.is_disconnect());
    }
}
