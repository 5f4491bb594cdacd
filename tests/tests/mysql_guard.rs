//! MySQL guard rails, checked from the client's side against a real MariaDB through the real
//! binary: wrong password (1045), hostile and oversized packets (1043, 1153, 1047), acquire
//! deadline (1040, naming pool, numbers and holder), client cap (1203), idle-in-transaction
//! reclaim (1205, rolled back), query timeout (1969 from MariaDB backends), clients vanishing
//! mid-transaction and mid-query, a server connection killed mid-query, LOAD DATA LOCAL refused.
//! Counts and behaviour are asserted, never timings.

use std::io::Write as _;
use std::time::{Duration, Instant};

use poolguard_e2e::mysql::*;
use poolguard_e2e::*;

fn one_server(limits: &str) -> MyPoolSpec {
    MyPoolSpec {
        pool_size: 1,
        budget: 2,
        limits: limits.to_owned(),
        ..MyPoolSpec::default()
    }
}

/// Polls `f` until it is true or `limit` passes; returns its last value.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn wrong_password_and_hostile_packets_are_refused() {
    let db = mariadb(30);
    let spec = MyPoolSpec {
        front: "max_allowed_packet = \"1MiB\"".into(),
        ..MyPoolSpec::default()
    };
    let proxy = start_mysql_proxy(&db, &spec);
    let port = proxy.port;
    let e = MyClient::connect_as(port, USER, "not-the-password", Some(DB))
        .err()
        .unwrap();
    assert_eq!(e.code, 1045, "{e}");
    let e = MyClient::connect_as(port, "nobody", PASSWORD, Some(DB))
        .err()
        .unwrap();
    assert_eq!(e.code, 1045, "{e}");
    let e = MyClient::connect_as(port, USER, PASSWORD, Some("nodb"))
        .err()
        .unwrap();
    assert_eq!(e.code, 1049, "{e}");

    // Pre-auth: garbage handshake response, an oversized one, and an SSL request.
    assert_eq!(
        err_code(&raw_after_greeting(port, &[3, 0, 0, 1, 1, 2, 3])),
        Some(1043)
    );
    assert_eq!(
        err_code(&raw_after_greeting(port, &[0, 0, 0x10, 1])),
        Some(1153)
    );
    let mut ssl = vec![32, 0, 0, 1];
    ssl.extend_from_slice(&(0x0200u32 | 0x0800 | 0x8000).to_le_bytes());
    ssl.extend_from_slice(&[0; 28]);
    assert_eq!(err_code(&raw_after_greeting(port, &ssl)), Some(1043));
    // A client asking for the compressed protocol, which is not offered: told so in plain
    // framing, rather than left waiting once it switches to compressed framing.
    let mut compress = vec![0, 0, 0, 1];
    compress.extend_from_slice(&(0x0200u32 | 0x8000 | 0x20).to_le_bytes());
    compress.extend_from_slice(&(1u32 << 24).to_le_bytes());
    compress.push(45);
    compress.extend_from_slice(&[0; 23]);
    compress.extend_from_slice(b"app\0\0");
    compress[0] = (compress.len() - 4) as u8;
    let answer = raw_after_greeting(port, &compress);
    let err = answer
        .iter()
        .find_map(|p| ErrPacket::decode(&p.payload).ok())
        .expect("an ERR packet");
    assert_eq!(err.code, 1043);
    assert!(
        err.message.contains("compressed protocol"),
        "{}",
        err.message
    );

    // Logged in: an unknown command is refused and the client stays.
    let mut c = MyClient::connect(port).unwrap();
    let e = c.command(&[0x12, 0, 0, 0, 0]).err().unwrap();
    assert_eq!(e.code, 1047, "{e}");
    assert_eq!(c.scalar("SELECT 6 * 7").unwrap().as_deref(), Some("42"));
    // A truncated COM_STMT_EXECUTE is malformed: 1047 and closed.
    let e = c.command(&[0x17, 1]).err().unwrap();
    assert_eq!(e.code, 1047, "{e}");
    assert!(
        c.query("SELECT 1").is_err(),
        "connection closed after a malformed packet"
    );
    // A packet over max_allowed_packet: 1153 from the header alone, and closed.
    let mut c = MyClient::connect(port).unwrap();
    c.stream.write_all(&[0, 0, 0x20, 0, 0x03]).unwrap();
    let p = c.read_packet().unwrap();
    assert_eq!(ErrPacket::decode(&p.payload).unwrap().code, 1153);
    assert!(c.read_packet().is_err(), "closed after 1153");

    // Nobody else was affected.
    let out = mariadb_cli(port, "SELECT 'still serving'");
    assert_eq!(stdout(&out), "still serving", "{}", stderr(&out));
}

