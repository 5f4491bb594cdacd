//! Recognising SQL that creates session state transaction pooling cannot carry.
//!
//! The check runs on every simple Query and on each Parse (once per prepared statement), so it
//! is a cheap lexical scan: statements are split on `;` outside quotes and comments, and only
//! each statement's leading keywords are read, plus a case-insensitive search for the session
//! advisory-lock functions. It errs on the side of reporting: a false positive costs a
//! DISCARD ALL or a pin, a false negative could leak state between clients.
//!
//! The text is bytes in the client's encoding, never assumed to be UTF-8: keywords, quotes and
//! separators are ASCII in every encoding PostgreSQL accepts from a client, and the scan steps
//! over multibyte characters whole ([`Encoding`]), so a trail byte of a Shift JIS, Big5, GBK,
//! UHC, GB18030 or JOHAB character that happens to equal `\` or a letter never ends a quoted
//! string or opens a comment. Nothing here slices text at an arbitrary offset.

use crate::pg::params::is_reported;

mod lex;
pub use lex::Encoding;
use lex::{skip_quote_or_comment, statements, Behind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionFeature {
    /// LISTEN: notifications would be lost when the server moves.
    Listen,
    /// pg_advisory_lock and friends (session-level).
    AdvisoryLock,
    /// DECLARE ... WITH HOLD: the cursor outlives the transaction.
    HoldCursor,
    /// CREATE TEMP TABLE (or TEMPORARY).
    TempTable,
    /// SQL-level PREPARE.
    SqlPrepare,
    /// LOAD of a library.
    Load,
    /// SET of a parameter poolguard does not track (not SET LOCAL).
    UntrackedSet(String),
    /// `set_config(name, value, is_local)` with `is_local` not a constant true: a SET whose
    /// name and value are known only to the server.
    SetConfig,
    /// A DO block: its body (a SET, set_config, a temporary table...) is not read.
    DoBlock,
    /// Text that does something else under another `standard_conforming_strings` or client
    /// encoding, where the server may read it by rules other than the client's parameters say
    /// ([`scan`]): what it does on the server is not known here.
    LexingChanged,
}

impl SessionFeature {
    /// Features whose effect cannot be undone by a reset without breaking the client.
    pub fn needs_pin(&self) -> bool {
        matches!(
            self,
            SessionFeature::Listen | SessionFeature::AdvisoryLock | SessionFeature::HoldCursor
        )
    }

    pub fn describe(&self) -> String {
        match self {
            SessionFeature::Listen => "LISTEN".into(),
            SessionFeature::AdvisoryLock => "a session-level advisory lock".into(),
            SessionFeature::HoldCursor => "a WITH HOLD cursor".into(),
            SessionFeature::TempTable => "a temporary table".into(),
            SessionFeature::SqlPrepare => "SQL-level PREPARE".into(),
            SessionFeature::Load => "LOAD".into(),
            SessionFeature::UntrackedSet(p) => format!("SET of untracked parameter {p}"),
            SessionFeature::SetConfig => "a session-level set_config() call".into(),
            SessionFeature::DoBlock => "a DO block (its body is not read)".into(),
            SessionFeature::LexingChanged => {
                "text that reads differently under another standard_conforming_strings or client_encoding".into()
            }
        }
    }
}

/// A tracked `SET name = value` (or RESET) found in the text, for extras poolguard carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackedSet {
    Set { name: String, value: String },
    Reset { name: String },
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Findings {
    pub features: Vec<SessionFeature>,
    pub tracked: Vec<TrackedSet>,
    /// DEALLOCATE ALL or DISCARD ALL: every prepared statement is gone.
    pub deallocate_all: bool,
    /// `DROP DATABASE x` or `ALTER DATABASE x RENAME`: the server database poolguard must stop
    /// holding idle connections to first (the server refuses while any session uses it).
    pub drops_database: Option<String>,
    /// NOTIFY or a `pg_notify` call: the notification will name the server's process.
    pub notifies: bool,
    /// A statement here may change the client's encoding (SET or RESET of `client_encoding`,
    /// SET NAMES, RESET ALL, DISCARD ALL, any set_config, pg_settings or DO): from then on the
    /// session reads its text in every layout ([`Lexing::any_encoding`]).
    pub changes_encoding: bool,
}

/// How to read a client's SQL text: its encoding, whether plain `'...'` strings treat
/// backslashes as escapes (`standard_conforming_strings = off`), and whether every
/// session-level SET follows the client (`session_state = "follow"`) or only the reported and
/// `track_extra_parameters` ones do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexing {
    pub encoding: Encoding,
    pub standard_conforming_strings: bool,
    pub follow_sets: bool,
    /// The client has changed its `client_encoding` during the session: the server may read
    /// a text in another encoding than its parameters say (a message sent before the change
    /// was answered, a `SET LOCAL` undone by COMMIT), so text with non-ASCII bytes is read
    /// in every layout.
    pub any_encoding: bool,
}

