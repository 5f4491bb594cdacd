//! MySQL commands that need more than COM_QUERY, through transaction mode: COM_FIELD_LIST,
//! COM_RESET_CONNECTION, COM_STMT_SEND_LONG_DATA / COM_STMT_RESET / COM_STMT_CLOSE (long data
//! never leaks to another client), KILL QUERY routed by poolguard's connection ids, SHOW
//! WARNINGS after a statement with warnings, the hygiene timers client_idle_timeout (4031)
//! and idle_timeout (idle server connections closed), and a client's own `wait_timeout`.

use std::time::{Duration, Instant};

use poolguard_e2e::mysql::*;

fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

fn shared(limits: &str) -> MyPoolSpec {
    MyPoolSpec {
        pool_size: 1,
        budget: 2,
        limits: limits.into(),
        ..MyPoolSpec::default()
    }
}

/// COM_STMT_EXECUTE of a one-parameter statement (type VAR_STRING), the value inline or (None)
/// left to long data.
fn execute(id: u32, value: Option<&str>) -> Vec<u8> {
    let mut p = vec![0x17];
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 1, 0xfd, 0]);
    if let Some(v) = value {
        p.push(v.len() as u8);
        p.extend_from_slice(v.as_bytes());
    }
    p
}

fn long_data(id: u32, data: &str) -> Vec<u8> {
    let mut p = vec![0x18];
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(data.as_bytes());
    p
}

/// The text of the single row of a binary result set (its one string column).
fn binary_value(packets: &[poolguard_mysql::Packet]) -> String {
    let row = packets
        .iter()
        .rev()
        .find(|p| p.payload.first() == Some(&0) && p.payload.len() > 2)
        .expect("a row");
    // 0x00, null bitmap (1 byte for one column), lenenc string.
    let len = row.payload[2] as usize;
    String::from_utf8_lossy(&row.payload[3..3 + len]).into_owned()
}

#[test]
fn long_data_reset_close_field_list_and_reset_connection() {
    let db = mariadb(30);
    let proxy = start_mysql_proxy(&db, &shared(""));
    let mut a = MyClient::connect(proxy.port).unwrap();
    let sql = "SELECT CONCAT('<', ?, '>') AS v";
    let id = a.prepare(sql).unwrap();
    for part in ["abc", "def"] {
        a.write_packet(0, &long_data(id, part)).unwrap();
    }
    assert_eq!(
        binary_value(&a.command_packets(&execute(id, None)).unwrap()),
        "<abcdef>"
    );
    a.write_packet(0, &long_data(id, "zzz")).unwrap();
    let mut reset = vec![0x1a];
    reset.extend_from_slice(&id.to_le_bytes());
    a.command_packets(&reset).unwrap();
    assert_eq!(
        binary_value(&a.command_packets(&execute(id, Some("x"))).unwrap()),
        "<x>"
    );
    // Long data left behind by a closed statement never reaches another client.
    a.write_packet(0, &long_data(id, "secret")).unwrap();
    let mut close = vec![0x19];
    close.extend_from_slice(&id.to_le_bytes());
    a.write_packet(0, &close).unwrap();
    let mut b = MyClient::connect(proxy.port).unwrap();
    let bid = b.prepare(sql).unwrap();
    assert_eq!(
        binary_value(&b.command_packets(&execute(bid, Some("b"))).unwrap()),
        "<b>"
    );

    // COM_FIELD_LIST.
    a.query("CREATE TABLE fl (alpha INT, beta TEXT)").unwrap();
    let packets = a.command_packets(b"\x04fl\0").unwrap();
    let text: Vec<String> = packets
        .iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect();
    assert!(text.iter().any(|t| t.contains("alpha")) && text.iter().any(|t| t.contains("beta")));

    // COM_RESET_CONNECTION: user variables (and the pin they caused) are gone.
    a.query("SET @mine = 1").unwrap();
    a.command(&[0x1f]).unwrap();
    assert_eq!(a.scalar("SELECT @mine").unwrap(), None);
    assert!(proxy.log().contains("no longer pinned"), "{}", proxy.log());
    assert_eq!(
        b.scalar("SELECT 'b still served'").unwrap().as_deref(),
        Some("b still served")
    );
}

