use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;

use crate::{AuthToken, IdentityProof, TokenError, TokenRequest, generate, presign_identity};

/// What makes two tokens interchangeable: the same endpoint, port, user and region, signed by
/// the same credentials.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub region: String,
    pub access_key_id: String,
}

impl CacheKey {
    fn new(request: &TokenRequest<'_>, credentials: &Credentials) -> CacheKey {
        CacheKey {
            host: request.host.to_owned(),
            port: request.port,
            user: request.user.to_owned(),
            region: request.region.to_owned(),
            access_key_id: credentials.access_key_id().to_owned(),
        }
    }
}

/// Reuses tokens while they have life left.
///
/// A token is reused while it is younger than `reuse_for`, so it still has at least
/// `TOKEN_LIFETIME - reuse_for` to live when a connection presents it, and while its
/// credentials are good for another `credential_margin`: with temporary credentials RDS also
/// checks that the session behind the token is still valid.
///
/// Identity proofs (presigned `sts:GetCallerIdentity`) are reused the same way, so the server
/// proxy, which caches STS's answer per proof, asks STS once per proof and not per connection.
#[derive(Debug)]
pub struct TokenCache {
    reuse_for: Duration,
    credential_margin: Duration,
    entries: Mutex<HashMap<CacheKey, AuthToken>>,
    /// Proofs by STS host, region and access key id.
    identities: Mutex<HashMap<(String, String, String), IdentityProof>>,
}

/// Beyond this many entries, expired ones are swept on insert.
const SWEEP_ABOVE: usize = 256;

impl TokenCache {
    pub fn new(reuse_for: Duration, credential_margin: Duration) -> TokenCache {
        TokenCache {
            reuse_for,
            credential_margin,
            entries: Mutex::new(HashMap::new()),
            identities: Mutex::new(HashMap::new()),
        }
    }

    /// A token for `request`: a cached one if it is still good at `now`, else a new one.
    pub fn get_or_generate(
        &self,
        credentials: &Credentials,
        request: &TokenRequest<'_>,
        now: SystemTime,
    ) -> Result<AuthToken, TokenError> {
        let key = CacheKey::new(request, credentials);
        self.reuse(&self.entries, key, credentials, now, AuthToken::signed_at, || {
            generate(credentials, request, now)
        })
    }

    /// An identity proof for the STS `host` in `region`: a cached one if it is still good at
    /// `now`, else a new one.
    pub fn get_or_presign_identity(
        &self,
        credentials: &Credentials,
        host: &str,
        region: &str,
        now: SystemTime,
    ) -> Result<IdentityProof, TokenError> {
        let key = (host.to_owned(), region.to_owned(), credentials.access_key_id().to_owned());
        self.reuse(&self.identities, key, credentials, now, IdentityProof::signed_at, || {
            presign_identity(credentials, host, region, now)
        })
    }

    fn reuse<K: std::hash::Hash + Eq, V: Clone>(
        &self,
        map: &Mutex<HashMap<K, V>>,
        key: K,
        credentials: &Credentials,
        now: SystemTime,
        signed_at: impl Fn(&V) -> SystemTime,
        sign: impl FnOnce() -> Result<V, TokenError>,
    ) -> Result<V, TokenError> {
        let credentials_fresh =
            credentials.expiry().is_none_or(|expiry| expiry > now + self.credential_margin);
        // A clock that went backwards makes the age an error: sign again.
        let is_fresh = |value: &V| now.duration_since(signed_at(value)).is_ok_and(|age| age < self.reuse_for);
        let mut entries = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if credentials_fresh
            && let Some(value) = entries.get(&key)
            && is_fresh(value)
        {
            return Ok(value.clone());
        }
        // Signing takes microseconds, so holding the lock makes a burst of identical
        // requests sign once instead of racing.
        let value = sign()?;
        if entries.len() >= SWEEP_ABOVE {
            entries.retain(|_, v| is_fresh(v));
        }
        entries.insert(key, value.clone());
        Ok(value)
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn creds(akid: &str, expiry: Option<SystemTime>) -> Credentials {
        Credentials::new(akid, "secret", None, expiry, "test")
    }

    const REQUEST: TokenRequest<'static> =
        TokenRequest { host: "db.example.com", port: 5432, user: "alice", region: "us-east-1" };

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn cache() -> TokenCache {
        TokenCache::new(Duration::from_secs(600), Duration::from_secs(60))
    }

    #[test]
    fn reuses_within_the_window_and_resigns_after() {
        let cache = cache();
        let c = creds("AKID1", None);
        let first = cache.get_or_generate(&c, &REQUEST, at(0)).unwrap();
        assert_eq!(cache.get_or_generate(&c, &REQUEST, at(599)).unwrap(), first);
        let later = cache.get_or_generate(&c, &REQUEST, at(600)).unwrap();
        assert_ne!(later, first);
        assert_eq!(later.signed_at(), at(600));
    }

    #[test]
    fn key_includes_user_endpoint_and_identity() {
        let cache = cache();
        let c = creds("AKID1", None);
        let base = cache.get_or_generate(&c, &REQUEST, at(0)).unwrap();
        let other_user = TokenRequest { user: "bob", ..REQUEST };
        assert_ne!(cache.get_or_generate(&c, &other_user, at(1)).unwrap(), base);
        let other_port = TokenRequest { port: 5433, ..REQUEST };
        assert_ne!(cache.get_or_generate(&c, &other_port, at(1)).unwrap(), base);
        assert_ne!(cache.get_or_generate(&creds("AKID2", None), &REQUEST, at(1)).unwrap(), base);
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn identity_proofs_are_reused_like_tokens() {
        let cache = cache();
        let c = creds("AKID1", None);
        let first =
            cache.get_or_presign_identity(&c, "sts.us-east-1.amazonaws.com", "us-east-1", at(0)).unwrap();
        let again =
            cache.get_or_presign_identity(&c, "sts.us-east-1.amazonaws.com", "us-east-1", at(599)).unwrap();
        assert_eq!(again, first);
        let other =
            cache.get_or_presign_identity(&c, "sts.eu-west-1.amazonaws.com", "eu-west-1", at(1)).unwrap();
        assert_ne!(other, first);
        assert_ne!(
            cache.get_or_presign_identity(&c, "sts.us-east-1.amazonaws.com", "us-east-1", at(600)).unwrap(),
            first
        );
        assert_eq!(cache.len(), 0, "tokens and proofs are kept apart");
    }

    #[test]
    fn expiring_credentials_and_clock_jumps_force_a_new_token() {
        let cache = cache();
        let c = creds("AKID1", Some(at(100)));
        let first = cache.get_or_generate(&c, &REQUEST, at(0)).unwrap();
        assert_eq!(cache.get_or_generate(&c, &REQUEST, at(30)).unwrap(), first);
        assert_ne!(cache.get_or_generate(&c, &REQUEST, at(50)).unwrap(), first);
        let c = creds("AKID1", None);
        let now = cache.get_or_generate(&c, &REQUEST, at(1000)).unwrap();
        assert_ne!(cache.get_or_generate(&c, &REQUEST, at(900)).unwrap(), now);
    }
}
