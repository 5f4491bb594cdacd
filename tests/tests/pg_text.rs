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
