//! Packet framing: a 4-byte header (`int<3>` payload length, `int<1>` sequence id) then the payload.
//!
//! A payload of 16 MiB - 1 (0xFFFFFF) bytes or more is split into physical packets of exactly
//! 0xFFFFFF bytes, ended by a shorter one, which is empty when the length is an exact multiple.
//! Each physical packet takes the next sequence id.
//!
//! Two decoders, no I/O in either:
//! - [`PacketCodec`] reassembles *logical* packets ([`Packet`]) for code that needs whole payloads
//!   (handshake, auth, commands the proxy interprets);
//! - [`FrameDecoder`] splits off *physical* packets ([`Frame`]) untouched, for the relay, while still
//!   enforcing `max_allowed_packet` on the logical size; [`frame_len`] is its stateless core.
//!
//! Invariants: `Ok(None)` means "need more bytes" and leaves the buffer untouched; the logical size
//! is checked against `max_allowed_packet` as soon as a header makes it known, before the body is
//! buffered; continuation chunks must carry consecutive sequence ids. After an error the decoder
//! state is unspecified: close the connection.

use bytes::{BufMut, Bytes, BytesMut};

use crate::DecodeError;

/// Bytes in a packet header.
pub const HEADER_LEN: usize = 4;
/// Largest payload of one physical packet; a physical packet this long is continued by the next.
pub const MAX_CHUNK_LEN: usize = 0xff_ffff;
/// MySQL 8 / MariaDB default `max_allowed_packet` (64 MiB), a sensible proxy default.
pub const DEFAULT_MAX_ALLOWED_PACKET: usize = 64 * 1024 * 1024;

/// One logical packet: the sequence id of its first physical packet and the reassembled payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Sequence id of the first physical packet.
    pub seq: u8,
    /// The whole payload, all chunks concatenated.
    pub payload: Bytes,
}

impl Packet {
    /// Number of physical packets this payload occupies on the wire.
    pub fn chunk_count(&self) -> usize {
        chunk_count(self.payload.len())
    }

    /// Sequence id of the last physical packet.
    pub fn last_seq(&self) -> u8 {
        // One id per chunk after the first; ids are mod 256, hence the truncation and the wrap.
        let extra_chunks = self.chunk_count().saturating_sub(1);
        self.seq.wrapping_add(extra_chunks as u8)
    }

    /// Sequence id the peer's reply (or our next packet in the same exchange) must carry.
    pub fn next_seq(&self) -> u8 {
        self.last_seq().wrapping_add(1)
    }
}

/// Physical packets needed for a payload of `len` bytes (an exact multiple of 0xFFFFFF, including
/// zero, needs a trailing empty packet).
pub fn chunk_count(len: usize) -> usize {
    // At most usize::MAX / 0xFFFFFF + 1: cannot saturate.
    (len / MAX_CHUNK_LEN).saturating_add(1)
}

/// The sequence id after `seq` (ids wrap from 255 to 0).
pub fn next_seq(seq: u8) -> u8 {
    seq.wrapping_add(1)
}

/// Checks that a packet carries the sequence id the exchange expects.
pub fn check_seq(expected: u8, got: u8) -> Result<(), DecodeError> {
    if expected == got {
        Ok(())
    } else {
        Err(DecodeError::SequenceMismatch { expected, got })
    }
}

/// Reads a header: `(payload length, sequence id)`, or `None` if fewer than 4 bytes are present.
pub fn peek_header(buf: &[u8]) -> Option<(usize, u8)> {
    match buf {
        [a, b, c, seq, ..] => Some((
            usize::from(*a) | usize::from(*b) << 8 | usize::from(*c) << 16,
            *seq,
        )),
        _ => None,
    }
}

/// Length (header included) of the physical packet at the start of `buf`, if all of it is present.
/// This does not look at continuation: a relay forwarding bytes untouched uses it (or
/// [`FrameDecoder`], which also enforces `max_allowed_packet`) to know how much to forward.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    let (len, _) = peek_header(buf)?;
    let total = chunk_total(len);
    (buf.len() >= total).then_some(total)
}

/// Bytes on the wire of a physical packet with a `len`-byte payload. `len` comes from a 3-byte
/// field, so the sum cannot saturate.
fn chunk_total(len: usize) -> usize {
    len.saturating_add(HEADER_LEN)
}

