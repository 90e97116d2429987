//! What discovery finds: one [`DiscoveredTarget`] per endpoint, and how RDS's descriptions
//! become targets.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use aws_sdk_rds::types::{DbCluster, DbClusterEndpoint, DbInstance, Tag};
use rds_auth_startup::Endpoint;
use serde::{Deserialize, Serialize};

use crate::{DiscoveryError, TagRules};

/// The tag that names the database to connect to on a target.
pub const DB_NAME_TAG: &str = "rds-auth-proxy:db-name";
/// The tag that fixes the client proxy's local port for a target.
pub const LOCAL_PORT_TAG: &str = "rds-auth-proxy:local-port";
/// The tag that names the server proxy a target is reached through.
pub const UPSTREAM_TAG: &str = "rds-auth-proxy:upstream";

/// The engines discovery lists: RDS for PostgreSQL and Aurora PostgreSQL.
pub const POSTGRES_ENGINES: [&str; 2] = ["postgres", "aurora-postgresql"];

/// Statuses in which a database still accepts connections. RDS lists more statuses; the others
/// are transitions or failures during which a connection would fail.
const SERVING_STATUSES: [&str; 6] = [
    "available",
    "backing-up",
    "modifying",
    "configuring-enhanced-monitoring",
    "configuring-log-exports",
    "storage-optimization",
];

/// Which kind of RDS endpoint a target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// A DB instance, standalone or a member of an Aurora cluster.
    Instance,
    /// An Aurora cluster's writer endpoint.
    ClusterWriter,
    /// An Aurora cluster's reader endpoint, which spreads connections over the replicas.
    ClusterReader,
    /// An Aurora cluster's custom endpoint.
    #[serde(rename = "custom")]
    ClusterCustom,
}

impl TargetKind {
    /// The spelling used in serialized form and in listings.
    pub fn as_str(&self) -> &'static str {
        match self {
            TargetKind::Instance => "instance",
            TargetKind::ClusterWriter => "cluster-writer",
            TargetKind::ClusterReader => "cluster-reader",
            TargetKind::ClusterCustom => "custom",
        }
    }
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a database that discovery found is not a target. When several reasons apply, the first
/// in this order is given: tag rules, IAM, status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Exclusion {
    /// IAM database authentication is off, so no token can log in.
    IamDisabled,
    /// The tag rules filter it out.
    TagRules,
    /// It is not in a state that accepts connections (stopped, creating, ...), or has no
    /// endpoint yet.
    NotAvailable { status: String },
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exclusion::IamDisabled => f.write_str("IAM database authentication is disabled"),
            Exclusion::TagRules => f.write_str("filtered out by the tag rules"),
            Exclusion::NotAvailable { status } => write!(f, "not available (status {status})"),
        }
    }
}

/// One endpoint discovery found, a target or, with `excluded` set, the reason it is not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveredTarget {
    /// The instance id; the cluster id for the writer; `<cluster>-reader`; the custom endpoint
    /// identifier. Renamed `<name>@<region>` or `<name>@<account>` when two databases share it.
    pub name: String,
    pub kind: TargetKind,
    pub engine: String,
    pub engine_version: String,
    /// The endpoint exactly as RDS names it; empty while RDS has not assigned one.
    pub host: String,
    pub port: u16,
    pub region: String,
    /// The [`AccountConfig`](crate::AccountConfig) name whose credentials sign this target's
    /// tokens.
    pub account: String,
    pub iam_enabled: bool,
    /// The tags as RDS returns them; a cluster's endpoints carry the cluster's tags.
    pub tags: Vec<(String, String)>,
    /// From the tag `rds-auth-proxy:db-name`.
    pub database: Option<String>,
    /// From the tag `rds-auth-proxy:local-port`; an invalid value is ignored with a warning.
    pub local_port: Option<u16>,
    /// From the tag `rds-auth-proxy:upstream`.
    pub upstream: Option<String>,
    pub excluded: Option<Exclusion>,
}

impl DiscoveredTarget {
    /// The target in the spelling the proxies exchange.
    pub fn endpoint(&self) -> Result<Endpoint, DiscoveryError> {
        Endpoint::new(&self.host, self.port)
            .map_err(|source| DiscoveryError::Endpoint { name: self.name.clone(), source })
    }

    /// True when nothing excludes it.
    pub fn is_target(&self) -> bool {
        self.excluded.is_none()
    }
}

