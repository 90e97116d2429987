//! Connection limits: a cap on open connections, and a rate limit per caller.
//!
//! Over the cap, a connection still gets its startup handled so the client sees FATAL 53300
//! rather than a reset, but only a few of those at a time: beyond [`ConnectionGate::slack`]
//! connections over the cap, the socket is closed at once, so a flood cannot buy unbounded
//! TLS handshakes.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The connection limits of a server proxy.
#[derive(Debug, Clone, Copy)]
pub struct LimitsConfig {
    /// Open connections (sessions, handshakes and cancels) above which new sessions are
    /// refused with FATAL 53300.
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

/// Counts open connections.
#[derive(Debug)]
pub(crate) struct ConnectionGate {
    open: Arc<AtomicUsize>,
    max: usize,
}

/// What a new connection may do.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Within the cap.
    Admitted(OpenConnection),
    /// Over the cap: answer the startup with FATAL 53300.
    Refuse(OpenConnection),
    /// Far over the cap: close the socket without a word.
    Drop,
}

/// One open connection; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ConnectionGate {
    pub(crate) fn new(max: usize) -> ConnectionGate {
        ConnectionGate { open: Arc::new(AtomicUsize::new(0)), max }
    }

    /// Connections over the cap that are still answered with an error.
    fn slack(&self) -> usize {
        (self.max / 16).clamp(8, 256)
    }

    pub(crate) fn admit(&self) -> Admission {
        let before = self.open.fetch_add(1, Ordering::SeqCst);
        let connection = OpenConnection(self.open.clone());
        if before < self.max {
            Admission::Admitted(connection)
        } else if before < self.max + self.slack() {
            Admission::Refuse(connection)
        } else {
            drop(connection);
            Admission::Drop
        }
    }

    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
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
    fn the_gate_refuses_over_the_cap_then_drops_and_frees_places() {
        let gate = ConnectionGate::new(2);
        let a = gate.admit();
        let b = gate.admit();
        assert!(matches!(a, Admission::Admitted(_)) && matches!(b, Admission::Admitted(_)));
        let refused: Vec<_> = (0..8).map(|_| gate.admit()).collect();
        assert!(refused.iter().all(|r| matches!(r, Admission::Refuse(_))));
        assert!(matches!(gate.admit(), Admission::Drop));
        assert_eq!(gate.open(), 10);
        drop(refused);
        drop(a);
        assert_eq!(gate.open(), 1);
        assert!(matches!(gate.admit(), Admission::Admitted(_)));
    }

    #[test]
    fn callers_are_limited_separately() {
        let limiter = CallerLimiter::new(NonZeroU32::new(1).unwrap(), NonZeroU32::new(3).unwrap());
        assert!((0..3).all(|_| limiter.allow("arn:aws:iam::1:role/a")));
        assert!(!limiter.allow("arn:aws:iam::1:role/a"));
        assert!(limiter.allow("arn:aws:iam::1:role/b"));
    }
}
