//! Headers and types as a running PgBouncer 1.18.0 sent them (psql -A -F '|' and the
//! RowDescription type oids), and the mapping from a snapshot.

use super::*;
use crate::console::{render, ConfigEntry, DatabaseInfo, Show};
use crate::model::{BackendSnapshot, IdleServerSnapshot};

/// `psql -A -F '|' -c 'SHOW ...'` header lines of PgBouncer 1.18.0.
const PGBOUNCER_1_18: &[(Show, &str)] = &[
    (Show::Pools, "database|user|cl_active|cl_waiting|cl_active_cancel_req|cl_waiting_cancel_req|sv_active|sv_active_cancel|sv_being_canceled|sv_idle|sv_used|sv_tested|sv_login|maxwait|maxwait_us|pool_mode"),
    (Show::Clients, "type|user|database|state|addr|port|local_addr|local_port|connect_time|request_time|wait|wait_us|close_needed|ptr|link|remote_pid|tls|application_name"),
    (Show::Servers, "type|user|database|state|addr|port|local_addr|local_port|connect_time|request_time|wait|wait_us|close_needed|ptr|link|remote_pid|tls|application_name"),
    (Show::Stats, "database|total_xact_count|total_query_count|total_received|total_sent|total_xact_time|total_query_time|total_wait_time|avg_xact_count|avg_query_count|avg_recv|avg_sent|avg_xact_time|avg_query_time|avg_wait_time"),
    (Show::StatsTotals, "database|xact_count|query_count|bytes_received|bytes_sent|xact_time|query_time|wait_time"),
    (Show::StatsAverages, "database|xact_count|query_count|bytes_received|bytes_sent|xact_time|query_time|wait_time"),
    (Show::Databases, "name|host|port|database|force_user|pool_size|min_pool_size|reserve_pool|pool_mode|max_connections|current_connections|paused|disabled"),
    (Show::Lists, "list|items"),
    (Show::Users, "name|pool_mode"),
    (Show::Version, "version"),
    (Show::Config, "key|value|default|changeable"),
];

/// RowDescription type oids PgBouncer 1.18.0 sent, in column order.
const OIDS_1_18: &[(Show, &[u32])] = &[
    (
        Show::Pools,
        &[
            25, 25, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 25,
        ],
    ),
    (
        Show::Clients,
        &[
            25, 25, 25, 25, 25, 23, 25, 23, 25, 25, 23, 23, 23, 25, 25, 23, 25, 25,
        ],
    ),
    (
        Show::Stats,
        &[
            25, 1700, 1700, 1700, 1700, 1700, 1700, 1700, 1700, 1700, 1700, 1700, 1700, 1700, 1700,
        ],
    ),
    (
        Show::Databases,
        &[25, 25, 23, 25, 25, 23, 23, 23, 25, 23, 23, 23, 23],
    ),
    (
        Show::StatsTotals,
        &[25, 1700, 1700, 1700, 1700, 1700, 1700, 1700],
    ),
    (
        Show::StatsAverages,
        &[25, 1700, 1700, 1700, 1700, 1700, 1700, 1700],
    ),
    (Show::Lists, &[25, 23]),
    (Show::Config, &[25, 25, 25, 25]),
];

fn pool(name: &str, db: &str, user: &str) -> PoolSnapshot {
    PoolSnapshot {
        name: name.into(),
        backend: "pg".into(),
        protocol: "postgres".into(),
        database: db.into(),
        user: user.into(),
        mode: "transaction".into(),
        ..Default::default()
    }
}

fn lease(id: u64, pool: &str, client: &str, app: &str, leaked: bool) -> LeaseSnapshot {
    LeaseSnapshot {
        id,
        pool: pool.into(),
        backend: "pg".into(),
        protocol: "postgres".into(),
        client: client.into(),
        user: "app".into(),
        database: "bank".into(),
        application: app.into(),
        held_seconds: 12.5,
        state: "idle in transaction".into(),
        last_statement: "BEGIN".into(),
        leak_reported: leaked,
    }
}

fn client(id: u64, addr: &str, app: &str, pool: &str) -> ClientSnapshot {
    ClientSnapshot {
        id,
        protocol: "postgres".into(),
        client: addr.into(),
        user: "app".into(),
        database: "bank".into(),
        application: app.into(),
        pool: pool.into(),
        state: "idle".into(),
        connected_seconds: 30.0,
        statements: 1,
        pinned: String::new(),
    }
}

