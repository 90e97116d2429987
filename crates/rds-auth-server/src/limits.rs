//! Connection limits: a cap on sessions, and a rate limit per caller.
//!
//! The cap counts sessions, from their StartupMessage to their close, and is checked when the
//! StartupMessage arrives: a client proxy's warm connection, handshaked ahead of time, takes a
//! place only once a session uses it. Over the cap, the client sees FATAL 53300 rather than a
//! reset. Connections that have not sent a startup yet are bounded apart: beyond
//! [`ConnectionGate::slack`] of them over the cap, a new socket is closed at once, so a flood
//! cannot buy unbounded TLS handshakes.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The connection limits of a server proxy.
#[derive(Debug, Clone, Copy)]
pub struct LimitsConfig {
    /// Sessions above which new ones are refused with FATAL 53300.
    pub max_connections: usize,
    /// New sessions per second per caller, and the burst above that.
    pub per_caller_per_second: NonZeroU32,
    pub per_caller_burst: NonZeroU32,
}

impl LimitsConfig {
    /// A cap that 1 000 sessions fit under, and a per-caller rate that an IDE opening 200
    /// connections at once stays within.
    pub const DEFAULT: LimitsConfig = LimitsConfig {
        max_connections: 4096,
        per_caller_per_second: NonZeroU32::new(50).expect("non-zero"),
        per_caller_burst: NonZeroU32::new(300).expect("non-zero"),
    };
}

/// Counts open connections, and the sessions among them.
#[derive(Debug)]
pub(crate) struct ConnectionGate {
    open: Arc<AtomicUsize>,
    sessions: Arc<AtomicUsize>,
    max: usize,
}

/// One open connection or session; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ConnectionGate {
    pub(crate) fn new(max: usize) -> ConnectionGate {
        ConnectionGate { open: Arc::new(AtomicUsize::new(0)), sessions: Arc::new(AtomicUsize::new(0)), max }
    }

    /// Connections beyond the cap that may still wait for their startup.
    fn slack(&self) -> usize {
        (self.max / 16).clamp(8, 256)
    }

    /// A new connection's place, or `None` when it should be closed without a word: far more
    /// connections are open than sessions may be.
    pub(crate) fn admit(&self) -> Option<Place> {
        take_place(&self.open, self.max + self.slack())
    }

    /// A place for a session whose StartupMessage just arrived, or `None`: answer FATAL 53300.
    pub(crate) fn admit_session(&self) -> Option<Place> {
        take_place(&self.sessions, self.max)
    }

    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    #[cfg(test)]
    fn sessions(&self) -> usize {
        self.sessions.load(Ordering::SeqCst)
    }
}

fn take_place(count: &Arc<AtomicUsize>, max: usize) -> Option<Place> {
    let before = count.fetch_add(1, Ordering::SeqCst);
    let place = Place(count.clone());
    (before < max).then_some(place)
}

/// New sessions per caller: the IAM ARN when the client proved one, else the certificate
/// subject, else the client address.
#[derive(Debug)]
pub(crate) struct CallerLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
}

impl CallerLimiter {
    pub(crate) fn new(per_second: NonZeroU32, burst: NonZeroU32) -> CallerLimiter {
        CallerLimiter { limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)) }
    }

    pub(crate) fn allow(&self, caller: &str) -> bool {
        let allowed = self.limiter.check_key(&caller.to_owned()).is_ok();
        if self.limiter.len() > 10_000 {
            self.limiter.retain_recent();
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_capped_and_connections_waiting_for_a_startup_have_some_slack() {
        let gate = ConnectionGate::new(2);
        let connections: Vec<_> = (0..10).map(|_| gate.admit()).collect();
        assert!(connections.iter().all(Option::is_some), "the cap plus a slack of 8");
        assert!(gate.admit().is_none());
        assert_eq!(gate.open(), 10);
        let a = gate.admit_session();
        let b = gate.admit_session();
        assert!(a.is_some() && b.is_some());
        assert!(gate.admit_session().is_none());
        assert_eq!(gate.sessions(), 2);
        drop(a);
        assert_eq!(gate.sessions(), 1);
        assert!(gate.admit_session().is_some());
        drop(connections);
        assert_eq!(gate.open(), 0);
        assert!(gate.admit().is_some());
    }

    #[test]
    fn callers_are_limited_separately() {
        let limiter = CallerLimiter::new(NonZeroU32::new(1).unwrap(), NonZeroU32::new(3).unwrap());
        assert!((0..3).all(|_| limiter.allow("arn:aws:iam::1:role/a")));
        assert!(!limiter.allow("arn:aws:iam::1:role/a"));
        assert!(limiter.allow("arn:aws:iam::1:role/b"));
    }
}