impl Default for Lexing {
    fn default() -> Self {
        Lexing {
            encoding: Encoding::AsciiSafe,
            standard_conforming_strings: true,
            follow_sets: false,
            any_encoding: false,
        }
    }
}

impl Lexing {
    /// From a client's reported parameters (`client_encoding`, `standard_conforming_strings`).
    pub fn of(params: &crate::pg::params::ParamSet) -> Lexing {
        Lexing {
            encoding: params
                .get("client_encoding")
                .map_or(Encoding::AsciiSafe, Encoding::of),
            standard_conforming_strings: !params
                .get("standard_conforming_strings")
                .is_some_and(|v| v.eq_ignore_ascii_case("off")),
            follow_sets: false,
            any_encoding: false,
        }
    }
}

/// Scans SQL text (bytes in the client's encoding). `extras` are the operator's
/// `track_extra_parameters`.
///
/// Which rules the server reads a text by is not known for sure: `standard_conforming_strings`
/// may differ from what the client's parameters say (a message sent before a SET was
/// answered, a `SET LOCAL` undone by COMMIT or ROLLBACK, a prepared statement run again
/// after a change), and so may the encoding once the client has changed it
/// ([`Lexing::any_encoding`]). So a text those rules could matter for (a backslash; non-ASCII
/// bytes) is read every way they allow, and where the readings disagree on what it does,
/// [`SessionFeature::LexingChanged`] is reported: its server is pinned or reset, never
/// trusted.
pub fn scan(sql: &[u8], lexing: Lexing, extras: &[String]) -> Findings {
    let mut f = scan_as(sql, lexing, extras);
    if f.features.is_empty() && is_plain(sql) {
        return f;
    }
    let backslash = memchr::memchr(b'\\', sql).is_some();
    let high = (lexing.encoding != Encoding::AsciiSafe || lexing.any_encoding)
        && sql.iter().any(|&b| b >= 0x80);
    if !backslash && !high {
        return f;
    }
    let scs: &[bool] = if backslash {
        &[true, false]
    } else {
        &[lexing.standard_conforming_strings]
    };
    let encodings: &[Encoding] = if high {
        &[
            Encoding::AsciiSafe,
            Encoding::Sjis,
            Encoding::TwoByte,
            Encoding::Gb18030,
        ]
    } else {
        &[lexing.encoding]
    };
    let differs = scs.iter().any(|&standard_conforming_strings| {
        encodings.iter().any(|&encoding| {
            let other = Lexing {
                encoding,
                standard_conforming_strings,
                ..lexing
            };
            other != lexing && scan_as(sql, other, extras) != f
        })
    });
    if differs {
        f.features.push(SessionFeature::LexingChanged);
    }
    f
}