fn idle_server(pool: &str, user: &str, connected: f64, idle: f64) -> IdleServerSnapshot {
    IdleServerSnapshot {
        pool: pool.into(),
        backend: "pg".into(),
        protocol: "postgres".into(),
        user: user.into(),
        database: "bank".into(),
        connected_seconds: connected,
        idle_seconds: idle,
    }
}

/// Two pools of `bank` (users app, ro), three clients of which two hold leases, one console;
/// three idle servers (two of bank/app, one of bank/ro).
fn workload() -> (Snapshot, Context) {
    let mut app = pool("bank/app", "bank", "app");
    (app.open, app.idle, app.in_use, app.waiters) = (4, 2, 2, 1);
    app.oldest_wait_seconds = 1.25;
    (app.transactions_total, app.queries_total) = (10, 30);
    (app.bytes_received_total, app.bytes_sent_total) = (1000, 5000);
    (app.transaction_seconds_total, app.acquire_wait_sum) = (2.0, 0.5);
    let mut ro = pool("bank/ro", "bank", "ro");
    (ro.transactions_total, ro.queries_total, ro.open) = (5, 5, 1);
    let snap = Snapshot {
        backends: vec![BackendSnapshot {
            name: "pg".into(),
            host: "127.0.0.1:5433".into(),
            ..Default::default()
        }],
        pools: vec![app, ro],
        clients: vec![
            client(1, "10.0.0.1:5000", "fees", "bank/app"),
            client(2, "10.0.0.1:5001", "fees", "bank/app"),
            client(3, "10.0.0.2:6000", "web", "bank/app"),
            client(4, "127.0.0.1:7000", "psql", CONSOLE_POOL),
        ],
        leases: vec![
            lease(11, "bank/app", "10.0.0.1:5000", "fees", true),
            lease(12, "bank/app", "10.0.0.1:5001", "fees", false),
        ],
        idle_servers: vec![
            idle_server("bank/app", "app", 100.0, 10.0),
            idle_server("bank/app", "app", 60.0, 1.0),
            idle_server("bank/ro", "ro", 30.0, 30.0),
        ],
        clients_connected: 5,
        ..Default::default()
    };
    let ctx = Context {
        version: "0.1.0".into(),
        postgres_listen: Some("127.0.0.1:6432".parse().unwrap()),
        mysql_listen: None,
        databases: vec![DatabaseInfo {
            name: "bank".into(),
            protocol: "postgres".into(),
            host: "127.0.0.1:5433".into(),
            server_database: "bankdb".into(),
            pool_size: 5,
            reserve_pool: 2,
            pool_mode: "transaction".into(),
            max_connections: 10,
        }],
        users: vec!["app".into(), "admin".into()],
        config: vec![ConfigEntry {
            key: "max_client_conn".into(),
            value: Some("100".into()),
            default: Some("10000".into()),
            changeable: true,
        }],
        now: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    };
    (snap, ctx)
}

fn cell<'a>(t: &'a Table, row: usize, col: &str) -> Option<&'a str> {
    let i = t.columns.iter().position(|c| c.name == col).unwrap();
    t.rows[row][i].as_deref()
}

#[test]
fn headers_and_types_are_pgbouncer_1_18s() {
    let (snap, ctx) = workload();
    for (what, header) in PGBOUNCER_1_18 {
        let t = render(*what, &snap, &ctx);
        assert_eq!(t.names().join("|"), *header, "{what:?}");
        assert!(
            t.rows.iter().all(|r| r.len() == t.columns.len()),
            "{what:?}"
        );
    }
    for (what, oids) in OIDS_1_18 {
        let t = render(*what, &snap, &ctx);
        let got: Vec<u32> = t.columns.iter().map(|c| c.kind.oid()).collect();
        assert_eq!(got, *oids, "{what:?}");
    }
}

#[test]
fn pools_count_holders_waiters_and_idle() {
    let (snap, ctx) = workload();
    let t = render(Show::Pools, &snap, &ctx);
    assert_eq!(t.rows.len(), 3, "two pools and the console's");
    assert_eq!(cell(&t, 0, "cl_active"), Some("2"));
    assert_eq!(cell(&t, 0, "cl_waiting"), Some("1"));
    assert_eq!(cell(&t, 0, "sv_active"), Some("2"));
    assert_eq!(cell(&t, 0, "sv_idle"), Some("2"));
    assert_eq!(cell(&t, 0, "maxwait"), Some("1"));
    assert_eq!(cell(&t, 0, "maxwait_us"), Some("250000"));
    assert_eq!(cell(&t, 0, "pool_mode"), Some("transaction"));
    assert_eq!(cell(&t, 2, "database"), Some(CONSOLE_POOL));
    assert_eq!(cell(&t, 2, "cl_active"), Some("1"));
}

