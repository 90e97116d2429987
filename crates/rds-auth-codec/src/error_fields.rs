//! ErrorResponse and NoticeResponse bodies, and the SQLSTATE codes the proxies send.
//!
//! A body is a list of `Byte1 code` + string fields ending in a NUL (protocol-error-fields.html).
//! Fields are kept in their order and byte for byte, so an upstream error can be relayed with
//! nothing lost; unknown codes are kept too.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::WireError;
use crate::cursor::{Cursor, put_cstr};
use crate::frame::{Frame, write_message};

/// A five-character SQLSTATE (errcodes-appendix.html).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqlState(pub [u8; 5]);

impl SqlState {
    pub const PROTOCOL_VIOLATION: SqlState = SqlState(*b"08P01");
    pub const CONNECTION_FAILURE: SqlState = SqlState(*b"08006");
    pub const UNABLE_TO_CONNECT: SqlState = SqlState(*b"08001");
    pub const FEATURE_NOT_SUPPORTED: SqlState = SqlState(*b"0A000");
    pub const INVALID_AUTHORIZATION: SqlState = SqlState(*b"28000");
    pub const TOO_MANY_CONNECTIONS: SqlState = SqlState(*b"53300");
    pub const CONFIGURATION_LIMIT_EXCEEDED: SqlState = SqlState(*b"53400");
    pub const PROGRAM_LIMIT_EXCEEDED: SqlState = SqlState(*b"54000");
    pub const ADMIN_SHUTDOWN: SqlState = SqlState(*b"57P01");
    pub const CANNOT_CONNECT_NOW: SqlState = SqlState(*b"57P03");
    pub const INTERNAL_ERROR: SqlState = SqlState(*b"XX000");

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("XX000")
    }
}

impl fmt::Debug for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Field codes (protocol-error-fields.html).
pub mod code {
    pub const SEVERITY: u8 = b'S';
    pub const SEVERITY_NONLOCALIZED: u8 = b'V';
    pub const SQLSTATE: u8 = b'C';
    pub const MESSAGE: u8 = b'M';
    pub const DETAIL: u8 = b'D';
    pub const HINT: u8 = b'H';
    pub const POSITION: u8 = b'P';
    pub const INTERNAL_POSITION: u8 = b'p';
    pub const INTERNAL_QUERY: u8 = b'q';
    pub const WHERE: u8 = b'W';
    pub const SCHEMA: u8 = b's';
    pub const TABLE: u8 = b't';
    pub const COLUMN: u8 = b'c';
    pub const DATA_TYPE: u8 = b'd';
    pub const CONSTRAINT: u8 = b'n';
    pub const FILE: u8 = b'F';
    pub const LINE: u8 = b'L';
    pub const ROUTINE: u8 = b'R';
}

/// The fields of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    fields: Vec<(u8, Bytes)>,
}

impl ErrorFields {
    /// A FATAL error as a proxy sends it: severity (localised and not), SQLSTATE and message.
    pub fn fatal(sqlstate: SqlState, message: impl Into<String>) -> ErrorFields {
        ErrorFields::new("FATAL", sqlstate, message)
    }

    pub fn new(severity: &'static str, sqlstate: SqlState, message: impl Into<String>) -> ErrorFields {
        let mut fields = ErrorFields::default();
        fields.push(code::SEVERITY, Bytes::from_static(severity.as_bytes()));
        fields.push(code::SEVERITY_NONLOCALIZED, Bytes::from_static(severity.as_bytes()));
        fields.push(code::SQLSTATE, Bytes::copy_from_slice(&sqlstate.0));
        fields.push(code::MESSAGE, message.into());
        fields
    }