#[test]
fn acquire_deadline_gives_1040_naming_pool_numbers_and_holder() {
    let db = mariadb(30);
    let proxy = start_mysql_proxy(&db, &one_server("acquire_timeout = \"1s\""));
    let mut holder = MyClient::connect(proxy.port).unwrap();
    holder.query("BEGIN").unwrap();
    holder.query("SELECT 1").unwrap();
    let mut waiter = MyClient::connect(proxy.port).unwrap();
    let e = waiter.query("SELECT 1").expect_err("pool is full");
    assert_eq!(e.code, 1040, "{e}");
    assert!(e.message.contains("bank/app"), "names the pool: {e}");
    assert!(e.message.contains("1 of 1"), "gives the numbers: {e}");
    assert!(
        e.message.contains("oldest holders: 127.0.0.1:"),
        "names the holder: {e}"
    );
    // The refused client is still connected and is served once the holder commits.
    holder.query("COMMIT").unwrap();
    assert_eq!(waiter.scalar("SELECT 7").unwrap().as_deref(), Some("7"));
}

#[test]
fn client_caps_give_1203() {
    let db = mariadb(30);
    let spec = MyPoolSpec {
        limits: "max_client_connections = 3".into(),
        extra: "max_client_connections = 2".into(),
        ..MyPoolSpec::default()
    };
    let proxy = start_mysql_proxy(&db, &spec);
    let a = MyClient::connect(proxy.port).unwrap();
    let _b = MyClient::connect(proxy.port).unwrap();
    // The database allows 2.
    let e = MyClient::connect(proxy.port).err().unwrap();
    assert_eq!(e.code, 1203, "{e}");
    assert!(e.message.contains("max_client_connections"), "{e}");
    drop(a);
    std::thread::sleep(Duration::from_millis(200));
    let mut again = MyClient::connect(proxy.port).expect("a place was given back");
    assert_eq!(again.scalar("SELECT 1").unwrap().as_deref(), Some("1"));
    // poolguard as a whole allows 3: the 4th is refused before the greeting.
    let _c = MyClient::connect_as(proxy.port, USER, PASSWORD, Some(DB));
    let e = MyClient::connect(proxy.port).err().unwrap();
    assert_eq!(e.code, 1203, "{e}");
}

#[test]
fn idle_transaction_is_rolled_back_and_its_server_returned() {
    let db = mariadb(30);
    let proxy = start_mysql_proxy(&db, &one_server("idle_in_transaction_timeout = \"1s\""));
    let mut setup = MyClient::connect(proxy.port).unwrap();
    setup
        .query("CREATE TABLE leak (id int PRIMARY KEY)")
        .unwrap();
    drop(setup);
    let mut leaky = MyClient::connect(proxy.port).unwrap();
    leaky.query("BEGIN").unwrap();
    leaky.query("INSERT INTO leak VALUES (1)").unwrap();
    // The only server is held by the idle transaction; another client gets it once reclaimed.
    let mut other = MyClient::connect(proxy.port).unwrap();
    assert_eq!(
        other
            .scalar("SELECT COUNT(*) FROM leak")
            .unwrap()
            .as_deref(),
        Some("0")
    );
    let e = leaky.query("COMMIT").expect_err("reclaimed");
    assert_eq!(e.code, 1205, "told why: {e}");
    assert!(e.message.contains("idle_in_transaction_timeout"), "{e}");
    assert!(e.message.contains("rolled back"), "{e}");
    assert!(leaky.query("SELECT 1").is_err(), "disconnected");
    assert_eq!(
        db.sql(DB, "SELECT COUNT(*) FROM leak").unwrap(),
        "0",
        "rolled back"
    );
    assert!(proxy.log().contains("idle_in_transaction_timeout"));
}

