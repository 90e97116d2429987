//! Message boundaries in a relayed byte stream, found from headers alone.
//!
//! A relay copies bytes as they arrive; the scanner follows along and reports where each message
//! starts, its type and its length, and the status byte of every ReadyForQuery. It never
//! buffers or decodes a body, so a 1 GB DataRow costs one header read. That is enough to know
//! whether a query is running and where a proxy may inject a message of its own
//! (protocol.md, I10).

use crate::WireError;
use crate::frame::{HEADER_LEN, check_len};

/// What the scanner reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// A message starts: its type byte and its length word.
    Message { tag: u8, len: usize },
    /// The status byte of a ReadyForQuery (`I`, `T` or `E`).
    ReadyForQuery(u8),
}

/// Follows message boundaries across arbitrarily split chunks of one direction of a stream.
#[derive(Debug, Clone)]
pub struct BoundaryScanner {
    max_len: usize,
    header: [u8; HEADER_LEN],
    header_have: usize,
    body_remaining: usize,
    want_status: bool,
}

impl BoundaryScanner {
    /// `max_len` bounds each message's length word; a longer one means the peer does not speak
    /// the protocol and the stream cannot be followed.
    pub fn new(max_len: usize) -> BoundaryScanner {
        BoundaryScanner {
            max_len,
            header: [0; HEADER_LEN],
            header_have: 0,
            body_remaining: 0,
            want_status: false,
        }
    }

    /// Whether everything scanned so far ends exactly at the end of a message.
    pub fn at_boundary(&self) -> bool {
        self.header_have == 0 && self.body_remaining == 0
    }

    /// Scans the next chunk of the stream, calling `on` for each boundary in it.
    pub fn scan(&mut self, mut data: &[u8], mut on: impl FnMut(Boundary)) -> Result<(), WireError> {
        while !data.is_empty() {
            if self.body_remaining > 0 {
                if self.want_status {
                    self.want_status = false;
                    on(Boundary::ReadyForQuery(data[0]));
                }
                let skip = self.body_remaining.min(data.len());
                self.body_remaining -= skip;
                data = &data[skip..];
                continue;
            }
            // Collect a header, straight from `data` when it is all there.
            let (tag, len) = if self.header_have == 0 && data.len() >= HEADER_LEN {
                let header = &data[..HEADER_LEN];
                data = &data[HEADER_LEN..];
                (header[0], u32::from_be_bytes([header[1], header[2], header[3], header[4]]))
            } else {
                let take = (HEADER_LEN - self.header_have).min(data.len());
                self.header[self.header_have..self.header_have + take].copy_from_slice(&data[..take]);
                self.header_have += take;
                data = &data[take..];
                if self.header_have < HEADER_LEN {
                    return Ok(());
                }
                self.header_have = 0;
                let h = self.header;
                (h[0], u32::from_be_bytes([h[1], h[2], h[3], h[4]]))
            };
            let len = len as usize;
            check_len(tag, len, self.max_len)?;
            on(Boundary::Message { tag, len });
            self.body_remaining = len - 4;
            self.want_status = tag == b'Z' && self.body_remaining > 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::backend::{BackendMessage, TransactionStatus};
    use crate::frame::Frame;

    fn stream() -> Vec<u8> {
        let mut buf = BytesMut::new();
        Frame::new(b'T', vec![1u8; 30]).encode(&mut buf);
        Frame::new(b'D', vec![2u8; 70_000]).encode(&mut buf);
        Frame::new(b'C', &b"SELECT 1\0"[..]).encode(&mut buf);
        BackendMessage::ReadyForQuery(TransactionStatus::InTransaction).encode(&mut buf);
        buf.to_vec()
    }

    fn scan_in_chunks(bytes: &[u8], chunk: usize) -> Vec<Boundary> {
        let mut scanner = BoundaryScanner::new(1 << 30);
        let mut seen = Vec::new();
        for piece in bytes.chunks(chunk) {
            scanner.scan(piece, |b| seen.push(b)).unwrap();
        }
        assert!(scanner.at_boundary());
        seen
    }

    #[test]
    fn any_split_gives_the_same_boundaries() {
        let bytes = stream();
        let whole = scan_in_chunks(&bytes, bytes.len());
        assert_eq!(
            whole,
            vec![
                Boundary::Message { tag: b'T', len: 34 },
                Boundary::Message { tag: b'D', len: 70_004 },
                Boundary::Message { tag: b'C', len: 13 },
                Boundary::Message { tag: b'Z', len: 5 },
                Boundary::ReadyForQuery(b'T'),
            ]
        );
        for chunk in [1, 2, 3, 4, 5, 6, 7, 4096] {
            assert_eq!(scan_in_chunks(&bytes, chunk), whole, "chunk size {chunk}");
        }
    }

    #[test]
    fn a_bad_length_stops_the_scan() {
        let mut scanner = BoundaryScanner::new(100);
        assert!(scanner.scan(&[b'D', 0, 0, 1, 0], |_| {}).is_err());
        let mut scanner = BoundaryScanner::new(100);
        assert!(scanner.scan(&[b'D', 0, 0, 0, 2], |_| {}).is_err());
    }
}
