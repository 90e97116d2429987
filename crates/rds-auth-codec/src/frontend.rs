//! Frontend messages of the authentication exchange. All three use type `p`; which one a body
//! is follows from the authentication state, so each has its own parser.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::WireError;
use crate::cursor::{Cursor, put_cstr};
use crate::frame::{Frame, write_message};

/// The type byte of PasswordMessage, SASLInitialResponse, SASLResponse and GSSResponse.
pub const PASSWORD_TAG: u8 = b'p';
/// The type byte of Terminate.
pub const TERMINATE_TAG: u8 = b'X';

/// The `p` message in each authentication state. `Debug` never prints secrets.
#[derive(Clone, PartialEq, Eq)]
pub enum AuthResponse {
    /// PasswordMessage: a cleartext password, an MD5 hash or an IAM token, without its NUL.
    Password(Bytes),
    /// SASLInitialResponse: the chosen mechanism and the optional initial client response.
    SaslInitialResponse { mechanism: Bytes, data: Option<Bytes> },
    /// SASLResponse: the next client message of the exchange.
    SaslResponse(Bytes),
}

impl fmt::Debug for AuthResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthResponse::Password(_) => f.write_str("PasswordMessage([redacted])"),
            AuthResponse::SaslInitialResponse { mechanism, .. } => f
                .debug_struct("SASLInitialResponse")
                .field("mechanism", &String::from_utf8_lossy(mechanism))
                .finish_non_exhaustive(),
            AuthResponse::SaslResponse(_) => f.write_str("SASLResponse([redacted])"),
        }
    }
}

impl AuthResponse {
    fn check_tag(frame: &Frame, what: &'static str) -> Result<(), WireError> {
        if frame.tag == PASSWORD_TAG {
            Ok(())
        } else {
            Err(WireError::malformed(what, "expected a message of type 'p'"))
        }
    }

    pub fn parse_password(frame: Frame) -> Result<AuthResponse, WireError> {
        AuthResponse::check_tag(&frame, "PasswordMessage")?;
        let mut cursor = Cursor::new(frame.body, "PasswordMessage");
        let password = cursor.cstr()?;
        cursor.finish()?;
        Ok(AuthResponse::Password(password))
    }

    pub fn parse_sasl_initial(frame: Frame) -> Result<AuthResponse, WireError> {
        AuthResponse::check_tag(&frame, "SASLInitialResponse")?;
        let mut cursor = Cursor::new(frame.body, "SASLInitialResponse");
        let mechanism = cursor.cstr()?;
        let len = cursor.i32()?;
        let data = match len {
            -1 => None,
            len if len >= 0 => Some(cursor.bytes(len as usize)?),
            _ => return Err(WireError::malformed("SASLInitialResponse", "negative length")),
        };
        cursor.finish()?;
        Ok(AuthResponse::SaslInitialResponse { mechanism, data })
    }

    pub fn parse_sasl_response(frame: Frame) -> Result<AuthResponse, WireError> {
        AuthResponse::check_tag(&frame, "SASLResponse")?;
        Ok(AuthResponse::SaslResponse(frame.body))
    }

    pub fn encode(&self, buf: &mut BytesMut) {
        write_message(buf, PASSWORD_TAG, |buf| match self {
            AuthResponse::Password(password) => put_cstr(buf, password),
            AuthResponse::SaslInitialResponse { mechanism, data } => {
                put_cstr(buf, mechanism);
                match data {
                    Some(data) => {
                        buf.put_i32(data.len() as i32);
                        buf.extend_from_slice(data);
                    }
                    None => buf.put_i32(-1),
                }
            }
            AuthResponse::SaslResponse(data) => buf.extend_from_slice(data),
        });
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf.freeze()
    }
}

/// Terminate (`X`), sent before closing a connection cleanly.
pub fn terminate() -> Bytes {
    Bytes::from_static(&[TERMINATE_TAG, 0, 0, 0, 4])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(message: &AuthResponse) -> Frame {
        let bytes = message.to_bytes();
        Frame::decode(&mut BytesMut::from(&bytes[..]), 1 << 16).unwrap().unwrap()
    }

    #[test]
    fn round_trips_by_state() {
        let password = AuthResponse::Password(Bytes::from_static(b"token"));
        assert_eq!(AuthResponse::parse_password(frame(&password)), Ok(password));
        let initial = AuthResponse::SaslInitialResponse {
            mechanism: Bytes::from_static(b"SCRAM-SHA-256"),
            data: Some(Bytes::from_static(b"n,,n=,r=abc")),
        };
        assert_eq!(AuthResponse::parse_sasl_initial(frame(&initial)), Ok(initial));
        let empty = AuthResponse::SaslInitialResponse { mechanism: Bytes::from_static(b"X"), data: None };
        assert_eq!(AuthResponse::parse_sasl_initial(frame(&empty)), Ok(empty));
        let response = AuthResponse::SaslResponse(Bytes::from_static(b"c=biws,r=abc,p=xyz"));
        assert_eq!(AuthResponse::parse_sasl_response(frame(&response)), Ok(response));
    }

    #[test]
    fn debug_redacts() {
        let password = AuthResponse::Password(Bytes::from_static(b"hunter2"));
        assert!(!format!("{password:?}").contains("hunter2"));
    }

    #[test]
    fn sasl_initial_length_beyond_body_is_refused() {
        let mut body = BytesMut::new();
        put_cstr(&mut body, b"SCRAM-SHA-256");
        body.put_i32(1000);
        body.extend_from_slice(b"short");
        assert!(AuthResponse::parse_sasl_initial(Frame::new(b'p', body.freeze())).is_err());
    }
}