/// [`scan`] by one set of rules.
fn scan_as(sql: &[u8], lexing: Lexing, extras: &[String]) -> Findings {
    let mut f = Findings::default();
    if is_plain(sql) {
        return f;
    }
    // Session-level forms (pg_advisory_lock, pg_try_advisory_lock_shared, ...) contain
    // "advisory_lock"; the transaction-level ones say "advisory_xact_lock" and end at commit.
    if contains_ignore_case(sql, b"advisory_lock") {
        f.features.push(SessionFeature::AdvisoryLock);
    }
    f.notifies = contains_ignore_case(sql, b"pg_notify");
    if set_config::sets_session(sql, lexing) {
        f.features.push(SessionFeature::SetConfig);
    }
    for stmt in statements(sql, lexing) {
        let mut words: Vec<&[u8]> = stmt
            .split(|&c| is_space(c))
            .filter(|w| !w.is_empty())
            .collect();
        // A keyword may be followed straight by a comment, a quote or a dollar quote
        // (`DO'...'`, `SET/**/x = 1`), which the server reads as a separator: the keyword is
        // its letters alone, and what is glued to it cannot be read here.
        let glued = words.first_mut().is_some_and(|first| {
            // Digits, `_` and `$` continue a word (`not_a_statement` is one identifier).
            let end = first
                .iter()
                .position(|&c| !is_ident_byte(c))
                .unwrap_or(first.len());
            let glued = end > 0 && end < first.len();
            *first = first.get(..end).unwrap_or_default();
            glued
        });
        let w = |i: usize| words.get(i).copied().unwrap_or_default();
        let is = |i: usize, keyword: &str| w(i).eq_ignore_ascii_case(keyword.as_bytes());
        // set_config() and pg_settings (even local, and whatever name they are given: it may
        // be computed), and DO blocks, may change the encoding too.
        f.changes_encoding |= changes_encoding(&words, glued)
            || is(0, "DO")
            || contains_ignore_case(stmt, b"set_config")
            || contains_ignore_case(stmt, b"pg_settings");
        let is_temp = |i: usize| is(i, "TEMP") || is(i, "TEMPORARY");
        // TEMP, TEMPORARY, or GLOBAL/LOCAL before either.
        let temp_at = |i: usize| {
            is_temp(i) || ((is(i, "GLOBAL") || is(i, "LOCAL")) && is_temp(i.saturating_add(1)))
        };
        if glued
            && !is(0, "DO")
            && !HARMLESS
                .iter()
                .any(|k| k.as_bytes().eq_ignore_ascii_case(w(0)))
        {
            f.features.push(SessionFeature::UntrackedSet(format!(
                "{} written without a space after it",
                String::from_utf8_lossy(w(0)).to_ascii_uppercase()
            )));
        } else if is(0, "LISTEN") {
            f.features.push(SessionFeature::Listen);
        } else if is(0, "DO") {
            f.features.push(SessionFeature::DoBlock);
        } else if is(0, "NOTIFY") {
            f.notifies = true;
        } else if is(0, "PREPARE") && !is(1, "TRANSACTION") {
            // PREPARE TRANSACTION ends the transaction; what it leaves is the server's, not
            // the session's.
            f.features.push(SessionFeature::SqlPrepare);
        } else if is(0, "LOAD") {
            f.features.push(SessionFeature::Load);
        } else if is(0, "DECLARE") {
            let hold = words
                .windows(2)
                .any(|p| matches!(p, [a, b] if a.eq_ignore_ascii_case(b"with") && b.eq_ignore_ascii_case(b"hold")));
            if hold {
                f.features.push(SessionFeature::HoldCursor);
            }
        } else if is(0, "CREATE") {
            // CREATE [OR REPLACE] [GLOBAL|LOCAL] TEMP[ORARY] TABLE / VIEW / SEQUENCE.
            let at = if is(1, "OR") && is(2, "REPLACE") {
                3
            } else {
                1
            };
            if temp_at(at) {
                f.features.push(SessionFeature::TempTable);
            }
        } else if is(0, "SELECT") || is(0, "WITH") {
            // SELECT ... INTO [GLOBAL|LOCAL] TEMP[ORARY] [TABLE] t creates one too.
            if (0..words.len()).any(|i| is(i, "INTO") && temp_at(i.saturating_add(1))) {
                f.features.push(SessionFeature::TempTable);
            }
        } else if is(0, "DEALLOCATE") {
            let target = if is(1, "PREPARE") { 2 } else { 1 };
            if is(target, "ALL") {
                f.deallocate_all = true;
            }
        } else if is(0, "DISCARD") {
            if is(1, "ALL") {
                f.deallocate_all = true;
            }
        } else if is(0, "DROP") && is(1, "DATABASE") {
            let at = if is(2, "IF") && is(3, "EXISTS") { 4 } else { 2 };
            f.drops_database = database_name(w(at));
        } else if is(0, "ALTER") && is(1, "DATABASE") && is(3, "RENAME") {
            f.drops_database = database_name(w(2));
        } else if is(0, "SET") {
            classify_set(stmt, extras, lexing.follow_sets, &mut f);
        } else if is(0, "RESET") {
            let name = String::from_utf8_lossy(w(1));
            if name.eq_ignore_ascii_case("all") {
                f.features
                    .push(SessionFeature::UntrackedSet("ALL (RESET ALL)".into()));
            } else if is_tracked(&name, extras, lexing.follow_sets) {
                if !is_reported(&name) {
                    f.tracked.push(TrackedSet::Reset {
                        name: name.to_ascii_lowercase(),
                    });
                }
            } else {
                f.features
                    .push(SessionFeature::UntrackedSet(name.to_ascii_lowercase()));
            }
        }
    }
    f
}

