//! The server proxy: it runs in the VPC, next to the databases.
//!
//! What it owns, per connection:
//! 1. the handshake (`rds_auth_io::accept`): direct TLS with ALPN `postgresql` or the Postgres way
//!    (SSLRequest, then TLS), a client certificate required by default, each encryption
//!    request accepted once, early data refused, all under a startup timeout;
//! 2. the session: taking the target and credential out of the startup
//!    message, refusing any target that is not on the [`Allowlist`] before a socket is
//!    opened, checking an IAM token's endpoint, user and validity window before RDS sees it,
//!    connecting to the database through `rds-auth-upstream` and answering its
//!    authentication request, relaying the startup tail, then relaying bytes;
//! 3. query cancel across replicas with no shared store: the key a client proxy receives is
//!    a sealed cancel token that any replica holding the shared key can open (`cancel.rs`);
//!    a client that vanishes mid-query gets its statement cancelled upstream;
//! 4. an allowlist that follows RDS through discovery, refreshed on an interval and keeping
//!    the last good set of whatever could not be listed ([`follow_discovery`]);
//! 5. every failure it produces itself as a FATAL ErrorResponse with a real SQLSTATE and a
//!    hint ([`SessionError`]);
//! 6. operations: health endpoints and Prometheus metrics on their own port
//!    ([`serve_health`]), one audit line per session, a cap on connections and a rate limit
//!    per caller (FATAL 53300), PROXY protocol v2 behind a load balancer, the caller's IAM
//!    identity from a presigned `sts:GetCallerIdentity` ([`IdentityVerifier`]) with
//!    per-target principal rules, and a drain on shutdown that keeps accepting until load
//!    balancers have noticed ([`run`]).
//!
//! What it does not do: sign tokens or read configuration files. The binary
//! `rds-auth-proxy-server` builds a [`ServerConfig`] and calls [`run`].

mod allowlist;
mod cancel;
mod config;
mod error;
mod follow;
mod health;
mod identity;
mod limits;
mod metrics;
mod proxy_protocol;
mod server;
mod session;

pub use crate::allowlist::{Allowlist, AuthMode, AuthModes, PrincipalPatternError, Principals, TargetRule};
pub use crate::cancel::{CancelKeyError, CancelKeys, CancelState};
pub use crate::config::{ServerConfig, ServerSettings, ShutdownConfig};
pub use crate::error::SessionError;
pub use crate::follow::{FollowConfig, RefreshOutcome, follow_discovery, merge};
pub use crate::health::{ProbeError, probe, serve_health};
pub use crate::identity::{
    CallerIdentity, IdentityConfig, IdentityError, IdentityVerifier, StsEndpoint, principal_of,
};
pub use crate::limits::LimitsConfig;
pub use crate::metrics::{Metrics, Phase};
pub use crate::proxy_protocol::{ProxyHeaderError, read_header};
pub use crate::server::run;
