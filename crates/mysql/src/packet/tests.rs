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