/// Progress through a split logical packet.
#[derive(Debug, Clone, Default)]
struct Continuation {
    /// Sequence id of the first chunk.
    first_seq: u8,
    /// Sequence id the next chunk must carry.
    next_seq: u8,
    /// Payload bytes in the chunks seen so far.
    len: usize,
}

/// A physical packet's header, checked.
struct ChunkHeader {
    /// Payload bytes of this chunk.
    len: usize,
    /// Its sequence id.
    seq: u8,
    /// Payload bytes of the logical packet up to and including this chunk (at most the limit).
    so_far: usize,
}

/// Shared header check of both decoders: returns the chunk's header once it is present, after
/// checking its sequence id (for continuations) and the logical size limit.
fn check_chunk_header(
    buf: &[u8],
    pending: Option<&Continuation>,
    max: usize,
) -> Result<Option<ChunkHeader>, DecodeError> {
    let Some((len, seq)) = peek_header(buf) else {
        return Ok(None);
    };
    let before = match pending {
        Some(p) => {
            check_seq(p.next_seq, seq)?;
            p.len
        }
        None => 0,
    };
    // The logical packet is at least this long; refuse it before buffering the body.
    let so_far = before.saturating_add(len);
    if so_far > max {
        return Err(DecodeError::PacketTooLarge { len: so_far, max });
    }
    Ok(Some(ChunkHeader { len, seq, so_far }))
}

/// Reassembles logical packets from a byte stream (see the module docs).
#[derive(Debug, Clone)]
pub struct PacketCodec {
    max_allowed_packet: usize,
    /// A split packet being reassembled. Boxed: only payloads of 16 MiB and more are split,
    /// and every connected client keeps a codec (48 bytes less for each).
    pending: Option<Box<Reassembly>>,
}

/// The chunks of a split packet seen so far.
#[derive(Debug, Clone)]
struct Reassembly {
    cont: Continuation,
    chunks: BytesMut,
}

impl Default for PacketCodec {
    fn default() -> Self {
        PacketCodec::new(DEFAULT_MAX_ALLOWED_PACKET)
    }
}

impl PacketCodec {
    /// A codec refusing logical payloads longer than `max_allowed_packet` bytes.
    pub fn new(max_allowed_packet: usize) -> Self {
        PacketCodec {
            max_allowed_packet,
            pending: None,
        }
    }

    /// The limit on logical payload length.
    pub fn max_allowed_packet(&self) -> usize {
        self.max_allowed_packet
    }

    /// Changes the limit (e.g. after reading the server's `max_allowed_packet`).
    pub fn set_max_allowed_packet(&mut self, max: usize) {
        self.max_allowed_packet = max;
    }

    /// True when no split packet is half-reassembled.
    pub fn is_idle(&self) -> bool {
        self.pending.is_none()
    }

    /// Splits the next logical packet off `buf`. `Ok(None)`: more bytes are needed (chunks already
    /// complete are moved into the codec, so `buf` only keeps what is not yet consumed).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        loop {
            let Some(ChunkHeader { len, seq, so_far }) = check_chunk_header(
                buf,
                self.pending.as_deref().map(|r| &r.cont),
                self.max_allowed_packet,
            )?
            else {
                return Ok(None);
            };
            let total = chunk_total(len);
            if buf.len() < total {
                return Ok(None);
            }
            // In bounds: HEADER_LEN <= total <= buf.len().
            let mut chunk = buf.split_to(total);
            let body = chunk.split_off(HEADER_LEN);
            let first_seq = self.pending.as_ref().map_or(seq, |r| r.cont.first_seq);
            if len == MAX_CHUNK_LEN {
                // More chunks follow: keep this one and look for the next.
                let cont = Continuation {
                    first_seq,
                    next_seq: next_seq(seq),
                    len: so_far,
                };
                match &mut self.pending {
                    Some(r) => {
                        r.chunks.unsplit(body);
                        r.cont = cont;
                    }
                    None => {
                        self.pending = Some(Box::new(Reassembly { cont, chunks: body }));
                    }
                }
                continue;
            }
            let payload = match self.pending.take() {
                Some(mut r) => {
                    // unsplit is O(1) when `body` directly follows the kept chunks in memory,
                    // and copies otherwise; both are fine.
                    r.chunks.unsplit(body);
                    r.chunks.freeze()
                }
                None => body.freeze(),
            };
            return Ok(Some(Packet {
                seq: first_seq,
                payload,
            }));
        }
    }
}

