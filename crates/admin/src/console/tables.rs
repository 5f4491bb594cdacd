//! One function per `SHOW` answer. PgBouncer's tables keep PgBouncer 1.18's columns; where
//! poolguard has no such notion the value is PgBouncer's neutral one (0, empty, NULL), listed in
//! docs/operations.md's "Admin console" section.
//!
//! Mapping: a PgBouncer pool is a poolguard pool (database + user on one front door); a client
//! is "active" while it holds a lease; servers are the leased connections ("active", linked to
//! their holder) and then the pooled idle ones ("idle", no link, empty `ptr`). SHOW STATS sums
//! the pools of each database; its averages are those of the last completed stats period
//! ([`crate::stats`]), 0 until one has completed. STATS_TOTALS and STATS_AVERAGES are its two
//! halves, from the same numbers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Column, Context, Kind, Table, CONSOLE_POOL, PGBOUNCER_VERSION};
use crate::model::{ClientSnapshot, LeaseSnapshot, PoolSnapshot, Snapshot};
use crate::stats::{micros, DatabaseTotals, StatsAverages};

const fn text(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Text,
    }
}

const fn int4(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Int4,
    }
}

const fn int8(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Int8,
    }
}

const fn numeric(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Numeric,
    }
}

type Row = Vec<Option<String>>;

fn s(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

fn table(columns: &[Column], rows: Vec<Row>) -> Table {
    debug_assert!(rows.iter().all(|r| r.len() == columns.len()));
    Table {
        columns: columns.to_vec(),
        rows,
    }
}

/// `(whole seconds, microsecond part)`, as PgBouncer splits maxwait / wait.
fn split_seconds(seconds: f64) -> (u64, u64) {
    let d = Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::ZERO);
    (d.as_secs(), u64::from(d.subsec_micros()))
}

/// `"ip:port"` (or `"[v6]:port"`) as `(ip, port)`.
pub fn split_host_port(addr: &str) -> (String, Option<u16>) {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => (
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port.parse().ok(),
        ),
        _ => (addr.to_owned(), None),
    }
}

/// `"2024-05-01 12:00:00 UTC"`, PgBouncer's timestamp format, for `now - ago`.
fn timestamp(now: SystemTime, ago_seconds: f64) -> String {
    let at = now
        .checked_sub(Duration::try_from_secs_f64(ago_seconds.max(0.0)).unwrap_or(Duration::ZERO))
        .unwrap_or(UNIX_EPOCH);
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (no negative dates here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn is_console(c: &ClientSnapshot) -> bool {
    c.pool == CONSOLE_POOL
}

/// The lease a client holds, if any (leases name their holder by address and protocol).
fn lease_of<'a>(snap: &'a Snapshot, c: &ClientSnapshot) -> Option<&'a LeaseSnapshot> {
    snap.leases
        .iter()
        .find(|l| l.client == c.client && l.protocol == c.protocol)
}

fn client_of<'a>(snap: &'a Snapshot, l: &LeaseSnapshot) -> Option<&'a ClientSnapshot> {
    snap.clients
        .iter()
        .find(|c| c.client == l.client && c.protocol == l.protocol)
}

fn leases_in<'a>(
    snap: &'a Snapshot,
    p: &'a PoolSnapshot,
) -> impl Iterator<Item = &'a LeaseSnapshot> {
    snap.leases
        .iter()
        .filter(move |l| l.pool == p.name && l.protocol == p.protocol)
}

/// How a server's `ptr` is written (a client's `ptr` is its id, what KILL_CLIENT takes).
fn lease_ptr(l: &LeaseSnapshot) -> String {
    format!("lease:{}", l.id)
}

pub(super) const POOLS: &[Column] = &[
    text("database"),
    text("user"),
    int4("cl_active"),
    int4("cl_waiting"),
    int4("cl_active_cancel_req"),
    int4("cl_waiting_cancel_req"),
    int4("sv_active"),
    int4("sv_active_cancel"),
    int4("sv_being_canceled"),
    int4("sv_idle"),
    int4("sv_used"),
    int4("sv_tested"),
    int4("sv_login"),
    int4("maxwait"),
    int4("maxwait_us"),
    text("pool_mode"),
];

