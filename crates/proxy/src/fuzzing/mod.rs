//! Fuzzing entry points: one function per fuzz target, each taking arbitrary bytes.
//!
//! Both the coverage-guided campaign (`fuzz/`, libFuzzer, `scripts/fuzz`) and the corpus replay
//! test on stable Rust (`tests/fuzz_corpus.rs`) call these, so a committed corpus file checks
//! exactly what the fuzzer checked. They are here, not in `fuzz/`, because the proxy's scanners
//! are private to this crate; exposing one function per target keeps those modules private.
//!
//! Each function asserts the invariants of its code under any input: no panic, output bounded by
//! the input (no allocation or item count sized by a length field), and for the stream decoders,
//! the same messages whether the bytes arrive at once or in pieces. A failed assertion is a bug
//! in the code under test, not in the target.
//!
//! Input layout: where a target needs parameters (a chunk size, capability flags), they come
//! from the first bytes, so the fuzzer explores them too; the rest is the data.

use bytes::BytesMut;

pub mod session;

/// The session-state scanner and the reported-parameter list, for the differential test
/// against PostgreSQL's own parser (`fuzz/pg-differential`).
pub use crate::pg::features;
pub use crate::pg::params::is_reported;

/// A fuzz target: any bytes in, panics on a broken invariant.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/` call it.
pub const TARGETS: &[(&str, Target)] = &[
    ("pg_frontend", pg_frontend),
    ("pg_backend", pg_backend),
    ("pg_startup", pg_startup),
    ("pg_scanner", pg_scanner),
    ("pg_features", pg_features),
    ("mysql_packet", mysql_packet),
    ("mysql_handshake", mysql_handshake),
    ("mysql_tracker", mysql_tracker),
    ("mysql_sql", mysql_sql),
    ("mysql_sha2", mysql_sha2),
];

/// Splits off the first byte as a parameter (0 when the input is empty).
fn param(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((&p, rest)) => (p, rest),
        None => (0, data),
    }
}

/// A chunk size in `1..=64` from a parameter byte: small pieces are where partial-header bugs
/// live.
fn chunk_size(p: u8) -> usize {
    usize::from(p % 64) + 1
}