/// One physical packet, as it was on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its sequence id.
    pub seq: u8,
    /// Header and payload, untouched: forward these bytes.
    pub raw: Bytes,
    /// This frame continues a logical packet started by an earlier frame.
    pub is_continuation: bool,
    /// This frame is 0xFFFFFF bytes long: the logical packet continues in the next frame.
    pub more_follows: bool,
}

impl Frame {
    /// The payload of this physical packet (for a split packet: only this chunk).
    pub fn payload(&self) -> &[u8] {
        self.raw.get(HEADER_LEN..).unwrap_or_default()
    }

    /// True for the first (or only) frame of a logical packet: the one whose first bytes tell what
    /// the packet is.
    pub fn starts_packet(&self) -> bool {
        !self.is_continuation
    }
}

/// Splits physical packets off a byte stream without reassembling them, enforcing
/// `max_allowed_packet` on the logical size (see the module docs).
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_allowed_packet: usize,
    pending: Option<Continuation>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_ALLOWED_PACKET)
    }
}

impl FrameDecoder {
    /// A decoder refusing logical payloads longer than `max_allowed_packet` bytes.
    pub fn new(max_allowed_packet: usize) -> Self {
        FrameDecoder {
            max_allowed_packet,
            pending: None,
        }
    }

    /// Changes the limit.
    pub fn set_max_allowed_packet(&mut self, max: usize) {
        self.max_allowed_packet = max;
    }

    /// True when the last frame returned ended a logical packet.
    pub fn is_idle(&self) -> bool {
        self.pending.is_none()
    }

    /// Splits the next physical packet off `buf`; `Ok(None)` (buffer untouched) if it is incomplete.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let Some(head) = self.next_head(buf)? else {
            return Ok(None);
        };
        Ok(Some(Frame {
            seq: head.seq,
            raw: buf.split_to(head.total).freeze(),
            is_continuation: head.is_continuation,
            more_follows: head.more_follows,
        }))
    }

    /// Like [`FrameDecoder::decode`] without splitting: the header of the next physical packet,
    /// once all of it is in `buf`. The decoder then counts it as consumed: the caller must
    /// take its `total` bytes off the front of `buf` before asking for the next one. A relay
    /// that copies frames into an output buffer anyway saves a split (and the buffer's
    /// promotion to a shared one) per frame this way.
    pub fn next_head(&mut self, buf: &[u8]) -> Result<Option<FrameHead>, DecodeError> {
        let Some(ChunkHeader { len, seq, so_far }) =
            check_chunk_header(buf, self.pending.as_ref(), self.max_allowed_packet)?
        else {
            return Ok(None);
        };
        let total = chunk_total(len);
        if buf.len() < total {
            return Ok(None);
        }
        let is_continuation = self.pending.is_some();
        let more_follows = len == MAX_CHUNK_LEN;
        self.pending = if more_follows {
            let first_seq = self.pending.as_ref().map_or(seq, |p| p.first_seq);
            Some(Continuation {
                first_seq,
                next_seq: next_seq(seq),
                len: so_far,
            })
        } else {
            None
        };
        Ok(Some(FrameHead {
            seq,
            total,
            is_continuation,
            more_follows,
        }))
    }
}

/// A physical packet found by [`FrameDecoder::next_head`], still in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// Its sequence id.
    pub seq: u8,
    /// Bytes on the wire, header included.
    pub total: usize,
    /// This frame continues a logical packet started by an earlier frame.
    pub is_continuation: bool,
    /// This frame is 0xFFFFFF bytes long: the logical packet continues in the next frame.
    pub more_follows: bool,
}

/// Appends `payload` as one logical packet starting at sequence id `seq`, split into 0xFFFFFF-byte
/// chunks when needed (with the trailing empty chunk when the length is an exact multiple).
/// Returns the sequence id that follows the last chunk.
pub fn encode_packet(buf: &mut BytesMut, seq: u8, payload: &[u8]) -> u8 {
    let headers = HEADER_LEN.saturating_mul(chunk_count(payload.len()));
    buf.reserve(payload.len().saturating_add(headers));
    let mut seq = seq;
    let mut rest = payload;
    loop {
        let (chunk, tail) = rest.split_at_checked(MAX_CHUNK_LEN).unwrap_or((rest, &[]));
        buf.put_slice(&header(chunk.len(), seq));
        buf.put_slice(chunk);
        seq = next_seq(seq);
        rest = tail;
        if chunk.len() < MAX_CHUNK_LEN {
            return seq;
        }
    }
}