pub(super) fn pools(snap: &Snapshot) -> Table {
    let mut rows: Vec<Row> = snap
        .pools
        .iter()
        .map(|p| {
            let (wait, wait_us) = split_seconds(p.oldest_wait_seconds);
            vec![
                s(&p.database),
                s(&p.user),
                s(leases_in(snap, p).count()),
                s(p.waiters),
                s(0),
                s(0),
                s(p.in_use),
                s(0),
                s(0),
                s(p.idle),
                s(0),
                s(0),
                s(p.connecting),
                s(wait),
                s(wait_us),
                s(&p.mode),
            ]
        })
        .collect();
    // The console's own pool, as PgBouncer lists it.
    let console = snap.clients.iter().filter(|c| is_console(c)).count();
    let mut own: Row = vec![s(CONSOLE_POOL), s(CONSOLE_POOL), s(console)];
    own.extend((0..12).map(|_| s(0)));
    own.push(s("statement"));
    rows.push(own);
    table(POOLS, rows)
}

/// SHOW CLIENTS and SHOW SERVERS share PgBouncer's layout.
pub(super) const SOCKETS: &[Column] = &[
    text("type"),
    text("user"),
    text("database"),
    text("state"),
    text("addr"),
    int4("port"),
    text("local_addr"),
    int4("local_port"),
    text("connect_time"),
    text("request_time"),
    int4("wait"),
    int4("wait_us"),
    int4("close_needed"),
    text("ptr"),
    text("link"),
    int4("remote_pid"),
    text("tls"),
    text("application_name"),
];

pub(super) fn clients(snap: &Snapshot, ctx: &Context) -> Table {
    let rows = snap
        .clients
        .iter()
        .map(|c| {
            let lease = lease_of(snap, c);
            // Holding a server: active. Without one, a statement sent and unanswered means
            // queued for a server (PgBouncer's "waiting"); otherwise idle between transactions.
            let state = match (lease, c.state.as_str()) {
                _ if is_console(c) => "active",
                (Some(_), _) => "active",
                (None, "active") => "waiting",
                (None, _) => "idle",
            };
            let (addr, port) = split_host_port(&c.client);
            let local = if c.protocol == "mysql" {
                ctx.mysql_listen
            } else {
                ctx.postgres_listen
            };
            let request_ago = lease.map_or(c.connected_seconds, |l| l.held_seconds);
            vec![
                s("C"),
                s(&c.user),
                s(&c.database),
                s(state),
                s(addr),
                port.map(|p| p.to_string()),
                local.map(|a| a.ip().to_string()),
                local.map(|a| a.port().to_string()),
                s(timestamp(ctx.now, c.connected_seconds)),
                s(timestamp(ctx.now, request_ago)),
                s(0),
                s(0),
                s(0),
                s(c.id),
                s(lease.map(lease_ptr).unwrap_or_default()),
                s(0),
                s(""),
                s(&c.application),
            ]
        })
        .collect();
    table(SOCKETS, rows)
}

/// The backend's current host, `(ip, port)`, as SHOW SERVERS writes it.
fn backend_addr(snap: &Snapshot, backend: &str) -> (String, Option<u16>) {
    let host = snap
        .backends
        .iter()
        .find(|b| b.name == backend)
        .map(|b| b.host.as_str())
        .unwrap_or_default();
    split_host_port(host)
}

/// One SHOW SERVERS row: `stamps` are `(connect_time, request_time)`, `link` the holder.
fn server_row(
    snap: &Snapshot,
    (user, database, backend): (&str, &str, &str),
    state: &str,
    stamps: (String, String),
    ptr: String,
    link: String,
    application: &str,
) -> Row {
    let (addr, port) = backend_addr(snap, backend);
    vec![
        s("S"),
        s(user),
        s(database),
        s(state),
        s(addr),
        port.map(|p| p.to_string()),
        None,
        None,
        s(stamps.0),
        s(stamps.1),
        s(0),
        s(0),
        s(0),
        s(ptr),
        s(link),
        s(0),
        s(""),
        s(application),
    ]
}

pub(super) fn servers(snap: &Snapshot, ctx: &Context) -> Table {
    let leased = snap.leases.iter().map(|l| {
        let stamp = timestamp(ctx.now, l.held_seconds);
        let link = client_of(snap, l).map(|c| c.id.to_string());
        server_row(
            snap,
            (&l.user, &l.database, &l.backend),
            "active",
            (stamp.clone(), stamp),
            lease_ptr(l),
            link.unwrap_or_default(),
            &l.application,
        )
    });
    let idle = snap.idle_servers.iter().map(|i| {
        let stamps = (
            timestamp(ctx.now, i.connected_seconds),
            timestamp(ctx.now, i.idle_seconds),
        );
        server_row(
            snap,
            (&i.user, &i.database, &i.backend),
            "idle",
            stamps,
            String::new(),
            String::new(),
            "",
        )
    });
    table(SOCKETS, leased.chain(idle).collect())
}