/// Lossy UTF-8 grows each invalid byte to 3 bytes (U+FFFD): the bound for text copied from input.
fn lossy_bound(input_len: usize) -> usize {
    input_len * 3
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL codec

/// Bound on a tagged message in the PostgreSQL targets: small enough that the fuzzer reaches
/// `TooLong`, large enough for every real message in the corpus.
const PG_MAX_LEN: usize = 8 * 1024;

/// Decodes tagged frames from `stream` fed `chunk` bytes at a time: the frames, and whether the
/// stream ended in an error.
fn pg_frames(stream: &[u8], chunk: usize) -> (Vec<poolguard_pg::Frame>, bool) {
    drain(stream, chunk, |buf| {
        let frame = poolguard_pg::decode_frame(buf, PG_MAX_LEN)?;
        assert!(frame
            .as_ref()
            .is_none_or(|f| f.body.len() + 4 <= PG_MAX_LEN));
        Ok::<_, poolguard_pg::DecodeError>(frame)
    })
}

/// Feeds `stream` to `decode` `chunk` bytes at a time, as a socket would, calling it until it
/// needs more bytes: the items decoded, and whether the stream ended in an error.
fn drain<T, E>(
    stream: &[u8],
    chunk: usize,
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, E>,
) -> (Vec<T>, bool) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in stream.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decode(&mut buf) {
                Ok(Some(item)) => out.push(item),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

/// Frames decoded at once and in pieces must agree; returns them.
fn pg_stream(data: &[u8]) -> Vec<poolguard_pg::Frame> {
    let (p, stream) = param(data);
    let whole = pg_frames(stream, stream.len());
    let pieces = pg_frames(stream, chunk_size(p));
    assert_eq!(whole, pieces, "chunking changed the decoded frames");
    let consumed: usize = whole.0.iter().map(|f| f.body.len() + 5).sum();
    assert!(consumed <= stream.len());
    whole.0
}

/// PostgreSQL frontend messages: framing, then every client-message body decoder on each body.
pub fn pg_frontend(data: &[u8]) {
    use poolguard_pg::frontend::*;
    for f in pg_stream(data) {
        let body = &f.body[..];
        if let Ok(p) = parse_password(body) {
            assert!(p.len() < body.len());
        }
        if let Ok((mechanism, initial)) = parse_sasl_initial_response(body) {
            assert!(mechanism.len() + initial.map_or(0, <[u8]>::len) + 5 <= body.len());
        }
        if let Ok(q) = parse_query(body) {
            assert_eq!(q.len() + 1, body.len());
        }
        if let Ok(p) = parse_parse(body) {
            assert!(p.name.len() + p.query.len() + 4 + 4 * p.param_types.len() == body.len());
        }
        if let Ok((head, rest)) = split_bind(body) {
            assert_eq!(
                head.portal.len() + head.statement.len() + 2 + rest.len(),
                body.len()
            );
            assert_eq!(parse_bind_head(body), Ok(head));
            // Re-emitting a Bind under its own names must give back the same body.
            let mut again = BytesMut::new();
            bind_with_rest(&mut again, head.portal, head.statement, rest);
            assert_eq!(&again[5..], body, "Bind re-emitted differently");
        }
        if let Ok((kind, name)) = parse_close_or_describe(body) {
            assert!(kind == STATEMENT || kind == PORTAL);
            assert_eq!(name.len() + 2, body.len());
        }
        if let Ok((portal, _)) = parse_execute(body) {
            assert_eq!(portal.len() + 5, body.len());
        }
    }
}

/// PostgreSQL backend messages: framing, then every server-message body decoder on each body.
pub fn pg_backend(data: &[u8]) {
    use poolguard_pg::backend::*;
    for f in pg_stream(data) {
        let body = &f.body[..];
        if let Ok(Authentication::Sasl { mechanisms }) = parse_authentication(&f.body) {
            let text: usize = mechanisms.iter().map(|m| m.len() + 1).sum();
            assert!(text + 5 <= body.len());
        }
        if let Ok((name, value)) = parse_parameter_status(body) {
            let mut again = BytesMut::new();
            parameter_status(&mut again, name, value);
            assert_eq!(&again[5..], body, "ParameterStatus re-encoded differently");
        }
        let _ = parse_backend_key_data(body);
        if let Ok(status) = parse_ready_for_query(body) {
            let mut again = BytesMut::new();
            ready_for_query(&mut again, status);
            assert_eq!(&again[5..], body);
        }
        if let Ok(tag) = parse_command_complete(body) {
            assert_eq!(tag.len() + 1, body.len());
        }
        if let Ok(e) = parse_error_notice(body) {
            let text = e.severity.len()
                + e.code.len()
                + e.message.len()
                + e.detail.as_ref().map_or(0, String::len)
                + e.hint.as_ref().map_or(0, String::len);
            assert!(text <= lossy_bound(body.len()));
            // Relaying it must not panic, whatever the server sent.
            let mut out = BytesMut::new();
            error_response(&mut out, &e.fields());
            let _ = e.is_fatal();
        }
        if let Ok(columns) = parse_row_description(body) {
            // Each column takes at least 19 bytes: a NUL-terminated name and 18 fixed bytes.
            assert!(columns.len() * 19 + 2 <= body.len());
        }
        if let Ok(values) = parse_data_row(body) {
            assert!(values.len() * 4 + 2 <= body.len());
        }
    }
}

/// PostgreSQL startup-phase packets (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest),
/// decoded at once and in pieces.
pub fn pg_startup(data: &[u8]) {
    use poolguard_pg::startup::MAX_STARTUP_LEN;
    use poolguard_pg::{decode_startup, StartupRequest};
    let (p, stream) = param(data);
    let run = |chunk: usize| {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in stream.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                let before = buf.len();
                match decode_startup(&mut buf) {
                    Ok(Some(r)) => {
                        let used = before - buf.len();
                        assert!((8..=MAX_STARTUP_LEN).contains(&used));
                        if let StartupRequest::Startup { params, .. } = &r {
                            let text: usize = params.iter().map(|(k, v)| k.len() + v.len()).sum();
                            assert!(text + 8 <= used);
                        }
                        out.push(r);
                    }
                    Ok(None) => {
                        assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                        break;
                    }
                    Err(_) => {
                        assert_eq!(buf.len(), before, "an error consumed bytes");
                        return (out, true);
                    }
                }
            }
        }
        (out, false)
    };
    assert_eq!(run(stream.len()), run(chunk_size(p)));
}

