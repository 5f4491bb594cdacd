//! Isolation between MySQL clients in transaction mode, with pool_size 1 so every client shares
//! the one server connection: session variables, LAST_INSERT_ID(), the default schema,
//! autocommit and prepared statement ids follow each client; temporary tables, user variables
//! and user locks pin their client to its server, and a reset clears them before anyone else
//! gets that server.

use std::time::Duration;

use poolguard_e2e::mysql::*;
use poolguard_e2e::*;
use poolguard_mysql::consts::{COM_QUERY, DEFAULT_COLLATION};

fn shared_server() -> MyPoolSpec {
    MyPoolSpec {
        pool_size: 1,
        budget: 2,
        ..MyPoolSpec::default()
    }
}

fn one(c: &mut MyClient, sql: &str) -> String {
    c.scalar(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_else(|| "NULL".into())
}

#[test]
fn session_state_follows_each_client_across_one_shared_server() {
    let db = mariadb(30);
    db.sql(
        "",
        "CREATE DATABASE bank2; GRANT ALL ON bank2.* TO 'app'@'%', 'app'@'127.0.0.1'",
    )
    .unwrap();
    let proxy = start_mysql_proxy(&db, &shared_server());
    let mut a = MyClient::connect(proxy.port).unwrap();
    let mut b = MyClient::connect(proxy.port).unwrap();

    a.query("CREATE TABLE ids (id INT AUTO_INCREMENT PRIMARY KEY, who CHAR(1))")
        .unwrap();
    a.query("SET SESSION sql_mode = 'ANSI', time_zone = '+05:00'")
        .unwrap();
    assert!(!one(&mut b, "SELECT @@sql_mode").contains("ANSI"));
    assert_eq!(one(&mut b, "SELECT @@time_zone"), "SYSTEM");
    assert!(one(&mut a, "SELECT @@sql_mode").contains("ANSI"));
    assert_eq!(one(&mut a, "SELECT @@time_zone"), "+05:00");

    a.query("INSERT INTO ids (who) VALUES ('a')").unwrap();
    b.query("INSERT INTO ids (who) VALUES ('b')").unwrap();
    b.query("INSERT INTO ids (who) VALUES ('b')").unwrap();
    assert_eq!(one(&mut a, "SELECT LAST_INSERT_ID()"), "1");
    assert_eq!(one(&mut b, "SELECT LAST_INSERT_ID()"), "3");

    a.query("USE bank2").unwrap();
    assert_eq!(one(&mut b, "SELECT DATABASE()"), "bank");
    assert_eq!(one(&mut a, "SELECT DATABASE()"), "bank2");
    a.query("USE bank").unwrap();

    a.query("SET autocommit = 0").unwrap();
    a.query("INSERT INTO ids (who) VALUES ('a')").unwrap();
    a.query("COMMIT").unwrap();
    assert_eq!(one(&mut b, "SELECT @@autocommit"), "1");
    assert_eq!(one(&mut a, "SELECT @@autocommit"), "0");
    // An uncommitted insert under autocommit = 0 is invisible to b, then rolled back.
    a.query("INSERT INTO ids (who) VALUES ('x')").unwrap();
    a.query("ROLLBACK").unwrap();
    assert_eq!(one(&mut b, "SELECT COUNT(*) FROM ids WHERE who = 'x'"), "0");

    // Everything above ran on one server connection.
    assert_eq!(maria_app_connections(&db), 1);
    assert!(
        !proxy.log().contains("pinned"),
        "nothing pinned:\n{}",
        proxy.log()
    );

    let out = node(
        "mysql_isolation.js",
        &[proxy.port.to_string()],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out), "OK");
    // mysql2 asks for CLIENT_FOUND_ROWS, which is fixed per server connection: its two
    // connections shared the one server of the FOUND_ROWS pool.
    assert_eq!(maria_app_connections(&db), 2);
}

