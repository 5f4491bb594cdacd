//! One file descriptor per client, through the real binary: N idle clients on either door hold
//! N of poolguard's descriptors (not 2N, as when KILL_CLIENT kept a duplicate of each), and
//! KILL_CLIENT, which now reaches a socket by its descriptor number, never touches the
//! connection that number was handed to after its client left, and reaches a TLS client (the
//! socket under the TLS stream) without touching a plaintext one.
//!
//! Which descriptor holds which client is read from /proc (the socket's inode in
//! /proc/<pid>/fd joined with the connection's ports in /proc/<pid>/net/tcp), so the reuse is
//! observed, not assumed. Nothing depends on timing: every wait polls for a condition, with a
//! generous bound only so a broken build fails instead of hanging.

use std::time::Duration;

use poolguard_e2e::admin::{console_config, wait_for, ADMIN, ADMIN_PASSWORD};
use poolguard_e2e::fds::{door_sockets, open_fds, DoorSocket};
use poolguard_e2e::mysql::{mariadb, mysql_config_for, MyClient, MyPoolSpec};
use poolguard_e2e::rawpg::{Answer, RawPg};
use poolguard_e2e::*;

const LIMIT: Duration = Duration::from_secs(60);
/// Idle clients per door in the counting tests.
const CLIENTS: usize = 200;
/// Descriptors poolguard holds besides its clients' (runtime, listeners, log, server
/// connections): generous, and far below another `CLIENTS`.
const OVERHEAD: usize = 100;

/// `[limits]` lines, then the console (`[admin]` needs its HTTP listener too: its server poller
/// opens a connection every few seconds, which the tests below allow for).
fn console_and_limits() -> String {
    format!("max_client_connections = 1000\n{}", console_config())
}

/// poolguard in front of a sandbox PostgreSQL, and a console session kept open (so that asking
/// it costs no descriptor).
fn pg_proxy(pg: &PgSandbox) -> (Proxy, RawPg) {
    let spec = PoolSpec {
        limits: console_and_limits(),
        ..PoolSpec::default()
    };
    let proxy = Proxy::start(pg, &spec);
    let admin = console(proxy.port);
    (proxy, admin)
}

fn console(port: u16) -> RawPg {
    RawPg::login(port, ADMIN, ADMIN_PASSWORD, "pgbouncer")
}

fn show_clients(console: &mut RawPg) -> Answer {
    console.query("SHOW CLIENTS").expect("SHOW CLIENTS")
}

/// Waits until SHOW CLIENTS lists `n` clients of `user`, then checks poolguard holds exactly
/// one descriptor per client connected to `door` (`also` more: the console's own, on its door)
/// and few others.
fn assert_one_descriptor_each(
    proxy: &Proxy,
    console: &mut RawPg,
    door: u16,
    user: &str,
    n: usize,
    also: usize,
) {
    wait_for(LIMIT, &format!("{n} clients listed"), || {
        (show_clients(console).rows_where("user", user).len() == n).then_some(())
    });
    let held = door_sockets(proxy.pid(), door);
    let all = open_fds(proxy.pid());
    eprintln!(
        "{n} idle clients: {} descriptors on the door, {all} in all",
        held.len()
    );
    assert_eq!(
        held.len(),
        n + also,
        "one descriptor per client connection (a duplicate per client would make it {})",
        2 * (n + also)
    );
    assert!(
        all <= n + also + OVERHEAD,
        "{all} descriptors for {n} clients"
    );
}

#[test]
fn a_postgresql_client_costs_one_descriptor() {
    let pg = sandbox(20);
    let (proxy, mut admin) = pg_proxy(&pg);
    let clients: Vec<RawPg> = (0..CLIENTS)
        .map(|_| RawPg::login(proxy.port, USER, PASSWORD, DB))
        .collect();
    assert_one_descriptor_each(&proxy, &mut admin, proxy.port, USER, CLIENTS, 1);
    drop(clients);
}

#[test]
fn a_mysql_client_costs_one_descriptor() {
    let maria = mariadb(20);
    let (console_port, mysql_port) = (free_port(), free_port());
    let spec = MyPoolSpec {
        limits: console_and_limits(),
        ..MyPoolSpec::default()
    };
    // The console lives on the PostgreSQL door (no PostgreSQL database behind it).
    let config = format!(
        "[postgres]\nlisten = \"127.0.0.1:{console_port}\"\n{}",
        mysql_config_for(&maria, mysql_port, &spec)
    );
    let proxy = Proxy::start_with(&config, console_port);
    let mut admin = console(console_port);
    let clients: Vec<MyClient> = (0..CLIENTS)
        .map(|_| MyClient::connect(mysql_port).expect("MySQL login"))
        .collect();
    assert_one_descriptor_each(&proxy, &mut admin, mysql_port, USER, CLIENTS, 0);
    drop(clients);
}

/// The descriptor poolguard holds for the client on `peer_port`, once it is there.
fn descriptor_of(proxy: &Proxy, peer_port: u16) -> u32 {
    wait_for(
        LIMIT,
        &format!("the descriptor of client port {peer_port}"),
        || {
            door_sockets(proxy.pid(), proxy.port)
                .into_iter()
                .find(|s| s.peer_port == peer_port)
                .map(|s| s.fd)
        },
    )
}

