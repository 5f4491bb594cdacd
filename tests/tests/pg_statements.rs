//! Prepared statements under transaction pooling behave as the server's own: a client's Parse
//! is planned against today's catalog (fresh parameter and result types after a schema change,
//! on every server of the pool once one reported its copy stale), a name cannot be defined
//! twice, SQL `EXECUTE` reaches a statement prepared at protocol level, and a notification names
//! the notifying client as that client knows itself. Found by asyncpg's own test suite
//! (`test_cache_invalidation.py`, `test_codecs.py`, `test_prepare.py`, `test_listeners.py`).
//!
//! Message-level clients (tests/src/rawpg.rs), so each test decides exactly which messages form
//! a transaction; pools of one or two servers, with clients holding servers in open
//! transactions, so which server runs what is decided by the test, not by chance.

use bytes::BytesMut;
use poolguard_e2e::rawpg::{Msg, RawPg};
use poolguard_e2e::*;
use poolguard_pg::frontend;

fn spec(pool_size: usize) -> PoolSpec {
    PoolSpec {
        pool_size,
        budget: pool_size + 2,
        limits: "acquire_timeout = \"30s\"".into(),
        ..PoolSpec::default()
    }
}

fn login(proxy: &Proxy) -> RawPg {
    RawPg::login(proxy.port, USER, PASSWORD, DB)
}

/// Sends a simple query; its messages up to ReadyForQuery. Panics on an error.
fn run(c: &mut RawPg, sql: &str) -> Vec<Msg> {
    let mut m = BytesMut::new();
    frontend::query(&mut m, sql);
    c.send(&m);
    let msgs = c.read_until_ready();
    if let Some(e) = msgs.iter().find(|m| m.tag == b'E') {
        panic!("{sql}: {:?} {:?}", e.sqlstate(), e.field(b'M'));
    }
    msgs
}

/// The first column of the first DataRow, as text.
fn first_value(msgs: &[Msg]) -> Option<String> {
    let row = msgs.iter().find(|m| m.tag == b'D')?;
    let len = i32::from_be_bytes(row.body[2..6].try_into().unwrap());
    (len >= 0).then(|| String::from_utf8_lossy(&row.body[6..6 + len as usize]).into_owned())
}

fn backend_pid(c: &mut RawPg) -> String {
    first_value(&run(c, "SELECT pg_backend_pid()")).expect("a pid")
}

/// Bind (text parameters) + Execute of a named statement.
fn bind_execute(m: &mut BytesMut, stmt: &str, params: &[&str]) {
    let mut rest = Vec::new();
    rest.extend_from_slice(&0i16.to_be_bytes()); // parameter formats: all text
    rest.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        rest.extend_from_slice(&(p.len() as i32).to_be_bytes());
        rest.extend_from_slice(p.as_bytes());
    }
    rest.extend_from_slice(&0i16.to_be_bytes()); // result formats: all text
    frontend::bind_with_rest(m, b"", stmt, &rest);
    frontend::execute(m, b"", 0);
}

/// Sends `m` followed by Sync; the messages up to ReadyForQuery.
fn sync(c: &mut RawPg, mut m: BytesMut) -> Vec<Msg> {
    frontend::sync(&mut m);
    c.send(&m);
    c.read_until_ready()
}

fn error_of(msgs: &[Msg]) -> Option<String> {
    msgs.iter().find(|m| m.tag == b'E').and_then(Msg::sqlstate)
}

