use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;

use crate::{AuthToken, TokenError, TokenRequest, generate};

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
#[derive(Debug)]
pub struct TokenCache {
    reuse_for: Duration,
    credential_margin: Duration,
    entries: Mutex<HashMap<CacheKey, AuthToken>>,
}

/// Beyond this many entries, expired ones are swept on insert.
const SWEEP_ABOVE: usize = 256;

impl TokenCache {
    pub fn new(reuse_for: Duration, credential_margin: Duration) -> TokenCache {
        TokenCache { reuse_for, credential_margin, entries: Mutex::new(HashMap::new()) }
    }

    /// A token for `request`: a cached one if it is still good at `now`, else a new one.
    pub fn get_or_generate(
        &self,
        credentials: &Credentials,
        request: &TokenRequest<'_>,
        now: SystemTime,
    ) -> Result<AuthToken, TokenError> {
        let key = CacheKey::new(request, credentials);
        let credentials_fresh =
            credentials.expiry().is_none_or(|expiry| expiry > now + self.credential_margin);
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if credentials_fresh
            && let Some(token) = entries.get(&key)
            && self.is_fresh(token, now)
        {
            return Ok(token.clone());
        }
        // Signing takes microseconds, so holding the lock makes a burst of identical
        // requests sign once instead of racing.
        let token = generate(credentials, request, now)?;
        if entries.len() >= SWEEP_ABOVE {
            entries.retain(|_, t| self.is_fresh(t, now));
        }
        entries.insert(key, token.clone());
        Ok(token)
    }

    fn is_fresh(&self, token: &AuthToken, now: SystemTime) -> bool {
        // A clock that went backwards makes the age an error: sign again.
        now.duration_since(token.signed_at()).is_ok_and(|age| age < self.reuse_for)
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
