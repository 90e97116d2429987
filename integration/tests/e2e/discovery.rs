//! Discovery against moto: instances and clusters in two accounts and two regions, every kind
//! of tag rule, pagination, exclusions, cluster endpoints, special tags, and failures that hide
//! nothing else. Each test runs its own moto, so they run in parallel.

use std::path::Path;
use std::time::Instant;

use aws_sdk_rds::config::ProvideCredentials;
use rds_auth_discovery::{
    AccountConfig, AccountCredentials, DB_NAME_TAG, DiscoveredTarget, Discovery, DiscoveryConfig,
    DiscoveryError, DiscoveryReport, Exclusion, LOCAL_PORT_TAG, ProfileFiles, TagRules, TargetKind,
    UPSTREAM_TAG,
};
use rds_auth_integration::harness::moto::{
    ACCESS_KEY_ID, ClusterSpec, InstanceSpec, Moto, MotoRds, SECRET_ACCESS_KEY,
};
use rds_auth_integration::harness::scratch_dir;

/// The second account, reached by assuming a role in it.
const OTHER_ACCOUNT_ID: &str = "210987654321";

/// A moto of its own and profile files that name it: the profile `moto-main` holds the static
/// test key, so nothing is read from the environment or `~/.aws`.
struct Fixture {
    moto: Moto,
    files: ProfileFiles,
}

impl Fixture {
    async fn start() -> Fixture {
        let moto = match Moto::start().await {
            Ok(moto) => moto,
            Err(e) => panic!("{e}"),
        };
        let dir = scratch_dir("discovery").unwrap();
        let files = write_profile_files(&dir);
        Fixture { moto, files }
    }

    fn main_rds(&self, region: &str) -> MotoRds {
        self.moto.rds(region)
    }

    async fn other_rds(&self, region: &str) -> MotoRds {
        self.moto.rds_in_account(OTHER_ACCOUNT_ID, region).await.unwrap()
    }

    async fn discovery(&self, accounts: Vec<AccountConfig>, rules: TagRules) -> Discovery {
        let config =
            DiscoveryConfig { accounts, rules, endpoint_url: Some(self.moto.endpoint_url().to_owned()) };
        Discovery::with_profile_files(config, self.files.clone()).await
    }

    async fn discover(&self, accounts: Vec<AccountConfig>, rules: TagRules) -> DiscoveryReport {
        let discovery = self.discovery(accounts, rules).await;
        let started = Instant::now();
        let report = discovery.discover().await;
        eprintln!("discover() took {:?} for {} databases", started.elapsed(), report.targets.len());
        report
    }
}

fn write_profile_files(dir: &Path) -> ProfileFiles {
    let config = dir.join("config");
    let credentials = dir.join("credentials");
    std::fs::write(&config, "[profile moto-main]\nregion = us-east-1\n").unwrap();
    std::fs::write(
        &credentials,
        format!(
            "[moto-main]\naws_access_key_id = {ACCESS_KEY_ID}\naws_secret_access_key = {SECRET_ACCESS_KEY}\n"
        ),
    )
    .unwrap();
    ProfileFiles { config: Some(config), credentials: Some(credentials) }
}

fn main_account(regions: &[&str]) -> AccountConfig {
    AccountConfig {
        name: "main".to_owned(),
        credentials: AccountCredentials::Profile("moto-main".to_owned()),
        regions: regions.iter().map(|region| (*region).to_owned()).collect(),
    }
}

fn other_account(regions: &[&str]) -> AccountConfig {
    AccountConfig {
        name: "other".to_owned(),
        credentials: AccountCredentials::AssumeRole {
            role_arn: format!("arn:aws:iam::{OTHER_ACCOUNT_ID}:role/rds-auth-discovery"),
            external_id: Some("rds-auth-proxy-test".to_owned()),
            session_name: "rds-auth-proxy".to_owned(),
            source_profile: Some("moto-main".to_owned()),
        },
        regions: regions.iter().map(|region| (*region).to_owned()).collect(),
    }
}