pub(super) const STATS: &[Column] = &[
    text("database"),
    numeric("total_xact_count"),
    numeric("total_query_count"),
    numeric("total_received"),
    numeric("total_sent"),
    numeric("total_xact_time"),
    numeric("total_query_time"),
    numeric("total_wait_time"),
    numeric("avg_xact_count"),
    numeric("avg_query_count"),
    numeric("avg_recv"),
    numeric("avg_sent"),
    numeric("avg_xact_time"),
    numeric("avg_query_time"),
    numeric("avg_wait_time"),
];

/// SHOW STATS_TOTALS and SHOW STATS_AVERAGES share PgBouncer 1.18's short names.
pub(super) const STATS_HALF: &[Column] = &[
    text("database"),
    numeric("xact_count"),
    numeric("query_count"),
    numeric("bytes_received"),
    numeric("bytes_sent"),
    numeric("xact_time"),
    numeric("query_time"),
    numeric("wait_time"),
];

/// Per database (pools summed, in name order): its totals' seven values and its averages'
/// seven, zeros for a database the last completed period does not cover.
fn stats_rows(snap: &Snapshot) -> Vec<(String, Row, Row)> {
    DatabaseTotals::per_database(&snap.pools)
        .into_iter()
        .map(|((db, protocol), t)| {
            let totals = vec![
                s(t.xacts),
                s(t.queries),
                s(t.received),
                s(t.sent),
                s(micros(t.xact_seconds)),
                s(micros(t.query_seconds)),
                s(micros(t.wait_seconds)),
            ];
            let avg = snap
                .stats_averages
                .iter()
                .find(|a| a.database == db && a.protocol == protocol)
                .cloned()
                .unwrap_or_default();
            let StatsAverages {
                xact_count,
                query_count,
                bytes_received,
                bytes_sent,
                xact_time,
                query_time,
                wait_time,
                ..
            } = avg;
            let averages = [
                xact_count,
                query_count,
                bytes_received,
                bytes_sent,
                xact_time,
                query_time,
                wait_time,
            ]
            .into_iter()
            .map(s)
            .collect();
            (db, totals, averages)
        })
        .collect()
}

pub(super) fn stats(snap: &Snapshot) -> Table {
    let rows = stats_rows(snap)
        .into_iter()
        .map(|(db, totals, averages)| [vec![s(db)], totals, averages].concat())
        .collect();
    table(STATS, rows)
}

pub(super) fn stats_totals(snap: &Snapshot) -> Table {
    let rows = stats_rows(snap)
        .into_iter()
        .map(|(db, totals, _)| [vec![s(db)], totals].concat())
        .collect();
    table(STATS_HALF, rows)
}

pub(super) fn stats_averages(snap: &Snapshot) -> Table {
    let rows = stats_rows(snap)
        .into_iter()
        .map(|(db, _, averages)| [vec![s(db)], averages].concat())
        .collect();
    table(STATS_HALF, rows)
}

pub(super) const DATABASES: &[Column] = &[
    text("name"),
    text("host"),
    int4("port"),
    text("database"),
    text("force_user"),
    int4("pool_size"),
    int4("min_pool_size"),
    int4("reserve_pool"),
    text("pool_mode"),
    int4("max_connections"),
    int4("current_connections"),
    int4("paused"),
    int4("disabled"),
];

pub(super) fn databases(snap: &Snapshot, ctx: &Context) -> Table {
    let mut rows: Vec<Row> = ctx
        .databases
        .iter()
        .map(|d| {
            let pools = snap
                .pools
                .iter()
                .filter(|p| p.database == d.name && p.protocol == d.protocol);
            let (open, paused) = pools.fold((0, snap.paused), |(n, paused), p| {
                (n + p.open, paused || p.paused)
            });
            let (host, port) = split_host_port(&d.host);
            vec![
                s(&d.name),
                s(host),
                port.map(|p| p.to_string()),
                s(&d.server_database),
                None,
                s(d.pool_size),
                s(0),
                s(d.reserve_pool),
                s(&d.pool_mode),
                s(d.max_connections),
                s(open),
                s(u8::from(paused)),
                s(0),
            ]
        })
        .collect();
    rows.push(vec![
        s(CONSOLE_POOL),
        None,
        ctx.postgres_listen.map(|a| a.port().to_string()),
        s(CONSOLE_POOL),
        s(CONSOLE_POOL),
        s(2),
        s(0),
        s(0),
        s("statement"),
        s(0),
        s(0),
        s(0),
        s(0),
    ]);
    table(DATABASES, rows)
}

