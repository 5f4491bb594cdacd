//! A lone `Parse(named) + Sync` answered by poolguard without a server, between transactions:
//! the statement is known to some server of the pool, so the client gets ParseComplete and
//! ReadyForQuery at once and the statement is prepared on whichever server runs its first Bind
//! or Describe.
//!
//! Invariant: only when nothing about the statement needs a server now (transaction mode, no
//! session-state feature, not an EXECUTE of a prepared statement, room in the client's
//! statement table); anything else goes the ordinary way, with its batch.

use bytes::{Buf, BytesMut};
use poolguard_pg::{backend, frontend, tags};

use super::{End, Session};
use crate::pg::prepared::Statement;

impl Session {
    /// Outside a transaction, a lone `Parse(named) + Sync` for a statement some server of this
    /// pool has already parsed is answered by poolguard; the statement is prepared on whichever
    /// server runs its first Bind or Describe. This spares a server for a request that needs
    /// none, and keeps drivers that prepare synchronously between transactions (pgbench
    /// -M prepared) from waiting on a server while holding up the clients that hold them.
    pub(super) async fn answer_prepare_locally(&mut self) -> Result<bool, End> {
        if !self.transaction_mode {
            return Ok(false);
        }
        let Ok(Some((parse_len, sync_len))) = prepare_then_sync(&self.cbuf) else {
            return Ok(false);
        };
        let Some(body) = self.cbuf.get(5..parse_len) else {
            return Ok(false);
        };
        let Ok(parse) = frontend::parse_parse(body) else {
            return Ok(false);
        };
        if parse.name.is_empty() {
            return Ok(false);
        }
        let stmt = Statement::in_epoch(
            parse.query,
            &parse.param_types,
            self.entry.statement_epoch(),
        );
        if !self.entry.statement_is_known(&stmt.server_name)
            || self.statements.get(parse.name).is_some()
            || !self.statements.has_room(parse.name, self.max_statements())
        {
            return Ok(false);
        }
        let findings = self.scan(parse.query, true);
        if !findings.features.is_empty()
            || !findings.tracked.is_empty()
            || self.executed_statement(parse.query).is_some()
        {
            return Ok(false);
        }
        if self
            .statements
            .define(parse.name, stmt, self.max_statements())
            .is_err()
        {
            return Ok(false); // refused on the ordinary path, with its batch
        }
        // Both lengths were measured in `cbuf` by `prepare_then_sync`.
        self.cbuf
            .advance(parse_len.saturating_add(sync_len).min(self.cbuf.len()));
        let mut m = BytesMut::new();
        backend::parse_complete(&mut m);
        backend::ready_for_query(&mut m, b'I');
        self.entry.traffic.sent(m.len());
        if self.client.write_all(&m).await.is_err() {
            return Err(End::ClientGone);
        }
        Ok(true)
    }
}

/// If `buf` holds exactly a whole Parse followed by a whole Sync, their lengths.
fn prepare_then_sync(buf: &[u8]) -> Result<Option<(usize, usize)>, poolguard_pg::DecodeError> {
    use poolguard_pg::framing::{frame_len, DEFAULT_MAX_MESSAGE_LEN};
    if buf.first() != Some(&tags::frontend::PARSE) {
        return Ok(None);
    }
    let Some(parse_len) = frame_len(buf, DEFAULT_MAX_MESSAGE_LEN)? else {
        return Ok(None);
    };
    match buf.get(parse_len..) {
        Some([tags::frontend::SYNC, 0, 0, 0, 4]) => Ok(Some((parse_len, 5))),
        _ => Ok(None),
    }
}