fn rules(allow: &[&str], block: &[&str]) -> TagRules {
    let owned = |rules: &[&str]| rules.iter().map(|rule| (*rule).to_owned()).collect::<Vec<_>>();
    TagRules::parse(&owned(allow), &owned(block)).unwrap()
}

fn no_rules() -> TagRules {
    rules(&[], &[])
}

fn target<'a>(report: &'a DiscoveryReport, name: &str) -> &'a DiscoveredTarget {
    report.get(name).unwrap_or_else(|| panic!("{name} was not discovered: {:#?}", summary(report)))
}

/// Name, kind, account, region and exclusion of every database, in report order.
fn summary(report: &DiscoveryReport) -> Vec<(String, TargetKind, String, String, Option<Exclusion>)> {
    report
        .targets
        .iter()
        .map(|t| (t.name.clone(), t.kind, t.account.clone(), t.region.clone(), t.excluded.clone()))
        .collect()
}

fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect()
}

#[tokio::test]
async fn two_accounts_two_regions_instances_clusters_and_endpoints() {
    let fixture = Fixture::start().await;
    let main_us = fixture.main_rds("us-east-1");
    main_us
        .create_instance(
            &InstanceSpec::postgres("orders")
                .tag("env", "prod")
                .tag(DB_NAME_TAG, "orders_db")
                .tag(LOCAL_PORT_TAG, "6001")
                .tag(UPSTREAM_TAG, "proxy-a.internal:5432"),
        )
        .await
        .unwrap();
    main_us.create_instance(&InstanceSpec::postgres("legacy").iam(false)).await.unwrap();
    main_us.create_instance(&InstanceSpec::postgres("paused")).await.unwrap();
    main_us.stop_instance("paused").await.unwrap();
    main_us.create_instance(&InstanceSpec::postgres("shop").engine("mysql")).await.unwrap();
    main_us
        .create_cluster(&ClusterSpec::aurora_postgres("ledger").tag("env", "prod").tag("team", "payments"))
        .await
        .unwrap();
    main_us.create_instance(&InstanceSpec::postgres("ledger-1").in_cluster("ledger")).await.unwrap();
    // IAM on an Aurora member is the cluster's setting, whatever the member says.
    main_us
        .create_instance(&InstanceSpec::postgres("ledger-2").in_cluster("ledger").iam(false))
        .await
        .unwrap();
    main_us.create_cluster_endpoint("ledger", "ledger-analytics", "READER").await.unwrap();
    main_us.create_cluster(&ClusterSpec::aurora_postgres("frozen")).await.unwrap();
    main_us.stop_cluster("frozen").await.unwrap();
    main_us
        .create_cluster(&ClusterSpec::aurora_postgres("mysql-ledger").engine("aurora-mysql"))
        .await
        .unwrap();
    main_us.create_cluster_endpoint("mysql-ledger", "mysql-analytics", "ANY").await.unwrap();

    let main_eu = fixture.main_rds("eu-west-1");
    main_eu.create_instance(&InstanceSpec::postgres("orders")).await.unwrap();
    main_eu.create_cluster(&ClusterSpec::aurora_postgres("noiam").iam(false)).await.unwrap();

    let other_us = fixture.other_rds("us-east-1").await;
    other_us.create_instance(&InstanceSpec::postgres("orders")).await.unwrap();
    other_us
        .create_instance(&InstanceSpec::postgres("reports").tag(LOCAL_PORT_TAG, "not-a-port"))
        .await
        .unwrap();

    let regions = ["us-east-1", "eu-west-1"];
    let accounts = vec![main_account(&regions), other_account(&regions)];
    let discovery = fixture.discovery(accounts, no_rules()).await;
    let started = Instant::now();
    let report = discovery.discover().await;
    eprintln!("discover() over 2 accounts x 2 regions took {:?}", started.elapsed());
    assert_eq!(report.failures, [], "{:#?}", report.failures);

    let stopped = || Some(Exclusion::NotAvailable { status: "stopped".to_owned() });
    let expected = [
        ("frozen", TargetKind::ClusterWriter, "main", "us-east-1", stopped()),
        ("frozen-reader", TargetKind::ClusterReader, "main", "us-east-1", stopped()),
        ("ledger", TargetKind::ClusterWriter, "main", "us-east-1", None),
        ("ledger-1", TargetKind::Instance, "main", "us-east-1", None),
        ("ledger-2", TargetKind::Instance, "main", "us-east-1", None),
        ("ledger-analytics", TargetKind::ClusterCustom, "main", "us-east-1", None),
        ("ledger-reader", TargetKind::ClusterReader, "main", "us-east-1", None),
        ("legacy", TargetKind::Instance, "main", "us-east-1", Some(Exclusion::IamDisabled)),
        ("noiam", TargetKind::ClusterWriter, "main", "eu-west-1", Some(Exclusion::IamDisabled)),
        ("noiam-reader", TargetKind::ClusterReader, "main", "eu-west-1", Some(Exclusion::IamDisabled)),
        ("orders", TargetKind::Instance, "main", "us-east-1", None),
        ("orders@eu-west-1", TargetKind::Instance, "main", "eu-west-1", None),
        ("orders@other", TargetKind::Instance, "other", "us-east-1", None),
        ("paused", TargetKind::Instance, "main", "us-east-1", stopped()),
        ("reports", TargetKind::Instance, "other", "us-east-1", None),
    ];
    let expected: Vec<_> = expected
        .into_iter()
        .map(|(name, kind, account, region, excluded)| {
            (name.to_owned(), kind, account.to_owned(), region.to_owned(), excluded)
        })
        .collect();
    assert_eq!(summary(&report), expected);

    // Endpoints exactly as RDS names them, and the special tags.
    let orders = target(&report, "orders");
    assert!(
        orders.host.starts_with("orders.") && orders.host.ends_with(".us-east-1.rds.amazonaws.com"),
        "{orders:?}"
    );
    assert_eq!(orders.port, 5432);
    assert_eq!(orders.engine, "postgres");
    assert!(!orders.engine_version.is_empty());
    assert!(orders.iam_enabled);
    assert_eq!(orders.database.as_deref(), Some("orders_db"));
    assert_eq!(orders.local_port, Some(6001));
    assert_eq!(orders.upstream.as_deref(), Some("proxy-a.internal:5432"));
    assert_eq!(orders.endpoint().unwrap().to_string(), format!("{}:5432", orders.host));
    let orders_eu = target(&report, "orders@eu-west-1");
    assert!(orders_eu.host.ends_with(".eu-west-1.rds.amazonaws.com"), "{orders_eu:?}");
    assert_eq!(orders_eu.database, None);
    assert_eq!(target(&report, "reports").local_port, None, "an invalid local port is ignored");
    assert!(!target(&report, "legacy").iam_enabled);

    let cluster_tags = tags(&[("env", "prod"), ("team", "payments")]);
    for (name, host_part) in
        [("ledger", ".cluster-"), ("ledger-reader", ".cluster-ro-"), ("ledger-analytics", ".cluster-custom-")]
    {
        let endpoint = target(&report, name);
        assert!(endpoint.host.contains(host_part), "{endpoint:?}");
        assert_eq!(endpoint.engine, "aurora-postgresql");
        assert_eq!(endpoint.port, 5432);
        assert_eq!(endpoint.tags, cluster_tags, "cluster tags apply to {name}");
        assert!(endpoint.iam_enabled);
    }
    assert!(target(&report, "ledger-analytics").host.starts_with("ledger-analytics."));
    assert!(target(&report, "ledger-1").host.starts_with("ledger-1."));
    assert_eq!(target(&report, "ledger-1").tags, [], "members keep their own tags");

    // Each account's tokens are signed with its own credentials, fetched once.
    let main_credentials = discovery.credentials("main").unwrap().provide_credentials().await.unwrap();
    assert_eq!(main_credentials.access_key_id(), ACCESS_KEY_ID);
    let other = discovery.credentials("other").unwrap();
    let assumed = other.provide_credentials().await.unwrap();
    assert_ne!(assumed.access_key_id(), ACCESS_KEY_ID);
    assert!(assumed.session_token().is_some(), "assumed-role credentials carry a session token");
    assert_eq!(other.provide_credentials().await.unwrap().access_key_id(), assumed.access_key_id(), "cached");
    assert!(discovery.credentials("nobody").is_none());

    // The same databases, the same names, on a second run.
    assert_eq!(summary(&discovery.discover().await), expected);
}

