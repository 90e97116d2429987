//! The database side of a session: reaching RDS (or any Postgres) over verified TLS and
//! authenticating to it. The server proxy uses it for every session; the client proxy uses it
//! in direct mode, where the laptop reaches the database itself.
//!
//! What it owns:
//! - [`Resolver`]: endpoint names to addresses, with configured overrides, and the refusal of
//!   loopback, link-local and other addresses a name should never lead to (DNS rebinding);
//! - [`connect`]: TCP with a timeout and bounded retries, SSLRequest and exactly one byte of
//!   answer, which must be `S`, then TLS verified against the configured roots with the
//!   endpoint name as SNI. Nothing is ever sent in plaintext after the SSLRequest;
//! - [`AuthLoop`]: the authentication exchange as a state machine without I/O: a token or
//!   password for cleartext requests, MD5, SCRAM-SHA-256 with and without channel binding, or
//!   passthrough of the client's own exchange with SCRAM-SHA-256-PLUS withheld; [`authenticate`]
//!   drives it over real streams;
//! - [`send_cancel`]: a CancelRequest to the exact address a session used, inside TLS;
//! - [`UpstreamError`]: every failure with its SQLSTATE, message and hint. Errors the database
//!   sends are kept whole; RDS's `PAM authentication failed` gains a hint listing its causes.
//!
//! What it does not do: decide which targets are allowed. Callers check their allowlist
//! before calling anything here.

mod auth;
mod cancel;
mod channel_binding;
mod connect;
mod error;
mod resolve;

pub use crate::auth::{AuthLoop, AuthStep, Credential, authenticate};
pub use crate::cancel::send_cancel;
pub use crate::connect::{Connected, UpstreamConfig, connect, login};
pub use crate::error::{PAM_FAILURE_HINT, UpstreamError, is_pam_failure};
pub use crate::resolve::Resolver;
