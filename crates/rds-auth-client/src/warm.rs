//! Connections to a server proxy whose TLS handshake is already done, so that a new session
//! does not wait for one.
//!
//! After each session takes a connection, the pool is topped up in the background; nothing is
//! opened before the first session, and nothing is renewed while no session comes, so an idle
//! laptop holds no connections. A warm connection is used at most `idle` after its handshake,
//! well inside the server proxy's startup timeout, and only if the server proxy has not
//! closed it meanwhile. Connections carry no credential until a session writes its startup
//! packet, so a warm connection is nothing more than a verified TLS channel.
//!
//! Cancel requests and `doctor` do not use the pool: they are rare, and `doctor` must see
//! the handshake itself.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use rds_auth_io::{PgStream, Transport};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

/// The connection toward the database side: the server proxy, or the database in direct mode.
pub(crate) type Upstream = PgStream<Transport<TcpStream>>;

/// The pool's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmSettings {
    /// How many handshaked connections to keep ready after a session; 0 turns the pool off.
    pub size: usize,
    /// How long a warm connection may wait for a session. It must stay below the server
    /// proxy's startup timeout (`limits.startup_timeout`, 15 s by default), after which the
    /// server proxy closes it.
    pub idle: Duration,
}

impl WarmSettings {
    pub const OFF: WarmSettings = WarmSettings { size: 0, idle: Duration::ZERO };
}

impl Default for WarmSettings {
    fn default() -> WarmSettings {
        WarmSettings { size: 2, idle: Duration::from_secs(5) }
    }
}

/// Warm connections to one server proxy.
#[derive(Debug)]
pub struct WarmPool {
    settings: WarmSettings,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<Warm>,
    /// Handshakes under way for the pool.
    filling: usize,
    next_id: u64,
}

#[derive(Debug)]
struct Warm {
    id: u64,
    since: Instant,
    stream: Upstream,
}

impl WarmPool {
    pub fn new(settings: WarmSettings) -> WarmPool {
        WarmPool { settings, state: Mutex::new(State::default()) }
    }

    pub fn settings(&self) -> WarmSettings {
        self.settings
    }

    /// The youngest warm connection that is still fresh and open; stale or closed ones are
    /// dropped on the way.
    pub(crate) fn take(&self, now: Instant) -> Option<Upstream> {
        let mut state = self.lock();
        let idle = self.settings.idle;
        while let Some(mut warm) = state.ready.pop_back() {
            if now.saturating_duration_since(warm.since) < idle && is_open(&mut warm.stream) {
                return Some(warm.stream);
            }
        }
        None
    }

    /// How many handshakes to start so that the pool is full once they finish; they are
    /// counted as under way from now.
    pub(crate) fn reserve(&self, now: Instant) -> usize {
        let mut state = self.lock();
        let idle = self.settings.idle;
        state.ready.retain(|warm| now.saturating_duration_since(warm.since) < idle);
        let wanted = self.settings.size.saturating_sub(state.ready.len() + state.filling);
        state.filling += wanted;
        wanted
    }

    /// Ends one reserved handshake, keeping its connection if it succeeded. The id it returns
    /// lets [`WarmPool::expire`] take the connection back once it has waited `idle`.
    pub(crate) fn fill(&self, stream: Option<Upstream>, now: Instant) -> Option<u64> {
        let mut state = self.lock();
        state.filling = state.filling.saturating_sub(1);
        let stream = stream?;
        if state.ready.len() >= self.settings.size {
            return None;
        }
        let id = state.next_id;
        state.next_id += 1;
        state.ready.push_back(Warm { id, since: now, stream });
        Some(id)
    }

    /// Takes back the connection `fill` numbered `id`, if no session took it, so that it can
    /// be closed before the server proxy's startup timeout closes it.
    pub(crate) fn expire(&self, id: u64) -> Option<Upstream> {
        let mut state = self.lock();
        let at = state.ready.iter().position(|warm| warm.id == id)?;
        state.ready.remove(at).map(|warm| warm.stream)
    }

    /// How many warm connections wait now.
    #[cfg(test)]
    fn ready(&self) -> usize {
        self.lock().ready.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether a warm connection is still open: a server proxy sends nothing before the startup
/// packet, so anything readable (end of stream, an alert, a stray byte) means it is not usable.
/// TLS session tickets are handled inside the TLS layer and read as nothing.
fn is_open(stream: &mut Upstream) -> bool {
    if !stream.buffered().is_empty() {
        return false;
    }
    let mut cx = Context::from_waker(Waker::noop());
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let polled: Poll<io::Result<()>> = Pin::new(stream.get_mut()).poll_read(&mut cx, &mut buf);
    polled.is_pending()
}

#[cfg(test)]
mod tests;
