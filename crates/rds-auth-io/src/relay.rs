//! The byte relay a session becomes after ReadyForQuery.
//!
//! Bytes are copied as they arrive, never decoded. Each direction is followed by a
//! [`BoundaryScanner`] that reads message headers only, which is enough to know:
//! - how many queries are in flight: each Query, Sync or FunctionCall the client sends earns
//!   one ReadyForQuery from the server, so a client that vanishes while the count is above
//!   zero left a statement running;
//! - whether the server stream sits at a message boundary, where a proxy may end the session
//!   with an ErrorResponse of its own (FATAL 57P01 on shutdown).
//!
//! The relay ends as soon as either direction does (end of stream, an error, or bytes that
//! are not the protocol), after passing the close on to the other side's writer. A peer that
//! never sends its half of a TLS close therefore cannot hold a session open.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rds_auth_codec::WireError;
use rds_auth_codec::boundary::{Boundary, BoundaryScanner};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long the server's last words may take to reach the client once the server is gone.
const LINGER: Duration = Duration::from_secs(2);

/// How long closing both sides may take once the relay has ended.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Tunables of the relay.
#[derive(Debug, Clone, Copy)]
pub struct RelayConfig {
    /// Bytes buffered per direction. TLS records carry up to 16 KiB, so less than that costs
    /// extra system calls on bulk transfers.
    pub buffer_size: usize,
    /// The longest message a peer may announce before the stream is considered garbage.
    pub max_message_len: usize,
}

impl RelayConfig {
    pub const fn new() -> RelayConfig {
        RelayConfig { buffer_size: 16 * 1024, max_message_len: 1 << 30 }
    }
}

impl Default for RelayConfig {
    fn default() -> RelayConfig {
        RelayConfig::new()
    }
}

/// Which way bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

/// Why a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// The client closed its side.
    ClientClosed,
    /// The server closed its side.
    ServerClosed,
    /// Reading from or writing to the client failed.
    ClientError(io::Error),
    /// Reading from or writing to the server failed.
    ServerError(io::Error),
    /// A peer sent bytes that are not Postgres messages.
    Protocol(Direction, WireError),
    /// The shutdown signal fired and the closing message was delivered at a boundary.
    Shutdown,
}

/// The end of a relay and what it moved.
#[derive(Debug)]
pub struct RelayOutcome {
    pub end: RelayEnd,
    pub bytes_client_to_server: u64,
    pub bytes_server_to_client: u64,
    /// Queries sent whose ReadyForQuery has not come back.
    pub queries_in_flight: u64,
    /// Whether the client sent Terminate.
    pub terminated: bool,
}

/// Sees bytes as they pass, for live metrics. The default does nothing.
pub trait RelayObserver {
    fn bytes(&mut self, _direction: Direction, _n: usize) {}
}

/// An observer that sees nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl RelayObserver for NoObserver {}

