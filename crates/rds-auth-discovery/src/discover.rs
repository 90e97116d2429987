//! Listing every account and region: the RDS calls, in parallel, and the report.

use std::collections::HashMap;
use std::fmt;
use std::time::Instant;

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_rds::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_rds::types::{DbCluster, DbClusterEndpoint, DbInstance, Filter};
use aws_types::SdkConfig;
use aws_types::region::Region;
use futures_util::future::join_all;

use crate::credentials::{AccountCredentials, ProfileFiles, account_config};
use crate::error::error_chain;
use crate::target::{
    DiscoveredTarget, Origin, POSTGRES_ENGINES, Ranked, assign_unique_names, from_cluster,
    from_custom_endpoint, from_instance, is_postgres,
};
use crate::{DiscoveryError, TagRules};

/// One set of credentials and the regions to look in with them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountConfig {
    /// The name targets refer to ([`DiscoveredTarget::account`]); unique in a configuration.
    pub name: String,
    pub credentials: AccountCredentials,
    pub regions: Vec<String>,
}

/// What to discover.
#[derive(Clone, Debug)]
pub struct DiscoveryConfig {
    pub accounts: Vec<AccountConfig>,
    pub rules: TagRules,
    /// Sends every AWS call (RDS and STS) to this URL instead of AWS, for moto or a VPC
    /// endpoint. aws-config's own `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_RDS` work too.
    pub endpoint_url: Option<String>,
}

/// What one [`Discovery::discover`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryReport {
    /// Every database found, targets and excluded ones, sorted by name; names are unique.
    pub targets: Vec<DiscoveredTarget>,
    /// The account and region pairs that could not be listed, in configuration order. A
    /// failure hides nothing else: the other pairs are listed in `targets`.
    pub failures: Vec<DiscoveryFailure>,
}

impl DiscoveryReport {
    /// The target or excluded database called `name`.
    pub fn get(&self, name: &str) -> Option<&DiscoveredTarget> {
        self.targets.binary_search_by(|target| target.name.as_str().cmp(name)).ok().map(|i| &self.targets[i])
    }

    /// The databases that are targets, without the excluded ones.
    pub fn usable(&self) -> impl Iterator<Item = &DiscoveredTarget> {
        self.targets.iter().filter(|target| target.is_target())
    }
}

/// An account and region that could not be listed, or listed only in part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryFailure {
    pub account: String,
    pub region: String,
    pub error: DiscoveryError,
}

impl fmt::Display for DiscoveryFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "account {}, region {}: {}", self.account, self.region, self.error)
    }
}

/// Discovery over configured accounts and regions. Build it once: it holds each account's SDK
/// configuration and cached credentials.
#[derive(Debug)]
pub struct Discovery {
    accounts: Vec<Account>,
    rules: TagRules,
}

#[derive(Debug)]
struct Account {
    name: String,
    regions: Vec<String>,
    sdk_config: SdkConfig,
    credentials: SharedCredentialsProvider,
}

impl Discovery {
    /// Builds each account's SDK configuration. Nothing is fetched yet: missing credentials
    /// show up as failures of [`Discovery::discover`].
    pub async fn new(config: DiscoveryConfig) -> Discovery {
        Discovery::build(config, None).await
    }

    /// Like [`Discovery::new`], reading these profile files instead of the default ones (or
    /// those `AWS_CONFIG_FILE` and `AWS_SHARED_CREDENTIALS_FILE` name).
    pub async fn with_profile_files(config: DiscoveryConfig, profile_files: ProfileFiles) -> Discovery {
        Discovery::build(config, Some(&profile_files)).await
    }

