//! The startup phase: packets that have a length but no type byte.
//!
//! Every packet here starts with `Int32 length` (counting itself) and `Int32 code`
//! (protocol.sgml, "SSLRequest", "GSSENCRequest", "CancelRequest", "StartupMessage").

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::WireError;
use crate::cursor::{Cursor, put_cstr};

/// `1234 << 16 | 5679` (pqcomm.h `NEGOTIATE_SSL_CODE`).
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// `1234 << 16 | 5680` (pqcomm.h `NEGOTIATE_GSS_CODE`).
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// `1234 << 16 | 5678` (pqcomm.h `CANCEL_REQUEST_CODE`).
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// The 1234 major number that marks a request code rather than a protocol version.
const REQUEST_MAJOR: u32 = 1234;

/// The shortest cancel key: protocol 3.0's 4-byte secret.
pub const MIN_CANCEL_KEY_LEN: usize = 4;
/// The longest cancel key protocol 3.2 allows (protocol.sgml, "BackendKeyData").
pub const MAX_CANCEL_KEY_LEN: usize = 256;

/// The first byte of a TLS handshake record: a client that starts with this is doing direct TLS
/// (`sslnegotiation=direct`). It can never begin a startup packet under any sane limit, because
/// the length would be over 369 MB.
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Whether the first bytes of a connection are a TLS ClientHello rather than a startup packet.
pub fn is_tls_client_hello(first_bytes: &[u8]) -> bool {
    first_bytes.first() == Some(&TLS_HANDSHAKE_RECORD)
}

/// A protocol version as `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion {
    pub major: u16,
    pub minor: u16,
}

impl ProtocolVersion {
    pub const V3_0: ProtocolVersion = ProtocolVersion { major: 3, minor: 0 };
    pub const V3_2: ProtocolVersion = ProtocolVersion { major: 3, minor: 2 };

    pub const fn new(major: u16, minor: u16) -> ProtocolVersion {
        ProtocolVersion { major, minor }
    }

    fn from_code(code: u32) -> ProtocolVersion {
        ProtocolVersion { major: (code >> 16) as u16, minor: (code & 0xffff) as u16 }
    }

    fn code(self) -> u32 {
        (u32::from(self.major) << 16) | u32::from(self.minor)
    }

    /// Whether BackendKeyData and CancelRequest carry a variable-length key (protocol 3.2 on).
    pub fn has_long_cancel_keys(self) -> bool {
        self >= ProtocolVersion::V3_2
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Startup parameters in the order the client sent them, with names and values kept as bytes.
///
/// Values are not guaranteed to be UTF-8 (asyncpg sends `client_encoding='utf-8'`, quotes
/// included, and other encodings exist), so nothing here trims, lowercases or re-encodes them.
/// `Debug` prints names only: values can hold secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(Bytes, Bytes)>,
}

impl Params {
    pub fn new() -> Params {
        Params::default()
    }

    /// Appends a parameter. Names and values cannot contain NUL, and a name cannot be empty,
    /// because the wire format could not carry them.
    pub fn push(&mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<(), WireError> {
        let (name, value) = (name.into(), value.into());
        if name.is_empty() {
            return Err(WireError::malformed("startup parameter", "empty name"));
        }
        if name.contains(&0) || value.contains(&0) {
            return Err(WireError::malformed("startup parameter", "NUL inside a name or value"));
        }
        self.pairs.push((name, value));
        Ok(())
    }

    /// The value of the last parameter called `name`, which is the one PostgreSQL would use.
    pub fn get(&self, name: &[u8]) -> Option<&Bytes> {
        self.pairs.iter().rev().find(|(n, _)| n.as_ref() == name).map(|(_, v)| v)
    }

    pub fn count(&self, name: &[u8]) -> usize {
        self.pairs.iter().filter(|(n, _)| n.as_ref() == name).count()
    }

    /// Removes every parameter called `name` and returns their values in order.
    pub fn remove(&mut self, name: &[u8]) -> Vec<Bytes> {
        let mut removed = Vec::new();
        self.pairs.retain(|(n, v)| {
            if n.as_ref() == name {
                removed.push(v.clone());
                false
            } else {
                true
            }
        });
        removed
    }

    /// Keeps only the parameters for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8], &[u8]) -> bool) {
        self.pairs.retain(|(n, v)| keep(n, v));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &Bytes)> {
        self.pairs.iter().map(|(n, v)| (n, v))
    }

