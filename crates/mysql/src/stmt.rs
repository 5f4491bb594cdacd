//! Prepared statements: the STMT_PREPARE_OK packet, and reading / rewriting the statement id that
//! follows the command byte in COM_STMT_EXECUTE, _CLOSE, _RESET, _SEND_LONG_DATA, _FETCH and
//! MariaDB's COM_STMT_BULK_EXECUTE.
//!
//! Under transaction pooling a client's statement may be prepared on several servers, each with its
//! own id; the proxy hands the client a stable id of its own and rewrites it, in place, on the way
//! to whichever server runs the command. Invariant: rewriting touches exactly bytes 1..5 of the
//! payload and nothing else, so the rest of the packet is relayed untouched.

use bytes::{BufMut, BytesMut};

use crate::consts::{
    COM_STMT_BULK_EXECUTE, COM_STMT_CLOSE, COM_STMT_EXECUTE, COM_STMT_FETCH, COM_STMT_RESET,
    COM_STMT_SEND_LONG_DATA, OK_HEADER,
};
use crate::lenenc::Reader;
use crate::DecodeError;

/// MariaDB (10.2+) lets COM_STMT_EXECUTE name "the statement prepared last" with this id, so a
/// client can pipeline PREPARE and EXECUTE. A proxy remapping ids must resolve it itself.
pub const LAST_PREPARED_STATEMENT_ID: u32 = 0xffff_ffff;

/// The first packet of a successful COM_STMT_PREPARE response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StmtPrepareOk {
    /// The server's id for the statement.
    pub statement_id: u32,
    /// Columns in the result set (0 if the statement returns no rows).
    pub num_columns: u16,
    /// Placeholders (`?`).
    pub num_params: u16,
    /// Warnings raised by the prepare.
    pub warnings: u16,
}

impl StmtPrepareOk {
    /// Decodes `0x00, int<4> id, int<2> columns, int<2> params, 0x00, int<2> warnings`. The filler and
    /// warnings are tolerated when absent (pre-4.1 servers); a trailing MySQL 8 metadata flag is
    /// ignored.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let header = r.u8("STMT_PREPARE_OK header")?;
        if header != OK_HEADER {
            return Err(DecodeError::UnexpectedHeader {
                expected: "STMT_PREPARE_OK (0x00)",
                header,
            });
        }
        let statement_id = r.u32("statement_id")?;
        let num_columns = r.u16("num_columns")?;
        let num_params = r.u16("num_params")?;
        let warnings = if r.remaining() >= 3 {
            r.skip(1, "filler")?;
            r.u16("warnings")?
        } else {
            0
        };
        Ok(StmtPrepareOk {
            statement_id,
            num_columns,
            num_params,
            warnings,
        })
    }

    /// Writes the 12-byte payload.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(OK_HEADER);
        buf.put_u32_le(self.statement_id);
        buf.put_u16_le(self.num_columns);
        buf.put_u16_le(self.num_params);
        buf.put_u8(0);
        buf.put_u16_le(self.warnings);
    }
}

/// True for the commands whose payload is `command byte, int<4> statement id, ...`.
pub fn carries_statement_id(command: u8) -> bool {
    matches!(
        command,
        COM_STMT_EXECUTE
            | COM_STMT_CLOSE
            | COM_STMT_RESET
            | COM_STMT_SEND_LONG_DATA
            | COM_STMT_FETCH
            | COM_STMT_BULK_EXECUTE
    )
}

/// The statement id of a statement command (see [`carries_statement_id`]).
pub fn statement_id(payload: &[u8]) -> Result<u32, DecodeError> {
    match payload.split_first() {
        Some((&command, rest)) if carries_statement_id(command) => {
            Reader::new(rest).u32("statement_id")
        }
        first => Err(DecodeError::UnexpectedHeader {
            expected: "a COM_STMT_* command with a statement id",
            header: first.map_or(0, |(&command, _)| command),
        }),
    }
}

/// Replaces the statement id of a statement command in place; returns the id it replaced.
pub fn rewrite_statement_id(payload: &mut [u8], new_id: u32) -> Result<u32, DecodeError> {
    let old = statement_id(payload)?;
    // statement_id() proved bytes 1..5 exist.
    if let Some(slot) = payload.get_mut(1..5) {
        slot.copy_from_slice(&new_id.to_le_bytes());
    }
    Ok(old)
}

/// Writes a COM_STMT_CLOSE payload (the proxy closes statements it prepared on a server).
pub fn encode_stmt_close(buf: &mut BytesMut, statement_id: u32) {
    buf.put_u8(COM_STMT_CLOSE);
    buf.put_u32_le(statement_id);
}