#[test]
fn kill_query_is_routed_by_poolguard_connection_id() {
    let db = mariadb(30);
    let proxy = start_mysql_proxy(&db, &MyPoolSpec::default());
    let port = proxy.port;
    let mut victim = MyClient::connect(port).unwrap();
    let id = victim.conn_id;
    // CONNECTION_ID() answers the same id the greeting gave (not the server thread's), in both
    // spellings, and not inside a string.
    let ids = victim
        .query("SELECT CONNECTION_ID(), connection_id ( ), 'CONNECTION_ID()'")
        .unwrap();
    assert_eq!(
        ids,
        vec![vec![
            Some(id.to_string()),
            Some(id.to_string()),
            Some("CONNECTION_ID()".to_owned())
        ]]
    );
    let sleeper = std::thread::spawn(move || victim.query("SELECT SLEEP(30)").map(drop));
    let find = "SELECT COUNT(*) FROM information_schema.processlist WHERE user = 'app' AND info LIKE 'SELECT SLEEP%'";
    assert!(eventually(Duration::from_secs(10), || db
        .sql("", find)
        .unwrap()
        == "1"));
    let mut killer = MyClient::connect(port).unwrap();
    killer.query(&format!("KILL QUERY {id}")).unwrap();
    let e = sleeper.join().unwrap().expect_err("interrupted");
    assert_eq!(e.code, 1317, "{e}");
    // An id that is neither poolguard's nor a server thread: the server says so.
    assert_eq!(killer.query("KILL QUERY 999999").unwrap_err().code, 1094);
}

/// KILL CONNECTION with poolguard's id ends that client, whether it is parked (idle, no
/// server) or running a statement (interrupted first), and nobody else.
#[test]
fn kill_connection_ends_the_named_client_idle_or_busy() {
    let db = mariadb(30);
    let proxy = start_mysql_proxy(&db, &MyPoolSpec::default());
    let port = proxy.port;
    let kills = |p: &str| p.matches("killed by KILL CONNECTION").count();
    let mut idle = MyClient::connect(port).unwrap();
    assert_eq!(idle.scalar("SELECT 1").unwrap().as_deref(), Some("1"));
    let mut killer = MyClient::connect(port).unwrap();
    killer.query(&format!("KILL {}", idle.conn_id)).unwrap();
    assert!(
        eventually(Duration::from_secs(30), || kills(&proxy.log()) == 1),
        "the parked client was not ended: {}",
        proxy.log()
    );
    assert!(idle.query("SELECT 1").is_err(), "its connection is closed");

    let mut busy = MyClient::connect(port).unwrap();
    let id = busy.conn_id;
    let sleeper = std::thread::spawn(move || {
        let r = busy.query("SELECT SLEEP(30)").map(drop);
        (busy, r)
    });
    let find = "SELECT COUNT(*) FROM information_schema.processlist WHERE user = 'app' AND info LIKE 'SELECT SLEEP%'";
    assert!(eventually(Duration::from_secs(10), || db
        .sql("", find)
        .unwrap()
        == "1"));
    killer.query(&format!("KILL CONNECTION {id}")).unwrap();
    let (mut busy, r) = sleeper.join().unwrap();
    assert!(r.is_err(), "the running statement was interrupted");
    assert!(
        eventually(Duration::from_secs(30), || kills(&proxy.log()) == 2),
        "the busy client was not ended: {}",
        proxy.log()
    );
    assert!(busy.query("SELECT 1").is_err(), "its connection is closed");
    assert_eq!(
        killer
            .scalar("SELECT 'killer still served'")
            .unwrap()
            .as_deref(),
        Some("killer still served")
    );
}

#[test]
fn warnings_stay_readable_after_the_statement() {
    let db = mariadb(30);
    let proxy = start_mysql_proxy(
        &db,
        &MyPoolSpec {
            pool_size: 2,
            budget: 3,
            ..MyPoolSpec::default()
        },
    );
    let mut a = MyClient::connect(proxy.port).unwrap();
    let mut b = MyClient::connect(proxy.port).unwrap();
    // Open both server connections.
    a.query("BEGIN").unwrap();
    b.query("BEGIN").unwrap();
    a.query("COMMIT").unwrap();
    b.query("COMMIT").unwrap();
    a.query("SELECT 1/0").unwrap();
    b.query("BEGIN").unwrap();
    b.query("SELECT 1").unwrap();
    let rows = a.query("SHOW WARNINGS").unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][1].as_deref(), Some("1365"), "{rows:?}");
    b.query("COMMIT").unwrap();
}

