//! Named prepared statements under transaction pooling.
//!
//! A client's statement names mean nothing to the server its next transaction lands on, so each
//! client keeps its own table (name -> query and parameter types), and each server connection
//! keeps the statements it has actually prepared, under poolguard-owned names derived from the
//! statement's text and types. Two clients preparing the same text share one server statement;
//! the same name with different texts in two clients maps to two server statements.
//!
//! Invariants: a server statement name always denotes the same (query, parameter types); a
//! server's table only lists statements confirmed by ParseComplete or still in flight (failed
//! ones are removed); it holds at most `capacity` entries, the least recently used evicted first.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::error::ProxyError;

/// A statement as the client defined it.
#[derive(Debug, PartialEq, Eq)]
pub struct Statement {
    /// SQL text, bytes in the client's encoding.
    pub query: Box<[u8]>,
    pub param_types: Vec<u32>,
    /// The name poolguard prepares it under on servers.
    pub server_name: Arc<str>,
    /// For SQL `EXECUTE` of another statement of the client's (text rewritten to its server
    /// name): that statement, which must be on the server before this one runs.
    pub executes: Option<Arc<Statement>>,
}

impl Statement {
    pub fn new(query: &[u8], param_types: &[u32]) -> Arc<Statement> {
        Statement::in_epoch(query, param_types, 0)
    }

    /// The statement as defined in a pool's statement `epoch` (see
    /// `PgPoolEntry::statements_went_stale`): after a server reported a shared statement stale, a
    /// definition gets a server name no server has prepared, so it is planned afresh wherever
    /// it runs.
    pub fn in_epoch(query: &[u8], param_types: &[u32], epoch: u64) -> Arc<Statement> {
        Statement::executing(query, param_types, epoch, None)
    }

    /// As [`Statement::in_epoch`], for a text that executes statement `executes`.
    pub fn executing(
        query: &[u8],
        param_types: &[u32],
        epoch: u64,
        executes: Option<Arc<Statement>>,
    ) -> Arc<Statement> {
        let mut h = DefaultHasher::new();
        query.hash(&mut h);
        param_types.hash(&mut h);
        // Length and hash together: a collision would need equal lengths too, and the
        // server-side table compares full texts before trusting a name.
        let server_name = if epoch == 0 {
            format!("poolguard_{:x}_{:x}", query.len(), h.finish())
        } else {
            format!("poolguard_{:x}_{:x}_{epoch:x}", query.len(), h.finish())
        };
        Arc::new(Statement {
            query: query.into(),
            param_types: param_types.to_vec(),
            server_name: server_name.into(),
            executes,
        })
    }
}

/// Most statement text one client may hold (poolguard keeps it to prepare the statement again
/// on whichever server a transaction lands): with `max_client_prepared_statements`, what bounds
/// the memory a client's statements take, whatever their number and length.
pub const MAX_CLIENT_STATEMENT_BYTES: usize = 64 << 20;

/// The refusal of a Parse that would give a client more than `max` named statements (54000).
pub fn too_many_statements(max: usize) -> ProxyError {
    ProxyError::StatementLimit(format!(
        "poolguard: this client already holds {max} prepared statements (max_client_prepared_statements = {max}); deallocate some (Close, DEALLOCATE) before preparing more"
    ))
}

/// One client's named statements. The table is made on the first definition: most clients
/// never name a statement, and an empty map would still take 48 bytes in every session.
///
/// Invariant: at most the cap given to [`ClientStatements::define`] names, and at most
/// [`MAX_CLIENT_STATEMENT_BYTES`] of text, are held; a definition beyond either is refused
/// (54000) and changes nothing.
#[derive(Debug, Default)]
pub struct ClientStatements {
    table: Option<Box<Table>>,
}

#[derive(Debug, Default)]
struct Table {
    /// Names are bytes in the client's encoding.
    by_name: HashMap<Box<[u8]>, Arc<Statement>>,
    /// Query text held, all statements together.
    bytes: usize,
}

impl ClientStatements {
    /// Defines (or redefines) `name`, unless the client would then hold more than `max`
    /// statements or [`MAX_CLIENT_STATEMENT_BYTES`] of text.
    pub fn define(
        &mut self,
        name: &[u8],
        stmt: Arc<Statement>,
        max: usize,
    ) -> Result<(), ProxyError> {
        let table = self.table.get_or_insert_with(Default::default);
        let existing = table.by_name.get(name).map(|s| s.query.len());
        if existing.is_none() && table.by_name.len() >= max {
            return Err(too_many_statements(max));
        }
        let bytes = table
            .bytes
            .saturating_sub(existing.unwrap_or(0))
            .saturating_add(stmt.query.len());
        if bytes > MAX_CLIENT_STATEMENT_BYTES {
            return Err(ProxyError::StatementLimit(format!(
                "poolguard: this client's prepared statements would hold {bytes} bytes of text, over poolguard's {MAX_CLIENT_STATEMENT_BYTES} per client; deallocate some (Close, DEALLOCATE) before preparing more"
            )));
        }
        table.bytes = bytes;
        table.by_name.insert(name.into(), stmt);
        Ok(())
    }

