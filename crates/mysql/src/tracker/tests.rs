//! Unit tests of the response tracker: hand-built responses for every command shape, both EOF
//! modes, the 0xFE rule, and generated / random packet sequences. Real-server replays live in
//! `tests/mariadb_capture.rs`.

use super::*;
use crate::consts::*;
use crate::packet::{encode_packet, FrameDecoder, MAX_CHUNK_LEN};
use bytes::BytesMut;
use proptest::prelude::*;

const CLASSIC: u32 = CLIENT_PROTOCOL_41 | CLIENT_TRANSACTIONS;
const MODERN: u32 = CLASSIC | CLIENT_DEPRECATE_EOF;
const AC: u16 = SERVER_STATUS_AUTOCOMMIT;

fn ok(status: u16) -> Vec<u8> {
    vec![0x00, 0, 0, status as u8, (status >> 8) as u8, 0, 0]
}
fn ok_fe(status: u16) -> Vec<u8> {
    vec![0xfe, 0, 0, status as u8, (status >> 8) as u8, 0, 0]
}
fn eof(status: u16) -> Vec<u8> {
    vec![0xfe, 0, 0, status as u8, (status >> 8) as u8]
}
fn err(code: u16) -> Vec<u8> {
    let mut v = vec![0xff, code as u8, (code >> 8) as u8];
    v.extend_from_slice(b"#HY000boom");
    v
}
fn coldef() -> Vec<u8> {
    let mut v = b"\x03def\x00\x00\x00\x01a\x00\x0c".to_vec();
    v.extend_from_slice(&[0x3f, 0, 1, 0, 0, 0, 3, 0x81, 0, 0, 0, 0]);
    v
}
fn done(status: Option<u16>) -> Progress {
    Progress::Done {
        status_flags: status,
        error: None,
    }
}

/// Feeds all packets; every one but the last must answer More, the last is returned.
fn run(t: &mut ResponseTracker, packets: &[Vec<u8>]) -> Progress {
    let (last, init) = packets.split_last().unwrap();
    for (i, p) in init.iter().enumerate() {
        assert_eq!(t.feed(p), Ok(Progress::More), "packet {i} {p:02x?}");
    }
    t.feed(last).unwrap()
}

/// A text result set: count, defs, [EOF], rows, end marker.
fn result_set(caps: u32, cols: usize, rows: &[Vec<u8>], end_status: u16) -> Vec<Vec<u8>> {
    let mut v = vec![vec![cols as u8]];
    v.extend(vec![coldef(); cols]);
    let modern = caps & CLIENT_DEPRECATE_EOF != 0;
    if !modern {
        v.push(eof(AC));
    }
    v.extend(rows.iter().cloned());
    v.push(if modern {
        ok_fe(end_status)
    } else {
        eof(end_status)
    });
    v
}

#[test]
fn query_ok_err_and_text_result_sets_in_both_eof_modes() {
    let mut t = ResponseTracker::new(COM_QUERY, CLASSIC);
    assert_eq!(t.feed(&ok(AC | SERVER_STATUS_IN_TRANS)), Ok(done(Some(3))));
    assert!(t.is_done());
    assert_eq!(t.feed(&ok(AC)), Err(DecodeError::ResponseComplete));
    let mut t = ResponseTracker::new(COM_QUERY, CLASSIC);
    assert_eq!(
        t.feed(&err(1146)),
        Ok(Progress::Done {
            status_flags: None,
            error: Some(1146)
        })
    );
    for caps in [CLASSIC, MODERN] {
        let rows = vec![
            b"\x011\x01a".to_vec(),
            b"\xfb\x01b".to_vec(),
            b"\x02xy\x00".to_vec(),
        ];
        let mut t = ResponseTracker::new(COM_QUERY, caps);
        assert_eq!(run(&mut t, &result_set(caps, 2, &rows, AC)), done(Some(AC)));
        assert_eq!((t.rows(), t.result_sets()), (3, 1));
        // Empty result set.
        let mut t = ResponseTracker::new(COM_QUERY, caps);
        assert_eq!(run(&mut t, &result_set(caps, 1, &[], 0)), done(Some(0)));
    }
}

