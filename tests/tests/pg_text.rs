//! SQL text through the PostgreSQL door, as bytes: multibyte characters where poolguard reads
//! the text (its session-state scanner), and clients whose `client_encoding` is not UTF-8.
//! Against a real PostgreSQL with one server connection in transaction mode, so the next
//! client always gets the server the previous one used.

use std::process::Output;

use poolguard_e2e::*;

fn one_server(front: &str) -> PoolSpec {
    PoolSpec {
        pool_size: 1,
        budget: 2,
        front: front.to_string(),
        ..PoolSpec::default()
    }
}

fn psql_utf8(port: u16, sql: &str) -> Output {
    run_pg(
        psql_command(port)
            .env("PGCLIENTENCODING", "UTF8")
            .arg("-c")
            .arg(sql),
    )
}

/// What a client that comes next sees: (rows in t, its own transaction id if one is open).
fn next_client_sees(port: u16) -> String {
    let out = psql(
        port,
        "SELECT count(*), pg_current_xact_id_if_assigned() FROM t",
    );
    assert!(out.status.success(), "next client failed: {}", stderr(&out));
    stdout(&out)
}

/// The issue: `SET search_path 'é'` after an INSERT in an open transaction panicked the session
/// (a byte slice inside the two-byte "é"). Now the client gets PostgreSQL's own answer, and
/// the next client on the only server connection sees neither the row nor a transaction.
#[test]
fn a_two_byte_character_after_set_gets_an_answer_not_a_panic() {
    let pg = sandbox(20);
    pg.psql(DB, "CREATE TABLE t (x int); ALTER TABLE t OWNER TO app")
        .expect("create table");
    let proxy = Proxy::start(
        &pg,
        &one_server("track_extra_parameters = [\"search_path\"]"),
    );

    // The exact statement: PostgreSQL answers it with a syntax error (SET needs TO or
    // `=`), which the client must receive, instead of a dropped connection.
    let a = psql_utf8(
        proxy.port,
        "BEGIN; INSERT INTO t VALUES (42); SET search_path 'é';",
    );
    let err = stderr(&a);
    assert!(!a.status.success(), "the statement cannot succeed");
    assert!(
        err.contains("syntax error"),
        "A got no proper answer: {err}"
    );
    assert!(
        !err.contains("closed the connection") && !err.contains("XX000"),
        "A was dropped: {err}"
    );
    assert_eq!(next_client_sees(proxy.port), "0|");

    // The valid form works: A sees its own setting, then leaves without committing.
    let a = psql_utf8(
        proxy.port,
        "BEGIN; INSERT INTO t VALUES (42); SET search_path TO 'é'; SHOW search_path",
    );
    assert!(a.status.success(), "{}", stderr(&a));
    assert_eq!(stdout(&a), "\"é\"");
    assert_eq!(next_client_sees(proxy.port), "0|");
    // A's setting did not follow its server to the next client.
    let b = psql(proxy.port, "SHOW search_path");
    assert_eq!(stdout(&b), "\"$user\", public", "{}", stderr(&b));
    assert!(
        !proxy.log().contains("panicked"),
        "a session panicked:\n{}",
        proxy.log()
    );
}

const LATIN1_TEXT: (&str, &[u8], &str) = (
    "LATIN1",
    b"caf\xe9 cr\xe8me br\xfbl\xe9e",
    "café crème brûlée",
);
/// "привет, мир" in KOI8-R.
const KOI8R_TEXT: (&str, &[u8], &str) = (
    "KOI8R",
    b"\xd0\xd2\xc9\xd7\xc5\xd4, \xcd\xc9\xd2",
    "привет, мир",
);

/// psql on database `intl` with a client encoding, running a script given as raw bytes.
fn psql_encoded(port: u16, encoding: &str, script: &[u8], dir: &std::path::Path) -> Output {
    let path = dir.join(format!("{encoding}-{port}.sql"));
    std::fs::write(&path, script).unwrap();
    run_pg(
        psql_command(port)
            .env("PGCLIENTENCODING", encoding)
            .args(["-d", "intl", "-f"])
            .arg(&path),
    )
}

