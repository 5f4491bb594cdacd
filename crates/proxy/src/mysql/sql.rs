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
//!
//! The text is arbitrary bytes (not necessarily UTF-8): the lexer walks it as a shrinking
//! suffix, never by index, and converts to text only whole tokens, lossily.

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
    /// Where `CONNECTION_ID()` is called (byte ranges of the text, whole calls): rewritten to
    /// the client's own poolguard id, the one its greeting announced and KILL takes.
    pub connection_id_calls: Vec<std::ops::Range<usize>>,
    /// `SHOW [FULL] PROCESSLIST` as the whole query: its Id column names server threads,
    /// shown to the client as the poolguard ids of the clients running on them.
    pub processlist: bool,
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
    for call in tokens.windows(3) {
        if let [name, open, close] = call {
            if name.tok == Tok::Word("CONNECTION_ID".into())
                && open.tok == Tok::Punct(b'(')
                && close.tok == Tok::Punct(b')')
            {
                f.connection_id_calls.push(name.start..close.end);
            }
        }
    }
    let mut iter = tokens.iter().peekable();
    while let Some(t) = iter.next() {
        let next = iter.peek().map(|t| &t.tok);
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
    let Some((first, args)) = stmt.split_first() else {
        return;
    };
    match word(Some(first)).unwrap_or("") {
        "USE" => {
            let name = args.first().and_then(|t| match &t.tok {
                Tok::Word(_) => Some(text(sql, t).to_owned()),
                Tok::Quoted(q) => Some(q.clone()),
                _ => None,
            });
            if single && args.len() == 1 {
                f.use_schema = name;
            } else {
                f.schema_unknown = true;
            }
        }
        "SET" => set_statement(sql, args, f),
        "CREATE"
            if stmt
                .iter()
                .take(4)
                .any(|t| t.tok == Tok::Word("TEMPORARY".into())) =>
        {
            pin(f, "a temporary table")
        }
        "LOCK" if matches!(word(args.first()), Some("TABLE" | "TABLES")) => pin(f, "LOCK TABLES"),
        "PREPARE" => pin(f, "SQL-level PREPARE"),
        "HANDLER" => pin(f, "HANDLER"),
        "XA" => pin(f, "an XA transaction"),
        "KILL" if single => f.kill = kill(args),
        "SHOW" if single => {
            f.processlist = matches!(
                (word(args.first()), word(args.get(1)), args.len()),
                (Some("PROCESSLIST"), _, 1) | (Some("FULL"), Some("PROCESSLIST"), 2)
            )
        }
        _ => {}
    }
}