/// Parse + Describe(statement) + Sync: the parameter type OIDs, and the result column type
/// OIDs, the server described.
fn describe(c: &mut RawPg, name: &str, sql: &str) -> (Vec<u32>, Vec<u32>) {
    let mut m = BytesMut::new();
    frontend::parse_message(&mut m, name, sql, &[]);
    frontend::describe(&mut m, frontend::STATEMENT, name);
    let msgs = sync(c, m);
    assert_eq!(error_of(&msgs), None, "{sql}: {msgs:?}");
    let params = msgs
        .iter()
        .find(|m| m.tag == b't')
        .expect("ParameterDescription");
    let n = u16::from_be_bytes(params.body[..2].try_into().unwrap()) as usize;
    let param_types = (0..n)
        .map(|i| u32::from_be_bytes(params.body[2 + 4 * i..6 + 4 * i].try_into().unwrap()))
        .collect();
    let mut column_types = Vec::new();
    if let Some(rows) = msgs.iter().find(|m| m.tag == b'T') {
        let n = u16::from_be_bytes(rows.body[..2].try_into().unwrap());
        let mut at = 2;
        for _ in 0..n {
            at += rows.body[at..].iter().position(|b| *b == 0).unwrap() + 1; // name
            let oid = &rows.body[at + 6..at + 10]; // after table oid (4) and column (2)
            column_types.push(u32::from_be_bytes(oid.try_into().unwrap()));
            at += 18;
        }
    }
    (param_types, column_types)
}

const INT4: u32 = 23;
const TEXT: u32 = 25;
const DATE: u32 = 1082;
const TIME: u32 = 1083;

#[test]
fn a_schema_change_is_seen_by_the_next_prepare_on_every_server() {
    let pg = sandbox(20);
    let proxy = Proxy::start(&pg, &spec(2));
    let mut admin = login(&proxy);
    run(
        &mut admin,
        "CREATE TABLE t (a int, b int); INSERT INTO t VALUES (1, 2)",
    );
    let (mut c1, mut c2) = (login(&proxy), login(&proxy));
    // Both servers prepare "SELECT * FROM t": c1 holds one in a transaction while c2's
    // statement runs on the other, then c1 runs it on its own.
    run(&mut c1, "BEGIN");
    let held = backend_pid(&mut c1);
    let mut m = BytesMut::new();
    frontend::parse_message(&mut m, "s", "SELECT * FROM t", &[]);
    bind_execute(&mut m, "s", &[]);
    let msgs = sync(&mut c2, m);
    assert_eq!(error_of(&msgs), None);
    assert_eq!(first_value(&msgs).as_deref(), Some("1"));
    let mut m = BytesMut::new();
    frontend::parse_message(&mut m, "s", "SELECT * FROM t", &[]);
    bind_execute(&mut m, "s", &[]);
    assert_eq!(error_of(&sync(&mut c1, m)), None);
    assert_eq!(backend_pid(&mut c1), held);
    run(&mut c1, "COMMIT");

    run(
        &mut admin,
        "ALTER TABLE t ALTER COLUMN b SET DATA TYPE text",
    );

    // A new prepare is described as the table is now (c3 keeps that server) ...
    let mut c3 = login(&proxy);
    run(&mut c3, "BEGIN");
    assert_eq!(
        describe(&mut c3, "s", "SELECT * FROM t").1,
        vec![INT4, TEXT]
    );
    // ... and a statement prepared before the change fails on the other server, as it does
    // directly (the driver's cue to prepare again).
    let mut m = BytesMut::new();
    bind_execute(&mut m, "s", &[]);
    assert_eq!(error_of(&sync(&mut c2, m)).as_deref(), Some("0A000"));
    run(&mut c3, "COMMIT");
    // ... and prepared again it runs, here on the one server c2's new Parse did not reach:
    // c1 holds a server while c2 prepares, c3 holds that one while c2 executes.
    run(&mut c1, "BEGIN");
    let first = backend_pid(&mut c1);
    let mut m = BytesMut::new();
    frontend::close(&mut m, frontend::STATEMENT, "s");
    frontend::parse_message(&mut m, "s", "SELECT * FROM t", &[]);
    assert_eq!(error_of(&sync(&mut c2, m)), None);
    run(&mut c3, "BEGIN");
    let second = backend_pid(&mut c3);
    assert_ne!(first, second);
    run(&mut c1, "COMMIT");
    let mut m = BytesMut::new();
    bind_execute(&mut m, "s", &[]);
    let msgs = sync(&mut c2, m);
    assert_eq!(error_of(&msgs), None, "{msgs:?}");
    assert_eq!(first_value(&msgs).as_deref(), Some("1"));
    assert_eq!(backend_pid(&mut c2), first);
    run(&mut c3, "COMMIT");
}