#[test]
fn multi_results_continue_until_no_more_results_flag() {
    for caps in [CLASSIC, MODERN] {
        let more = AC | SERVER_MORE_RESULTS_EXISTS;
        let mut packets = result_set(caps, 1, &[b"\x011".to_vec()], more);
        packets.push(ok(more));
        packets.extend(result_set(caps, 2, &[b"\x012\x013".to_vec()], more));
        packets.push(ok(AC | SERVER_STATUS_IN_TRANS));
        let mut t = ResponseTracker::new(COM_QUERY, caps);
        assert_eq!(run(&mut t, &packets), done(Some(3)));
        assert_eq!(t.result_sets(), 2);
        // An error after a first result ends the response; the earlier status is kept.
        let mut packets = result_set(caps, 1, &[b"\x011".to_vec()], more);
        packets.push(err(1064));
        let mut t = ResponseTracker::new(COM_QUERY, caps);
        assert_eq!(
            run(&mut t, &packets),
            Progress::Done {
                status_flags: None,
                error: Some(1064)
            }
        );
        assert_eq!(t.last_status_flags(), Some(more));
    }
}

#[test]
fn fe_rows_are_rows_when_long_enough() {
    // A text row whose first value is >= 16 MiB starts with 0xFE (8-byte length).
    let mut big = vec![0xfe];
    big.extend_from_slice(&(MAX_CHUNK_LEN as u64).to_le_bytes());
    big.resize(9 + MAX_CHUNK_LEN, b'x');
    for caps in [CLASSIC, MODERN] {
        let mut t = ResponseTracker::new(COM_QUERY, caps);
        let packets = result_set(caps, 1, &[big.clone()], AC);
        assert_eq!(run(&mut t, &packets), done(Some(AC)));
        assert_eq!(t.rows(), 1);
    }
    // Classic EOF rule: 0xFE and 9 bytes or more is not an EOF.
    let mut t = ResponseTracker::new(COM_QUERY, CLASSIC);
    for p in [vec![1], coldef(), eof(AC)] {
        t.feed(&p).unwrap();
    }
    assert_eq!(t.feed(&[0xfe; 9]), Ok(Progress::More));
    // Same stream through physical frames: only first frames are inspected.
    let mut wire = BytesMut::new();
    let mut seq = 1;
    for p in result_set(MODERN, 1, &[big.clone()], AC) {
        seq = encode_packet(&mut wire, seq, &p);
    }
    let mut frames = FrameDecoder::new(64 << 20);
    let mut t = ResponseTracker::new(COM_QUERY, MODERN);
    let mut last = Progress::More;
    while let Some(f) = frames.decode(&mut wire).unwrap() {
        assert_eq!(last, Progress::More);
        last = t.feed_frame(&f).unwrap();
    }
    assert_eq!(last, done(Some(AC)));
}

#[test]
fn long_ok_with_fe_header_ends_rows_under_deprecate_eof() {
    let mut end = ok_fe(AC | SERVER_SESSION_STATE_CHANGED);
    end.extend_from_slice(&[0, 5, 1, 3, 1, b'x', 0]);
    let mut t = ResponseTracker::new(COM_QUERY, MODERN | CLIENT_SESSION_TRACK);
    let packets = vec![vec![1], coldef(), b"\x011".to_vec(), end];
    assert_eq!(
        run(&mut t, &packets),
        done(Some(AC | SERVER_SESSION_STATE_CHANGED))
    );
}

#[test]
fn local_infile_then_ok() {
    let mut t = ResponseTracker::new(COM_QUERY, CLASSIC | CLIENT_LOCAL_FILES);
    assert_eq!(t.feed(b"\xfbdata.txt"), Ok(Progress::LocalInfileRequested));
    assert_eq!(t.feed(&ok(AC)), Ok(done(Some(AC))));
    // Not for prepared statements.
    let mut t = ResponseTracker::new(COM_STMT_EXECUTE, CLASSIC);
    assert!(t.feed(b"\xfbdata.txt").is_err());
}

