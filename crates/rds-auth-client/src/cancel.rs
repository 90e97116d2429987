//! Query cancel at the client proxy.
//!
//! A client cancels by opening a new connection with a CancelRequest that carries only the
//! pid and the key from its BackendKeyData: no user, no database, no target. So every session
//! registers its key here, and a cancel finds its way back:
//!
//! - the client sees the real backend pid (applications compare it with the pid in NOTIFY
//!   messages and `pg_backend_pid()`) and a key of our own: 4 random bytes in protocol 3.0,
//!   32 in 3.2, unique across every target of this process;
//! - the entry holds the server proxy's key, which is the sealed cancel token only a server
//!   proxy can open, and the route to send it back along;
//! - the entry goes when the session ends, so a cancel for a finished session is dropped, and
//!   never reaches whatever runs next.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use std::net::SocketAddr;

use bytes::Bytes;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rds_auth_codec::ProtocolVersion;
use rds_auth_codec::backend::BackendKeyData;
use rds_auth_startup::Endpoint;
use rds_auth_upstream::UpstreamConfig;

use rds_auth_codec::StartupPacket;
use rds_auth_codec::startup::CancelRequest;
use rds_auth_io::{PgStream, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use tracing::debug;

use crate::ServerProxy;
use crate::session::connect_server_proxy;

/// How long a cancel may take through the server proxy and the database.
pub(crate) const CANCEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Sends a client's cancel on to where its session is, then closes the client's socket, but
/// only after the far side has closed its own: libpq waits for that, so that a late cancel
/// cannot hit the next query. Nothing is ever answered.
pub(crate) async fn forward<S>(
    client: PgStream<Transport<S>>,
    request: CancelRequest,
    registry: &CancelRegistry,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(route) = registry.route(request.pid, &request.key) else {
        debug!(pid = request.pid, "cancel for an unknown, finished or rate-limited session: dropped");
        return;
    };
    let started = std::time::Instant::now();
    let delivered = match route {
        CancelRoute::ServerProxy { proxy, key } => {
            let exchange = async {
                let mut server = connect_server_proxy(&proxy).await.ok()?;
                let packet = StartupPacket::CancelRequest(CancelRequest { pid: request.pid, key });
                server.send(&packet.to_bytes()).await.ok()?;
                // The server proxy never answers either; it closes once the database has.
                let mut sink = [0u8; 64];
                loop {
                    match server.get_mut().read(&mut sink).await {
                        Ok(0) => return Some(()),
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Some(()),
                        Err(_) => return None,
                    }
                }
            };
            tokio::time::timeout(CANCEL_TIMEOUT, exchange).await.ok().flatten().is_some()
        }
        CancelRoute::Direct { addr, endpoint, key, upstream } => {
            let request = CancelRequest { pid: key.pid, key: key.key };
            rds_auth_upstream::send_cancel(addr, &endpoint, request, &upstream.tls, CANCEL_TIMEOUT)
                .await
                .is_ok()
        }
    };
    debug!(
        pid = request.pid,
        delivered,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "cancel forwarded"
    );
    drop(client);
}

/// Where a session's cancels go.
#[derive(Debug, Clone)]
pub(crate) enum CancelRoute {
    /// To a server proxy, over the same mutual TLS as sessions, with its sealed key.
    ServerProxy { proxy: Arc<ServerProxy>, key: Bytes },
    /// Direct mode: to the database itself, at the address the session used, inside TLS.
    Direct { addr: SocketAddr, endpoint: Endpoint, key: BackendKeyData, upstream: Arc<UpstreamConfig> },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    pid: u32,
    key: Bytes,
}

/// The cancel keys of every open session.
#[derive(Debug)]
pub struct CancelRegistry {
    entries: Mutex<HashMap<ClientKey, CancelRoute>>,
    limiter: DefaultKeyedRateLimiter<ClientKey>,
}

impl Default for CancelRegistry {
    fn default() -> CancelRegistry {
        CancelRegistry::new()
    }
}

impl CancelRegistry {
    /// Each session key may be used ten times a second, with bursts of twenty: a person never
    /// notices, and one key cannot be hammered.
    pub fn new() -> CancelRegistry {
        let per_second = NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN);
        CancelRegistry {
            entries: Mutex::new(HashMap::new()),
            limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientKey, CancelRoute>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a session and returns the key its client sees, and a guard that unregisters
    /// it when dropped.
    pub(crate) fn register(
        self: &Arc<Self>,
        pid: u32,
        version: ProtocolVersion,
        route: CancelRoute,
    ) -> (Bytes, CancelGuard) {
        let len = if version.has_long_cancel_keys() { 32 } else { 4 };
        let mut entries = self.lock();
        loop {
            let key: Bytes = (0..len).map(|_| rand::random::<u8>()).collect::<Vec<u8>>().into();
            let client_key = ClientKey { pid, key: key.clone() };
            if let std::collections::hash_map::Entry::Vacant(slot) = entries.entry(client_key.clone()) {
                slot.insert(route);
                return (key, CancelGuard { registry: self.clone(), key: client_key });
            }
        }
    }

    /// The route of a live session's cancel, if the key is known and not over its rate.
    pub(crate) fn route(&self, pid: u32, key: &Bytes) -> Option<CancelRoute> {
        let client_key = ClientKey { pid, key: key.clone() };
        let route = self.lock().get(&client_key).cloned()?;
        if self.limiter.check_key(&client_key).is_err() {
            return None;
        }
        if self.limiter.len() > 10_000 {
            self.limiter.retain_recent();
        }
        Some(route)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Unregisters a session's cancel key when the session ends.
#[derive(Debug)]
pub(crate) struct CancelGuard {
    registry: Arc<CancelRegistry>,
    key: ClientKey,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustls::pki_types::ServerName;

    use super::*;

    fn route() -> CancelRoute {
        let roots = rustls::RootCertStore::empty();
        let tls = rustls::ClientConfig::builder_with_provider(rds_auth_io::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        CancelRoute::ServerProxy {
            proxy: Arc::new(ServerProxy {
                name: "default".into(),
                address: crate::ProxyAddress::Fixed("127.0.0.1:1".into()),
                server_name: ServerName::try_from("proxy.test").unwrap(),
                tls: Arc::new(tls),
                connect_timeout: Duration::from_secs(1),
                identity: None,
                warm: crate::WarmPool::new(crate::WarmSettings::OFF),
            }),
            key: Bytes::from_static(b"sealed"),
        }
    }

    #[test]
    fn keys_follow_the_protocol_and_vanish_with_the_session() {
        let registry = Arc::new(CancelRegistry::new());
        let (short, guard) = registry.register(42, ProtocolVersion::V3_0, route());
        assert_eq!(short.len(), 4);
        let (long, _long_guard) = registry.register(42, ProtocolVersion::V3_2, route());
        assert_eq!(long.len(), 32);
        assert!(registry.route(42, &short).is_some());
        assert!(registry.route(43, &short).is_none(), "the pid is part of the key");
        drop(guard);
        assert!(registry.route(42, &short).is_none(), "a finished session's key is gone");
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn one_key_is_rate_limited_others_are_not() {
        let registry = Arc::new(CancelRegistry::new());
        let (key, _guard) = registry.register(1, ProtocolVersion::V3_0, route());
        let allowed = (0..100).filter(|_| registry.route(1, &key).is_some()).count();
        assert!((20..30).contains(&allowed), "{allowed}");
        let sessions: Vec<_> =
            (0..50).map(|pid| registry.register(pid + 100, ProtocolVersion::V3_0, route())).collect();
        for (i, (key, _)) in sessions.iter().enumerate() {
            assert!(registry.route(i as u32 + 100, key).is_some(), "50 sessions cancelled at once all pass");
        }
    }
}
