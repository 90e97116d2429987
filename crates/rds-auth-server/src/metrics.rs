//! Prometheus metrics of the server proxy, served on `/metrics` by the health server.
//!
//! Names and labels are part of the interface (dashboards and alerts depend on them): they are
//! listed in docs/operations.md and only ever added to.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rds_auth_io::relay::{Direction, RelayObserver};

/// Why a connection ended before it became a session, or that it became one.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ConnectionLabels {
    pub(crate) result: ConnectionResult,
    pub(crate) reason: &'static str,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types, reason = "label values are snake_case on the wire")]
pub(crate) enum ConnectionResult {
    accepted,
    refused,
    /// A client proxy's warm connection that no session needed (TLS, then a clean close).
    unused,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub(crate) outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DirectionLabels {
    pub(crate) direction: &'static str,
}

/// Every metric the server proxy exports, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub(crate) sessions_open: Gauge,
    pub(crate) connections: Family<ConnectionLabels, Counter>,
    pub(crate) sessions_ended: Family<OutcomeLabels, Counter>,
    pub(crate) handshake_own_seconds: Histogram,
    pub(crate) upstream_connect_seconds: Histogram,
    pub(crate) bytes: Family<DirectionLabels, Counter>,
    pub(crate) cancels: Family<OutcomeLabels, Counter>,
    pub(crate) discovery_refreshes: Family<OutcomeLabels, Counter>,
    pub(crate) allowlist_targets: Gauge,
    pub(crate) tls_handshake_failures: Counter,
    pub(crate) identity_lookups: Family<OutcomeLabels, Counter>,
    pub(crate) reloads: Family<OutcomeLabels, Counter>,
    pub(crate) draining: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("rds_auth_proxy");
        let sessions_open = Gauge::default();
        registry.register("sessions_open", "Sessions relaying bytes now", sessions_open.clone());
        let connections = Family::<ConnectionLabels, Counter>::default();
        registry.register(
            "connections",
            "Connections by result (accepted: the session reached ReadyForQuery; refused: by reason; unused: a client proxy's warm connection that no session needed)",
            connections.clone(),
        );
        let sessions_ended = Family::<OutcomeLabels, Counter>::default();
        registry.register("sessions_ended", "Sessions that ended, by how", sessions_ended.clone());
        // 20 µs to ~0.3 s: the proxy's own CPU time in a handshake, not the waits.
        let handshake_own_seconds = Histogram::new(exponential_buckets(20e-6, 2.0, 15));
        registry.register(
            "handshake_own_seconds",
            "Time the proxy itself spent on a handshake (TLS, parsing, checks), excluding waits on the client and the database",
            handshake_own_seconds.clone(),
        );
        let upstream_connect_seconds = Histogram::new(exponential_buckets(0.5e-3, 2.0, 15));
        registry.register(
            "upstream_connect_seconds",
            "TCP connect and TLS handshake to the database",
            upstream_connect_seconds.clone(),
        );
        let bytes = Family::<DirectionLabels, Counter>::default();
        registry.register("bytes", "Bytes relayed after the handshake, by direction", bytes.clone());
        let cancels = Family::<OutcomeLabels, Counter>::default();
        registry.register("cancels", "Cancel requests by outcome", cancels.clone());
        let discovery_refreshes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "discovery_refreshes",
            "Allowlist refreshes from RDS discovery (ok, partial: some account or region failed)",
            discovery_refreshes.clone(),
        );
        let allowlist_targets = Gauge::default();
        registry.register("allowlist_targets", "Targets on the allowlist", allowlist_targets.clone());
        let tls_handshake_failures = Counter::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes with clients that failed (bad or missing certificate, protocol mismatch)",
            tls_handshake_failures.clone(),
        );
        let identity_lookups = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "identity_lookups",
            "sts:GetCallerIdentity proofs by outcome (cached, verified, refused, unavailable)",
            identity_lookups.clone(),
        );
        let reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register("reloads", "Configuration reloads (SIGHUP) by outcome", reloads.clone());
        let draining = Gauge::default();
        registry.register("draining", "1 once shutdown has started", draining.clone());
        Metrics {
            registry,
            sessions_open,
            connections,
            sessions_ended,
            handshake_own_seconds,
            upstream_connect_seconds,
            bytes,
            cancels,
            discovery_refreshes,
            allowlist_targets,
            tls_handshake_failures,
            identity_lookups,
            reloads,
            draining,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a configuration reload (SIGHUP), applied or refused.
    pub fn record_reload(&self, applied: bool) {
        Metrics::outcome(&self.reloads, if applied { "applied" } else { "failed" });
    }

    pub(crate) fn refused(&self, reason: &'static str) {
        self.connections.get_or_create(&ConnectionLabels { result: ConnectionResult::refused, reason }).inc();
    }

    pub(crate) fn unused(&self) {
        self.connections
            .get_or_create(&ConnectionLabels { result: ConnectionResult::unused, reason: "unused" })
            .inc();
    }

    pub(crate) fn accepted(&self) {
        self.connections
            .get_or_create(&ConnectionLabels { result: ConnectionResult::accepted, reason: "ready" })
            .inc();
    }

    pub(crate) fn outcome(family: &Family<OutcomeLabels, Counter>, outcome: &'static str) {
        family.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub(crate) fn observe(histogram: &Histogram, elapsed: Duration) {
        histogram.observe(elapsed.as_secs_f64());
    }

    /// Counts relayed bytes as they pass, so long sessions show up before they end.
    pub(crate) fn relay_observer(&self) -> BytesObserver {
        // One statement per label: `get_or_create` hands back a read guard, and a second call
        // that must insert while the first guard lives waits for it forever.
        let to_db = self.bytes.get_or_create(&DirectionLabels { direction: "to_db" }).clone();
        let from_db = self.bytes.get_or_create(&DirectionLabels { direction: "from_db" }).clone();
        BytesObserver { to_db, from_db }
    }
}

/// Adds relayed bytes to the `bytes` counters.
#[derive(Debug)]
pub(crate) struct BytesObserver {
    to_db: Counter,
    from_db: Counter,
}

impl RelayObserver for BytesObserver {
    fn bytes(&mut self, direction: Direction, n: usize) {
        let counter = match direction {
            Direction::ClientToServer => &self.to_db,
            Direction::ServerToClient => &self.from_db,
        };
        counter.inc_by(n as u64);
    }
}

/// Where the process is in its life, for the health endpoints.
#[derive(Debug, Default)]
pub struct Phase(AtomicU8);

const STARTING: u8 = 0;
const SERVING: u8 = 1;
const DRAINING: u8 = 2;

impl Phase {
    /// The listener is bound and the allowlist loaded: `/startup` and `/readiness` pass.
    pub fn set_serving(&self) {
        let _ = self.0.compare_exchange(STARTING, SERVING, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Shutdown has begun: `/readiness` fails from now on, whatever else happens.
    pub fn set_draining(&self) {
        self.0.store(DRAINING, Ordering::SeqCst);
    }

    pub fn is_started(&self) -> bool {
        self.0.load(Ordering::SeqCst) != STARTING
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst) == SERVING
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::SeqCst) == DRAINING
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_family() {
        let metrics = Metrics::new();
        metrics.refused("not_allowed");
        metrics.accepted();
        Metrics::outcome(&metrics.cancels, "sent");
        // On a fresh registry both series are created here; doing that under one statement
        // once deadlocked, so the call gets a deadline instead of hanging the test run.
        let (sender, receiver) = std::sync::mpsc::channel();
        let family = metrics.bytes.clone();
        std::thread::spawn(move || {
            let metrics = Metrics { bytes: family, ..Metrics::new() };
            let _ = sender.send(metrics.relay_observer());
        });
        let created = receiver.recv_timeout(Duration::from_secs(10));
        assert!(created.is_ok(), "relay_observer did not return on a fresh registry");
        let mut observer = metrics.relay_observer();
        observer.bytes(Direction::ClientToServer, 10);
        observer.bytes(Direction::ServerToClient, 32);
        let text = metrics.encode();
        for line in [
            "rds_auth_proxy_connections_total{result=\"refused\",reason=\"not_allowed\"} 1",
            "rds_auth_proxy_connections_total{result=\"accepted\",reason=\"ready\"} 1",
            "rds_auth_proxy_cancels_total{outcome=\"sent\"} 1",
            "rds_auth_proxy_bytes_total{direction=\"to_db\"} 10",
            "rds_auth_proxy_bytes_total{direction=\"from_db\"} 32",
            "# TYPE rds_auth_proxy_handshake_own_seconds histogram",
            "# TYPE rds_auth_proxy_upstream_connect_seconds histogram",
            "rds_auth_proxy_sessions_open 0",
            "rds_auth_proxy_tls_handshake_failures_total 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn phases_only_move_forward_to_draining() {
        let phase = Phase::default();
        assert!(!phase.is_started() && !phase.is_ready());
        phase.set_serving();
        assert!(phase.is_started() && phase.is_ready());
        phase.set_draining();
        phase.set_serving();
        assert!(phase.is_draining() && !phase.is_ready() && phase.is_started());
    }
}
