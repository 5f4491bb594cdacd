//! Unit tests of [`super`]: what the scan finds in MySQL text, read every way.

use super::*;

fn pin_of(sql: &str) -> Option<String> {
    scan(sql.as_bytes(), || false).pin
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
fn text_read_differently_by_sql_mode_or_charset_pins() {
    let reason = |sql: &[u8], multibyte: bool| scan(sql, || multibyte).pin;
    let differs =
        Some("text that reads differently under another sql_mode or character set".to_owned());
    // NO_BACKSLASH_ESCAPES: the string ends at `\'` and the assignment runs.
    assert_eq!(
        reason(b"SELECT 'a\\'; SET @x := 1; SELECT '", false),
        differs
    );
    // ANSI_QUOTES: `"a\"` is an identifier, without escapes.
    assert_eq!(
        reason(b"SELECT \"a\\\"; SET sql_log_bin = 0; SELECT \"", false),
        differs
    );
    // gbk: 0xBF 0x5C is one character; its second byte is no escape (and under
    // NO_BACKSLASH_ESCAPES none would be).
    let gbk = b"SELECT '\xbf\x5c'; SET sql_log_bin = 0; SELECT ''";
    assert_eq!(reason(gbk, true), differs);
    // A backtick as a second byte does not end a quoted identifier.
    let backtick = b"SELECT 1 AS `\x81\x60`; SET @h = 1; SELECT `x`";
    assert_eq!(reason(backtick, true), differs);
    // A client in utf8mb4 that never changed its character set: the bytes are read as
    // they are (0x81 0x60 is no character there) ...
    assert_eq!(reason(backtick, false), None);
    // ... unless the text changes it first.
    let names = [&b"SET NAMES gbk; "[..], backtick].concat();
    assert_eq!(reason(&names, false), differs);
    // A lead byte before a quote stands alone inside a string (no valid second byte),
    // while in an identifier it takes the next byte whatever it is: a text that fooled
    // every loose reading at once (review).
    for lead in [0xbf_u8, 0x81] {
        let mut t = b"SELECT 1 AS `".to_vec();
        t.extend_from_slice(&[lead, 0x60]);
        t.extend_from_slice(b"`, _binary'");
        t.push(lead);
        t.extend_from_slice(b"'; SET @x := 1; -- `'");
        assert_eq!(reason(&t, true), differs, "lead {lead:#x}");
    }
    // A client that set utf8mb4 is read as it is: no pin for ordinary multibyte text.
    assert_eq!(
        reason(
            "SET NAMES utf8mb4; INSERT INTO t VALUES ('5€'); SELECT LAST_INSERT_ID()".as_bytes(),
            false
        ),
        None
    );
    // Escapes and multibyte text that read the same every way do not pin.
    for (sql, multibyte) in [
        (&b"INSERT INTO t VALUES ('O\\'Brien', 'C:\\\\x')"[..], false),
        ("SELECT '日本', `ñandú` FROM t".as_bytes(), true),
        (b"SET NAMES gbk", false),
    ] {
        assert_eq!(
            reason(sql, multibyte),
            None,
            "{}",
            String::from_utf8_lossy(sql)
        );
    }
    assert!(ascii_in_multibyte(28) && ascii_in_multibyte(1052) && ascii_in_multibyte(0));
    assert!(!ascii_in_multibyte(45) && !ascii_in_multibyte(224) && !ascii_in_multibyte(8));
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
    let f = scan(b"SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci, sql_mode = 'ANSI,STRICT_ALL_TABLES', @@session.time_zone='+00:00'", || false);
    assert_eq!(f.pin, None);
    let keys: Vec<&str> = f.settings.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, vec!["names", "sql_mode", "time_zone"]);
    assert_eq!(
        f.settings[1].stmt,
        "SET sql_mode = 'ANSI,STRICT_ALL_TABLES'"
    );
    assert_eq!(f.settings[2].stmt, "SET @@session.time_zone='+00:00'");
    let f = scan(
        b"SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        || false,
    );
    assert_eq!(f.settings[0].key, "session transaction isolation");
    let f = scan(b"/*!40101 SET character_set_client = utf8 */", || false);
    assert_eq!(f.settings[0].key, "character_set_client");
    assert_eq!(f.pin, None);
}

#[test]
fn use_kill_and_insert_id() {
    assert_eq!(
        scan(b"USE `other db`", || false).use_schema.as_deref(),
        Some("other db")
    );
    assert_eq!(
        scan(b"use bank;", || false).use_schema.as_deref(),
        Some("bank")
    );
    let f = scan(b"USE a; SELECT 1", || false);
    assert!(f.schema_unknown && f.use_schema.is_none());
    assert_eq!(
        scan(b"KILL QUERY 1073741825", || false).kill,
        Some(Kill {
            query_only: true,
            id: Some(1073741825)
        })
    );
    assert_eq!(
        scan(b"kill 12", || false).kill,
        Some(Kill {
            query_only: false,
            id: Some(12)
        })
    );
    assert_eq!(scan(b"KILL QUERY ID 5", || false).kill, None);
    assert_eq!(
        scan(b"KILL CONNECTION_ID()", || false).kill,
        Some(Kill {
            query_only: false,
            id: None
        })
    );
    assert!(scan(b"SELECT LAST_INSERT_ID()", || false).reads_insert_id);
    assert!(scan(b"select @@IDENTITY", || false).reads_insert_id);
    assert!(!scan(b"SELECT 'LAST_INSERT_ID()'", || false).reads_insert_id);
    let text = b"SELECT CONNECTION_ID(), connection_id ( ), 'CONNECTION_ID()' -- CONNECTION_ID()";
    let calls = scan(text, || false).connection_id_calls;
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
        let _ = scan(sql, || false);
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
        let _ = scan(&sql.as_bytes()[..cut], || false);
    }
    let f = scan(
        "SET sql_mode='ÉTÉ', time_zone = '日本'".as_bytes(),
        || false,
    );
    assert_eq!(f.settings[0].stmt, "SET sql_mode='ÉTÉ'");
    assert_eq!(f.settings[1].stmt, "SET time_zone = '日本'");
    assert_eq!(
        scan("USE ñandú".as_bytes(), || false).use_schema.as_deref(),
        Some("ñandú")
    );
    assert_eq!(
        scan("USE `日本`".as_bytes(), || false)
            .use_schema
            .as_deref(),
        Some("日本")
    );
    assert!(pin_of("SET @é = 1").unwrap().contains("@é"));
    assert_eq!(
        scan("KILL 12 /* ü */".as_bytes(), || false).kill,
        Some(Kill {
            query_only: false,
            id: Some(12)
        })
    );
    // A value cut mid-character at the end of the text is replaced, not sliced.
    let f = scan(b"SET sql_mode = caf\xc3", || false);
    assert_eq!(f.settings[0].stmt, "SET sql_mode = caf\u{fffd}");
    let f = scan(b"SET time_zone = '\xe6\x97", || false);
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
        let f = scan(&sql, || false);
        for s in &f.settings {
            assert!(s.stmt.starts_with("SET "));
        }
    }
}
