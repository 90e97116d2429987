//! Each account's AWS configuration and the credentials provider that signs for it.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{self, ProvideCredentials, SharedCredentialsProvider, future};
use aws_types::SdkConfig;
use aws_types::region::Region;
use tokio::sync::Mutex;

/// Where an account's credentials come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountCredentials {
    /// The default chain: environment, profile files (`AWS_PROFILE`), SSO, web identity,
    /// container and instance metadata.
    Default,
    /// A named profile from the shared config and credentials files.
    Profile(String),
    /// A role assumed with STS on top of the default chain, or of `source_profile` when set.
    AssumeRole {
        role_arn: String,
        external_id: Option<String>,
        session_name: String,
        source_profile: Option<String>,
    },
}

/// Shared config and credentials files to read instead of `~/.aws/config` and
/// `~/.aws/credentials`; a file left `None` is the default one. Tests use it to stay away from
/// the environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileFiles {
    pub config: Option<PathBuf>,
    pub credentials: Option<PathBuf>,
}

impl ProfileFiles {
    #[allow(deprecated, reason = "aws-config names the file set only through these aliases")]
    fn to_aws(&self) -> aws_config::profile::profile_file::ProfileFiles {
        use aws_config::profile::profile_file::{ProfileFileKind, ProfileFiles as AwsProfileFiles};
        let mut builder = AwsProfileFiles::builder();
        builder = match &self.config {
            Some(path) => builder.with_file(ProfileFileKind::Config, path),
            None => builder.include_default_config_file(true),
        };
        builder = match &self.credentials {
            Some(path) => builder.with_file(ProfileFileKind::Credentials, path),
            None => builder.include_default_credentials_file(true),
        };
        builder.build()
    }
}

/// How long a single API call attempt, and a call with its retries, may take. aws-config sets
/// only a connect timeout by default, which would let a silent endpoint hang discovery.
fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_millis(3100))
        .operation_attempt_timeout(Duration::from_secs(20))
        .operation_timeout(Duration::from_secs(60))
        .build()
}

/// The SDK configuration of one account, whose credentials provider is cached.
///
/// `home_region` is where STS is asked for an assumed role; the RDS clients set their own
/// region per call.
pub(crate) async fn account_config(
    credentials: &AccountCredentials,
    home_region: &str,
    endpoint_url: Option<&str>,
    profile_files: Option<&ProfileFiles>,
) -> SdkConfig {
    let loader = |profile: Option<&str>| {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(home_region.to_owned()))
            .timeout_config(timeouts());
        if let Some(profile) = profile {
            loader = loader.profile_name(profile);
        }
        if let Some(url) = endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(files) = profile_files {
            loader = loader.profile_files(files.to_aws());
        }
        loader
    };
    // A named profile is used alone: the default chain would fall back to the environment
    // or instance metadata when the profile is missing, and sign with someone else's keys.
    let profile_only = |profile: &str| {
        let provider_config = ProviderConfig::without_region()
            .with_region(Some(Region::new(home_region.to_owned())))
            .with_timeout_config(timeouts());
        let mut builder =
            ProfileFileCredentialsProvider::builder().configure(&provider_config).profile_name(profile);
        if let Some(files) = profile_files {
            builder = builder.profile_files(files.to_aws());
        }
        builder.build()
    };
    let (base, inner) = match credentials {
        AccountCredentials::Default => {
            let base = loader(None).load().await;
            let inner = base.credentials_provider();
            (base, inner)
        }
        AccountCredentials::Profile(profile) => {
            let base = loader(Some(profile)).credentials_provider(profile_only(profile)).load().await;
            let inner = base.credentials_provider();
            (base, inner)
        }
        AccountCredentials::AssumeRole { role_arn, external_id, session_name, source_profile } => {
            let base = match source_profile {
                Some(profile) => {
                    loader(Some(profile)).credentials_provider(profile_only(profile)).load().await
                }
                None => loader(None).load().await,
            };
            let mut builder =
                AssumeRoleProvider::builder(role_arn.clone()).session_name(session_name.clone());
            if let Some(external_id) = external_id {
                builder = builder.external_id(external_id.clone());
            }
            let provider = builder.configure(&base).build().await;
            (base, Some(SharedCredentialsProvider::new(provider)))
        }
    };
    let cached = SharedCredentialsProvider::new(CachedCredentials::new(inner));
    base.into_builder().credentials_provider(cached).build()
}