#[tokio::test]
async fn tag_rules_of_every_kind() {
    let fixture = Fixture::start().await;
    let rds = fixture.main_rds("eu-central-1");
    let instances = [
        InstanceSpec::postgres("a-prod").tag("env", "prod").tag("team", "x"),
        InstanceSpec::postgres("b-production").tag("env", "production").tag("team", "y"),
        InstanceSpec::postgres("c-no-team").tag("env", "prod"),
        InstanceSpec::postgres("d-staging").tag("env", "staging").tag("team", "x"),
        InstanceSpec::postgres("e-scratch").tag("env", "prod").tag("team", "x").tag("tier", "scratch"),
        InstanceSpec::postgres("f-legacy").tag("env", "prod").tag("team", "x").tag("legacy", ""),
        InstanceSpec::postgres("g-untagged"),
    ];
    rds.create_instances(&instances).await.unwrap();
    rds.create_cluster(&ClusterSpec::aurora_postgres("h-cluster").tag("env", "prod-eu").tag("team", "z"))
        .await
        .unwrap();
    let accounts = || vec![main_account(&["eu-central-1"])];
    let targets = |report: &DiscoveryReport| -> Vec<String> {
        assert_eq!(report.failures, []);
        report.usable().map(|t| t.name.clone()).collect()
    };

    // Glob and key-only allow rules, every one must match; exact and key-only block rules,
    // any one blocks.
    let report =
        fixture.discover(accounts(), rules(&["env=prod*", "team"], &["tier=scratch", "legacy"])).await;
    assert_eq!(targets(&report), ["a-prod", "b-production", "h-cluster", "h-cluster-reader"]);
    for name in ["c-no-team", "d-staging", "e-scratch", "f-legacy", "g-untagged"] {
        assert_eq!(target(&report, name).excluded, Some(Exclusion::TagRules), "{name}");
    }

    // An exact value.
    let report = fixture.discover(accounts(), rules(&["env=prod"], &[])).await;
    assert_eq!(targets(&report), ["a-prod", "c-no-team", "e-scratch", "f-legacy"]);

    // Block rules alone.
    let report = fixture.discover(accounts(), rules(&[], &["env=prod*"])).await;
    assert_eq!(targets(&report), ["d-staging", "g-untagged"]);

    // No rules: everything.
    let report = fixture.discover(accounts(), no_rules()).await;
    assert_eq!(targets(&report).len(), 9);
    assert_eq!(report.targets.len(), 9);
}