pub(super) const LISTS: &[Column] = &[text("list"), int4("items")];

pub(super) fn lists(snap: &Snapshot, ctx: &Context) -> Table {
    let used_servers: usize = snap.pools.iter().map(|p| p.open).sum();
    let items = [
        ("databases", ctx.databases.len() + 1),
        ("users", ctx.users.len()),
        ("pools", snap.pools.len() + 1),
        ("free_clients", 0),
        ("used_clients", snap.clients.len()),
        // Admitted but not listed yet: still logging in.
        (
            "login_clients",
            snap.clients_connected.saturating_sub(snap.clients.len()),
        ),
        ("free_servers", 0),
        ("used_servers", used_servers),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ];
    let rows = items.iter().map(|(k, n)| vec![s(k), s(n)]).collect();
    table(LISTS, rows)
}

pub(super) const USERS: &[Column] = &[text("name"), text("pool_mode")];

pub(super) fn users(ctx: &Context) -> Table {
    let mut names = ctx.users.clone();
    names.sort();
    table(USERS, names.into_iter().map(|n| vec![s(n), None]).collect())
}

pub(super) const VERSION: &[Column] = &[text("version")];

pub(super) fn version(ctx: &Context) -> Table {
    // Exporters match "PgBouncer X.Y.Z" to pick the columns they expect.
    let v = format!("PgBouncer {PGBOUNCER_VERSION} (poolguard {})", ctx.version);
    table(VERSION, vec![vec![s(v)]])
}

pub(super) const CONFIG: &[Column] = &[
    text("key"),
    text("value"),
    text("default"),
    text("changeable"),
];

pub(super) fn config(ctx: &Context) -> Table {
    let rows = ctx
        .config
        .iter()
        .map(|e| {
            vec![
                s(&e.key),
                e.value.clone(),
                e.default.clone(),
                s(if e.changeable { "yes" } else { "no" }),
            ]
        })
        .collect();
    table(CONFIG, rows)
}

pub(super) const HOLDERS: &[Column] = &[
    text("application_name"),
    text("addr"),
    int4("leases"),
    int4("idle_in_transaction"),
    int4("leaked"),
    numeric("oldest_held_seconds"),
    text("pools"),
    text("last_statement"),
];

pub(super) fn holders(snap: &Snapshot) -> Table {
    // The same grouping as /api/holders.
    let rows = crate::api::holders(snap)
        .into_iter()
        .map(|g| {
            vec![
                s(g.application),
                s(g.address),
                s(g.leases),
                s(g.idle_in_transaction),
                s(g.leaked),
                s(format!("{:.3}", g.oldest_held_seconds)),
                s(g.pools.join(",")),
                s(g.last_statement),
            ]
        })
        .collect();
    table(HOLDERS, rows)
}

pub(super) const LEAKS: &[Column] = &[
    int8("lease_id"),
    int8("client_id"),
    text("pool"),
    text("protocol"),
    text("user"),
    text("database"),
    text("application_name"),
    text("addr"),
    int4("port"),
    numeric("held_seconds"),
    text("state"),
    text("last_statement"),
];

pub(super) fn leaks(snap: &Snapshot) -> Table {
    let rows = snap
        .leases
        .iter()
        .filter(|l| l.leak_reported)
        .map(|l| {
            let (addr, port) = split_host_port(&l.client);
            vec![
                s(l.id),
                client_of(snap, l).map(|c| c.id.to_string()),
                s(&l.pool),
                s(&l.protocol),
                s(&l.user),
                s(&l.database),
                s(&l.application),
                s(addr),
                port.map(|p| p.to_string()),
                s(format!("{:.3}", l.held_seconds)),
                s(&l.state),
                s(&l.last_statement),
            ]
        })
        .collect();
    table(LEAKS, rows)
}

pub(super) const DISCARDS: &[Column] = &[
    text("pool"),
    text("protocol"),
    text("reason"),
    int8("discarded"),
];

/// Every pool and reason, zeros included, so a script can read one cell without guessing.
pub(super) fn discards(snap: &Snapshot) -> Table {
    let rows = snap
        .pools
        .iter()
        .flat_map(|p| {
            p.discarded
                .iter()
                .map(move |(reason, n)| vec![s(&p.name), s(&p.protocol), s(reason), s(n)])
        })
        .collect();
    table(DISCARDS, rows)
}

#[cfg(test)]
mod tests;