/// Whether a statement (its words; `glued`: its keyword ran straight into a comment or quote)
/// may change the client's encoding: SET or RESET of `client_encoding`, SET NAMES. A SET or
/// RESET whose name could not be read counts too.
fn changes_encoding(words: &[&[u8]], glued: bool) -> bool {
    let word = |i: usize| words.get(i).copied().unwrap_or_default();
    // A name ends at `=`, a quote or anything else that cannot be in a plain identifier.
    let name = |i: usize| {
        let w = word(i);
        let end = w.iter().position(|&c| !is_ident_byte(c)).unwrap_or(w.len());
        w.get(..end).unwrap_or_default()
    };
    let first = word(0);
    // DISCARD ALL and RESET ALL put client_encoding back to the role's or database's default,
    // which may be any encoding.
    if (first.eq_ignore_ascii_case(b"discard") || first.eq_ignore_ascii_case(b"reset"))
        && name(1).eq_ignore_ascii_case(b"all")
    {
        return true;
    }
    let at = if first.eq_ignore_ascii_case(b"set") {
        let scope = name(1);
        if scope.eq_ignore_ascii_case(b"local") || scope.eq_ignore_ascii_case(b"session") {
            2
        } else {
            1
        }
    } else if first.eq_ignore_ascii_case(b"reset") {
        1
    } else {
        return false;
    };
    let n = name(at);
    glued
        || n.is_empty()
        || n.eq_ignore_ascii_case(b"client_encoding")
        || n.eq_ignore_ascii_case(b"names")
}

/// First words of statements that cannot create session state (a constant, not a local array,
/// which was built on the stack at every call).
const HARMLESS: [&str; 18] = [
    "select",
    "insert",
    "update",
    "delete",
    "begin",
    "commit",
    "end",
    "rollback",
    "values",
    "with",
    "fetch",
    "start",
    "savepoint",
    "release",
    "show",
    "explain",
    "copy",
    "abort",
];

/// The common case, decided without allocating: one statement (at most a trailing `;`) that
/// starts with a keyword that cannot create session state, and no advisory-lock call or
/// temporary table in its text.
pub(crate) fn is_plain(sql: &[u8]) -> bool {
    let s = sql.trim_ascii_start();
    let word_end = s
        .iter()
        .position(|c| !c.is_ascii_alphabetic())
        .unwrap_or(s.len());
    let (first, _) = s.split_at(word_end);

    if !HARMLESS
        .iter()
        .any(|k| k.as_bytes().eq_ignore_ascii_case(first))
    {
        return false;
    }
    let mut body = s.trim_ascii_end();
    while let Some(rest) = body.strip_suffix(b";") {
        body = rest;
    }
    !has_marks(body)
}

