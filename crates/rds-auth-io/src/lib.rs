//! The async plumbing both proxies share, over tokio and rustls.
//!
//! What it owns:
//! - [`accept`]: the startup negotiation both proxies run as servers: encryption requests,
//!   direct TLS with ALPN, each request once, no early data;
//! - [`PgStream`]: reading whole startup packets and messages through the pure codec, with a
//!   read buffer that is never lost: it can be checked for early data before TLS starts and is
//!   handed on intact when a session switches to relaying;
//! - [`Transport`]: a stream that is plain or TLS, server or client side, with bytes already
//!   read put back in front ([`Rewind`]), which is how a direct-TLS ClientHello reaches rustls;
//! - [`tls`]: loading PEM files, building rustls configurations on the one crypto provider
//!   (aws-lc-rs), and reading a peer certificate's identity;
//! - [`socket`]: TCP_NODELAY and keepalive on every socket;
//! - [`relay`]: the post-authentication byte pipe. It follows message boundaries from headers
//!   alone, knows the ReadyForQuery status and how many queries are in flight, counts bytes,
//!   propagates half-closes, and can end a session at a message boundary.
//!
//! What it does not do: decide anything after the StartupMessage. What a session may do, and
//! what to answer, is the proxies' business.

pub mod accept;
pub mod certgen;
mod error;
mod pg_stream;
pub mod relay;
mod rewind;
pub mod socket;
pub mod tls;
mod transport;

pub use crate::error::IoError;
pub use crate::pg_stream::PgStream;
pub use crate::rewind::Rewind;
pub use crate::transport::Transport;
