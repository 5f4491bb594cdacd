//! Spare buffers shared by the sessions of one proxy.
//!
//! A client resting in its worker's lot, or idle without being able to rest (TLS, an idle
//! deadline), holds no read or write buffer (see [`crate::idle`], `Park::shed`); a client that
//! wakes needs one again. Allocating a fresh buffer of a few kilobytes each time and freeing it
//! goes past the allocator's per-thread cache, so such a client gives its buffers here and a
//! client waking takes them back, as PgBouncer keeps a pool of I/O buffers. A busy client that
//! may rest keeps its buffers between statements: trading them at every statement cost a lock,
//! a conversion and a fill per buffer, and kept a few hot buffers cycling among all clients.
//!
//! Invariants: at most [`SpareBuffers::MAX_KEPT`] buffers are kept, each a whole allocation of
//! [`SpareBuffers::MIN_CAPACITY`] to [`SpareBuffers::MAX_CAPACITY`] bytes (a buffer grown by
//! one large message is freed rather than kept, however small the window left on it), so the
//! stash never holds more than about two megabytes; a buffer handed out is empty, shares its
//! memory with nothing, and can take `MIN_CAPACITY` bytes without growing.

use std::sync::{Mutex, PoisonError};

use bytes::BytesMut;

#[derive(Debug, Default)]
pub struct SpareBuffers {
    /// Kept as `Vec`s: a `Vec`'s capacity is its whole allocation, where a `BytesMut`'s is only
    /// the window left after `advance`/`split_to` (a buffer that once held a 16 MB message can
    /// look like 4 kB).
    stash: Mutex<Vec<Vec<u8>>>,
}

impl SpareBuffers {
    /// Buffers kept at most: enough for the clients of a busy moment on a few pools.
    pub const MAX_KEPT: usize = 128;
    /// Every buffer handed out holds at least this much (a client read reserves 2 kB).
    pub const MIN_CAPACITY: usize = 2 * 1024;
    /// Larger buffers are freed, not kept.
    pub const MAX_CAPACITY: usize = 16 * 1024;
    /// Kept buffers up to this size are filled when given back (see [`Self::give`]); above
    /// it zeroing costs more than the box it saves (glibc switches to `rep stosb` there).
    const FILL_MAX: usize = Self::MIN_CAPACITY;

    /// An empty buffer of at least [`Self::MIN_CAPACITY`]: a spare one if there is one.
    pub fn take(&self) -> BytesMut {
        let spare = self
            .stash
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        // `BytesMut` has no `From<Vec<u8>>`. Through `Bytes` the allocation is kept; a `Vec`
        // whose length is its capacity (a small kept one is filled, see `give`) passes as a
        // boxed slice, which `Bytes` and then `BytesMut` adopt without a bookkeeping box.
        spare.map_or_else(
            || BytesMut::with_capacity(Self::MIN_CAPACITY),
            |v| {
                let mut b = BytesMut::from(bytes::Bytes::from(v));
                b.clear();
                b
            },
        )
    }

    /// Gives a buffer back (emptied); kept if its whole allocation is of a useful size and
    /// there is room. A buffer whose memory is still shared (a message split off it and not
    /// yet dropped) comes out of the conversion as a fresh, unallocated `Vec` and is not kept.
    pub fn give(&self, mut buf: BytesMut) {
        buf.clear();
        let mut whole: Vec<u8> = buf.into();
        if !(Self::MIN_CAPACITY..=Self::MAX_CAPACITY).contains(&whole.capacity()) {
            return;
        }
        // Length = capacity lets `take` convert it without allocating: for a small buffer a
        // few kilobytes of zeroes cost less than the allocation saved; a larger one keeps its
        // length 0 and costs `take` the bookkeeping box instead.
        if whole.capacity() <= Self::FILL_MAX {
            whole.resize(whole.capacity(), 0);
        }
        let mut stash = self.stash.lock().unwrap_or_else(PoisonError::into_inner);
        if stash.len() < Self::MAX_KEPT {
            stash.push(whole);
        }
    }

    /// For a buffer a busy client keeps between statements: let it go (it is freed, not kept)
    /// when it has grown past [`Self::MAX_CAPACITY`] for a large message, so a client that
    /// never rests does not hold its largest message's memory for good. Its window is what
    /// is seen: a buffer advanced past a large message looks small until its next `reserve`
    /// moves it back to the front of its allocation, so it goes at the next park after that.
    pub fn trim(&self, buf: &mut BytesMut) {
        if buf.capacity() > Self::MAX_CAPACITY {
            self.give(std::mem::take(buf));
        }
    }

    /// Buffers kept now (tests).
    pub fn kept(&self) -> usize {
        self.stash
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    #[test]
    fn buffers_come_back_empty_and_the_stash_is_bounded() {
        let spare = SpareBuffers::default();
        let mut b = spare.take();
        assert!(
            b.capacity() >= SpareBuffers::MIN_CAPACITY,
            "nothing kept yet: a new one"
        );
        b.extend_from_slice(b"Q\0\0\0\x0dSELECT 1\0");
        let at = b.as_ptr();
        spare.give(b);
        let again = spare.take();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), at, "the same allocation, reused");

        spare.give(BytesMut::new());
        spare.give(BytesMut::with_capacity(100));
        spare.give(BytesMut::with_capacity(SpareBuffers::MAX_CAPACITY + 1));
        assert_eq!(spare.kept(), 0, "small and oversized buffers are not kept");
        for _ in 0..SpareBuffers::MAX_KEPT + 10 {
            spare.give(BytesMut::with_capacity(4096));
        }
        assert_eq!(spare.kept(), SpareBuffers::MAX_KEPT);
    }

    #[test]
    fn a_kept_buffer_is_let_go_once_it_grew_for_a_large_message() {
        let spare = SpareBuffers::default();
        let mut small = spare.take();
        small.extend_from_slice(b"SELECT 1");
        spare.trim(&mut small);
        assert_eq!(small.as_ref(), b"SELECT 1", "an ordinary buffer stays");
        let mut grown = BytesMut::with_capacity(SpareBuffers::MIN_CAPACITY);
        grown.reserve(1 << 20);
        spare.trim(&mut grown);
        assert_eq!(grown.capacity(), 0, "a grown one goes");
        assert_eq!(spare.kept(), 0, "and is freed, not kept");
    }

    #[test]
    fn a_large_allocation_behind_a_small_window_is_not_kept() {
        const BIG: usize = 1 << 20;
        let message_len = BIG - 4096;
        let spare = SpareBuffers::default();
        // Advanced past one large message: the window looks small, the allocation is not.
        let mut advanced = BytesMut::with_capacity(BIG);
        advanced.extend_from_slice(&vec![7u8; message_len]);
        advanced.advance(message_len);
        assert!(advanced.capacity() <= SpareBuffers::MAX_CAPACITY);
        spare.give(advanced);
        // The message split off and still alive: the memory is shared.
        let mut split = BytesMut::with_capacity(BIG);
        split.extend_from_slice(&vec![7u8; message_len]);
        let message = split.split_to(message_len).freeze();
        assert!(split.capacity() <= SpareBuffers::MAX_CAPACITY);
        spare.give(split);
        assert_eq!(spare.kept(), 0);
        assert_eq!(
            message.len(),
            message_len,
            "the split-off message is untouched"
        );
    }
}
