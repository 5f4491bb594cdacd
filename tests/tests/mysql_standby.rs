//! Standby databases through the real binary: two MariaDB sandboxes behind one poolguard
//! backend, the writable one first (the write host) and a read-only one second (a "replica" for
//! poolguard: a host whose `@@global.read_only` is 1; no real replication is needed). Database
//! `bank` goes to the write host; `bank_ro` and `bank_ro_strict` (`target = "standby"`, same
//! server database `bank`) go to the replica, where writes are refused with 1290. When the
//! replica stops being read-only, `bank_ro` falls back to the write host and `bank_ro_strict`
//! refuses its clients with 2003 until the replica is read-only again.
//!
//! A host is picked when a server connection is opened; a host becoming or ceasing to be a
//! standby retires the standby databases' pools, so the change reaches the connections they
//! already hold (the second test: default lifetimes, bounded waits).

use std::time::{Duration, Instant};

use poolguard_e2e::admin::*;
use poolguard_e2e::mysql::*;
use poolguard_e2e::*;

const WAIT: Duration = Duration::from_secs(60);

/// Where one statement through poolguard ran: the server's port and `@@global.read_only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Landed {
    port: u16,
    read_only: bool,
}

/// A fresh client connection to database `db` through poolguard (port `port`): where its
/// `SELECT` ran, and the name in the server's table `t`. A refusal at login or at the query is
/// the error.
fn land(port: u16, db: &str) -> Result<(Landed, String), MyError> {
    let mut c = MyClient::connect_as(port, USER, PASSWORD, Some(db))?;
    let rows = c.query("SELECT @@port, @@global.read_only, (SELECT name FROM t LIMIT 1)")?;
    let row = rows.first().cloned().unwrap_or_default();
    let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    Ok((
        Landed {
            port: field(0).parse().unwrap_or(0),
            read_only: field(1) == "1",
        },
        field(2),
    ))
}

/// `n` fresh client connections to `db`, one after another; where each landed.
fn land_n(port: u16, db: &str, n: usize) -> Vec<Landed> {
    (0..n)
        .map(|i| {
            land(port, db)
                .unwrap_or_else(|e| panic!("client {i} of {db}: {e}"))
                .0
        })
        .collect()
}

/// Waits (bounded) for a client of `db` to land on the server listening on `on`.
fn wait_to_land(port: u16, db: &str, on: u16, what: &str) -> (Landed, String) {
    wait_for(WAIT, what, || {
        land(port, db).ok().filter(|(l, _)| l.port == on)
    })
}

/// Waits (bounded) for a client of `db` to land on the server listening on `on`, then checks
/// that `n` more fresh clients all land there too; the first landing and its row name.
fn settled_on(port: u16, db: &str, on: u16, n: usize) -> (Landed, String) {
    let first = wait_to_land(port, db, on, &format!("{db} on :{on}"));
    let rest = land_n(port, db, n);
    assert!(rest.iter().all(|l| l.port == on), "{db} on :{on}: {rest:?}");
    first
}