/// Where a description came from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Origin<'a> {
    pub(crate) account: &'a str,
    pub(crate) region: &'a str,
}

/// What every kind of endpoint has in common, before the rules are applied.
struct Facts<'a> {
    name: String,
    kind: TargetKind,
    engine: &'a str,
    engine_version: &'a str,
    host: Option<&'a str>,
    port: Option<i32>,
    status: Option<&'a str>,
    iam_enabled: bool,
    tags: Vec<(String, String)>,
}

/// Whether an engine name is one discovery lists.
pub(crate) fn is_postgres(engine: Option<&str>) -> bool {
    engine.is_some_and(|engine| POSTGRES_ENGINES.contains(&engine))
}

/// A DB instance as a target. `cluster_iam` tells whether IAM is enabled on an Aurora member's
/// cluster, which decides for its members; `None` when the cluster was not listed.
pub(crate) fn from_instance(
    instance: &DbInstance,
    cluster_iam: Option<bool>,
    rules: &TagRules,
    origin: Origin<'_>,
) -> Option<DiscoveredTarget> {
    let name = instance.db_instance_identifier()?;
    let endpoint = instance.endpoint();
    let iam_enabled = cluster_iam.or(instance.iam_database_authentication_enabled()).unwrap_or(false);
    Some(build(
        Facts {
            name: name.to_owned(),
            kind: TargetKind::Instance,
            engine: instance.engine().unwrap_or_default(),
            engine_version: instance.engine_version().unwrap_or_default(),
            host: endpoint.and_then(|endpoint| endpoint.address()),
            port: endpoint.and_then(|endpoint| endpoint.port()).or(instance.db_instance_port()),
            status: instance.db_instance_status(),
            iam_enabled,
            tags: tag_pairs(instance.tag_list()),
        },
        rules,
        origin,
    ))
}

/// An Aurora cluster's writer and reader endpoints as targets.
pub(crate) fn from_cluster(
    cluster: &DbCluster,
    rules: &TagRules,
    origin: Origin<'_>,
) -> Vec<DiscoveredTarget> {
    let Some(id) = cluster.db_cluster_identifier() else { return Vec::new() };
    let facts = |name: String, kind, host| Facts {
        name,
        kind,
        engine: cluster.engine().unwrap_or_default(),
        engine_version: cluster.engine_version().unwrap_or_default(),
        host,
        port: cluster.port(),
        status: cluster.status(),
        iam_enabled: cluster.iam_database_authentication_enabled().unwrap_or(false),
        tags: tag_pairs(cluster.tag_list()),
    };
    vec![
        build(facts(id.to_owned(), TargetKind::ClusterWriter, cluster.endpoint()), rules, origin),
        build(
            facts(format!("{id}-reader"), TargetKind::ClusterReader, cluster.reader_endpoint()),
            rules,
            origin,
        ),
    ]
}

/// A custom endpoint of `cluster` as a target. It takes the cluster's engine, port, IAM
/// setting and tags; it serves while both the cluster and the endpoint do.
pub(crate) fn from_custom_endpoint(
    endpoint: &DbClusterEndpoint,
    cluster: &DbCluster,
    rules: &TagRules,
    origin: Origin<'_>,
) -> Option<DiscoveredTarget> {
    let name = endpoint.db_cluster_endpoint_identifier()?;
    let status = match cluster.status() {
        Some(status) if !is_serving(status) => Some(status),
        _ => endpoint.status(),
    };
    Some(build(
        Facts {
            name: name.to_owned(),
            kind: TargetKind::ClusterCustom,
            engine: cluster.engine().unwrap_or_default(),
            engine_version: cluster.engine_version().unwrap_or_default(),
            host: endpoint.endpoint(),
            port: cluster.port(),
            status,
            iam_enabled: cluster.iam_database_authentication_enabled().unwrap_or(false),
            tags: tag_pairs(cluster.tag_list()),
        },
        rules,
        origin,
    ))
}

