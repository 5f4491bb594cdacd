//! Generic server responses: OK, ERR and EOF packets, and a context-free [`classify`].
//!
//! Encoders write a *payload* into the caller's buffer (frame it with
//! [`crate::packet::encode_packet`] or [`crate::packet::encode_with`]). Decoders take a payload.
//!
//! The header byte alone is ambiguous in places (0x00 also starts STMT_PREPARE_OK and binary rows;
//! 0xFE also starts AuthSwitchRequest and, in text rows of 16 MiB or more, an 8-byte length), so
//! [`classify`] is only a first guess: code that walks a response uses [`crate::tracker`], which
//! knows the context. Invariants: no decoder panics or allocates from a length field; OK decoding
//! tolerates the optional trailing fields being absent, as servers omit them.

use bytes::{BufMut, BytesMut};

use crate::consts::{
    CLIENT_DEPRECATE_EOF, CLIENT_PROTOCOL_41, CLIENT_SESSION_TRACK, CLIENT_TRANSACTIONS,
    EOF_HEADER, ERR_HEADER, LOCAL_INFILE_HEADER, OK_HEADER, SERVER_SESSION_STATE_CHANGED,
};
use crate::lenenc::{put_lenenc_bytes, put_lenenc_int, Reader};
use crate::packet::MAX_CHUNK_LEN;
use crate::DecodeError;

/// What a server packet looks like from its first byte (and length, for EOF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// 0x00: OK (or STMT_PREPARE_OK, or a binary row, depending on context).
    Ok,
    /// 0xFF: ERR (or a MariaDB progress report, code 0xFFFF).
    Err,
    /// 0xFE and shorter than 9 bytes: EOF (or a short OK-with-0xFE under DEPRECATE_EOF).
    Eof,
    /// 0xFB: LOCAL INFILE request (only as the first packet of a COM_QUERY response).
    LocalInfile,
    /// Anything else: column count, column definition, row, auth data...
    Other,
}

/// Classifies a server payload by its header. An EOF is only recognised when shorter than 9 bytes,
/// the protocol's rule, because a text row whose first value is 16 MiB or longer also starts with
/// 0xFE. Under CLIENT_DEPRECATE_EOF use [`is_end_marker`] instead, which also accepts longer OK
/// packets with a 0xFE header (those carrying session state).
pub fn classify(payload: &[u8]) -> PacketKind {
    match payload.first() {
        Some(&OK_HEADER) => PacketKind::Ok,
        Some(&ERR_HEADER) => PacketKind::Err,
        Some(&EOF_HEADER) if payload.len() < 9 => PacketKind::Eof,
        Some(&LOCAL_INFILE_HEADER) => PacketKind::LocalInfile,
        _ => PacketKind::Other,
    }
}

/// True when `payload` ends a row or column sequence: an EOF packet, or under
/// CLIENT_DEPRECATE_EOF an OK packet with a 0xFE header. Without DEPRECATE_EOF the rule is "0xFE
/// and shorter than 9 bytes"; with it, "0xFE and shorter than 16 MiB - 1", since such an OK can be
/// long (session state) while a text row starting with 0xFE is at least 16 MiB (MariaDB documents
/// this rule; MySQL's client applies the same length bound).
pub fn is_end_marker(payload: &[u8], capabilities: u32) -> bool {
    let limit = if capabilities & CLIENT_DEPRECATE_EOF != 0 {
        MAX_CHUNK_LEN
    } else {
        9
    };
    payload.first() == Some(&EOF_HEADER) && payload.len() < limit
}