#[test]
fn state_that_cannot_move_pins_and_is_reset_before_reuse() {
    let db = mariadb(30);
    let spec = MyPoolSpec {
        pool_size: 2,
        budget: 3,
        // Long: c and d below may wait for a's server while it is being reset.
        limits: "acquire_timeout = \"30s\"".into(),
        ..MyPoolSpec::default()
    };
    let proxy = start_mysql_proxy(&db, &spec);
    let mut a = MyClient::connect(proxy.port).unwrap();
    a.query("CREATE TEMPORARY TABLE tmp (x INT)").unwrap();
    a.query("INSERT INTO tmp VALUES (1)").unwrap();
    a.query("SET @v = 42").unwrap();
    let mut b = MyClient::connect(proxy.port).unwrap();
    assert_eq!(b.query("SELECT * FROM tmp").err().unwrap().code, 1146);
    assert_eq!(one(&mut b, "SELECT @v"), "NULL");
    assert_eq!(one(&mut a, "SELECT COUNT(*) FROM tmp"), "1");
    assert_eq!(one(&mut a, "SELECT @v"), "42");
    let log = proxy.log();
    assert!(
        log.contains("pinned") && log.contains("temporary table"),
        "pin logged with its reason:\n{log}"
    );
    // When a leaves, its server is reset before anyone else uses it.
    drop(a);
    let mut c = MyClient::connect(proxy.port).unwrap();
    let mut d = MyClient::connect(proxy.port).unwrap();
    for client in [&mut c, &mut d] {
        client.query("BEGIN").unwrap();
        assert_eq!(client.query("SELECT * FROM tmp").err().unwrap().code, 1146);
        assert_eq!(one(client, "SELECT @v"), "NULL");
    }
    c.query("COMMIT").unwrap();
    d.query("COMMIT").unwrap();

    // A user lock pins too, and is released (with the reset) when its holder leaves.
    let mut e = MyClient::connect(proxy.port).unwrap();
    assert_eq!(one(&mut e, "SELECT GET_LOCK('job', 0)"), "1");
    assert_eq!(one(&mut c, "SELECT IS_FREE_LOCK('job')"), "0");
    drop(e);
    // The lock goes with e's session reset, once poolguard has seen e leave.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while one(&mut c, "SELECT IS_FREE_LOCK('job')") != "1" {
        assert!(
            std::time::Instant::now() < deadline,
            "the lock was never released"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(maria_app_connections(&db) <= 2);
}

/// Text the server reads differently from poolguard's default reading: under
/// NO_BACKSLASH_ESCAPES (here the server's global sql_mode, which poolguard does not know) a
/// string ends at `\'`, and in gbk (the clients' handshake collation) 0x81 0x60 is one
/// character whose second byte ends no quoted identifier. A user variable assigned behind such a string
/// must pin its client (and be reset before anyone else gets the server), not reach the next
/// client.
#[test]
fn a_set_hidden_by_sql_mode_or_charset_does_not_reach_the_next_client() {
    const GBK_CHINESE_CI: u8 = 28;
    let db = mariadb(30);
    db.sql("", "SET GLOBAL sql_mode = 'NO_BACKSLASH_ESCAPES'")
        .unwrap();
    let proxy = start_mysql_proxy(&db, &shared_server());
    let rounds: [(u8, &[u8]); 2] = [
        // 0x81 0x60: its second byte is a backtick.
        (
            GBK_CHINESE_CI,
            b"SELECT 1 AS `\x81\x60`; SET @hidden = 1; SELECT 1 AS `x`",
        ),
        (
            DEFAULT_COLLATION,
            b"SELECT 'a\\'; SET @hidden = 1; SELECT ''",
        ),
    ];
    for (charset, hiding) in rounds {
        let mut a = MyClient::connect_in(proxy.port, charset).unwrap();
        let mut payload = vec![COM_QUERY];
        payload.extend_from_slice(hiding);
        a.command(&payload)
            .unwrap_or_else(|e| panic!("collation {charset}: {e}"));
        assert_eq!(one(&mut a, "SELECT @hidden"), "1", "collation {charset}");
        drop(a);
        let mut b = MyClient::connect_in(proxy.port, charset).unwrap();
        assert_eq!(
            one(&mut b, "SELECT @hidden"),
            "NULL",
            "in collation {charset}, a variable set behind a string reached another client"
        );
    }
    assert!(proxy.log().contains("reads differently"), "{}", proxy.log());
}

/// A client that logs in with a collation other than the server connection's gets result
/// columns described in that collation, as directly (mysql2 logs in with utf8mb4_unicode_ci,
/// 224; a server connection set with `collation_connection` alone described them in the
/// character set's default, 45).
#[test]
fn result_columns_carry_the_collation_the_client_logged_in_with() {
    use poolguard_mysql::resultset::ColumnDefinition;
    const UTF8MB4_UNICODE_CI: u8 = 224;
    let db = mariadb(30);
    let proxy = start_mysql_proxy(&db, &shared_server());
    for (target, port) in [("server", db.port()), ("poolguard", proxy.port)] {
        let mut c = MyClient::connect_in(port, UTF8MB4_UNICODE_CI).unwrap();
        let mut payload = vec![COM_QUERY];
        payload.extend_from_slice(b"SELECT 'a' AS x, @@collation_connection AS y");
        let packets = c.command_packets(&payload).unwrap();
        let column = ColumnDefinition::decode(&packets[1].payload).unwrap();
        assert_eq!(column.charset, u16::from(UTF8MB4_UNICODE_CI), "{target}");
    }
}