/// Starts a packet in `buf` (empty) whose payload the caller appends directly, saving the copy
/// [`encode_packet`] makes: room for the header, filled in by [`finish_packet`].
pub fn begin_packet(buf: &mut BytesMut) {
    buf.clear();
    buf.put_slice(&[0; HEADER_LEN]);
}

/// Completes a packet started with [`begin_packet`], at sequence id `seq`; a payload too long
/// for one physical packet is split as [`encode_packet`] does. Returns the sequence id that
/// follows the last chunk.
pub fn finish_packet(buf: &mut BytesMut, seq: u8) -> u8 {
    let len = buf.len().saturating_sub(HEADER_LEN);
    if len >= MAX_CHUNK_LEN {
        let payload = buf.split_off(HEADER_LEN.min(buf.len()));
        buf.clear();
        return encode_packet(buf, seq, &payload);
    }
    if let Some(h) = buf.first_chunk_mut::<HEADER_LEN>() {
        *h = header(len, seq);
    }
    next_seq(seq)
}

/// Appends one logical packet whose payload `write` produces: the header is reserved, the body
/// written in place, then the length filled in (a body of 16 MiB - 1 or more is re-split, which
/// copies once). Returns the sequence id that follows the last chunk.
pub fn encode_with(buf: &mut BytesMut, seq: u8, write: impl FnOnce(&mut BytesMut)) -> u8 {
    let start = buf.len();
    buf.put_slice(&[0; HEADER_LEN]);
    write(buf);
    let reserved = buf.get_mut(start..);
    match reserved.and_then(|b| b.split_first_chunk_mut::<HEADER_LEN>()) {
        Some((slot, body)) if body.len() < MAX_CHUNK_LEN => {
            *slot = header(body.len(), seq);
            next_seq(seq)
        }
        Some(_) => {
            // 16 MiB - 1 or more: re-split into chunks.
            let packet = buf.split_off(start);
            encode_packet(buf, seq, packet.get(HEADER_LEN..).unwrap_or_default())
        }
        // `write` removed the reserved header instead of appending: write nothing.
        None => {
            buf.truncate(start);
            seq
        }
    }
}