/// Credentials kept until shortly before they expire, fetched by one caller at a time, so that
/// a burst of connections makes one STS call, not one each.
pub(crate) struct CachedCredentials {
    inner: Option<SharedCredentialsProvider>,
    cached: Mutex<Option<(Credentials, SystemTime)>>,
}

impl CachedCredentials {
    /// Credentials without an expiry (static keys, profile files) are read again after this,
    /// so rotated keys are picked up.
    const NO_EXPIRY_TTL: Duration = Duration::from_secs(15 * 60);
    /// Expiring credentials are refreshed this long before they expire.
    const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);

    pub(crate) fn new(inner: Option<SharedCredentialsProvider>) -> CachedCredentials {
        CachedCredentials { inner, cached: Mutex::new(None) }
    }

    async fn get(&self) -> provider::Result {
        let mut cached = self.cached.lock().await;
        let now = SystemTime::now();
        if let Some((credentials, refresh_at)) = &*cached
            && now < *refresh_at
        {
            return Ok(credentials.clone());
        }
        let Some(inner) = &self.inner else {
            return Err(CredentialsError::not_loaded("no credentials provider is configured"));
        };
        let fresh = inner.provide_credentials().await?;
        *cached = Some((fresh.clone(), refresh_at(now, fresh.expiry())));
        Ok(fresh)
    }
}

/// When credentials fetched at `now` should be fetched again.
fn refresh_at(now: SystemTime, expiry: Option<SystemTime>) -> SystemTime {
    let Some(expiry) = expiry else { return now + CachedCredentials::NO_EXPIRY_TTL };
    let life = expiry.duration_since(now).unwrap_or_default();
    // Short-lived credentials are refreshed halfway through their life rather than at once.
    let margin = CachedCredentials::REFRESH_BEFORE_EXPIRY.min(life / 2);
    expiry.checked_sub(margin).unwrap_or(now)
}

impl ProvideCredentials for CachedCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.get())
    }
}

impl fmt::Debug for CachedCredentials {
    /// Never prints the credentials, not even the access key id.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedCredentials").field("inner", &self.inner).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[derive(Debug)]
    struct Counting {
        calls: Arc<AtomicU32>,
        expiry: Option<SystemTime>,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            future::ProvideCredentials::ready(Ok(Credentials::new(
                format!("AKID{n}"),
                "secret",
                None,
                self.expiry,
                "test",
            )))
        }
    }

    fn counting(expiry: Option<SystemTime>) -> (CachedCredentials, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let inner = SharedCredentialsProvider::new(Counting { calls: calls.clone(), expiry });
        (CachedCredentials::new(Some(inner)), calls)
    }

    #[tokio::test]
    async fn credentials_are_fetched_once_while_fresh() {
        let (cache, calls) = counting(Some(SystemTime::now() + Duration::from_secs(3600)));
        let first = cache.provide_credentials().await.unwrap();
        let second = cache.provide_credentials().await.unwrap();
        assert_eq!(first.access_key_id(), "AKID0");
        assert_eq!(second.access_key_id(), "AKID0");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn expired_credentials_are_fetched_again() {
        let (cache, calls) = counting(Some(SystemTime::now() - Duration::from_secs(1)));
        cache.provide_credentials().await.unwrap();
        let second = cache.provide_credentials().await.unwrap();
        assert_eq!(second.access_key_id(), "AKID1");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_missing_provider_is_an_error() {
        let cache = CachedCredentials::new(None);
        assert!(cache.provide_credentials().await.is_err());
    }

    #[test]
    fn refresh_times() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(refresh_at(now, None), now + Duration::from_secs(900));
        let hour = now + Duration::from_secs(3600);
        assert_eq!(refresh_at(now, Some(hour)), hour - Duration::from_secs(300));
        let soon = now + Duration::from_secs(60);
        assert_eq!(refresh_at(now, Some(soon)), now + Duration::from_secs(30));
        let past = now - Duration::from_secs(60);
        assert_eq!(refresh_at(now, Some(past)), past);
    }

    #[tokio::test]
    async fn debug_prints_no_credentials() {
        let (cache, _) = counting(None);
        cache.provide_credentials().await.unwrap();
        let text = format!("{cache:?}");
        assert!(!text.contains("secret") && !text.contains("AKID"), "{text}");
    }
}
