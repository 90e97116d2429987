//! The client proxy: it runs on a laptop, next to the user's AWS credentials.
//!
//! What it owns, per connection on a local listener:
//! 1. the startup negotiation toward any Postgres client (`rds_auth_io::accept`): `N` to
//!    SSLRequest and GSSENCRequest unless local TLS is on, direct TLS only with local TLS;
//! 2. protocol negotiation: any 3.x is accepted and answered with NegotiateProtocolVersion when
//!    the client asked for more than 3.2 or sent `_pq_.` options, which are stripped;
//! 3. the credential: an IAM token signed (or reused from the [`TokenCache`]) for exactly the
//!    startup user and the target's endpoint, port and region, a static password, or nothing
//!    in passthrough mode;
//! 4. the startup rewrite (`rds_auth_startup::inject`) and the connection to the server proxy:
//!    direct TLS 1.3 with ALPN `postgresql`, the server proxy verified against a configured CA,
//!    the user's client certificate presented, usually on a connection handshaked ahead of
//!    time ([`WarmPool`]);
//! 5. relaying the startup tail, then bytes, until either side ends;
//! 6. query cancel ([`CancelRegistry`]): the client sees the real backend pid and a key of
//!    ours, which leads back to the server proxy's sealed cancel token.
//!
//! 7. direct mode ([`Route::Direct`]), where the client proxy reaches the database itself
//!    through `rds-auth-upstream`, and tunnels ([`Tunnel`]) to server proxies behind
//!    `kubectl port-forward` or any command that opens a local port.
//!
//! What it does not do: read configuration files, or talk to AWS except through the
//! credential provider it is given. The binary `rds-auth-proxy` builds the [`Target`]s.
//!
//! [`TokenCache`]: rds_auth_token::TokenCache

mod cancel;
mod checks;
mod credentials;
mod error;
mod proxy;
mod session;
mod target;
mod tunnel;
mod warm;

pub use crate::cancel::CancelRegistry;
pub use crate::checks::{LoginCheck, ProxyCheck, check_login, check_server_proxy};
pub use crate::credentials::{CachedCredentials, cached};
pub use crate::error::ClientError;
pub use crate::proxy::{Listener, LocalSocket, Shared, run};
pub use crate::target::{IdentitySigning, ProxyAddress, Route, ServerProxy, Target, TargetAuth};
pub use crate::tunnel::{Tunnel, TunnelPort, TunnelSpec};
pub use crate::warm::{WarmPool, WarmSettings};
