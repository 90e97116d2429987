use std::sync::{Arc, RwLock};
use std::time::Duration;

use rds_auth_io::relay::RelayConfig;
use rds_auth_upstream::UpstreamConfig;

use crate::{Allowlist, CancelState};

/// Everything the server proxy needs to run, already validated by the caller.
#[derive(Debug)]
pub struct ServerConfig {
    /// The listener's TLS configuration. `None` accepts plaintext only, for a deployment
    /// reached solely through a port-forward; it must be chosen explicitly.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Whether a client certificate is required (the TLS configuration enforces it; this
    /// records it for logs and identity checks).
    pub require_client_cert: bool,
    /// The allowed targets. Replaced whole on reload, never edited in place.
    pub allowlist: RwLock<Arc<Allowlist>>,
    pub upstream: UpstreamConfig,
    /// How long a client may take to finish its startup packet, TLS included.
    pub startup_timeout: Duration,
    /// How long a session may take from its StartupMessage to ReadyForQuery: connecting to
    /// the database, TLS, authentication and the startup tail.
    pub handshake_timeout: Duration,
    /// The startup limit on the leg between the proxies. It must hold a token with a session
    /// token in it on top of whatever the client sent, so it is larger than Postgres's 10 000.
    pub max_startup_len: usize,
    /// How far in the future a token's signing time may be before it is refused as "not yet
    /// valid": the laptop's clock may run a little fast.
    pub token_clock_skew: Duration,
    pub relay: RelayConfig,
    /// How long open sessions may continue after shutdown starts before they are ended.
    pub drain_timeout: Duration,
    /// Seals and opens cancel keys, and limits cancels per session.
    pub cancel: Arc<CancelState>,
}

impl ServerConfig {
    /// The smallest startup limit between the proxies.
    pub const MIN_STARTUP_LEN: usize = 16 * 1024;

    pub fn allowlist(&self) -> Arc<Allowlist> {
        self.allowlist.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub fn set_allowlist(&self, allowlist: Allowlist) {
        *self.allowlist.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(allowlist);
    }
}