fn build(facts: Facts<'_>, rules: &TagRules, origin: Origin<'_>) -> DiscoveredTarget {
    let host = facts.host.filter(|host| !host.is_empty());
    let port = facts.port.and_then(|port| u16::try_from(port).ok()).filter(|port| *port != 0);
    let status = facts.status.unwrap_or("unknown");
    let excluded = if !rules.matches(&facts.tags) {
        Some(Exclusion::TagRules)
    } else if !facts.iam_enabled {
        Some(Exclusion::IamDisabled)
    } else if !is_serving(status) {
        Some(Exclusion::NotAvailable { status: status.to_owned() })
    } else if host.is_none() || port.is_none() {
        Some(Exclusion::NotAvailable { status: format!("{status}, without an endpoint") })
    } else {
        None
    };
    let special = SpecialTags::read(&facts.name, &facts.tags);
    DiscoveredTarget {
        name: facts.name,
        kind: facts.kind,
        engine: facts.engine.to_owned(),
        engine_version: facts.engine_version.to_owned(),
        host: host.unwrap_or_default().to_owned(),
        port: port.unwrap_or(0),
        region: origin.region.to_owned(),
        account: origin.account.to_owned(),
        iam_enabled: facts.iam_enabled,
        tags: facts.tags,
        database: special.database,
        local_port: special.local_port,
        upstream: special.upstream,
        excluded,
    }
}

fn is_serving(status: &str) -> bool {
    SERVING_STATUSES.iter().any(|serving| serving.eq_ignore_ascii_case(status))
}

fn tag_pairs(tags: &[Tag]) -> Vec<(String, String)> {
    tags.iter()
        .filter_map(|tag| Some((tag.key()?.to_owned(), tag.value().unwrap_or_default().to_owned())))
        .collect()
}

/// The tags that configure the proxies rather than describe the database.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SpecialTags {
    pub(crate) database: Option<String>,
    pub(crate) local_port: Option<u16>,
    pub(crate) upstream: Option<String>,
}

impl SpecialTags {
    /// Reads the special tags of the database `name`. Empty values count as absent; a local
    /// port that is not a number from 1 to 65535 is ignored with a warning.
    pub(crate) fn read(name: &str, tags: &[(String, String)]) -> SpecialTags {
        let value = |wanted: &str| {
            tags.iter()
                .find(|(key, _)| key == wanted)
                .map(|(_, value)| value.trim())
                .filter(|v| !v.is_empty())
        };
        let local_port = value(LOCAL_PORT_TAG).and_then(|text| match text.parse::<u16>() {
            Ok(port) if port != 0 => Some(port),
            _ => {
                tracing::warn!(
                    rds.name = %name,
                    tag.value = %text,
                    "ignoring the tag {LOCAL_PORT_TAG}: not a port number from 1 to 65535"
                );
                None
            }
        });
        SpecialTags {
            database: value(DB_NAME_TAG).map(str::to_owned),
            local_port,
            upstream: value(UPSTREAM_TAG).map(str::to_owned),
        }
    }
}

/// A target with the position of its account and region in the configuration, which decides
/// who keeps a shared name.
#[derive(Debug)]
pub(crate) struct Ranked {
    pub(crate) account_rank: usize,
    pub(crate) region_rank: usize,
    pub(crate) target: DiscoveredTarget,
}

