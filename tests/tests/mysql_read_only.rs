//! Write routing by `@@global.read_only` through the real binary: two MariaDB sandboxes behind
//! one poolguard backend, the first configured host read-only. Health checks move writes to the
//! writable host, and back when the operator swaps the roles; every acknowledged write is on the
//! host that was writable. A backend that a reload adds is checked the same way.

use std::time::Duration;

use poolguard_e2e::admin::*;
use poolguard_e2e::mysql::*;
use poolguard_e2e::*;

mod hosts_common;
use hosts_common::event_messages;

/// One `INSERT` through poolguard on a fresh client connection to database `db`.
fn insert(port: u16, db: &str, note: &str) -> Result<(), MyError> {
    let mut c = MyClient::connect_as(port, USER, PASSWORD, Some(db))?;
    c.query(&format!("INSERT INTO t (note) VALUES ('{note}')"))
        .map(drop)
}

fn notes(db: &MariaDbSandbox) -> Vec<String> {
    db.sql(DB, "SELECT note FROM t ORDER BY id")
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Inserts (bounded: 60 s) until one is acknowledged; the refusals seen before it.
fn insert_until_acknowledged(port: u16, db: &str, note: &str) -> Vec<MyError> {
    let mut refusals = Vec::new();
    wait_for(
        Duration::from_secs(60),
        "an acknowledged write",
        || match insert(port, db, note) {
            Ok(()) => Some(()),
            Err(e) => {
                refusals.push(e);
                None
            }
        },
    );
    refusals
}

/// Two sandboxes with table `t`, the first one read-only.
fn read_only_and_writable() -> (MariaDbSandbox, MariaDbSandbox) {
    let (a, b) = (mariadb(30), mariadb(30));
    for db in [&a, &b] {
        db.sql(
            DB,
            "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(64) NOT NULL)",
        )
        .unwrap();
    }
    a.sql("", "SET GLOBAL read_only = 1").unwrap();
    (a, b)
}

#[test]
fn writes_follow_the_host_that_is_not_read_only() {
    let (a, b) = read_only_and_writable();

    let (port, admin) = (free_port(), free_port());
    let spec = MyPoolSpec {
        limits: format!("acquire_timeout = \"5s\"\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"),
        ..MyPoolSpec::default()
    };
    let one_host = format!("hosts = [\"127.0.0.1:{}\"]\n", a.port());
    let config = mysql_config_for(&a, port, &spec).replacen(
        &one_host,
        &format!(
            "hosts = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\nhealth_check_interval = \"250ms\"\n\
             health_check_timeout = \"2s\"\n",
            a.port(),
            b.port()
        ),
        1,
    );
    assert!(config.contains("health_check_interval"), "{config}");
    let proxy = Proxy::start_with(&config, port);

    // Until the first checks are in, writes go to the first host, which refuses them (1290).
    let refused = insert_until_acknowledged(port, DB, "first");
    eprintln!("before the move to the writable host: {refused:?}");
    assert!(
        refused.iter().all(|e| e.code == 1290),
        "only read-only refusals: {refused:?}"
    );
    assert_eq!(notes(&b), ["first"]);
    assert!(notes(&a).is_empty());

    // The operator swaps the roles: writes follow.
    b.sql("", "SET GLOBAL read_only = 1").unwrap();
    a.sql("", "SET GLOBAL read_only = 0").unwrap();
    let refused = insert_until_acknowledged(port, DB, "second");
    eprintln!("before the move back: {refused:?}");
    assert!(
        refused.iter().all(|e| e.code == 1290),
        "only read-only refusals: {refused:?}"
    );
    assert_eq!(notes(&a), ["second"]);
    assert_eq!(notes(&b), ["first"]);

    let failovers = event_messages(admin, "failover");
    eprintln!("failover events: {failovers:#?}");
    assert_eq!(failovers.len(), 2, "{failovers:#?}");
    assert!(failovers[0].contains("(standby)"), "{}", failovers[0]);
    drop(proxy);
}

#[test]
fn a_backend_added_by_reload_is_health_checked() {
    let (a, b) = read_only_and_writable();
    let (port, admin) = (free_port(), free_port());
    let spec = MyPoolSpec {
        limits: format!("acquire_timeout = \"5s\"\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"),
        ..MyPoolSpec::default()
    };
    let config = mysql_config_for(&b, port, &spec);
    let proxy = Proxy::start_with(&config, port);
    assert!(insert(port, DB, "before").is_ok());

    // The reload adds backend `pair` (read-only host first) and database `ledger` on it.
    let added = format!(
        "\n[[backends]]\nname = \"pair\"\nprotocol = \"mysql\"\n\
         hosts = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\nmax_connections = 5\n\
         health_check_interval = \"250ms\"\n\n\
         [[databases]]\nname = \"ledger\"\nserver_database = \"{DB}\"\nbackend = \"pair\"\n\
         pool_size = 2\n",
        a.port(),
        b.port()
    );
    // TOML tables may come in any order; append before `[[users]]` so `[limits]` keeps its keys.
    let reloaded = config.replacen("[[users]]", &format!("{added}\n[[users]]"), 1);
    std::fs::write(proxy.config_path(), &reloaded).unwrap();
    proxy.signal("HUP");
    wait_for(Duration::from_secs(30), "the reload", || {
        proxy.log().contains("configuration reloaded").then_some(())
    });

    // Without checks writes would stay on the read-only first host and be refused forever.
    let refused = insert_until_acknowledged(port, "ledger", "after");
    eprintln!("before the new backend's checks moved writes: {refused:?}");
    assert!(
        refused.iter().all(|e| e.code == 1290),
        "only read-only refusals: {refused:?}"
    );
    assert_eq!(notes(&b), ["before", "after"]);
    assert!(notes(&a).is_empty());
    let failovers = event_messages(admin, "failover");
    assert_eq!(failovers.len(), 1, "{failovers:#?}");
    assert!(failovers[0].contains("backend pair"), "{}", failovers[0]);
    drop(proxy);
}
