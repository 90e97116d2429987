use std::sync::{Arc, RwLock};
use std::time::Duration;

use rds_auth_io::relay::RelayConfig;
use rds_auth_upstream::UpstreamConfig;

use crate::limits::{CallerLimiter, ConnectionGate, LimitsConfig};
use crate::metrics::{Metrics, Phase};
use crate::{Allowlist, CancelState, IdentityVerifier, TargetRule};

/// Everything the server proxy needs to run, already validated by the caller, and the state
/// its sessions share.
#[derive(Debug)]
pub struct ServerConfig {
    /// The listener's TLS configuration. `None` accepts plaintext only, for a deployment
    /// reached solely through a port-forward; it must be chosen explicitly. Replaced whole on
    /// reload.
    pub tls: RwLock<Option<Arc<rustls::ServerConfig>>>,
    /// Whether a client certificate is required (the TLS configuration enforces it; this
    /// records it for logs and identity checks).
    pub require_client_cert: bool,
    /// The allowed targets. Replaced whole on reload and on discovery, never edited in place.
    pub allowlist: RwLock<Arc<Allowlist>>,
    /// The targets of the configuration file; discovery adds to them.
    pub static_rules: RwLock<Arc<Vec<TargetRule>>>,
    pub upstream: UpstreamConfig,
    /// How long a client may take to finish its startup packet, TLS included.
    pub startup_timeout: Duration,
    /// How long a session may take from its StartupMessage to ReadyForQuery: connecting to
    /// the database, TLS, authentication and the startup tail.
    pub handshake_timeout: Duration,
    /// The startup limit on the leg between the proxies. It must hold a token with a session
    /// token in it, and an identity proof, on top of whatever the client sent, so it is larger
    /// than Postgres's 10 000.
    pub max_startup_len: usize,
    /// How far in the future a token's signing time may be before it is refused as "not yet
    /// valid": the laptop's clock may run a little fast.
    pub token_clock_skew: Duration,
    pub relay: RelayConfig,
    pub shutdown: ShutdownConfig,
    /// Whether every connection opens with a PROXY protocol v2 header (behind a network load
    /// balancer).
    pub proxy_protocol: bool,
    pub limits: LimitsConfig,
    /// Seals and opens cancel keys, and limits cancels per session.
    pub cancel: Arc<CancelState>,
    /// Verifies the callers' `sts:GetCallerIdentity` proofs. `None`: proofs are ignored and
    /// no target may restrict its principals.
    pub identity: Option<IdentityVerifier>,
    pub metrics: Metrics,
    /// Where the process is in its life, for the health endpoints.
    pub phase: Phase,
    pub(crate) gate: ConnectionGate,
    pub(crate) callers: CallerLimiter,
}

/// How the server proxy stops on SIGTERM.
#[derive(Debug, Clone, Copy)]
pub struct ShutdownConfig {
    /// How long the listener keeps accepting after readiness turns 503, so load balancers
    /// deregister the replica before it stops answering.
    pub min_delay: Duration,
    /// How long open sessions may continue after the listener closes before they are ended
    /// with FATAL 57P01.
    pub max_delay: Duration,
}

/// What a [`ServerConfig`] is built from: every setting, none of the shared state.
#[derive(Debug)]
pub struct ServerSettings {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub require_client_cert: bool,
    pub targets: Vec<TargetRule>,
    pub upstream: UpstreamConfig,
    pub startup_timeout: Duration,
    pub handshake_timeout: Duration,
    pub max_startup_len: usize,
    pub token_clock_skew: Duration,
    pub relay: RelayConfig,
    pub shutdown: ShutdownConfig,
    pub proxy_protocol: bool,
    pub limits: LimitsConfig,
    pub cancel: Arc<CancelState>,
    pub identity: Option<IdentityVerifier>,
}

impl ServerConfig {
    /// The smallest startup limit between the proxies.
    pub const MIN_STARTUP_LEN: usize = 16 * 1024;

    pub fn new(settings: ServerSettings) -> ServerConfig {
        let metrics = Metrics::new();
        metrics.allowlist_targets.set(settings.targets.len() as i64);
        ServerConfig {
            tls: RwLock::new(settings.tls),
            require_client_cert: settings.require_client_cert,
            allowlist: RwLock::new(Arc::new(Allowlist::new(settings.targets.clone()))),
            static_rules: RwLock::new(Arc::new(settings.targets)),
            upstream: settings.upstream,
            startup_timeout: settings.startup_timeout,
            handshake_timeout: settings.handshake_timeout,
            max_startup_len: settings.max_startup_len,
            token_clock_skew: settings.token_clock_skew,
            relay: settings.relay,
            shutdown: settings.shutdown,
            proxy_protocol: settings.proxy_protocol,
            gate: ConnectionGate::new(settings.limits.max_connections),
            callers: CallerLimiter::new(
                settings.limits.per_caller_per_second,
                settings.limits.per_caller_burst,
            ),
            limits: settings.limits,
            cancel: settings.cancel,
            identity: settings.identity,
            metrics,
            phase: Phase::default(),
        }
    }

    pub fn allowlist(&self) -> Arc<Allowlist> {
        self.allowlist.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub fn set_allowlist(&self, allowlist: Allowlist) {
        self.metrics.allowlist_targets.set(allowlist.len() as i64);
        *self.allowlist.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(allowlist);
    }

    pub fn static_rules(&self) -> Arc<Vec<TargetRule>> {
        self.static_rules.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Open connections: sessions, handshakes and cancels.
    pub fn open_connections(&self) -> usize {
        self.gate.open()
    }

    /// Applies a reloaded configuration: new certificates for new connections, and new static
    /// targets. Targets that discovery contributed stay until its next refresh; open sessions
    /// are not touched.
    pub fn reload(&self, tls: Option<Arc<rustls::ServerConfig>>, static_rules: Vec<TargetRule>) {
        *self.tls.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = tls;
        let previous = self.allowlist();
        let old_static = self.static_rules();
        let mut rules = static_rules.clone();
        for rule in previous.rules() {
            let was_static = old_static.iter().any(|r| r.endpoint == rule.endpoint);
            if !was_static && !rules.iter().any(|r| r.endpoint == rule.endpoint) {
                rules.push(rule.clone());
            }
        }
        *self.static_rules.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(static_rules);
        self.set_allowlist(Allowlist::new(rules));
    }
}
