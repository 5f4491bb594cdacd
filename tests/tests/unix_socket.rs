//! Backends reached over a Unix socket (`hosts = ["/path/to/socket"]`): a PostgreSQL or
//! MariaDB on the same machine, without the loopback TCP stack. The server must see
//! poolguard's connections arrive on its socket, and what rides on a connection's address
//! (cancel requests, `query_timeout`) must find the server there too.

use poolguard_e2e::mysql::*;
use poolguard_e2e::*;

/// `config` with its one backend host replaced by `socket`.
fn over_socket(config: String, tcp_host: &str, socket: &std::path::Path) -> String {
    let tcp = format!("hosts = [\"{tcp_host}\"]");
    assert!(config.contains(&tcp), "{config}");
    config.replace(&tcp, &format!("hosts = [{:?}]", socket.to_str().unwrap()))
}

#[test]
fn postgres_over_its_unix_socket_with_cancels() {
    let pg = sandbox(20);
    let spec = PoolSpec {
        pool_size: 2,
        extra: "query_timeout = \"1s\"".into(),
        ..PoolSpec::default()
    };
    let port = free_port();
    let config = over_socket(
        config_for(&pg, port, &spec),
        &format!("127.0.0.1:{}", pg.port()),
        &pg.socket_path(),
    );
    let proxy = Proxy::start_with(&config, port);
    // A connection over a Unix socket has no client address on the server.
    let out = psql(
        proxy.port,
        "SELECT client_addr IS NULL FROM pg_stat_activity WHERE pid = pg_backend_pid()",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "t");
    // query_timeout cancels through the socket the connection came from.
    let out = psql(proxy.port, "SELECT pg_sleep(60)");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("canceling statement due to user request"),
        "{}",
        stderr(&out)
    );
    // The connection that ran it is clean again and serves the next client.
    let out = psql(proxy.port, "BEGIN; SELECT 7; COMMIT");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains('7'));
}

#[test]
fn mariadb_over_its_unix_socket() {
    let db = mariadb(20);
    let port = free_port();
    let config = over_socket(
        mysql_config_for(&db, port, &MyPoolSpec::default()),
        &format!("127.0.0.1:{}", db.port()),
        db.socket(),
    );
    let _proxy = Proxy::start_with(&config, port);
    let out = mariadb_cli(port, "SELECT USER()");
    assert!(out.status.success(), "{}", stderr(&out));
    // The server names a socket connection's host `localhost`, a TCP one's `127.0.0.1`.
    assert_eq!(stdout(&out), format!("{USER}@localhost"));
}
