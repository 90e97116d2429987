//! Query cancel across server-proxy replicas, with no shared store.
//!
//! When a database sends BackendKeyData, the server proxy seals everything a cancel needs
//! into the key it hands the client proxy, on the leg between the proxies that always speaks
//! protocol 3.2 (keys of up to 256 bytes):
//!
//! ```text
//! key = nonce (12) ‖ AES-256-GCM( version ‖ backend address ‖ pid ‖ secret ‖ target id ‖ owner id ) ‖ tag (16)
//! ```
//!
//! Any replica holding the shared key can open it, so a cancel may land anywhere behind a load
//! balancer. The client proxy never learns the database's address or secret; a key it did not
//! receive cannot be forged or edited (the tag fails); a key is honoured only for the client
//! certificate it was issued to (owner id) and only while its target is still allowed; and a
//! key for a backend that has exited is harmless, because PostgreSQL checks its own secret and
//! a new backend with the same pid has another one.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use aws_lc_rs::digest;
use bytes::{BufMut, Bytes, BytesMut};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rds_auth_codec::startup::CancelRequest;
use rds_auth_io::tls::PeerIdentity;
use rds_auth_io::{PgStream, Transport};
use rds_auth_startup::Endpoint;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::info;

use crate::ServerConfig;

const VERSION: u8 = 1;
const AAD: &[u8] = b"rds-auth-proxy cancel key v1";
const TAG_LEN: usize = 16;
/// The longest database secret a key carries: PostgreSQL 18 sends 32 bytes in protocol 3.2.
const MAX_SECRET: usize = 32;

/// What a cancel needs: where the session's backend is, its key, and who may cancel it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CancelClosure {
    /// The address the session actually connected to, not a fresh DNS answer.
    pub(crate) backend: SocketAddr,
    pub(crate) pid: u32,
    pub(crate) secret: Bytes,
    pub(crate) target: [u8; 8],
    pub(crate) owner: [u8; 16],
}

/// A short, stable id for a target; the replica that serves a cancel looks the endpoint up
/// in its own allowlist, so a key never carries a host name.
pub(crate) fn target_id(endpoint: &Endpoint) -> [u8; 8] {
    let hash = digest::digest(&digest::SHA256, endpoint.to_string().as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&hash.as_ref()[..8]);
    id
}

/// Who owns a session: the client certificate's subject, hashed.
pub(crate) fn owner_id(identity: Option<&PeerIdentity>) -> [u8; 16] {
    let subject = identity.map(|i| i.subject.as_str()).unwrap_or_default();
    let hash = digest::digest(&digest::SHA256, subject.as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&hash.as_ref()[..16]);
    id
}

/// The keys that seal and open cancel keys. The first seals; all are tried when opening, so
/// a key can be rotated by adding the new one first and removing the old one later.
pub struct CancelKeys {
    keys: Vec<RandomizedNonceKey>,
}

impl std::fmt::Debug for CancelKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelKeys").field("keys", &self.keys.len()).finish()
    }
}

/// A cancel key secret that is not 32 bytes.
#[derive(Debug, thiserror::Error)]
#[error("a cancel key must be 32 bytes, written as 64 hexadecimal digits")]
pub struct CancelKeyError;

impl CancelKeys {
    /// Parses a key written as 64 hexadecimal digits (`openssl rand -hex 32`), surrounding
    /// whitespace ignored.
    pub fn parse_hex(text: &str) -> Result<[u8; 32], CancelKeyError> {
        let text = text.trim();
        if text.len() != 64 || !text.is_ascii() {
            return Err(CancelKeyError);
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| CancelKeyError)?;
        }
        Ok(key)
    }
}