/// SHOW CLIENTS' `ptr` (KILL_CLIENT's id) of the client on `peer_port`.
fn id_of(console: &mut RawPg, peer_port: u16) -> String {
    let clients = show_clients(console);
    let rows = clients.rows_where("port", &peer_port.to_string());
    assert_eq!(rows.len(), 1, "client port {peer_port}: {:?}", clients.rows);
    clients.value(rows[0], "ptr")
}

fn kill(console: &mut RawPg, id: &str) -> Result<String, String> {
    match console.query(&format!("KILL_CLIENT {id}")) {
        Ok(a) => Ok(a.notices.join("\n")),
        Err(e) => Err(format!("{:?}", e.and_then(|m| m.field(b'M')))),
    }
}

#[test]
fn kill_client_of_a_departed_client_spares_the_socket_that_got_its_descriptor() {
    let pg = sandbox(20);
    let (proxy, mut admin) = pg_proxy(&pg);

    let a = RawPg::login(proxy.port, USER, PASSWORD, DB);
    let a_port = a.local_port();
    let a_fd = descriptor_of(&proxy, a_port);
    let a_id = id_of(&mut admin, a_port);
    drop(a);
    wait_for(
        LIMIT,
        "client A gone: unlisted, its descriptor closed",
        || {
            let listed = show_clients(&mut admin).rows_where("ptr", &a_id).len();
            let held = door_sockets(proxy.pid(), proxy.port);
            (listed == 0 && !held.iter().any(|s| s.fd == a_fd)).then_some(())
        },
    );

    // The kernel hands out the lowest free number: new clients fill any lower gaps, then one
    // gets A's number (unless the server poller holds it for a moment: then the next one). Each
    // stays connected, so no number is freed meanwhile.
    let mut others = Vec::new();
    let b = loop {
        assert!(
            others.len() <= a_fd as usize + 16,
            "no new client got descriptor {a_fd}; held: {:?}",
            door_sockets(proxy.pid(), proxy.port)
        );
        let c = RawPg::login(proxy.port, USER, PASSWORD, DB);
        if descriptor_of(&proxy, c.local_port()) == a_fd {
            break c;
        }
        others.push(c);
    };
    let mut b = b;
    let b_port = b.local_port();
    let b_id = id_of(&mut admin, b_port);
    assert_ne!(a_id, b_id);

    // KILL_CLIENT for A: A is not listed any more, whatever holds its old number now.
    let refused = kill(&mut admin, &a_id).expect_err("A is gone");
    assert!(refused.contains("no client with id"), "{refused}");
    let b_now = DoorSocket {
        fd: a_fd,
        peer_port: b_port,
    };
    assert!(door_sockets(proxy.pid(), proxy.port).contains(&b_now));
    let answer = b.query("SELECT 1").expect("B still served");
    assert_eq!(answer.rows, vec![vec![Some("1".to_owned())]]);
    for c in &mut others {
        assert!(c.query("SELECT 1").is_ok(), "the other clients too");
    }

    // B itself is reachable at that number: KILL_CLIENT ends it, and only it.
    let done = kill(&mut admin, &b_id).expect("B killed");
    assert!(done.contains("disconnected"), "{done}");
    assert!(b.read().is_none(), "B's connection closed");
    for c in &mut others {
        assert!(c.query("SELECT 1").is_ok(), "the other clients untouched");
    }
}

#[test]
fn kill_client_reaches_a_tls_client_and_only_it() {
    let pki = poolguard_e2e::tls::Pki::new();
    let pg = sandbox(20);
    let spec = PoolSpec {
        front: pki.front("allow"),
        limits: console_and_limits(),
        ..PoolSpec::default()
    };
    let proxy = Proxy::start(&pg, &spec);
    let mut admin = console(proxy.port);
    let mut plain = RawPg::login(proxy.port, USER, PASSWORD, DB);
    let tls = [("PGSSLMODE", "require")];
    let victim = HeldPsql::start(proxy.port, "tls-victim", &tls, "BEGIN;\nSELECT 1;\n");
    let id = wait_for(LIMIT, "the TLS client holding a server", || {
        let clients = show_clients(&mut admin);
        let rows = clients.rows_where("application_name", "tls-victim");
        let row = rows.first()?;
        (clients.value(row, "state") == "active").then(|| clients.value(row, "ptr"))
    });

    let done = kill(&mut admin, &id).expect("killed");
    assert!(done.contains("disconnected"), "{done}");
    let out = victim.finish("SELECT 2;\n");
    assert!(!out.status.success(), "{}", stdout(&out));
    wait_for(LIMIT, "the TLS client unlisted", || {
        let listed = show_clients(&mut admin).rows_where("ptr", &id).len();
        (listed == 0).then_some(())
    });
    let answer = plain
        .query("SELECT 1")
        .expect("the plain client still served");
    assert_eq!(answer.rows, vec![vec![Some("1".to_owned())]]);
}