/// Whether `body` holds a `;` (a second statement) or, in any case, `advisory_lock`, `temp`,
/// `notify`, `set_config`, `pg_setting` or `u&`. Looks closer only at a `;` or at the last
/// character of a mark (`k`, `p`, `y`, `g`, `&`): those are rare in ordinary SQL. Statements are short (pgbench's is 55 bytes), so the
/// search reads eight bytes at a time in a plain integer (`marks_in_word`) rather than
/// calling a vector search per letter and case, whose set-up cost more than the search: the
/// whole check was 650 instructions per pgbench transaction, 6% of poolguard's work.
fn has_marks(body: &[u8]) -> bool {
    let mut words = body.chunks_exact(8);
    let mut at = 0usize;
    for word in &mut words {
        let word = <[u8; 8]>::try_from(word).map_or(0, u64::from_le_bytes);
        if marks_in_word(body, at, word) {
            return true;
        }
        at = at.saturating_add(8);
    }
    // The tail, padded with zero bytes (never a mark) to a whole word.
    let mut tail = [0u8; 8];
    let rest = words.remainder();
    tail.iter_mut().zip(rest).for_each(|(t, b)| *t = *b);
    marks_in_word(body, at, u64::from_le_bytes(tail))
}

/// Whether one of the marks ends in `word`, the eight bytes of `body` from `at`. A cheap
/// integer test picks the bytes that, with their case bit set, may be `;`, `k`, `p`, `y`, `g`
/// or `&`
/// (every such byte, and a few others: ESC, `{`, or a byte after one of them); only those
/// get a closer look (`mark_ends_at`).
fn marks_in_word(body: &[u8], at: usize, word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // The high bit set in every zero byte of `x` (and perhaps in a byte right after one).
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let folded = word | (ONES * 0x20);
    let mut candidates = [b';', b'k', b'p', b'y', b'g', b'&']
        .iter()
        .fold(0, |acc, &c| {
            acc | zero_bytes(folded ^ (ONES * u64::from(c)))
        });
    while candidates != 0 {
        let i = at.saturating_add(candidates.trailing_zeros() as usize / 8);
        if mark_ends_at(body, i) {
            return true;
        }
        candidates &= candidates.wrapping_sub(1);
    }
    false
}

/// Whether a `;` is at `i`, or one of the marks ends there, in any case.
fn mark_ends_at(body: &[u8], i: usize) -> bool {
    // Whether the bytes up to and including `i` end with `mark`, in any case.
    let ends = |mark: &[u8]| {
        body.get(..=i)
            .and_then(|head| head.get(head.len().checked_sub(mark.len())?..))
            .is_some_and(|w| w.eq_ignore_ascii_case(mark))
    };
    match body.get(i) {
        Some(b';') => true,
        Some(b'k' | b'K') => ends(b"advisory_lock"),
        Some(b'p' | b'P') => ends(b"temp"),
        Some(b'y' | b'Y') => ends(b"notify"),
        Some(b'g' | b'G') => ends(b"set_config") || ends(b"pg_setting"),
        // `U&"..."`: an identifier that could spell any name with escapes.
        Some(b'&') => ends(b"u&"),
        _ => false,
    }
}

