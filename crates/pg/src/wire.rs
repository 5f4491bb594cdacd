//! Private helpers shared by the codecs: a bounds-checked reader over a message body and the
//! "reserve length, write body, fill length" writer.
//!
//! Invariants: the reader never indexes past its slice (every read checks the remaining length
//! first) and never allocates; writers keep frames self-consistent even for odd input (a C string
//! is cut at its first NUL, an oversized length saturates instead of wrapping).

use bytes::{BufMut, BytesMut};

use crate::DecodeError;

/// Cursor over a message body.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Everything not read yet; the reader is left empty.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::TooShort {
                what,
                needed: n,
                available: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// A NUL-terminated byte string, without its terminator.
    pub(crate) fn cbytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        match self.buf.iter().position(|&b| b == 0) {
            Some(end) => {
                let s = &self.buf[..end];
                self.buf = &self.buf[end + 1..];
                Ok(s)
            }
            None => Err(DecodeError::Malformed(what)),
        }
    }

    /// A NUL-terminated UTF-8 string; `what` names the failure when the terminator is missing.
    pub(crate) fn cstr(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.cbytes(what)?).map_err(|_| DecodeError::Utf8)
    }

    /// Fails with `Malformed(what)` unless the body was consumed entirely.
    pub(crate) fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(what))
        }
    }
}

/// Writes `s` as a C string. Protocol strings cannot hold NUL, so `s` is cut at its first NUL
/// rather than letting it end the field early and corrupt the frame.
pub(crate) fn put_cstr(buf: &mut BytesMut, s: &[u8]) {
    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
    buf.put_slice(&s[..end]);
    buf.put_u8(0);
}

/// Writes a tagged message: tag, reserved length, body from `body`, then fills the length in.
pub(crate) fn put_message(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    put_untagged(buf, body);
}

/// Writes an untagged (startup-phase) packet: reserved length, body, then the length.
pub(crate) fn put_untagged(buf: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    let start = buf.len();
    buf.put_i32(0);
    body(buf);
    // The protocol cannot express more than i32::MAX; saturating keeps this panic-free, and the
    // peer (or our own decoder's limit) rejects such a frame.
    let len = i32::try_from(buf.len() - start).unwrap_or(i32::MAX);
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// A count written as the protocol's Int16, saturated (callers then write at most that many items).
pub(crate) fn count_i16(n: usize) -> i16 {
    i16::try_from(n).unwrap_or(i16::MAX)
}

/// A byte length written as Int32, saturated.
pub(crate) fn len_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_bounds() {
        let mut r = Reader::new(b"ab\0\x00\x01");
        assert_eq!(r.cstr("s").unwrap(), "ab");
        assert_eq!(r.i16("n").unwrap(), 1);
        assert!(matches!(
            r.u8("x"),
            Err(DecodeError::TooShort {
                needed: 1,
                available: 0,
                ..
            })
        ));
        assert!(r.finish("trailing").is_ok());
        assert_eq!(
            Reader::new(b"abc").cstr("no nul"),
            Err(DecodeError::Malformed("no nul"))
        );
        assert_eq!(Reader::new(b"\xff\0").cstr("s"), Err(DecodeError::Utf8));
    }

    #[test]
    fn cstr_is_cut_at_nul() {
        let mut b = BytesMut::new();
        put_cstr(&mut b, b"a\0b");
        assert_eq!(&b[..], b"a\0");
    }

    #[test]
    fn message_length_is_filled() {
        let mut b = BytesMut::from(&b"xx"[..]);
        put_message(&mut b, b'Q', |b| b.put_slice(b"hi"));
        assert_eq!(&b[..], b"xxQ\0\0\0\x06hi");
    }
}
