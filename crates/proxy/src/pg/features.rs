//! Recognising SQL that creates session state transaction pooling cannot carry.
//!
//! The check runs on every simple Query and on each Parse (once per prepared statement), so it
//! is a cheap lexical scan: statements are split on `;` outside quotes and comments, and only
//! each statement's leading keywords are read, plus a case-insensitive search for the session
//! advisory-lock functions. It errs on the side of reporting: a false positive costs a
//! DISCARD ALL or a pin, a false negative could leak state between clients.

use crate::pg::params::is_reported;

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
}

/// Scans SQL text. `extras` are the operator's `track_extra_parameters`.
pub fn scan(sql: &str, extras: &[String]) -> Findings {
    let mut f = Findings::default();
    if is_plain(sql) {
        return f;
    }
    // Session-level forms (pg_advisory_lock, pg_try_advisory_lock_shared, ...) contain
    // "advisory_lock"; the transaction-level ones say "advisory_xact_lock" and end at commit.
    if contains_ignore_case(sql, "advisory_lock") {
        f.features.push(SessionFeature::AdvisoryLock);
    }
    for stmt in statements(sql) {
        let words: Vec<&str> = stmt.split_whitespace().take(6).collect();
        let w = |i: usize| {
            words
                .get(i)
                .map(|s| s.to_ascii_uppercase())
                .unwrap_or_default()
        };
        match w(0).as_str() {
            "LISTEN" => f.features.push(SessionFeature::Listen),
            "PREPARE" => f.features.push(SessionFeature::SqlPrepare),
            "LOAD" => f.features.push(SessionFeature::Load),
            "DECLARE" if contains_ignore_case(stmt, "with hold") => {
                f.features.push(SessionFeature::HoldCursor)
            }
            "CREATE" => {
                // CREATE [OR REPLACE] [GLOBAL | LOCAL] {TEMP | TEMPORARY} ...: tables, views,
                // sequences; OR REPLACE only comes with views.
                let at = if w(1) == "OR" && w(2) == "REPLACE" {
                    3
                } else {
                    1
                };
                if is_temp_at(&w, at) {
                    f.features.push(SessionFeature::TempTable);
                }
            }
            // SELECT ... INTO [GLOBAL | LOCAL] TEMP t makes a temporary table too.
            "SELECT" | "WITH" if selects_into_temp(stmt) => {
                f.features.push(SessionFeature::TempTable)
            }
            "DEALLOCATE" => {
                let target = if w(1) == "PREPARE" { w(2) } else { w(1) };
                if target.trim_end_matches(';') == "ALL" {
                    f.deallocate_all = true;
                }
            }
            "DISCARD" if w(1).trim_end_matches(';') == "ALL" => f.deallocate_all = true,
            "SET" => classify_set(stmt, extras, &mut f),
            "RESET" => {
                let name = words.get(1).copied().unwrap_or("").trim_end_matches(';');
                if name.eq_ignore_ascii_case("all") {
                    f.features
                        .push(SessionFeature::UntrackedSet("ALL (RESET ALL)".into()));
                } else if is_tracked(name, extras) {
                    if !is_reported(name) {
                        f.tracked.push(TrackedSet::Reset {
                            name: name.to_ascii_lowercase(),
                        });
                    }
                } else {
                    f.features
                        .push(SessionFeature::UntrackedSet(name.to_ascii_lowercase()));
                }
            }
            _ => {}
        }
    }
    f
}

