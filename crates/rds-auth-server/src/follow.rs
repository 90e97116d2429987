//! An allowlist that follows RDS: discovery on an interval, with the same tag rules as the
//! client proxies, merged with the static targets.
//!
//! A refresh replaces the allowlist whole, so sessions that are open keep running and new
//! sessions see the new set. When an account or region cannot be listed, the targets it
//! contributed last time stay allowed (the last good set), so an AWS hiccup never locks
//! everyone out; a database that discovery still sees but that stopped matching the rules is
//! removed at once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rds_auth_discovery::{Discovery, DiscoveryReport};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::{Allowlist, AuthModes, Principals, ServerConfig, TargetRule};

/// What discovery-driven targets accept, and how often to look.
#[derive(Debug, Clone)]
pub struct FollowConfig {
    pub interval: Duration,
    /// The auth modes of discovered targets.
    pub modes: AuthModes,
    /// Who may reach discovered targets.
    pub principals: Principals,
}

/// What a refresh changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshOutcome {
    pub total: usize,
    pub discovered: usize,
    pub kept_from_failed: usize,
    pub failures: usize,
}

/// The source label of a discovered rule: which account and region it came from.
fn source(account: &str, region: &str) -> String {
    format!("discovery:{account}/{region}")
}

/// Builds the next allowlist from the static targets, a discovery report and the previous
/// allowlist. The static targets always stay, and win over a discovered one at the same
/// endpoint.
pub fn merge(
    static_rules: &[TargetRule],
    previous: &Allowlist,
    report: &DiscoveryReport,
    follow: &FollowConfig,
) -> (Allowlist, RefreshOutcome) {
    let failed: BTreeSet<String> = report.failures.iter().map(|f| source(&f.account, &f.region)).collect();
    let mut rules: Vec<TargetRule> = static_rules.to_vec();
    let is_static =
        |endpoint: &rds_auth_startup::Endpoint| static_rules.iter().any(|r| &r.endpoint == endpoint);
    let mut discovered = 0;
    for target in report.usable() {
        let Ok(endpoint) = target.endpoint() else { continue };
        if is_static(&endpoint) {
            continue;
        }
        discovered += 1;
        rules.push(TargetRule {
            endpoint,
            modes: follow.modes,
            source: source(&target.account, &target.region),
            principals: follow.principals.clone(),
        });
    }
    // The last good set of whatever could not be listed this time.
    let mut kept = 0;
    for rule in previous.rules() {
        if failed.contains(&rule.source)
            && !is_static(&rule.endpoint)
            && !rules.iter().any(|r| r.endpoint == rule.endpoint)
        {
            kept += 1;
            rules.push(rule.clone());
        }
    }
    let outcome = RefreshOutcome {
        total: rules.len(),
        discovered,
        kept_from_failed: kept,
        failures: report.failures.len(),
    };
    (Allowlist::new(rules), outcome)
}

/// Refreshes `config`'s allowlist from `discovery` every `follow.interval` until `stop`.
pub async fn follow_discovery(
    config: Arc<ServerConfig>,
    discovery: Arc<Discovery>,
    follow: FollowConfig,
    stop: CancellationToken,
) {
    loop {
        let report = discovery.discover().await;
        let (allowlist, outcome) = merge(&config.static_rules(), &config.allowlist(), &report, &follow);
        let label = if report.failures.is_empty() { "ok" } else { "partial" };
        Metrics::outcome(&config.metrics.discovery_refreshes, label);
        for failure in &report.failures {
            warn!(account = %failure.account, region = %failure.region, error = %failure.error, "discovery failed: keeping that part of the last allowlist");
        }
        config.set_allowlist(allowlist);
        info!(
            targets = outcome.total,
            discovered = outcome.discovered,
            kept_from_failed = outcome.kept_from_failed,
            failures = outcome.failures,
            "allowlist refreshed from discovery"
        );
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(follow.interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use rds_auth_discovery::{DiscoveredTarget, DiscoveryError, DiscoveryFailure, Exclusion, TargetKind};

    use super::*;

    fn found(name: &str, host: &str, region: &str, excluded: Option<Exclusion>) -> DiscoveredTarget {
        DiscoveredTarget {
            name: name.into(),
            kind: TargetKind::Instance,
            engine: "postgres".into(),
            engine_version: "16.3".into(),
            host: host.into(),
            port: 5432,
            region: region.into(),
            account: "prod".into(),
            iam_enabled: true,
            tags: Vec::new(),
            database: None,
            local_port: None,
            upstream: None,
            excluded,
        }
    }

    fn follow() -> FollowConfig {
        FollowConfig {
            interval: Duration::from_secs(60),
            modes: AuthModes::IAM_ONLY,
            principals: Principals::ANYONE,
        }
    }

    fn statics() -> Vec<TargetRule> {
        vec![TargetRule {
            endpoint: "static.example.com:5432".parse().unwrap(),
            modes: AuthModes::IAM_ONLY,
            source: "static".into(),
            principals: Principals::ANYONE,
        }]
    }

    fn allowed(list: &Allowlist, endpoint: &str) -> bool {
        list.get(&endpoint.parse().unwrap()).is_some()
    }

    #[test]
    fn discovered_targets_join_the_static_ones_and_excluded_ones_do_not() {
        let report = DiscoveryReport {
            targets: vec![
                found("a", "a.rds.example.com", "us-east-1", None),
                found("b", "b.rds.example.com", "us-east-1", Some(Exclusion::IamDisabled)),
            ],
            failures: Vec::new(),
        };
        let (list, outcome) = merge(&statics(), &Allowlist::default(), &report, &follow());
        assert!(allowed(&list, "static.example.com:5432"));
        assert!(allowed(&list, "a.rds.example.com:5432"));
        assert!(!allowed(&list, "b.rds.example.com:5432"));
        assert_eq!(outcome, RefreshOutcome { total: 2, discovered: 1, kept_from_failed: 0, failures: 0 });
    }

    #[test]
    fn a_failed_region_keeps_its_last_good_targets_and_a_healthy_one_drops_its_gone_ones() {
        let first = DiscoveryReport {
            targets: vec![
                found("a", "a.rds.example.com", "us-east-1", None),
                found("e", "e.rds.example.com", "eu-west-1", None),
            ],
            failures: Vec::new(),
        };
        let (list, _) = merge(&statics(), &Allowlist::default(), &first, &follow());
        // eu-west-1 fails; us-east-1 answers without `a`, which stopped matching the rules.
        let second = DiscoveryReport {
            targets: vec![found("a", "a.rds.example.com", "us-east-1", Some(Exclusion::TagRules))],
            failures: vec![DiscoveryFailure {
                account: "prod".into(),
                region: "eu-west-1".into(),
                error: DiscoveryError::Request {
                    operation: "DescribeDBInstances",
                    reason: "timed out".into(),
                },
            }],
        };
        let (list, outcome) = merge(&statics(), &list, &second, &follow());
        assert!(allowed(&list, "e.rds.example.com:5432"), "the failed region's targets stay");
        assert!(!allowed(&list, "a.rds.example.com:5432"), "a target that no longer matches goes");
        assert_eq!(outcome.kept_from_failed, 1);
    }
}