    async fn build(config: DiscoveryConfig, profile_files: Option<&ProfileFiles>) -> Discovery {
        let DiscoveryConfig { accounts, rules, endpoint_url } = config;
        let endpoint_url = endpoint_url.as_deref();
        let accounts = accounts.into_iter().map(|account| async move {
            if account.regions.is_empty() {
                tracing::warn!(aws.account = %account.name, "the account lists no region; nothing is discovered in it");
            }
            // STS is asked in the account's first region, the RDS clients set their own.
            let home_region = account.regions.first().map_or("us-east-1", String::as_str);
            let sdk_config =
                account_config(&account.credentials, home_region, endpoint_url, profile_files).await;
            let credentials = match sdk_config.credentials_provider() {
                Some(provider) => provider,
                None => SharedCredentialsProvider::new(crate::credentials::CachedCredentials::new(None)),
            };
            Account { name: account.name, regions: account.regions, sdk_config, credentials }
        });
        let accounts: Vec<Account> = join_all(accounts).await;
        for (i, account) in accounts.iter().enumerate() {
            if accounts[..i].iter().any(|earlier| earlier.name == account.name) {
                tracing::warn!(aws.account = %account.name, "two accounts share a name; tokens are signed with the first one's credentials");
            }
        }
        Discovery { accounts, rules }
    }

    /// Lists every account and region in parallel. Never fails as a whole: what could not be
    /// listed is in [`DiscoveryReport::failures`].
    #[tracing::instrument(name = "discover", skip_all, fields(accounts = self.accounts.len()))]
    pub async fn discover(&self) -> DiscoveryReport {
        let started = Instant::now();
        let accounts =
            self.accounts.iter().enumerate().map(|(rank, account)| self.discover_account(rank, account));
        let mut ranked = Vec::new();
        let mut failures = Vec::new();
        for (account_targets, account_failures) in join_all(accounts).await {
            ranked.extend(account_targets);
            failures.extend(account_failures);
        }
        let targets = assign_unique_names(ranked);
        let usable = targets.iter().filter(|target| target.is_target()).count();
        tracing::info!(
            targets = usable,
            excluded = targets.len() - usable,
            failures = failures.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "discovery finished"
        );
        DiscoveryReport { targets, failures }
    }

    /// The credentials provider that signs tokens for the account `account` (an
    /// [`AccountConfig::name`]). It caches credentials and refreshes them before they expire.
    pub fn credentials(&self, account: &str) -> Option<SharedCredentialsProvider> {
        self.accounts
            .iter()
            .find(|candidate| candidate.name == account)
            .map(|found| found.credentials.clone())
    }

    /// The tag rules this discovery applies.
    pub fn rules(&self) -> &TagRules {
        &self.rules
    }

    async fn discover_account(
        &self,
        account_rank: usize,
        account: &Account,
    ) -> (Vec<Ranked>, Vec<DiscoveryFailure>) {
        let failure = |region: &str, error: DiscoveryError| {
            tracing::warn!(aws.account = %account.name, aws.region = %region, %error, "discovery failed");
            DiscoveryFailure { account: account.name.clone(), region: region.to_owned(), error }
        };
        // Credentials first, once: every region needs them, and a failure is clearer here
        // than as each call's dispatch failure.
        if let Err(error) = account.credentials.provide_credentials().await {
            let error =
                DiscoveryError::Credentials { account: account.name.clone(), reason: error_chain(&error) };
            let failures = account.regions.iter().map(|region| failure(region, error.clone())).collect();
            return (Vec::new(), failures);
        }
        let regions = account.regions.iter().enumerate().map(|(region_rank, region)| async move {
            let origin = Origin { account: &account.name, region };
            (region_rank, region, list_region(&account.sdk_config, &self.rules, origin).await)
        });
        let mut ranked = Vec::new();
        let mut failures = Vec::new();
        for (region_rank, region, listing) in join_all(regions).await {
            ranked.extend(listing.targets.into_iter().map(|target| Ranked {
                account_rank,
                region_rank,
                target,
            }));
            failures.extend(listing.errors.into_iter().map(|error| failure(region, error)));
        }
        (ranked, failures)
    }
}

/// What one account and region gave: the targets it could list, and what went wrong. Both
/// can be non-empty, for instance when clusters were listed but instances were not.
struct RegionListing {
    targets: Vec<DiscoveredTarget>,
    errors: Vec<DiscoveryError>,
}

