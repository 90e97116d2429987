//! A bounds-checked reader over a message body. Every read can fail; none can panic.

use bytes::Bytes;

use crate::WireError;

pub(crate) struct Cursor {
    buf: Bytes,
    what: &'static str,
}

impl Cursor {
    pub(crate) fn new(buf: Bytes, what: &'static str) -> Cursor {
        Cursor { buf, what }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn short(&self) -> WireError {
        WireError::malformed(self.what, "message ends early")
    }

    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        let Some(&b) = self.buf.first() else { return Err(self.short()) };
        self.buf = self.buf.slice(1..);
        Ok(b)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        let bytes = self.bytes(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, WireError> {
        self.u32().map(|v| v as i32)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<Bytes, WireError> {
        if self.buf.len() < n {
            return Err(self.short());
        }
        Ok(self.buf.split_to(n))
    }

    /// A NUL-terminated string, returned without its terminator.
    pub(crate) fn cstr(&mut self) -> Result<Bytes, WireError> {
        let Some(nul) = self.buf.iter().position(|&b| b == 0) else {
            return Err(WireError::malformed(self.what, "string is not NUL-terminated"));
        };
        let s = self.buf.split_to(nul);
        self.buf = self.buf.slice(1..);
        Ok(s)
    }

    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn finish(self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::malformed(self.what, "unexpected bytes after the message"))
        }
    }
}

/// Appends `s` and a NUL terminator.
pub(crate) fn put_cstr(buf: &mut bytes::BytesMut, s: &[u8]) {
    buf.extend_from_slice(s);
    buf.extend_from_slice(&[0]);
}
