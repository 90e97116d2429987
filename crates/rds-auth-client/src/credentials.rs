//! AWS credentials fetched once and reused until they are about to expire.
//!
//! aws-config's credential chain fetches anew on every call: with SSO or an assumed role that
//! is one AWS API call per connection, and each answer has a new access key id, which defeats
//! the token cache. Sessions therefore ask this cache, which fetches at most once at a time,
//! bounds the fetch, and refreshes only near the expiry.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use tokio::sync::Mutex;

/// Refresh temporary credentials this long before they expire.
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Long-term keys are read again this often, in case the files or variables changed.
const LONG_TERM_REUSE: Duration = Duration::from_secs(15 * 60);
/// A fetch (an SSO or STS call, a `credential_process`) may take this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Cached {
    credentials: Credentials,
    fetched_at: SystemTime,
}

/// A caching wrapper around a credentials provider.
#[derive(Debug)]
pub struct CachedCredentials {
    inner: SharedCredentialsProvider,
    cached: Mutex<Option<Cached>>,
}

impl CachedCredentials {
    pub fn new(inner: SharedCredentialsProvider) -> CachedCredentials {
        CachedCredentials { inner, cached: Mutex::new(None) }
    }

    fn fresh(cached: &Cached, now: SystemTime) -> bool {
        match cached.credentials.expiry() {
            Some(expiry) => expiry > now + REFRESH_MARGIN,
            None => now.duration_since(cached.fetched_at).is_ok_and(|age| age < LONG_TERM_REUSE),
        }
    }

    async fn get(&self) -> Result<Credentials, CredentialsError> {
        // Held across the fetch on purpose: a burst of connections waits for one fetch.
        let mut cached = self.cached.lock().await;
        let now = SystemTime::now();
        if let Some(entry) = cached.as_ref()
            && Self::fresh(entry, now)
        {
            return Ok(entry.credentials.clone());
        }
        let credentials = tokio::time::timeout(FETCH_TIMEOUT, self.inner.provide_credentials())
            .await
            .map_err(|_| CredentialsError::provider_timed_out(FETCH_TIMEOUT))??;
        *cached = Some(Cached { credentials: credentials.clone(), fetched_at: now });
        Ok(credentials)
    }
}

impl ProvideCredentials for CachedCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.get())
    }
}

/// Wraps `provider` in a cache, as a provider of the same type.
pub fn cached(provider: SharedCredentialsProvider) -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(CachedCredentials::new(provider))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Debug)]
    struct Counting {
        calls: Arc<AtomicUsize>,
        lifetime: Option<Duration>,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let expiry = self.lifetime.map(|l| SystemTime::now() + l);
            future::ProvideCredentials::ready(Ok(Credentials::new(
                format!("ASIA{n}"),
                "secret",
                Some("token".into()),
                expiry,
                "test",
            )))
        }
    }

    #[tokio::test]
    async fn a_burst_fetches_once_and_near_expiry_refetches() {
        let calls = Arc::new(AtomicUsize::new(0));
        let provider = cached(SharedCredentialsProvider::new(Counting {
            calls: calls.clone(),
            lifetime: Some(Duration::from_secs(3600)),
        }));
        let all = futures_util::future::join_all((0..20).map(|_| provider.provide_credentials())).await;
        assert!(all.iter().all(|c| c.as_ref().unwrap().access_key_id() == "ASIA0"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = Arc::new(AtomicUsize::new(0));
        let provider = cached(SharedCredentialsProvider::new(Counting {
            calls: calls.clone(),
            lifetime: Some(Duration::from_secs(60)),
        }));
        provider.provide_credentials().await.unwrap();
        provider.provide_credentials().await.unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "credentials within the margin of expiry are fetched again"
        );
    }
}