    /// True if `name` is defined, or one more statement would fit under `max`.
    pub fn has_room(&self, name: &[u8], max: usize) -> bool {
        self.table
            .as_ref()
            .is_none_or(|t| t.by_name.contains_key(name) || t.by_name.len() < max)
    }

    pub fn get(&self, name: &[u8]) -> Option<&Arc<Statement>> {
        self.table.as_ref()?.by_name.get(name)
    }

    pub fn remove(&mut self, name: &[u8]) -> bool {
        let Some(table) = self.table.as_mut() else {
            return false;
        };
        match table.by_name.remove(name) {
            Some(s) => {
                table.bytes = table.bytes.saturating_sub(s.query.len());
                true
            }
            None => false,
        }
    }

    pub fn clear(&mut self) {
        self.table = None;
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.table.as_ref().map_or(0, |t| t.by_name.len())
    }
}

/// What one server connection has prepared, with LRU order.
#[derive(Debug)]
pub struct ServerStatements {
    entries: HashMap<Arc<str>, (Arc<Statement>, u64)>,
    tick: u64,
    capacity: usize,
}

impl ServerStatements {
    pub fn new(capacity: usize) -> Self {
        ServerStatements {
            entries: HashMap::new(),
            tick: 0,
            capacity: capacity.max(1),
        }
    }

    /// True (and marks it used) if the server has this exact statement.
    pub fn touch(&mut self, stmt: &Statement) -> bool {
        self.tick = self.tick.wrapping_add(1);
        match self.entries.get_mut(&stmt.server_name) {
            Some((have, used)) if **have == *stmt => {
                *used = self.tick;
                true
            }
            _ => false,
        }
    }

    /// Records a statement about to be prepared. Returns the name of a statement to close
    /// first if the table is full.
    pub fn insert(&mut self, stmt: Arc<Statement>) -> Option<Arc<str>> {
        self.tick = self.tick.wrapping_add(1);
        let mut evicted = None;
        if !self.entries.contains_key(&stmt.server_name) && self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.entries.remove(&k);
                evicted = Some(k);
            }
        }
        self.entries
            .insert(stmt.server_name.clone(), (stmt, self.tick));
        evicted
    }

    pub fn forget(&mut self, server_name: &str) {
        self.entries.remove(server_name);
    }

    /// After DISCARD ALL or DEALLOCATE ALL the server has nothing prepared.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Longest Parse body whose unnamed statement is remembered; longer texts are always sent.
const MAX_REMEMBERED_UNNAMED: usize = 8 * 1024;

/// The unnamed statement one server connection holds, as the Parse body that created it.
///
/// Drivers that send parameters without naming a statement (libpq's `PQexecParams`, pgbench
/// `-M extended`, node-postgres, psycopg before its prepare threshold) send the same Parse for
/// every execution. When the server already holds exactly that unnamed statement, poolguard
/// answers ParseComplete itself and the server skips the parse and analysis. Reuse across
/// clients is safe: the statement is the same text with the same parameter types, and
/// PostgreSQL re-analyses a cached statement when the search_path or the objects it depends
/// on have changed since.
///
/// Invariant: `known` only while every request that could have replaced or destroyed the
/// server's unnamed statement is accounted for. Sending a Parse records its body; a simple
/// Query (which destroys the unnamed statement), DISCARD ALL, and any ErrorResponse (after
/// which the server may have skipped the Parse) forget it. A Parse is only answered locally
/// when no earlier request is still unanswered, so an error still on its way cannot
/// invalidate what was relied on.
#[derive(Debug, Default)]
pub struct UnnamedStatement {
    body: Vec<u8>,
    known: bool,
}

impl UnnamedStatement {
    /// True if the server's unnamed statement was created by exactly this Parse body.
    pub fn holds(&self, parse_body: &[u8]) -> bool {
        self.known && self.body == parse_body
    }

    /// Records a Parse of the unnamed statement sent to the server.
    pub fn sent(&mut self, parse_body: &[u8]) {
        if parse_body.len() > MAX_REMEMBERED_UNNAMED {
            self.forget();
            return;
        }
        self.body.clear();
        self.body.extend_from_slice(parse_body);
        self.known = true;
    }