/// A physical packet's header. `len` must be at most [`MAX_CHUNK_LEN`], which 3 bytes hold.
fn header(len: usize, seq: u8) -> [u8; HEADER_LEN] {
    let [l0, l1, l2, _] = (len as u32).to_le_bytes();
    [l0, l1, l2, seq]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(seq: u8, payload: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        encode_packet(&mut b, seq, payload);
        b
    }

    #[test]
    fn small_packet_exact_bytes() {
        // COM_PING, seq 0.
        let b = encoded(0, &[0x0e]);
        assert_eq!(&b[..], &[0x01, 0x00, 0x00, 0x00, 0x0e]);
        assert_eq!(frame_len(&b), Some(5));
        assert_eq!(frame_len(&b[..4]), None);
        assert_eq!(peek_header(&b), Some((1, 0)));
        let mut c = PacketCodec::new(1024);
        let mut buf = b.clone();
        let p = c.decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            p,
            Packet {
                seq: 0,
                payload: Bytes::from_static(&[0x0e])
            }
        );
        assert_eq!(p.next_seq(), 1);
        assert!(buf.is_empty());
        // Empty payload: a bare header.
        assert_eq!(&encoded(7, &[])[..], &[0, 0, 0, 7]);
    }

    #[test]
    fn split_at_exactly_one_chunk_has_trailing_empty_packet() {
        let payload = vec![0xab; MAX_CHUNK_LEN];
        let mut b = BytesMut::new();
        assert_eq!(encode_packet(&mut b, 3, &payload), 5);
        assert_eq!(b.len(), MAX_CHUNK_LEN + 2 * HEADER_LEN);
        assert_eq!(&b[..4], &[0xff, 0xff, 0xff, 3]);
        assert_eq!(&b[b.len() - 4..], &[0, 0, 0, 4]);
        let mut c = PacketCodec::new(DEFAULT_MAX_ALLOWED_PACKET);
        let p = c.decode(&mut b).unwrap().unwrap();
        assert_eq!(p.seq, 3);
        assert_eq!(p.payload.len(), MAX_CHUNK_LEN);
        assert_eq!(p.chunk_count(), 2);
        assert_eq!(p.last_seq(), 4);
        assert!(c.is_idle());
    }

    #[test]
    fn split_at_two_chunks_and_one_byte_more() {
        for (len, chunks) in [
            (2 * MAX_CHUNK_LEN, 3),
            (2 * MAX_CHUNK_LEN + 1, 3),
            (MAX_CHUNK_LEN - 1, 1),
            (MAX_CHUNK_LEN + 1, 2),
        ] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut b = BytesMut::new();
            let next = encode_packet(&mut b, 255, &payload);
            assert_eq!(next, 255u8.wrapping_add(chunks as u8), "len {len}");
            assert_eq!(b.len(), len + chunks * HEADER_LEN);
            let mut c = PacketCodec::new(DEFAULT_MAX_ALLOWED_PACKET);
            let p = c.decode(&mut b).unwrap().unwrap();
            assert_eq!(p.seq, 255);
            assert_eq!(p.next_seq(), next);
            assert!(p.payload == payload, "len {len}");
            assert!(b.is_empty());
        }
    }

    #[test]
    fn encode_with_fills_header_and_resplits_large_bodies() {
        let mut b = BytesMut::new();
        let next = encode_with(&mut b, 9, |w| w.put_slice(b"hello"));
        assert_eq!(next, 10);
        assert_eq!(&b[..], b"\x05\x00\x00\x09hello");
        let mut big = BytesMut::new();
        big.put_slice(b"xx");
        let next = encode_with(&mut big, 0, |w| w.put_bytes(7, MAX_CHUNK_LEN));
        assert_eq!(next, 2);
        assert_eq!(&big[..2], b"xx");
        assert_eq!(
            big[..],
            encoded_prefixed(b"xx", 0, &vec![7; MAX_CHUNK_LEN])[..]
        );
    }

    fn encoded_prefixed(prefix: &[u8], seq: u8, payload: &[u8]) -> BytesMut {
        let mut b = BytesMut::from(prefix);
        encode_packet(&mut b, seq, payload);
        b
    }

    #[test]
    fn max_allowed_packet_is_enforced_from_the_header() {
        let mut c = PacketCodec::new(10);
        // Only the header of an 11-byte packet: refused before the body arrives.
        let mut b = BytesMut::from(&[11, 0, 0, 0][..]);
        assert_eq!(
            c.decode(&mut b),
            Err(DecodeError::PacketTooLarge { len: 11, max: 10 })
        );
        // Exactly the limit is fine.
        let mut b = encoded(0, &[1; 10]);
        assert_eq!(c.decode(&mut b).unwrap().unwrap().payload.len(), 10);
        // A first chunk of 16 MiB - 1 announces a logical size over a 1 MiB limit.
        let mut c = PacketCodec::new(1 << 20);
        let mut b = BytesMut::from(&[0xff, 0xff, 0xff, 0][..]);
        assert_eq!(
            c.decode(&mut b),
            Err(DecodeError::PacketTooLarge {
                len: MAX_CHUNK_LEN,
                max: 1 << 20
            })
        );
        let mut f = FrameDecoder::new(1 << 20);
        let mut b = BytesMut::from(&[0xff, 0xff, 0xff, 0][..]);
        assert!(f.decode(&mut b).unwrap_err().is_too_large());
    }

    #[test]
    fn max_allowed_packet_counts_all_chunks() {
        // Limit between one and two chunks: the second chunk's header crosses it.
        let max = MAX_CHUNK_LEN + 100;
        let mut stream = encoded(0, &vec![0; MAX_CHUNK_LEN + 101]);
        let mut c = PacketCodec::new(max);
        let mut first = stream.split_to(HEADER_LEN + MAX_CHUNK_LEN + HEADER_LEN);
        assert_eq!(
            c.decode(&mut first),
            Err(DecodeError::PacketTooLarge {
                len: MAX_CHUNK_LEN + 101,
                max
            })
        );
        let mut f = FrameDecoder::new(max);
        let mut stream = encoded(0, &vec![0; MAX_CHUNK_LEN + 101]);
        let fr = f.decode(&mut stream).unwrap().unwrap();
        assert!(fr.more_follows && !fr.is_continuation);
        assert!(f.decode(&mut stream).unwrap_err().is_too_large());
        // Exactly at the limit passes.
        let mut stream = encoded(0, &vec![0; max]);
        assert_eq!(
            PacketCodec::new(max)
                .decode(&mut stream)
                .unwrap()
                .unwrap()
                .payload
                .len(),
            max
        );
    }

    #[test]
    fn largest_header_lengths_do_not_overflow() {
        // 0xFFFFFF announced with no limit: the body is awaited, nothing is consumed.
        let mut b = BytesMut::from(&[0xff, 0xff, 0xff, 7, 1, 2][..]);
        assert_eq!(frame_len(&b), None);
        assert_eq!(PacketCodec::new(usize::MAX).decode(&mut b), Ok(None));
        assert_eq!(FrameDecoder::new(usize::MAX).decode(&mut b), Ok(None));
        assert_eq!(b.len(), 6);
        // Truncated headers.
        for n in 0..HEADER_LEN {
            let mut b = BytesMut::from(&[0xff, 0xff, 0xff, 0][..n]);
            assert_eq!(frame_len(&b), None);
            assert_eq!(PacketCodec::default().decode(&mut b), Ok(None));
            assert_eq!(FrameDecoder::default().decode(&mut b), Ok(None));
        }
    }

    #[test]
    fn encode_with_frames_what_it_writes() {
        let mut b = BytesMut::from(&b"xy"[..]);
        assert_eq!(encode_with(&mut b, 255, |b| b.put_slice(&[0x0e])), 0);
        assert_eq!(&b[..], b"xy\x01\0\0\xff\x0e");
        // A writer that removes the reserved header: nothing is framed.
        let mut b = BytesMut::from(&b"xy"[..]);
        assert_eq!(encode_with(&mut b, 3, |b| b.truncate(1)), 3);
        assert_eq!(&b[..], b"x");
        // At 16 MiB - 1 the body is re-split, with the trailing empty chunk.
        let mut b = BytesMut::new();
        assert_eq!(encode_with(&mut b, 0, |b| b.put_bytes(7, MAX_CHUNK_LEN)), 2);
        assert_eq!(b, encoded(0, &vec![7; MAX_CHUNK_LEN]));
    }

    #[test]
    fn last_seq_wraps() {
        let p = Packet {
            seq: 255,
            payload: Bytes::from(vec![0; MAX_CHUNK_LEN]),
        };
        assert_eq!((p.chunk_count(), p.last_seq(), p.next_seq()), (2, 0, 1));
        let p = Packet {
            seq: 255,
            payload: Bytes::new(),
        };
        assert_eq!((p.chunk_count(), p.last_seq(), p.next_seq()), (1, 255, 0));
        assert_eq!(chunk_count(usize::MAX), usize::MAX / MAX_CHUNK_LEN + 1);
    }

    #[test]
    fn continuation_with_wrong_sequence_is_rejected() {
        let mut b = encoded(0, &vec![0; MAX_CHUNK_LEN + 3]);
        let second = HEADER_LEN + MAX_CHUNK_LEN + 3;
        b[second] = 9;
        let mut c = PacketCodec::default();
        assert_eq!(
            c.decode(&mut b),
            Err(DecodeError::SequenceMismatch {
                expected: 1,
                got: 9
            })
        );
    }

    #[test]
    fn frames_are_forwarded_untouched() {
        let payload = vec![5; MAX_CHUNK_LEN * 2];
        let mut stream = encoded(0, &payload);
        stream.put_slice(&encoded(3, b"tail"));
        let original = stream.clone().freeze();
        let mut f = FrameDecoder::default();
        let mut out = Vec::new();
        let mut frames = Vec::new();
        while let Some(fr) = f.decode(&mut stream).unwrap() {
            out.extend_from_slice(&fr.raw);
            frames.push((
                fr.seq,
                fr.is_continuation,
                fr.more_follows,
                fr.payload().len(),
            ));
        }
        assert_eq!(out, original);
        assert_eq!(
            frames,
            vec![
                (0, false, true, MAX_CHUNK_LEN),
                (1, true, true, MAX_CHUNK_LEN),
                (2, true, false, 0),
                (3, false, false, 4),
            ]
        );
        assert!(f.is_idle());
    }

    #[test]
    fn split_packets_survive_arbitrary_slicing() {
        // Small, 3-chunk (2 * 0xFFFFFF + 5), exact-multiple (trailing empty chunk), small.
        let packets: Vec<(u8, Vec<u8>)> = vec![
            (0, b"abc".to_vec()),
            (
                1,
                (0..2 * MAX_CHUNK_LEN + 5)
                    .map(|i| (i % 253) as u8)
                    .collect(),
            ),
            (4, vec![9; MAX_CHUNK_LEN]),
            (6, b"z".to_vec()),
        ];
        let mut stream = BytesMut::new();
        let mut seq = 0;
        for (s, p) in &packets {
            assert_eq!(*s, seq);
            seq = encode_packet(&mut stream, seq, p);
        }
        let stream = stream.freeze();
        // Slices of pseudo-random sizes (1 byte .. ~3 MiB), so headers and bodies split anywhere.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut codec = PacketCodec::default();
        let mut frames = FrameDecoder::default();
        let (mut buf, mut fbuf) = (BytesMut::new(), BytesMut::new());
        let (mut got, mut raw) = (Vec::new(), Vec::new());
        let mut pos = 0;
        while pos < stream.len() {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = if x >> 63 == 1 {
                (x >> 40) as usize % 7 + 1
            } else {
                (x >> 42) as usize
            };
            let n = n.clamp(1, stream.len() - pos);
            buf.extend_from_slice(&stream[pos..pos + n]);
            fbuf.extend_from_slice(&stream[pos..pos + n]);
            pos += n;
            while let Some(p) = codec.decode(&mut buf).unwrap() {
                got.push((p.seq, p.payload.to_vec()));
            }
            while let Some(f) = frames.decode(&mut fbuf).unwrap() {
                raw.extend_from_slice(&f.raw);
            }
        }
        assert!(got == packets);
        assert!(raw == stream);
        assert!(codec.is_idle() && frames.is_idle());
    }

    fn several_packets() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
        proptest::collection::vec(
            (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300)),
            1..8,
        )
    }

    proptest! {
        #[test]
        fn arbitrary_chunking_yields_the_same_packets(
            packets in several_packets(),
            cuts in proptest::collection::vec(1usize..64, 1..200),
        ) {
            let mut stream = BytesMut::new();
            for (seq, p) in &packets {
                encode_packet(&mut stream, *seq, p);
            }
            let stream = stream.freeze();
            let mut codec = PacketCodec::new(1000);
            let mut frames = FrameDecoder::new(1000);
            let mut buf = BytesMut::new();
            let mut fbuf = BytesMut::new();
            let mut got = Vec::new();
            let mut raw = Vec::new();
            let mut pos = 0;
            let mut cut = cuts.iter().cycle();
            while pos < stream.len() {
                let n = (*cut.next().unwrap()).min(stream.len() - pos);
                buf.extend_from_slice(&stream[pos..pos + n]);
                fbuf.extend_from_slice(&stream[pos..pos + n]);
                pos += n;
                while let Some(p) = codec.decode(&mut buf).unwrap() {
                    got.push((p.seq, p.payload.to_vec()));
                }
                while let Some(f) = frames.decode(&mut fbuf).unwrap() {
                    raw.extend_from_slice(&f.raw);
                }
            }
            prop_assert_eq!(got, packets);
            prop_assert!(buf.is_empty());
            prop_assert_eq!(&raw[..], &stream[..]);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), max in 0usize..300) {
            let mut buf = BytesMut::from(&bytes[..]);
            let mut c = PacketCodec::new(max);
            while let Ok(Some(_)) = c.decode(&mut buf) {}
            let mut buf = BytesMut::from(&bytes[..]);
            let mut f = FrameDecoder::new(max);
            while let Ok(Some(fr)) = f.decode(&mut buf) {
                let _ = fr.payload();
            }
            let _ = frame_len(&bytes);
        }
    }
    #[test]
    fn packets_built_in_place_match_encode_packet() {
        for len in [
            0,
            1,
            250,
            MAX_CHUNK_LEN - 1,
            MAX_CHUNK_LEN,
            MAX_CHUNK_LEN + 3,
        ] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut expected = BytesMut::new();
            let next = encode_packet(&mut expected, 7, &payload);
            let mut built = BytesMut::from(&b"stale"[..]);
            begin_packet(&mut built);
            built.extend_from_slice(&payload);
            assert_eq!(finish_packet(&mut built, 7), next, "len {len}");
            assert!(built[..] == expected[..], "len {len}");
        }
    }
}