impl CancelKeys {
    pub fn new(secrets: &[[u8; 32]]) -> Result<CancelKeys, CancelKeyError> {
        if secrets.is_empty() {
            return Err(CancelKeyError);
        }
        let keys = secrets
            .iter()
            .map(|s| RandomizedNonceKey::new(&AES_256_GCM, s).map_err(|_| CancelKeyError))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CancelKeys { keys })
    }

    /// A key of this process only: cancels work only when they reach the same replica.
    pub fn random() -> CancelKeys {
        let secret: [u8; 32] = rand::random();
        CancelKeys {
            keys: vec![RandomizedNonceKey::new(&AES_256_GCM, &secret).expect("32 bytes is the key size")],
        }
    }

    pub(crate) fn seal(&self, closure: &CancelClosure) -> Option<Bytes> {
        if closure.secret.len() > MAX_SECRET {
            return None;
        }
        let mut plain = BytesMut::with_capacity(64);
        plain.put_u8(VERSION);
        let ip = match closure.backend.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        plain.put_slice(&ip.octets());
        plain.put_u16(closure.backend.port());
        plain.put_u32(closure.pid);
        plain.put_u8(closure.secret.len() as u8);
        plain.put_slice(&closure.secret);
        plain.put_slice(&closure.target);
        plain.put_slice(&closure.owner);
        let mut in_out = plain.to_vec();
        let nonce = self.keys[0].seal_in_place_append_tag(Aad::from(AAD), &mut in_out).ok()?;
        let mut sealed = BytesMut::with_capacity(NONCE_LEN + in_out.len());
        sealed.put_slice(nonce.as_ref());
        sealed.put_slice(&in_out);
        Some(sealed.freeze())
    }

    pub(crate) fn open(&self, sealed: &[u8]) -> Option<CancelClosure> {
        if sealed.len() < NONCE_LEN + TAG_LEN + 1 {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        for key in &self.keys {
            let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
            let mut in_out = ciphertext.to_vec();
            if let Ok(plain) = key.open_in_place(nonce, Aad::from(AAD), &mut in_out) {
                return parse(plain);
            }
        }
        None
    }
}

fn parse(plain: &[u8]) -> Option<CancelClosure> {
    let (&version, rest) = plain.split_first()?;
    if version != VERSION {
        return None;
    }
    let ip: [u8; 16] = rest.get(..16)?.try_into().ok()?;
    let port = u16::from_be_bytes(rest.get(16..18)?.try_into().ok()?);
    let pid = u32::from_be_bytes(rest.get(18..22)?.try_into().ok()?);
    let secret_len = usize::from(*rest.get(22)?);
    let secret = Bytes::copy_from_slice(rest.get(23..23 + secret_len)?);
    let rest = rest.get(23 + secret_len..)?;
    let target: [u8; 8] = rest.get(..8)?.try_into().ok()?;
    let owner: [u8; 16] = rest.get(8..24)?.try_into().ok()?;
    let ip = Ipv6Addr::from(ip);
    let ip = ip.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(ip));
    Some(CancelClosure { backend: SocketAddr::new(ip, port), pid, secret, target, owner })
}

/// Limits cancels per session key. The key is the backend and pid, so a user cancelling 50
/// sessions at once is never slowed, while one session cannot be hammered.
#[derive(Debug)]
pub(crate) struct CancelLimiter {
    limiter: DefaultKeyedRateLimiter<(SocketAddr, u32)>,
}

impl CancelLimiter {
    pub(crate) fn new(per_second: NonZeroU32, burst: NonZeroU32) -> CancelLimiter {
        CancelLimiter { limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)) }
    }

    pub(crate) fn allow(&self, closure: &CancelClosure) -> bool {
        let allowed = self.limiter.check_key(&(closure.backend, closure.pid)).is_ok();
        if self.limiter.len() > 10_000 {
            self.limiter.retain_recent();
        }
        allowed
    }
}

/// How long a cancel may take upstream, connection included.
pub(crate) const UPSTREAM_CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server proxy shares between sessions for cancels.
#[derive(Debug)]
pub struct CancelState {
    pub(crate) keys: CancelKeys,
    pub(crate) limiter: CancelLimiter,
}

impl CancelState {
    /// `per_second` and `burst` limit cancels per session (backend and pid).
    pub fn new(keys: CancelKeys, per_second: NonZeroU32, burst: NonZeroU32) -> Arc<CancelState> {
        Arc::new(CancelState { keys, limiter: CancelLimiter::new(per_second, burst) })
    }
}

/// Serves a cancel from a client proxy: opens the key, checks that the caller owns the
/// session and that the target is still allowed, then cancels at the exact backend the session
/// used. The caller's connection is closed only after the database has closed its own.
/// Nothing is ever answered, whatever happens.
pub(crate) async fn serve<S>(stream: PgStream<Transport<S>>, request: CancelRequest, config: &ServerConfig)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let outcome = route(&stream, &request, config).await;
    crate::metrics::Metrics::outcome(&config.metrics.cancels, outcome);
    info!(outcome, pid = request.pid, "cancel request");
    let mut stream = stream;
    let _ = tokio::io::AsyncWriteExt::shutdown(stream.get_mut()).await;
}

