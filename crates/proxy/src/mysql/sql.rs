//! Reading what a client's SQL does to its session, for transaction pooling.
//!
//! A cheap lexical scan (no parser): the text is split into tokens (words, quoted strings and
//! identifiers, `@variables`, punctuation; comments skipped, `/*! ... */` read as code), then
//! into statements on `;`. Each statement's leading keywords decide: `USE db` moves the
//! client's schema; `SET` of a variable poolguard can replay becomes a [`Setting`]; state that
//! cannot move pins the client (temporary tables, GET_LOCK, LOCK TABLES, user variables,
//! unknown session variables, SQL-level PREPARE, HANDLER, XA, SET TRANSACTION for the next
//! transaction, SQL_CALC_FOUND_ROWS). A whole-query `KILL [QUERY] n` is found so poolguard can
//! route it by its own connection ids. It errs on the side of pinning: a false positive costs
//! one client its sharing, a false negative could leak state between clients.

use crate::mysql::sync::Setting;

/// What a query does to the session.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// Why the client must keep its server (first reason found).
    pub pin: Option<String>,
    /// Replayable settings, recorded if the query succeeds.
    pub settings: Vec<Setting>,
    /// `USE db` as the whole query.
    pub use_schema: Option<String>,
    /// A USE inside a multi-statement query: the schema must be asked for afterwards.
    pub schema_unknown: bool,
    /// LAST_INSERT_ID() / @@identity is read.
    pub reads_insert_id: bool,
    /// `KILL [CONNECTION|QUERY] n` as the whole query.
    pub kill: Option<Kill>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    pub query_only: bool,
    pub id: u64,
}

/// Session variables poolguard replays on another server instead of pinning the client.
const REPLAYABLE: &[&str] = &[
    "sql_mode",
    "time_zone",
    "character_set_client",
    "character_set_connection",
    "character_set_results",
    "collation_connection",
    "tx_isolation",
    "transaction_isolation",
    "tx_read_only",
    "transaction_read_only",
    "sql_select_limit",
    "max_execution_time",
    "max_statement_time",
    "group_concat_max_len",
    "sql_auto_is_null",
    "sql_safe_updates",
    "sql_big_selects",
    "sql_quote_show_create",
    "sql_notes",
    "sql_warnings",
    "foreign_key_checks",
    "unique_checks",
    "innodb_lock_wait_timeout",
    "lock_wait_timeout",
    "net_read_timeout",
    "net_write_timeout",
    "wait_timeout",
    "interactive_timeout",
    "div_precision_increment",
    "lc_time_names",
    "default_storage_engine",
    "default_tmp_storage_engine",
    "big_tables",
    "optimizer_switch",
    "join_buffer_size",
    "sort_buffer_size",
    "tmp_table_size",
    "max_heap_table_size",
    "long_query_time",
    "sql_buffer_result",
    "explicit_defaults_for_timestamp",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A bare word, uppercased.
    Word(String),
    /// A quoted identifier or string (content, unescaped only roughly).
    Quoted(String),
    Number(u64),
    /// `@name` (user variable), lowercased, without the `@`.
    UserVar(String),
    /// `@@[scope.]name`, lowercased, without the `@@`.
    SysVar(String),
    Assign,
    Punct(u8),
}

/// A token and where it sits in the text.
#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    start: usize,
    end: usize,
}