    pub fn detail(mut self, detail: impl Into<String>) -> ErrorFields {
        self.push(code::DETAIL, detail.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> ErrorFields {
        self.push(code::HINT, hint.into());
        self
    }

    /// Appends a field. NUL bytes would end the string early on the wire, so they are dropped.
    pub fn push(&mut self, code: u8, value: impl Into<Bytes>) {
        let value: Bytes = value.into();
        let value = if value.contains(&0) {
            value.iter().copied().filter(|&b| b != 0).collect::<Vec<u8>>().into()
        } else {
            value
        };
        if code != 0 {
            self.fields.push((code, value));
        }
    }

    pub fn get(&self, code: u8) -> Option<&Bytes> {
        self.fields.iter().find(|(c, _)| *c == code).map(|(_, v)| v)
    }

    pub fn sqlstate(&self) -> Option<SqlState> {
        let value = self.get(code::SQLSTATE)?;
        <[u8; 5]>::try_from(value.as_ref()).ok().map(SqlState)
    }

    pub fn message(&self) -> String {
        self.get(code::MESSAGE).map(|m| String::from_utf8_lossy(m).into_owned()).unwrap_or_default()
    }

    /// The non-localised severity, falling back to the localised one as old servers send only
    /// that.
    pub fn severity(&self) -> Option<&Bytes> {
        self.get(code::SEVERITY_NONLOCALIZED).or_else(|| self.get(code::SEVERITY))
    }

    pub fn iter(&self) -> impl Iterator<Item = (u8, &Bytes)> {
        self.fields.iter().map(|(c, v)| (*c, v))
    }

    /// Adds a HINT unless the message already has one, leaving every other field untouched.
    pub fn add_hint_if_missing(&mut self, hint: impl Into<String>) -> bool {
        if self.get(code::HINT).is_some() {
            return false;
        }
        self.push(code::HINT, hint.into());
        true
    }

    pub fn decode(body: Bytes) -> Result<ErrorFields, WireError> {
        let mut cursor = Cursor::new(body, "error fields");
        let mut fields = ErrorFields::default();
        loop {
            let code = cursor.u8()?;
            if code == 0 {
                cursor.finish()?;
                return Ok(fields);
            }
            let value = cursor.cstr()?;
            fields.fields.push((code, value));
        }
    }

    fn encode_body(&self, buf: &mut BytesMut) {
        for (code, value) in &self.fields {
            buf.put_u8(*code);
            put_cstr(buf, value);
        }
        buf.put_u8(0);
    }

    /// Encodes the fields as an ErrorResponse (`E`).
    pub fn encode_error(&self, buf: &mut BytesMut) {
        write_message(buf, b'E', |buf| self.encode_body(buf));
    }

    /// Encodes the fields as a NoticeResponse (`N`).
    pub fn encode_notice(&self, buf: &mut BytesMut) {
        write_message(buf, b'N', |buf| self.encode_body(buf));
    }

    pub fn to_error_frame(&self) -> Frame {
        let mut body = BytesMut::new();
        self.encode_body(&mut body);
        Frame::new(b'E', body.freeze())
    }

    pub fn to_error_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode_error(&mut buf);
        buf.freeze()
    }
}

impl FromIterator<(u8, Bytes)> for ErrorFields {
    fn from_iter<I: IntoIterator<Item = (u8, Bytes)>>(iter: I) -> ErrorFields {
        let mut fields = ErrorFields::default();
        for (code, value) in iter {
            fields.push(code, value);
        }
        fields
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    #[test]
    fn builder_writes_the_fields_psql_prints() {
        let bytes = ErrorFields::fatal(SqlState::INVALID_AUTHORIZATION, "target not allowed")
            .detail("db:5432")
            .hint("ask for it")
            .to_error_bytes();
        expect![[r#"
            b"E\0\0\0CSFATAL\0VFATAL\0C28000\0Mtarget not allowed\0Ddb:5432\0Hask for it\0\0"
        "#]]
        .assert_debug_eq(&bytes);
    }

    #[test]
    fn hint_is_added_once_and_other_fields_survive() {
        let mut upstream: ErrorFields = [
            (b'S', Bytes::from_static(b"FATAL")),
            (b'C', Bytes::from_static(b"28000")),
            (b'M', Bytes::from_static(b"PAM authentication failed for user \"x\"")),
            (b'F', Bytes::from_static(b"auth.c")),
            (b'Z', Bytes::from_static(b"unknown field kept")),
        ]
        .into_iter()
        .collect();
        assert!(upstream.add_hint_if_missing("check the grant"));
        assert!(!upstream.add_hint_if_missing("second hint"));
        let round = ErrorFields::decode(upstream.to_error_frame().body).unwrap();
        assert_eq!(round, upstream);
        assert_eq!(round.get(b'Z').unwrap().as_ref(), b"unknown field kept");
        assert_eq!(round.sqlstate(), Some(SqlState::INVALID_AUTHORIZATION));
    }
}
