//! Length-encoded integers and strings (`int<lenenc>`, `string<lenenc>`), plus the bounded
//! [`Reader`] every decoder in this crate reads payloads with.
//!
//! Encoding of `int<lenenc>`: a value below 251 is one byte; `0xFC` + 2 bytes, `0xFD` + 3 bytes,
//! `0xFE` + 8 bytes (all little endian). `0xFB` means NULL in text rows and `0xFF` is an ERR
//! header; neither is a valid integer prefix, so both are errors here.
//!
//! Invariants: the input is untrusted. Every read checks the bytes are present before slicing, a
//! length field is compared with the bytes remaining before it is used, and nothing is allocated
//! from a length field: strings are returned as borrowed slices of the payload.

use bytes::{BufMut, BytesMut};

use crate::DecodeError;

/// Prefix of a 2-byte length-encoded integer.
const PREFIX_U16: u8 = 0xfc;
/// Prefix of a 3-byte length-encoded integer.
const PREFIX_U24: u8 = 0xfd;
/// Prefix of an 8-byte length-encoded integer.
const PREFIX_U64: u8 = 0xfe;

/// Number of bytes `put_lenenc_int(v)` writes.
pub fn lenenc_int_len(v: u64) -> usize {
    match v {
        0..=250 => 1,
        251..=0xffff => 3,
        0x1_0000..=0xff_ffff => 4,
        _ => 9,
    }
}

/// Writes `v` as `int<lenenc>`.
pub fn put_lenenc_int(buf: &mut BytesMut, v: u64) {
    match v {
        0..=250 => buf.put_u8(v as u8),
        251..=0xffff => {
            buf.put_u8(PREFIX_U16);
            buf.put_u16_le(v as u16);
        }
        0x1_0000..=0xff_ffff => {
            buf.put_u8(PREFIX_U24);
            buf.put_slice(&(v as u32).to_le_bytes()[..3]);
        }
        _ => {
            buf.put_u8(PREFIX_U64);
            buf.put_u64_le(v);
        }
    }
}

/// Writes `s` as `string<lenenc>` (its length as `int<lenenc>`, then the bytes).
pub fn put_lenenc_bytes(buf: &mut BytesMut, s: &[u8]) {
    put_lenenc_int(buf, s.len() as u64);
    buf.put_slice(s);
}

/// Writes `s` followed by a NUL (`string<NUL>`). The caller guarantees `s` holds no NUL.
pub fn put_nul_bytes(buf: &mut BytesMut, s: &[u8]) {
    buf.put_slice(s);
    buf.put_u8(0);
}

/// Reads an `int<lenenc>` at the start of `buf`: `(value, bytes consumed)`.
pub fn read_lenenc_int(buf: &[u8]) -> Result<(u64, usize), DecodeError> {
    let mut r = Reader::new(buf);
    let v = r.lenenc_int("length-encoded integer")?;
    Ok((v, r.position()))
}