async fn list_region(sdk_config: &SdkConfig, rules: &TagRules, origin: Origin<'_>) -> RegionListing {
    let rds_config =
        aws_sdk_rds::config::Builder::from(sdk_config).region(Region::new(origin.region.to_owned())).build();
    let client = aws_sdk_rds::Client::from_conf(rds_config);
    let mut errors = Vec::new();

    // RDS applies the engine filter; tags it cannot (the API has no tag filter), so the rules
    // run here over the TagList that describe returns inline.
    let engines = || {
        Filter::builder()
            .name("engine")
            .set_values(Some(POSTGRES_ENGINES.map(str::to_owned).to_vec()))
            .build()
    };
    let instances =
        client.describe_db_instances().filters(engines()).into_paginator().items().send().try_collect();
    let clusters =
        client.describe_db_clusters().filters(engines()).into_paginator().items().send().try_collect();
    let (instances, clusters) = tokio::join!(instances, clusters);
    let instances: Vec<DbInstance> = collected("DescribeDBInstances", instances, &mut errors);
    let mut clusters: Vec<DbCluster> = collected("DescribeDBClusters", clusters, &mut errors);
    clusters.retain(|cluster| is_postgres(cluster.engine()));

    // An Aurora member's IAM setting is its cluster's.
    let cluster_iam: HashMap<&str, bool> = clusters
        .iter()
        .filter_map(|cluster| {
            let iam_enabled = cluster.iam_database_authentication_enabled().unwrap_or(false);
            Some((cluster.db_cluster_identifier()?, iam_enabled))
        })
        .collect();
    let mut targets: Vec<DiscoveredTarget> = instances
        .iter()
        .filter(|instance| is_postgres(instance.engine()))
        .filter_map(|instance| {
            let cluster_iam = instance.db_cluster_identifier().and_then(|id| cluster_iam.get(id).copied());
            from_instance(instance, cluster_iam, rules, origin)
        })
        .collect();
    let n_instances = targets.len();
    for cluster in &clusters {
        targets.extend(from_cluster(cluster, rules, origin));
    }

    // Custom endpoints cost one more call, made only when a cluster says it has some.
    let mut n_custom = 0;
    if clusters.iter().any(|cluster| !cluster.custom_endpoints().is_empty()) {
        let custom = Filter::builder().name("db-cluster-endpoint-type").values("custom").build();
        let endpoints = client
            .describe_db_cluster_endpoints()
            .filters(custom)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await;
        let endpoints: Vec<DbClusterEndpoint> =
            collected("DescribeDBClusterEndpoints", endpoints, &mut errors);
        for endpoint in &endpoints {
            if !endpoint.endpoint_type().is_some_and(|kind| kind.eq_ignore_ascii_case("custom")) {
                continue;
            }
            let cluster = clusters.iter().find(|cluster| {
                cluster.db_cluster_identifier().is_some()
                    && cluster.db_cluster_identifier() == endpoint.db_cluster_identifier()
            });
            // Endpoints of clusters of other engines are not ours.
            if let Some(cluster) = cluster
                && let Some(target) = from_custom_endpoint(endpoint, cluster, rules, origin)
            {
                targets.push(target);
                n_custom += 1;
            }
        }
    }

    let usable = targets.iter().filter(|target| target.is_target()).count();
    tracing::info!(
        aws.account = %origin.account,
        aws.region = %origin.region,
        instances = n_instances,
        clusters = clusters.len(),
        custom_endpoints = n_custom,
        targets = usable,
        excluded = targets.len() - usable,
        errors = errors.len(),
        "listed databases"
    );
    RegionListing { targets, errors }
}

/// The items of a paginated call, or none with the error recorded.
fn collected<T, E>(
    operation: &'static str,
    result: Result<Vec<T>, SdkError<E>>,
    errors: &mut Vec<DiscoveryError>,
) -> Vec<T>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(items) => items,
        Err(error) => {
            errors.push(DiscoveryError::from_sdk(operation, error));
            Vec::new()
        }
    }
}