/// Writes a COM_STMT_RESET payload.
pub fn encode_stmt_reset(buf: &mut BytesMut, statement_id: u32) {
    buf.put_u8(COM_STMT_RESET);
    buf.put_u32_le(statement_id);
}

/// Writes a COM_STMT_PREPARE payload (the proxy re-prepares a client's statement on another
/// server).
pub fn encode_stmt_prepare(buf: &mut BytesMut, sql: &[u8]) {
    buf.put_u8(crate::consts::COM_STMT_PREPARE);
    buf.put_slice(sql);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prepare_ok_exact_bytes() {
        // id 1, 2 columns, 1 param, 0 warnings.
        let payload = [0x00, 0x01, 0, 0, 0, 0x02, 0, 0x01, 0, 0x00, 0, 0];
        let ok = StmtPrepareOk::decode(&payload).unwrap();
        assert_eq!(
            ok,
            StmtPrepareOk {
                statement_id: 1,
                num_columns: 2,
                num_params: 1,
                warnings: 0
            }
        );
        let mut b = BytesMut::new();
        ok.encode(&mut b);
        assert_eq!(&b[..], &payload);
        // Short (no filler/warnings) and long (MySQL 8 metadata flag) forms.
        assert_eq!(StmtPrepareOk::decode(&payload[..9]).unwrap(), ok);
        let mut long = payload.to_vec();
        long.push(1);
        assert_eq!(StmtPrepareOk::decode(&long).unwrap(), ok);
        assert!(StmtPrepareOk::decode(&payload[..8]).is_err());
        assert!(StmtPrepareOk::decode(&[0xff, 0, 0]).is_err());
    }

    #[test]
    fn statement_ids_are_read_and_rewritten_in_place() {
        // COM_STMT_EXECUTE id 7, flags 0, iteration count 1.
        let mut exec = vec![COM_STMT_EXECUTE, 7, 0, 0, 0, 0, 1, 0, 0, 0];
        assert_eq!(statement_id(&exec), Ok(7));
        assert_eq!(rewrite_statement_id(&mut exec, 0x0102_0304), Ok(7));
        assert_eq!(exec, vec![COM_STMT_EXECUTE, 4, 3, 2, 1, 0, 1, 0, 0, 0]);
        for cmd in [
            COM_STMT_CLOSE,
            COM_STMT_RESET,
            COM_STMT_SEND_LONG_DATA,
            COM_STMT_FETCH,
        ] {
            let mut p = vec![cmd, 9, 0, 0, 0];
            assert_eq!(rewrite_statement_id(&mut p, 10), Ok(9));
            assert_eq!(statement_id(&p), Ok(10));
        }
        let mut b = BytesMut::new();
        encode_stmt_close(&mut b, 5);
        assert_eq!(&b[..], &[COM_STMT_CLOSE, 5, 0, 0, 0]);
        let mut b = BytesMut::new();
        encode_stmt_reset(&mut b, 5);
        assert_eq!(statement_id(&b), Ok(5));
    }

    #[test]
    fn non_statement_commands_and_short_payloads_are_errors() {
        assert!(statement_id(&[crate::consts::COM_QUERY, 1, 2, 3, 4]).is_err());
        assert!(statement_id(&[]).is_err());
        assert!(matches!(
            statement_id(&[COM_STMT_CLOSE]),
            Err(DecodeError::TooShort { needed: 4, .. })
        ));
        let mut short = [COM_STMT_CLOSE, 1, 2];
        assert!(rewrite_statement_id(&mut short, 1).is_err());
        assert_eq!(short, [COM_STMT_CLOSE, 1, 2]);
    }

    proptest! {
        #[test]
        fn prepare_ok_round_trips(id in any::<u32>(), c in any::<u16>(), p in any::<u16>(), w in any::<u16>()) {
            let ok = StmtPrepareOk { statement_id: id, num_columns: c, num_params: p, warnings: w };
            let mut b = BytesMut::new();
            ok.encode(&mut b);
            prop_assert_eq!(StmtPrepareOk::decode(&b), Ok(ok));
        }

        #[test]
        fn random_bytes_never_panic(mut buf in proptest::collection::vec(any::<u8>(), 0..16), id in any::<u32>()) {
            let _ = StmtPrepareOk::decode(&buf);
            let _ = statement_id(&buf);
            let before = buf.clone();
            if rewrite_statement_id(&mut buf, id).is_ok() {
                prop_assert_eq!(&buf[5..], &before[5..]);
            } else {
                prop_assert_eq!(buf, before);
            }
        }
    }
}