#[test]
fn execute_binary_rows_and_cursor() {
    for caps in [CLASSIC, MODERN] {
        let rows = vec![vec![0, 0, 1, 0, 0, 0], vec![0, 0, 2, 0, 0, 0]];
        let mut t = ResponseTracker::new(COM_STMT_EXECUTE, caps);
        assert_eq!(run(&mut t, &result_set(caps, 1, &rows, AC)), done(Some(AC)));
        // Binary rows start with 0x00.
        let mut t = ResponseTracker::new(COM_STMT_EXECUTE, caps);
        let mut packets = result_set(caps, 1, &[], AC);
        packets.pop();
        for p in &packets {
            t.feed(p).unwrap();
        }
        assert!(t.feed(b"\x011").is_err());
        // Cursor: the end marker after the definitions carries CURSOR_EXISTS and ends it.
        let cursor = AC | SERVER_STATUS_CURSOR_EXISTS;
        let mut t = ResponseTracker::new(COM_STMT_EXECUTE, caps);
        let packets = if caps & CLIENT_DEPRECATE_EOF != 0 {
            vec![vec![1], coldef(), ok_fe(cursor)]
        } else {
            vec![vec![1], coldef(), eof(cursor)]
        };
        assert_eq!(run(&mut t, &packets), done(Some(cursor)));
        // COM_STMT_FETCH: rows then end marker.
        let mut t = ResponseTracker::new(COM_STMT_FETCH, caps);
        let end = if caps & CLIENT_DEPRECATE_EOF != 0 {
            ok_fe(cursor)
        } else {
            eof(cursor)
        };
        assert_eq!(run(&mut t, &[rows[0].clone(), end]), done(Some(cursor)));
    }
}

#[test]
fn prepare_responses() {
    let pok = |cols: u16, params: u16| {
        let mut b = BytesMut::new();
        StmtPrepareOk {
            statement_id: 7,
            num_columns: cols,
            num_params: params,
            warnings: 0,
        }
        .encode(&mut b);
        b.to_vec()
    };
    for caps in [CLASSIC, MODERN] {
        let classic = caps & CLIENT_DEPRECATE_EOF == 0;
        for (cols, params) in [(0u16, 0u16), (2, 0), (0, 3), (2, 3)] {
            let mut packets = vec![pok(cols, params)];
            for n in [params, cols] {
                if n > 0 {
                    packets.extend(vec![coldef(); usize::from(n)]);
                    if classic {
                        packets.push(eof(AC));
                    }
                }
            }
            let mut t = ResponseTracker::new(COM_STMT_PREPARE, caps);
            let expected = if classic && cols + params > 0 {
                Some(AC)
            } else {
                None
            };
            assert_eq!(
                run(&mut t, &packets),
                done(expected),
                "{cols} {params} {caps:x}"
            );
            assert_eq!(t.prepare_ok().map(|p| p.statement_id), Some(7));
        }
        let mut t = ResponseTracker::new(COM_STMT_PREPARE, caps);
        assert_eq!(
            t.feed(&err(1064)),
            Ok(Progress::Done {
                status_flags: None,
                error: Some(1064)
            })
        );
    }
}