#[tokio::test]
async fn pagination_over_150_instances() {
    let fixture = Fixture::start().await;
    let rds = fixture.main_rds("us-west-2");
    let mut specs: Vec<InstanceSpec> =
        (0..150).map(|i| InstanceSpec::postgres(&format!("pg-{i:03}"))).collect();
    specs.extend((0..5).map(|i| InstanceSpec::postgres(&format!("my-{i}")).engine("mysql")));
    let started = Instant::now();
    rds.create_instances(&specs).await.unwrap();
    eprintln!("seeding 155 instances took {:?}", started.elapsed());

    // moto returns at most 100 instances a page, as RDS does by default.
    let first_page = rds.client().describe_db_instances().send().await.unwrap();
    assert_eq!(first_page.db_instances().len(), 100);
    assert!(first_page.marker().is_some(), "the listing spans several pages");

    let report = fixture.discover(vec![main_account(&["us-west-2"])], no_rules()).await;
    assert_eq!(report.failures, []);
    let names: Vec<&str> = report.targets.iter().map(|t| t.name.as_str()).collect();
    let expected: Vec<String> = (0..150).map(|i| format!("pg-{i:03}")).collect();
    assert_eq!(names, expected);
    assert!(report.targets.iter().all(DiscoveredTarget::is_target));
}

