//! Discovery of the PostgreSQL databases on RDS a user may reach, across AWS accounts and
//! regions, for both proxies. It is the only library in the workspace that calls AWS APIs.
//!
//! What it owns:
//! - [`Discovery`]: one SDK configuration per account ([`AccountCredentials`]: the default
//!   chain, a profile, or an assumed role), and [`Discovery::discover`], which lists every
//!   account and region in parallel with DescribeDBInstances, DescribeDBClusters and, when a
//!   cluster has custom endpoints, DescribeDBClusterEndpoints, all paginated and filtered by
//!   RDS to the `postgres` and `aurora-postgresql` engines;
//! - [`DiscoveredTarget`]: one per instance (Aurora members included), cluster writer, cluster
//!   reader and custom endpoint, with the special tags `rds-auth-proxy:db-name`,
//!   `rds-auth-proxy:local-port` and `rds-auth-proxy:upstream` read, and an [`Exclusion`] when
//!   it cannot be used (IAM authentication off, filtered out by [`TagRules`], not available);
//! - unique names: a name two databases share is kept by the first and the others become
//!   `<name>@<region>` or `<name>@<account>`, the same way on every run;
//! - [`Discovery::credentials`]: the cached credentials provider that signs an account's
//!   tokens.
//!
//! Invariants: one account or region failing never hides the others ([`DiscoveryReport`]
//! carries both); errors name the API call and never include credentials.
//!
//! What it does not do: sign tokens (`rds-auth-token`), keep a cache of discovered targets or
//! refresh them on a timer (the proxies decide when to call [`Discovery::discover`]), talk
//! Postgres, or read the proxies' configuration files.

mod credentials;
mod discover;
mod error;
mod rules;
mod target;

pub use rds_auth_startup::Endpoint;

pub use crate::credentials::{AccountCredentials, ProfileFiles};
pub use crate::discover::{AccountConfig, Discovery, DiscoveryConfig, DiscoveryFailure, DiscoveryReport};
pub use crate::error::DiscoveryError;
pub use crate::rules::TagRules;
pub use crate::target::{
    DB_NAME_TAG, DiscoveredTarget, Exclusion, LOCAL_PORT_TAG, POSTGRES_ENGINES, TargetKind, UPSTREAM_TAG,
};
