//! Backend messages the proxies read or rewrite (protocol-message-formats.html). Every other
//! message stays a [`Frame`] and passes through untouched.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::WireError;
use crate::cursor::{Cursor, put_cstr};
use crate::error_fields::ErrorFields;
use crate::frame::{Frame, write_message};
use crate::startup::{MAX_CANCEL_KEY_LEN, MIN_CANCEL_KEY_LEN};

pub mod tag {
    pub const AUTHENTICATION: u8 = b'R';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
}

/// Authentication request codes (protocol-message-formats.html, "AuthenticationOk" and on).
#[derive(Clone, PartialEq, Eq)]
pub enum Authentication {
    Ok,
    KerberosV5,
    CleartextPassword,
    Md5Password { salt: [u8; 4] },
    ScmCredential,
    Gss,
    GssContinue(Bytes),
    Sspi,
    Sasl { mechanisms: Vec<Bytes> },
    SaslContinue(Bytes),
    SaslFinal(Bytes),
}

impl Authentication {
    pub fn code(&self) -> u32 {
        match self {
            Authentication::Ok => 0,
            Authentication::KerberosV5 => 2,
            Authentication::CleartextPassword => 3,
            Authentication::Md5Password { .. } => 5,
            Authentication::ScmCredential => 6,
            Authentication::Gss => 7,
            Authentication::GssContinue(_) => 8,
            Authentication::Sspi => 9,
            Authentication::Sasl { .. } => 10,
            Authentication::SaslContinue(_) => 11,
            Authentication::SaslFinal(_) => 12,
        }
    }

    /// A short name for logs and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Authentication::Ok => "AuthenticationOk",
            Authentication::KerberosV5 => "AuthenticationKerberosV5",
            Authentication::CleartextPassword => "AuthenticationCleartextPassword",
            Authentication::Md5Password { .. } => "AuthenticationMD5Password",
            Authentication::ScmCredential => "AuthenticationSCMCredential",
            Authentication::Gss => "AuthenticationGSS",
            Authentication::GssContinue(_) => "AuthenticationGSSContinue",
            Authentication::Sspi => "AuthenticationSSPI",
            Authentication::Sasl { .. } => "AuthenticationSASL",
            Authentication::SaslContinue(_) => "AuthenticationSASLContinue",
            Authentication::SaslFinal(_) => "AuthenticationSASLFinal",
        }
    }
}

impl fmt::Debug for Authentication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Authentication::Sasl { mechanisms } => f
                .debug_struct("Sasl")
                .field(
                    "mechanisms",
                    &mechanisms.iter().map(|m| String::from_utf8_lossy(m)).collect::<Vec<_>>(),
                )
                .finish(),
            // SASL and GSS payloads are proofs and nonces: never print them.
            other => f.write_str(other.name()),
        }
    }
}

/// ReadyForQuery's transaction status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TransactionStatus {
    pub fn from_byte(b: u8) -> Option<TransactionStatus> {
        match b {
            b'I' => Some(TransactionStatus::Idle),
            b'T' => Some(TransactionStatus::InTransaction),
            b'E' => Some(TransactionStatus::Failed),
            _ => None,
        }
    }

    pub fn to_byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }
    }
}

/// BackendKeyData: the process id and the cancel key (4 bytes in 3.0, up to 256 in 3.2).
#[derive(Clone, PartialEq, Eq)]
pub struct BackendKeyData {
    pub pid: u32,
    pub key: Bytes,
}

impl fmt::Debug for BackendKeyData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendKeyData").field("pid", &self.pid).field("key_len", &self.key.len()).finish()
    }
}

/// A backend message, decoded as far as the proxies need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMessage {
    Authentication(Authentication),
    ParameterStatus {
        name: Bytes,
        value: Bytes,
    },
    BackendKeyData(BackendKeyData),
    NegotiateProtocolVersion {
        newest_minor: u32,
        unrecognized: Vec<Bytes>,
    },
    ReadyForQuery(TransactionStatus),
    ErrorResponse(ErrorFields),
    NoticeResponse(ErrorFields),
    /// Any other message, kept as it came.
    Other(Frame),
}