#[tokio::test]
async fn a_failing_region_or_account_hides_nothing_else() {
    let fixture = Fixture::start().await;
    fixture.main_rds("us-east-1").create_instance(&InstanceSpec::postgres("alive")).await.unwrap();
    let broken = AccountConfig {
        name: "broken".to_owned(),
        credentials: AccountCredentials::Profile("no-such-profile".to_owned()),
        regions: vec!["us-east-1".to_owned()],
    };
    // moto answers a region it does not know with HTTP 500, as a disabled opt-in region fails.
    let accounts = vec![main_account(&["us-east-1", "xx-nowhere-1"]), broken];
    let report = fixture.discover(accounts, no_rules()).await;

    assert_eq!(report.targets.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["alive"]);
    let mut failed: Vec<(&str, &str)> =
        report.failures.iter().map(|f| (f.account.as_str(), f.region.as_str())).collect();
    failed.dedup();
    assert_eq!(failed, [("main", "xx-nowhere-1"), ("broken", "us-east-1")], "{:#?}", report.failures);
    for failure in &report.failures {
        let message = failure.to_string();
        eprintln!("{message}");
        match (&failure.error, failure.account.as_str()) {
            (DiscoveryError::Credentials { account, .. }, "broken") => {
                assert_eq!(account, "broken");
                assert!(message.contains("no-such-profile"), "{message}");
            }
            (DiscoveryError::Api { operation, .. } | DiscoveryError::Request { operation, .. }, "main") => {
                assert!(["DescribeDBInstances", "DescribeDBClusters"].contains(operation), "{message}");
                assert!(message.contains(&format!("rds:{operation}")), "{message}");
            }
            _ => panic!("unexpected failure: {message}"),
        }
        assert!(!message.contains(SECRET_ACCESS_KEY), "{message}");
    }
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_failure_not_a_hang() {
    let fixture = Fixture::start().await;
    // A port that was free a moment ago: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = DiscoveryConfig {
        accounts: vec![main_account(&["us-east-1"])],
        rules: no_rules(),
        endpoint_url: Some(format!("http://{closed}")),
    };
    let discovery = Discovery::with_profile_files(config, fixture.files.clone()).await;
    let started = Instant::now();
    let report = discovery.discover().await;
    eprintln!("discover() against a closed port took {:?}", started.elapsed());
    assert_eq!(report.targets, []);
    for failure in &report.failures {
        eprintln!("{failure}");
    }
    let operations: Vec<&str> = report
        .failures
        .iter()
        .map(|f| match &f.error {
            DiscoveryError::Request { operation, .. } => *operation,
            other => panic!("expected a request failure, got {other}"),
        })
        .collect();
    assert_eq!(operations.len(), 2, "{:#?}", report.failures);
    assert!(operations.contains(&"DescribeDBInstances") && operations.contains(&"DescribeDBClusters"));
}

#[tokio::test]
async fn moto_reset_forgets_everything() {
    let fixture = Fixture::start().await;
    fixture.main_rds("us-east-1").create_instance(&InstanceSpec::postgres("before-reset")).await.unwrap();
    let discovery = fixture.discovery(vec![main_account(&["us-east-1"])], no_rules()).await;
    assert_eq!(discovery.discover().await.targets.len(), 1);
    fixture.moto.reset().await.unwrap();
    let report = discovery.discover().await;
    assert_eq!(report.targets, []);
    assert_eq!(report.failures, []);
}
