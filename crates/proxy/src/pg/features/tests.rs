//! Unit tests of [`super`]: what the scan finds in SQL, for every policy and encoding (most by
//! one reading, [`scan_as`]; [`scan`]'s comparison of readings has tests of its own).

use super::*;

fn follow(sql: &str) -> Findings {
    let lexing = Lexing {
        follow_sets: true,
        ..Lexing::default()
    };
    scan_as(sql.as_bytes(), lexing, &[])
}

#[test]
fn dropping_or_renaming_a_database_is_seen() {
    let db = |sql: &str| scan_str(sql, &[]).drops_database;
    assert_eq!(db("DROP DATABASE testdb"), Some("testdb".into()));
    assert_eq!(db("drop database if exists TestDB;"), Some("testdb".into()));
    assert_eq!(
        db("DROP DATABASE \"MyDB\" WITH (FORCE)"),
        Some("MyDB".into())
    );
    // A quoted name with a space is not recognised: the server answers as before.
    assert_eq!(db("DROP DATABASE \"My DB\""), None);
    assert_eq!(db("ALTER DATABASE old RENAME TO new"), Some("old".into()));
    assert_eq!(db("ALTER DATABASE old SET work_mem = '1MB'"), None);
    assert_eq!(db("DROP TABLE testdb"), None);
}

#[test]
fn under_follow_every_session_set_is_tracked_and_special_forms_are_right() {
    let set = |n: &str, v: &str| TrackedSet::Set {
        name: n.into(),
        value: v.into(),
    };
    assert_eq!(
        follow("SET statement_timeout = 5").tracked,
        [set("statement_timeout", "5")]
    );
    assert_eq!(
        follow("SET SESSION work_mem TO '64MB'").tracked,
        [set("work_mem", "'64MB'")]
    );
    assert_eq!(
        follow("RESET lock_timeout").tracked,
        [TrackedSet::Reset {
            name: "lock_timeout".into()
        }]
    );
    assert!(follow("SET LOCAL statement_timeout = 5").tracked.is_empty());
    assert_eq!(
        follow("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY, NOT DEFERRABLE").tracked,
        [
            set("default_transaction_isolation", "'repeatable read'"),
            set("default_transaction_read_only", "'on'"),
            set("default_transaction_deferrable", "'off'"),
        ]
    );
    assert_eq!(
        follow("SET SCHEMA 'app'").tracked,
        [set("search_path", "'app'")]
    );
    // Reported parameters travel through ParameterStatus; nothing to record.
    for sql in [
        "SET TIME ZONE 'UTC'",
        "SET NAMES 'LATIN1'",
        "SET DateStyle = ISO",
    ] {
        let f = follow(sql);
        assert!(
            f.tracked.is_empty() && f.features.is_empty(),
            "{sql}: {f:?}"
        );
    }
    // No `name = value` to replay: these pin (under follow) instead.
    for sql in [
        "SET XML OPTION DOCUMENT",
        "SET SESSION AUTHORIZATION bob",
        "RESET ALL",
    ] {
        assert!(!follow(sql).features.is_empty(), "{sql}");
    }
    // Without follow, only reported and extra parameters are tracked (the `reset` policy).
    assert_eq!(
        scan_as(b"SET statement_timeout = 5", Lexing::default(), &[]).features,
        [SessionFeature::UntrackedSet("statement_timeout".into())]
    );
}