/// Scans a query (COM_QUERY text).
pub fn scan(sql: &[u8]) -> Findings {
    let tokens = lex(sql);
    let statements: Vec<&[Token]> = tokens
        .split(|t| t.tok == Tok::Punct(b';'))
        .filter(|s| !s.is_empty())
        .collect();
    let mut f = Findings::default();
    for t in &tokens {
        match &t.tok {
            Tok::Word(w) if w == "LAST_INSERT_ID" => f.reads_insert_id = true,
            Tok::SysVar(v) if v.ends_with("identity") || v.ends_with("last_insert_id") => {
                f.reads_insert_id = true
            }
            _ => {}
        }
    }
    for (i, t) in tokens.iter().enumerate() {
        let next = tokens.get(i + 1).map(|t| &t.tok);
        match (&t.tok, next) {
            (Tok::Word(w), Some(Tok::Punct(b'('))) if w == "GET_LOCK" => {
                pin(&mut f, "a user lock (GET_LOCK)")
            }
            (Tok::UserVar(v), Some(Tok::Assign)) => {
                pin(&mut f, &format!("user variable @{v} assigned"))
            }
            (Tok::Word(w), Some(Tok::UserVar(v))) if w == "INTO" => {
                pin(&mut f, &format!("user variable @{v} assigned"))
            }
            (Tok::Word(w), _) if w == "SQL_CALC_FOUND_ROWS" => pin(
                &mut f,
                "SQL_CALC_FOUND_ROWS (FOUND_ROWS() reads the previous statement)",
            ),
            _ => {}
        }
    }
    let single = statements.len() == 1;
    for stmt in &statements {
        statement(sql, stmt, single, &mut f);
    }
    f
}

fn pin(f: &mut Findings, reason: &str) {
    if f.pin.is_none() {
        f.pin = Some(reason.to_owned());
    }
}

fn word(t: Option<&Token>) -> Option<&str> {
    match t.map(|t| &t.tok) {
        Some(Tok::Word(w)) => Some(w),
        _ => None,
    }
}

fn statement(sql: &[u8], stmt: &[Token], single: bool, f: &mut Findings) {
    let first = word(stmt.first()).unwrap_or("");
    match first {
        "USE" => {
            let name = match stmt.get(1).map(|t| &t.tok) {
                Some(Tok::Word(_)) => Some(text(sql, &stmt[1]).to_owned()),
                Some(Tok::Quoted(q)) => Some(q.clone()),
                _ => None,
            };
            if single && stmt.len() == 2 {
                f.use_schema = name;
            } else {
                f.schema_unknown = true;
            }
        }
        "SET" => set_statement(sql, &stmt[1..], f),
        "CREATE"
            if stmt
                .iter()
                .take(4)
                .any(|t| t.tok == Tok::Word("TEMPORARY".into())) =>
        {
            pin(f, "a temporary table")
        }
        "LOCK" if matches!(word(stmt.get(1)), Some("TABLE" | "TABLES")) => pin(f, "LOCK TABLES"),
        "PREPARE" => pin(f, "SQL-level PREPARE"),
        "HANDLER" => pin(f, "HANDLER"),
        "XA" => pin(f, "an XA transaction"),
        "KILL" if single => f.kill = kill(stmt),
        _ => {}
    }
}

fn kill(stmt: &[Token]) -> Option<Kill> {
    let mut i = 1;
    if matches!(word(stmt.get(i)), Some("HARD" | "SOFT")) {
        i += 1;
    }
    let mut query_only = false;
    match word(stmt.get(i)) {
        Some("QUERY") => {
            query_only = true;
            i += 1;
        }
        Some("CONNECTION") => i += 1,
        _ => {}
    }
    match (stmt.get(i).map(|t| &t.tok), stmt.len()) {
        (Some(Tok::Number(id)), n) if n == i + 1 => Some(Kill {
            query_only,
            id: *id,
        }),
        _ => None,
    }
}