/// Gives every target a unique name and sorts them by name.
///
/// When several share a name, the first keeps it: targets before excluded ones, then by the
/// order of accounts and regions in the configuration, then by kind. Each later one becomes
/// `<name>@<region>` when its region differs from the first's, else `<name>@<account>`; if
/// that is taken too, `<name>@<account>/<region>`, then `<name>@<account>/<region>/<kind>`.
pub(crate) fn assign_unique_names(ranked: Vec<Ranked>) -> Vec<DiscoveredTarget> {
    let mut groups: BTreeMap<String, Vec<Ranked>> = BTreeMap::new();
    for entry in ranked {
        groups.entry(entry.target.name.clone()).or_default().push(entry);
    }
    let mut taken: HashSet<String> = groups.keys().cloned().collect();
    let mut targets = Vec::new();
    for (name, mut group) in groups {
        group.sort_by(|a, b| {
            let key = |entry: &Ranked| {
                (
                    entry.target.excluded.is_some(),
                    entry.account_rank,
                    entry.region_rank,
                    entry.target.kind,
                    entry.target.host.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        let mut group = group.into_iter().map(|entry| entry.target);
        let Some(holder) = group.next() else { continue };
        for mut target in group {
            let mut candidates = Vec::new();
            if target.region != holder.region {
                candidates.push(format!("{name}@{}", target.region));
            }
            if target.account != holder.account {
                candidates.push(format!("{name}@{}", target.account));
            }
            candidates.push(format!("{name}@{}/{}", target.account, target.region));
            candidates.push(format!("{name}@{}/{}/{}", target.account, target.region, target.kind));
            let fresh = candidates.into_iter().find(|candidate| !taken.contains(candidate));
            let fresh = fresh.unwrap_or_else(|| {
                // Only reachable when account names contain `@` or `/` and collide.
                let base = format!("{name}@{}/{}/{}", target.account, target.region, target.kind);
                (2..)
                    .map(|n| format!("{base}#{n}"))
                    .find(|candidate| !taken.contains(candidate))
                    .unwrap_or(base)
            });
            tracing::debug!(rds.name = %name, target.name = %fresh, "renamed a target whose name is taken");
            taken.insert(fresh.clone());
            target.name = fresh;
            targets.push(target);
        }
        targets.push(holder);
    }
    targets.sort_by(|a, b| a.name.cmp(&b.name));
    targets
}

#[cfg(test)]
mod tests {
    use aws_sdk_rds::types::Endpoint as RdsEndpoint;

    use super::*;

    const ORIGIN: Origin<'static> = Origin { account: "main", region: "eu-west-1" };

    fn no_rules() -> TagRules {
        TagRules::parse(&[], &[]).unwrap()
    }

    fn tag(key: &str, value: &str) -> Tag {
        Tag::builder().key(key).value(value).build()
    }

    fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect()
    }

    fn instance(id: &str) -> aws_sdk_rds::types::builders::DbInstanceBuilder {
        DbInstance::builder()
            .db_instance_identifier(id)
            .engine("postgres")
            .engine_version("16.3")
            .db_instance_status("available")
            .iam_database_authentication_enabled(true)
            .endpoint(
                RdsEndpoint::builder()
                    .address(format!("{id}.abcdefghijkl.eu-west-1.rds.amazonaws.com"))
                    .port(5432)
                    .build(),
            )
    }

    fn cluster(id: &str) -> aws_sdk_rds::types::builders::DbClusterBuilder {
        DbCluster::builder()
            .db_cluster_identifier(id)
            .engine("aurora-postgresql")
            .engine_version("15.4")
            .status("available")
            .iam_database_authentication_enabled(true)
            .endpoint(format!("{id}.cluster-abcdefghijkl.eu-west-1.rds.amazonaws.com"))
            .reader_endpoint(format!("{id}.cluster-ro-abcdefghijkl.eu-west-1.rds.amazonaws.com"))
            .port(5433)
            .tag_list(tag("env", "prod"))
    }

    #[test]
    fn instance_maps_to_a_target() {
        let described =
            instance("orders").tag_list(tag("env", "prod")).tag_list(tag(DB_NAME_TAG, "orders_db")).build();
        let target = from_instance(&described, None, &no_rules(), ORIGIN).unwrap();
        assert_eq!(
            target,
            DiscoveredTarget {
                name: "orders".to_owned(),
                kind: TargetKind::Instance,
                engine: "postgres".to_owned(),
                engine_version: "16.3".to_owned(),
                host: "orders.abcdefghijkl.eu-west-1.rds.amazonaws.com".to_owned(),
                port: 5432,
                region: "eu-west-1".to_owned(),
                account: "main".to_owned(),
                iam_enabled: true,
                tags: pairs(&[("env", "prod"), (DB_NAME_TAG, "orders_db")]),
                database: Some("orders_db".to_owned()),
                local_port: None,
                upstream: None,
                excluded: None,
            }
        );
        assert!(target.is_target());
        assert_eq!(
            target.endpoint().unwrap(),
            Endpoint::new("orders.abcdefghijkl.eu-west-1.rds.amazonaws.com", 5432).unwrap()
        );
    }

    #[test]
    fn instance_without_iam_is_excluded() {
        let described = instance("legacy").iam_database_authentication_enabled(false).build();
        let target = from_instance(&described, None, &no_rules(), ORIGIN).unwrap();
        assert_eq!(target.excluded, Some(Exclusion::IamDisabled));
        assert!(!target.is_target());
        assert!(!target.iam_enabled);

        let described =
            DbInstance::builder().db_instance_identifier("unset").db_instance_status("available").build();
        let target = from_instance(&described, None, &no_rules(), ORIGIN).unwrap();
        assert_eq!(target.excluded, Some(Exclusion::IamDisabled), "a missing flag means disabled");
    }

    #[test]
    fn aurora_members_follow_their_cluster_for_iam() {
        let member = instance("aurora-1").iam_database_authentication_enabled(false).build();
        let target = from_instance(&member, Some(true), &no_rules(), ORIGIN).unwrap();
        assert_eq!(target.excluded, None);
        let member = instance("aurora-2").build();
        let target = from_instance(&member, Some(false), &no_rules(), ORIGIN).unwrap();
        assert_eq!(target.excluded, Some(Exclusion::IamDisabled));
    }

    #[test]
    fn statuses() {
        for (status, serving) in [
            ("available", true),
            ("backing-up", true),
            ("modifying", true),
            ("Available", true),
            ("stopped", false),
            ("creating", false),
            ("deleting", false),
            ("rebooting", false),
        ] {
            let described = instance("db").db_instance_status(status).build();
            let target = from_instance(&described, None, &no_rules(), ORIGIN).unwrap();
            let expected = (!serving).then(|| Exclusion::NotAvailable { status: status.to_owned() });
            assert_eq!(target.excluded, expected, "{status}");
        }
    }

    #[test]
    fn instance_without_endpoint_is_not_available() {
        let described = instance("new").db_instance_status("creating").set_endpoint(None).build();
        let target = from_instance(&described, None, &no_rules(), ORIGIN).unwrap();
        assert_eq!(target.excluded, Some(Exclusion::NotAvailable { status: "creating".to_owned() }));
        assert_eq!((target.host.as_str(), target.port), ("", 0));
        assert!(matches!(target.endpoint(), Err(DiscoveryError::Endpoint { .. })));

        let described = instance("odd").set_endpoint(None).build();
        let target = from_instance(&described, None, &no_rules(), ORIGIN).unwrap();
        assert_eq!(
            target.excluded,
            Some(Exclusion::NotAvailable { status: "available, without an endpoint".to_owned() })
        );
    }

    #[test]
    fn exclusion_order_is_rules_then_iam_then_status() {
        let rules = TagRules::parse(&["env=prod".to_owned()], &[]).unwrap();
        let described =
            instance("db").iam_database_authentication_enabled(false).db_instance_status("stopped").build();
        let target = from_instance(&described, None, &rules, ORIGIN).unwrap();
        assert_eq!(target.excluded, Some(Exclusion::TagRules));
        let described = described.clone();
        let target = from_instance(&described, None, &no_rules(), ORIGIN).unwrap();
        assert_eq!(target.excluded, Some(Exclusion::IamDisabled));
    }

    #[test]
    fn instance_without_identifier_is_skipped() {
        assert_eq!(from_instance(&DbInstance::builder().build(), None, &no_rules(), ORIGIN), None);
    }

    #[test]
    fn cluster_yields_writer_and_reader() {
        let described = cluster("ledger").tag_list(tag(LOCAL_PORT_TAG, "15432")).build();
        let targets = from_cluster(&described, &no_rules(), ORIGIN);
        let summary: Vec<_> = targets
            .iter()
            .map(|t| (t.name.as_str(), t.kind, t.host.as_str(), t.port, t.local_port))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "ledger",
                    TargetKind::ClusterWriter,
                    "ledger.cluster-abcdefghijkl.eu-west-1.rds.amazonaws.com",
                    5433,
                    Some(15432)
                ),
                (
                    "ledger-reader",
                    TargetKind::ClusterReader,
                    "ledger.cluster-ro-abcdefghijkl.eu-west-1.rds.amazonaws.com",
                    5433,
                    Some(15432)
                ),
            ]
        );
        for target in &targets {
            assert_eq!(target.tags, pairs(&[("env", "prod"), (LOCAL_PORT_TAG, "15432")]));
            assert_eq!(target.engine, "aurora-postgresql");
            assert_eq!(target.engine_version, "15.4");
            assert!(target.is_target());
        }
    }

    #[test]
    fn cluster_rules_iam_and_status_apply_to_both_endpoints() {
        let rules = TagRules::parse(&[], &["env=prod".to_owned()]).unwrap();
        let targets = from_cluster(&cluster("c").build(), &rules, ORIGIN);
        assert!(targets.iter().all(|t| t.excluded == Some(Exclusion::TagRules)));

        let targets = from_cluster(
            &cluster("c").iam_database_authentication_enabled(false).build(),
            &no_rules(),
            ORIGIN,
        );
        assert!(targets.iter().all(|t| t.excluded == Some(Exclusion::IamDisabled)));

        let targets = from_cluster(&cluster("c").status("stopped").build(), &no_rules(), ORIGIN);
        assert!(
            targets
                .iter()
                .all(|t| t.excluded == Some(Exclusion::NotAvailable { status: "stopped".to_owned() }))
        );
    }

    #[test]
    fn custom_endpoint_takes_the_cluster_settings() {
        let described_cluster = cluster("ledger").tag_list(tag(UPSTREAM_TAG, "vpc-b")).build();
        let endpoint = |status: &str| {
            DbClusterEndpoint::builder()
                .db_cluster_endpoint_identifier("analytics")
                .db_cluster_identifier("ledger")
                .endpoint("analytics.cluster-custom-abcdefghijkl.eu-west-1.rds.amazonaws.com")
                .endpoint_type("CUSTOM")
                .custom_endpoint_type("READER")
                .status(status)
                .build()
        };
        let target =
            from_custom_endpoint(&endpoint("available"), &described_cluster, &no_rules(), ORIGIN).unwrap();
        assert_eq!(target.name, "analytics");
        assert_eq!(target.kind, TargetKind::ClusterCustom);
        assert_eq!(target.host, "analytics.cluster-custom-abcdefghijkl.eu-west-1.rds.amazonaws.com");
        assert_eq!(target.port, 5433);
        assert_eq!(target.engine, "aurora-postgresql");
        assert_eq!(target.upstream.as_deref(), Some("vpc-b"));
        assert_eq!(target.tags, pairs(&[("env", "prod"), (UPSTREAM_TAG, "vpc-b")]));
        assert!(target.is_target());

        let stopped = cluster("ledger").status("stopped").build();
        let target = from_custom_endpoint(&endpoint("available"), &stopped, &no_rules(), ORIGIN).unwrap();
        assert_eq!(target.excluded, Some(Exclusion::NotAvailable { status: "stopped".to_owned() }));

        let target =
            from_custom_endpoint(&endpoint("creating"), &described_cluster, &no_rules(), ORIGIN).unwrap();
        assert_eq!(target.excluded, Some(Exclusion::NotAvailable { status: "creating".to_owned() }));
    }

    #[test]
    fn special_tags() {
        let read = |tags: &[(&str, &str)]| SpecialTags::read("db", &pairs(tags));
        assert_eq!(read(&[]), SpecialTags::default());
        assert_eq!(
            read(&[(DB_NAME_TAG, "app"), (LOCAL_PORT_TAG, "6543"), (UPSTREAM_TAG, "proxy.internal:5432")]),
            SpecialTags {
                database: Some("app".to_owned()),
                local_port: Some(6543),
                upstream: Some("proxy.internal:5432".to_owned()),
            }
        );
        assert_eq!(read(&[(LOCAL_PORT_TAG, " 6543 ")]).local_port, Some(6543));
        for invalid in ["0", "65536", "-1", "port", "5432x", ""] {
            assert_eq!(read(&[(LOCAL_PORT_TAG, invalid)]).local_port, None, "{invalid:?}");
        }
        assert_eq!(read(&[(DB_NAME_TAG, "")]).database, None);
        assert_eq!(read(&[(UPSTREAM_TAG, "  ")]).upstream, None);
        assert_eq!(read(&[("rds-auth-proxy:DB-NAME", "app")]).database, None, "tag keys are exact");
    }

    #[test]
    fn kind_and_exclusion_serde_names() {
        let kinds = [
            TargetKind::Instance,
            TargetKind::ClusterWriter,
            TargetKind::ClusterReader,
            TargetKind::ClusterCustom,
        ];
        let names: Vec<String> = kinds.iter().map(|kind| serde_json::to_string(kind).unwrap()).collect();
        assert_eq!(names, ["\"instance\"", "\"cluster-writer\"", "\"cluster-reader\"", "\"custom\""]);
        for kind in kinds {
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{kind}\""));
            assert_eq!(serde_json::from_str::<TargetKind>(&format!("\"{kind}\"")).unwrap(), kind);
        }
        let exclusions = [
            (Exclusion::IamDisabled, r#"{"reason":"iam-disabled"}"#),
            (Exclusion::TagRules, r#"{"reason":"tag-rules"}"#),
            (
                Exclusion::NotAvailable { status: "stopped".to_owned() },
                r#"{"reason":"not-available","status":"stopped"}"#,
            ),
        ];
        for (exclusion, json) in exclusions {
            assert_eq!(serde_json::to_string(&exclusion).unwrap(), json);
            assert_eq!(serde_json::from_str::<Exclusion>(json).unwrap(), exclusion);
        }
    }

    fn ranked(name: &str, account: (&str, usize), region: (&str, usize), kind: TargetKind) -> Ranked {
        let described = instance(name).build();
        let mut target =
            from_instance(&described, None, &no_rules(), Origin { account: account.0, region: region.0 })
                .unwrap();
        target.kind = kind;
        Ranked { account_rank: account.1, region_rank: region.1, target }
    }

    fn names(targets: &[DiscoveredTarget]) -> Vec<(&str, &str, &str)> {
        targets.iter().map(|t| (t.name.as_str(), t.account.as_str(), t.region.as_str())).collect()
    }

    #[test]
    fn unique_names_are_kept_and_sorted() {
        let targets = assign_unique_names(vec![
            ranked("b", ("main", 0), ("eu-west-1", 0), TargetKind::Instance),
            ranked("a", ("main", 0), ("us-east-1", 1), TargetKind::Instance),
        ]);
        assert_eq!(names(&targets), [("a", "main", "us-east-1"), ("b", "main", "eu-west-1")]);
    }

    #[test]
    fn clashes_are_renamed_by_region_then_account() {
        let input = || {
            vec![
                ranked("db", ("other", 1), ("eu-west-1", 0), TargetKind::Instance),
                ranked("db", ("main", 0), ("us-east-1", 1), TargetKind::Instance),
                ranked("db", ("other", 1), ("us-east-1", 1), TargetKind::Instance),
                ranked("db", ("main", 0), ("eu-west-1", 0), TargetKind::Instance),
                ranked("db", ("main", 0), ("eu-west-1", 0), TargetKind::ClusterWriter),
            ]
        };
        let expected = [
            ("db", "main", "eu-west-1"),
            ("db@main/eu-west-1", "main", "eu-west-1"),
            ("db@other", "other", "eu-west-1"),
            ("db@other/us-east-1", "other", "us-east-1"),
            ("db@us-east-1", "main", "us-east-1"),
        ];
        assert_eq!(names(&assign_unique_names(input())), expected);
        let mut reversed = input();
        reversed.reverse();
        assert_eq!(names(&assign_unique_names(reversed)), expected, "the input order does not matter");
        let kinds: Vec<_> = assign_unique_names(input()).iter().map(|t| t.kind).collect();
        assert_eq!(kinds[0], TargetKind::Instance);
        assert_eq!(kinds[1], TargetKind::ClusterWriter);
    }

    #[test]
    fn targets_keep_the_name_before_excluded_ones() {
        let mut excluded = ranked("db", ("main", 0), ("eu-west-1", 0), TargetKind::Instance);
        excluded.target.excluded = Some(Exclusion::IamDisabled);
        let targets = assign_unique_names(vec![
            excluded,
            ranked("db", ("main", 0), ("us-east-1", 1), TargetKind::Instance),
        ]);
        assert_eq!(names(&targets), [("db", "main", "us-east-1"), ("db@eu-west-1", "main", "eu-west-1")]);
    }

    #[test]
    fn a_renamed_target_never_takes_an_existing_name() {
        // An account named like a region: `db@eu-west-1` is taken by the first rename, so
        // the second falls back to the longer spelling.
        let targets = assign_unique_names(vec![
            ranked("db", ("main", 0), ("us-east-1", 0), TargetKind::Instance),
            ranked("db", ("main", 0), ("eu-west-1", 1), TargetKind::Instance),
            ranked("db", ("eu-west-1", 1), ("us-east-1", 0), TargetKind::Instance),
        ]);
        assert_eq!(
            names(&targets),
            [
                ("db", "main", "us-east-1"),
                ("db@eu-west-1", "main", "eu-west-1"),
                ("db@eu-west-1/us-east-1", "eu-west-1", "us-east-1")
            ]
        );
    }
}