// From the fuzzing work (found while writing the pg_features target and the libpg_query
// differential cases).
#[test]
fn set_value_starting_with_a_multibyte_character_does_not_panic() {
    // Sliced `after[..2]` inside the 3-byte '€' of a tracked parameter's value.
    // Without TO or = it is a syntax error in PostgreSQL: nothing is recorded.
    let f = scan_str("SET search_path €", &["search_path".into()]);
    assert!(f.tracked.is_empty());
    assert!(scan_str("SET search_path é", &["search_path".into()])
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
    // Unterminated: the rest is quoted (PostgreSQL refuses the text).
    assert!(feats("SELECT $t$ ; LISTEN x").is_empty());
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
fn substring_search_ignores_case_and_reaches_both_ends() {
    assert!(contains_ignore_case(b"TEMP", b"temp"));
    assert!(contains_ignore_case(b"create Temp table", b"temp"));
    assert!(contains_ignore_case(
        b"select pg_Advisory_LOCK",
        b"advisory_lock"
    ));
    assert!(!contains_ignore_case(b"tem", b"temp"));
    assert!(!contains_ignore_case(b"select attempt_x", b"tempt_y"));
    assert!(!contains_ignore_case(b"", b"temp"));
}

fn scan_str(sql: &str, extras: &[String]) -> Findings {
    scan_as(sql.as_bytes(), Lexing::default(), extras)
}

fn feats(sql: &str) -> Vec<SessionFeature> {
    scan_str(sql, &["search_path".to_string()]).features
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
        b"SELECT abalance FROM pgbench_accounts WHERE aid = $1"
    ));
    assert!(is_plain(b"  update t set x = 1;"));
    assert!(!is_plain(b"SELECT 1; LISTEN x"));
    assert!(!is_plain(b"SELECT pg_advisory_lock(1)"));
    assert!(!is_plain(b"SELECT * INTO TEMP t FROM x"));
    assert!(!is_plain(b"SET x = 1"));
    assert!(!is_plain(b"/* c */ LISTEN x"));
}

/// The word-at-a-time search says what a byte-by-byte one says, wherever a mark falls
/// against the eight-byte words (and in the tail after the last whole word).
#[test]
fn the_mark_search_agrees_with_a_byte_by_byte_one() {
    let marks = [
        ";",
        "advisory_lock",
        "TEMP",
        "Notify",
        "temp",
        "\u{1b}",
        "{",
        "pP",
    ];
    let by_byte = |body: &[u8]| {
        let lower = body.to_ascii_lowercase();
        lower.contains(&b';')
            || [&b"advisory_lock"[..], b"temp", b"notify"]
                .iter()
                .any(|m| lower.windows(m.len()).any(|w| w == *m))
    };
    for mark in marks {
        for before in 0..20 {
            for after in 0..10 {
                let body = format!("{}{mark}{}", "x".repeat(before), "q".repeat(after));
                assert_eq!(
                    has_marks(body.as_bytes()),
                    by_byte(body.as_bytes()),
                    "{body:?}"
                );
            }
        }
    }
    for plain in [
        "",
        "s",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
        "kpy KPY",
    ] {
        assert!(!has_marks(plain.as_bytes()), "{plain:?}");
    }
    assert!(has_marks("SELECT é; SELECT 1".as_bytes()));
    assert!(has_marks("é".repeat(9).as_bytes()) == by_byte("é".repeat(9).as_bytes()));
}

