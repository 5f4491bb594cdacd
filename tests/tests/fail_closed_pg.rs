//! Fail closed, proven with faults on purpose (PostgreSQL door): the test build's fault switch
//! (`POOLGUARD_FAULTS`, see crates/proxy/src/fault.rs) makes a session panic mid-transaction,
//! mid-COPY in both directions, mid-extended-protocol batch and during a server reset. After
//! each, against a real PostgreSQL with a pool of one server connection:
//! - the victim client got SQLSTATE XX000 "poolguard internal error" (not a silent reset),
//! - the next client on the same pool sees no open transaction and none of the victim's rows,
//! - the panic was counted and its server connection discarded as `panicked`, never reused,
//! - the pool's counts are back to nothing in use, and poolguard still serves.
//!
//! Waits are for events (a counter reaching a value), bounded; nothing depends on timing.

use std::time::Duration;

use poolguard_e2e::admin::{http_get, metric, wait_for};
use poolguard_e2e::rawpg::RawPg;
use poolguard_e2e::*;

struct Victim {
    point: &'static str,
    /// What the victim does; returns what it saw (stdout + stderr, or messages).
    act: fn(port: u16, dir: &std::path::Path) -> String,
    /// The victim hears about the panic (false: the fault hits after its answer).
    told: bool,
}

fn psql_script(port: u16, dir: &std::path::Path, script: &str) -> String {
    let path = dir.join("victim.sql");
    std::fs::write(&path, script).unwrap();
    let out = psql_file(port, &path);
    format!("{}\n{}", stdout(&out), stderr(&out))
}