#[test]
fn field_list_single_and_opaque_commands() {
    for caps in [CLASSIC, MODERN] {
        let end = if caps & CLIENT_DEPRECATE_EOF != 0 {
            ok_fe(AC)
        } else {
            eof(AC)
        };
        let mut t = ResponseTracker::new(COM_FIELD_LIST, caps);
        assert_eq!(
            run(&mut t, &[coldef(), coldef(), end.clone()]),
            done(Some(AC))
        );
        let mut t = ResponseTracker::new(COM_FIELD_LIST, caps);
        assert_eq!(t.feed(&end), Ok(done(Some(AC))));
        for cmd in [
            COM_PING,
            COM_INIT_DB,
            COM_RESET_CONNECTION,
            COM_STMT_RESET,
            COM_SET_OPTION,
        ] {
            let mut t = ResponseTracker::new(cmd, caps);
            assert_eq!(t.feed(&ok(AC)), Ok(done(Some(AC))));
            let mut t = ResponseTracker::new(cmd, caps);
            assert_eq!(t.feed(&end), Ok(done(Some(AC))));
            let mut t = ResponseTracker::new(cmd, caps);
            assert!(t.feed(&[1]).is_err(), "a result set is not a valid answer");
        }
    }
    let mut t = ResponseTracker::new(COM_STATISTICS, CLASSIC);
    assert_eq!(t.feed(b"Uptime: 81  Threads: 2"), Ok(done(None)));
}

#[test]
fn commands_without_response_are_done_from_the_start() {
    for cmd in [COM_QUIT, COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA] {
        assert!(!expects_response(cmd));
        let mut t = ResponseTracker::new(cmd, MODERN);
        assert!(t.is_done());
        assert_eq!(t.feed(&ok(AC)), Err(DecodeError::ResponseComplete));
    }
    assert!(expects_response(COM_QUERY));
    assert!(ResponseTracker::for_command(&[], MODERN).is_none());
    assert_eq!(
        ResponseTracker::for_command(b"\x03SELECT 1", MODERN)
            .unwrap()
            .command(),
        COM_QUERY
    );
}

#[test]
fn change_user_exchange() {
    let mut t = ResponseTracker::new(COM_CHANGE_USER, MODERN);
    assert_eq!(
        t.feed(b"\xfemysql_native_password\x00abcdefghijklmnopqrst\x00"),
        Ok(Progress::AuthContinue)
    );
    assert_eq!(t.feed(&[0x01, 0x04]), Ok(Progress::AuthContinue));
    assert_eq!(t.feed(&[0x01, 0x03]), Ok(Progress::More));
    assert_eq!(t.feed(&ok(AC)), Ok(done(Some(AC))));
    let mut t = ResponseTracker::new(COM_CHANGE_USER, MODERN);
    assert_eq!(
        t.feed(&err(1045)),
        Ok(Progress::Done {
            status_flags: None,
            error: Some(1045)
        })
    );
}

#[test]
fn progress_reports_and_protocol_violations() {
    let progress = b"\xff\xff\xff\x01\x01\x00\x10\x00\x05stage".to_vec();
    let mut t = ResponseTracker::new(COM_QUERY, MODERN);
    assert_eq!(t.feed(&progress), Ok(Progress::More));
    assert_eq!(t.feed(&ok(AC)), Ok(done(Some(AC))));
    // Column count with a trailing byte (optional metadata) is refused, and so is 0 columns.
    let mut t = ResponseTracker::new(COM_QUERY, MODERN);
    assert!(matches!(
        t.feed(&[1, 1]),
        Err(DecodeError::Malformed { .. })
    ));
    let mut t = ResponseTracker::new(COM_QUERY, MODERN);
    assert!(t.feed(&[0xfc, 0, 0]).is_err());
    // A short 0xFE where a column definition is due.
    let mut t = ResponseTracker::new(COM_QUERY, MODERN);
    t.feed(&[2]).unwrap();
    t.feed(&coldef()).unwrap();
    assert!(matches!(
        t.feed(&eof(AC)),
        Err(DecodeError::UnexpectedHeader { .. })
    ));
    // A column count of 16 MiB - 1 (0xFD form; 0xFE here is an EOF header, not a count): the
    // definitions are counted down one by one.
    let mut t = ResponseTracker::new(COM_QUERY, MODERN);
    assert_eq!(t.feed(&[0xfd, 0xff, 0xff, 0xff]), Ok(Progress::More));
    assert_eq!(t.feed(&coldef()), Ok(Progress::More));
    assert_eq!(t.feed(&coldef()), Ok(Progress::More));
    // A truncated 3-byte column count.
    let mut t = ResponseTracker::new(COM_QUERY, MODERN);
    assert!(matches!(
        t.feed(&[0xfd, 0xff]),
        Err(DecodeError::TooShort { .. })
    ));
    // Binary protocol: an empty row and a row not starting with 0x00 are refused.
    let mut t = ResponseTracker::new(COM_STMT_EXECUTE, MODERN);
    t.feed(&[1]).unwrap();
    t.feed(&coldef()).unwrap();
    assert!(t.feed(&[]).is_err());
    let mut t = ResponseTracker::new(COM_STMT_EXECUTE, MODERN);
    t.feed(&[1]).unwrap();
    t.feed(&coldef()).unwrap();
    assert!(t.feed(&[0x01, 0x00]).is_err());
    // Missing EOF after definitions in classic mode.
    let mut t = ResponseTracker::new(COM_QUERY, CLASSIC);
    t.feed(&[1]).unwrap();
    t.feed(&coldef()).unwrap();
    assert!(t.feed(b"\x011").is_err());
}