#[test]
fn tracked_extras_are_captured() {
    let f = scan_str(
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
fn deallocate_all_detected() {
    assert!(scan_str("DEALLOCATE ALL", &[]).deallocate_all);
    assert!(scan_str("deallocate prepare all;", &[]).deallocate_all);
    assert!(scan_str("DISCARD ALL", &[]).deallocate_all);
    assert!(!scan_str("DEALLOCATE p1", &[]).deallocate_all);
}

/// The issue: a two-byte character right after the parameter name was sliced in half.
#[test]
fn multibyte_text_after_set_is_never_sliced() {
    let extras = ["search_path".to_string()];
    // No TO or `=`: PostgreSQL refuses it (syntax error), so nothing is tracked.
    let f = scan_str(
        "BEGIN; INSERT INTO t VALUES (42); SET search_path 'é';",
        &extras,
    );
    assert_eq!(f, Findings::default());
    let f = scan_str("SET search_path TO 'é'", &extras);
    assert_eq!(
        f.tracked,
        vec![TrackedSet::Set {
            name: "search_path".into(),
            value: "'é'".into()
        }]
    );
    for sql in [
        "SET search_path é",
        "SET é = 1",
        "SET search_path=é",
        "RESET é",
        "SET search_path TOé",
    ] {
        let _ = scan_str(sql, &extras);
    }
    assert!(scan_str("SET search_path TOmorrow", &extras)
        .tracked
        .is_empty());
}

#[test]
fn text_in_other_encodings_is_scanned_as_bytes() {
    let extras = ["search_path".to_string()];
    // LATIN1 "café" and KOI8-R "привет": not UTF-8, still scanned.
    let latin1 = b"SELECT 'caf\xe9'; LISTEN x";
    assert_eq!(
        scan_as(latin1, Lexing::default(), &extras).features,
        vec![SessionFeature::Listen]
    );
    let koi8 = b"INSERT INTO t VALUES ('\xd0\xd2\xc9\xd7\xc5\xd4')";
    assert_eq!(
        scan_as(koi8, Lexing::default(), &extras),
        Findings::default()
    );
    // A tracked value poolguard cannot hold as text: the server is reset instead.
    let f = scan_as(
        b"SET search_path TO 'sch\xe9ma'",
        Lexing::default(),
        &extras,
    );
    assert_eq!(
        f.features,
        vec![SessionFeature::UntrackedSet("search_path".into())]
    );
    assert!(f.tracked.is_empty());
}

#[test]
fn shift_jis_trail_bytes_do_not_end_strings() {
    // In Shift JIS, "ソ" is 0x83 0x5C: its trail byte is a backslash. In an E'' string a
    // byte scanner would take it for an escape and run the string on over the LISTEN.
    let sql = b"SELECT E'\x83\x5c'; LISTEN x; SELECT ''";
    let sjis = Lexing {
        encoding: Encoding::of("SJIS"),
        ..Lexing::default()
    };
    assert_eq!(
        scan_as(sql, sjis, &[]).features,
        vec![SessionFeature::Listen]
    );
    // After "ソ" a `$` continues an identifier (the server reads the converted text, where
    // the character is a letter): no dollar quote opens to hide the LISTEN.
    let sql = b"SELECT 1 AS \x83\x5c$a$; LISTEN x; SELECT $a$$a$";
    assert_eq!(
        scan_as(sql, sjis, &[]).features,
        vec![SessionFeature::Listen]
    );
    // A dollar quote's tag may hold such a character whole.
    let sql = b"SELECT $\x83\x5c$; LISTEN x; $\x83\x5c$";
    assert!(scan_as(sql, sjis, &[]).features.is_empty());
    // The same bytes in an ASCII-safe encoding: the backslash escapes the quote.
    let utf8 = scan_as(
        b"SELECT E'\\''; LISTEN x; SELECT ''",
        Lexing::default(),
        &[],
    );
    assert_eq!(utf8.features, vec![SessionFeature::Listen]);
    assert_eq!(Encoding::of("shift_jis_2004"), Encoding::Sjis);
    assert_eq!(Encoding::of("Big5"), Encoding::TwoByte);
    assert_eq!(Encoding::of("LATIN1"), Encoding::AsciiSafe);
    for body in [
        &b"SELECT 1"[..],
        b"select pg_advisory_LOCK(1)",
        b"CREATE TEMP TABLE t()",
        b"SELECT 1; SELECT 2",
        b"NOTIFY x",
        b"SELECT \x1b",
        b"tem",
        b"advisory_loc",
        b"temp",
        b"p",
        b"kyp",
        b"CREATE TEMPORARY TABLE t()",
        b"select PG_ADVISORY_XACT_LOCK(1)",
        b"select 1 -- notif",
        b"LISTEN x; NoTiFy",
        b"select 'tmp', 'emp', 'advisory-lock', 'notif y'",
    ] {
        let old = memchr::memchr(b';', body).is_some()
            || contains_ignore_case(body, b"advisory_lock")
            || contains_ignore_case(body, b"temp")
            || contains_ignore_case(body, b"notify");
        assert_eq!(has_marks(body), old, "{}", String::from_utf8_lossy(body));
    }
    assert_eq!(
        Encoding::of(&format!("{}SJIS", "x".repeat(40))),
        Encoding::AsciiSafe
    );
}

#[test]
fn quotes_comments_and_identifiers_that_hid_statements() {
    // Nested comments end at their outermost close.
    assert_eq!(
        feats("/* a /* b */ c */ LISTEN x"),
        vec![SessionFeature::Listen]
    );
    // `$` inside an identifier does not open a dollar quote.
    assert_eq!(
        feats("SELECT a$b$; LISTEN x; SELECT $b$"),
        vec![SessionFeature::Listen]
    );
    assert!(feats("SELECT $tag$ ; LISTEN x $tag$").is_empty());
    assert!(feats("SELECT $1; SELECT 2").is_empty());
    // With standard_conforming_strings off, backslashes escape in plain strings.
    let off = Lexing {
        standard_conforming_strings: false,
        ..Lexing::default()
    };
    assert_eq!(
        scan_as(b"SELECT 'it\\''; LISTEN x; SELECT ''", off, &[]).features,
        vec![SessionFeature::Listen]
    );
    assert_eq!(
        feats("DECLARE c CURSOR\nWITH\n HOLD FOR SELECT 1"),
        vec![SessionFeature::HoldCursor]
    );
}

proptest::proptest! {
    #[test]
    fn scanning_any_bytes_never_panics(
        sql in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        enc in proptest::sample::select(vec!["UTF8", "SJIS", "BIG5", "GB18030"]),
    ) {
        let lexing = Lexing { encoding: Encoding::of(enc), standard_conforming_strings: sql.len() % 2 == 0, follow_sets: sql.len() % 3 == 0, any_encoding: false };
        let _ = scan_as(&sql, lexing, &["search_path".to_string()]);
        let mut with_set = b"SET search_path ".to_vec();
        with_set.extend_from_slice(&sql);
        let _ = scan_as(&with_set, lexing, &["search_path".to_string()]);
    }
}

#[test]
fn a_session_level_set_config_is_session_state_and_a_local_one_is_not() {
    let sql = "SELECT set_config('search_path', 'a', false)";
    assert!(!is_plain(sql.as_bytes()));
    assert_eq!(feats(sql), vec![SessionFeature::SetConfig]);
    assert!(feats("select set_config('x.y', $1, true)").is_empty());
    for sql in [
        "UPDATE pg_settings SET setting = 'x' WHERE name = 'search_path'",
        "SELECT U&\"set\\005fconfig\"('search_path', 'x', false)",
    ] {
        assert!(!is_plain(sql.as_bytes()), "{sql}");
        assert_eq!(feats(sql), vec![SessionFeature::SetConfig], "{sql}");
    }
    assert_eq!(
        feats("DO $$ BEGIN PERFORM set_config('search_path', 'x', false); END $$"),
        vec![SessionFeature::DoBlock]
    );
    // The mark's letter in ordinary SQL costs a closer look, not a report.
    assert!(is_plain(
        b"SELECT abalance FROM pgbench_accounts WHERE aid = 1"
    ));
}

#[test]
fn a_keyword_glued_to_a_comment_or_quote_is_still_read() {
    assert_eq!(
        feats("DO'begin perform set_config(''search_path'',''x'',false); end'"),
        vec![SessionFeature::DoBlock]
    );
    assert_eq!(
        feats("DO/**/$$ begin null; end $$"),
        vec![SessionFeature::DoBlock]
    );
    for sql in [
        "SET/**/search_path = x",
        "LISTEN/**/chan",
        "PREPARE/**/p AS SELECT 1",
    ] {
        assert!(
            matches!(feats(sql).as_slice(), [SessionFeature::UntrackedSet(_)]),
            "{sql}: {:?}",
            feats(sql)
        );
    }
    // A vertical tab separates words as a space does.
    assert_eq!(
        feats("SET\u{b}statement_timeout = 1"),
        vec![SessionFeature::UntrackedSet("statement_timeout".into())]
    );
    assert!(feats("SELECT/**/1 AS x").is_empty());
}

#[test]
fn text_that_reads_differently_under_other_rules_is_reported() {
    // By the client's parameters (strings with escapes) the SET is inside a string; by the
    // other reading it runs. Which one the server uses is not known for sure (a pipelined or
    // undone SET, a statement prepared earlier): reported either way.
    let off = Lexing {
        standard_conforming_strings: false,
        follow_sets: true,
        ..Lexing::default()
    };
    let hidden = b"SELECT 'a\\'; SET search_path = x; SELECT ''";
    for lexing in [
        off,
        Lexing {
            follow_sets: true,
            ..Lexing::default()
        },
    ] {
        let f = scan(hidden, lexing, &[]);
        assert!(
            f.features.contains(&SessionFeature::LexingChanged),
            "{lexing:?}: {f:?}"
        );
    }
    // A backslash that escapes nothing that matters reads the same both ways.
    let f = follow("INSERT INTO t VALUES ('C:\\path', E'a\\nb'); SELECT 1");
    assert!(
        !f.features.contains(&SessionFeature::LexingChanged),
        "{f:?}"
    );
    // Shift JIS text read as UTF-8 by the parameters, once the client changed its encoding:
    // "ソ" (0x83 0x5C) before `$` hides a SET in one layout and not in the other.
    let sjis_text = b"SELECT 1 AS \x83\x5c$a$; SET search_path = x; SELECT $a$$a$";
    let utf8 = Lexing {
        follow_sets: true,
        ..Lexing::default()
    };
    assert!(!scan(sjis_text, utf8, &[])
        .features
        .contains(&SessionFeature::LexingChanged));
    let changed = Lexing {
        any_encoding: true,
        ..utf8
    };
    assert!(scan(sjis_text, changed, &[])
        .features
        .contains(&SessionFeature::LexingChanged));
    // UTF-8 text with no keyword where the layouts disagree: nothing reported.
    let f = scan("SELECT 'ソ', 'é'; SELECT 2".as_bytes(), changed, &[]);
    assert!(
        !f.features.contains(&SessionFeature::LexingChanged),
        "{f:?}"
    );
}

#[test]
fn a_change_of_the_encoding_is_noted() {
    for sql in [
        "SET client_encoding = 'SJIS'",
        "set local client_encoding to 'BIG5'; select 1",
        "SET NAMES 'BIG5'",
        "SET/**/client_encoding = 'SJIS'",
        "reset client_encoding",
        "SELECT set_config('client_encoding', 'GBK', true)",
        "SELECT 1; SET client_encoding = 'UTF8'",
        "DISCARD ALL",
        "RESET ALL",
        "SELECT set_config('client_' || 'encoding', 'SJIS', true)",
        "DO $$ BEGIN END $$",
    ] {
        assert!(follow(sql).changes_encoding, "{sql}");
    }
    for sql in [
        "SET search_path = x; SELECT 1",
        "SET standard_conforming_strings = off",
        "SELECT 'client_encoding'; SELECT 2",
        "RESET search_path",
        "DISCARD PLANS",
    ] {
        assert!(!follow(sql).changes_encoding, "{sql}");
    }
}

#[test]
fn identifiers_that_start_like_keywords_and_two_phase_commit_create_no_state() {
    for sql in [
        "not_a_valid_statement; SELECT 1",
        "set_1 = 2; SELECT 1",
        "PREPARE TRANSACTION 'x'",
        "COMMIT PREPARED 'x'; SELECT 1",
    ] {
        assert!(feats(sql).is_empty(), "{sql}: {:?}", feats(sql));
    }
    assert_eq!(
        feats("PREPARE p AS SELECT 1"),
        vec![SessionFeature::SqlPrepare]
    );
    // A keyword glued to a comment is still not let through.
    assert!(!feats("LISTEN/**/x").is_empty());
}