/// Relays between `client` and `server` until either side ends or `shutdown` completes and the
/// server stream reaches a message boundary, at which point `closing_message` is sent to the
/// client. `client_ahead` and `server_ahead` are bytes already read from each side that were
/// not yet forwarded.
#[allow(clippy::too_many_arguments)]
pub async fn relay<C, S, F, O>(
    client: &mut C,
    server: &mut S,
    client_ahead: BytesMut,
    server_ahead: BytesMut,
    config: RelayConfig,
    shutdown: F,
    closing_message: Bytes,
    observer: &mut O,
) -> RelayOutcome
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = ()>,
    O: RelayObserver,
{
    let mut up = Pipe::new(Direction::ClientToServer, config, client_ahead);
    let mut down = Pipe::new(Direction::ServerToClient, config, server_ahead);
    let mut counts = Counts::default();
    if let Err(e) = up.scan_pending(&mut counts).and_then(|()| down.scan_pending(&mut counts)) {
        return counts.finish(e, &up, &down);
    }
    let mut shutdown = std::pin::pin!(shutdown);
    let mut draining = false;
    let closing_len = closing_message.len();
    let mut closing = Some(closing_message);
    let mut up_end: Option<RelayEnd> = None;
    let mut linger = std::pin::pin!(None::<tokio::time::Sleep>);

    let end = std::future::poll_fn(|cx| {
        if !draining && shutdown.as_mut().poll(cx).is_ready() {
            draining = true;
        }
        // Once the closing message has begun, nothing else may be copied around or into it.
        let closing_started = closing.as_ref().is_some_and(|m| m.len() < closing_len);
        if up_end.is_none() && !closing_started {
            match up.poll_copy(cx, client, server, &mut counts, observer) {
                // The server went away while the client was still talking: what the server
                // said last (usually a FATAL explaining why) is still on its way down, so let
                // that direction finish, within a bound.
                Poll::Ready(end @ RelayEnd::ServerError(_)) => {
                    up_end = Some(end);
                    linger.as_mut().set(Some(tokio::time::sleep(LINGER)));
                }
                Poll::Ready(end) => return Poll::Ready(end),
                Poll::Pending => {}
            }
        }
        if !closing_started
            && let Poll::Ready(end) = down.poll_copy(cx, server, client, &mut counts, observer)
        {
            return Poll::Ready(end);
        }
        if let Some(sleep) = linger.as_mut().as_pin_mut()
            && sleep.poll(cx).is_ready()
        {
            return Poll::Ready(up_end.take().unwrap_or(RelayEnd::ServerClosed));
        }
        if draining && down.is_idle_at_boundary() {
            if let Some(message) = closing.as_mut() {
                while !message.is_empty() {
                    match Pin::new(&mut *client).poll_write(cx, message) {
                        Poll::Ready(Ok(0)) => return Poll::Ready(RelayEnd::ClientClosed),
                        Poll::Ready(Ok(n)) => message.advance(n),
                        Poll::Ready(Err(e)) => return Poll::Ready(RelayEnd::ClientError(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            }
            closing = None;
            return match Pin::new(&mut *client).poll_flush(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(RelayEnd::Shutdown),
                Poll::Ready(Err(e)) => Poll::Ready(RelayEnd::ClientError(e)),
                Poll::Pending => Poll::Pending,
            };
        }
        Poll::Pending
    })
    .await;

    // Pass the end on: whichever side is still open learns that the session is over. A peer
    // that stopped reading could block a close forever, hence the bound.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        let _ = tokio::io::AsyncWriteExt::shutdown(server).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(client).await;
    })
    .await;
    counts.finish(end, &up, &down)
}

#[derive(Debug, Default)]
struct Counts {
    queries_sent: u64,
    ready_received: u64,
    terminated: bool,
}

impl Counts {
    fn on_boundary(&mut self, direction: Direction, boundary: Boundary) {
        match (direction, boundary) {
            (Direction::ClientToServer, Boundary::Message { tag: b'Q' | b'S' | b'F', .. }) => {
                self.queries_sent += 1;
            }
            (Direction::ClientToServer, Boundary::Message { tag: b'X', .. }) => self.terminated = true,
            (Direction::ServerToClient, Boundary::Message { tag: b'Z', .. }) => {
                self.ready_received += 1;
            }
            _ => {}
        }
    }

    fn finish(self, end: RelayEnd, up: &Pipe, down: &Pipe) -> RelayOutcome {
        RelayOutcome {
            end,
            bytes_client_to_server: up.bytes,
            bytes_server_to_client: down.bytes,
            queries_in_flight: self.queries_sent.saturating_sub(self.ready_received),
            terminated: self.terminated,
        }
    }
}

/// One direction: a buffer, how much of it is still to be written, and the scanner.
struct Pipe {
    direction: Direction,
    buf: Vec<u8>,
    pos: usize,
    cap: usize,
    read_done: bool,
    need_flush: bool,
    scanner: BoundaryScanner,
    bytes: u64,
}

impl Pipe {
    fn new(direction: Direction, config: RelayConfig, ahead: BytesMut) -> Pipe {
        let mut buf = vec![0; config.buffer_size.max(ahead.len()).max(1)];
        buf[..ahead.len()].copy_from_slice(&ahead);
        Pipe {
            direction,
            buf,
            pos: 0,
            cap: ahead.len(),
            read_done: false,
            need_flush: false,
            scanner: BoundaryScanner::new(config.max_message_len),
            bytes: 0,
        }
    }

    fn scan_pending(&mut self, counts: &mut Counts) -> Result<(), RelayEnd> {
        let direction = self.direction;
        self.scanner
            .scan(&self.buf[self.pos..self.cap], |b| counts.on_boundary(direction, b))
            .map_err(|e| RelayEnd::Protocol(direction, e))
    }

    fn is_idle_at_boundary(&self) -> bool {
        self.pos == self.cap && self.scanner.at_boundary()
    }

    fn read_error(&self, e: io::Error) -> RelayEnd {
        match self.direction {
            Direction::ClientToServer => RelayEnd::ClientError(e),
            Direction::ServerToClient => RelayEnd::ServerError(e),
        }
    }

    fn write_error(&self, e: io::Error) -> RelayEnd {
        match self.direction {
            Direction::ClientToServer => RelayEnd::ServerError(e),
            Direction::ServerToClient => RelayEnd::ClientError(e),
        }
    }

    fn closed(&self) -> RelayEnd {
        match self.direction {
            Direction::ClientToServer => RelayEnd::ClientClosed,
            Direction::ServerToClient => RelayEnd::ServerClosed,
        }
    }

    /// Copies until the reader would block (`Pending`) or this direction ends (`Ready`).
    fn poll_copy<R, W, O>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        counts: &mut Counts,
        observer: &mut O,
    ) -> Poll<RelayEnd>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
        O: RelayObserver,
    {
        loop {
            if self.pos == self.cap && !self.read_done {
                let mut read_buf = ReadBuf::new(&mut self.buf);
                match Pin::new(&mut *reader).poll_read(cx, &mut read_buf) {
                    Poll::Ready(Ok(())) => {
                        let n = read_buf.filled().len();
                        if n == 0 {
                            self.read_done = true;
                        } else {
                            self.pos = 0;
                            self.cap = n;
                            if let Err(end) = self.scan_pending(counts) {
                                return Poll::Ready(end);
                            }
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(self.read_error(e)),
                    Poll::Pending => {
                        if self.need_flush {
                            match Pin::new(&mut *writer).poll_flush(cx) {
                                Poll::Ready(Ok(())) => self.need_flush = false,
                                Poll::Ready(Err(e)) => return Poll::Ready(self.write_error(e)),
                                Poll::Pending => {}
                            }
                        }
                        return Poll::Pending;
                    }
                }
            }

            while self.pos < self.cap {
                let n =
                    match ready!(Pin::new(&mut *writer).poll_write(cx, &self.buf[self.pos..self.cap])) {
                        Ok(0) => {
                            return Poll::Ready(self.write_error(io::Error::new(
                                io::ErrorKind::WriteZero,
                                "peer stopped reading",
                            )));
                        }
                        Ok(n) => n,
                        Err(e) => return Poll::Ready(self.write_error(e)),
                    };
                self.pos += n;
                self.bytes += n as u64;
                self.need_flush = true;
                observer.bytes(self.direction, n);
            }

            if self.pos == self.cap && self.read_done {
                if let Err(e) = ready!(Pin::new(&mut *writer).poll_flush(cx)) {
                    return Poll::Ready(self.write_error(e));
                }
                return Poll::Ready(self.closed());
            }
        }
    }
}

#[cfg(test)]
mod tests;
