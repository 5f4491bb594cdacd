//! Framing of tagged messages, both directions: a type byte, an Int32 length that counts itself but
//! not the type byte, then `length - 4` body bytes.
//!
//! Invariants: a length below 4 or above the caller's `max_len` is rejected as soon as the 5-byte
//! header is present (before waiting for, or buffering, the body); `Ok(None)` means "more bytes
//! needed" and leaves the buffer untouched; a frame is split off the buffer without copying.

use bytes::{Buf, Bytes, BytesMut};

use crate::DecodeError;

/// Default bound on a message's length field: 64 MiB. PostgreSQL itself accepts up to 1 GiB, but a
/// pooler that may buffer a whole message per client must refuse such sizes to bound its memory.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 64 * 1024 * 1024;

/// Bound for a message's length field while authenticating: PostgreSQL's `PG_MAX_AUTH_TOKEN_LENGTH`
/// (65535 body bytes) plus the 4 bytes of the length field. Use it as `max_len` until
/// AuthenticationOk, so an unauthenticated peer cannot make the proxy buffer megabytes.
pub const MAX_AUTH_MESSAGE_LEN: usize = 65_535 + 4;

/// Bytes of a tagged message header: the type byte and the Int32 length.
pub const HEADER_LEN: usize = 5;

/// One tagged message with its body (the length field is not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The message type byte; see [`crate::tags`].
    pub tag: u8,
    /// The body, after the length field.
    pub body: Bytes,
}

/// A validated message header, for relaying a message without buffering its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The message type byte.
    pub tag: u8,
    /// Total bytes of the message on the wire: 1 (tag) + the length field.
    pub total_len: usize,
}

impl Header {
    /// Bytes of body following the 5-byte header.
    pub fn body_len(&self) -> usize {
        // `peek_header` guarantees `total_len >= HEADER_LEN`; saturating covers a hand-made one.
        self.total_len.saturating_sub(HEADER_LEN)
    }
}

/// Reads and validates the header at the start of `buf`; `Ok(None)` if fewer than 5 bytes are
/// there. Errors if the length field is below 4 or above `max_len`.
pub fn peek_header(buf: &[u8], max_len: usize) -> Result<Option<Header>, DecodeError> {
    let Some(&[tag, l0, l1, l2, l3]) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([l0, l1, l2, l3]);
    if len < 4 {
        return Err(DecodeError::BadLength(i64::from(len)));
    }
    let len = len as usize; // non-negative i32: lossless
    if len > max_len {
        return Err(DecodeError::TooLong { len, max: max_len });
    }
    Ok(Some(Header {
        tag,
        // len <= i32::MAX, so this cannot overflow; checked all the same.
        total_len: len
            .checked_add(1)
            .ok_or(DecodeError::TooLong { len, max: max_len })?,
    }))
}

/// Total bytes (1 + length field) of the first message in `buf` if it is wholly present,
/// `Ok(None)` if more bytes are needed. Errors on a length below 4 or above `max_len` as soon as
/// the header is present.
pub fn frame_len(buf: &[u8], max_len: usize) -> Result<Option<usize>, DecodeError> {
    Ok(peek_header(buf, max_len)?
        .map(|h| h.total_len)
        .filter(|&total| buf.len() >= total))
}

/// Splits the first whole message off `buf`. `Ok(None)` (buffer untouched) if it is not all there.
pub fn decode_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, DecodeError> {
    let Some(header) = peek_header(buf, max_len)? else {
        return Ok(None);
    };
    if buf.len() < header.total_len {
        return Ok(None);
    }
    // Both in bounds: HEADER_LEN <= total_len <= buf.len(), checked just above.
    let mut frame = buf.split_to(header.total_len);
    frame.advance(HEADER_LEN);
    Ok(Some(Frame {
        tag: header.tag,
        body: frame.freeze(),
    }))
}

