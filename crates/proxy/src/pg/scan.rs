//! A streaming walker over a PostgreSQL message stream.
//!
//! The relay forwards bytes untouched and only needs each message's tag, plus the body of the few
//! messages a pooling decision depends on. [`Scanner::step`] reports one message at a time from the
//! front of a buffer. Small messages are reported whole; a message longer than [`PASS_THROUGH`]
//! whose body the caller does not need is reported as a [`Step::Head`] as soon as its header is
//! here and then passes through in [`Step::Rest`] pieces, so a 1 GB row never sits in memory.
//!
//! Invariant: the byte counts of the steps add up exactly to the bytes consumed, so the caller can
//! forward `buf[..sum]` and the stream stays aligned on message boundaries. A length above the
//! scanner's `max_len` is an error as soon as the 5-byte header is here: no body of an oversized
//! message is ever waited for or buffered (for client messages, `max_len` is `[postgres]
//! max_message_size`, see [`client_max_len`]).

use poolguard_pg::DecodeError;

use crate::config::Config;
use crate::error::ProxyError;

/// `[postgres] max_message_size`: the longest client message poolguard accepts.
pub fn client_max_len(config: &Config) -> usize {
    config
        .postgres
        .as_ref()
        .map_or(poolguard_pg::framing::DEFAULT_MAX_MESSAGE_LEN, |p| {
            p.max_message_size
        })
}

/// What a client hears when its message cannot be framed (08P01, then it is disconnected).
pub fn client_message_error(e: DecodeError) -> ProxyError {
    match e {
        DecodeError::TooLong { len, max } => ProxyError::Protocol(format!(
            "poolguard: client message of {len} bytes refused, over max_message_size ({max} bytes)"
        )),
        other => ProxyError::Protocol(format!("invalid message from client: {other}")),
    }
}

/// Messages longer than this are streamed instead of buffered whole (unless their body is needed).
pub const PASS_THROUGH: usize = 32 * 1024;

/// `buf[from..to]` without a panic: `None` if the range is not inside `buf` (a broken
/// invariant the caller must treat as a protocol failure, closing the connection).
pub fn span(buf: &[u8], from: usize, to: usize) -> Option<&[u8]> {
    buf.get(from..to)
}

#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// A whole message: its tag and body; `len` bytes including the 5-byte header.
    Whole { tag: u8, body: &'a [u8], len: usize },
    /// The first `len` bytes of a long message whose remainder follows as `Rest`.
    Head { tag: u8, len: usize },
    /// `len` more bytes of the message announced by the last `Head`.
    Rest { len: usize },
}

impl Step<'_> {
    /// Bytes this step covers (never zero).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        match self {
            Step::Whole { len, .. } | Step::Head { len, .. } | Step::Rest { len } => *len,
        }
    }
}

#[derive(Debug)]
pub struct Scanner {
    max_len: usize,
    /// Bytes of the current long message still to pass through.
    remaining: usize,
}

impl Scanner {
    pub fn new(max_len: usize) -> Self {
        Scanner {
            max_len,
            remaining: 0,
        }
    }

    /// True between a `Head` and the last `Rest` of a long message.
    pub fn mid_message(&self) -> bool {
        self.remaining > 0
    }

    /// Checks the header at the front of `buf` without consuming anything: an error if it
    /// announces a length below 4 or above `max_len`. Nothing to check mid-message or before
    /// the 5 header bytes are here.
    pub fn check_header(&self, buf: &[u8]) -> Result<(), DecodeError> {
        if self.mid_message() {
            return Ok(());
        }
        poolguard_pg::framing::peek_header(buf, self.max_len).map(|_| ())
    }