/// `KILL [HARD|SOFT] [QUERY|CONNECTION] n`, from the tokens after KILL.
fn kill(args: &[Token]) -> Option<Kill> {
    let args = match args.split_first() {
        Some((t, rest)) if matches!(word(Some(t)), Some("HARD" | "SOFT")) => rest,
        _ => args,
    };
    let (query_only, args) = match args.split_first() {
        Some((t, rest)) if word(Some(t)) == Some("QUERY") => (true, rest),
        Some((t, rest)) if word(Some(t)) == Some("CONNECTION") => (false, rest),
        _ => (false, args),
    };
    match args {
        [only] => match only.tok {
            Tok::Number(id) => Some(Kill { query_only, id }),
            _ => None,
        },
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
    // Saturating: a depth of 2^31 needs more tokens than max_allowed_packet allows anyway.
    let mut depth = 0i32;
    let mut start = 0;
    for (i, t) in rest.iter().enumerate() {
        match t.tok {
            Tok::Punct(b'(') => depth = depth.saturating_add(1),
            Tok::Punct(b')') => depth = depth.saturating_sub(1),
            Tok::Punct(b',') if depth == 0 => {
                assignment(sql, rest.get(start..i).unwrap_or_default(), f);
                // `i` indexes `rest`, so this cannot saturate.
                start = i.saturating_add(1);
            }
            _ => {}
        }
    }
    assignment(sql, rest.get(start..).unwrap_or_default(), f);
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

/// The original text of a token range (lossy: the text may not be UTF-8).
fn span(sql: &[u8], toks: &[Token]) -> String {
    match (toks.first(), toks.last()) {
        (Some(a), Some(b)) => sql
            .get(a.start..b.end)
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// A token's original text; empty if it is not UTF-8.
fn text<'a>(sql: &'a [u8], t: &Token) -> &'a str {
    sql.get(t.start..t.end)
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or("")
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Splits SQL text into tokens. Never panics; unterminated quotes and comments end the text.
fn lex(sql: &[u8]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut rest = sql;
    while !rest.is_empty() {
        if let Some(after) = skip_insignificant(rest) {
            rest = after;
            continue;
        }
        let Some((tok, after)) = token_at(rest) else {
            break;
        };
        out.push(Token {
            tok,
            start: offset(sql, rest),
            end: offset(sql, after),
        });
        rest = after;
    }
    out
}

/// Where `rest`, a suffix of `sql`, starts in it.
fn offset(sql: &[u8], rest: &[u8]) -> usize {
    // Every suffix the lexer holds is shorter than the text, so this never saturates.
    sql.len().saturating_sub(rest.len())
}

/// Whitespace, comments and executable-comment markers at the start of `s`: the text after
/// them. Always shorter than `s` when not `None`.
fn skip_insignificant(s: &[u8]) -> Option<&[u8]> {
    match s {
        [b' ' | b'\t' | b'\r' | b'\n' | 0x0c, rest @ ..] => Some(rest),
        [b'#', ..] => Some(skip_line(s)),
        [b'-', b'-', rest @ ..]
            if rest
                .first()
                .is_none_or(|&c| c.is_ascii_whitespace() || c < 0x20) =>
        {
            Some(skip_line(s))
        }
        // Executable comment: drop the marker and version, read the body as code.
        [b'/', b'*', b'!', body @ ..] | [b'/', b'*', b'M', b'!', body @ ..] => {
            Some(split_while(body, |c| c.is_ascii_digit()).1)
        }
        [b'/', b'*', rest @ ..] => Some(after_comment(rest)),
        [b'*', b'/', rest @ ..] => Some(rest), // end of an executable comment
        _ => None,
    }
}

/// The token at the start of `s` (not whitespace or a comment) and the text after it, which is
/// shorter than `s`; `None` for empty text.
fn token_at(s: &[u8]) -> Option<(Tok, &[u8])> {
    let (&b, tail) = s.split_first()?;
    let word = |s| split_while(s, |c| is_word_byte(c) || c == b'_');
    Some(match (b, tail) {
        (b'\'' | b'"' | b'`', _) => {
            let (content, after) = quoted(b, tail);
            (Tok::Quoted(content), after)
        }
        (b'@', _) => {
            let (system, name_at) = match tail {
                [b'@', rest @ ..] => (true, rest),
                _ => (false, tail),
            };
            let (name, after) = match name_at {
                [q @ (b'\'' | b'"' | b'`'), rest @ ..] if !system => quoted(*q, rest),
                _ => {
                    let (name, after) = split_while(name_at, |c| is_word_byte(c) || c == b'.');
                    (String::from_utf8_lossy(name).into_owned(), after)
                }
            };
            let name = name.to_ascii_lowercase();
            let tok = if system {
                Tok::SysVar(name)
            } else {
                Tok::UserVar(name)
            };
            (tok, after)
        }
        (b':', [b'=', after @ ..]) => (Tok::Assign, after),
        (b'0'..=b'9', _) => {
            let (digits, after) = word(s);
            let digits = std::str::from_utf8(digits).unwrap_or("");
            let tok = match digits.parse() {
                Ok(v) => Tok::Number(v),
                Err(_) => Tok::Word(digits.to_ascii_uppercase()),
            };
            (tok, after)
        }
        _ if is_word_byte(b) => {
            let (w, after) = word(s);
            (
                Tok::Word(String::from_utf8_lossy(w).to_ascii_uppercase()),
                after,
            )
        }
        _ => (Tok::Punct(b), tail),
    })
}

/// `s` split after its longest prefix of bytes that satisfy `pred`.
fn split_while(s: &[u8], pred: impl Fn(u8) -> bool) -> (&[u8], &[u8]) {
    let n = s.iter().take_while(|&&c| pred(c)).count();
    // `n` counts bytes of `s`, so the split always succeeds.
    s.split_at_checked(n).unwrap_or((s, &[]))
}

/// The text after the end of the line that starts `s` (empty if there is no newline).
fn skip_line(s: &[u8]) -> &[u8] {
    s.splitn(2, |&c| c == b'\n').nth(1).unwrap_or_default()
}

/// The text after the first `*/` in `s` (empty if the comment is not closed).
fn after_comment(mut s: &[u8]) -> &[u8] {
    loop {
        match s {
            [b'*', b'/', rest @ ..] => return rest,
            [_, rest @ ..] => s = rest,
            [] => return s,
        }
    }
}

/// A quoted token whose opening quote `q` was just read: its content and the text after the
/// closing quote. Doubled quotes and backslash escapes (not for backticks) stay inside.
fn quoted(q: u8, mut s: &[u8]) -> (String, &[u8]) {
    let mut content = Vec::new();
    loop {
        match s {
            [b'\\', rest @ ..] if q != b'`' => {
                // The escaped byte, if the text does not end first.
                if let Some((&e, after)) = rest.split_first() {
                    content.push(e);
                    s = after;
                } else {
                    s = rest;
                }
            }
            [c, rest @ ..] if *c == q => match rest {
                [d, after @ ..] if *d == q => {
                    content.push(q);
                    s = after;
                }
                _ => return (String::from_utf8_lossy(&content).into_owned(), rest),
            },
            [c, rest @ ..] => {
                content.push(*c);
                s = rest;
            }
            [] => return (String::from_utf8_lossy(&content).into_owned(), s),
        }
    }
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
        let text =
            b"SELECT CONNECTION_ID(), connection_id ( ), 'CONNECTION_ID()' -- CONNECTION_ID()";
        let calls = scan(text).connection_id_calls;
        let found: Vec<&[u8]> = calls.iter().filter_map(|r| text.get(r.clone())).collect();
        assert_eq!(found, [&b"CONNECTION_ID()"[..], &b"connection_id ( )"[..]]);
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

    #[test]
    fn multi_byte_characters_where_tokens_end() {
        // Multi-byte characters wherever the lexer ends a token or a comment: word ends,
        // variable names, quoted content, comment ends, executable-comment versions; and every
        // cut of the text, most of them inside a character.
        let sql = "SET NAMES utf8mb4, @@session.time_zone='€', sql_mode = 'ANSI' /* ü */; \
                   USE `日本`; SET lc_time_names='été'é, @ü := 1 -- ß\n/*!40101é SET x=1 */ \
                   SELECT ü#ñ\n; KILL QUERY 7ü";
        for cut in 0..=sql.len() {
            let _ = scan(&sql.as_bytes()[..cut]);
        }
        let f = scan("SET sql_mode='ÉTÉ', time_zone = '日本'".as_bytes());
        assert_eq!(f.settings[0].stmt, "SET sql_mode='ÉTÉ'");
        assert_eq!(f.settings[1].stmt, "SET time_zone = '日本'");
        assert_eq!(
            scan("USE ñandú".as_bytes()).use_schema.as_deref(),
            Some("ñandú")
        );
        assert_eq!(
            scan("USE `日本`".as_bytes()).use_schema.as_deref(),
            Some("日本")
        );
        assert!(pin_of("SET @é = 1").unwrap().contains("@é"));
        assert_eq!(
            scan("KILL 12 /* ü */".as_bytes()).kill,
            Some(Kill {
                query_only: false,
                id: 12
            })
        );
        // A value cut mid-character at the end of the text is replaced, not sliced.
        let f = scan(b"SET sql_mode = caf\xc3");
        assert_eq!(f.settings[0].stmt, "SET sql_mode = caf\u{fffd}");
        let f = scan(b"SET time_zone = '\xe6\x97");
        assert_eq!(f.settings[0].stmt, "SET time_zone = '\u{fffd}");
    }

    #[test]
    fn random_bytes_never_panic() {
        // Deterministic xorshift: SQL fragments, multi-byte characters and raw bytes mixed.
        let pieces: &[&[u8]] = &[
            b" ",
            b"\n",
            b"#",
            b"--",
            b"-- ",
            b"/*",
            b"*/",
            b"/*!",
            b"/*M!",
            b"40101",
            b"'",
            b"\"",
            b"`",
            b"\\",
            b"@",
            b"@@",
            b":=",
            b";",
            b",",
            b"(",
            b")",
            b"SET",
            b"USE",
            b"KILL",
            b"QUERY",
            b"12",
            b"x",
            "é".as_bytes(),
            "日本".as_bytes(),
            b"\xc3",
            b"\xff",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut sql = Vec::new();
            for _ in 0..next() % 24 {
                let r = next();
                match usize::try_from(r % 40).unwrap() {
                    k if k < pieces.len() => sql.extend_from_slice(pieces[k]),
                    _ => sql.push(r.to_le_bytes()[7]),
                }
            }
            let f = scan(&sql);
            for s in &f.settings {
                assert!(s.stmt.starts_with("SET "));
            }
        }
    }
}