impl BackendMessage {
    /// Decodes one message from the front of `buf` (see [`Frame::decode`]).
    pub fn decode(buf: &mut BytesMut, max_len: usize) -> Result<Option<BackendMessage>, WireError> {
        match Frame::decode(buf, max_len)? {
            Some(frame) => BackendMessage::parse(frame).map(Some),
            None => Ok(None),
        }
    }

    /// Interprets a frame. Types the proxies do not touch come back as [`BackendMessage::Other`].
    pub fn parse(frame: Frame) -> Result<BackendMessage, WireError> {
        let Frame { tag: message_tag, body } = frame;
        match message_tag {
            tag::AUTHENTICATION => parse_authentication(body).map(BackendMessage::Authentication),
            tag::PARAMETER_STATUS => {
                let mut cursor = Cursor::new(body, "ParameterStatus");
                let name = cursor.cstr()?;
                let value = cursor.cstr()?;
                cursor.finish()?;
                Ok(BackendMessage::ParameterStatus { name, value })
            }
            tag::BACKEND_KEY_DATA => {
                let mut cursor = Cursor::new(body, "BackendKeyData");
                let pid = cursor.u32()?;
                let key = cursor.rest();
                if !(MIN_CANCEL_KEY_LEN..=MAX_CANCEL_KEY_LEN).contains(&key.len()) {
                    return Err(WireError::malformed("BackendKeyData", "key length out of range"));
                }
                Ok(BackendMessage::BackendKeyData(BackendKeyData { pid, key }))
            }
            tag::NEGOTIATE_PROTOCOL_VERSION => {
                let mut cursor = Cursor::new(body, "NegotiateProtocolVersion");
                let newest_minor = cursor.u32()?;
                let count = cursor.u32()? as usize;
                // Each name takes at least its NUL, so a count above the bytes left is a lie.
                if count > cursor.remaining() {
                    return Err(WireError::malformed("NegotiateProtocolVersion", "option count"));
                }
                let mut unrecognized = Vec::with_capacity(count);
                for _ in 0..count {
                    unrecognized.push(cursor.cstr()?);
                }
                cursor.finish()?;
                Ok(BackendMessage::NegotiateProtocolVersion { newest_minor, unrecognized })
            }
            tag::READY_FOR_QUERY => {
                let mut cursor = Cursor::new(body, "ReadyForQuery");
                let status = TransactionStatus::from_byte(cursor.u8()?)
                    .ok_or(WireError::malformed("ReadyForQuery", "unknown transaction status"))?;
                cursor.finish()?;
                Ok(BackendMessage::ReadyForQuery(status))
            }
            tag::ERROR_RESPONSE => ErrorFields::decode(body).map(BackendMessage::ErrorResponse),
            tag::NOTICE_RESPONSE => ErrorFields::decode(body).map(BackendMessage::NoticeResponse),
            _ => Ok(BackendMessage::Other(Frame { tag: message_tag, body })),
        }
    }

    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            BackendMessage::Authentication(auth) => write_message(buf, tag::AUTHENTICATION, |buf| {
                buf.put_u32(auth.code());
                match auth {
                    Authentication::Md5Password { salt } => buf.extend_from_slice(salt),
                    Authentication::GssContinue(data)
                    | Authentication::SaslContinue(data)
                    | Authentication::SaslFinal(data) => buf.extend_from_slice(data),
                    Authentication::Sasl { mechanisms } => {
                        for mechanism in mechanisms {
                            put_cstr(buf, mechanism);
                        }
                        buf.put_u8(0);
                    }
                    _ => {}
                }
            }),
            BackendMessage::ParameterStatus { name, value } => {
                write_message(buf, tag::PARAMETER_STATUS, |buf| {
                    put_cstr(buf, name);
                    put_cstr(buf, value);
                })
            }
            BackendMessage::BackendKeyData(data) => write_message(buf, tag::BACKEND_KEY_DATA, |buf| {
                buf.put_u32(data.pid);
                buf.extend_from_slice(&data.key);
            }),
            BackendMessage::NegotiateProtocolVersion { newest_minor, unrecognized } => {
                write_message(buf, tag::NEGOTIATE_PROTOCOL_VERSION, |buf| {
                    buf.put_u32(*newest_minor);
                    buf.put_u32(unrecognized.len() as u32);
                    for name in unrecognized {
                        put_cstr(buf, name);
                    }
                })
            }
            BackendMessage::ReadyForQuery(status) => {
                write_message(buf, tag::READY_FOR_QUERY, |buf| buf.put_u8(status.to_byte()))
            }
            BackendMessage::ErrorResponse(fields) => fields.encode_error(buf),
            BackendMessage::NoticeResponse(fields) => fields.encode_notice(buf),
            BackendMessage::Other(frame) => frame.encode(buf),
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf.freeze()
    }
}