/// Status flags of an end marker (see [`is_end_marker`]): decoded as an OK packet under
/// CLIENT_DEPRECATE_EOF when long enough to be one, else as an EOF packet. `None` for a pre-4.1
/// one-byte EOF, which has no status; under CLIENT_PROTOCOL_41 such an EOF is malformed (the
/// 4.1 EOF always carries warnings and status flags), and an error: taking it for "no news"
/// would keep whatever transaction status was seen last, while the server's is unknown.
pub fn end_marker_status(payload: &[u8], capabilities: u32) -> Result<Option<u16>, DecodeError> {
    if capabilities & CLIENT_DEPRECATE_EOF != 0 && payload.len() >= 7 {
        return ok_status_flags(payload, capabilities);
    }
    let status = EofPacket::decode(payload)?.status_flags;
    if status.is_none() && capabilities & CLIENT_PROTOCOL_41 != 0 {
        return Err(DecodeError::Malformed {
            what: "EOF packet",
            detail: "no status flags under CLIENT_PROTOCOL_41",
        });
    }
    Ok(status)
}

/// An OK packet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OkPacket {
    /// Rows changed (or matched, with CLIENT_FOUND_ROWS).
    pub affected_rows: u64,
    /// Last AUTO_INCREMENT value generated.
    pub last_insert_id: u64,
    /// Server status flags (`SERVER_STATUS_*`). Zero when the protocol carries none.
    pub status_flags: u16,
    /// Warning count (4.1 protocol only).
    pub warnings: u16,
    /// Human-readable info ("Rows matched: 1  Changed: 1  Warnings: 0").
    pub info: Vec<u8>,
    /// Raw session state changes (CLIENT_SESSION_TRACK and SERVER_SESSION_STATE_CHANGED only).
    pub session_state: Vec<u8>,
}

impl OkPacket {
    /// An OK with the given status flags and nothing else, the usual answer to PING, INIT_DB...
    pub fn with_status(status_flags: u16) -> Self {
        OkPacket {
            status_flags,
            ..OkPacket::default()
        }
    }

    /// Decodes an OK packet (header 0x00, or 0xFE when it ends a result set under DEPRECATE_EOF).
    /// `capabilities` are those negotiated for the connection.
    pub fn decode(payload: &[u8], capabilities: u32) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let header = r.u8("OK header")?;
        if header != OK_HEADER && header != EOF_HEADER {
            return Err(DecodeError::UnexpectedHeader {
                expected: "OK packet (0x00 or 0xFE)",
                header,
            });
        }
        let affected_rows = r.lenenc_int("affected_rows")?;
        let last_insert_id = r.lenenc_int("last_insert_id")?;
        let (status_flags, warnings) = read_ok_status(&mut r, capabilities)?;
        let mut ok = OkPacket {
            affected_rows,
            last_insert_id,
            status_flags,
            warnings,
            ..OkPacket::default()
        };
        if capabilities & CLIENT_SESSION_TRACK != 0 {
            // Both fields are optional on the wire: servers stop when there is nothing to say.
            if !r.is_empty() {
                ok.info = r.lenenc_bytes("OK info")?.to_vec();
            }
            if status_flags & SERVER_SESSION_STATE_CHANGED != 0 && !r.is_empty() {
                ok.session_state = r.lenenc_bytes("OK session state")?.to_vec();
            }
        } else {
            ok.info = r.rest().to_vec();
        }
        Ok(ok)
    }

    /// Writes the payload with a 0x00 header.
    pub fn encode(&self, buf: &mut BytesMut, capabilities: u32) {
        self.encode_with_header(buf, capabilities, OK_HEADER);
    }

    /// Writes the payload with a 0xFE header: the end of a result set under CLIENT_DEPRECATE_EOF.
    pub fn encode_as_eof(&self, buf: &mut BytesMut, capabilities: u32) {
        self.encode_with_header(buf, capabilities, EOF_HEADER);
    }

    fn encode_with_header(&self, buf: &mut BytesMut, capabilities: u32, header: u8) {
        buf.put_u8(header);
        put_lenenc_int(buf, self.affected_rows);
        put_lenenc_int(buf, self.last_insert_id);
        if capabilities & CLIENT_PROTOCOL_41 != 0 {
            buf.put_u16_le(self.status_flags);
            buf.put_u16_le(self.warnings);
        } else if capabilities & CLIENT_TRANSACTIONS != 0 {
            buf.put_u16_le(self.status_flags);
        }
        if capabilities & CLIENT_SESSION_TRACK != 0 {
            let has_state = self.status_flags & SERVER_SESSION_STATE_CHANGED != 0;
            if !self.info.is_empty() || has_state {
                put_lenenc_bytes(buf, &self.info);
            }
            if has_state {
                put_lenenc_bytes(buf, &self.session_state);
            }
        } else {
            buf.put_slice(&self.info);
        }
    }
}