#[test]
fn a_prepare_infers_parameter_types_from_the_catalog_of_now() {
    let pg = sandbox(20);
    let proxy = Proxy::start(&pg, &spec(1));
    let mut c = login(&proxy);
    run(&mut c, "CREATE TABLE u (v date)");
    let insert = "INSERT INTO u VALUES ($1)";
    assert_eq!(describe(&mut c, "i", insert).0, vec![DATE]);
    let mut m = BytesMut::new();
    frontend::close(&mut m, frontend::STATEMENT, "i");
    assert_eq!(error_of(&sync(&mut c, m)), None);
    run(&mut c, "DROP TABLE u; CREATE TABLE u (v time)");
    // Another client prepares the same text: the server infers from the new table.
    let mut other = login(&proxy);
    assert_eq!(describe(&mut other, "j", insert).0, vec![TIME]);
    assert_eq!(describe(&mut c, "i", insert).0, vec![TIME]);
}

#[test]
fn a_statement_name_is_defined_once_and_only_when_its_parse_succeeds() {
    let pg = sandbox(20);
    let proxy = Proxy::start(&pg, &spec(1));
    let mut c = login(&proxy);
    let parse = |c: &mut RawPg, name: &str, sql: &str| {
        let mut m = BytesMut::new();
        frontend::parse_message(&mut m, name, sql, &[]);
        error_of(&sync(c, m))
    };
    assert_eq!(parse(&mut c, "d", "SELECT 1"), None);
    assert_eq!(parse(&mut c, "d", "SELECT 1").as_deref(), Some("42P05"));
    assert_eq!(parse(&mut c, "d", "SELECT 2").as_deref(), Some("42P05"));
    // A failed Parse defines nothing: the name is free again.
    assert_eq!(parse(&mut c, "bad", "SELEC 1").as_deref(), Some("42601"));
    assert_eq!(parse(&mut c, "bad", "SELECT 3"), None);
    let mut m = BytesMut::new();
    bind_execute(&mut m, "bad", &[]);
    assert_eq!(first_value(&sync(&mut c, m)).as_deref(), Some("3"));
    // Closed, the name can be defined again.
    let mut m = BytesMut::new();
    frontend::close(&mut m, frontend::STATEMENT, "d");
    frontend::parse_message(&mut m, "d", "SELECT 4", &[]);
    bind_execute(&mut m, "d", &[]);
    assert_eq!(first_value(&sync(&mut c, m)).as_deref(), Some("4"));
}