/// The assignments of a SET statement (after the SET keyword).
fn set_statement(sql: &[u8], rest: &[Token], f: &mut Findings) {
    match (word(rest.first()), word(rest.get(1))) {
        (Some("TRANSACTION"), _) => {
            return pin(f, "SET TRANSACTION (applies to the next transaction only)")
        }
        (Some("GLOBAL" | "PERSIST" | "PERSIST_ONLY"), Some("TRANSACTION")) => return,
        (Some("SESSION" | "LOCAL"), Some("TRANSACTION")) => {
            let words: Vec<&str> = rest.iter().filter_map(|t| word(Some(t))).collect();
            let mut key = String::from("session transaction");
            if words.contains(&"ISOLATION") {
                key.push_str(" isolation");
            }
            if words.contains(&"READ") && (words.contains(&"ONLY") || words.contains(&"WRITE")) {
                key.push_str(" access");
            }
            return f.settings.push(Setting {
                key,
                stmt: format!("SET {}", span(sql, rest)),
            });
        }
        (Some("PASSWORD" | "DEFAULT"), _) => return,
        (Some("STATEMENT"), _) => return, // SET STATEMENT ... FOR: one statement only
        (Some("ROLE"), _) => return pin(f, "SET ROLE"),
        _ => {}
    }
    let mut depth = 0i32;
    let mut start = 0;
    for (i, t) in rest.iter().enumerate() {
        match t.tok {
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => depth -= 1,
            Tok::Punct(b',') if depth == 0 => {
                assignment(sql, &rest[start..i], f);
                start = i + 1;
            }
            _ => {}
        }
    }
    assignment(sql, &rest[start..], f);
}

fn assignment(sql: &[u8], a: &[Token], f: &mut Findings) {
    let Some(first) = a.first() else { return };
    let name = match &first.tok {
        Tok::UserVar(v) => return pin(f, &format!("user variable @{v} assigned")),
        Tok::Word(w) if w == "NAMES" || w == "CHARSET" => "names".to_owned(),
        Tok::Word(w) if w == "CHARACTER" => "names".to_owned(),
        Tok::Word(w) if matches!(w.as_str(), "GLOBAL" | "PERSIST" | "PERSIST_ONLY") => return,
        Tok::Word(w) if w == "SESSION" || w == "LOCAL" => match a.get(1).map(|t| &t.tok) {
            Some(Tok::Word(v)) => v.to_ascii_lowercase(),
            _ => return pin(f, "an unrecognised SET"),
        },
        Tok::SysVar(v) => match v.split_once('.') {
            Some(("global", _)) => return,
            Some((_, name)) => name.to_owned(),
            None => v.clone(),
        },
        Tok::Word(w) => w.to_ascii_lowercase(),
        _ => return pin(f, "an unrecognised SET"),
    };
    if name == "autocommit" {
        return; // followed through the status flags of every OK and EOF
    }
    if name == "names" || REPLAYABLE.contains(&name.as_str()) {
        f.settings.push(Setting {
            key: name,
            stmt: format!("SET {}", span(sql, a)),
        });
    } else {
        pin(f, &format!("session variable {name}"));
    }
}

/// The original text of a token range.
fn span(sql: &[u8], toks: &[Token]) -> String {
    match (toks.first(), toks.last()) {
        (Some(a), Some(b)) => String::from_utf8_lossy(&sql[a.start..b.end]).into_owned(),
        _ => String::new(),
    }
}

fn text<'a>(sql: &'a [u8], t: &Token) -> &'a str {
    std::str::from_utf8(&sql[t.start..t.end]).unwrap_or("")
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Splits SQL text into tokens. Never panics; unterminated quotes and comments end the text.
fn lex(sql: &[u8]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < sql.len() {
        i = match skip_insignificant(sql, i) {
            Some(next) => next,
            None => {
                let (tok, end) = token_at(sql, i);
                out.push(Token { tok, start: i, end });
                end
            }
        };
    }
    out
}

