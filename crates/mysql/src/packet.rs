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
mod tests;