#[test]
fn mariadb_cache_metadata_skips_definitions() {
    for caps in [CLASSIC, MODERN] {
        let mut t = ResponseTracker::new(COM_STMT_EXECUTE, caps)
            .with_mariadb_capabilities(MARIADB_CLIENT_CACHE_METADATA);
        let mut packets = vec![vec![1, 0]];
        let end = if caps & CLIENT_DEPRECATE_EOF != 0 {
            ok_fe(AC)
        } else {
            packets.push(eof(AC));
            eof(AC)
        };
        packets.push(vec![0, 0, 1]);
        packets.push(end);
        assert_eq!(run(&mut t, &packets), done(Some(AC)));
    }
}

fn arb_row(binary: bool) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..20).prop_map(move |mut v| {
        // A valid first byte: binary rows start 0x00, text values are lenenc strings or NULL.
        let first = if binary {
            0x00
        } else if v.first().is_some_and(|b| b % 2 == 0) {
            0xfb
        } else {
            0x01
        };
        v.insert(0, first);
        if !binary && first == 0x01 {
            v.insert(1, b'v');
        }
        v
    })
}

proptest! {
    #[test]
    fn generated_responses_complete_exactly_at_the_end(
        modern in any::<bool>(),
        binary in any::<bool>(),
        results in proptest::collection::vec(
            (0u8..4, proptest::collection::vec(arb_row(false), 0..5)), 1..5),
        final_err in any::<bool>(),
    ) {
        let caps = if modern { MODERN } else { CLASSIC };
        let mut packets = Vec::new();
        for (i, (cols, rows)) in results.iter().enumerate() {
            let last = i + 1 == results.len();
            let status = if last { AC } else { AC | SERVER_MORE_RESULTS_EXISTS };
            if *cols == 0 {
                packets.push(ok(status));
            } else {
                let rows: Vec<Vec<u8>> = if binary {
                    rows.iter().map(|r| { let mut r = r.clone(); r[0] = 0; r }).collect()
                } else {
                    rows.clone()
                };
                packets.extend(result_set(caps, usize::from(*cols), &rows, status));
            }
        }
        if final_err {
            packets.pop();
            packets.push(err(1317));
        }
        let cmd = if binary { COM_STMT_EXECUTE } else { COM_QUERY };
        let mut t = ResponseTracker::new(cmd, caps);
        let got = run(&mut t, &packets);
        let is_done = matches!(got, Progress::Done { .. });
        prop_assert!(is_done);
    }

    #[test]
    fn random_packets_never_panic(
        cmd in any::<u8>(), caps in any::<u32>(), ext in any::<u32>(),
        packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..24), 0..12),
    ) {
        let mut t = ResponseTracker::new(cmd, caps).with_mariadb_capabilities(ext);
        for p in &packets {
            if t.feed(p).is_err() {
                break;
            }
        }
    }
}