fn read_ok_status(r: &mut Reader<'_>, capabilities: u32) -> Result<(u16, u16), DecodeError> {
    if capabilities & CLIENT_PROTOCOL_41 != 0 {
        let status = r.u16("OK status_flags")?;
        let warnings = r.u16("OK warnings")?;
        Ok((status, warnings))
    } else if capabilities & CLIENT_TRANSACTIONS != 0 {
        Ok((r.u16("OK status_flags")?, 0))
    } else {
        Ok((0, 0))
    }
}

/// Only the status flags of an OK packet (0x00 or 0xFE header), without decoding the info and
/// session state: what the relay needs after every command. `None` when the negotiated protocol
/// carries no status (neither PROTOCOL_41 nor TRANSACTIONS).
pub fn ok_status_flags(payload: &[u8], capabilities: u32) -> Result<Option<u16>, DecodeError> {
    let mut r = Reader::new(payload);
    r.u8("OK header")?;
    r.lenenc_int("affected_rows")?;
    r.lenenc_int("last_insert_id")?;
    if capabilities & (CLIENT_PROTOCOL_41 | CLIENT_TRANSACTIONS) == 0 {
        return Ok(None);
    }
    Ok(Some(r.u16("OK status_flags")?))
}

/// An ERR packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket {
    /// Error code (e.g. 1045).
    pub code: u16,
    /// SQLSTATE; "HY000" when the packet carried none (pre-4.1 format, or sent before the
    /// handshake).
    pub sql_state: [u8; 5],
    /// Human-readable message (lossily decoded: servers send it in the connection charset).
    pub message: String,
}

impl ErrPacket {
    /// Decodes an ERR packet; the `#` + SQLSTATE marker is detected rather than assumed, since
    /// servers omit it before the client's capabilities are known.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let header = r.u8("ERR header")?;
        if header != ERR_HEADER {
            return Err(DecodeError::UnexpectedHeader {
                expected: "ERR packet (0xFF)",
                header,
            });
        }
        let code = r.u16("ERR code")?;
        let mut sql_state = *b"HY000";
        if r.peek() == Some(b'#') && r.remaining() >= 6 {
            r.skip(1, "SQLSTATE marker")?;
            sql_state.copy_from_slice(r.take(5, "SQLSTATE")?);
        }
        let message = String::from_utf8_lossy(r.rest()).into_owned();
        Ok(ErrPacket {
            code,
            sql_state,
            message,
        })
    }

    /// The SQLSTATE as text.
    pub fn sql_state_str(&self) -> &str {
        std::str::from_utf8(&self.sql_state).unwrap_or("HY000")
    }

    /// Writes the payload (4.1 format, with SQLSTATE).
    pub fn encode(&self, buf: &mut BytesMut) {
        encode_err(buf, self.code, self.sql_state_str(), &self.message);
    }
}

/// Only the error code of an ERR packet.
pub fn err_code(payload: &[u8]) -> Result<u16, DecodeError> {
    let mut r = Reader::new(payload);
    r.u8("ERR header")?;
    r.u16("ERR code")
}