#[test]
fn clients_and_servers_link_by_holder() {
    let (snap, ctx) = workload();
    let t = render(Show::Clients, &snap, &ctx);
    assert_eq!(t.rows.len(), 4);
    assert_eq!(cell(&t, 0, "state"), Some("active"));
    assert_eq!(cell(&t, 0, "addr"), Some("10.0.0.1"));
    assert_eq!(cell(&t, 0, "port"), Some("5000"));
    assert_eq!(cell(&t, 0, "local_port"), Some("6432"));
    assert_eq!(cell(&t, 0, "ptr"), Some("1"));
    assert_eq!(cell(&t, 0, "link"), Some("lease:11"));
    assert_eq!(cell(&t, 0, "application_name"), Some("fees"));
    assert_eq!(cell(&t, 0, "connect_time"), Some("2023-11-14 22:12:50 UTC"));
    assert_eq!(cell(&t, 2, "state"), Some("idle"));
    assert_eq!(cell(&t, 2, "link"), Some(""));
    let t = render(Show::Servers, &snap, &ctx);
    assert_eq!(t.rows.len(), 5, "two leased, three idle");
    assert_eq!(cell(&t, 0, "state"), Some("active"));
    assert_eq!(cell(&t, 0, "addr"), Some("127.0.0.1"));
    assert_eq!(cell(&t, 0, "port"), Some("5433"));
    assert_eq!(cell(&t, 0, "ptr"), Some("lease:11"));
    assert_eq!(cell(&t, 0, "link"), Some("1"));
}

#[test]
fn servers_list_idle_connections_unlinked() {
    let (snap, ctx) = workload();
    let t = render(Show::Servers, &snap, &ctx);
    let idle: Vec<usize> = (0..t.rows.len())
        .filter(|&r| cell(&t, r, "state") == Some("idle"))
        .collect();
    assert_eq!(
        idle,
        vec![2, 3, 4],
        "after the leased ones, in snapshot order"
    );
    for &r in &idle {
        assert_eq!(cell(&t, r, "type"), Some("S"));
        assert_eq!(cell(&t, r, "database"), Some("bank"));
        assert_eq!(cell(&t, r, "addr"), Some("127.0.0.1"));
        assert_eq!(cell(&t, r, "port"), Some("5433"));
        assert_eq!(cell(&t, r, "ptr"), Some(""));
        assert_eq!(cell(&t, r, "link"), Some(""), "no client holds it");
        assert_eq!(cell(&t, r, "application_name"), Some(""));
        assert_eq!(cell(&t, r, "wait"), Some("0"));
    }
    assert_eq!(cell(&t, 4, "user"), Some("ro"));
    // connect_time: when it was opened; request_time: when it was last returned.
    assert_eq!(cell(&t, 2, "connect_time"), Some("2023-11-14 22:11:40 UTC"));
    assert_eq!(cell(&t, 2, "request_time"), Some("2023-11-14 22:13:10 UTC"));
    // Idle rows are listed, not counted twice: SHOW POOLS counts them separately.
    let leased = (0..t.rows.len())
        .filter(|&r| cell(&t, r, "state") == Some("active"))
        .count();
    assert_eq!(leased, snap.leases.len());
}

#[test]
fn stats_sum_pools_per_database() {
    let (snap, ctx) = workload();
    let t = render(Show::Stats, &snap, &ctx);
    assert_eq!(t.rows.len(), 1);
    assert_eq!(cell(&t, 0, "total_xact_count"), Some("15"));
    assert_eq!(cell(&t, 0, "total_query_count"), Some("35"));
    assert_eq!(cell(&t, 0, "total_sent"), Some("5000"));
    assert_eq!(cell(&t, 0, "total_xact_time"), Some("2000000"));
    assert_eq!(cell(&t, 0, "total_wait_time"), Some("500000"));
    // No stats period has completed: the averages are 0, as in PgBouncer.
    for c in [
        "avg_xact_count",
        "avg_query_count",
        "avg_recv",
        "avg_wait_time",
    ] {
        assert_eq!(cell(&t, 0, c), Some("0"), "{c}");
    }
}