    pub fn names(&self) -> impl Iterator<Item = &Bytes> {
        self.pairs.iter().map(|(n, _)| n)
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    fn encoded_len(&self) -> usize {
        self.pairs.iter().map(|(n, v)| n.len() + v.len() + 2).sum::<usize>() + 1
    }

    fn encode(&self, buf: &mut BytesMut) {
        for (name, value) in &self.pairs {
            put_cstr(buf, name);
            put_cstr(buf, value);
        }
        buf.put_u8(0);
    }

    fn decode(body: Bytes) -> Result<Params, WireError> {
        // The terminator must be exactly the last byte (backend_startup.c, "invalid startup
        // packet layout: expected terminator as last byte").
        let mut cursor = Cursor::new(body, "startup packet");
        let mut params = Params::new();
        loop {
            let name = cursor.cstr()?;
            if name.is_empty() {
                return if cursor.is_empty() {
                    Ok(params)
                } else {
                    Err(WireError::malformed("startup packet", "expected terminator as last byte"))
                };
            }
            let value = cursor.cstr()?;
            params.pairs.push((name, value));
        }
    }
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.pairs.iter().map(|(n, _)| String::from_utf8_lossy(n))).finish()
    }
}

impl FromIterator<(Bytes, Bytes)> for Params {
    /// Collects pairs without checking them; use [`Params::push`] for untrusted input.
    fn from_iter<I: IntoIterator<Item = (Bytes, Bytes)>>(iter: I) -> Params {
        Params { pairs: iter.into_iter().collect() }
    }
}

/// A StartupMessage: a protocol version and the parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub version: ProtocolVersion,
    pub params: Params,
}

/// A CancelRequest. Protocol 3.0 keys are 4 bytes; 3.2 keys are up to 256.
#[derive(Clone, PartialEq, Eq)]
pub struct CancelRequest {
    pub pid: u32,
    pub key: Bytes,
}

impl fmt::Debug for CancelRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelRequest").field("pid", &self.pid).field("key_len", &self.key.len()).finish()
    }
}

/// Anything a client may send before its StartupMessage has been accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    CancelRequest(CancelRequest),
    Startup(StartupMessage),
}

impl StartupPacket {
    /// Decodes one startup-phase packet from the front of `buf`.
    ///
    /// `max_len` bounds the body after the length word, as PostgreSQL's
    /// `MAX_STARTUP_PACKET_LENGTH` does. The length is checked before waiting for the body, so
    /// a peer cannot make the caller buffer more than `max_len + 4` bytes.
    pub fn decode(buf: &mut BytesMut, max_len: usize) -> Result<Option<StartupPacket>, WireError> {
        let Some(header) = buf.get(..4) else { return Ok(None) };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len < 8 {
            return Err(WireError::InvalidStartupLength { len: len as u64 });
        }
        if len - 4 > max_len {
            return Err(WireError::StartupTooLarge { len: (len - 4) as u64, max: max_len });
        }
        if buf.len() < len {
            return Ok(None);
        }
        let mut packet = buf.split_to(len).freeze();
        packet.advance(4);
        let code = packet.get_u32();
        let body = packet;
        match code {
            SSL_REQUEST_CODE | GSSENC_REQUEST_CODE if !body.is_empty() => {
                Err(WireError::malformed("encryption request", "unexpected bytes after the code"))
            }
            SSL_REQUEST_CODE => Ok(Some(StartupPacket::SslRequest)),
            GSSENC_REQUEST_CODE => Ok(Some(StartupPacket::GssEncRequest)),
            CANCEL_REQUEST_CODE => {
                let mut cursor = Cursor::new(body, "cancel request");
                let pid = cursor.u32().map_err(|_| WireError::BadCancelRequest)?;
                let key = cursor.rest();
                if !(MIN_CANCEL_KEY_LEN..=MAX_CANCEL_KEY_LEN).contains(&key.len()) {
                    return Err(WireError::BadCancelRequest);
                }
                Ok(Some(StartupPacket::CancelRequest(CancelRequest { pid, key })))
            }
            code if code >> 16 == REQUEST_MAJOR => Err(WireError::UnknownRequestCode(code)),
            code => {
                let version = ProtocolVersion::from_code(code);
                if version.major != 3 {
                    return Err(WireError::UnsupportedProtocol {
                        major: version.major,
                        minor: version.minor,
                    });
                }
                let params = Params::decode(body)?;
                Ok(Some(StartupPacket::Startup(StartupMessage { version, params })))
            }
        }
    }

    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            StartupPacket::SslRequest => {
                buf.put_u32(8);
                buf.put_u32(SSL_REQUEST_CODE);
            }
            StartupPacket::GssEncRequest => {
                buf.put_u32(8);
                buf.put_u32(GSSENC_REQUEST_CODE);
            }
            StartupPacket::CancelRequest(cancel) => {
                buf.put_u32(12 + cancel.key.len() as u32);
                buf.put_u32(CANCEL_REQUEST_CODE);
                buf.put_u32(cancel.pid);
                buf.extend_from_slice(&cancel.key);
            }
            StartupPacket::Startup(startup) => {
                buf.put_u32((8 + startup.params.encoded_len()) as u32);
                buf.put_u32(startup.version.code());
                startup.params.encode(buf);
            }
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf.freeze()
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    fn decode_all(bytes: &[u8], max: usize) -> Result<Option<StartupPacket>, WireError> {
        StartupPacket::decode(&mut BytesMut::from(bytes), max)
    }