/// Writes an ERR payload in the 4.1 format: 0xFF, code, `#`, SQLSTATE, message. A `sqlstate` that
/// is not exactly 5 ASCII characters is replaced with "HY000" rather than corrupting the packet.
pub fn encode_err(buf: &mut BytesMut, code: u16, sqlstate: &str, message: &str) {
    let state = if sqlstate.len() == 5 && sqlstate.is_ascii() {
        sqlstate.as_bytes()
    } else {
        b"HY000"
    };
    buf.put_u8(ERR_HEADER);
    buf.put_u16_le(code);
    buf.put_u8(b'#');
    buf.put_slice(state);
    buf.put_slice(message.as_bytes());
}

/// Writes an ERR payload without SQLSTATE, for errors sent instead of the server greeting (before
/// the client has said it speaks 4.1, clients would print the marker as part of the message).
pub fn encode_err_before_handshake(buf: &mut BytesMut, code: u16, message: &str) {
    buf.put_u8(ERR_HEADER);
    buf.put_u16_le(code);
    buf.put_slice(message.as_bytes());
}

/// An EOF packet (4.1 format: 0xFE, warnings, status flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EofPacket {
    /// Warning count (0 for the pre-4.1 one-byte form).
    pub warnings: u16,
    /// Server status flags; `None` for the pre-4.1 one-byte form.
    pub status_flags: Option<u16>,
}

