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

/// A statement as the client defined it.
#[derive(Debug, PartialEq, Eq)]
pub struct Statement {
    pub query: String,
    pub param_types: Vec<u32>,
    /// The name poolguard prepares it under on servers.
    pub server_name: Arc<str>,
}

impl Statement {
    pub fn new(query: &str, param_types: &[u32]) -> Arc<Statement> {
        let mut h = DefaultHasher::new();
        query.hash(&mut h);
        param_types.hash(&mut h);
        // Length and hash together: a collision would need equal lengths too, and the
        // server-side table compares full texts before trusting a name.
        let server_name = format!("poolguard_{:x}_{:x}", query.len(), h.finish());
        Arc::new(Statement {
            query: query.to_owned(),
            param_types: param_types.to_vec(),
            server_name: server_name.into(),
        })
    }
}

/// One client's named statements. The map is made on the first definition: most clients
/// never name a statement, and an empty map would still take 48 bytes in every session.
#[derive(Debug, Default)]
pub struct ClientStatements {
    #[allow(clippy::box_collection)] // boxed on purpose: 8 bytes per session, not 48
    by_name: Option<Box<HashMap<String, Arc<Statement>>>>,
}

impl ClientStatements {
    pub fn define(&mut self, name: &str, stmt: Arc<Statement>) {
        self.by_name
            .get_or_insert_with(Default::default)
            .insert(name.to_owned(), stmt);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Statement>> {
        self.by_name.as_ref()?.get(name)
    }

    pub fn remove(&mut self, name: &str) -> bool {
        self.by_name
            .as_mut()
            .is_some_and(|m| m.remove(name).is_some())
    }

    pub fn clear(&mut self) {
        self.by_name = None;
    }

    pub fn len(&self) -> usize {
        self.by_name.as_ref().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        self.tick += 1;
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
        self.tick += 1;
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
        let a = Statement::new("SELECT $1", &[23]);
        let b = Statement::new("SELECT $1", &[23]);
        let c = Statement::new("SELECT $1", &[25]);
        let d = Statement::new("SELECT $1 + 1", &[23]);
        assert_eq!(a.server_name, b.server_name);
        assert_ne!(a.server_name, c.server_name);
        assert_ne!(a.server_name, d.server_name);
    }

    #[test]
    fn lru_evicts_least_recently_used() {
        let mut s = ServerStatements::new(2);
        let (x, y, z) = (
            Statement::new("x", &[]),
            Statement::new("y", &[]),
            Statement::new("z", &[]),
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
        let real = Statement::new("SELECT 1", &[]);
        let forged = Arc::new(Statement {
            query: "SELECT 2".into(),
            param_types: vec![],
            server_name: real.server_name.clone(),
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