/// Whitespace, comments and executable-comment markers at `i`: where the text resumes.
fn skip_insignificant(sql: &[u8], i: usize) -> Option<usize> {
    let n = sql.len();
    let next = |k: usize| sql.get(i + k).copied();
    match sql[i] {
        b' ' | b'\t' | b'\r' | b'\n' | 0x0c => Some(i + 1),
        b'#' => Some(skip_line(sql, i)),
        b'-' if next(1) == Some(b'-')
            && next(2).is_none_or(|c| c.is_ascii_whitespace() || c < 0x20) =>
        {
            Some(skip_line(sql, i))
        }
        b'/' if next(1) == Some(b'*') => {
            let marker = match (next(2), next(3)) {
                (Some(b'!'), _) => 3,
                (Some(b'M'), Some(b'!')) => 4,
                _ => return Some(find(sql, i + 2, b"*/").map_or(n, |e| e + 2)),
            };
            // Executable comment: drop the marker and version, read the body as code.
            let mut j = i + marker;
            while j < n && sql[j].is_ascii_digit() {
                j += 1;
            }
            Some(j)
        }
        b'*' if next(1) == Some(b'/') => Some(i + 2), // end of an executable comment
        _ => None,
    }
}

/// The token starting at `i` (not whitespace or a comment) and where it ends.
fn token_at(sql: &[u8], i: usize) -> (Tok, usize) {
    let b = sql[i];
    let word_end = |from: usize, extra: u8| {
        let mut j = from;
        while j < sql.len() && (is_word_byte(sql[j]) || sql[j] == extra) {
            j += 1;
        }
        j
    };
    match b {
        b'\'' | b'"' | b'`' => {
            let (content, end) = quoted(sql, i);
            (Tok::Quoted(content), end)
        }
        b'@' => {
            let system = sql.get(i + 1) == Some(&b'@');
            let from = i + if system { 2 } else { 1 };
            let (name, end) = if !system && matches!(sql.get(from), Some(b'\'' | b'"' | b'`')) {
                quoted(sql, from)
            } else {
                let end = word_end(from, b'.');
                (String::from_utf8_lossy(&sql[from..end]).into_owned(), end)
            };
            let name = name.to_ascii_lowercase();
            let tok = if system {
                Tok::SysVar(name)
            } else {
                Tok::UserVar(name)
            };
            (tok, end)
        }
        b':' if sql.get(i + 1) == Some(&b'=') => (Tok::Assign, i + 2),
        b'0'..=b'9' => {
            let end = word_end(i, b'_');
            let digits = std::str::from_utf8(&sql[i..end]).unwrap_or("");
            let tok = match digits.parse() {
                Ok(v) => Tok::Number(v),
                Err(_) => Tok::Word(digits.to_ascii_uppercase()),
            };
            (tok, end)
        }
        _ if is_word_byte(b) => {
            let end = word_end(i, b'_');
            let w = String::from_utf8_lossy(&sql[i..end]).to_ascii_uppercase();
            (Tok::Word(w), end)
        }
        _ => (Tok::Punct(b), i + 1),
    }
}

fn skip_line(sql: &[u8], i: usize) -> usize {
    match sql[i..].iter().position(|&c| c == b'\n') {
        Some(p) => i + p + 1,
        None => sql.len(),
    }
}

fn find(sql: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    sql.get(from..)?
        .windows(pat.len())
        .position(|w| w == pat)
        .map(|p| from + p)
}