// ---------------------------------------------------------------------------------------------
// The proxy's PostgreSQL scanners

/// The relay's message [`Scanner`](crate::pg::scan::Scanner): byte 0 picks the chunk size and
/// which tags need their body, byte 1 the length limit. Checks that steps are never empty, cover
/// exactly the bytes consumed, agree with the codec's header check, and do not depend on
/// chunking.
pub fn pg_scanner(data: &[u8]) {
    use crate::pg::scan::{Scanner, Step, PASS_THROUGH};
    let (p, data) = param(data);
    let (l, stream) = param(data);
    // Limits on both sides of PASS_THROUGH and of i32::MAX (the scanner reads the length as
    // unsigned, the codec as signed).
    let max_len = match l % 4 {
        0 => 64,
        1 => PASS_THROUGH * 2,
        2 => poolguard_pg::DEFAULT_MAX_MESSAGE_LEN,
        _ => i32::MAX as usize,
    };
    let need_mask = p >> 6;
    let need_body = move |tag: u8| tag == b'Z' || (need_mask != 0 && tag % 4 == need_mask);
    let run = |chunk: usize| {
        let mut s = Scanner::new(max_len);
        let mut buf: Vec<u8> = Vec::new();
        let mut steps = Vec::new();
        let mut consumed = 0;
        for piece in stream.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            let mut pos = 0;
            loop {
                let front = &buf[pos..];
                let mid = s.mid_message();
                let header = poolguard_pg::framing::peek_header(front, max_len);
                match s.step(front, need_body) {
                    Ok(Some(step)) => {
                        let n = step.len();
                        assert!(n > 0 && n <= front.len(), "step of {n} bytes");
                        match &step {
                            Step::Whole { tag, body, len } => {
                                assert!(!mid);
                                assert_eq!(body.len() + 5, *len);
                                let h = header.expect("codec refused a header the scanner took");
                                assert_eq!(h.map(|h| (h.tag, h.total_len)), Some((*tag, *len)));
                                steps.push((*tag, *len));
                            }
                            Step::Head { tag, len } => {
                                assert!(!mid && !need_body(*tag));
                                let h = header.expect("codec refused a header the scanner took");
                                let total = h.map(|h| h.total_len).unwrap_or(0);
                                assert!(total > PASS_THROUGH && *len < total);
                                steps.push((*tag, total));
                            }
                            Step::Rest { .. } => assert!(mid),
                        }
                        pos += n;
                    }
                    Ok(None) => break,
                    Err(_) => {
                        assert!(!mid && header.is_err(), "scanner and codec disagree");
                        consumed += pos;
                        return (steps, consumed, true);
                    }
                }
            }
            consumed += pos;
            buf.drain(..pos);
        }
        assert!(consumed <= stream.len());
        (steps, consumed, false)
    };
    let whole = run(stream.len());
    let pieces = run(chunk_size(p));
    // In pieces, a long message may be streamed (Head) where the whole buffer held it at once
    // (Whole): compare the messages seen, not the shape of the steps.
    assert_eq!(whole.0, pieces.0, "chunking changed the messages");
    assert_eq!(whole.2, pieces.2, "chunking changed the outcome");
}

/// Parameters an operator might add to `track_extra_parameters` (see `pg::features::scan`).
const PG_EXTRAS: &[&str] = &["search_path", "work_mem", "lock_timeout"];