#[test]
fn idle_clients_and_idle_server_connections_are_closed() {
    let db = mariadb(30);
    let proxy = start_mysql_proxy(
        &db,
        &shared("client_idle_timeout = \"1s\"\nidle_timeout = \"1s\""),
    );
    let mut c = MyClient::connect(proxy.port).unwrap();
    assert_eq!(c.scalar("SELECT 1").unwrap().as_deref(), Some("1"));
    assert!(
        eventually(Duration::from_secs(10), || maria_app_connections(&db) == 0),
        "idle server connections closed by idle_timeout"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let e = c.query("SELECT 1").unwrap_err();
    assert_eq!(e.code, 4031, "{e}");
    assert!(e.message.contains("client_idle_timeout"), "{e}");
    let mut fresh = MyClient::connect(proxy.port).unwrap();
    assert_eq!(fresh.scalar("SELECT 2").unwrap().as_deref(), Some("2"));
}

/// A client's own `wait_timeout` closes it as the server would, though in transaction mode its
/// statements run on pooled servers that outlive it: after that long without a command
/// poolguard closes the connection without a word (MariaDB's way) and rolls back what the
/// client left open. The value is the server's reading of the SET (an expression here).
#[test]
fn a_clients_own_wait_timeout_closes_it_as_the_server_would() {
    let db = mariadb(30);
    db.sql("bank", "CREATE TABLE waited (id INT PRIMARY KEY)")
        .expect("create table");
    let proxy = start_mysql_proxy(&db, &shared(""));
    let mut c = MyClient::connect(proxy.port).unwrap();
    c.query("SET SESSION wait_timeout = 0 + 1").unwrap();
    c.query("BEGIN").unwrap();
    c.query("INSERT INTO waited VALUES (1)").unwrap();
    // Nothing more is sent: the next thing the client reads is the end of the connection
    // (no error packet), not a timeout of its 60 s read.
    let e = c.read_packet().unwrap_err();
    assert_eq!(e.message, "connection closed", "{e}");
    let mut other = MyClient::connect(proxy.port).unwrap();
    assert_eq!(
        other
            .scalar("SELECT COUNT(*) FROM waited")
            .unwrap()
            .as_deref(),
        Some("0"),
        "nothing the client left open was committed"
    );
}

/// SHOW PROCESSLIST shows a client under the id its greeting gave (the one CONNECTION_ID() and
/// KILL take here), as a server shows a client its own connection id; and KILL of another
/// user's client is the server's call: a user it lets kill others (SUPER, CONNECTION ADMIN)
/// may, one it does not gets 1095 (PyMySQL's own test_issue_36 does both).
#[test]
fn processlist_ids_and_kill_of_another_users_client() {
    let db = mariadb(30);
    db.sql(
        "",
        "CREATE USER 'boss'@'%' IDENTIFIED BY 'boss-secret'; GRANT ALL ON *.* TO 'boss'@'%'",
    )
    .expect("create user");
    let spec = MyPoolSpec {
        limits: "\n[[users]]\nname = \"boss\"\npassword = \"boss-secret\"\n".into(),
        ..MyPoolSpec::default()
    };
    let proxy = start_mysql_proxy(&db, &spec);
    let mut plain = MyClient::connect(proxy.port).unwrap();
    for sql in ["SHOW PROCESSLIST", "show full processlist"] {
        let rows = plain.query(sql).unwrap();
        let own: Vec<_> = rows
            .iter()
            .filter(|r| r.get(7).cloned().flatten().as_deref() == Some(sql))
            .map(|r| r.first().cloned().flatten())
            .collect();
        assert_eq!(
            own,
            vec![Some(plain.conn_id.to_string())],
            "{sql}: {rows:?}"
        );
    }
    let mut boss = MyClient::connect_as(proxy.port, "boss", "boss-secret", Some("bank")).unwrap();
    let e = plain
        .query(&format!("KILL {}", boss.conn_id))
        .expect_err("not the owner");
    assert_eq!(e.code, 1095, "{e}");
    boss.query(&format!("KILL {}", plain.conn_id)).unwrap();
    assert!(
        plain.query("SELECT 1").is_err(),
        "the killed client is closed"
    );
    assert_eq!(boss.scalar("SELECT 1").unwrap().as_deref(), Some("1"));
}

/// `KILL CONNECTION_ID()` kills the client's own connection, as directly (the MariaDB
/// connector's pool tests): an error, then the connection closed; not "unknown thread" for
/// poolguard's id sent to the server.
#[test]
fn kill_of_its_own_connection_id_closes_the_client() {
    let db = mariadb(30);
    let proxy = start_mysql_proxy(&db, &MyPoolSpec::default());
    for (target, port) in [("server", db.port()), ("poolguard", proxy.port)] {
        let mut c = MyClient::connect(port).unwrap();
        let e = c
            .query("KILL CONNECTION_ID()")
            .expect_err(&format!("{target}: killed"));
        assert_ne!(e.code, 1094, "{target}: {e}");
        assert!(c.query("SELECT 1").is_err(), "{target}: still connected");
    }
    let mut c = MyClient::connect(proxy.port).unwrap();
    assert_eq!(c.scalar("SELECT 1").unwrap().as_deref(), Some("1"));
}
