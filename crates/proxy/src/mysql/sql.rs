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

use crate::mysql::sync::{Setting, UNKNOWN_CHARSET};

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
    /// `LOAD DATA ... LOCAL` or `LOAD XML ... LOCAL`: the server will ask the client for a file.
    pub local_infile: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    pub query_only: bool,
    /// The connection id named; `None` for `CONNECTION_ID()`, the client's own, whatever
    /// its number.
    pub id: Option<u64>,
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

/// How the server may read a text: which quotes take backslash escapes (`sql_mode`
/// NO_BACKSLASH_ESCAPES: none; ANSI_QUOTES: `"` quotes an identifier, which takes none), and
/// how the client's character set lays out multibyte characters (in big5, cp932, gbk, gb18030
/// and sjis the second byte may be `\`, a backtick or a letter).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Reading {
    escapes: Escapes,
    charset: Charset,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Escapes {
    /// The default: in `'...'` and `"..."`.
    #[default]
    Both,
    /// ANSI_QUOTES: in `'...'` only.
    SingleOnly,
    /// NO_BACKSLASH_ESCAPES.
    None,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Charset {
    /// Every byte of a multibyte character is >= 0x80 (utf8mb4, latin1, ujis, euckr, ...).
    #[default]
    Bytes,
    /// gbk, and gb18030's two-byte characters: lead 0x81-0xFE, second byte 0x40-0x7E or
    /// 0x80-0xFE (gb18030's four-byte ones hold only digits below 0x80).
    Gbk,
    /// big5: lead 0xA1-0xF9, second byte 0x40-0x7E or 0xA1-0xFE.
    Big5,
    /// sjis and cp932: lead 0x81-0x9F or 0xE0-0xFC, second byte 0x40-0x7E or 0x80-0xFC.
    Sjis,
}

impl Reading {
    /// Length of the character starting `s` (at least 1, at most what is left), as the server
    /// steps: inside a string (`in_string`) a lead byte takes the next only when that is a
    /// valid second byte (else the lead stands alone, and a quote after it still ends the
    /// string); in identifiers and words the lead byte alone decides.
    fn char_len(self, s: &[u8], in_string: bool) -> usize {
        let (Some(&lead), second) = (s.first(), s.get(1).copied()) else {
            return 1;
        };
        let (is_lead, is_second): (bool, fn(u8) -> bool) = match self.charset {
            Charset::Bytes => return 1,
            Charset::Gbk => ((0x81..=0xfe).contains(&lead), |b| {
                (0x40..=0x7e).contains(&b) || (0x80..=0xfe).contains(&b)
            }),
            Charset::Big5 => ((0xa1..=0xf9).contains(&lead), |b| {
                (0x40..=0x7e).contains(&b) || (0xa1..=0xfe).contains(&b)
            }),
            Charset::Sjis => (
                (0x81..=0x9f).contains(&lead) || (0xe0..=0xfc).contains(&lead),
                |b| (0x40..=0x7e).contains(&b) || (0x80..=0xfc).contains(&b),
            ),
        };
        match second {
            Some(b) if is_lead && (!in_string || is_second(b)) => 2,
            _ => 1,
        }
    }

    fn escapes_in(self, quote: u8) -> bool {
        match self.escapes {
            Escapes::Both => quote != b'`',
            Escapes::SingleOnly => quote == b'\'',
            Escapes::None => false,
        }
    }
}

/// Whether a collation id (the handshake's, or [`UNKNOWN_CHARSET`]: the server's own default)
/// may belong to a character set whose multibyte characters hold ASCII bytes: big5, cp932,
/// gbk, sjis, gb18030, in MySQL's and MariaDB's ids (MariaDB's NO PAD ones are 1024 more).
pub fn ascii_in_multibyte(collation: u16) -> bool {
    collation == UNKNOWN_CHARSET
        || matches!(
            collation & 1023,
            1 | 84 | 13 | 88 | 28 | 87 | 95 | 96 | 248..=250
        )
}

/// Scans a query (COM_QUERY text). `ascii_in_multibyte`: whether the client's character set
/// may be one whose multibyte characters hold ASCII bytes ([`ascii_in_multibyte`]), or it
/// set such a one itself; asked only when the text could need it.
///
/// poolguard does not know for sure the `sql_mode` and character set the server reads the
/// text with (a statement earlier in the same text may change them), so a text where they
/// could matter (one holding a backslash; a byte of a multibyte character, in such a
/// character set or beside a change of it) is read every way they allow; where the readings
/// disagree on what the text does, the client is pinned.
pub fn scan(sql: &[u8], ascii_in_multibyte: impl FnOnce() -> bool) -> Findings {
    let mut f = scan_as(sql, Reading::default());
    let backslash = memchr::memchr(b'\\', sql).is_some();
    // The client's character set is looked at only for text with a byte of a multibyte
    // character: most text has none.
    let multibyte = sql.iter().any(|&b| b >= 0x80)
        && (ascii_in_multibyte()
            || f.settings.iter().any(Setting::may_hide_ascii)
            || mentions(sql, b"character")
            || mentions(sql, b"names"));
    if !backslash && !multibyte || f.pin.is_some() {
        return f;
    }
    let escapes: &[Escapes] = if backslash {
        &[Escapes::Both, Escapes::SingleOnly, Escapes::None]
    } else {
        &[Escapes::Both]
    };
    let charsets: &[Charset] = if multibyte {
        &[Charset::Bytes, Charset::Gbk, Charset::Big5, Charset::Sjis]
    } else {
        &[Charset::Bytes]
    };
    let differs = escapes.iter().any(|&escapes| {
        charsets.iter().any(|&charset| {
            let reading = Reading { escapes, charset };
            reading != Reading::default() && scan_as(sql, reading) != f
        })
    });
    if differs {
        pin(
            &mut f,
            "text that reads differently under another sql_mode or character set",
        );
    }
    f
}

/// Whether `needle` (lowercase ASCII) is in `sql`, in any case.
fn mentions(sql: &[u8], needle: &[u8]) -> bool {
    sql.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn scan_as(sql: &[u8], reading: Reading) -> Findings {
    let tokens = lex(sql, reading);
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
        // LOAD {DATA | XML} [LOW_PRIORITY | CONCURRENT] [LOCAL] INFILE
        "LOAD" if matches!(word(args.first()), Some("DATA" | "XML")) => {
            f.local_infile |= args
                .iter()
                .skip(1)
                .take(2)
                .any(|t| word(Some(t)) == Some("LOCAL"));
        }
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
            Tok::Number(id) => Some(Kill {
                query_only,
                id: Some(id),
            }),
            _ => None,
        },
        [name, open, close]
            if word(Some(name)) == Some("CONNECTION_ID")
                && open.tok == Tok::Punct(b'(')
                && close.tok == Tok::Punct(b')') =>
        {
            Some(Kill {
                query_only,
                id: None,
            })
        }
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
fn lex(sql: &[u8], reading: Reading) -> Vec<Token> {
    let mut out = Vec::new();
    let mut rest = sql;
    while !rest.is_empty() {
        if let Some(after) = skip_insignificant(rest) {
            rest = after;
            continue;
        }
        let Some((tok, after)) = token_at(rest, reading) else {
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
fn token_at(s: &[u8], reading: Reading) -> Option<(Tok, &[u8])> {
    let (&b, tail) = s.split_first()?;
    let word = |s| split_word(s, reading, |c| is_word_byte(c) || c == b'_');
    Some(match (b, tail) {
        (b'\'' | b'"' | b'`', _) => {
            let (content, after) = quoted(b, tail, reading);
            (Tok::Quoted(content), after)
        }
        (b'@', _) => {
            let (system, name_at) = match tail {
                [b'@', rest @ ..] => (true, rest),
                _ => (false, tail),
            };
            let (name, after) = match name_at {
                [q @ (b'\'' | b'"' | b'`'), rest @ ..] if !system => quoted(*q, rest, reading),
                _ => {
                    let (name, after) =
                        split_word(name_at, reading, |c| is_word_byte(c) || c == b'.');
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

/// `s` split after its longest prefix of characters that start with a byte satisfying
/// `pred` (a multibyte character whole, whatever its second byte).
fn split_word(s: &[u8], reading: Reading, pred: impl Fn(u8) -> bool) -> (&[u8], &[u8]) {
    let mut n = 0usize;
    while let Some(rest) = s.get(n..) {
        match rest.first() {
            Some(&c) if pred(c) => n = n.saturating_add(reading.char_len(rest, false)),
            _ => break,
        }
    }
    s.split_at_checked(n).unwrap_or((s, &[]))
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
fn quoted(q: u8, mut s: &[u8], reading: Reading) -> (String, &[u8]) {
    let mut content = Vec::new();
    loop {
        // A multibyte character is content whole, whatever its second byte.
        // Backticks quote an identifier: its characters are stepped as words are.
        let n = reading.char_len(s, q != b'`');
        if n > 1 {
            let (ch, rest) = s.split_at_checked(n).unwrap_or((s, &[]));
            content.extend_from_slice(ch);
            s = rest;
            continue;
        }
        match s {
            [b'\\', rest @ ..] if reading.escapes_in(q) => {
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
mod tests;
