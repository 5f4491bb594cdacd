//! Prepared statements under transaction pooling.
//!
//! A client gets poolguard's own statement ids ([`ClientStatements`]); each server keeps the
//! statements prepared on it by query text ([`ServerStatements`], bounded, least recently used
//! closed first). A client's COM_STMT_EXECUTE is rewritten for whichever server runs it: the
//! statement is prepared there first if missing, its id replaced, and, because a server
//! statement remembers the parameter types its last execute bound (which may have been another
//! client's), an execute that relies on earlier bound types (`new_params_bound_flag = 0`) gets
//! the client's own types put back in ([`rewrite_execute`]).
//!
//! Invariants: a server id never leaves this module towards a client; a client id is never sent
//! to a server; the rewrite changes only the id, the bound flag and the types block.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use bytes::{BufMut, Bytes, BytesMut};
use poolguard_mysql::DecodeError;

/// Most statements one client may hold open (MySQL's default `max_prepared_stmt_count`).
pub const MAX_CLIENT_STATEMENTS: usize = 16_382;
/// Most statement text one client may hold (poolguard keeps it to re-prepare elsewhere).
pub const MAX_CLIENT_STATEMENT_BYTES: usize = 64 << 20;

/// A statement as the client prepared it.
#[derive(Debug, Clone)]
pub struct ClientStmt {
    pub sql: Bytes,
    pub num_params: u16,
    pub num_columns: u16,
    /// The parameter types the client last sent (2 bytes per parameter).
    pub types: Option<Bytes>,
    /// The text calls LAST_INSERT_ID() (its value must be the client's on every server).
    pub reads_insert_id: bool,
}

/// Hashes poolguard's own statement ids for [`ClientStatements`]: the map only ever holds ids
/// poolguard handed out (consecutive numbers, not chosen by the client), so the keyed hash that
/// protects maps with client-chosen keys buys nothing there, and one multiplication spreads
/// consecutive ids over the table.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u32` is used for ids; anything else is still hashed, byte by byte.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u32(&mut self, id: u32) {
        // Fibonacci hashing: the high bits, which hashbrown uses first, depend on every id bit.
        self.0 = u64::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A client's statements under poolguard's ids. The table is boxed and made at the first
/// prepare: every connected client has this, most of them never prepare (8 bytes instead of
/// 56 in each session).
#[derive(Debug, Default)]
pub struct ClientStatements(Option<Box<Table>>);

#[derive(Debug, Default)]
struct Table {
    next_id: u32,
    map: HashMap<u32, ClientStmt, BuildHasherDefault<IdHasher>>,
    /// Total statement text held.
    bytes: usize,
    /// The most recently prepared (MariaDB's execute-with-id-0xFFFFFFFF means this one).
    last: Option<u32>,
}

impl ClientStatements {
    /// Registers a statement; `None` when the client already holds too many (or too much).
    pub fn define(&mut self, stmt: ClientStmt) -> Option<u32> {
        let t = self.0.get_or_insert_with(Box::default);
        let bytes = t
            .bytes
            .checked_add(stmt.sql.len())
            .filter(|&b| b <= MAX_CLIENT_STATEMENT_BYTES)?;
        if t.map.len() >= MAX_CLIENT_STATEMENTS {
            return None;
        }
        t.bytes = bytes;
        // Ids start at 1 and skip ids in use after a wrap (after 4 billion prepares).
        loop {
            t.next_id = t.next_id.wrapping_add(1);
            if t.next_id != 0 && t.next_id != u32::MAX && !t.map.contains_key(&t.next_id) {
                break;
            }
        }
        t.map.insert(t.next_id, stmt);
        t.last = Some(t.next_id);
        Some(t.next_id)
    }

    /// The most recently prepared statement's id, if it is still defined.
    pub fn last(&self) -> Option<u32> {
        self.0.as_ref().and_then(|t| t.last)
    }

    /// Resolves MariaDB's "last prepared" id.
    pub fn resolve(&self, id: u32) -> u32 {
        if id == poolguard_mysql::stmt::LAST_PREPARED_STATEMENT_ID {
            self.last().unwrap_or(id)
        } else {
            id
        }
    }

    pub fn get(&self, id: u32) -> Option<&ClientStmt> {
        self.0.as_ref()?.map.get(&id)
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut ClientStmt> {
        self.0.as_mut()?.map.get_mut(&id)
    }

    pub fn remove(&mut self, id: u32) -> Option<ClientStmt> {
        let t = self.0.as_mut()?;
        if t.last == Some(id) {
            t.last = None;
        }
        let stmt = t.map.remove(&id)?;
        // `define` counted this text in, so this never saturates.
        t.bytes = t.bytes.saturating_sub(stmt.sql.len());
        Some(stmt)
    }

    /// Forgets every statement; ids keep counting up (as a server's do), so an id from
    /// before never names a statement prepared after.
    pub fn clear(&mut self) {
        if let Some(t) = self.0.as_mut() {
            t.map.clear();
            t.bytes = 0;
            t.last = None;
        }
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |t| t.map.len())
    }
}