    /// The server's unnamed statement is no longer known.
    pub fn forget(&mut self) {
        self.known = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_same_server_name_different_text_different_name() {
        let a = Statement::new(b"SELECT $1", &[23]);
        let b = Statement::new(b"SELECT $1", &[23]);
        let c = Statement::new(b"SELECT $1", &[25]);
        let d = Statement::new(b"SELECT $1 + 1", &[23]);
        assert_eq!(a.server_name, b.server_name);
        assert_ne!(a.server_name, c.server_name);
        assert_ne!(a.server_name, d.server_name);
    }

    #[test]
    fn client_statements_are_capped_by_count() {
        let mut c = ClientStatements::default();
        c.define(b"a", Statement::new(b"SELECT 1", &[]), 2).unwrap();
        c.define(b"b", Statement::new(b"SELECT 2", &[]), 2).unwrap();
        assert!(!c.has_room(b"c", 2) && c.has_room(b"a", 2));
        let e = c
            .define(b"c", Statement::new(b"SELECT 3", &[]), 2)
            .unwrap_err();
        assert_eq!(e.sqlstate(), "54000");
        assert!(
            e.to_string().contains("max_client_prepared_statements = 2"),
            "{e}"
        );
        assert!(
            c.get(b"c").is_none() && c.len() == 2,
            "a refusal changes nothing"
        );
        // Redefining a name holds no more statements: allowed at the cap.
        c.define(b"a", Statement::new(b"SELECT 10", &[]), 2)
            .unwrap();
        assert_eq!(&*c.get(b"a").unwrap().query, b"SELECT 10");
        assert!(c.remove(b"b"));
        c.define(b"c", Statement::new(b"SELECT 3", &[]), 2).unwrap();
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn client_statements_are_capped_by_text() {
        let mut c = ClientStatements::default();
        let half = "x".repeat(MAX_CLIENT_STATEMENT_BYTES / 2);
        c.define(b"a", Statement::new(half.as_bytes(), &[]), 10)
            .unwrap();
        c.define(b"b", Statement::new(half.as_bytes(), &[]), 10)
            .unwrap();
        let e = c.define(b"c", Statement::new(b"y", &[]), 10).unwrap_err();
        assert_eq!(e.sqlstate(), "54000");
        // Replacing a long text by a short one gives its bytes back.
        c.define(b"a", Statement::new(b"SELECT 1", &[]), 10)
            .unwrap();
        c.define(b"c", Statement::new(b"y", &[]), 10).unwrap();
        c.remove(b"b");
        c.define(b"d", Statement::new(half.as_bytes(), &[]), 10)
            .unwrap();
    }

    #[test]
    fn lru_evicts_least_recently_used() {
        let mut s = ServerStatements::new(2);
        let (x, y, z) = (
            Statement::new(b"x", &[]),
            Statement::new(b"y", &[]),
            Statement::new(b"z", &[]),
        );
        assert_eq!(s.insert(x.clone()), None);
        assert_eq!(s.insert(y.clone()), None);
        assert!(s.touch(&x));
        assert_eq!(s.insert(z.clone()), Some(y.server_name.clone()));
        assert!(s.touch(&x) && s.touch(&z) && !s.touch(&y));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn a_name_collision_is_not_trusted() {
        let mut s = ServerStatements::new(4);
        let real = Statement::new(b"SELECT 1", &[]);
        let forged = Arc::new(Statement {
            query: b"SELECT 2"[..].into(),
            param_types: vec![],
            server_name: real.server_name.clone(),
            executes: None,
        });
        s.insert(real);
        assert!(!s.touch(&forged));
    }

    #[test]
    fn unnamed_statement_is_held_until_forgotten_or_replaced() {
        let mut u = UnnamedStatement::default();
        assert!(!u.holds(b"\0SELECT 1\0\0\0"));
        u.sent(b"\0SELECT 1\0\0\0");
        assert!(u.holds(b"\0SELECT 1\0\0\0"));
        assert!(!u.holds(b"\0SELECT 2\0\0\0"));
        u.sent(b"\0SELECT 2\0\0\0");
        assert!(!u.holds(b"\0SELECT 1\0\0\0"));
        u.forget();
        assert!(!u.holds(b"\0SELECT 2\0\0\0"));
        let long = vec![b'x'; MAX_REMEMBERED_UNNAMED + 1];
        u.sent(b"\0SELECT 2\0\0\0");
        u.sent(&long);
        assert!(!u.holds(&long) && !u.holds(b"\0SELECT 2\0\0\0"));
    }
}
