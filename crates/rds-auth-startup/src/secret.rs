use std::fmt;

use bytes::Bytes;

/// A token or a password. `Debug` and `Display` print `[redacted]`, so a secret cannot reach a
/// log line or an error message by accident; reading it takes an explicit `expose` call.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Bytes);

impl Secret {
    pub fn new(bytes: impl Into<Bytes>) -> Secret {
        Secret(bytes.into())
    }

    pub fn expose_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The secret as text, if it is UTF-8 (IAM tokens always are).
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
