//! Idle clients rest in a worker's lot (no task, no place in tokio's reactor: `crate::lot` in
//! the proxy) and come back whenever they send something, through the real binary against
//! sandbox servers: `poolguard_clients_resting` counts them; a client that logs in and waits
//! rests; its query wakes it and is answered; it rests again after a second or two idle;
//! KILL_CLIENT reaches a resting client (its socket is shut down, the lot wakes it, it leaves)
//! and no other.
//!
//! Nothing depends on timing: every wait polls for a condition, with a generous bound only so a
//! broken build fails instead of hanging.

use std::time::Duration;

use poolguard_e2e::admin::{http_get, metric, wait_for, ADMIN, ADMIN_PASSWORD};
use poolguard_e2e::mysql::{mariadb, mysql_config_for, MyClient, MyPoolSpec};
use poolguard_e2e::rawpg::RawPg;
use poolguard_e2e::*;

const LIMIT: Duration = Duration::from_secs(60);
const CLIENTS: usize = 30;

/// `[limits]` lines, the admin HTTP listener on `http` and the console's user.
fn admin_and_limits(http: u16) -> String {
    format!(
        r#"max_client_connections = 1000

[admin]
listen = "127.0.0.1:{http}"
users = ["{ADMIN}"]

[[users]]
name = "{ADMIN}"
password = "{ADMIN_PASSWORD}"
"#
    )
}

fn resting(http: u16) -> Option<f64> {
    metric(
        &http_get(http, "/metrics"),
        "poolguard_clients_resting",
        &[],
    )
}

/// Waits until exactly `n` clients rest.
fn wait_resting(http: u16, n: usize, what: &str) {
    wait_for(LIMIT, what, || {
        (resting(http) == Some(n as f64)).then_some(())
    });
}

#[test]
fn idle_postgres_clients_rest_wake_on_their_queries_and_on_kill_client() {
    let pg = sandbox(30);
    let http = free_port();
    let spec = PoolSpec {
        limits: admin_and_limits(http),
        ..PoolSpec::default()
    };
    let proxy = Proxy::start(&pg, &spec);
    let mut clients: Vec<RawPg> = (0..CLIENTS)
        .map(|_| RawPg::login(proxy.port, USER, PASSWORD, DB))
        .collect();
    wait_resting(http, CLIENTS, "every client that logged in and waits rests");

    for (i, c) in clients.iter_mut().enumerate() {
        let answer = c
            .query(&format!("SELECT {i}"))
            .expect("a resting client's query is answered");
        assert_eq!(answer.rows, vec![vec![Some(i.to_string())]]);
    }
    wait_resting(http, CLIENTS, "idle again, every client rests again");

    // KILL_CLIENT on one resting client: it is woken, leaves, and is the only one.
    let mut console = RawPg::login(proxy.port, ADMIN, ADMIN_PASSWORD, "pgbouncer");
    let victim = clients.remove(0);
    let port = victim.local_port().to_string();
    let listed = console.query("SHOW CLIENTS").expect("SHOW CLIENTS");
    let rows = listed.rows_where("port", &port);
    assert_eq!(rows.len(), 1, "{:?}", listed.rows);
    let id = listed.value(rows[0], "ptr");
    console
        .query(&format!("KILL_CLIENT {id}"))
        .expect("KILL_CLIENT");
    wait_resting(http, CLIENTS - 1, "the killed client left the lot");
    let mut victim = victim;
    assert!(
        victim.query("SELECT 1").is_err(),
        "the killed client's connection is closed"
    );
    for c in &mut clients {
        let answer = c.query("SELECT 1").expect("the others are still served");
        assert_eq!(answer.rows, vec![vec![Some("1".to_owned())]]);
    }
}

#[test]
fn idle_mysql_clients_rest_and_wake_on_their_queries() {
    let maria = mariadb(30);
    let http = free_port();
    let mysql_port = free_port();
    let spec = MyPoolSpec {
        limits: admin_and_limits(http),
        ..MyPoolSpec::default()
    };
    let proxy = Proxy::start_with(&mysql_config_for(&maria, mysql_port, &spec), mysql_port);
    let mut clients: Vec<MyClient> = (0..CLIENTS)
        .map(|_| MyClient::connect(mysql_port).expect("MySQL login"))
        .collect();
    wait_resting(http, CLIENTS, "every client that logged in and waits rests");
    for (i, c) in clients.iter_mut().enumerate() {
        let got = c
            .scalar(&format!("SELECT {i}"))
            .expect("a resting client's query is answered");
        assert_eq!(got, Some(i.to_string()));
    }
    wait_resting(http, CLIENTS, "idle again, every client rests again");
    drop(clients);
    wait_resting(http, 0, "clients that left do not rest");
    drop(proxy);
}