/// Polls `f` every 200 ms for at most `limit`; its first `Some`, or `None` (never panics).
fn within<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Two sandboxes, each with table `t` holding one row naming the server. Returns (write host,
/// replica); the replica is made read-only if `replica_read_only`.
fn two_servers(replica_read_only: bool) -> (MariaDbSandbox, MariaDbSandbox) {
    let (primary, replica) = (mariadb(30), mariadb(30));
    for (db, name) in [(&primary, "primary"), (&replica, "replica")] {
        db.sql(
            DB,
            &format!(
                "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(64) NOT NULL);\
                 INSERT INTO t (name) VALUES ('{name}')"
            ),
        )
        .unwrap();
    }
    if replica_read_only {
        replica.sql("", "SET GLOBAL read_only = 1").unwrap();
    }
    (primary, replica)
}

fn rows_in_t(db: &MariaDbSandbox) -> String {
    db.sql(DB, "SELECT COUNT(*) FROM t").unwrap()
}

fn addr(db: &MariaDbSandbox) -> String {
    format!("127.0.0.1:{}", db.port())
}

/// Backend `maria` with the write host first and the replica second, checked every 250 ms;
/// databases `bank` (primary), `bank_ro` (standby, falls back) and `bank_ro_strict` (standby,
/// no fallback). Budget 12: three pools
/// of 3 (one per database, user `app`) plus one unit per host for the health checks.
fn config(primary: &MariaDbSandbox, replica: &MariaDbSandbox, port: u16, admin: u16) -> String {
    let (p, r) = (addr(primary), addr(replica));
    format!(
        r#"
[mysql]
listen = "127.0.0.1:{port}"

[[backends]]
name = "maria"
protocol = "mysql"
hosts = ["{p}", "{r}"]
max_connections = 12
health_check_interval = "250ms"
health_check_timeout = "2s"

[[databases]]
name = "{DB}"
backend = "maria"
pool_mode = "transaction"
pool_size = 3
max_overflow = 0

[[databases]]
name = "bank_ro"
server_database = "{DB}"
backend = "maria"
pool_mode = "transaction"
pool_size = 3
max_overflow = 0
target = "standby"

[[databases]]
name = "bank_ro_strict"
server_database = "{DB}"
backend = "maria"
pool_mode = "transaction"
pool_size = 3
max_overflow = 0
target = "standby"
standby_fallback = false

[[users]]
name = "{USER}"
password = "{PASSWORD}"

[limits]
acquire_timeout = "5s"

[admin]
listen = "127.0.0.1:{admin}"
"#
    )
}

/// The role the last health check gave `host`, from `/api/servers`.
fn role_of(admin: u16, host: &str) -> Option<String> {
    let servers: serde_json::Value =
        serde_json::from_str(&http_get(admin, "/api/servers")).expect("servers JSON");
    servers
        .as_array()?
        .iter()
        .flat_map(|b| b["hosts"].as_array().cloned().unwrap_or_default())
        .find(|h| h["addr"] == host)
        .and_then(|h| h["role"].as_str().map(str::to_owned))
}

/// Waits (bounded) until the health checks have seen `host` as `role`.
fn wait_for_role(admin: u16, host: &str, role: &str) {
    wait_for(WAIT, &format!("{host} seen as {role}"), || {
        (role_of(admin, host).as_deref() == Some(role)).then_some(())
    });
}

#[test]
fn standby_databases_read_from_the_replica_and_fall_back_or_refuse_without_one() {
    let (primary, replica) = two_servers(true);
    let (port, admin) = (free_port(), free_port());
    let proxy = Proxy::start_with(&config(&primary, &replica, port, admin), port);
    // Before the first checks no host is known to be a standby (bank_ro would fall back).
    wait_for_role(admin, &addr(&replica), "standby");
    wait_for_role(admin, &addr(&primary), "primary");

    // 1. Standby databases read on the replica, bank on the write host.
    let first = settled_on(port, "bank_ro", replica.port(), 6);
    assert!(first.0.read_only, "{first:?}");
    assert_eq!(first.1, "replica");
    let strict = land_n(port, "bank_ro_strict", 6);
    assert!(
        strict
            .iter()
            .all(|l| l.port == replica.port() && l.read_only),
        "bank_ro_strict on the replica: {strict:?}"
    );
    let rw = land_n(port, DB, 6);
    assert!(
        rw.iter().all(|l| l.port == primary.port() && !l.read_only),
        "bank on the write host: {rw:?}"
    );
    assert_eq!(land(port, DB).unwrap().1, "primary");

    // A write through the standby database reaches the replica, which refuses it: `app` has
    // privileges on `bank` only (no SUPER / READ ONLY ADMIN), so read_only applies to it.
    let mut c = MyClient::connect_as(port, USER, PASSWORD, Some("bank_ro")).unwrap();
    let refused = c
        .query("INSERT INTO t (name) VALUES ('written through bank_ro')")
        .expect_err("a write on the replica");
    assert_eq!(refused.code, 1290, "{refused}");
    assert!(refused.message.contains("read-only"), "{refused}");
    drop(c);
    assert_eq!(
        (rows_in_t(&primary), rows_in_t(&replica)),
        ("1".into(), "1".into())
    );

    // 2. The replica stops being read-only: no host is a standby any more.
    replica.sql("", "SET GLOBAL read_only = 0").unwrap();
    wait_for_role(admin, &addr(&replica), "primary");
    // bank_ro falls back to the write host...
    let fallback = settled_on(port, "bank_ro", primary.port(), 6);
    assert_eq!(fallback.1, "primary");
    // ...and bank_ro_strict refuses its clients with 2003.
    let strict_refusal = wait_for(WAIT, "a bank_ro_strict refusal", || {
        land(port, "bank_ro_strict").err()
    });
    assert_eq!(strict_refusal.code, 2003, "{strict_refusal}");
    assert!(
        strict_refusal.message.contains("no read-only replica"),
        "{strict_refusal}"
    );
    for i in 0..3 {
        match land(port, "bank_ro_strict") {
            Err(e) => assert_eq!(e.code, 2003, "refusal {i}: {e}"),
            Ok(l) => panic!("bank_ro_strict served without a replica: {l:?}"),
        }
    }
    let rw = land_n(port, DB, 3);
    assert!(rw.iter().all(|l| l.port == primary.port()), "{rw:?}");

    // 3. The replica is read-only again: both standby databases go back to it.
    replica.sql("", "SET GLOBAL read_only = 1").unwrap();
    wait_for_role(admin, &addr(&replica), "standby");
    let back = settled_on(port, "bank_ro_strict", replica.port(), 6);
    assert!(back.0.read_only, "{back:?}");
    let ro_back = settled_on(port, "bank_ro", replica.port(), 6);

    // 4. The admin API names each pool's target.
    let pools: serde_json::Value =
        serde_json::from_str(&http_get(admin, "/api/pools")).expect("pools JSON");
    let target = |name: &str| {
        pools
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["protocol"] == "mysql" && p["name"] == name)
            .map(|p| p["target"].clone())
            .unwrap_or_else(|| panic!("no pool {name}: {pools}"))
    };
    assert_eq!(target("bank_ro/app"), "standby");
    assert_eq!(target("bank_ro_strict/app"), "standby");
    assert_eq!(target("bank/app"), "primary");

    eprintln!(
        "standby: bank -> :{} (write host); bank_ro, bank_ro_strict -> :{} (replica), INSERT via \
         bank_ro -> {}; replica writable: bank_ro -> :{}, bank_ro_strict -> {}; replica \
         read-only again: bank_ro_strict -> :{}, bank_ro -> :{}; /api/pools targets standby",
        primary.port(),
        replica.port(),
        refused.code,
        fallback.0.port,
        strict_refusal,
        back.0.port,
        ro_back.0.port
    );
    drop(proxy);
}

