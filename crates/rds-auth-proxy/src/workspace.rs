//! What `connect`, `list` and `doctor` share: the accounts' credentials, discovery, and the
//! catalog of targets with its cache.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::provider::SharedCredentialsProvider;
use indicatif::{ProgressBar, ProgressStyle};
use miette::miette;
use rds_auth_cli::config::{ConfigError, Loaded};
use rds_auth_discovery::{Discovery, DiscoveryReport};
use tracing::{info, warn};

use crate::catalog::{self, Cache, Entry};
use crate::config::{self, Settings};

/// Discovery and the settings it was made from; cheap to clone.
#[derive(Clone)]
pub(crate) struct Workspace {
    settings: Arc<Settings>,
    discovery: Arc<Discovery>,
}

impl Workspace {
    pub(crate) async fn new(loaded: &Loaded<Settings>) -> Result<Workspace, ConfigError> {
        let discovery = Discovery::new(config::discovery_config(loaded)?).await;
        Ok(Workspace { settings: Arc::new(loaded.value.clone()), discovery: Arc::new(discovery) })
    }

    pub(crate) fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    pub(crate) fn discovery_enabled(&self) -> bool {
        config::discovery_enabled(&self.settings)
    }

    /// The credentials that sign an account's tokens, and how to name them in hints.
    pub(crate) fn credentials(&self, account: &str) -> miette::Result<(SharedCredentialsProvider, String)> {
        let provider = self.discovery.credentials(account).ok_or_else(|| {
            miette!(help = "add an [accounts.<name>] section for it", "no account called {account:?}")
        })?;
        let label = match (account, self.settings.accounts.get(account), &self.settings.aws.profile) {
            (config::DEFAULT_ACCOUNT, None, Some(profile)) => format!("profile {profile}"),
            (config::DEFAULT_ACCOUNT, None, None) => "the default AWS credential chain".to_owned(),
            (_, Some(settings), _) => match (&settings.role_arn, &settings.profile) {
                (Some(role), _) => format!("account {account}, role {role}"),
                (None, Some(profile)) => format!("account {account}, profile {profile}"),
                (None, None) => format!("account {account}, the default AWS credential chain"),
            },
            (_, None, _) => format!("account {account}"),
        };
        Ok((provider, label))
    }

    /// Runs discovery (with a spinner on a terminal), stores the cache, and returns it.
    pub(crate) async fn refresh_cache(&self, spinner: bool) -> Cache {
        let progress = spinner.then(spinner_bar).flatten();
        let report: DiscoveryReport = self.discovery.discover().await;
        if let Some(progress) = progress {
            progress.finish_and_clear();
        }
        let cache = Cache::from_report(&self.settings, &report);
        for failure in &cache.failures {
            warn!(failure = %failure, "discovery failed in part");
        }
        match cache.store() {
            Ok(()) => info!(targets = cache.targets.len(), "discovery cache refreshed"),
            Err(e) => {
                warn!(error = %e, path = %catalog::cache_path().display(), "cannot write the discovery cache")
            }
        }
        cache
    }

    /// The catalog for `connect`: static targets and cached discovered ones, discovering now
    /// only when there is no cache and discovery is on, or a named target is missing. A failed
    /// discovery never blocks static targets.
    pub(crate) async fn catalog_for(
        &self,
        loaded: &Loaded<Settings>,
        names: &[String],
    ) -> Result<(Vec<Entry>, Option<Cache>), ConfigError> {
        let mut cache = Cache::load(&self.settings);
        let mut entries =
            catalog::build(loaded, cache.as_ref().map(|c| c.targets.as_slice()).unwrap_or_default())?;
        let missing = names.iter().any(|n| !entries.iter().any(|e| &e.name == n));
        if self.discovery_enabled() && (cache.is_none() || missing) {
            let fresh = self.refresh_cache(std::io::stderr().is_terminal()).await;
            entries = catalog::build(loaded, &fresh.targets)?;
            cache = Some(fresh);
        }
        Ok((entries, cache))
    }

    /// The catalog for `list`: refreshed when `refresh`, or when the cache is older than its
    /// TTL.
    pub(crate) async fn catalog(
        &self,
        loaded: &Loaded<Settings>,
        refresh: bool,
    ) -> Result<(Vec<Entry>, Option<Cache>), ConfigError> {
        let mut cache = Cache::load(&self.settings);
        let stale = cache.as_ref().is_none_or(|c| c.age() > self.settings.discovery.cache_ttl);
        if self.discovery_enabled() && (refresh || stale) {
            cache = Some(self.refresh_cache(std::io::stderr().is_terminal()).await);
        }
        let entries =
            catalog::build(loaded, cache.as_ref().map(|c| c.targets.as_slice()).unwrap_or_default())?;
        Ok((entries, cache))
    }
}

fn spinner_bar() -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
        bar.set_style(style);
    }
    bar.set_message("discovering databases...");
    bar.enable_steady_tick(Duration::from_millis(100));
    Some(bar)
}
