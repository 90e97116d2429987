use crate::error_fields::SqlState;

/// A byte sequence that is not the Postgres protocol we expect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("invalid length of startup packet: {len} bytes")]
    InvalidStartupLength { len: u64 },
    #[error("startup packet of {len} bytes exceeds the limit of {max} bytes")]
    StartupTooLarge { len: u64, max: usize },
    #[error("unsupported frontend protocol {major}.{minor}: the proxy supports protocol 3")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("unrecognized request code {0} in the startup packet")]
    UnknownRequestCode(u32),
    #[error("invalid message length {len} for message type {tag:#04x}")]
    InvalidMessageLength { tag: u8, len: u64 },
    #[error("message of type {tag:#04x} is {len} bytes, over the limit of {max} bytes")]
    MessageTooLarge { tag: u8, len: u64, max: usize },
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: &'static str },
    /// A CancelRequest of the wrong size. It is never answered, so callers close in silence.
    #[error("malformed cancel request: key length out of range")]
    BadCancelRequest,
}

impl WireError {
    /// The SQLSTATE a proxy reports for this error, matching what PostgreSQL itself would send.
    pub fn sqlstate(&self) -> SqlState {
        match self {
            WireError::UnsupportedProtocol { .. } => SqlState::FEATURE_NOT_SUPPORTED,
            WireError::StartupTooLarge { .. } | WireError::MessageTooLarge { .. } => {
                SqlState::PROGRAM_LIMIT_EXCEEDED
            }
            _ => SqlState::PROTOCOL_VIOLATION,
        }
    }

    pub(crate) fn malformed(what: &'static str, why: &'static str) -> WireError {
        WireError::Malformed { what, why }
    }
}