/// With default lifetimes, a role change of a host that is not the write host reaches the
/// standby pools' open connections: `bank_ro` leaves the write host it fell back to once the
/// replica is read-only, and `bank_ro_strict` is refused (writes included) once the replica is
/// writable, rather than served by the connections it already held.
#[test]
fn a_role_change_reaches_connections_the_standby_pools_already_hold() {
    let (primary, replica) = two_servers(false);
    let (port, admin) = (free_port(), free_port());
    let proxy = Proxy::start_with(&config(&primary, &replica, port, admin), port);
    let limit = Duration::from_secs(20);
    wait_for_role(admin, &addr(&replica), "primary");
    wait_for_role(admin, &addr(&primary), "primary");

    // No standby yet: bank_ro falls back (its pool now holds a connection to the write host).
    let ro = land_n(port, "bank_ro", 3);
    assert!(ro.iter().all(|l| l.port == primary.port()), "{ro:?}");

    // The replica becomes read-only: bank_ro should move to it.
    replica.sql("", "SET GLOBAL read_only = 1").unwrap();
    wait_for_role(admin, &addr(&replica), "standby");
    let strict = wait_to_land(port, "bank_ro_strict", replica.port(), "bank_ro_strict");
    let ro_moved = within(limit, || {
        land(port, "bank_ro")
            .ok()
            .filter(|(l, _)| l.port == replica.port())
    });
    let ro_now = land(port, "bank_ro").map(|(l, _)| l);

    // The replica becomes writable: bank_ro_strict (whose pool holds a connection to it)
    // should refuse, writes included.
    replica.sql("", "SET GLOBAL read_only = 0").unwrap();
    wait_for_role(admin, &addr(&replica), "primary");
    let strict_refused = within(limit, || land(port, "bank_ro_strict").err());
    let strict_now = land(port, "bank_ro_strict").map(|(l, _)| l);
    let write =
        MyClient::connect_as(port, USER, PASSWORD, Some("bank_ro_strict")).and_then(|mut c| {
            c.query("INSERT INTO t (name) VALUES ('written through bank_ro_strict')")
        });
    let replica_rows = rows_in_t(&replica);

    eprintln!(
        "role changes vs pooled connections: bank_ro_strict -> :{} while the replica is read-only; \
         bank_ro moved to the replica: {}, now {ro_now:?}; replica writable: bank_ro_strict \
         refused: {strict_refused:?}, now {strict_now:?}; INSERT via bank_ro_strict: {write:?}; \
         rows on the replica: {replica_rows} (write host :{}, replica :{})",
        strict.0.port,
        ro_moved.is_some(),
        primary.port(),
        replica.port()
    );
    assert!(
        ro_moved.is_some(),
        "bank_ro stayed on the write host it fell back to: {ro_now:?}"
    );
    assert!(
        strict_refused.is_some_and(|e| e.code == 2003),
        "bank_ro_strict served by a host that is not read-only: {strict_now:?}"
    );
    assert!(
        write.is_err(),
        "a write through bank_ro_strict was acknowledged"
    );
    assert_eq!(
        replica_rows, "1",
        "the replica took a write through a standby database"
    );
    drop(proxy);
}