impl EofPacket {
    /// Decodes an EOF packet: 0xFE and shorter than 9 bytes.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let body = match payload.split_first() {
            Some((&EOF_HEADER, body)) if payload.len() < 9 => body,
            first => {
                return Err(DecodeError::UnexpectedHeader {
                    expected: "EOF packet (0xFE, < 9 bytes)",
                    header: first.map_or(0, |(&h, _)| h),
                })
            }
        };
        if body.is_empty() {
            return Ok(EofPacket {
                warnings: 0,
                status_flags: None,
            });
        }
        let mut r = Reader::new(body);
        let warnings = r.u16("EOF warnings")?;
        let status = r.u16("EOF status_flags")?;
        Ok(EofPacket {
            warnings,
            status_flags: Some(status),
        })
    }

    /// Writes the 5-byte payload (a missing status is written as 0).
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(EOF_HEADER);
        buf.put_u16_le(self.warnings);
        buf.put_u16_le(self.status_flags.unwrap_or(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::*;
    use proptest::prelude::*;

    const CAPS: u32 = CLIENT_PROTOCOL_41 | CLIENT_TRANSACTIONS;

    #[test]
    fn ok_exact_bytes() {
        // OK after `INSERT` of 1 row, insert id 5, autocommit, no warnings (MySQL docs example
        // layout): 00 01 05 02 00 00 00.
        let ok = OkPacket::decode(&[0x00, 0x01, 0x05, 0x02, 0x00, 0x00, 0x00], CAPS).unwrap();
        assert_eq!(
            ok,
            OkPacket {
                affected_rows: 1,
                last_insert_id: 5,
                status_flags: SERVER_STATUS_AUTOCOMMIT,
                ..OkPacket::default()
            }
        );
        let mut b = BytesMut::new();
        ok.encode(&mut b, CAPS);
        assert_eq!(&b[..], &[0x00, 0x01, 0x05, 0x02, 0x00, 0x00, 0x00]);
        assert_eq!(ok_status_flags(&b, CAPS), Ok(Some(2)));
        assert_eq!(classify(&b), PacketKind::Ok);
    }

    #[test]
    fn ok_with_info_and_session_state() {
        let caps = CAPS | CLIENT_SESSION_TRACK;
        let ok = OkPacket {
            affected_rows: 300,
            last_insert_id: 0,
            status_flags: SERVER_STATUS_IN_TRANS | SERVER_SESSION_STATE_CHANGED,
            warnings: 1,
            info: b"Rows matched: 300".to_vec(),
            session_state: vec![0x00, 0x03, 0x01, b'x', 0],
        };
        let mut b = BytesMut::new();
        ok.encode(&mut b, caps);
        assert_eq!(OkPacket::decode(&b, caps).unwrap(), ok);
        // Without session tracking, info is the rest of the packet.
        let plain = OkPacket {
            info: b"hello".to_vec(),
            ..OkPacket::with_status(2)
        };
        let mut b = BytesMut::new();
        plain.encode(&mut b, CAPS);
        assert_eq!(&b[7..], b"hello");
        assert_eq!(OkPacket::decode(&b, CAPS).unwrap(), plain);
        // Session tracking negotiated but the server sent no info at all: tolerated.
        assert_eq!(
            OkPacket::decode(&[0, 0, 0, 2, 0, 0, 0], caps).unwrap(),
            OkPacket::with_status(2)
        );
    }

    #[test]
    fn ok_as_eof_under_deprecate_eof() {
        let caps = CAPS | CLIENT_DEPRECATE_EOF;
        let mut b = BytesMut::new();
        OkPacket::with_status(SERVER_STATUS_AUTOCOMMIT).encode_as_eof(&mut b, caps);
        assert_eq!(&b[..], &[0xfe, 0, 0, 2, 0, 0, 0]);
        assert!(is_end_marker(&b, caps));
        assert_eq!(end_marker_status(&b, caps), Ok(Some(2)));
        assert_eq!(OkPacket::decode(&b, caps).unwrap().status_flags, 2);
        // A long OK-with-0xFE (session state) is still an end marker under DEPRECATE_EOF only.
        let mut long = BytesMut::from(&b[..]);
        long.extend_from_slice(&[0; 20]);
        assert!(is_end_marker(&long, caps));
        assert!(!is_end_marker(&long, CAPS));
        assert_eq!(classify(&long), PacketKind::Other);
    }

    #[test]
    fn err_exact_bytes() {
        // ERR 1045 28000 "Access denied".
        let mut b = BytesMut::new();
        encode_err(&mut b, ER_ACCESS_DENIED_ERROR, "28000", "Access denied");
        let mut expected = vec![0xff, 0x15, 0x04, b'#', b'2', b'8', b'0', b'0', b'0'];
        expected.extend_from_slice(b"Access denied");
        assert_eq!(&b[..], &expected[..]);
        let e = ErrPacket::decode(&b).unwrap();
        assert_eq!(e.code, 1045);
        assert_eq!(e.sql_state_str(), "28000");
        assert_eq!(e.message, "Access denied");
        assert_eq!(err_code(&b), Ok(1045));
        assert_eq!(classify(&b), PacketKind::Err);
        // A bad SQLSTATE does not corrupt the packet.
        let mut b = BytesMut::new();
        encode_err(&mut b, 1, "toolong", "m");
        assert_eq!(ErrPacket::decode(&b).unwrap().sql_state_str(), "HY000");
    }

    #[test]
    fn err_without_sqlstate() {
        let mut b = BytesMut::new();
        encode_err_before_handshake(&mut b, ER_CON_COUNT_ERROR, "Too many connections");
        let e = ErrPacket::decode(&b).unwrap();
        assert_eq!(e.code, 1040);
        assert_eq!(e.sql_state_str(), "HY000");
        assert_eq!(e.message, "Too many connections");
    }

    #[test]
    fn eof_exact_bytes() {
        // MySQL docs: 05 00 00 05 fe 00 00 02 00 (header then payload).
        let payload = [0xfe, 0x00, 0x00, 0x02, 0x00];
        let eof = EofPacket::decode(&payload).unwrap();
        assert_eq!(
            eof,
            EofPacket {
                warnings: 0,
                status_flags: Some(2)
            }
        );
        let mut b = BytesMut::new();
        eof.encode(&mut b);
        assert_eq!(&b[..], &payload);
        assert_eq!(classify(&payload), PacketKind::Eof);
        assert!(is_end_marker(&payload, CAPS));
        assert_eq!(
            end_marker_status(&payload, CAPS | CLIENT_DEPRECATE_EOF),
            Ok(Some(2))
        );
        assert_eq!(EofPacket::decode(&[0xfe]).unwrap().status_flags, None);
        assert!(EofPacket::decode(&[0xfe; 9]).is_err());
    }

    /// A one-byte (pre-4.1) EOF says nothing about the transaction: under CLIENT_PROTOCOL_41 it
    /// is malformed, not "status unchanged" (found by the `mysql_session` fuzz target).
    #[test]
    fn eof_without_status_under_protocol_41_is_an_error() {
        assert!(end_marker_status(&[EOF_HEADER], CAPS).is_err());
        assert!(end_marker_status(&[EOF_HEADER], CAPS | CLIENT_DEPRECATE_EOF).is_err());
        assert_eq!(end_marker_status(&[EOF_HEADER], 0), Ok(None));
    }

    #[test]
    fn eof_malformed() {
        assert_eq!(
            EofPacket::decode(&[]),
            Err(DecodeError::UnexpectedHeader {
                expected: "EOF packet (0xFE, < 9 bytes)",
                header: 0
            })
        );
        assert!(matches!(
            EofPacket::decode(&[0x00, 0, 0, 2, 0]),
            Err(DecodeError::UnexpectedHeader { header: 0x00, .. })
        ));
        // Truncated warnings, then truncated status flags.
        assert!(matches!(
            EofPacket::decode(&[0xfe, 0]),
            Err(DecodeError::TooShort {
                what: "EOF warnings",
                ..
            })
        ));
        assert!(matches!(
            EofPacket::decode(&[0xfe, 0, 0, 2]),
            Err(DecodeError::TooShort {
                what: "EOF status_flags",
                ..
            })
        ));
    }

    #[test]
    fn classify_headers() {
        assert_eq!(classify(&[]), PacketKind::Other);
        assert_eq!(classify(&[0xfb, b'f']), PacketKind::LocalInfile);
        assert_eq!(classify(&[0x01]), PacketKind::Other);
        assert_eq!(classify(&[0xfe; 9]), PacketKind::Other);
    }

    proptest! {
        #[test]
        fn ok_round_trips(
            affected in any::<u64>(), id in any::<u64>(), status in any::<u16>(), warnings in any::<u16>(),
            info in proptest::collection::vec(any::<u8>(), 0..40),
            state in proptest::collection::vec(any::<u8>(), 0..40),
            track in any::<bool>(),
        ) {
            let caps = CAPS | if track { CLIENT_SESSION_TRACK } else { 0 };
            let status = if track { status } else { status & !SERVER_SESSION_STATE_CHANGED };
            let ok = OkPacket {
                affected_rows: affected, last_insert_id: id, status_flags: status, warnings,
                info,
                session_state: if status & SERVER_SESSION_STATE_CHANGED != 0 { state } else { vec![] },
            };
            let mut b = BytesMut::new();
            ok.encode(&mut b, caps);
            prop_assert_eq!(OkPacket::decode(&b, caps).unwrap(), ok.clone());
            prop_assert_eq!(ok_status_flags(&b, caps).unwrap(), Some(status));
        }

        #[test]
        fn err_round_trips(code in any::<u16>(), msg in ".{0,40}") {
            let mut b = BytesMut::new();
            encode_err(&mut b, code, "42S02", &msg);
            let e = ErrPacket::decode(&b).unwrap();
            prop_assert_eq!(e.code, code);
            prop_assert_eq!(e.sql_state_str(), "42S02");
            prop_assert_eq!(e.message, msg);
        }

        #[test]
        fn random_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..40), caps in any::<u32>()) {
            let _ = OkPacket::decode(&buf, caps);
            let _ = ok_status_flags(&buf, caps);
            let _ = ErrPacket::decode(&buf);
            let _ = err_code(&buf);
            let _ = EofPacket::decode(&buf);
            let _ = end_marker_status(&buf, caps);
            let _ = classify(&buf);
            let _ = is_end_marker(&buf, caps);
        }
    }
}