#[test]
fn sql_execute_reaches_a_statement_prepared_at_protocol_level() {
    let pg = sandbox(20);
    let proxy = Proxy::start(&pg, &spec(2));
    // o1 holds one server (x) throughout: everything c does first runs on the other.
    let mut o1 = login(&proxy);
    run(&mut o1, "BEGIN");
    let x = backend_pid(&mut o1);
    let mut c = login(&proxy);
    let mut m = BytesMut::new();
    frontend::parse_message(&mut m, "foobar", "SELECT 41 + $1::int", &[]);
    assert_eq!(error_of(&sync(&mut c, m)), None);
    // Simple query.
    assert_eq!(
        first_value(&run(&mut c, "EXECUTE foobar(1)")).as_deref(),
        Some("42")
    );
    assert_eq!(
        first_value(&run(&mut c, "execute FOOBAR (2);")).as_deref(),
        Some("43")
    );
    // Extended, unnamed and named (the way asyncpg's fetchval runs it).
    let mut m = BytesMut::new();
    frontend::parse_message(&mut m, "", "EXECUTE foobar(3)", &[]);
    bind_execute(&mut m, "", &[]);
    assert_eq!(first_value(&sync(&mut c, m)).as_deref(), Some("44"));
    let mut m = BytesMut::new();
    frontend::parse_message(&mut m, "outer", "EXECUTE foobar(4)", &[]);
    assert_eq!(error_of(&sync(&mut c, m)), None);
    // Now on x, which saw neither Parse: o2 holds the other server.
    let mut o2 = login(&proxy);
    run(&mut o2, "BEGIN");
    assert_ne!(backend_pid(&mut o2), x);
    run(&mut o1, "COMMIT");
    let mut m = BytesMut::new();
    bind_execute(&mut m, "outer", &[]);
    let msgs = sync(&mut c, m);
    assert_eq!(first_value(&msgs).as_deref(), Some("45"), "{msgs:?}");
    assert_eq!(backend_pid(&mut c), x);
    run(&mut o2, "COMMIT");
    // Deallocated, the name means nothing, as on the server.
    run(&mut c, "DEALLOCATE foobar");
    let mut m = BytesMut::new();
    frontend::query(&mut m, "EXECUTE foobar(1)");
    c.send(&m);
    assert_eq!(error_of(&c.read_until_ready()).as_deref(), Some("26000"));
}

#[test]
fn a_notification_names_the_notifier_as_it_knows_itself() {
    let pg = sandbox(20);
    let proxy = Proxy::start(&pg, &spec(2));
    let mut listener = login(&proxy);
    run(&mut listener, "LISTEN chan");
    let mut notifier = login(&proxy);
    run(&mut notifier, "NOTIFY chan, 'hello'");
    let n = std::iter::from_fn(|| listener.read())
        .find(|m| m.tag == b'A')
        .expect("a notification");
    let pid = i32::from_be_bytes(n.body[..4].try_into().unwrap());
    assert_eq!(pid, notifier.backend_pid);
    run(&mut notifier, "SELECT pg_notify('chan', 'again')");
    let n = std::iter::from_fn(|| listener.read())
        .find(|m| m.tag == b'A')
        .expect("a notification");
    assert_eq!(
        i32::from_be_bytes(n.body[..4].try_into().unwrap()),
        notifier.backend_pid
    );
    // The listener's own NOTIFY names the listener (it arrives before ReadyForQuery).
    let msgs = run(&mut listener, "NOTIFY chan, 'self'");
    let n = msgs.iter().find(|m| m.tag == b'A').expect("a notification");
    assert_eq!(
        i32::from_be_bytes(n.body[..4].try_into().unwrap()),
        listener.backend_pid
    );
}

#[test]
fn a_refused_parse_is_answered_at_once_as_the_server_answers_its_errors() {
    // asyncpg prepares with Parse + Describe + Flush and waits for the answer before any Sync.
    let pg = sandbox(20);
    let proxy = Proxy::start(&pg, &spec(1));
    let mut c = login(&proxy);
    let mut m = BytesMut::new();
    frontend::parse_message(&mut m, "dup", "SELECT 1", &[]);
    assert_eq!(error_of(&sync(&mut c, m)), None);
    let mut m = BytesMut::new();
    frontend::parse_message(&mut m, "dup", "SELECT 1", &[]);
    frontend::describe(&mut m, frontend::STATEMENT, "dup");
    frontend::flush(&mut m);
    c.send(&m);
    let e = c.read().expect("an answer before any Sync");
    assert_eq!(e.sqlstate().as_deref(), Some("42P05"), "{e:?}");
    // The Sync that ends the batch gets ReadyForQuery alone: the error was reported once.
    let mut m = BytesMut::new();
    frontend::sync(&mut m);
    c.send(&m);
    let rest = c.read_until_ready();
    assert_eq!(rest.iter().map(|m| m.tag).collect::<Vec<_>>(), vec![b'Z']);
    assert_eq!(first_value(&run(&mut c, "SELECT 7")).as_deref(), Some("7"));
}