fn parse_authentication(body: Bytes) -> Result<Authentication, WireError> {
    let mut cursor = Cursor::new(body, "Authentication request");
    let auth = match cursor.u32()? {
        0 => Authentication::Ok,
        2 => Authentication::KerberosV5,
        3 => Authentication::CleartextPassword,
        5 => {
            let salt = cursor.bytes(4)?;
            Authentication::Md5Password { salt: [salt[0], salt[1], salt[2], salt[3]] }
        }
        6 => Authentication::ScmCredential,
        7 => Authentication::Gss,
        8 => Authentication::GssContinue(cursor.rest()),
        9 => Authentication::Sspi,
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let mechanism = cursor.cstr()?;
                if mechanism.is_empty() {
                    break;
                }
                mechanisms.push(mechanism);
            }
            Authentication::Sasl { mechanisms }
        }
        11 => Authentication::SaslContinue(cursor.rest()),
        12 => Authentication::SaslFinal(cursor.rest()),
        _ => return Err(WireError::malformed("Authentication request", "unknown code")),
    };
    cursor.finish()?;
    Ok(auth)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(message: BackendMessage) {
        let bytes = message.to_bytes();
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(BackendMessage::decode(&mut buf, 1 << 20), Ok(Some(message)));
        assert!(buf.is_empty());
    }

    #[test]
    fn authentication_requests() {
        for auth in [
            Authentication::Ok,
            Authentication::CleartextPassword,
            Authentication::Md5Password { salt: *b"salt" },
            Authentication::Gss,
            Authentication::Sspi,
            Authentication::Sasl {
                mechanisms: vec![
                    Bytes::from_static(b"SCRAM-SHA-256-PLUS"),
                    Bytes::from_static(b"SCRAM-SHA-256"),
                ],
            },
            Authentication::SaslContinue(Bytes::from_static(b"r=abc,s=def,i=4096")),
            Authentication::SaslFinal(Bytes::from_static(b"v=xyz")),
        ] {
            round_trip(BackendMessage::Authentication(auth));
        }
    }

    #[test]
    fn cleartext_request_bytes() {
        assert_eq!(
            BackendMessage::Authentication(Authentication::CleartextPassword).to_bytes().as_ref(),
            &[b'R', 0, 0, 0, 8, 0, 0, 0, 3]
        );
    }

    #[test]
    fn backend_key_data_both_protocols() {
        round_trip(BackendMessage::BackendKeyData(BackendKeyData {
            pid: 1234,
            key: Bytes::from_static(&[1, 2, 3, 4]),
        }));
        round_trip(BackendMessage::BackendKeyData(BackendKeyData { pid: 1, key: vec![7; 32].into() }));
        let mut buf = BytesMut::from(&[b'K', 0, 0, 0, 9, 0, 0, 0, 1, 2][..]);
        assert!(BackendMessage::decode(&mut buf, 100).is_err());
    }

    #[test]
    fn negotiate_protocol_version_and_ready() {
        round_trip(BackendMessage::NegotiateProtocolVersion {
            newest_minor: 2,
            unrecognized: vec![Bytes::from_static(b"_pq_.test_protocol_negotiation")],
        });
        round_trip(BackendMessage::ReadyForQuery(TransactionStatus::InTransaction));
        // A count that cannot fit is refused without allocating for it.
        let mut buf = BytesMut::from(&[b'v', 0, 0, 0, 12, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff][..]);
        assert!(BackendMessage::decode(&mut buf, 100).is_err());
    }
}