/// The SQL scanner that detects session state ([`crate::pg::features::scan`]) on any text.
pub fn pg_features(data: &[u8]) {
    use crate::pg::features::{Encoding, Lexing};
    // The first byte picks how the text is read (the client's encoding, and
    // standard_conforming_strings); the rest is the text itself, raw bytes.
    let (choice, sql) = data.split_first().map_or((0, data), |(c, rest)| (*c, rest));
    let lexing = Lexing {
        encoding: if choice & 1 == 0 {
            Encoding::AsciiSafe
        } else {
            Encoding::of("SJIS")
        },
        standard_conforming_strings: choice & 2 == 0,
        follow_sets: choice & 4 == 0,
        any_encoding: choice & 8 == 0,
    };
    let extras: Vec<String> = PG_EXTRAS.iter().map(|s| s.to_string()).collect();
    let f = crate::pg::features::scan(sql, lexing, &extras);
    // At most one feature per statement plus the advisory-lock search, set_config and a
    // disagreement between readings, and statements are at least one byte apart.
    assert!(f.features.len() <= sql.len() + 3);
    assert!(f.tracked.len() <= sql.len());
    let copied: usize = f
        .features
        .iter()
        .map(|x| x.describe().len())
        .chain(f.tracked.iter().map(|t| match t {
            crate::pg::features::TrackedSet::Set { name, value } => name.len() + value.len(),
            crate::pg::features::TrackedSet::Reset { name } => name.len(),
        }))
        .sum();
    // Text is copied out lossily: an invalid byte becomes U+FFFD, three bytes.
    assert!(copied <= 64 * (f.features.len() + 1) + 6 * sql.len());
}

// ---------------------------------------------------------------------------------------------
// MySQL codec

/// `max_allowed_packet` for the MySQL stream targets, from a parameter byte.
fn mysql_max(p: u8) -> usize {
    match p % 4 {
        0 => 64,
        1 => 4096,
        2 => poolguard_mysql::packet::MAX_CHUNK_LEN,
        _ => poolguard_mysql::packet::DEFAULT_MAX_ALLOWED_PACKET,
    }
}

/// The MySQL packet decoders, [`PacketCodec`](poolguard_mysql::PacketCodec) (logical packets)
/// and [`FrameDecoder`](poolguard_mysql::FrameDecoder) (physical frames), at once and in pieces;
/// re-encoding a logical packet must give back its frames' bytes.
pub fn mysql_packet(data: &[u8]) {
    use poolguard_mysql::{encode_packet, FrameDecoder, PacketCodec};
    let (p, stream) = param(data);
    let max = mysql_max(p);
    let packets = |chunk: usize| {
        let mut codec = PacketCodec::new(max);
        drain(stream, chunk, |buf| {
            let packet = codec.decode(buf)?;
            assert!(packet.as_ref().is_none_or(|p| p.payload.len() <= max));
            Ok::<_, poolguard_mysql::DecodeError>(packet)
        })
    };
    let frames = |chunk: usize| {
        let mut dec = FrameDecoder::new(max);
        drain(stream, chunk, |buf| {
            let before = buf.len();
            let frame = dec.decode(buf)?;
            let used = frame.as_ref().map_or(0, |f| f.raw.len());
            assert_eq!(used, before - buf.len());
            if let Some(f) = &frame {
                assert_eq!(poolguard_mysql::packet::frame_len(&f.raw), Some(used));
            }
            Ok::<_, poolguard_mysql::DecodeError>(frame)
        })
    };
    let whole = packets(stream.len());
    assert_eq!(
        whole,
        packets(chunk_size(p)),
        "chunking changed the packets"
    );
    let raw = frames(stream.len());
    assert_eq!(raw, frames(chunk_size(p)), "chunking changed the frames");
    // Both decoders see the same stream: the frames re-encode the packets, byte for byte.
    let mut reencoded = BytesMut::new();
    for packet in &whole.0 {
        encode_packet(&mut reencoded, packet.seq, &packet.payload);
    }
    let framed: Vec<u8> = raw.0.iter().flat_map(|f| f.raw.iter().copied()).collect();
    assert!(
        framed.starts_with(&reencoded),
        "packets and frames disagree"
    );
}