/// Statements prepared on one server connection, by query text.
#[derive(Debug)]
pub struct ServerStatements {
    cap: usize,
    clock: u64,
    by_sql: HashMap<Bytes, (u32, u64)>,
}

impl ServerStatements {
    pub fn new(cap: usize) -> Self {
        ServerStatements {
            cap: cap.max(1),
            clock: 0,
            by_sql: HashMap::new(),
        }
    }

    /// The server's id for this text, marking it used.
    pub fn get(&mut self, sql: &[u8]) -> Option<u32> {
        self.tick();
        let now = self.clock;
        self.by_sql.get_mut(sql).map(|(id, used)| {
            *used = now;
            *id
        })
    }

    /// Records a statement the server just prepared. Returns server ids to close: an older
    /// statement with the same text, and the least recently used one when over the bound.
    pub fn insert(&mut self, sql: Bytes, id: u32) -> Vec<u32> {
        self.tick();
        let mut close = Vec::new();
        if let Some((old, _)) = self.by_sql.insert(sql, (id, self.clock)) {
            if old != id {
                close.push(old);
            }
        }
        while self.by_sql.len() > self.cap {
            let oldest = self
                .by_sql
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, (id, _))| (k.clone(), *id));
            match oldest {
                Some((k, old)) => {
                    self.by_sql.remove(&k);
                    close.push(old);
                }
                None => break,
            }
        }
        close
    }

    /// Advances the use clock (one tick per lookup: 2^64 of them are out of reach).
    fn tick(&mut self) {
        self.clock = self.clock.saturating_add(1);
    }

    /// Forgets a statement the server no longer has (its prepare or execute failed).
    pub fn forget(&mut self, sql: &[u8]) {
        self.by_sql.remove(sql);
    }

    /// After COM_RESET_CONNECTION: the server dropped every statement.
    pub fn clear(&mut self) {
        self.by_sql.clear();
    }

    pub fn len(&self) -> usize {
        self.by_sql.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_sql.is_empty()
    }
}

/// Offsets in a COM_STMT_EXECUTE payload: 0x17, id (4), flags (1), iteration count (4).
const PARAMS_AT: usize = 10;