fn script(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Clients whose client_encoding is LATIN1 or KOI8R, on a UTF-8 database: psql (simple
/// protocol), psycopg (simple, unnamed extended, named prepared statements), and a raw client
/// whose statement *name* is not UTF-8. Everything goes through one server connection, so
/// each client's encoding must be set on it before its transaction, and what each reads back
/// through poolguard must be what the same client reads on a direct connection.
#[test]
fn clients_in_latin1_and_koi8r_round_trip_their_text() {
    let pg = sandbox(20);
    pg.psql(
        "postgres",
        "CREATE DATABASE intl ENCODING 'UTF8' TEMPLATE template0 OWNER app",
    )
    .expect("create database");
    pg.psql(
        "intl",
        "CREATE TABLE words (id int PRIMARY KEY, w text); ALTER TABLE words OWNER TO app",
    )
    .expect("create table");
    let port = free_port();
    let spec = PoolSpec {
        budget: 3,
        ..one_server("")
    };
    let config = format!(
        "{}\n[[databases]]\nname = \"intl\"\nbackend = \"pg\"\npool_mode = \"transaction\"\npool_size = 1\nmax_overflow = 0\n",
        config_for(&pg, port, &spec)
    );
    let proxy = Proxy::start_with(&config, port);
    let dir = tempfile::tempdir().unwrap();

    for (i, (encoding, bytes, utf8)) in [LATIN1_TEXT, KOI8R_TEXT].into_iter().enumerate() {
        let id = (i + 1) * 10;
        // psql through poolguard: insert, then read back in the same client encoding.
        let insert = script(&[
            format!("INSERT INTO words VALUES ({id}, '").as_bytes(),
            bytes,
            b"');\nBEGIN;\nSELECT w FROM words WHERE w = '",
            bytes,
            b"';\nCOMMIT;\n",
        ]);
        let out = psql_encoded(proxy.port, encoding, &insert, dir.path());
        assert!(out.status.success(), "{encoding}: {}", stderr(&out));
        assert_eq!(
            out.stdout.trim_ascii(),
            bytes,
            "{encoding}: read back through poolguard"
        );
        // Stored as the right characters, seen by a UTF-8 client directly.
        let stored = pg
            .psql("intl", &format!("SELECT w FROM words WHERE id = {id}"))
            .unwrap();
        assert_eq!(stored.trim(), utf8, "{encoding}: stored text");
        // The same read, through poolguard and directly, gives the same bytes.
        let read = format!(
            "SELECT id, w FROM words WHERE id = {id} OR id = {} ORDER BY id;\n",
            id + 1
        );
        let via = psql_encoded(proxy.port, encoding, read.as_bytes(), dir.path());
        let direct = psql_encoded(pg.port(), encoding, read.as_bytes(), dir.path());
        assert!(
            via.status.success() && direct.status.success(),
            "{}",
            stderr(&via)
        );
        assert_eq!(
            via.stdout, direct.stdout,
            "{encoding}: through poolguard vs direct"
        );

        // psycopg, in the same encoding.
        let url = format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/intl", proxy.port);
        let py = run_within(
            std::process::Command::new("python3")
                .arg(client_script("pg_psycopg_encodings.py"))
                .args([&url, encoding, utf8, &(id + 100).to_string()]),
            std::time::Duration::from_secs(120),
        );
        assert!(
            py.status.success() && stdout(&py).ends_with("OK"),
            "psycopg {encoding}: {}\n{}",
            stdout(&py),
            stderr(&py)
        );
    }

    // A raw client in LATIN1 whose prepared statement's name is not UTF-8: prepared in one
    // transaction, used in the next (poolguard prepares it again under its own name).
    let mut c = rawpg::RawPg::login(proxy.port, USER, PASSWORD, "intl");
    let mut m = bytes::BytesMut::new();
    poolguard_pg::frontend::query(&mut m, "SET client_encoding = 'LATIN1'");
    c.send(&m);
    let answer = c.read_until_ready();
    assert!(answer.iter().all(|m| m.tag != b'E'), "{answer:?}");
    let name: &[u8] = b"st\xe9";
    let mut sql = b"SELECT w FROM words WHERE w = '".to_vec();
    sql.extend_from_slice(LATIN1_TEXT.1);
    sql.push(b'\'');
    for round in 0..2 {
        let mut m = bytes::BytesMut::new();
        if round == 0 {
            poolguard_pg::frontend::parse_message(&mut m, name, &sql, &[]);
        }
        poolguard_pg::frontend::bind_with_rest(&mut m, b"p\xe9", name, &[0, 0, 0, 0, 0, 0]);
        poolguard_pg::frontend::execute(&mut m, b"p\xe9", 1);
        poolguard_pg::frontend::describe(&mut m, poolguard_pg::frontend::STATEMENT, name);
        poolguard_pg::frontend::close(&mut m, poolguard_pg::frontend::PORTAL, b"p\xe9");
        poolguard_pg::frontend::sync(&mut m);
        c.send(&m);
        let answer = c.read_until_ready();
        assert!(
            answer.iter().all(|m| m.tag != b'E'),
            "round {round}: {answer:?}"
        );
        let row = answer.iter().find(|m| m.tag == b'D').expect("a row");
        assert!(
            row.body.ends_with(LATIN1_TEXT.1),
            "round {round}: {:?}",
            row.body
        );
        // Between the two rounds a UTF-8 client uses the only server connection.
        let b = psql_encoded(proxy.port, "UTF8", b"SHOW client_encoding", dir.path());
        assert_eq!(stdout(&b), "UTF8", "{}", stderr(&b));
    }
}