/// The common case, decided without allocating: one statement (at most a trailing `;`) that
/// starts with a keyword that cannot create session state, and no advisory-lock call or
/// temporary table in its text.
fn is_plain(sql: &str) -> bool {
    let s = sql.trim_start();
    let word_end = s
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(s.len());
    let first = &s[..word_end];
    let harmless = [
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
    if !harmless.iter().any(|k| k.eq_ignore_ascii_case(first)) {
        return false;
    }
    let body = s.trim_end().trim_end_matches(';');
    !body.contains(';')
        && !contains_ignore_case(body, "advisory_lock")
        && !contains_ignore_case(body, "temp")
}

/// `[GLOBAL | LOCAL] {TEMP | TEMPORARY}` at word `at` (`w` gives uppercased words).
fn is_temp_at(w: &impl Fn(usize) -> String, at: usize) -> bool {
    let temp = |i: usize| matches!(w(i).as_str(), "TEMP" | "TEMPORARY");
    temp(at) || (matches!(w(at).as_str(), "GLOBAL" | "LOCAL") && temp(at + 1))
}

/// True if the statement has `INTO [GLOBAL | LOCAL] {TEMP | TEMPORARY}` anywhere (the INTO of a
/// SELECT may follow any number of words; one inside a string only costs a false positive).
fn selects_into_temp(stmt: &str) -> bool {
    let words: Vec<String> = stmt
        .split_whitespace()
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let w = |i: usize| words.get(i).cloned().unwrap_or_default();
    (0..words.len()).any(|i| words[i] == "INTO" && is_temp_at(&w, i + 1))
}

fn is_tracked(name: &str, extras: &[String]) -> bool {
    is_reported(name) || extras.iter().any(|e| e.eq_ignore_ascii_case(name))
}

fn classify_set(stmt: &str, extras: &[String], f: &mut Findings) {
    // SET [SESSION | LOCAL] name { TO | = } value
    let rest = stmt.trim_start()[3..].trim_start();
    let (local, rest) = match first_word(rest) {
        Some(w) if w.eq_ignore_ascii_case("local") => (true, rest[w.len()..].trim_start()),
        Some(w) if w.eq_ignore_ascii_case("session") => (false, rest[w.len()..].trim_start()),
        _ => (false, rest),
    };
    if local {
        return; // ends with the transaction
    }
    let name_end = rest
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(rest.len());
    let name = &rest[..name_end];
    if name.eq_ignore_ascii_case("transaction") || name.eq_ignore_ascii_case("constraints") {
        return; // transaction-scoped forms
    }
    if !is_tracked(name, extras) {
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
    if is_reported(name) {
        return; // followed through ParameterStatus
    }
    let after = rest[name_end..].trim_start();
    let value = if let Some(v) = after.strip_prefix('=') {
        v
    } else if after
        .get(..2)
        .is_some_and(|kw| kw.eq_ignore_ascii_case("to"))
    {
        // `get`, not `[..2]`: the value may start with a multi-byte character, and slicing
        // inside it panicked (found by fuzzing: `SET search_path €`).
        &after[2..]
    } else {
        after
    };
    let value = value.trim().trim_end_matches(';').trim();
    if value.eq_ignore_ascii_case("default") {
        f.tracked.push(TrackedSet::Reset {
            name: name.to_ascii_lowercase(),
        });
    } else {
        f.tracked.push(TrackedSet::Set {
            name: name.to_ascii_lowercase(),
            value: value.to_owned(),
        });
    }
}

fn first_word(s: &str) -> Option<&str> {
    let end = s.find(char::is_whitespace)?;
    Some(&s[..end])
}

/// Case-insensitive substring test. Runs on every plain statement, so it jumps between the
/// places where the first byte matches (SIMD search) and compares only there. `needle` must
/// start with an ASCII letter.
fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    debug_assert!(n.first().is_some_and(u8::is_ascii_alphabetic));
    if h.len() < n.len() {
        return false;
    }
    // A match must start at or before this index.
    let starts = &h[..=h.len() - n.len()];
    memchr::memchr2_iter(n[0].to_ascii_lowercase(), n[0].to_ascii_uppercase(), starts)
        .any(|i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// The statements of a SQL string, split on `;` outside quotes, dollar quotes and comments.
fn statements(sql: &str) -> Vec<&str> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut start) = (0, 0);
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' => {
                let q = b[i];
                // E'...' (escape string syntax): a backslash escapes the next byte, so `E'\''`
                // does not end at its second quote. Without this, the rest of the text was
                // taken for a string and the statements in it were never read.
                let escapes = q == b'\''
                    && i > 0
                    && b[i - 1].eq_ignore_ascii_case(&b'e')
                    && (i < 2 || !is_ident_byte(b[i - 2]));
                i += 1;
                while i < b.len() && b[i] != q {
                    if escapes && b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'$' if i == 0 || !is_ident_byte(b[i - 1]) => {
                // $tag$ ... $tag$, with PostgreSQL's rules: a `$` inside an identifier
                // (`a$b$`) or a parameter (`$1`) starts no quote, and an unterminated quote runs
                // to the end of the text (PostgreSQL refuses such text, so nothing in it runs).
                // Both used to differ: `a$b$; LISTEN x; ...$b$` hid the LISTEN, and each
                // unterminated `$t$` searched the rest of the text (quadratic time).
                if let Some(tag) = dollar_tag(&b[i..]) {
                    i = match find_bytes(&b[i + tag.len()..], tag) {
                        Some(close) => i + tag.len() + close + tag.len() - 1,
                        None => b.len(),
                    };
                }
            }
            b';' => {
                out.push(sql[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    let last = sql.get(start..).unwrap_or("").trim();
    if !last.is_empty() {
        out.push(last);
    }
    out.retain(|s| !s.is_empty());
    out.iter().map(|s| strip_leading_comments(s)).collect()
}

/// Bytes that continue an identifier in PostgreSQL's lexer (`ident_cont`), non-ASCII included.
fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// The dollar-quote delimiter (`$$` or `$tag$`) at the start of `b`, if there is one: the tag
/// starts with a letter, `_` or non-ASCII byte and continues with those or digits.
fn dollar_tag(b: &[u8]) -> Option<&[u8]> {
    let tag_len = b[1..]
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80))?;
    let starts_ok = tag_len == 0 || !b[1].is_ascii_digit();
    (starts_ok && b[1 + tag_len] == b'$').then(|| &b[..tag_len + 2])
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

fn strip_leading_comments(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.find('\n').map_or("", |i| &rest[i..]);
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.find("*/").map_or("", |i| &rest[i + 2..]);
        } else {
            return s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substring_search_ignores_case_and_reaches_both_ends() {
        assert!(contains_ignore_case("TEMP", "temp"));
        assert!(contains_ignore_case("create Temp table", "temp"));
        assert!(contains_ignore_case(
            "select pg_Advisory_LOCK",
            "advisory_lock"
        ));
        assert!(!contains_ignore_case("tem", "temp"));
        assert!(!contains_ignore_case("select attempt_x", "tempt_y"));
        assert!(!contains_ignore_case("", "temp"));
    }

    fn feats(sql: &str) -> Vec<SessionFeature> {
        scan(sql, &["search_path".to_string()]).features
    }

    #[test]
    fn recognises_each_feature() {
        assert_eq!(feats("LISTEN chan"), vec![SessionFeature::Listen]);
        assert_eq!(
            feats("select pg_advisory_lock(1)"),
            vec![SessionFeature::AdvisoryLock]
        );
        assert_eq!(
            feats("SELECT pg_try_advisory_lock_shared(1)"),
            vec![SessionFeature::AdvisoryLock]
        );
        assert!(feats("SELECT pg_advisory_xact_lock(1)").is_empty());
        assert_eq!(
            feats("BEGIN; DECLARE c CURSOR WITH HOLD FOR SELECT 1; COMMIT"),
            vec![SessionFeature::HoldCursor]
        );
        assert!(feats("DECLARE c CURSOR FOR SELECT 1").is_empty());
        assert_eq!(
            feats("create temp table t(x int)"),
            vec![SessionFeature::TempTable]
        );
        assert_eq!(
            feats("CREATE LOCAL TEMPORARY TABLE t(x int)"),
            vec![SessionFeature::TempTable]
        );
        assert!(feats("CREATE TABLE t(x int)").is_empty());
        assert_eq!(
            feats("PREPARE p AS SELECT 1"),
            vec![SessionFeature::SqlPrepare]
        );
        assert_eq!(
            feats("SET statement_timeout = 5"),
            vec![SessionFeature::UntrackedSet("statement_timeout".into())]
        );
        assert!(feats("SET LOCAL statement_timeout = 5").is_empty());
        assert!(feats("SET TimeZone = 'UTC'").is_empty());
        assert!(feats("SET TIME ZONE 'UTC'").is_empty());
        assert!(feats("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").is_empty());
        assert!(feats("SELECT 'LISTEN x; SET a = 1'").is_empty());
        assert!(feats("-- LISTEN x\nSELECT 1").is_empty());
        assert!(feats("SELECT $$ LISTEN x; $$").is_empty());
    }

    #[test]
    fn plain_statements_take_the_fast_path_and_others_do_not() {
        assert!(is_plain(
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
        ));
        assert!(is_plain("  update t set x = 1;"));
        assert!(!is_plain("SELECT 1; LISTEN x"));
        assert!(!is_plain("SELECT pg_advisory_lock(1)"));
        assert!(!is_plain("SELECT * INTO TEMP t FROM x"));
        assert!(!is_plain("SET x = 1"));
        assert!(!is_plain("/* c */ LISTEN x"));
    }

    #[test]
    fn tracked_extras_are_captured() {
        let f = scan(
            "SET search_path TO myschema, public; RESET search_path",
            &["search_path".into()],
        );
        assert!(f.features.is_empty());
        assert_eq!(
            f.tracked,
            vec![
                TrackedSet::Set {
                    name: "search_path".into(),
                    value: "myschema, public".into()
                },
                TrackedSet::Reset {
                    name: "search_path".into()
                }
            ]
        );
    }

    #[test]
    fn set_value_starting_with_a_multibyte_character_does_not_panic() {
        // Sliced `after[..2]` inside the 3-byte '€' of a tracked parameter's value.
        let f = scan("SET search_path €", &["search_path".into()]);
        assert_eq!(
            f.tracked,
            vec![TrackedSet::Set {
                name: "search_path".into(),
                value: "€".into()
            }]
        );
        assert!(scan("SET search_path é", &["search_path".into()])
            .features
            .is_empty());
    }

    #[test]
    fn escape_strings_do_not_hide_the_statements_after_them() {
        // `E'\''` is one string; read as `E'\'` + `'...`, it swallowed the LISTEN.
        assert_eq!(
            feats(r"SELECT E'\''; LISTEN x"),
            vec![SessionFeature::Listen]
        );
        assert_eq!(
            feats(r"SELECT e'\\'; LISTEN x"),
            vec![SessionFeature::Listen]
        );
        // A plain string's backslash escapes nothing (standard_conforming_strings).
        assert_eq!(feats(r"SELECT '\'; LISTEN x"), vec![SessionFeature::Listen]);
    }

    #[test]
    fn dollar_quotes_follow_postgres_lexing() {
        // `$b$` inside an identifier is not a delimiter: the LISTEN between runs.
        assert_eq!(
            feats("SELECT 1 AS a$b$; LISTEN x; SELECT 1 AS c$b$"),
            vec![SessionFeature::Listen]
        );
        // Parameters are not tags.
        assert_eq!(
            feats("PREPARE p AS SELECT $1$; LISTEN x; SELECT $1$"),
            vec![SessionFeature::SqlPrepare, SessionFeature::Listen]
        );
        assert!(feats("SELECT $a$ ; $b$ ; LISTEN x $a$").is_empty());
        // Unterminated: the rest is quoted (PostgreSQL refuses the text), and it takes linear
        // time: 200,000 distinct unterminated tags used to search the rest of the text each.
        assert!(feats("SELECT $t$ ; LISTEN x").is_empty());
        let many: String = (0..200_000).map(|i| format!("$t{i}$ ")).collect();
        let started = std::time::Instant::now();
        let _ = scan(&format!("SELECT 1; {many}"), &[]);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn every_temporary_relation_is_found() {
        for sql in [
            "SELECT 1 AS x INTO TEMP t",
            "select * into temporary table t from x",
            "WITH x AS (SELECT 1) SELECT * INTO LOCAL TEMP t FROM x",
            "CREATE OR REPLACE TEMP VIEW v AS SELECT 1",
            "CREATE TEMP SEQUENCE s",
        ] {
            assert_eq!(feats(sql), vec![SessionFeature::TempTable], "{sql}");
        }
        assert!(feats("SELECT * INTO t FROM temp_src").is_empty());
        assert!(feats("CREATE OR REPLACE VIEW temp AS SELECT 1").is_empty());
    }

    #[test]
    fn deallocate_all_detected() {
        assert!(scan("DEALLOCATE ALL", &[]).deallocate_all);
        assert!(scan("deallocate prepare all;", &[]).deallocate_all);
        assert!(scan("DISCARD ALL", &[]).deallocate_all);
        assert!(!scan("DEALLOCATE p1", &[]).deallocate_all);
    }
}