/// Appends `frame` (tag, length, body) to `buf`; the inverse of [`decode_frame`].
pub fn encode_frame(buf: &mut BytesMut, tag: u8, body: &[u8]) {
    crate::wire::put_message(buf, tag, |b| b.extend_from_slice(body));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_needs_five_bytes() {
        assert_eq!(frame_len(b"", 100), Ok(None));
        assert_eq!(frame_len(b"Z\0\0\0", 100), Ok(None));
        assert_eq!(frame_len(b"Z\0\0\0\x05", 100), Ok(None));
        assert_eq!(frame_len(b"Z\0\0\0\x05I", 100), Ok(Some(6)));
        assert_eq!(frame_len(b"Z\0\0\0\x05IZ", 100), Ok(Some(6)));
        assert_eq!(frame_len(b"S\0\0\0\x04", 100), Ok(Some(5)));
    }

    #[test]
    fn bad_lengths_rejected_from_header_alone() {
        assert_eq!(
            frame_len(b"Q\0\0\0\x03", 100),
            Err(DecodeError::BadLength(3))
        );
        assert_eq!(frame_len(b"Q\0\0\0\0", 100), Err(DecodeError::BadLength(0)));
        assert_eq!(
            frame_len(b"Q\xff\xff\xff\xff", 100),
            Err(DecodeError::BadLength(-1))
        );
        assert_eq!(
            frame_len(b"Q\0\0\0\x65", 100),
            Err(DecodeError::TooLong { len: 101, max: 100 })
        );
        assert_eq!(frame_len(b"Q\0\0\0\x64", 100), Ok(None));
        let mut b = BytesMut::from(&b"Q\x7f\xff\xff\xff"[..]);
        assert_eq!(
            decode_frame(&mut b, DEFAULT_MAX_MESSAGE_LEN),
            Err(DecodeError::TooLong {
                len: i32::MAX as usize,
                max: DEFAULT_MAX_MESSAGE_LEN
            })
        );
        assert_eq!(b.len(), 5, "an error leaves the buffer alone");
    }

    #[test]
    fn largest_lengths_do_not_overflow() {
        // Length 0xFFFFFFFF is -1 as an Int32.
        let mut b = BytesMut::from(&b"Q\xff\xff\xff\xff"[..]);
        assert_eq!(
            decode_frame(&mut b, usize::MAX),
            Err(DecodeError::BadLength(-1))
        );
        // i32::MAX with no limit: total_len is 2^31, and the body is simply awaited.
        let h = peek_header(b"Q\x7f\xff\xff\xff", usize::MAX)
            .unwrap()
            .unwrap();
        assert_eq!((h.total_len, h.body_len()), (1 << 31, (1 << 31) - 5));
        let mut b = BytesMut::from(&b"Q\x7f\xff\xff\xffabc"[..]);
        assert_eq!(decode_frame(&mut b, usize::MAX), Ok(None));
        assert_eq!(b.len(), 8);
        // A hand-made header cannot underflow.
        let h = Header {
            tag: b'Q',
            total_len: 0,
        };
        assert_eq!(h.body_len(), 0);
    }

    #[test]
    fn decode_splits_frames() {
        let mut b = BytesMut::from(&b"Z\0\0\0\x05IC\0\0\0\x0bSEL"[..]);
        let f = decode_frame(&mut b, 100).unwrap().unwrap();
        assert_eq!((f.tag, &f.body[..]), (b'Z', &b"I"[..]));
        assert_eq!(decode_frame(&mut b, 100), Ok(None));
        assert_eq!(&b[..], b"C\0\0\0\x0bSEL");
        b.extend_from_slice(b"ECT\0");
        let f = decode_frame(&mut b, 100).unwrap().unwrap();
        assert_eq!((f.tag, &f.body[..]), (b'C', &b"SELECT\0"[..]));
        assert!(b.is_empty());
    }

    #[test]
    fn peek_header_reports_sizes() {
        let h = peek_header(b"d\0\0\0\x10", 100).unwrap().unwrap();
        assert_eq!(
            h,
            Header {
                tag: b'd',
                total_len: 17
            }
        );
        assert_eq!(h.body_len(), 12);
    }

    fn frames() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
        proptest::collection::vec(
            (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..64)),
            1..8,
        )
    }

    proptest! {
        #[test]
        fn arbitrary_chunking_yields_same_frames(
            frames in frames(),
            cuts in proptest::collection::vec(1usize..20, 1..64),
        ) {
            let mut stream = BytesMut::new();
            for (tag, body) in &frames {
                encode_frame(&mut stream, *tag, body);
            }
            let stream = stream.freeze();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut pos = 0;
            let mut cuts = cuts.into_iter().cycle();
            while pos < stream.len() {
                let end = (pos + cuts.next().unwrap_or(1)).min(stream.len());
                buf.extend_from_slice(&stream[pos..end]);
                pos = end;
                while let Some(f) = decode_frame(&mut buf, 1024).unwrap() {
                    got.push((f.tag, f.body.to_vec()));
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(got, frames);
        }

        #[test]
        fn random_bytes_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..256),
            max in 0usize..300,
        ) {
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(f)) = decode_frame(&mut buf, max) {
                prop_assert!(f.body.len() + 4 <= max);
            }
        }
    }
}
