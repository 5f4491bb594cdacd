//! A fallback database entry (`[[databases]] name = "*"`, like PgBouncer's `*`): a database
//! the config does not list is served on the fallback's backend under its own name (test suites
//! and tools create databases as they go), on both doors; a listed database keeps its own
//! entry, and a database the server does not have gets the server's own error.

use poolguard_e2e::mysql::*;
use poolguard_e2e::*;

const FALLBACK_PG: &str = "\n[[databases]]\nname = \"*\"\nbackend = \"pg\"\npool_size = 2\n";
const FALLBACK_MY: &str = "\n[[databases]]\nname = \"*\"\nbackend = \"maria\"\npool_size = 2\n";

#[test]
fn postgres_serves_unlisted_databases_through_the_fallback() {
    let pg = sandbox(30);
    pg.psql("postgres", "CREATE DATABASE other OWNER app")
        .expect("create database");
    let spec = PoolSpec {
        extra: FALLBACK_PG.into(),
        ..PoolSpec::default()
    };
    let proxy = Proxy::start(&pg, &spec);
    let on = |db: &str| {
        let mut cmd = psql_command(proxy.port);
        // psql_command names `bank`; a later -d wins.
        cmd.args(["-d", db, "-c", "SELECT current_database()"]);
        run_pg(&mut cmd)
    };
    let other = on("other");
    assert!(other.status.success(), "{}", stderr(&other));
    assert_eq!(stdout(&other), "other");
    let bank = on("bank");
    assert_eq!(stdout(&bank), "bank", "{}", stderr(&bank));
    let missing = on("nosuch");
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("database \"nosuch\" does not exist"),
        "the server's own error: {}",
        stderr(&missing)
    );
}

#[test]
fn mysql_serves_unlisted_databases_through_the_fallback() {
    let db = mariadb(30);
    db.sql(
        "",
        "CREATE DATABASE other; GRANT ALL ON other.* TO 'app'@'%'",
    )
    .expect("create database");
    let spec = MyPoolSpec {
        extra: FALLBACK_MY.into(),
        ..MyPoolSpec::default()
    };
    let proxy = start_mysql_proxy(&db, &spec);
    let mut c = MyClient::connect_as(proxy.port, USER, PASSWORD, Some("other")).expect("login");
    assert_eq!(
        c.scalar("SELECT DATABASE()").unwrap().as_deref(),
        Some("other")
    );
    let mut b = MyClient::connect(proxy.port).expect("login to bank");
    assert_eq!(
        b.scalar("SELECT DATABASE()").unwrap().as_deref(),
        Some("bank")
    );
    let missing = MyClient::connect_as(proxy.port, USER, PASSWORD, Some("nosuch"));
    let e = missing.err().expect("no such database");
    assert!(
        e.code == 1049 || e.code == 1044,
        "the server's own error: {e}"
    );
}

/// A config whose only MySQL entry is the fallback: clients are greeted (the server's version
/// is learnt by a login without a database), and a client naming no database is logged in
/// without one, as on the server, in both modes. A schema such a client selects stays its own:
/// a server connection that logged in without a schema is not handed to the next such client
/// with one (pool of one, so without that rule the next client would get the same server).
#[test]
fn mysql_fallback_alone_serves_clients_naming_no_database() {
    let db = mariadb(30);
    for mode in ["session", "transaction"] {
        let port = free_port();
        let config = format!(
            "[mysql]\nlisten = \"127.0.0.1:{port}\"\n\n[[backends]]\nname = \"maria\"\n\
             protocol = \"mysql\"\nhosts = [\"127.0.0.1:{}\"]\nmax_connections = 10\n\n\
             [[databases]]\nname = \"*\"\nbackend = \"maria\"\npool_mode = \"{mode}\"\n\
             pool_size = 1\n\n[[users]]\nname = \"{USER}\"\npassword = \"{PASSWORD}\"\n",
            db.port()
        );
        let proxy = Proxy::start_with(&config, port);
        let mut a = MyClient::connect_as(proxy.port, USER, PASSWORD, None)
            .unwrap_or_else(|e| panic!("{mode}: login naming no database: {e}"));
        assert_eq!(a.scalar("SELECT DATABASE()").unwrap(), None, "{mode}");
        a.query("USE bank").unwrap();
        assert_eq!(
            a.scalar("SELECT DATABASE()").unwrap().as_deref(),
            Some("bank"),
            "{mode}"
        );
        drop(a);
        let mut b = MyClient::connect_as(proxy.port, USER, PASSWORD, None).expect("second login");
        assert_eq!(
            b.scalar("SELECT DATABASE()").unwrap(),
            None,
            "{mode}: the first client's schema leaked to the next"
        );
        drop(b);
        let mut c = MyClient::connect(proxy.port).expect("login naming bank");
        assert_eq!(
            c.scalar("SELECT DATABASE()").unwrap().as_deref(),
            Some("bank"),
            "{mode}"
        );
        let star = MyClient::connect_as(proxy.port, USER, PASSWORD, Some("*"));
        assert_eq!(
            star.err().map(|e| e.code),
            Some(1049),
            "{mode}: `*` is no database"
        );
    }
}

/// A database used through poolguard can be dropped through poolguard, as on a direct
/// connection: the idle server connections poolguard keeps to it are closed first (the server
/// refuses DROP DATABASE while any session is connected to the database).
#[test]
fn a_database_used_through_poolguard_can_be_dropped() {
    let pg = sandbox(30);
    for mode in ["transaction", "session"] {
        dropped_through(&pg, mode);
    }
}

fn dropped_through(pg: &PgSandbox, mode: &'static str) {
    pg.psql("postgres", "CREATE DATABASE scratch OWNER app")
        .expect("create database");
    let spec = PoolSpec {
        mode,
        extra: FALLBACK_PG.into(),
        ..PoolSpec::default()
    };
    let proxy = Proxy::start(pg, &spec);
    let mut used = psql_command(proxy.port);
    used.args(["-d", "scratch", "-c", "SELECT current_database()"]);
    let used = run_pg(&mut used);
    assert_eq!(stdout(&used), "scratch", "{}", stderr(&used));
    // Its server connection now waits idle in poolguard's pool.
    let dropped = psql(proxy.port, "DROP DATABASE scratch");
    assert!(dropped.status.success(), "{mode}: {}", stderr(&dropped));
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'scratch'"
        )
        .unwrap()
        .trim(),
        "0"
    );
}