/// A cursor over one payload. Every method checks bounds and fails with a [`DecodeError`] naming
/// the field (`what`) instead of panicking.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    /// The whole payload.
    buf: &'a [u8],
    /// What is not consumed yet: always a suffix of `buf`.
    unread: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading at the first byte of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, unread: buf }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        // `unread` is a suffix of `buf`, so this never saturates.
        self.buf.len().saturating_sub(self.unread.len())
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.unread.len()
    }

    /// True when every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.unread.is_empty()
    }

    /// The next byte, without consuming it.
    pub fn peek(&self) -> Option<u8> {
        self.unread.first().copied()
    }

    /// Consumes exactly `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let (out, tail) = self
            .unread
            .split_at_checked(n)
            .ok_or_else(|| DecodeError::too_short(what, n, self.unread.len()))?;
        self.unread = tail;
        Ok(out)
    }

    /// Consumes exactly `N` bytes, as an array.
    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let (out, tail) = self
            .unread
            .split_first_chunk::<N>()
            .ok_or_else(|| DecodeError::too_short(what, N, self.unread.len()))?;
        self.unread = tail;
        Ok(*out)
    }

    /// Consumes up to `n` bytes (fewer when the payload ends first).
    pub fn take_at_most(&mut self, n: usize) -> &'a [u8] {
        match self.unread.split_at_checked(n) {
            Some((out, tail)) => {
                self.unread = tail;
                out
            }
            None => self.rest(),
        }
    }

    /// Consumes everything left (`string<EOF>`).
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.unread)
    }

    /// Consumes `n` bytes and ignores them.
    pub fn skip(&mut self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        self.take(n, what).map(|_| ())
    }

    /// `int<1>`.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let [b] = self.array(what)?;
        Ok(b)
    }

    /// `int<2>`, little endian.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    /// `int<3>`, little endian.
    pub fn u24(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let [b0, b1, b2] = self.array(what)?;
        Ok(u32::from_le_bytes([b0, b1, b2, 0]))
    }

    /// `int<4>`, little endian.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// `int<8>`, little endian.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// `int<lenenc>`. NULL (0xFB) and 0xFF are rejected.
    pub fn lenenc_int(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let first = self.u8(what)?;
        match first {
            0..=250 => Ok(u64::from(first)),
            PREFIX_U16 => self.u16(what).map(u64::from),
            PREFIX_U24 => self.u24(what).map(u64::from),
            PREFIX_U64 => self.u64(what),
            byte => Err(DecodeError::InvalidLenEnc { what, byte }),
        }
    }

    /// `string<lenenc>`: the announced length is checked against the bytes left before slicing.
    pub fn lenenc_bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.lenenc_int(what)?;
        // A length that does not fit in usize certainly exceeds what is left.
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        self.take(len, what)
    }

    /// Splits `unread` at its first NUL: `(before, after)`, or `None` without a NUL.
    fn split_nul(&self) -> Option<(&'a [u8], &'a [u8])> {
        let mut parts = self.unread.splitn(2, |&b| b == 0);
        match (parts.next(), parts.next()) {
            (Some(before), Some(after)) => Some((before, after)),
            _ => None,
        }
    }

    /// `string<NUL>`: the bytes up to (excluding) the next NUL, which is consumed.
    pub fn nul_bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let (out, tail) = self.split_nul().ok_or(DecodeError::MissingNul { what })?;
        self.unread = tail;
        Ok(out)
    }

    /// Like [`Reader::nul_bytes`] but a missing terminator at the end of the payload is accepted,
    /// because several real clients and servers omit the last NUL of a packet (e.g. the auth plugin
    /// name in some MySQL 5.5 greetings and in some client handshake responses).
    pub fn nul_bytes_or_rest(&mut self) -> &'a [u8] {
        match self.split_nul() {
            Some((out, tail)) => {
                self.unread = tail;
                out
            }
            None => self.rest(),
        }
    }
}