/// Rewrites a COM_STMT_EXECUTE payload for server statement `server_id` (see the module docs),
/// remembering the types the client sends; the result is appended to `out` (the packet being
/// built for the server).
pub fn rewrite_execute(
    payload: &[u8],
    server_id: u32,
    stmt: &mut ClientStmt,
    out: &mut BytesMut,
) -> Result<(), DecodeError> {
    let too_short = |needed| DecodeError::TooShort {
        what: "COM_STMT_EXECUTE",
        needed,
        available: payload.len(),
    };
    let Some(([command, _, _, _, _, flags_and_iterations @ ..], params)) =
        payload.split_first_chunk::<PARAMS_AT>()
    else {
        return Err(too_short(PARAMS_AT));
    };
    // At most 65,535 parameters: these sizes are small and never saturate.
    let n = usize::from(stmt.num_params);
    let bitmap = n.div_ceil(8);
    let types_len = n.saturating_mul(2);
    let flag_end = PARAMS_AT.saturating_add(bitmap).saturating_add(1);
    out.reserve(payload.len().saturating_add(types_len).saturating_add(1));
    out.put_u8(*command);
    out.put_u32_le(server_id);
    out.put_slice(flags_and_iterations);
    if n == 0 {
        out.put_slice(params);
        return Ok(());
    }
    let Some((null_bitmap, from_flag)) = params.split_at_checked(bitmap) else {
        return Err(too_short(flag_end));
    };
    let Some((&flag, after_flag)) = from_flag.split_first() else {
        return Err(too_short(flag_end));
    };
    out.put_slice(null_bitmap);
    match (flag, &stmt.types) {
        (1, _) => {
            let types = after_flag
                .get(..types_len)
                .ok_or_else(|| too_short(flag_end.saturating_add(types_len)))?;
            stmt.types = Some(Bytes::copy_from_slice(types));
            out.put_slice(from_flag);
        }
        (0, Some(types)) => {
            out.put_u8(1);
            out.put_slice(types);
            out.put_slice(after_flag);
        }
        _ => out.put_slice(from_flag),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rewrite on its own, into a fresh buffer.
    fn rewrite_execute(
        payload: &[u8],
        server_id: u32,
        stmt: &mut ClientStmt,
    ) -> Result<BytesMut, DecodeError> {
        let mut out = BytesMut::new();
        super::rewrite_execute(payload, server_id, stmt, &mut out)?;
        Ok(out)
    }

    fn stmt(n: u16) -> ClientStmt {
        ClientStmt {
            sql: Bytes::from_static(b"SELECT ?"),
            num_params: n,
            num_columns: 1,
            types: None,
            reads_insert_id: false,
        }
    }

    #[test]
    fn execute_rewrite_replaces_id_and_restores_types() {
        let mut s = stmt(2);
        // id 7, flags 0, iterations 1, bitmap 0, bound 1, types (LONG, VAR_STRING), values.
        let first = [
            0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0x00, 1, 0x03, 0, 0xfd, 0, 1, 0, 0, 0, 1, b'x',
        ];
        let out = rewrite_execute(&first, 99, &mut s).unwrap();
        assert_eq!(&out[1..5], &99u32.to_le_bytes());
        assert_eq!(&out[5..], &first[5..]);
        assert_eq!(s.types.as_deref(), Some(&[0x03, 0, 0xfd, 0][..]));
        // A later execute without types gets them back, flag set.
        let later = [
            0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0x00, 0, 2, 0, 0, 0, 1, b'y',
        ];
        let out = rewrite_execute(&later, 5, &mut s).unwrap();
        assert_eq!(
            &out[..],
            &[0x17, 5, 0, 0, 0, 0, 1, 0, 0, 0, 0x00, 1, 0x03, 0, 0xfd, 0, 2, 0, 0, 0, 1, b'y']
        );
        // No parameters: only the id changes.
        let mut s0 = stmt(0);
        let out = rewrite_execute(&[0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0], 3, &mut s0).unwrap();
        assert_eq!(&out[..], &[0x17, 3, 0, 0, 0, 0, 1, 0, 0, 0]);
        // Truncated packets are errors, not panics.
        assert!(rewrite_execute(&[0x17, 1], 3, &mut s0).is_err());
        assert!(rewrite_execute(&first[..11], 3, &mut stmt(2)).is_err());
        assert!(rewrite_execute(&first[..13], 3, &mut stmt(2)).is_err());
    }

    #[test]
    fn server_cache_closes_replaced_and_least_recently_used() {
        let mut c = ServerStatements::new(2);
        assert!(c.insert(Bytes::from_static(b"a"), 1).is_empty());
        assert!(c.insert(Bytes::from_static(b"b"), 2).is_empty());
        assert_eq!(c.get(b"a"), Some(1));
        assert_eq!(c.insert(Bytes::from_static(b"c"), 3), vec![2]);
        assert_eq!(c.insert(Bytes::from_static(b"a"), 4), vec![1]);
        assert_eq!(c.len(), 2);
        c.forget(b"a");
        assert_eq!(c.get(b"a"), None);
    }

    #[test]
    fn client_ids_are_ours_and_last_prepared_resolves() {
        let mut c = ClientStatements::default();
        let a = c.define(stmt(0)).unwrap();
        let b = c.define(stmt(1)).unwrap();
        assert_ne!(a, b);
        assert_eq!(c.resolve(u32::MAX), b);
        assert_eq!(c.resolve(a), a);
        c.remove(b);
        assert_eq!(c.resolve(u32::MAX), u32::MAX);
    }

    #[test]
    fn ids_keep_counting_after_a_reset() {
        let mut c = ClientStatements::default();
        assert!(
            c.get(1).is_none() && c.len() == 0,
            "nothing before the first prepare"
        );
        let a = c.define(stmt(0)).unwrap();
        c.clear();
        assert!(c.get(a).is_none());
        let b = c.define(stmt(1)).unwrap();
        assert_ne!(
            a, b,
            "a stale id must not name a statement prepared after the reset"
        );
    }

    #[test]
    fn every_truncated_execute_is_an_error() {
        let full = [
            0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0x00, 1, 0x03, 0, 0xfd, 0, 1, 0, 0, 0, 1, b'x',
        ];
        // Two parameters: bitmap at 10, flag at 11, types at 12..16.
        for cut in 0..16 {
            assert!(
                rewrite_execute(&full[..cut], 3, &mut stmt(2)).is_err(),
                "cut at {cut}"
            );
        }
        for cut in 16..=full.len() {
            assert!(rewrite_execute(&full[..cut], 3, &mut stmt(2)).is_ok());
        }
        // Types restored from an earlier execute into a packet that ends at its flag.
        let mut s = stmt(2);
        s.types = Some(Bytes::from_static(&[0x03, 0, 0xfd, 0]));
        let out = rewrite_execute(&[0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0], 3, &mut s).unwrap();
        assert_eq!(&out[10..], &[0, 1, 0x03, 0, 0xfd, 0]);
        // The most parameters a statement can have, and a packet far too short for them.
        let e = rewrite_execute(&full, 3, &mut stmt(u16::MAX)).unwrap_err();
        assert_eq!(
            e,
            DecodeError::TooShort {
                what: "COM_STMT_EXECUTE",
                needed: 10 + 8192 + 1,
                available: full.len()
            }
        );
    }

    #[test]
    fn statement_text_is_capped_and_counted_back() {
        let mut c = ClientStatements::default();
        let big = Bytes::from(vec![b' '; MAX_CLIENT_STATEMENT_BYTES / 2 + 1]);
        let with = |sql: &Bytes| ClientStmt {
            sql: sql.clone(),
            ..stmt(0)
        };
        let a = c.define(with(&big)).unwrap();
        assert_eq!(c.define(with(&big)), None);
        c.remove(a);
        assert!(c.define(with(&big)).is_some());
        c.clear();
        assert_eq!(c.remove(a).map(|s| s.sql.len()), None);
        assert!(c.define(with(&big)).is_some());
    }
}