/// Payload decoders of the MySQL connection phase (handshake response, SSL request,
/// COM_CHANGE_USER, greeting, auth switch) and generic responses, on one payload. Byte 0 picks
/// the capabilities COM_CHANGE_USER and OK decoding assume.
pub fn mysql_handshake(data: &[u8]) {
    use poolguard_mysql::consts::{
        CLIENT_CONNECT_ATTRS, CLIENT_DEPRECATE_EOF, CLIENT_PLUGIN_AUTH, CLIENT_PROTOCOL_41,
        CLIENT_SECURE_CONNECTION, CLIENT_SESSION_TRACK,
    };
    use poolguard_mysql::handshake::*;
    use poolguard_mysql::response::{EofPacket, ErrPacket, OkPacket};
    let (p, payload) = param(data);
    let flags = [
        CLIENT_PROTOCOL_41,
        CLIENT_SECURE_CONNECTION,
        CLIENT_PLUGIN_AUTH,
        CLIENT_CONNECT_ATTRS,
        CLIENT_SESSION_TRACK,
        CLIENT_DEPRECATE_EOF,
    ];
    let caps = flags
        .iter()
        .enumerate()
        .filter(|(i, _)| p & (1 << i) != 0)
        .fold(0, |acc, (_, f)| acc | f);
    let bound = lossy_bound(payload.len());
    match decode_client_handshake(payload) {
        Ok(ClientHandshake::Response(r)) => {
            let attrs: usize = r.connect_attrs.iter().map(|(k, v)| k.len() + v.len()).sum();
            let db = r.database.as_ref().map_or(0, String::len);
            assert!(r.username.len() + r.auth_response.len() + db + attrs <= bound);
            let _ = r.attr("_client_name");
            // What the proxy decodes it can re-encode.
            let mut again = BytesMut::new();
            r.encode(&mut again);
        }
        Ok(ClientHandshake::SslRequest(s)) => assert_eq!(payload.len(), 32, "{s:?}"),
        Err(_) => {}
    }
    let _ = HandshakeResponse41::decode(payload);
    if let Ok(c) = ChangeUser::decode(payload, caps) {
        let attrs: usize = c.connect_attrs.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(c.username.len() + c.auth_response.len() + c.database.len() + attrs <= bound);
        let mut again = BytesMut::new();
        c.encode(&mut again, caps);
    }
    if let Ok(g) = HandshakeV10::decode(payload) {
        let _ = g.is_mariadb();
        let mut again = BytesMut::new();
        g.encode(&mut again);
    }
    let _ = AuthSwitchRequest::decode(payload);
    let _ = AuthMoreData::decode(payload);
    let _ = OkPacket::decode(payload, caps);
    if let Ok(e) = ErrPacket::decode(payload) {
        assert!(e.message.len() <= bound);
        let _ = e.sql_state_str();
    }
    let _ = EofPacket::decode(payload);
    let _ = poolguard_mysql::response::classify(payload);
    let _ = poolguard_mysql::stmt::StmtPrepareOk::decode(payload);
    let _ = poolguard_mysql::resultset::ColumnDefinition::decode(payload);
    if let Ok(row) = poolguard_mysql::resultset::decode_text_row(payload, usize::from(p)) {
        assert!(row.len() <= payload.len());
    }
}