/// A quoted token starting at `i`: its content and the index after the closing quote.
/// Doubled quotes and backslash escapes (not for backticks) stay inside.
fn quoted(sql: &[u8], i: usize) -> (String, usize) {
    let q = sql[i];
    let mut j = i + 1;
    let mut content = Vec::new();
    while j < sql.len() {
        let c = sql[j];
        if c == b'\\' && q != b'`' {
            if let Some(&e) = sql.get(j + 1) {
                content.push(e);
            }
            j += 2;
            continue;
        }
        if c == q {
            if sql.get(j + 1) == Some(&q) {
                content.push(q);
                j += 2;
                continue;
            }
            return (String::from_utf8_lossy(&content).into_owned(), j + 1);
        }
        content.push(c);
        j += 1;
    }
    (String::from_utf8_lossy(&content).into_owned(), sql.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin_of(sql: &str) -> Option<String> {
        scan(sql.as_bytes()).pin
    }

    #[test]
    fn state_that_cannot_move_pins() {
        assert!(pin_of("CREATE TEMPORARY TABLE t (a int)")
            .unwrap()
            .contains("temporary"));
        assert!(pin_of("create temporary table if not exists t(a int)").is_some());
        assert!(pin_of("SELECT GET_LOCK('x', 10)")
            .unwrap()
            .contains("GET_LOCK"));
        assert!(pin_of("LOCK TABLES t WRITE").is_some());
        assert!(pin_of("SET @x = 1").unwrap().contains("@x"));
        assert!(pin_of("SELECT @n := @n + 1 FROM t").is_some());
        assert!(pin_of("SELECT a INTO @v FROM t").is_some());
        assert!(pin_of("SET @@session.sql_log_bin = 0")
            .unwrap()
            .contains("sql_log_bin"));
        assert!(pin_of("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").is_some());
        assert!(pin_of("PREPARE s FROM 'SELECT 1'").is_some());
        assert!(pin_of("SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1").is_some());
    }

    #[test]
    fn harmless_text_does_not_pin() {
        for sql in [
            "SELECT 1",
            "SELECT 'GET_LOCK(' , '@x := 1' FROM t",
            "SELECT `get_lock`(1) /* GET_LOCK( */",
            "-- CREATE TEMPORARY TABLE x\nSELECT 1",
            "INSERT INTO t VALUES (1); COMMIT",
            "SET GLOBAL max_connections = 10",
            "SELECT @x",
            "SET autocommit = 0",
            "SET STATEMENT max_statement_time=1 FOR SELECT 1",
            "CREATE TABLE t (a int)",
            "UNLOCK TABLES",
        ] {
            assert_eq!(pin_of(sql), None, "{sql}");
        }
    }

    #[test]
    fn replayable_settings_are_recorded() {
        let f = scan(b"SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci, sql_mode = 'ANSI,STRICT_ALL_TABLES', @@session.time_zone='+00:00'");
        assert_eq!(f.pin, None);
        let keys: Vec<&str> = f.settings.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, vec!["names", "sql_mode", "time_zone"]);
        assert_eq!(
            f.settings[1].stmt,
            "SET sql_mode = 'ANSI,STRICT_ALL_TABLES'"
        );
        assert_eq!(f.settings[2].stmt, "SET @@session.time_zone='+00:00'");
        let f = scan(b"SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED");
        assert_eq!(f.settings[0].key, "session transaction isolation");
        let f = scan(b"/*!40101 SET character_set_client = utf8 */");
        assert_eq!(f.settings[0].key, "character_set_client");
        assert_eq!(f.pin, None);
    }

    #[test]
    fn use_kill_and_insert_id() {
        assert_eq!(
            scan(b"USE `other db`").use_schema.as_deref(),
            Some("other db")
        );
        assert_eq!(scan(b"use bank;").use_schema.as_deref(), Some("bank"));
        let f = scan(b"USE a; SELECT 1");
        assert!(f.schema_unknown && f.use_schema.is_none());
        assert_eq!(
            scan(b"KILL QUERY 1073741825").kill,
            Some(Kill {
                query_only: true,
                id: 1073741825
            })
        );
        assert_eq!(
            scan(b"kill 12").kill,
            Some(Kill {
                query_only: false,
                id: 12
            })
        );
        assert_eq!(scan(b"KILL QUERY ID 5").kill, None);
        assert!(scan(b"SELECT LAST_INSERT_ID()").reads_insert_id);
        assert!(scan(b"select @@IDENTITY").reads_insert_id);
        assert!(!scan(b"SELECT 'LAST_INSERT_ID()'").reads_insert_id);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        for sql in [
            &b"'unterminated"[..],
            b"/* open",
            b"/*!",
            b"@",
            b"@@",
            b"SET",
            b"SET SESSION",
            b"KILL",
            b"USE",
            b"\xff\xfe@\x80 := ;;;",
            b"--",
            b"`",
        ] {
            let _ = scan(sql);
        }
    }
}
