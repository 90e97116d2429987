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
//!    hint ([`SessionError`]).
//!
//! What it does not do: sign tokens or read configuration files. The binary
//! `rds-auth-proxy-server` builds a [`ServerConfig`] and calls [`run`].

mod allowlist;
mod cancel;
mod config;
mod error;
mod follow;
mod server;
mod session;

pub use crate::allowlist::{Allowlist, AuthMode, AuthModes, TargetRule};
pub use crate::cancel::{CancelKeyError, CancelKeys, CancelState};
pub use crate::config::ServerConfig;
pub use crate::error::SessionError;
pub use crate::follow::{FollowConfig, RefreshOutcome, follow_discovery, merge};
pub use crate::server::run;
