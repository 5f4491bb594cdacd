//! Transaction pooling that real drivers survive: named prepared statements across server
//! switches, parameters that follow their client, pinning rules, cancel routing under load.
//! Pools are deliberately tiny (1-2 servers) so clients constantly change servers.

#![allow(clippy::err_expect)] // tokio-postgres values are not all Debug

use std::time::Duration;

use poolguard_e2e::*;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

async fn connect_to(conn_str: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(conn_str, NoTls)
        .await
        .expect("connect through poolguard");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

async fn scalar(c: &Client, sql: &str) -> Result<Option<String>, tokio_postgres::Error> {
    for m in c.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(r) = m {
            return Ok(r.get(0).map(str::to_owned));
        }
    }
    Ok(None)
}

fn code(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_owned()).unwrap_or_default()
}

fn spec(pool_size: usize, front: &str) -> PoolSpec {
    PoolSpec {
        pool_size,
        budget: pool_size + 2,
        front: front.into(),
        limits: "acquire_timeout = \"20s\"".into(),
        ..PoolSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_statement_names_different_texts_across_clients_and_servers() {
    let pg = sandbox(30);
    let proxy = Proxy::start(&pg, &spec(2, ""));
    let mut tasks = Vec::new();
    for i in 0..50i32 {
        let cs = proxy.conn_str();
        tasks.push(tokio::spawn(async move {
            let c = connect_to(&cs).await;
            // Every client's first statement is named "s0" by tokio-postgres, with its own text.
            let mine = c
                .prepare(&format!("SELECT $1::int * {i} + {i}"))
                .await
                .expect("prepare");
            let shared = c.prepare("SELECT $1::text || '!'").await.expect("prepare");
            for round in 0..20i32 {
                let row = c.query_one(&mine, &[&round]).await.expect("execute mine");
                assert_eq!(
                    row.get::<_, i32>(0),
                    round * i + i,
                    "client {i} round {round}"
                );
                let row = c
                    .query_one(&shared, &[&format!("c{i}")])
                    .await
                    .expect("execute shared");
                assert_eq!(row.get::<_, String>(0), format!("c{i}!"));
                if round % 5 == 0 {
                    // A transaction spanning several executes stays on one server.
                    c.batch_execute("BEGIN").await.unwrap();
                    let a = c.query_one(&mine, &[&1]).await.unwrap().get::<_, i32>(0);
                    let b = c.query_one(&mine, &[&2]).await.unwrap().get::<_, i32>(0);
                    c.batch_execute("COMMIT").await.unwrap();
                    assert_eq!((a, b), (2 * i, 3 * i));
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    // Both servers ended up with the statements they needed; the pool never grew.
    assert!(app_connections(&pg) <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_close_deallocate_and_errors_mid_pipeline() {
    let pg = sandbox(20);
    let proxy = Proxy::start(&pg, &spec(1, "max_prepared_statements = 2"));
    let c = connect_to(&proxy.conn_str()).await;
    // Five statements on a server that may keep two: each use may re-prepare after eviction.
    let stmts = {
        let mut v = Vec::new();
        for k in 0..5 {
            v.push(c.prepare(&format!("SELECT {k} + $1::int")).await.unwrap());
        }
        v
    };
    for round in 0..4 {
        for (k, s) in stmts.iter().enumerate() {
            let got: i32 = c.query_one(s, &[&round]).await.unwrap().get(0);
            assert_eq!(got, k as i32 + round);
        }
    }
    // The server never holds more than the bound of poolguard's statements.
    let other = connect_to(&proxy.conn_str()).await;
    let held: i64 = other
        .query_one(
            "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'poolguard_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        held <= 2,
        "server holds {held} poolguard statements, bound is 2"
    );

    // Dropping a statement (protocol Close) makes it unknown to this client only.
    let s = c.prepare("SELECT 'kept'").await.unwrap();
    drop(s);
    let again = c.prepare("SELECT 'kept'").await.unwrap();
    assert_eq!(
        c.query_one(&again, &[]).await.unwrap().get::<_, String>(0),
        "kept"
    );

    // An error in the middle of a pipeline: the failing statement errors, the rest of its
    // batch is skipped by the server, and the next batch works.
    let bad = c.prepare("SELECT 1 / $1::int").await.unwrap();
    let good = c.prepare("SELECT 40 + $1::int").await.unwrap();
    let (r1, r2) = tokio::join!(c.query_one(&bad, &[&0]), c.query_one(&good, &[&2]));
    assert_eq!(code(&r1.err().expect("division by zero")), "22012");
    assert_eq!(r2.unwrap().get::<_, i32>(0), 42);
    assert_eq!(
        c.query_one(&good, &[&1]).await.unwrap().get::<_, i32>(0),
        41
    );

    // DEALLOCATE ALL through SQL: every statement of this client is gone, and re-preparing works.
    c.batch_execute("DEALLOCATE ALL").await.unwrap();
    let fresh = c.prepare("SELECT 7 * $1::int").await.unwrap();
    assert_eq!(
        c.query_one(&fresh, &[&6]).await.unwrap().get::<_, i32>(0),
        42
    );
}

#[test]
fn pgbench_prepared_mode_through_two_servers() {
    let pg = sandbox(30);
    let proxy = Proxy::start(&pg, &spec(2, ""));
    let init = run_pg(
        std::process::Command::new("pgbench")
            .args(["-i", "-q", "-s", "1", "-h", "127.0.0.1", "-U", USER])
            .arg("-p")
            .arg(pg.port().to_string())
            .arg(DB),
    );
    assert!(init.status.success(), "{}", stderr(&init));
    let sampler = PeakSampler::start(&pg);
    let out = run_pg(
        std::process::Command::new("pgbench")
            .args([
                "-M",
                "prepared",
                "-c",
                "50",
                "-j",
                "2",
                "-t",
                "40",
                "-h",
                "127.0.0.1",
                "-U",
                USER,
            ])
            .arg("-p")
            .arg(proxy.port.to_string())
            .arg(DB),
    );
    let (peak, _) = sampler.finish();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("number of transactions actually processed: 2000/2000"),
        "{text}"
    );
    assert!(text.contains("number of failed transactions: 0"), "{text}");
    assert!(
        peak <= 2,
        "server saw {peak} connections from app, pool is 2"
    );
    eprintln!("pgbench -M prepared, 50 clients, pool 2: peak {peak} server connections");
}

#[test]
fn psycopg_and_node_named_statements_through_two_servers() {
    let pg = sandbox(30);
    let proxy = Proxy::start(&pg, &spec(2, ""));
    let out = std::process::Command::new("python3")
        .arg(client_script("pg_psycopg_prepared.py"))
        .arg(proxy.url())
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).ends_with("OK"), "{}", stdout(&out));
    let out = std::process::Command::new("node")
        .arg(client_script("node/pg_named.js"))
        .arg(proxy.url())
        .output()
        .expect("node");
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).ends_with("OK"), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_follow_their_client_on_a_shared_server() {
    let pg = sandbox(20);
    let proxy = Proxy::start(&pg, &spec(1, "track_extra_parameters = [\"search_path\"]"));
    let a = connect_to(&format!("{} application_name=alpha", proxy.conn_str())).await;
    let b = connect_to(&format!("{} application_name=beta", proxy.conn_str())).await;
    a.batch_execute("SET TimeZone = 'America/New_York'; SET DateStyle = 'SQL, DMY'; SET search_path = pg_catalog")
        .await
        .unwrap();
    b.batch_execute("SET TimeZone = 'Asia/Tokyo'")
        .await
        .unwrap();
    // One server, alternating clients: each always sees its own settings.
    for _ in 0..3 {
        assert_eq!(
            scalar(&a, "SHOW TimeZone").await.unwrap().as_deref(),
            Some("America/New_York")
        );
        assert_eq!(
            scalar(&b, "SHOW TimeZone").await.unwrap().as_deref(),
            Some("Asia/Tokyo")
        );
        assert_eq!(
            scalar(&a, "SHOW DateStyle").await.unwrap().as_deref(),
            Some("SQL, DMY")
        );
        assert_eq!(
            scalar(&b, "SHOW DateStyle").await.unwrap().as_deref(),
            Some("ISO, MDY")
        );
        assert_eq!(
            scalar(&a, "SHOW search_path").await.unwrap().as_deref(),
            Some("pg_catalog")
        );
        assert_eq!(
            scalar(&b, "SHOW search_path").await.unwrap().as_deref(),
            Some("\"$user\", public")
        );
        assert_eq!(
            scalar(&a, "SELECT current_setting('application_name')")
                .await
                .unwrap()
                .as_deref(),
            Some("alpha")
        );
        assert_eq!(
            scalar(&b, "SELECT current_setting('application_name')")
                .await
                .unwrap()
                .as_deref(),
            Some("beta")
        );
    }
    // RESET returns a tracked extra to the default for that client only.
    a.batch_execute("RESET search_path").await.unwrap();
    assert_eq!(
        scalar(&a, "SHOW search_path").await.unwrap().as_deref(),
        Some("\"$user\", public")
    );
    assert_eq!(app_connections(&pg), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinning_rules_keep_session_features_working() {
    let pg = sandbox(20);
    let proxy = Proxy::start(&pg, &spec(3, ""));
    // LISTEN pins: notifications keep arriving and the backend pid never changes.
    let listener = connect_to(&proxy.conn_str()).await;
    listener.batch_execute("LISTEN chan").await.unwrap();
    let first = scalar(&listener, "SELECT pg_backend_pid()").await.unwrap();
    let other = connect_to(&proxy.conn_str()).await;
    for _ in 0..3 {
        other.batch_execute("SELECT 1").await.unwrap();
        assert_eq!(
            scalar(&listener, "SELECT pg_backend_pid()").await.unwrap(),
            first
        );
    }
    // Session advisory lock pins: the lock stays with its holder.
    let locker = connect_to(&proxy.conn_str()).await;
    locker
        .batch_execute("SELECT pg_advisory_lock(42)")
        .await
        .unwrap();
    let held = scalar(
        &other,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 42",
    )
    .await
    .unwrap();
    assert_eq!(held.as_deref(), Some("1"));
    assert_eq!(
        scalar(&locker, "SELECT pg_advisory_unlock(42)")
            .await
            .unwrap()
            .as_deref(),
        Some("t"),
        "the lock is still owned by the same session"
    );
    // WITH HOLD cursors survive their transaction.
    let cursor = connect_to(&proxy.conn_str()).await;
    drop(listener);
    drop(locker);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cursor
        .batch_execute("BEGIN; DECLARE c CURSOR WITH HOLD FOR SELECT generate_series(1,3); COMMIT")
        .await
        .unwrap();
    other.batch_execute("SELECT 1").await.unwrap();
    assert_eq!(
        scalar(&cursor, "FETCH 1 FROM c").await.unwrap().as_deref(),
        Some("1")
    );
    assert!(proxy.log().contains("pinned"), "pins are logged");
}

/// `set_config(name, value, false)` sets a parameter for the session where no SET shows it
/// (psycopg's own suite does so): the client is pinned, so the setting stays its own and never
/// reaches the next client of that server (one server here: without the pin the next client
/// would get it); `set_config(..., true)` ends with its transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_level_set_config_stays_with_its_client() {
    let pg = sandbox(20);
    let proxy = Proxy::start(&pg, &spec(1, ""));
    let show = "SHOW default_transaction_read_only";
    let a = connect_to(&proxy.conn_str()).await;
    scalar(
        &a,
        "SELECT set_config('default_transaction_read_only', 'on', true)",
    )
    .await
    .unwrap();
    assert_eq!(scalar(&a, show).await.unwrap().as_deref(), Some("off"));
    scalar(
        &a,
        "SELECT set_config('default_transaction_read_only', 'on', false)",
    )
    .await
    .unwrap();
    assert_eq!(scalar(&a, show).await.unwrap().as_deref(), Some("on"));
    drop(a);
    let b = connect_to(&proxy.conn_str()).await;
    assert_eq!(
        scalar(&b, show).await.unwrap().as_deref(),
        Some("off"),
        "another client's set_config reached this one"
    );
    assert!(
        proxy.log().contains("set_config"),
        "the pin is logged with its reason"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_policy_refuses_session_features_clearly() {
    let pg = sandbox(20);
    let proxy = Proxy::start(&pg, &spec(1, "session_state = \"error\""));
    let c = connect_to(&proxy.conn_str()).await;
    for sql in [
        "LISTEN chan",
        "SELECT pg_advisory_lock(1)",
        "CREATE TEMP TABLE t(x int)",
        "SET statement_timeout = 1000",
    ] {
        let e = c.simple_query(sql).await.err().expect("refused");
        assert_eq!(code(&e), "0A000", "{sql}: {e}");
    }
    // The connection is fine and nothing leaked onto the server.
    assert_eq!(
        scalar(&c, "SHOW statement_timeout")
            .await
            .unwrap()
            .as_deref(),
        Some("0")
    );
    assert_eq!(
        scalar(
            &c,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        )
        .await
        .unwrap()
        .as_deref(),
        Some("0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_routing_under_load() {
    let pg = sandbox(30);
    let proxy = Proxy::start(&pg, &spec(4, ""));
    // 12 busy clients running short queries in a loop, and 3 clients whose long queries are
    // cancelled: only those three see 57014.
    let mut busy = Vec::new();
    for _ in 0..12 {
        let cs = proxy.conn_str();
        busy.push(tokio::spawn(async move {
            let c = connect_to(&cs).await;
            let mut errors = 0;
            for _ in 0..60 {
                if c.simple_query("SELECT pg_sleep(0.01)").await.is_err() {
                    errors += 1;
                }
            }
            errors
        }));
    }
    let mut victims = Vec::new();
    for _ in 0..3 {
        let c = connect_to(&proxy.conn_str()).await;
        let token = c.cancel_token();
        let q =
            tokio::spawn(async move { c.simple_query("SELECT pg_sleep(60)").await.map(|_| ()) });
        victims.push((token, q));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (token, _) in &victims {
        token.cancel_query(NoTls).await.unwrap();
    }
    for (_, q) in victims {
        let e = q.await.unwrap().err().expect("cancelled");
        assert_eq!(code(&e), "57014");
    }
    for b in busy {
        assert_eq!(b.await.unwrap(), 0, "a busy client's query was cancelled");
    }
}

/// A column's type changes under a prepared statement that clients share by text: the first
/// execution fails as it does on a direct connection ("cached plan must not change result
/// type"), and a client that prepares the statement again gets the new plan. Without the reset
/// poolguard does after that error, the server kept the stale statement and every new prepare
/// of the same text failed again, for as long as the server connection lived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_under_a_shared_statement_recovers_like_a_direct_connection() {
    let pg = sandbox(30);
    let proxy = Proxy::start(&pg, &spec(1, ""));
    let c = connect_to(&proxy.conn_str()).await;
    c.batch_execute("CREATE TABLE drift (a int, b int); INSERT INTO drift VALUES (1, 2)")
        .await
        .unwrap();
    let q = "SELECT * FROM drift";
    let stmt = c.prepare(q).await.unwrap();
    let rows = c.query(&stmt, &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, i32>(1), 2);
    c.batch_execute("ALTER TABLE drift ALTER COLUMN b SET DATA TYPE text")
        .await
        .unwrap();
    let e = c.query(&stmt, &[]).await.err().expect("the old plan fails");
    assert_eq!(e.code().map(|c| c.code()), Some("0A000"), "{e}");
    // Prepared again (as drivers do after that error): the new result type.
    let again = c.prepare(q).await.unwrap();
    let rows = c.query(&again, &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, String>(1), "2");
    // Another client with the same text gets it too.
    let d = connect_to(&proxy.conn_str()).await;
    let rows = d.query(q, &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, String>(1), "2");
}

/// Runs `hide` on a client of `proxy` (pool of 1), which must leave its session with
/// `search_path = hidden` in a way poolguard's reading may miss; then the next client must see
/// the default.
async fn hidden_set_stays_with_its_client(
    proxy: &Proxy,
    what: &str,
    hide: impl FnOnce(&mut poolguard_e2e::rawpg::RawPg) + Send + 'static,
) {
    let port = proxy.port;
    tokio::task::spawn_blocking(move || {
        let mut a = poolguard_e2e::rawpg::RawPg::login(port, USER, PASSWORD, DB);
        hide(&mut a);
        let answer = a.query("SHOW search_path").unwrap();
        assert_eq!(answer.rows[0][0].as_deref(), Some("hidden"));
    })
    .await
    .unwrap();
    let b = connect_to(&proxy.conn_str()).await;
    assert_eq!(
        scalar(&b, "SHOW search_path").await.unwrap().as_deref(),
        Some("\"$user\", public"),
        "a SET hidden by {what} reached another client"
    );
}

/// A change of how the server reads strings (`standard_conforming_strings`) with a message
/// pipelined behind it, sent before the server answered: by the old rule a SET in that
/// message is inside a string, by the server's new rule it runs. (Within one message the
/// server keeps the old rule to its end, as poolguard's reading does: checked here too.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_hidden_by_a_change_of_string_rules_stays_with_its_client() {
    let pg = sandbox(20);
    let proxy = Proxy::start(&pg, &spec(1, ""));
    hidden_set_stays_with_its_client(&proxy, "a change of string rules", |a| {
        let set = "SET standard_conforming_strings = on";
        // Old rule: `'a\'` escapes its quote and the string runs on. New rule: the string is
        // `a\`, and a SET follows.
        let rest = "SELECT 'a\\'; SET search_path = hidden; SELECT ''";
        a.query("SET standard_conforming_strings = off").unwrap();
        // One message: the server reads it all by the old rule (an unterminated string).
        let e = a.query(&format!("{set}; {rest}")).err().flatten();
        assert_eq!(e.and_then(|m| m.sqlstate()).as_deref(), Some("42601"));
        let mut m = bytes::BytesMut::new();
        poolguard_pg::frontend::query(&mut m, set);
        poolguard_pg::frontend::query(&mut m, rest);
        a.send(&m);
        for _ in 0..2 {
            let answer = a.read_until_ready();
            assert!(answer.iter().all(|m| m.tag != b'E'), "{answer:?}");
        }
    })
    .await;
}

/// In Shift JIS, "ソ" is 0x83 0x5C, and after it a `$` continues an identifier (the server
/// reads the text converted, where the character is a letter): a byte-wise reading would open
/// a dollar quote there and miss the SET behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_behind_a_shift_jis_identifier_is_seen() {
    let pg = sandbox(20);
    let proxy = Proxy::start(&pg, &spec(1, ""));
    hidden_set_stays_with_its_client(&proxy, "a Shift JIS identifier", |a| {
        a.query("SET client_encoding = 'SJIS'").unwrap();
        let sql = b"SELECT 1 AS \x83\x5c$a$; SET search_path = hidden; SELECT $a$$a$";
        let mut m = vec![b'Q'];
        m.extend_from_slice(&(sql.len() as i32 + 5).to_be_bytes());
        m.extend_from_slice(sql);
        m.push(0);
        a.send(&m);
        let answer = a.read_until_ready();
        assert!(answer.iter().all(|m| m.tag != b'E'), "{answer:?}");
    })
    .await;
}

/// A `SET LOCAL standard_conforming_strings = off` undone by a COMMIT pipelined before the
/// text behind it: the client's parameters still say off when the text is read, the server
/// reads it with the setting back on, and runs the SET that the old rule put in a string.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_hidden_behind_a_commit_that_undoes_a_set_local_stays_with_its_client() {
    let pg = sandbox(20);
    let proxy = Proxy::start(&pg, &spec(1, ""));
    hidden_set_stays_with_its_client(&proxy, "a COMMIT undoing a SET LOCAL", |a| {
        a.query("BEGIN").unwrap();
        a.query("SET LOCAL standard_conforming_strings = off")
            .unwrap();
        a.query("SELECT 1; SELECT 2").unwrap();
        let mut m = bytes::BytesMut::new();
        poolguard_pg::frontend::query(&mut m, "COMMIT");
        poolguard_pg::frontend::query(&mut m, "SELECT 'a\\'; SET search_path = hidden; SELECT ''");
        a.send(&m);
        for _ in 0..2 {
            let answer = a.read_until_ready();
            assert!(answer.iter().all(|m| m.tag != b'E'), "{answer:?}");
        }
    })
    .await;
}

/// A statement with more than 32,767 parameters: the protocol's count is an unsigned Int16,
/// up to 65,535, as PostgreSQL reads it (postgres.js's "big query body"); poolguard renames
/// and re-sends the Parse in transaction mode, so both its reading and its writing count.
#[test]
fn a_statement_with_40000_parameters_runs_as_directly() {
    use poolguard_e2e::rawpg::RawPg;
    const N: u16 = 40_000;
    let pg = sandbox(20);
    let session = Proxy::start(&pg, &PoolSpec::one_server("session"));
    let transaction = Proxy::start(&pg, &PoolSpec::one_server("transaction"));
    // The Parse written by hand (poolguard's own encoder is under test too).
    let mut body = b"big\0SELECT $40000::int\0".to_vec();
    body.extend_from_slice(&N.to_be_bytes());
    for _ in 0..N {
        body.extend_from_slice(&23u32.to_be_bytes()); // int4
    }
    let mut m = bytes::BytesMut::new();
    m.extend_from_slice(b"P");
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(&body);
    let mut rest = vec![0, 0];
    rest.extend_from_slice(&N.to_be_bytes());
    for i in 1..=u32::from(N) {
        let v = i.to_string();
        rest.extend_from_slice(&(v.len() as i32).to_be_bytes());
        rest.extend_from_slice(v.as_bytes());
    }
    rest.extend_from_slice(&[0, 0]);
    poolguard_pg::frontend::bind_with_rest(&mut m, "", "big", &rest);
    poolguard_pg::frontend::execute(&mut m, "", 0);
    poolguard_pg::frontend::sync(&mut m);
    for (target, port) in [
        ("server", pg.port()),
        ("session", session.port),
        ("transaction", transaction.port),
    ] {
        let mut c = RawPg::login(port, USER, PASSWORD, DB);
        c.send(&m);
        let answer = c.read_until_ready();
        assert!(answer.iter().all(|m| m.tag != b'E'), "{target}: {answer:?}");
        let row = answer.iter().find(|m| m.tag == b'D').expect("a row");
        assert!(row.body.ends_with(b"40000"), "{target}: {row:?}");
    }
}
