//! Guard rails and isolation, checked from the client's side against a real PostgreSQL:
//! acquire deadline (53300), client cap (53400), idle-in-transaction reclaim (25P03),
//! query timeout (57014), cancel, wrong password (28P01), hostile startup packets (08P01),
//! clients vanishing mid-transaction, server connections dying, session isolation.

#![allow(clippy::err_expect)] // tokio-postgres values are not all Debug, so expect_err is not available.

use std::time::Duration;

use poolguard_e2e::pgc::{code, connect_to, scalar};
use poolguard_e2e::*;
use tokio_postgres::{Client, NoTls};

async fn connect(proxy: &Proxy) -> Client {
    try_connect(proxy).await.expect("connect through poolguard")
}

async fn try_connect(proxy: &Proxy) -> Result<Client, tokio_postgres::Error> {
    connect_to(&proxy.conn_str()).await
}

fn one_server(extra_limits: &str) -> PoolSpec {
    PoolSpec {
        pool_size: 1,
        budget: 2,
        limits: extra_limits.to_string(),
        ..PoolSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_gets_28p01() {
    let pg = sandbox(20);
    let proxy = Proxy::start(&pg, &PoolSpec::default());
    let bad = proxy.conn_str().replace(PASSWORD, "not-the-password");
    let e = tokio_postgres::connect(&bad, NoTls)
        .await
        .err()
        .expect("must fail");
    assert_eq!(code(&e), "28P01", "{e}");
    let unknown = proxy.conn_str().replace("user=app", "user=nobody");
    let e = tokio_postgres::connect(&unknown, NoTls)
        .await
        .err()
        .expect("must fail");
    assert_eq!(code(&e), "28P01", "{e}");
    // The right password still works afterwards.
    let c = connect(&proxy).await;
    assert_eq!(
        scalar(&c, "SELECT 41 + 1").await.unwrap().as_deref(),
        Some("42")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_clients_authenticate() {
    let pg = sandbox(20);
    let spec = PoolSpec {
        front: "auth_method = \"md5\"".into(),
        ..PoolSpec::default()
    };
    let proxy = Proxy::start(&pg, &spec);
    let c = connect(&proxy).await;
    assert_eq!(
        scalar(&c, "SELECT 'md5 ok'").await.unwrap().as_deref(),
        Some("md5 ok")
    );
    let bad = proxy.conn_str().replace(PASSWORD, "wrong");
    let e = tokio_postgres::connect(&bad, NoTls)
        .await
        .err()
        .expect("must fail");
    assert_eq!(code(&e), "28P01", "{e}");
}

#[test]
fn hostile_startup_packets_are_refused_as_the_server_refuses_them() {
    let pg = sandbox(20);
    let proxy = Proxy::start(&pg, &PoolSpec::default());
    // Each answered as the server itself answers it (compared below).
    let mut no_user = vec![0, 0, 0, 0, 0, 3, 0, 0];
    no_user.extend_from_slice(b"database\0bank\0\0");
    let len = no_user.len() as u32;
    no_user[..4].copy_from_slice(&len.to_be_bytes());
    let mut no_terminator = vec![0, 0, 0, 0, 0, 3, 0, 0];
    no_terminator.extend_from_slice(b"user\0app\0");
    let len = no_terminator.len() as u32;
    no_terminator[..4].copy_from_slice(&len.to_be_bytes());
    let mut empty_user = vec![0, 0, 0, 0, 0, 3, 0, 0];
    empty_user.extend_from_slice(b"user\0\0database\0bank\0\0");
    let len = empty_user.len() as u32;
    empty_user[..4].copy_from_slice(&len.to_be_bytes());
    let cases: [(&str, &[u8], Option<&str>); 7] = [
        // A length out of bounds: closed without a word.
        ("length below the minimum", &[0, 0, 0, 3, 0, 0, 0, 0], None),
        ("1 MiB announced", &[0, 0x10, 0, 0, 0, 3, 0, 0], None),
        // node-postgres ended before its socket connected: a Terminate first.
        ("a Terminate", &[b'X', 0, 0, 0, 4], None),
        (
            "unknown protocol version",
            &[0, 0, 0, 8, 0, 9, 0, 0],
            Some("0A000"),
        ),
        ("no user", &no_user, Some("28000")),
        ("an empty user", &empty_user, Some("28000")),
        ("no terminator", &no_terminator, Some("08P01")),
    ];
    for (what, bytes, code) in cases {
        for (target, port) in [("server", pg.port()), ("poolguard", proxy.port)] {
            let answer = raw_exchange(port, bytes);
            assert_eq!(
                sqlstate_of(&answer).as_deref(),
                code,
                "{what} through {target}: {answer:?}"
            );
            if code.is_none() {
                assert!(answer.is_empty(), "{what} through {target}: {answer:?}");
            }
        }
    }
    // SSLRequest is answered 'N' and the conversation can go on (here: the client leaves).
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        s.write_all(&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]).unwrap();
        let mut answer = [0u8; 1];
        s.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"N");
    }
    // Nobody else was affected.
    let out = psql(proxy.port, "SELECT 'still serving'");
    assert_eq!(stdout(&out), "still serving", "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_deadline_gives_53300_naming_pool_numbers_and_holder() {
    let pg = sandbox(20);
    let proxy = Proxy::start(&pg, &one_server("acquire_timeout = \"1s\""));
    let holder = connect(&proxy).await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let waiter = connect(&proxy).await;
    let e = scalar(&waiter, "SELECT 1")
        .await
        .err()
        .expect("pool is full");
    assert_eq!(code(&e), "53300", "{e}");
    let text = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(text.contains("bank/app"), "names the pool: {text}");
    assert!(text.contains("1 of 1"), "gives the numbers: {text}");
    assert!(text.contains("oldest holders"), "names the holders: {text}");
    // The refused client is still connected and is served once the holder commits.
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        scalar(&waiter, "SELECT 7").await.unwrap().as_deref(),
        Some("7")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cap_gives_53400() {
    let pg = sandbox(20);
    let proxy = Proxy::start(&pg, &one_server("max_client_connections = 2"));
    let _a = connect(&proxy).await;
    let _b = connect(&proxy).await;
    let e = try_connect(&proxy)
        .await
        .err()
        .expect("third client refused");
    assert_eq!(code(&e), "53400", "{e}");
    drop(_a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = connect(&proxy).await;
    assert_eq!(scalar(&c, "SELECT 3").await.unwrap().as_deref(), Some("3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_transaction_is_rolled_back_and_server_returned() {
    let pg = sandbox(20);
    pg.psql(DB, "CREATE TABLE leak(x int); GRANT ALL ON leak TO app")
        .unwrap();
    let proxy = Proxy::start(&pg, &one_server("idle_in_transaction_timeout = \"1s\""));
    let leaker = connect(&proxy).await;
    leaker
        .batch_execute("BEGIN; INSERT INTO leak VALUES (1)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The leaker was told and disconnected.
    let e = leaker
        .simple_query("COMMIT")
        .await
        .err()
        .expect("leaker kicked");
    assert!(
        code(&e) == "25P03" || leaker.is_closed(),
        "expected 25P03 or a closed connection, got {e}"
    );
    // Its write was rolled back, and the only server connection serves others again.
    let other = connect(&proxy).await;
    assert_eq!(
        scalar(&other, "SELECT count(*) FROM leak")
            .await
            .unwrap()
            .as_deref(),
        Some("0")
    );
    assert!(proxy.log().contains("idle_in_transaction_timeout"));
    assert_eq!(
        app_connections(&pg),
        1,
        "no server connection lost or added"
    );
}

/// An idle client (parked between transactions, see `crate::idle` in the proxy) is woken by
/// its `client_idle_timeout` deadline, told why (57P05) and closed; a client that keeps
/// talking is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_client_is_closed_by_client_idle_timeout() {
    let pg = sandbox(20);
    let proxy = Proxy::start(&pg, &one_server("client_idle_timeout = \"1s\""));
    let idle = connect(&proxy).await;
    assert_eq!(
        scalar(&idle, "SELECT 1").await.unwrap().as_deref(),
        Some("1")
    );
    // Polled with a generous deadline: the kick is due one second after the last statement.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !idle.is_closed() {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle client was not closed; log:\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = proxy.log();
    assert!(
        log.contains("57P05") && log.contains("client_idle_timeout"),
        "{log}"
    );
    // The door still serves, and the only server connection was not lost.
    let fresh = connect(&proxy).await;
    assert_eq!(
        scalar(&fresh, "SELECT 2").await.unwrap().as_deref(),
        Some("2")
    );
    assert_eq!(
        app_connections(&pg),
        1,
        "no server connection lost or added"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_cancels_with_57014() {
    let pg = sandbox(20);
    let proxy = Proxy::start(&pg, &one_server("query_timeout = \"1s\""));
    let c = connect(&proxy).await;
    let e = c
        .simple_query("SELECT pg_sleep(30)")
        .await
        .err()
        .expect("cancelled");
    assert_eq!(code(&e), "57014", "{e}");
    assert_eq!(
        scalar(&c, "SELECT 'after'").await.unwrap().as_deref(),
        Some("after")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cancel_reaches_its_own_query_only() {
    let pg = sandbox(20);
    let spec = PoolSpec {
        pool_size: 2,
        ..PoolSpec::default()
    };
    let proxy = Proxy::start(&pg, &spec);
    let victim = connect(&proxy).await;
    let bystander = connect(&proxy).await;
    let token = victim.cancel_token();
    let sleeper = tokio::spawn(async move { victim.simple_query("SELECT pg_sleep(30)").await });
    let other = tokio::spawn(async move {
        bystander
            .simple_query("SELECT pg_sleep(2), 'bystander done'")
            .await
            .map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel_query(NoTls).await.unwrap();
    let e = sleeper.await.unwrap().err().expect("victim cancelled");
    assert_eq!(code(&e), "57014", "{e}");
    other
        .await
        .unwrap()
        .expect("the other client's query is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_killed_mid_transaction_commits_nothing_and_loses_no_server() {
    let pg = sandbox(20);
    pg.psql(DB, "CREATE TABLE t(x int); GRANT ALL ON t TO app")
        .unwrap();
    let proxy = Proxy::start(&pg, &one_server(""));
    {
        let (client, conn) = tokio_postgres::connect(&proxy.conn_str(), NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        client
            .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        // Kill the connection without Terminate, as a crashed process would.
        task.abort();
        drop(client);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = connect(&proxy).await;
    assert_eq!(
        scalar(&c, "SELECT count(*) FROM t")
            .await
            .unwrap()
            .as_deref(),
        Some("0")
    );
    // The one server connection was cleaned and reused, not leaked or replaced.
    assert_eq!(app_connections(&pg), 1);
    // A client that vanishes while its query runs: cancelled, rolled back, server kept.
    {
        let (client, conn) = tokio_postgres::connect(&proxy.conn_str(), NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        client
            .batch_execute("BEGIN; INSERT INTO t VALUES (2)")
            .await
            .unwrap();
        let q = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        task.abort();
        q.abort();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        scalar(&c, "SELECT count(*) FROM t")
            .await
            .unwrap()
            .as_deref(),
        Some("0")
    );
    assert_eq!(app_connections(&pg), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_never_reaches_another_client_in_transaction_mode() {
    let pg = sandbox(20);
    // Policy `reset`: the server is reset after the client's transaction, so one server can
    // serve both clients (under the default `follow`, the temp table would pin A to it).
    let spec = PoolSpec {
        front: "session_state = \"reset\"".into(),
        ..one_server("acquire_timeout = \"1s\"")
    };
    let proxy = Proxy::start(&pg, &spec);
    let a = connect(&proxy).await;
    let b = connect(&proxy).await;
    let default_path = scalar(&b, "SHOW search_path").await.unwrap();
    // SET outside a transaction, and a temporary table: both on the single shared server.
    a.batch_execute("SET search_path = pg_catalog")
        .await
        .unwrap();
    a.batch_execute("CREATE TEMP TABLE mine(x int)")
        .await
        .unwrap();
    assert_eq!(scalar(&b, "SHOW search_path").await.unwrap(), default_path);
    assert_eq!(
        scalar(&b, "SELECT to_regclass('pg_temp.mine')::text")
            .await
            .unwrap(),
        None,
        "another client's temp table is visible"
    );
    // An open transaction keeps its server: the other client cannot land on it.
    a.batch_execute("BEGIN; CREATE TABLE in_flight(x int)")
        .await
        .unwrap();
    let e = scalar(&b, "SELECT 1")
        .await
        .err()
        .expect("b must wait, not share");
    assert_eq!(code(&e), "53300");
    a.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        scalar(&b, "SELECT to_regclass('in_flight')::text")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_resets_server_before_reuse() {
    let pg = sandbox(20);
    let spec = PoolSpec {
        mode: "session",
        pool_size: 1,
        budget: 2,
        ..PoolSpec::default()
    };
    let proxy = Proxy::start(&pg, &spec);
    let a = connect(&proxy).await;
    a.batch_execute("SET search_path = pg_catalog; CREATE TEMP TABLE mine(x int)")
        .await
        .unwrap();
    let pid_a = scalar(&a, "SELECT pg_backend_pid()").await.unwrap();
    drop(a);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = connect(&proxy).await;
    assert_eq!(
        scalar(&b, "SELECT pg_backend_pid()").await.unwrap(),
        pid_a,
        "same server reused"
    );
    assert_eq!(
        scalar(&b, "SHOW search_path").await.unwrap().as_deref(),
        Some("\"$user\", public")
    );
    assert_eq!(
        scalar(&b, "SELECT to_regclass('pg_temp.mine')::text")
            .await
            .unwrap(),
        None
    );
}

#[test]
fn copy_in_and_out_through_the_proxy() {
    let pg = sandbox(20);
    let proxy = Proxy::start(&pg, &PoolSpec::default());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    let rows: String = (1..=5000).map(|i| format!("{i},row {i}\n")).collect();
    std::fs::write(&input, &rows).unwrap();
    let output = dir.path().join("out.csv");
    let script = format!(
        "CREATE TABLE c(id int, label text);\n\\copy c FROM '{}' WITH (FORMAT csv)\n\\copy (SELECT * FROM c ORDER BY id) TO '{}' WITH (FORMAT csv)\nSELECT count(*) FROM c;",
        input.display(),
        output.display()
    );
    let f = dir.path().join("copy.sql");
    std::fs::write(&f, &script).unwrap();
    let out = psql_file(proxy.port, &f);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().last(), Some("5000"));
    assert_eq!(std::fs::read_to_string(&output).unwrap(), rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_dying_mid_query_errors_only_that_client() {
    let pg = sandbox(20);
    let spec = PoolSpec {
        pool_size: 2,
        ..PoolSpec::default()
    };
    let proxy = Proxy::start(&pg, &spec);
    let victim = connect(&proxy).await;
    let pid = scalar(&victim, "SELECT pg_backend_pid()")
        .await
        .unwrap()
        .unwrap();
    let sleeper = tokio::spawn(async move { victim.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    pg.psql("postgres", &format!("SELECT pg_terminate_backend({pid})"))
        .unwrap();
    let r = sleeper.await.unwrap();
    assert!(r.is_err(), "the victim's query must fail");
    let other = connect(&proxy).await;
    assert_eq!(
        scalar(&other, "SELECT 'fine'").await.unwrap().as_deref(),
        Some("fine")
    );
}

#[test]
fn check_refuses_budget_that_does_not_fit_and_names_bad_keys() {
    let pg = sandbox(10);
    let dir = tempfile::tempdir().unwrap();
    let run_check = |text: &str| {
        let f = dir.path().join("c.toml");
        std::fs::write(&f, text).unwrap();
        std::process::Command::new(poolguard_bin())
            .args(["check", "--config"])
            .arg(&f)
            .output()
            .unwrap()
    };
    let fits = PoolSpec {
        budget: 5,
        ..PoolSpec::default()
    };
    let ok = run_check(&config_for(&pg, 6543, &fits));
    assert!(ok.status.success(), "{}{}", stdout(&ok), stderr(&ok));
    assert!(stdout(&ok).contains("max_connections 10 - superuser_reserved_connections 3"));

    let too_big = PoolSpec {
        budget: 20,
        ..PoolSpec::default()
    };
    let out = run_check(&config_for(&pg, 6543, &too_big));
    assert!(!out.status.success());
    assert!(stdout(&out).contains("DOES NOT FIT"), "{}", stdout(&out));

    let good = config_for(&pg, 6543, &fits);
    for (bad, named) in [
        (good.replace("pool_size", "pool_sise"), "pool_sise"),
        (
            good.replace("[limits]", "[limits]\nacquire_timeout = \"soon\""),
            "acquire_timeout",
        ),
        (
            good.replace("backend = \"pg\"", "backend = \"missing\""),
            "missing",
        ),
    ] {
        let out = run_check(&bad);
        assert!(!out.status.success(), "accepted: {bad}");
        assert!(
            stderr(&out).contains(named),
            "{} does not name {named}",
            stderr(&out)
        );
    }
    // And `run` refuses the budget that does not fit, too.
    let f = dir.path().join("big.toml");
    std::fs::write(&f, config_for(&pg, free_port(), &too_big)).unwrap();
    let out = std::process::Command::new(poolguard_bin())
        .args(["run", "--config"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not fit"), "{}", stderr(&out));
}

/// The default `session_state = "follow"`: a client's session-level SETs (and SET SESSION
/// CHARACTERISTICS) follow it to whichever server its next transaction runs on, never reach
/// another client, and state that cannot move (a temporary table) pins the client instead of
/// vanishing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_follow_the_client_and_unmovable_state_pins_it() {
    let pg = sandbox(20);
    let admin = free_port();
    let spec = PoolSpec {
        pool_size: 2,
        budget: 3,
        limits: format!("\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"),
        ..PoolSpec::default()
    };
    let proxy = Proxy::start(&pg, &spec);
    let a = connect(&proxy).await;
    let b = connect(&proxy).await;
    a.batch_execute("SET statement_timeout = 1234")
        .await
        .unwrap();
    a.batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        .await
        .unwrap();
    // B takes the server A just used (the most recently returned one) and holds it.
    b.batch_execute("BEGIN").await.unwrap();
    let b_pid = scalar(&b, "SELECT pg_backend_pid()").await.unwrap();
    assert_eq!(
        scalar(&b, "SHOW statement_timeout")
            .await
            .unwrap()
            .as_deref(),
        Some("0"),
        "A's SET reached B"
    );
    // So A's next statements run on the other server, which gets A's settings first.
    assert_ne!(scalar(&a, "SELECT pg_backend_pid()").await.unwrap(), b_pid);
    assert_eq!(
        scalar(&a, "SHOW statement_timeout")
            .await
            .unwrap()
            .as_deref(),
        Some("1234ms")
    );
    assert_eq!(
        scalar(&a, "SHOW default_transaction_isolation")
            .await
            .unwrap()
            .as_deref(),
        Some("serializable")
    );
    b.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        scalar(&b, "SHOW default_transaction_isolation")
            .await
            .unwrap()
            .as_deref(),
        Some("read committed")
    );
    a.batch_execute("RESET statement_timeout").await.unwrap();
    assert_eq!(
        scalar(&a, "SHOW statement_timeout")
            .await
            .unwrap()
            .as_deref(),
        Some("0")
    );

    // A temporary table cannot move: A keeps its server, and the table, from now on.
    a.batch_execute("CREATE TEMP TABLE mine(x int); INSERT INTO mine VALUES (1)")
        .await
        .unwrap();
    let pinned = scalar(&a, "SELECT pg_backend_pid()").await.unwrap();
    b.batch_execute("BEGIN").await.unwrap();
    assert_ne!(scalar(&b, "SELECT pg_backend_pid()").await.unwrap(), pinned);
    assert_eq!(
        scalar(&b, "SELECT to_regclass('pg_temp.mine')::text")
            .await
            .unwrap(),
        None
    );
    b.batch_execute("COMMIT").await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            scalar(&a, "SELECT count(*) FROM mine")
                .await
                .unwrap()
                .as_deref(),
            Some("1")
        );
        assert_eq!(scalar(&a, "SELECT pg_backend_pid()").await.unwrap(), pinned);
    }
}