#[test]
fn stats_show_the_last_periods_averages() {
    let (mut snap, ctx) = workload();
    snap.stats_averages = vec![
        crate::stats::StatsAverages {
            database: "bank".into(),
            protocol: "postgres".into(),
            xact_count: 3,
            query_count: 7,
            bytes_received: 120,
            bytes_sent: 900,
            xact_time: 1500,
            query_time: 400,
            wait_time: 25,
        },
        // Another front door's database of the same name is not this one.
        crate::stats::StatsAverages {
            database: "bank".into(),
            protocol: "mysql".into(),
            xact_count: 99,
            ..Default::default()
        },
    ];
    let t = render(Show::Stats, &snap, &ctx);
    assert_eq!(t.rows.len(), 1);
    let got: Vec<_> = [
        "avg_xact_count",
        "avg_query_count",
        "avg_recv",
        "avg_sent",
        "avg_xact_time",
        "avg_query_time",
        "avg_wait_time",
    ]
    .iter()
    .map(|c| cell(&t, 0, c).unwrap())
    .collect();
    assert_eq!(got, ["3", "7", "120", "900", "1500", "400", "25"]);
    assert_eq!(cell(&t, 0, "total_xact_count"), Some("15"));

    // STATS_TOTALS and STATS_AVERAGES are SHOW STATS cut in two.
    let totals = render(Show::StatsTotals, &snap, &ctx);
    let averages = render(Show::StatsAverages, &snap, &ctx);
    assert_eq!(totals.rows[0][0].as_deref(), Some("bank"));
    assert_eq!(totals.rows[0][1..], t.rows[0][1..8]);
    assert_eq!(averages.rows[0][0].as_deref(), Some("bank"));
    assert_eq!(averages.rows[0][1..], t.rows[0][8..]);
    assert_eq!(cell(&averages, 0, "wait_time"), Some("25"));
    assert_eq!(cell(&totals, 0, "bytes_sent"), Some("5000"));
}

#[test]
fn databases_lists_and_extras() {
    let (snap, ctx) = workload();
    let t = render(Show::Databases, &snap, &ctx);
    assert_eq!(t.rows.len(), 2);
    assert_eq!(cell(&t, 0, "database"), Some("bankdb"));
    assert_eq!(cell(&t, 0, "force_user"), None);
    assert_eq!(cell(&t, 0, "pool_size"), Some("5"));
    assert_eq!(cell(&t, 0, "reserve_pool"), Some("2"));
    assert_eq!(cell(&t, 0, "current_connections"), Some("5"));
    assert_eq!(cell(&t, 1, "port"), Some("6432"));
    let t = render(Show::Lists, &snap, &ctx);
    assert_eq!(cell(&t, 4, "list"), Some("used_clients"));
    assert_eq!(cell(&t, 4, "items"), Some("4"));
    assert_eq!(cell(&t, 5, "items"), Some("1"));
    let t = render(Show::Version, &snap, &ctx);
    assert_eq!(
        cell(&t, 0, "version"),
        Some("PgBouncer 1.18.0 (poolguard 0.1.0)")
    );
    let t = render(Show::Holders, &snap, &ctx);
    assert_eq!(t.rows.len(), 1);
    assert_eq!(cell(&t, 0, "application_name"), Some("fees"));
    assert_eq!(cell(&t, 0, "leases"), Some("2"));
    assert_eq!(cell(&t, 0, "leaked"), Some("1"));
    let t = render(Show::Leaks, &snap, &ctx);
    assert_eq!(t.rows.len(), 1);
    assert_eq!(cell(&t, 0, "lease_id"), Some("11"));
    assert_eq!(cell(&t, 0, "client_id"), Some("1"));
    assert_eq!(cell(&t, 0, "held_seconds"), Some("12.500"));
}

#[test]
fn host_port_and_seconds_split() {
    assert_eq!(split_host_port("[::1]:5432"), ("::1".into(), Some(5432)));
    assert_eq!(split_host_port("db.local"), ("db.local".into(), None));
    assert_eq!(split_seconds(2.000_5), (2, 500));
    assert_eq!(timestamp(UNIX_EPOCH, 0.0), "1970-01-01 00:00:00 UTC");
    let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
    assert_eq!(timestamp(leap, 0.0), "2000-02-29 00:00:00 UTC");
}
