//! The Postgres wire messages that rds-auth-proxy touches, as types with encoders and decoders
//! over `bytes`.
//!
//! What it owns:
//! - the startup phase: SSLRequest, GSSENCRequest, CancelRequest (the 4-byte secret of protocol
//!   3.0 and the variable key of 3.2), StartupMessage for any 3.x with its parameters byte for
//!   byte, and recognising a TLS ClientHello sent as the very first bytes ([`startup`]);
//! - generic framing, a type byte plus a length, for every other message ([`frame`]);
//! - the backend messages the proxies read or rewrite: every Authentication request,
//!   ParameterStatus, BackendKeyData, NegotiateProtocolVersion, ReadyForQuery, ErrorResponse and
//!   NoticeResponse ([`backend`]);
//! - the frontend messages of the authentication exchange: PasswordMessage,
//!   SASLInitialResponse and SASLResponse ([`frontend`]);
//! - an ErrorResponse builder and the SQLSTATE codes the proxies use ([`error_fields`]);
//! - a message-boundary scanner for byte relays that never decodes bodies ([`boundary`]).
//!
//! Invariants:
//! - No I/O and no tokio: decoders take `&mut BytesMut`, consume a whole message or nothing, and
//!   return `Ok(None)` when more bytes are needed.
//! - No panic on any input, and no allocation sized by a length a peer claims: a length is
//!   checked against the caller's limit before anything waits for it.
//! - Limits are parameters ([`Limits`]), never constants: the proxies use a larger startup limit
//!   between themselves than toward Postgres clients.
//!
//! What it does not do: it does not decide anything. Which messages are allowed when, and what
//! a proxy answers, belongs to the proxy crates.

pub mod backend;
pub mod boundary;
mod cursor;
mod error;
pub mod error_fields;
pub mod frame;
pub mod frontend;
pub mod startup;

pub use crate::error::WireError;
pub use crate::error_fields::{ErrorFields, SqlState};
pub use crate::startup::{Params, ProtocolVersion, StartupPacket};

/// Size limits a decoder enforces. Both are parameters because the two legs differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest startup packet body, after the length word, in bytes.
    pub max_startup_len: usize,
    /// Largest regular message, counting its length word but not its type byte.
    pub max_message_len: usize,
}

impl Limits {
    /// PostgreSQL's own `MAX_STARTUP_PACKET_LENGTH` (pqcomm.h): what a Postgres client may send.
    pub const POSTGRES_STARTUP: usize = 10_000;

    /// The limits toward Postgres clients: PostgreSQL's startup limit, and messages of up to
    /// 1 GiB, which is PostgreSQL's `PQ_LARGE_MESSAGE_LIMIT`.
    pub const fn postgres() -> Limits {
        Limits { max_startup_len: Self::POSTGRES_STARTUP, max_message_len: 1 << 30 }
    }
}

#[cfg(test)]
mod proptests;