/// The MySQL [`ResponseTracker`](poolguard_mysql::ResponseTracker) fed arbitrary frames. Byte 0
/// is the command, byte 1 the capabilities (bit 0: DEPRECATE_EOF, bit 1: MariaDB cache
/// metadata); then frames as `[len][payload]`, where len 255 marks a continuation frame whose
/// length is the next byte. Once the tracker says Done, feeding it again must be an error.
pub fn mysql_tracker(data: &[u8]) {
    use poolguard_mysql::consts::{CLIENT_DEPRECATE_EOF, MARIADB_CLIENT_CACHE_METADATA};
    use poolguard_mysql::{encode_packet, Frame, Progress, ResponseTracker};
    let (command, data) = param(data);
    let (flags, mut rest) = param(data);
    let caps = if flags & 1 != 0 {
        CLIENT_DEPRECATE_EOF
    } else {
        0
    };
    let mariadb = if flags & 2 != 0 {
        MARIADB_CLIENT_CACHE_METADATA
    } else {
        0
    };
    let mut by_frame = ResponseTracker::new(command, caps).with_mariadb_capabilities(mariadb);
    let mut by_payload = by_frame.clone();
    let mut fed = 0u64;
    let mut finished = by_frame.is_done();
    while let Some((&len, tail)) = rest.split_first() {
        let (is_continuation, len, tail) = match (len, tail.split_first()) {
            (255, Some((&n, t))) => (true, n, t),
            (255, None) => break,
            (n, _) => (false, n, tail),
        };
        let take = usize::from(len).min(tail.len());
        let (payload, after) = tail.split_at(take);
        rest = after;
        let mut raw = BytesMut::new();
        encode_packet(&mut raw, 0, payload);
        let frame = Frame {
            seq: 0,
            raw: raw.freeze(),
            is_continuation,
            more_follows: false,
        };
        let got = by_frame.feed_frame(&frame);
        if finished {
            assert!(got.is_err(), "a complete response accepted more: {got:?}");
            break;
        }
        if !is_continuation {
            // A frame that starts a packet is judged by its payload alone.
            assert_eq!(
                got,
                by_payload.feed(payload),
                "feed and feed_frame disagree"
            );
        }
        fed += 1;
        assert!(by_frame.rows() <= fed && u64::from(by_frame.result_sets()) <= fed);
        match got {
            Ok(Progress::Done { .. }) => {
                assert!(by_frame.is_done());
                finished = true;
            }
            Ok(_) => assert!(!by_frame.is_done()),
            Err(_) => break,
        }
    }
}

/// The MySQL SQL scanner ([`crate::mysql::sql::scan`]) on any bytes.
pub fn mysql_sql(data: &[u8]) {
    let f = crate::mysql::sql::scan(data, || data.first().is_some_and(|b| b & 1 == 1));
    let bound = lossy_bound(data.len());
    assert!(f.settings.len() <= data.len());
    for s in &f.settings {
        assert!(s.key.len() <= bound + 64 && s.stmt.len() <= bound + 4);
    }
    assert!(f.pin.as_ref().map_or(0, String::len) <= bound + 80);
    assert!(f.use_schema.as_ref().map_or(0, String::len) <= bound);
}

/// A throwaway RSA key for the `mysql_sha2` target (generated for it, protects nothing): a key
/// made per input would cost the fuzzer more than the code under test.
const FUZZ_RSA_KEY: &str = include_str!("mysql_sha2_fuzz_only.key");

/// caching_sha2_password's full authentication on hostile bytes, both sides. Byte 0: bit 0 the
/// connection is TLS, bit 1 the key was sent already (server side), bit 2 TLS (client side).
/// The server side reads the rest as the client's packet after 0x04; the client side reads it
/// as up to four AuthMoreData payloads separated by 0xFF bytes.
pub fn mysql_sha2(data: &[u8]) {
    use poolguard_mysql::full_auth::{
        server_full_auth, ClientStep, RsaKeyPair, ServerStep, Sha2Client, MAX_RSA_BITS,
    };
    let (p, rest) = param(data);
    let pair = RsaKeyPair::from_pem(FUZZ_RSA_KEY).expect("the fuzz key parses");
    let scramble = [0x41u8; 20];
    if let ServerStep::Password(pw) =
        server_full_auth(rest, p & 1 != 0, p & 2 != 0, Some(&pair), &scramble)
    {
        assert!(pw.len() <= rest.len(), "a password longer than its packet");
    }
    let mut client = Sha2Client::new(&scramble, p & 4 != 0, None);
    for piece in rest.split(|&b| b == 0xff).take(4) {
        match client.on_more_data(piece, b"pw") {
            // At most one RSA block, or the password with its NUL, or the key request.
            Ok(ClientStep::Send(out)) => assert!(out.len() <= MAX_RSA_BITS / 8),
            Ok(ClientStep::AwaitResult) => {}
            Err(_) => break,
        }
    }
}