/// Converts a field to `String`, failing with [`DecodeError::InvalidUtf8`] naming it.
pub(crate) fn utf8(bytes: &[u8], what: &'static str) -> Result<String, DecodeError> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| DecodeError::InvalidUtf8 { what })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(v: u64) -> Vec<u8> {
        let mut b = BytesMut::new();
        put_lenenc_int(&mut b, v);
        b.to_vec()
    }

    #[test]
    fn int_exact_bytes_at_each_boundary() {
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(250), [0xfa]);
        assert_eq!(enc(251), [0xfc, 0xfb, 0x00]);
        assert_eq!(enc(0xffff), [0xfc, 0xff, 0xff]);
        assert_eq!(enc(0x1_0000), [0xfd, 0x00, 0x00, 0x01]);
        assert_eq!(enc(0xff_ffff), [0xfd, 0xff, 0xff, 0xff]);
        assert_eq!(enc(0x100_0000), [0xfe, 0x00, 0x00, 0x00, 0x01, 0, 0, 0, 0]);
        assert_eq!(
            enc(u64::MAX),
            [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
    }

    #[test]
    fn null_and_ff_prefixes_are_errors() {
        assert_eq!(
            read_lenenc_int(&[0xfb]),
            Err(DecodeError::InvalidLenEnc {
                what: "length-encoded integer",
                byte: 0xfb
            })
        );
        assert!(read_lenenc_int(&[0xff]).is_err());
        assert!(read_lenenc_int(&[]).is_err());
        // Truncated multi-byte forms.
        assert!(read_lenenc_int(&[0xfc, 0x01]).is_err());
        assert!(read_lenenc_int(&[0xfd, 0x01, 0x02]).is_err());
        assert!(read_lenenc_int(&[0xfe, 1, 2, 3, 4, 5, 6, 7]).is_err());
    }

    #[test]
    fn lenenc_string_longer_than_payload_is_rejected_without_allocating() {
        // Announces 2^64-1 bytes: must fail cleanly.
        let buf = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, b'a'];
        let mut r = Reader::new(&buf);
        assert!(matches!(
            r.lenenc_bytes("info"),
            Err(DecodeError::TooShort { what: "info", .. })
        ));
        let mut r = Reader::new(&buf);
        assert_eq!(
            r.lenenc_bytes("info"),
            Err(DecodeError::too_short("info", usize::MAX, 1))
        );
        // 0xFD + 3 bytes: 16 MiB - 1 announced, 1 present.
        let buf = [0xfd, 0xff, 0xff, 0xff, b'a'];
        assert_eq!(
            Reader::new(&buf).lenenc_bytes("s"),
            Err(DecodeError::too_short("s", 0xff_ffff, 1))
        );
        let buf = [3, b'a', b'b'];
        assert!(Reader::new(&buf).lenenc_bytes("x").is_err());
        let buf = [3, b'a', b'b', b'c', b'd'];
        let mut r = Reader::new(&buf);
        assert_eq!(r.lenenc_bytes("x").unwrap(), b"abc");
        assert_eq!(r.rest(), b"d");
    }

    #[test]
    fn nul_strings() {
        let mut r = Reader::new(b"root\0db");
        assert_eq!(r.nul_bytes("user").unwrap(), b"root");
        assert_eq!(
            r.clone().nul_bytes("db"),
            Err(DecodeError::MissingNul { what: "db" })
        );
        assert_eq!(r.nul_bytes_or_rest(), b"db");
        assert!(r.is_empty());
        assert_eq!(r.nul_bytes_or_rest(), b"");
    }

    #[test]
    fn reads_past_the_end_fail_and_consume_nothing() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(
            r.take(usize::MAX, "huge"),
            Err(DecodeError::too_short("huge", usize::MAX, 3))
        );
        assert_eq!(r.u32("d"), Err(DecodeError::too_short("d", 4, 3)));
        assert_eq!(r.u64("f"), Err(DecodeError::too_short("f", 8, 3)));
        assert_eq!((r.position(), r.remaining()), (0, 3));
        assert_eq!(r.u24("c"), Ok(0x030201));
        assert_eq!((r.position(), r.remaining()), (3, 0));
        assert_eq!(r.peek(), None);
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.take_at_most(usize::MAX), [1, 2, 3]);
        assert_eq!(r.take_at_most(1), b"");
        assert_eq!(r.position(), 3);
    }

    #[test]
    fn multi_byte_utf8_cut_mid_character_is_an_error() {
        // "né" is 6E C3 A9; cut after C3.
        let mut r = Reader::new(b"n\xc3\0");
        let bytes = r.nul_bytes("username").unwrap();
        assert_eq!(
            utf8(bytes, "username"),
            Err(DecodeError::InvalidUtf8 { what: "username" })
        );
        assert_eq!(utf8("né".as_bytes(), "username"), Ok("né".to_string()));
    }

    #[test]
    fn fixed_ints_are_little_endian() {
        let buf = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        let mut r = Reader::new(&buf);
        assert_eq!(r.u8("a").unwrap(), 1);
        assert_eq!(r.u16("b").unwrap(), 0x0302);
        assert_eq!(r.u24("c").unwrap(), 0x060504);
        assert_eq!(r.u32("d").unwrap(), 0x0a090807);
        assert_eq!(r.u8("e"), Err(DecodeError::too_short("e", 1, 0)));
        let mut r = Reader::new(&[1, 0, 0, 0, 0, 0, 0, 0x80]);
        assert_eq!(r.u64("f").unwrap(), 0x8000_0000_0000_0001);
    }

    proptest! {
        #[test]
        fn int_round_trips(v in any::<u64>()) {
            let b = enc(v);
            prop_assert_eq!(b.len(), lenenc_int_len(v));
            prop_assert_eq!(read_lenenc_int(&b), Ok((v, b.len())));
        }

        #[test]
        fn bytes_round_trip(s in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut b = BytesMut::new();
            put_lenenc_bytes(&mut b, &s);
            let mut r = Reader::new(&b);
            prop_assert_eq!(r.lenenc_bytes("s").unwrap(), &s[..]);
            prop_assert!(r.is_empty());
        }

        #[test]
        fn random_input_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&buf);
            while !r.is_empty() {
                if r.lenenc_bytes("s").is_err() {
                    break;
                }
            }
            let _ = read_lenenc_int(&buf);
            let _ = Reader::new(&buf).nul_bytes("n");
        }
    }
}