    /// The next step at the front of `buf`, or `None` if more bytes are needed.
    /// `need_body(tag)` says whether the caller must see that message whole.
    pub fn step<'a>(
        &mut self,
        buf: &'a [u8],
        need_body: impl Fn(u8) -> bool,
    ) -> Result<Option<Step<'a>>, DecodeError> {
        if self.remaining > 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            let len = self.remaining.min(buf.len());
            self.remaining = self.remaining.saturating_sub(len);
            return Ok(Some(Step::Rest { len }));
        }
        let Some((&[tag, a, b, c, d], _)) = buf.split_first_chunk::<5>() else {
            return Ok(None);
        };
        let declared = u32::from_be_bytes([a, b, c, d]);
        if declared < 4 {
            return Err(DecodeError::BadLength(i64::from(declared)));
        }
        let declared = usize::try_from(declared).unwrap_or(usize::MAX);
        if declared > self.max_len {
            return Err(DecodeError::TooLong {
                len: declared,
                max: self.max_len,
            });
        }
        // The tag byte is not counted in the length; `declared` is at most `max_len`.
        let total = declared.saturating_add(1);
        if let Some(whole) = buf.get(..total) {
            return Ok(Some(Step::Whole {
                tag,
                body: whole.get(5..).unwrap_or_default(),
                len: total,
            }));
        }
        if total > PASS_THROUGH && !need_body(tag) {
            let len = buf.len();
            self.remaining = total.saturating_sub(len);
            return Ok(Some(Step::Head { tag, len }));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body_len: usize) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body_len + 4) as u32).to_be_bytes());
        v.extend(std::iter::repeat_n(7u8, body_len));
        v
    }

    /// Feeds `stream` in chunks of `chunk` bytes; returns (tags seen, bytes consumed).
    fn walk(stream: &[u8], chunk: usize) -> (Vec<u8>, usize) {
        let mut s = Scanner::new(1 << 30);
        let mut buf: Vec<u8> = Vec::new();
        let mut tags = Vec::new();
        let mut consumed = 0;
        for piece in stream.chunks(chunk) {
            buf.extend_from_slice(piece);
            let mut pos = 0;
            while let Some(step) = s.step(&buf[pos..], |t| t == b'Z').unwrap() {
                match step {
                    Step::Whole { tag, .. } | Step::Head { tag, .. } => tags.push(tag),
                    Step::Rest { .. } => {}
                }
                pos += step.len();
            }
            consumed += pos;
            buf.drain(..pos);
        }
        (tags, consumed)
    }

    #[test]
    fn any_chunking_yields_same_messages_and_consumes_everything() {
        let mut stream = Vec::new();
        stream.extend(msg(b'D', 10));
        stream.extend(msg(b'D', PASS_THROUGH * 3));
        stream.extend(msg(b'Z', 1));
        stream.extend(msg(b'C', 0));
        for chunk in [1, 2, 5, 7, 100, 4096, 1 << 20] {
            let (tags, consumed) = walk(&stream, chunk);
            assert_eq!(tags, b"DDZC", "chunk {chunk}");
            assert_eq!(consumed, stream.len(), "chunk {chunk}");
        }
    }

    #[test]
    fn needed_bodies_wait_for_whole_message() {
        let m = msg(b'Z', PASS_THROUGH * 2);
        let mut s = Scanner::new(1 << 30);
        assert_eq!(s.step(&m[..100], |t| t == b'Z').unwrap(), None);
        assert!(matches!(
            s.step(&m, |t| t == b'Z').unwrap(),
            Some(Step::Whole { tag: b'Z', .. })
        ));
    }

    #[test]
    fn oversized_header_refused_before_its_body() {
        let s = Scanner::new(1 << 20);
        let mut header = vec![b'Q'];
        header.extend_from_slice(&(60u32 << 20).to_be_bytes());
        assert_eq!(
            s.check_header(&header),
            Err(DecodeError::TooLong {
                len: 60 << 20,
                max: 1 << 20
            })
        );
        let mut s = s;
        assert!(s.step(&header, |_| true).is_err());
        assert!(!s.mid_message(), "nothing of the body is expected");
        let e = client_message_error(DecodeError::TooLong {
            len: 60 << 20,
            max: 1 << 20,
        });
        assert_eq!(e.sqlstate(), "08P01");
        assert!(e.to_string().contains("max_message_size"), "{e}");
        assert_eq!(
            s.check_header(b"Q\0\0\0"),
            Ok(()),
            "header not all here yet"
        );
    }

    #[test]
    fn bad_lengths_rejected() {
        let mut s = Scanner::new(1000);
        assert!(s.step(b"Q\0\0\0\x03", |_| false).is_err());
        assert!(s.step(b"Q\0\0\x10\x00", |_| false).is_err());
    }
}