/// The tracked sets `AS TRANSACTION <modes>` stands for, or `None` when the text is not that
/// (the server then rejects it, or poolguard cannot tell: the caller treats it as untracked).
fn session_characteristics(after: &[u8]) -> Option<Vec<TrackedSet>> {
    let text = std::str::from_utf8(after).ok()?.to_ascii_lowercase();
    let words: Vec<&str> = text
        .split(|c: char| c.is_ascii_whitespace() || c == ',' || c == ';')
        .filter(|w| !w.is_empty())
        .collect();
    let rest = match words.as_slice() {
        ["as", "transaction", rest @ ..] => rest,
        _ => return None,
    };
    let set = |name: &str, value: &str| TrackedSet::Set {
        name: name.into(),
        value: format!("'{value}'"),
    };
    let mut out = Vec::new();
    let mut i = rest.iter().peekable();
    while let Some(w) = i.next() {
        match (*w, i.peek().copied()) {
            ("isolation", Some(&"level")) => {
                i.next();
                let level = match (i.next().copied(), i.peek().copied()) {
                    (Some("serializable"), _) => "serializable",
                    (Some("repeatable"), Some(&"read")) => "repeatable read",
                    (Some("read"), Some(&"committed")) => "read committed",
                    (Some("read"), Some(&"uncommitted")) => "read uncommitted",
                    _ => return None,
                };
                if level.contains(' ') {
                    i.next();
                }
                out.push(set("default_transaction_isolation", level));
            }
            ("read", Some(&"only")) => {
                i.next();
                out.push(set("default_transaction_read_only", "on"));
            }
            ("read", Some(&"write")) => {
                i.next();
                out.push(set("default_transaction_read_only", "off"));
            }
            ("deferrable", _) => out.push(set("default_transaction_deferrable", "on")),
            ("not", Some(&"deferrable")) => {
                i.next();
                out.push(set("default_transaction_deferrable", "off"));
            }
            _ => return None,
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Whether `sql` may drop or rename a database (its first word is DROP or ALTER): session mode
/// scans only such statements, for [`Findings::drops_database`].
pub fn may_drop_database(sql: &[u8]) -> bool {
    let s = sql.trim_ascii_start();
    let word = s.get(..5).unwrap_or_default();
    word.eq_ignore_ascii_case(b"drop ") || word.eq_ignore_ascii_case(b"alter")
}

/// A database name as written in a statement: `"Quoted"` as is, a bare name folded to lower
/// case (as the server folds it); `None` for what is not a name.
fn database_name(word: &[u8]) -> Option<String> {
    let word = word.strip_suffix(b";").unwrap_or(word);
    let text = std::str::from_utf8(word).ok()?;
    if let Some(quoted) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        return Some(quoted.replace("\"\"", "\""));
    }
    let bare = text.to_ascii_lowercase();
    (!bare.is_empty() && bare.bytes().all(is_ident_byte)).then_some(bare)
}

/// The setting follows the client: a reported one, an operator's extra, or any (`all`: the
/// `follow` policy).
fn is_tracked(name: &str, extras: &[String], all: bool) -> bool {
    all || is_reported(name) || extras.iter().any(|e| e.eq_ignore_ascii_case(name))
}

/// A byte that can continue an identifier (or a keyword): `$` is allowed after the first
/// character, and non-ASCII bytes are letters to PostgreSQL's lexer.
/// PostgreSQL's whitespace, vertical tab included.
fn is_space(c: u8) -> bool {
    c.is_ascii_whitespace() || c == 0x0b
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

fn classify_set(stmt: &[u8], extras: &[String], follow: bool, f: &mut Findings) {
    // SET [SESSION | LOCAL] name { TO | = } value
    let rest = trim_space_start(stmt.get(3..).unwrap_or_default());
    let (local, rest) = match first_word(rest) {
        Some((w, tail)) if w.eq_ignore_ascii_case(b"local") => (true, tail),
        Some((w, tail)) if w.eq_ignore_ascii_case(b"session") => (false, tail),
        _ => (false, rest),
    };
    if local {
        return; // ends with the transaction
    }
    let name_end = rest
        .iter()
        .position(|&c| is_space(c) || c == b'=')
        .unwrap_or(rest.len());
    let (name, after) = rest.split_at(name_end);
    let name = String::from_utf8_lossy(name);
    if name.eq_ignore_ascii_case("transaction") || name.eq_ignore_ascii_case("constraints") {
        return; // transaction-scoped forms
    }
    // Special forms with their own grammar: TIME ZONE and NAMES set reported parameters
    // (TimeZone, client_encoding: followed through ParameterStatus); SCHEMA 'x' is search_path;
    // XML OPTION and SESSION AUTHORIZATION have no `name = value` spelling to replay here.
    if name.eq_ignore_ascii_case("time") || name.eq_ignore_ascii_case("names") {
        return;
    }
    if name.eq_ignore_ascii_case("xml") || name.eq_ignore_ascii_case("authorization") {
        f.features
            .push(SessionFeature::UntrackedSet(name.to_ascii_lowercase()));
        return;
    }
    if name.eq_ignore_ascii_case("schema") {
        // `SET SCHEMA 'x'`: no `TO`/`=`, the literal follows the keyword.
        if is_tracked("search_path", extras, follow) {
            let value = String::from_utf8_lossy(after.trim_ascii()).into_owned();
            f.tracked.push(TrackedSet::Set {
                name: "search_path".into(),
                value,
            });
        } else {
            f.features
                .push(SessionFeature::UntrackedSet("search_path".into()));
        }
        return;
    }
    if name.eq_ignore_ascii_case("characteristics") {
        // SET SESSION CHARACTERISTICS AS TRANSACTION <modes>: the session's defaults, the
        // settings default_transaction_{isolation,read_only,deferrable} under another name.
        match (follow, session_characteristics(after)) {
            (true, Some(sets)) => f.tracked.extend(sets),
            _ => f.features.push(SessionFeature::UntrackedSet(
                "SESSION CHARACTERISTICS".into(),
            )),
        }
        return;
    }
    if !is_tracked(&name, extras, follow) {
        let label = if name.eq_ignore_ascii_case("time") {
            "timezone".to_string()
        } else {
            name.to_ascii_lowercase()
        };
        if label == "timezone" {
            return; // SET TIME ZONE is reported as TimeZone
        }
        f.features.push(SessionFeature::UntrackedSet(label));
        return;
    }
    if is_reported(&name) {
        return; // followed through ParameterStatus
    }
    let after = trim_space_start(after);
    let value = if let Some(v) = after.strip_prefix(b"=") {
        v
    } else {
        match after.split_first_chunk::<2>() {
            Some((to, v))
                if to.eq_ignore_ascii_case(b"to")
                    && !v.first().is_some_and(|&c| is_ident_byte(c)) =>
            {
                v
            }
            // Neither `TO` nor `=`: a syntax error, the server changes nothing.
            _ => return,
        }
    };
    let name = name.to_ascii_lowercase();
    match std::str::from_utf8(value.trim_ascii()) {
        Ok(v) if v.eq_ignore_ascii_case("default") => f.tracked.push(TrackedSet::Reset { name }),
        Ok(v) => f.tracked.push(TrackedSet::Set {
            name,
            value: v.to_owned(),
        }),
        // Text poolguard cannot keep as a value (not UTF-8): the server is reset after the
        // client's transaction instead, like any parameter poolguard does not track.
        Err(_) => f.features.push(SessionFeature::UntrackedSet(name)),
    }
}

/// The word at the start of `s` and what follows it (leading whitespace trimmed), if a
/// whitespace ends the word.
fn first_word(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = s.iter().position(|&c| is_space(c))?;
    let (word, tail) = s.split_at(end);
    Some((word, trim_space_start(tail)))
}

/// `s` without leading whitespace (vertical tab included).
fn trim_space_start(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&c| !is_space(c)).unwrap_or(s.len());
    s.get(start..).unwrap_or_default()
}

/// Case-insensitive substring test. Runs on every plain statement, so it jumps between the
/// places where the first byte matches (SIMD search) and compares only there. `needle` must
/// start with an ASCII letter.
fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, _)) = needle.split_first() else {
        return true;
    };
    debug_assert!(first.is_ascii_alphabetic());
    // A match must start at or before this index.
    let Some(last_start) = hay.len().checked_sub(needle.len()) else {
        return false;
    };
    let starts = hay.get(..=last_start).unwrap_or_default();
    memchr::memchr2_iter(
        first.to_ascii_lowercase(),
        first.to_ascii_uppercase(),
        starts,
    )
    .any(|i| {
        hay.get(i..)
            .and_then(|h| h.get(..needle.len()))
            .is_some_and(|h| h.eq_ignore_ascii_case(needle))
    })
}

mod set_config;

#[cfg(test)]
mod tests;
