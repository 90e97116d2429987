use std::io;

use rds_auth_codec::WireError;

/// Reading or writing a Postgres stream failed.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The peer closed the connection.
    #[error("the peer closed the connection")]
    Eof,
    /// The bytes were not the protocol.
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl IoError {
    /// Whether the peer simply went away, which is worth no more than an `info` line.
    pub fn is_disconnect(&self) -> bool {
        match self {
            IoError::Eof => true,
            IoError::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            ),
            IoError::Wire(_) => false,
        }
    }
}
