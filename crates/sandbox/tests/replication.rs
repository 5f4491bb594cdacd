//! A hot standby of a sandbox: it replays the primary's writes, refuses its own, and takes writes
//! once promoted after the primary died.

use std::time::Duration;

use poolguard_sandbox::PgSandbox;

#[test]
fn standby_follows_then_takes_over_when_promoted() {
    let mut primary = PgSandbox::builder()
        .max_connections(20)
        .user("app", "app-secret")
        .database("bank", "app")
        .start()
        .unwrap();
    primary
        .psql_as(
            "app",
            "app-secret",
            "bank",
            "CREATE TABLE t (id int); INSERT INTO t VALUES (1);",
        )
        .unwrap();
    let standby = primary.standby().unwrap();
    assert_ne!(standby.port(), primary.port());
    assert_ne!(standby.data_dir(), primary.data_dir());
    assert!(standby.is_in_recovery().unwrap());
    assert!(!primary.is_in_recovery().unwrap());

    primary
        .psql_as("app", "app-secret", "bank", "INSERT INTO t VALUES (2);")
        .unwrap();
    primary
        .wait_replayed_by(&standby, Duration::from_secs(30))
        .unwrap();
    // Same roles and passwords: the standby is a copy of the primary's data.
    assert_eq!(
        standby
            .psql_as("app", "app-secret", "bank", "SELECT count(*) FROM t")
            .unwrap(),
        "2"
    );
    let err = standby
        .psql_as("app", "app-secret", "bank", "INSERT INTO t VALUES (3);")
        .unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");

    primary.kill();
    assert!(!primary.is_running());
    standby.promote().unwrap();
    assert!(!standby.is_in_recovery().unwrap());
    standby
        .psql_as("app", "app-secret", "bank", "INSERT INTO t VALUES (3);")
        .unwrap();
    assert_eq!(
        standby
            .psql_as("app", "app-secret", "bank", "SELECT count(*) FROM t")
            .unwrap(),
        "3"
    );
}