    fn startup(params: &[(&str, &str)]) -> StartupPacket {
        let mut p = Params::new();
        for (n, v) in params {
            p.push(n.as_bytes().to_vec(), v.as_bytes().to_vec()).unwrap();
        }
        StartupPacket::Startup(StartupMessage { version: ProtocolVersion::V3_0, params: p })
    }

    #[test]
    fn ssl_request_is_eight_bytes() {
        let bytes = StartupPacket::SslRequest.to_bytes();
        assert_eq!(bytes.as_ref(), &[0, 0, 0, 8, 4, 210, 22, 47]);
        assert_eq!(decode_all(&bytes, 10_000), Ok(Some(StartupPacket::SslRequest)));
    }

    #[test]
    fn startup_round_trip_keeps_order_and_bytes() {
        let packet = startup(&[("user", "alice"), ("client_encoding", "'utf-8'"), ("options", "")]);
        let bytes = packet.to_bytes();
        assert_eq!(decode_all(&bytes, 10_000).unwrap(), Some(packet));
        expect![[r#"
            b"\0\0\05\0\x03\0\0user\0alice\0client_encoding\0'utf-8'\0options\0\0\0"
        "#]]
        .assert_debug_eq(&bytes);
    }

    #[test]
    fn startup_limit_is_on_the_body() {
        // A body of exactly 10 000 bytes passes; one more byte fails before the body arrives.
        let value = "x".repeat(10_000 - 4 - 5 - 1 - 1);
        let exact = startup(&[("user", &value)]).to_bytes();
        assert_eq!(exact.len(), 10_004);
        assert!(matches!(decode_all(&exact, 10_000), Ok(Some(_))));
        let over = startup(&[("user", &format!("{value}y"))]).to_bytes();
        assert_eq!(
            decode_all(&over[..8], 10_000),
            Err(WireError::StartupTooLarge { len: 10_001, max: 10_000 })
        );
    }

    #[test]
    fn cancel_keys_of_both_protocols() {
        let short =
            StartupPacket::CancelRequest(CancelRequest { pid: 42, key: Bytes::from_static(&[1, 2, 3, 4]) });
        assert_eq!(short.to_bytes().len(), 16);
        assert_eq!(decode_all(&short.to_bytes(), 10_000).unwrap(), Some(short));
        let long = StartupPacket::CancelRequest(CancelRequest { pid: 7, key: vec![9; 256].into() });
        assert_eq!(decode_all(&long.to_bytes(), 10_000).unwrap(), Some(long));
        let too_long = StartupPacket::CancelRequest(CancelRequest { pid: 7, key: vec![9; 257].into() });
        assert!(decode_all(&too_long.to_bytes(), 10_000).is_err());
    }

    #[test]
    fn refusals() {
        let check = |bytes: &[u8], expect: expect_test::Expect| {
            expect.assert_eq(&decode_all(bytes, 10_000).unwrap_err().to_string());
        };
        check(&[0, 0, 0, 4, 0, 0, 0, 0], expect!["invalid length of startup packet: 4 bytes"]);
        check(
            &[0, 0, 0, 9, 0, 4, 0, 0, 0],
            expect!["unsupported frontend protocol 4.0: the proxy supports protocol 3"],
        );
        check(
            &[0, 0, 0, 8, 4, 210, 22, 50],
            expect!["unrecognized request code 80877106 in the startup packet"],
        );
        check(
            &[0, 0, 0, 10, 0, 3, 0, 0, b'a', 0],
            expect!["malformed startup packet: string is not NUL-terminated"],
        );
        check(
            &[0, 0, 0, 11, 0, 3, 0, 0, 0, b'a', 0],
            expect!["malformed startup packet: expected terminator as last byte"],
        );
        check(
            b"GET / HTTP/1.1\r\n",
            expect!["startup packet of 1195725852 bytes exceeds the limit of 10000 bytes"],
        );
    }

    #[test]
    fn partial_input_waits() {
        let bytes = startup(&[("user", "bob")]).to_bytes();
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert_eq!(StartupPacket::decode(&mut buf, 10_000), Ok(None));
            assert_eq!(buf.len(), cut, "nothing is consumed from a partial packet");
        }
    }

    #[test]
    fn client_hello_detection() {
        assert!(is_tls_client_hello(&[0x16, 0x03, 0x01]));
        assert!(!is_tls_client_hello(&[0, 0, 0, 8]));
        assert!(!is_tls_client_hello(&[]));
    }

    #[test]
    fn params_debug_hides_values() {
        let StartupPacket::Startup(m) = startup(&[("password", "hunter2")]) else { unreachable!() };
        assert_eq!(format!("{:?}", m.params), r#"["password"]"#);
    }
}