#[test]
fn query_timeout_kills_the_statement_and_the_client_stays() {
    let db = mariadb(30);
    let proxy = start_mysql_proxy(&db, &one_server("query_timeout = \"1s\""));
    let mut c = MyClient::connect(proxy.port).unwrap();
    let e = c.query("SELECT SLEEP(20)").expect_err("killed");
    assert_eq!(e.code, 1969, "MariaDB's statement timeout code: {e}");
    assert!(e.message.contains("query_timeout"), "{e}");
    assert_eq!(
        c.scalar("SELECT 'after'").unwrap().as_deref(),
        Some("after")
    );
    // Inside a transaction the transaction survives, as with the server's own timeout.
    c.query("CREATE TABLE q (id int)").unwrap();
    c.query("BEGIN").unwrap();
    c.query("INSERT INTO q VALUES (1)").unwrap();
    assert_eq!(c.query("SELECT SLEEP(20)").err().unwrap().code, 1969);
    c.query("COMMIT").unwrap();
    assert_eq!(
        c.scalar("SELECT COUNT(*) FROM q").unwrap().as_deref(),
        Some("1")
    );
}

#[test]
fn vanishing_clients_leave_nothing_behind() {
    let db = mariadb(30);
    let proxy = start_mysql_proxy(&db, &one_server("acquire_timeout = \"10s\""));
    let mut setup = MyClient::connect(proxy.port).unwrap();
    setup
        .query("CREATE TABLE money (id int PRIMARY KEY, v int)")
        .unwrap();
    setup.query("INSERT INTO money VALUES (1, 100)").unwrap();
    drop(setup);
    let before = maria_app_connections(&db);

    // Mid-transaction: its update is rolled back, never committed.
    let mut gone = MyClient::connect(proxy.port).unwrap();
    gone.query("BEGIN").unwrap();
    gone.query("UPDATE money SET v = 0 WHERE id = 1").unwrap();
    drop(gone);
    let mut next = MyClient::connect(proxy.port).unwrap();
    assert_eq!(
        next.scalar("SELECT v FROM money WHERE id = 1")
            .unwrap()
            .as_deref(),
        Some("100")
    );
    drop(next);

    // Mid-statement: the statement is killed so the only server is free again.
    let mut sleeper = MyClient::connect(proxy.port).unwrap();
    sleeper.write_packet(0, b"\x03SELECT SLEEP(60)").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(sleeper);
    let mut next = MyClient::connect(proxy.port).unwrap();
    assert_eq!(
        next.scalar("SELECT 'served'").unwrap().as_deref(),
        Some("served")
    );
    assert!(
        eventually(Duration::from_secs(10), || {
            db
            .sql("", "SELECT COUNT(*) FROM information_schema.processlist WHERE user = 'app' AND info LIKE 'SELECT SLEEP%'")
            .unwrap() == "0"
        }),
        "the sleeping statement was killed"
    );
    assert!(
        eventually(Duration::from_secs(10), || maria_app_connections(&db)
            == before),
        "server connection count unchanged: {} before, {} now",
        before,
        maria_app_connections(&db)
    );
    assert_eq!(db.sql(DB, "SELECT v FROM money").unwrap(), "100");
}

#[test]
fn server_connection_killed_mid_query_is_discarded() {
    let db = mariadb(30);
    let proxy = start_mysql_proxy(&db, &one_server(""));
    let port = proxy.port;
    let client = std::thread::spawn(move || {
        let mut c = MyClient::connect(port).unwrap();
        let e = c.query("SELECT SLEEP(30)").err();
        let after = c.scalar("SELECT 'reconnected'");
        (e, after)
    });
    let find = "SELECT id FROM information_schema.processlist WHERE user = 'app' AND info LIKE 'SELECT SLEEP%'";
    assert!(eventually(Duration::from_secs(10), || !db
        .sql("", find)
        .unwrap()
        .is_empty()));
    let thread = db.sql("", find).unwrap();
    db.sql("", &format!("KILL {thread}")).unwrap();
    let (e, after) = client.join().unwrap();
    let e = e.expect("the statement failed");
    // The server's own 1927 (connection killed), or poolguard's 2013 "Lost connection to
    // server during query" when the socket closed first: both what a driver expects.
    assert!(e.code == 1927 || e.code == 2013, "{e}");
    // Outside a transaction the client carries on, on a fresh server connection.
    match after {
        Ok(v) => assert_eq!(v.as_deref(), Some("reconnected")),
        Err(e) => assert!(e.code == 2006 || e.code == 2013, "{e}"),
    }
    let out = mariadb_cli(port, "SELECT 'pool still serves'");
    assert_eq!(stdout(&out), "pool still serves", "{}", stderr(&out));
}

