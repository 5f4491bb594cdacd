//! Admission on the MySQL front door against a real MariaDB through the real binary: the waiter
//! cap and both rate limits refuse with 1203 (ER_TOO_MANY_USER_CONNECTIONS), at once, and the
//! clients that were admitted are unaffected. Counts and codes only.

use std::time::Duration;

use poolguard_e2e::admin::{http_get, metric, wait_for};
use poolguard_e2e::free_port;
use poolguard_e2e::mysql::*;

#[test]
fn waiter_cap_refuses_with_1203_and_the_waiting_client_is_served() {
    let db = mariadb(30);
    let admin = free_port();
    let spec = MyPoolSpec {
        pool_size: 1,
        budget: 2,
        extra: "max_waiters = 1\nacquire_timeout = \"30s\"".into(),
        limits: format!("\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"),
        ..MyPoolSpec::default()
    };
    let proxy = start_mysql_proxy(&db, &spec);
    let mut holder = MyClient::connect(proxy.port).unwrap();
    holder.query("BEGIN").unwrap();
    holder.query("SELECT 1").unwrap();

    let port = proxy.port;
    let waiting = std::thread::spawn(move || {
        let mut c = MyClient::connect(port).unwrap();
        c.scalar("SELECT 'served'")
    });
    wait_for(Duration::from_secs(20), "one waiter", || {
        let text = http_get(admin, "/metrics");
        (metric(&text, "poolguard_pool_waiters", &["pool=\"bank/app\""]) == Some(1.0)).then_some(())
    });
    let mut third = MyClient::connect(proxy.port).unwrap();
    let refused = third.scalar("SELECT 1").unwrap_err();
    assert_eq!(refused.code, 1203, "{refused}");
    assert!(refused.message.contains("max_waiters"), "{refused}");
    assert!(!waiting.is_finished());
    holder.query("COMMIT").unwrap();
    assert_eq!(waiting.join().unwrap().unwrap().as_deref(), Some("served"));
}

#[test]
fn rate_limits_refuse_with_1203() {
    let db = mariadb(30);
    let spec = MyPoolSpec {
        pool_size: 2,
        extra: "acquire_timeout = \"2s\"".into(),
        limits: r#"
[[rate_limits]]
per = "address"
connections_per_second = 0.001
burst = 2

[[rate_limits]]
per = "database"
transactions_per_second = 0.001
burst = 2
"#
        .into(),
        ..MyPoolSpec::default()
    };
    let proxy = start_mysql_proxy(&db, &spec);
    let mut first = MyClient::connect(proxy.port).expect("within the burst");
    let _second = MyClient::connect(proxy.port).expect("within the burst");
    let e = MyClient::connect(proxy.port)
        .err()
        .expect("the third connection is over the address's rate");
    assert_eq!(e.code, 1203, "{e}");
    assert!(e.message.contains("rate limit"), "{e}");

    // Two transactions fit the database's burst; the third is refused at once.
    assert_eq!(first.scalar("SELECT 1").unwrap().as_deref(), Some("1"));
    assert_eq!(first.scalar("SELECT 2").unwrap().as_deref(), Some("2"));
    let e = first.scalar("SELECT 3").unwrap_err();
    assert_eq!(e.code, 1203, "{e}");
    assert!(e.message.contains("transactions"), "{e}");
}