fn victims() -> Vec<Victim> {
    vec![
        Victim {
            point: "pg_in_transaction",
            act: |port, _| {
                let out = psql(port, "BEGIN; INSERT INTO t VALUES (42);");
                format!("{}\n{}", stdout(&out), stderr(&out))
            },
            told: true,
        },
        Victim {
            point: "pg_copy_in",
            act: |port, dir| {
                psql_script(
                    port,
                    dir,
                    "BEGIN;\nINSERT INTO t VALUES (1);\nCOPY t FROM STDIN;\n2\n3\n\\.\nCOMMIT;\n",
                )
            },
            told: true,
        },
        Victim {
            point: "pg_copy_out",
            act: |port, dir| {
                psql_script(
                    port,
                    dir,
                    "BEGIN;\nINSERT INTO t VALUES (1);\nCOPY t TO STDOUT;\nCOMMIT;\n",
                )
            },
            told: true,
        },
        Victim {
            point: "pg_extended_batch",
            act: |port, _| {
                // Parse, Bind, Execute and a Flush, but no Sync: the INSERT runs in the
                // batch's implicit transaction, which only a Sync would commit.
                let mut c = RawPg::login(port, USER, PASSWORD, DB);
                let mut m = bytes::BytesMut::new();
                poolguard_pg::frontend::parse_message(&mut m, "", "INSERT INTO t VALUES (7)", &[]);
                poolguard_pg::frontend::bind_with_rest(&mut m, "", "", &[0, 0, 0, 0, 0, 0]);
                poolguard_pg::frontend::execute(&mut m, "", 0);
                poolguard_pg::frontend::flush(&mut m);
                c.send(&m);
                let msgs = c.read_until_error_or_ready();
                msgs.iter()
                    .map(|m| {
                        format!(
                            "{} {}",
                            m.tag as char,
                            m.field(b'C').unwrap_or_default()
                                + " "
                                + &m.field(b'M').unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            },
            told: true,
        },
        Victim {
            point: "pg_reset",
            act: |port, _| {
                // A temporary table makes the server dirty: it is reset (DISCARD ALL) before
                // anyone else gets it, and the fault hits during that reset.
                let out = psql(
                    port,
                    "CREATE TEMP TABLE tt (x int); INSERT INTO tt VALUES (1)",
                );
                format!("{}\n{}", stdout(&out), stderr(&out))
            },
            told: false,
        },
    ]
}

#[test]
fn a_panicking_session_hands_nothing_to_the_next_client() {
    let pg = sandbox(30);
    pg.psql(DB, "CREATE TABLE t (x int); ALTER TABLE t OWNER TO app")
        .expect("create table");
    let dir = tempfile::tempdir().unwrap();
    for v in victims() {
        pg.psql(DB, "TRUNCATE t").unwrap();
        let admin = free_port();
        let port = free_port();
        let spec = PoolSpec {
            pool_size: 1,
            budget: 2,
            limits: format!("\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"),
            ..PoolSpec::default()
        };
        let proxy = Proxy::start_with_env(
            &config_for(&pg, port, &spec),
            port,
            &[("POOLGUARD_FAULTS", v.point)],
        );
        let seen = (v.act)(proxy.port, dir.path());
        if v.told {
            assert!(
                seen.contains("XX000") || seen.contains("poolguard internal error"),
                "{}: the victim was not told: {seen}",
                v.point
            );
        }
        let metrics = || http_get(admin, "/metrics");
        let pool = "pool=\"bank/app\"";
        wait_for(Duration::from_secs(30), "the panic counted", || {
            (metric(&metrics(), "poolguard_panics_total", &[]) == Some(1.0)).then_some(())
        });
        wait_for(Duration::from_secs(30), "the server discarded", || {
            let m = metrics();
            let panicked = metric(
                &m,
                "poolguard_server_connections_discarded_total",
                &[pool, "reason=\"panicked\""],
            );
            (panicked == Some(1.0)).then_some(())
        });

        // The next client on the same one-connection pool.
        let out = psql(
            proxy.port,
            "SELECT count(*), pg_current_xact_id_if_assigned() IS NULL, to_regclass('pg_temp.tt') IS NULL FROM t",
        );
        assert!(out.status.success(), "{}: {}", v.point, stderr(&out));
        assert_eq!(
            stdout(&out),
            "0|t|t",
            "{}: the next client saw the victim's work (rows | no transaction | no temp table)",
            v.point
        );
        let none_in_use = |m: &str| {
            metric(
                m,
                "poolguard_pool_server_connections",
                &[pool, "state=\"in_use\""],
            ) == Some(0.0)
        };
        wait_for(Duration::from_secs(30), "the pool idle again", || {
            none_in_use(&metrics()).then_some(())
        });
        let m = metrics();
        for reason in ["dropped", "unproven"] {
            assert_eq!(
                metric(
                    &m,
                    "poolguard_server_connections_discarded_total",
                    &[pool, &format!("reason=\"{reason}\"")]
                ),
                Some(0.0),
                "{}: {reason}",
                v.point
            );
        }
        // Nothing of the victim's was committed, as the server itself counts it.
        assert_eq!(
            pg.psql(DB, "SELECT count(*) FROM t").unwrap().trim(),
            "0",
            "{}",
            v.point
        );
        assert!(
            proxy.log().contains("fault injected at"),
            "{}: the panic's message is in the log",
            v.point
        );
    }
}

/// A pooled server connection whose backend was terminated while it sat idle (an operator's
/// `pg_terminate_backend`, a server-side timeout) is never handed to a client: the FATAL it
/// left in the socket is noticed when it is taken from the pool, and a new server connection
/// serves the client. Both modes, one server in the pool. The wait is for the backend to be
/// gone from `pg_stat_activity` (an event, bounded).
#[test]
fn a_server_terminated_while_idle_is_not_handed_out() {
    let pg = sandbox(20);
    for mode in ["session", "transaction"] {
        let proxy = Proxy::start(&pg, &PoolSpec::one_server(mode));
        let first = psql(proxy.port, "SELECT pg_backend_pid()");
        assert!(first.status.success(), "{mode}: {}", stderr(&first));
        let pid = stdout(&first);
        pg.psql("postgres", &format!("SELECT pg_terminate_backend({pid})"))
            .expect("terminate");
        let gone = (0..400).any(|_| {
            let left = pg
                .psql(
                    "postgres",
                    &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"),
                )
                .unwrap_or_default();
            left.trim() == "0" || {
                std::thread::sleep(Duration::from_millis(50));
                false
            }
        });
        assert!(gone, "{mode}: backend {pid} still there");
        let next = psql(proxy.port, "SELECT 1");
        assert!(
            next.status.success(),
            "{mode}: the next client got the dead server: {}",
            stderr(&next)
        );
        assert_eq!(stdout(&next), "1");
    }
}

/// A backend terminated under its client sends its own FATAL and closes: through poolguard
/// the client sees the same, that one FATAL and the close, not a second error of poolguard's
/// after it (node-postgres counts each ErrorResponse as an error event, and hands a queued
/// query the last one).
#[test]
fn a_terminated_backend_gives_its_client_one_fatal_as_directly() {
    let pg = sandbox(20);
    let session = Proxy::start(&pg, &PoolSpec::one_server("session"));
    let transaction = Proxy::start(&pg, &PoolSpec::one_server("transaction"));
    for (target, port) in [
        ("server", pg.port()),
        ("session", session.port),
        ("transaction", transaction.port),
    ] {
        let mut c = RawPg::login(port, USER, PASSWORD, DB);
        let errors = errors_until_closed(&mut c, "SELECT pg_terminate_backend(pg_backend_pid())");
        assert_eq!(errors, ["57P01"], "through {target}");
    }
    // poolguard still serves.
    let mut c = RawPg::login(transaction.port, USER, PASSWORD, DB);
    assert_eq!(c.query("SELECT 1").unwrap().rows, [[Some("1".to_string())]]);
}

/// A backend terminated while its client waits between statements (session mode, or inside a
/// transaction in transaction mode): the server's own FATAL reaches the client, as directly,
/// not poolguard's message in its place.
#[test]
fn a_backend_terminated_while_its_client_is_idle_gives_the_servers_fatal() {
    let pg = sandbox(20);
    let session = Proxy::start(&pg, &PoolSpec::one_server("session"));
    let transaction = Proxy::start(&pg, &PoolSpec::one_server("transaction"));
    for (target, port) in [
        ("server", pg.port()),
        ("session", session.port),
        ("transaction", transaction.port),
    ] {
        let mut c = RawPg::login(port, USER, PASSWORD, DB);
        c.query("BEGIN").unwrap();
        let pid = c.query("SELECT pg_backend_pid()").unwrap().rows[0][0]
            .clone()
            .unwrap();
        // Terminated from a connection of its own, straight to the server; then waited for
        // until the backend is gone.
        let mut killer = RawPg::login(pg.port(), USER, PASSWORD, DB);
        let sql = format!("SELECT pg_terminate_backend({pid})");
        assert_eq!(killer.query(&sql).unwrap().rows[0][0].as_deref(), Some("t"));
        wait_for(Duration::from_secs(30), "the backend gone", || {
            let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}");
            (killer.query(&sql).unwrap().rows[0][0].as_deref() == Some("0")).then_some(())
        });
        let errors = errors_until_closed(&mut c, "SELECT 1");
        assert_eq!(errors, ["57P01"], "through {target}");
    }
}

/// Sends `sql` as a simple query and reads until the connection closes: the SQLSTATEs of the
/// ErrorResponses seen.
fn errors_until_closed(c: &mut RawPg, sql: &str) -> Vec<String> {
    let mut m = bytes::BytesMut::new();
    poolguard_pg::frontend::query(&mut m, sql);
    c.send(&m);
    let mut errors = Vec::new();
    while let Some(m) = c.read() {
        if m.tag == b'E' {
            errors.push(m.sqlstate().unwrap_or_default());
        }
    }
    errors
}