async fn route<S>(
    stream: &PgStream<Transport<S>>,
    request: &CancelRequest,
    config: &ServerConfig,
) -> &'static str
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if config.tls().is_some() && !stream.get_ref().is_tls() {
        return "plaintext_refused";
    }
    let Some(closure) = config.cancel.keys.open(&request.key) else { return "unknown_key" };
    if closure.pid != request.pid {
        return "unknown_key";
    }
    let identity =
        stream.get_ref().peer_certificates().and_then(|c| c.first()).and_then(|c| PeerIdentity::from_der(c));
    if closure.owner != owner_id(identity.as_ref()) {
        info!(
            pid = closure.pid,
            caller = identity.as_ref().map(|i| i.name()).unwrap_or("none"),
            "cancel refused: the caller does not own the session"
        );
        return "not_owner";
    }
    if !config.cancel.limiter.allow(&closure) {
        return "rate_limited";
    }
    let allowlist = config.allowlist();
    let Some(endpoint) = allowlist.by_target_id(&closure.target) else { return "target_not_allowed" };
    let request = CancelRequest { pid: closure.pid, key: closure.secret.clone() };
    match rds_auth_upstream::send_cancel(
        closure.backend,
        endpoint,
        request,
        &config.upstream.tls,
        UPSTREAM_CANCEL_TIMEOUT,
    )
    .await
    {
        Ok(()) => "sent",
        Err(e) => {
            info!(error = %e, "cancel could not reach the database");
            "upstream_failed"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closure() -> CancelClosure {
        CancelClosure {
            backend: "10.1.2.3:5432".parse().unwrap(),
            pid: 4242,
            secret: Bytes::from_static(&[9, 8, 7, 6]),
            target: [1; 8],
            owner: [2; 16],
        }
    }

    #[test]
    fn seal_and_open() {
        let keys = CancelKeys::new(&[[7; 32]]).unwrap();
        let sealed = keys.seal(&closure()).unwrap();
        assert!(sealed.len() <= 256, "fits a protocol 3.2 key: {}", sealed.len());
        assert_eq!(keys.open(&sealed), Some(closure()));
        // Nothing of the closure shows through.
        assert!(!sealed.windows(4).any(|w| w == [9, 8, 7, 6]));
        let v6 = CancelClosure { backend: "[2600:1f18::7]:6432".parse().unwrap(), ..closure() };
        assert_eq!(keys.open(&keys.seal(&v6).unwrap()), Some(v6));
    }

    #[test]
    fn forged_edited_or_foreign_keys_do_not_open() {
        let keys = CancelKeys::new(&[[7; 32]]).unwrap();
        let sealed = keys.seal(&closure()).unwrap();
        for i in 0..sealed.len() {
            let mut edited = sealed.to_vec();
            edited[i] ^= 1;
            assert_eq!(keys.open(&edited), None, "edited byte {i}");
        }
        assert_eq!(keys.open(&sealed[..sealed.len() - 1]), None);
        assert_eq!(keys.open(&[0; 4]), None);
        assert_eq!(CancelKeys::new(&[[8; 32]]).unwrap().open(&sealed), None);
    }

    #[test]
    fn rotation_opens_keys_sealed_with_the_old_key() {
        let old = CancelKeys::new(&[[1; 32]]).unwrap();
        let rotated = CancelKeys::new(&[[2; 32], [1; 32]]).unwrap();
        assert_eq!(rotated.open(&old.seal(&closure()).unwrap()), Some(closure()));
    }

    #[test]
    fn hex_keys() {
        let text = "00ff".repeat(16);
        assert_eq!(CancelKeys::parse_hex(&format!("{text}\n")).unwrap()[..2], [0, 255]);
        assert!(CancelKeys::parse_hex("abc").is_err());
        assert!(CancelKeys::parse_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn limiter_is_per_session() {
        let limiter = CancelLimiter::new(NonZeroU32::new(1).unwrap(), NonZeroU32::new(2).unwrap());
        let a = closure();
        let b = CancelClosure { pid: 1, ..closure() };
        assert!(limiter.allow(&a));
        assert!(limiter.allow(&a));
        assert!(!limiter.allow(&a));
        assert!(limiter.allow(&b));
    }
}
