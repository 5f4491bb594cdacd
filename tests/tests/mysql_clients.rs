//! Real MySQL clients through poolguard against a sandbox MariaDB: the `mariadb` command-line
//! client (transaction and session mode), PyMySQL (autocommit off, 17 MiB values, CALL, LOAD
//! DATA LOCAL both ways), SQLAlchemy with its own pool (pre-ping, recycle, FOUND_ROWS, concurrent
//! transfers) and mysql2 (pool, execute, transactions, COM_CHANGE_USER). Results are asserted,
//! and the server never sees more `app` connections than poolguard's budget.

use std::time::Duration;

use poolguard_e2e::mysql::*;
use poolguard_e2e::*;

#[test]
fn mariadb_cli_in_transaction_and_session_mode() {
    let db = mariadb(30);
    let proxy = start_mysql_proxy(&db, &MyPoolSpec::default());
    let out = mariadb_cli(
        proxy.port,
        "CREATE TABLE cli (x INT); BEGIN; INSERT INTO cli VALUES (1), (2); COMMIT; SELECT SUM(x) FROM cli",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "3");
    let out = mariadb_cli(proxy.port, "SELECT * FROM no_such_table");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("1146"), "{}", stderr(&out));

    let session = MyPoolSpec {
        mode: "session",
        pool_size: 1,
        budget: 2,
        ..MyPoolSpec::default()
    };
    let proxy = start_mysql_proxy(&db, &session);
    let out = mariadb_cli(
        proxy.port,
        "SET @kept = 'session'; CREATE TEMPORARY TABLE t (x INT); SELECT @kept",
    );
    assert_eq!(stdout(&out), "session", "{}", stderr(&out));
    // The server is reset before the next client gets it.
    let out = mariadb_cli(proxy.port, "SELECT COALESCE(@kept, 'clean')");
    assert_eq!(stdout(&out), "clean", "{}", stderr(&out));
}

#[test]
fn pymysql_and_large_packets() {
    let db = mariadb(30);
    let proxy = start_mysql_proxy(&db, &MyPoolSpec::default());
    let out = python(
        "mysql_pymysql.py",
        &[proxy.port.to_string()],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out), "OK");
    assert!(maria_app_connections(&db) <= 10);

    let allowing = MyPoolSpec {
        front: "allow_local_infile = true".into(),
        ..MyPoolSpec::default()
    };
    db.sql(DB, "DROP TABLE py_items; DROP PROCEDURE two_sets")
        .unwrap();
    let proxy = start_mysql_proxy(&db, &allowing);
    let out = python(
        "mysql_pymysql.py",
        &[proxy.port.to_string(), "allow_local_infile".into()],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
}

#[test]
fn sqlalchemy_with_its_own_pool() {
    let db = mariadb(30);
    let spec = MyPoolSpec {
        pool_size: 3,
        budget: 4,
        limits: "acquire_timeout = \"20s\"".into(),
        ..MyPoolSpec::default()
    };
    let proxy = start_mysql_proxy(&db, &spec);
    let sampler = MyPeakSampler::start(&db);
    let out = python(
        "mysql_sqlalchemy.py",
        &[proxy.port.to_string()],
        Duration::from_secs(90),
    );
    let (peak, samples) = sampler.finish();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out), "OK");
    assert!(samples > 0);
    // SQLAlchemy holds up to 10 connections; MariaDB saw at most the budget.
    assert!(peak <= 4, "peak {peak} server connections");
}

#[test]
fn mysql2_pool_transactions_and_change_user() {
    let db = mariadb(30);
    let spec = MyPoolSpec {
        pool_size: 3,
        budget: 5,
        limits: "acquire_timeout = \"20s\"".into(),
        ..MyPoolSpec::default()
    };
    let proxy = start_mysql_proxy(&db, &spec);
    let out = node(
        "mysql_mysql2.js",
        &[proxy.port.to_string()],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out), "OK");
    assert!(maria_app_connections(&db) <= 5);
}

/// mysql2 asks a MariaDB greeting for extended type information and then reads JSON columns
/// as JSON: through poolguard (both modes) as directly.
#[test]
fn mysql2_reads_mariadb_json_columns_as_directly() {
    let db = mariadb(30);
    let direct = node(
        "mysql_json.js",
        &[db.port().to_string()],
        Duration::from_secs(60),
    );
    assert!(direct.status.success(), "{}", stderr(&direct));
    assert!(stdout(&direct).contains("object"), "{}", stdout(&direct));
    for mode in ["session", "transaction"] {
        let proxy = start_mysql_proxy(
            &db,
            &MyPoolSpec {
                mode,
                ..MyPoolSpec::default()
            },
        );
        let out = node(
            "mysql_json.js",
            &[proxy.port.to_string()],
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "{mode}: {}", stderr(&out));
        assert_eq!(stdout(&out), stdout(&direct), "{mode}");
        assert!(
            proxy.log().contains("extended types)"),
            "{mode}: the pool of its own"
        );
    }
}

/// A LOCAL INFILE file sent in packets longer than what poolguard buffers from a busy client
/// (mysql2 sends 64 KiB stream chunks whole): relayed, not left waiting (it once hung).
#[test]
fn mysql2_loads_a_local_file_in_large_packets() {
    let db = mariadb(30);
    let proxy = start_mysql_proxy(
        &db,
        &MyPoolSpec {
            front: "allow_local_infile = true".into(),
            ..MyPoolSpec::default()
        },
    );
    let out = node(
        "mysql_infile.js",
        &[proxy.port.to_string()],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "30000");
}