/// A server connection that dies between commands, inside the client's transaction: the client's
/// next command gets 2006 "server has gone away" (the code drivers reconnect on), and the pool
/// serves the next client.
#[test]
fn server_gone_between_commands_is_2006() {
    let db = mariadb(30);
    let proxy = start_mysql_proxy(&db, &one_server(""));
    let mut c = MyClient::connect(proxy.port).unwrap();
    c.query("CREATE TABLE gone (a int)").unwrap();
    c.query("BEGIN").unwrap();
    c.query("INSERT INTO gone VALUES (1)").unwrap();
    let find =
        "SELECT id FROM information_schema.processlist WHERE user = 'app' AND command = 'Sleep'";
    let thread = db.sql("", find).unwrap();
    assert!(
        !thread.trim().is_empty() && !thread.contains('\n'),
        "one server connection: {thread:?}"
    );
    db.sql("", &format!("KILL {thread}")).unwrap();
    // poolguard tells the client as soon as it sees the server go: wait for those bytes (an
    // event, not a delay), so the COMMIT below is sent after the loss, never racing it.
    c.stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(c.stream.peek(&mut byte).expect("poolguard's answer"), 1);
    let e = c.query("COMMIT").expect_err("the transaction is gone");
    assert_eq!(e.code, 2006, "{e}");
    assert!(e.message.contains("gone away"), "{e}");
    assert_eq!(
        db.sql(DB, "SELECT COUNT(*) FROM gone").unwrap().trim(),
        "0",
        "nothing of the transaction was committed"
    );
    let out = mariadb_cli(proxy.port, "SELECT 'pool still serves'");
    assert_eq!(stdout(&out), "pool still serves", "{}", stderr(&out));
}

#[test]
fn load_data_local_is_refused_unless_enabled() {
    let db = mariadb(30);
    let proxy = start_mysql_proxy(&db, &MyPoolSpec::default());
    // As the server refuses a client that did not offer CLIENT_LOCAL_FILES (poolguard offers
    // it only with allow_local_infile): 4166, before anything of the text runs, the second
    // LOAD of a batch included (it once hung, its file request left unanswered).
    for (target, port) in [("server", db.port()), ("poolguard", proxy.port)] {
        let mut c = MyClient::connect(port).unwrap();
        c.query("CREATE TABLE IF NOT EXISTS l (a int)").unwrap();
        let load = "LOAD DATA LOCAL INFILE '/etc/hostname' INTO TABLE l";
        for sql in [
            load.to_owned(),
            format!("{load}; {load}"),
            format!("{load}; INSERT INTO l VALUES (1)"),
        ] {
            let e = c.query(&sql).expect_err("refused");
            assert_eq!(e.code, 4166, "{target}: {sql}: {e}");
            assert!(e.message.contains("local infile"), "{target}: {e}");
            assert_eq!(
                c.scalar("SELECT COUNT(*) FROM l").unwrap().as_deref(),
                Some("0"),
                "{target}: {sql}"
            );
        }
    }
}

#[test]
fn budget_check_reads_max_connections() {
    let db = mariadb(20);
    let port = free_port();
    let config = mysql_config_for(
        &db,
        port,
        &MyPoolSpec {
            budget: 25,
            ..MyPoolSpec::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, &config).unwrap();
    let out = run_within(
        std::process::Command::new(poolguard_bin())
            .args(["check", "--config"])
            .arg(&path),
        Duration::from_secs(30),
    );
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("max_connections 20"), "{text}");
    assert!(text.contains("DOES NOT FIT: 6 more"), "{text}");
    let fits = config.replace("max_connections = 25", "max_connections = 15");
    std::fs::write(&path, fits).unwrap();
    let out = run_within(
        std::process::Command::new(poolguard_bin())
            .args(["check", "--config"])
            .arg(&path),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("fits, 4 left"), "{}", stdout(&out));
}
