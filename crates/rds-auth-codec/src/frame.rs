//! Generic framing after the startup phase: `Byte1 type`, `Int32 length` counting itself but
//! not the type byte, then the body (protocol.sgml, "Messaging Overview").

use bytes::{BufMut, Bytes, BytesMut};

use crate::WireError;

/// Size of a message header: the type byte and the length word.
pub const HEADER_LEN: usize = 5;

/// One whole message with its body undecoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub body: Bytes,
}

impl Frame {
    pub fn new(tag: u8, body: impl Into<Bytes>) -> Frame {
        Frame { tag, body: body.into() }
    }

    /// Reads the header at the front of `buf` without consuming anything: the tag and the
    /// length word. The length is validated against `max_len`.
    pub fn peek_header(buf: &[u8], max_len: usize) -> Result<Option<(u8, usize)>, WireError> {
        let Some(header) = buf.get(..HEADER_LEN) else { return Ok(None) };
        let tag = header[0];
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        check_len(tag, len, max_len)?;
        Ok(Some((tag, len)))
    }

    /// Decodes one message from the front of `buf`, or returns `Ok(None)` and consumes nothing
    /// when more bytes are needed. `max_len` bounds the length word.
    pub fn decode(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, WireError> {
        let Some((tag, len)) = Frame::peek_header(buf, max_len)? else { return Ok(None) };
        if buf.len() < 1 + len {
            return Ok(None);
        }
        let mut message = buf.split_to(1 + len).freeze();
        let body = message.split_off(HEADER_LEN);
        Ok(Some(Frame { tag, body }))
    }

    pub fn encode(&self, buf: &mut BytesMut) {
        buf.reserve(HEADER_LEN + self.body.len());
        buf.put_u8(self.tag);
        buf.put_u32((self.body.len() + 4) as u32);
        buf.extend_from_slice(&self.body);
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf.freeze()
    }

    /// The whole message on the wire: header plus body.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }
}

pub(crate) fn check_len(tag: u8, len: usize, max_len: usize) -> Result<(), WireError> {
    if len < 4 {
        return Err(WireError::InvalidMessageLength { tag, len: len as u64 });
    }
    if len > max_len {
        return Err(WireError::MessageTooLarge { tag, len: len as u64, max: max_len });
    }
    Ok(())
}

/// Writes a message whose body is produced by `body`, patching the length afterwards.
pub(crate) fn write_message(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let len_at = buf.len();
    buf.put_u32(0);
    body(buf);
    let len = (buf.len() - len_at) as u32;
    buf[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_below_four_or_over_the_limit_fail_before_buffering() {
        let mut buf = BytesMut::from(&[b'Q', 0, 0, 0, 3][..]);
        assert_eq!(Frame::decode(&mut buf, 100), Err(WireError::InvalidMessageLength { tag: b'Q', len: 3 }));
        // A claimed length of 4 GiB is refused from the header alone, with no allocation.
        let mut buf = BytesMut::from(&[b'D', 0xff, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            Frame::decode(&mut buf, 1 << 30),
            Err(WireError::MessageTooLarge { tag: b'D', len: 0xffff_ffff, max: 1 << 30 })
        );
    }

    #[test]
    fn round_trip_and_partial() {
        let frame = Frame::new(b'Q', &b"select 1\0"[..]);
        let bytes = frame.to_bytes();
        for cut in 0..bytes.len() {
            assert_eq!(Frame::decode(&mut BytesMut::from(&bytes[..cut]), 100), Ok(None));
        }
        let mut buf = BytesMut::from(&bytes[..]);
        buf.extend_from_slice(b"Z");
        assert_eq!(Frame::decode(&mut buf, 100), Ok(Some(frame)));
        assert_eq!(&buf[..], b"Z");
    }
}
