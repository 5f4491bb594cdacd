//! What the proxy tells the admin side: the client list ([`crate::clients`]), leak detection,
//! the server polls, the error counts and the stats periods, and the [`poolguard_admin::Source`]
//! implementation that turns all of it (plus every pool's status, leases and idle connections)
//! into a snapshot.
//!
//! Invariants: sessions touch this at most once per client (describe/forget) and once per
//! error; the leak watcher, the server poller and the stats period run in their own tasks,
//! once a second, every [`POLL_PERIOD`] and every [`STATS_PERIOD`], and never hold a lock
//! across `.await`. The stats period reads the pools' counters (atomics, one short status lock
//! per pool) and nothing on a client's path.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poolguard_admin::model::{BackendSnapshot, IdleServerSnapshot, LeaseSnapshot, PoolSnapshot};
use poolguard_admin::stats::{DatabaseTotals, StatsPeriods, STATS_PERIOD};
use poolguard_admin::{EventKind, EventLog, Snapshot, Source};
use poolguard_pool::{Connector, IdleRecord, LeaseRecord, PoolStatus};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::{Database, PoolMode, Protocol};
use crate::lock;
use crate::state::Shared;
use crate::tls::connect::ServerTls;
use crate::traffic::TrafficTotals;

/// How often each backend's own connection numbers are read.
pub const POLL_PERIOD: Duration = Duration::from_secs(5);
/// How often leases are checked against `leak_threshold`.
const LEAK_PERIOD: Duration = Duration::from_secs(1);

/// A backend's last poll.
#[derive(Debug, Clone, Default)]
struct ServerPoll {
    connections: Option<u64>,
    max_connections: Option<u64>,
    error: Option<String>,
}

/// The proxy's observability state (one per [`Shared`]).
#[derive(Default)]
pub struct Observe {
    pub events: EventLog,
    /// The logged-in clients (SHOW CLIENTS, KILL_CLIENT).
    pub clients: crate::clients::ClientList,
    servers: Mutex<HashMap<String, ServerPoll>>,
    errors: Mutex<BTreeMap<(&'static str, String), u64>>,
    idle_in_transaction_kills: AtomicU64,
    /// SHOW STATS averages: the totals at the current period's start, the last period's
    /// averages. Written once per [`STATS_PERIOD`].
    stats: Mutex<StatsPeriods>,
    /// Console PAUSE: reported only (see docs/operations.md).
    pub paused: std::sync::atomic::AtomicBool,
    /// Tasks stopped by a panic ([`crate::contain`]).
    pub panics: AtomicU64,
    /// Idle clients resting in the workers' lots ([`crate::lot`]).
    pub resting: std::sync::atomic::AtomicUsize,
}

impl Observe {
    /// Counts an error sent to a client (SQLSTATE or MySQL code).
    pub fn count_error(&self, protocol: &'static str, code: String) {
        if code == "25P03" || code == "1205" {
            self.idle_in_transaction_kills
                .fetch_add(1, Ordering::Relaxed);
        }
        *lock(&self.errors).entry((protocol, code)).or_default() += 1;
    }
}

/// Starts the leak watcher, the stats period and the server poller.
pub fn spawn(shared: &Arc<Shared>) -> Vec<JoinHandle<()>> {
    let weak = Arc::downgrade(shared);
    let leaks = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(LEAK_PERIOD);
        loop {
            ticks.tick().await;
            let Some(shared) = weak.upgrade() else { return };
            check_leaks(&shared);
        }
    });
    // The console may be enabled by a reload, so the periods run whatever the configuration.
    let stats = spawn_stats(shared, STATS_PERIOD);
    // The server polls open a connection as a configured user every few seconds; they only
    // feed /metrics and the dashboard, so they run only when the admin listener is configured.
    if shared.config().admin_listen.is_none() {
        return vec![leaks, stats];
    }
    let weak = Arc::downgrade(shared);
    let polls = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(POLL_PERIOD);
        loop {
            ticks.tick().await;
            let Some(shared) = weak.upgrade() else { return };
            poll_servers(&shared).await;
        }
    });
    vec![leaks, stats, polls]
}

/// Closes a stats period every `period` ([`STATS_PERIOD`]; tests pass a shorter one). The
/// first tick, at once, only starts the first period, so the averages stay empty (0 on the
/// console) until a whole period has passed.
fn spawn_stats(shared: &Arc<Shared>, period: Duration) -> JoinHandle<()> {
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        // A late tick makes one longer period (measured), not a burst of short ones.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(shared) = weak.upgrade() else { return };
            close_stats_period(&shared, Instant::now());
        }
    })
}

/// Ends the current stats period at `now` with every database's totals (summed as SHOW STATS
/// sums them, from the same pool snapshots).
fn close_stats_period(shared: &Shared, now: Instant) {
    let pools: Vec<PoolSnapshot> = pools(shared).iter().map(|v| v.snapshot(0, 0)).collect();
    let totals = DatabaseTotals::per_database(&pools);
    lock(&shared.observe.stats).close(now, totals);
}

/// One pool as the snapshot sees it.
struct PoolView {
    protocol: &'static str,
    db: Database,
    user: String,
    status: PoolStatus,
    leases: Vec<LeaseRecord>,
    idle: Vec<IdleRecord>,
    traffic: TrafficTotals,
}

impl PoolView {
    fn snapshot(&self, clients: usize, statements: u64) -> PoolSnapshot {
        pool_snapshot(
            self.protocol,
            &self.db,
            &self.user,
            &self.status,
            clients,
            statements,
            &self.traffic,
        )
    }

    fn idle_servers(&self, now: Instant) -> impl Iterator<Item = IdleServerSnapshot> + '_ {
        let ago = move |t: Instant| now.saturating_duration_since(t).as_secs_f64();
        self.idle.iter().map(move |i| IdleServerSnapshot {
            pool: self.status.name.clone(),
            backend: self.db.backend.clone(),
            protocol: self.protocol.to_owned(),
            user: self.user.clone(),
            database: self.db.name.clone(),
            connected_seconds: ago(i.opened_at),
            idle_seconds: ago(i.idle_since),
        })
    }
}

/// Every pool of both front doors, read now.
fn pools(shared: &Shared) -> Vec<PoolView> {
    let pg = shared
        .pg_pools()
        .into_iter()
        .map(|e| PoolView::read("postgres", &e.db(), &e.user, &e.pool, &e.traffic));
    let mysql = shared
        .mysql
        .pools()
        .into_iter()
        .map(|e| PoolView::read("mysql", &e.db(), &e.user, &e.pool, &e.traffic));
    pg.chain(mysql).collect()
}

impl PoolView {
    /// One pool of either protocol, read now.
    fn read<C: Connector>(
        protocol: &'static str,
        db: &Database,
        user: &str,
        pool: &poolguard_pool::Pool<C>,
        traffic: &crate::traffic::Traffic,
    ) -> PoolView {
        PoolView {
            protocol,
            db: db.clone(),
            user: user.to_owned(),
            status: pool.status(),
            leases: pool.holders(),
            idle: pool.idle(),
            traffic: traffic.totals(),
        }
    }
}

fn check_leaks(shared: &Shared) {
    let mut found = Vec::new();
    for e in shared.pg_pools() {
        if let Some(t) = e.db().limits.leak_threshold {
            found.extend(
                e.pool
                    .take_leaks(t)
                    .into_iter()
                    .map(|r| ("postgres", Database::clone(&e.db()), r)),
            );
        }
    }
    for e in shared.mysql.pools() {
        if let Some(t) = e.db().limits.leak_threshold {
            found.extend(
                e.pool
                    .take_leaks(t)
                    .into_iter()
                    .map(|r| ("mysql", Database::clone(&e.db()), r)),
            );
        }
    }
    let now = Instant::now();
    let redact = shared.config().redact_statements;
    for (protocol, db, record) in found {
        let mut lease = lease_snapshot(protocol, &db, &record, now, redact);
        lease.leak_reported = true;
        tracing::warn!(
            client = %lease.client,
            user = %lease.user,
            database = %lease.database,
            application = %lease.application,
            pool = %lease.pool,
            held_for = ?Duration::from_secs_f64(lease.held_seconds),
            state = %lease.state,
            last_statement = %lease.last_statement,
            "lease exceeded leak threshold"
        );
        let message = format!(
            "{} holds a {} server connection of pool {} for {:.0}s ({}): {}",
            record.holder,
            protocol,
            lease.pool,
            lease.held_seconds,
            lease.state,
            if lease.last_statement.is_empty() {
                "no statement yet"
            } else {
                &lease.last_statement
            }
        );
        shared
            .observe
            .events
            .push(EventKind::Leak, message, Some(lease), None, None);
    }
}

/// A lease as the admin side shows it; `redact`: literals in its last statement replaced
/// (`[admin] redact_statements`).
fn lease_snapshot(
    protocol: &str,
    db: &Database,
    r: &LeaseRecord,
    now: Instant,
    redact: bool,
) -> LeaseSnapshot {
    let h = &r.holder;
    LeaseSnapshot {
        id: r.id,
        pool: format!("{}/{}", db.name, h.user),
        backend: db.backend.clone(),
        protocol: protocol.to_owned(),
        client: h.client.to_string(),
        user: h.user.to_string(),
        database: h.database.to_string(),
        application: h.application.to_string(),
        held_seconds: now.saturating_duration_since(r.since).as_secs_f64(),
        state: h.note.state().as_str().to_owned(),
        last_statement: h
            .note
            .last_statement()
            .map(|s| {
                if redact {
                    poolguard_admin::redact::redact(&s)
                } else {
                    s.to_string()
                }
            })
            .unwrap_or_default(),
        leak_reported: r.leak_reported,
    }
}

async fn poll_servers(shared: &Shared) {
    for b in &shared.config().backends {
        // The host that takes the writes: after a failover, the promoted one.
        let host = match shared.hosts(&b.name) {
            Some(set) => set.write_host().addr.clone(),
            None => match b.hosts.first() {
                Some(h) => h.clone(),
                None => continue,
            },
        };
        let result = tokio::time::timeout(
            b.connect_timeout * 2,
            poll_one(shared, b.protocol, &b.name, &host),
        )
        .await;
        let poll = match result {
            Ok(Ok((c, m))) => ServerPoll {
                connections: Some(c),
                max_connections: Some(m),
                error: None,
            },
            Ok(Err(e)) => ServerPoll {
                error: Some(e),
                ..Default::default()
            },
            Err(_) => ServerPoll {
                error: Some("poll timed out".into()),
                ..Default::default()
            },
        };
        if let Some(e) = &poll.error {
            tracing::debug!(backend = %b.name, error = %e, "server poll failed");
        }
        lock(&shared.observe.servers).insert(b.name.clone(), poll);
    }
}

/// `(server's connection count, its max_connections)`, logged in as the first configured
/// user (as `poolguard check` does). The poll's own connection is counted too, and it takes a
/// unit of the backend's budget for as long as it is open: the hard cap holds for monitoring
/// as well. When every unit is in use, the poll is skipped rather than competing with clients.
async fn poll_one(
    shared: &Shared,
    protocol: Protocol,
    backend: &str,
    host: &str,
) -> Result<(u64, u64), String> {
    let _unit = shared
        .budget(backend)
        .and_then(|b| b.try_reserve())
        .ok_or("skipped: every server connection of the budget is in use")?;
    let config = shared.config();
    let user = config
        .service_user()
        .ok_or("no [[users]] entry to log in with")?;
    let db = shared
        .config()
        .databases
        .iter()
        .filter(|d| d.names_a_server_database())
        .find(|d| d.backend == backend)
        .map(|d| d.server_database.clone());
    let timeout = shared
        .config()
        .backend(backend)
        .map(|b| b.connect_timeout)
        .unwrap_or(POLL_PERIOD);
    let tls = shared
        .config()
        .backend(backend)
        .map_or_else(ServerTls::disabled, |b| b.server_tls.clone());
    let num = |v: Option<&Option<String>>| {
        v.and_then(|v| v.as_deref())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    match protocol {
        Protocol::Postgres => {
            let connector = crate::pg::server::PgConnector::new(
                host.to_owned(),
                tls,
                user.name.clone(),
                user.password.clone(),
                db.unwrap_or_else(|| "postgres".into()),
                timeout,
            );
            let mut conn = connector.connect().await.map_err(|e| e.to_string())?;
            let reply = conn
                .simple_query("SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'), current_setting('max_connections')")
                .await;
            connector.close(conn, poolguard_pool::CloseReason::PoolClosed);
            let (rows, _) = reply.map_err(|e| e.to_string())?;
            let row = rows.first().ok_or("no row")?;
            Ok((num(row.first()), num(row.get(1))))
        }
        Protocol::Mysql => {
            let connector = crate::mysql::server::MyConnector::new(
                host.to_owned(),
                tls,
                user.name.clone(),
                user.password.clone(),
                db.unwrap_or_default(),
                timeout,
            );
            let mut conn = connector.open().await.map_err(|e| e.to_string())?;
            let reply = conn
                .query("SELECT (SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'THREADS_CONNECTED'), @@max_connections")
                .await;
            drop(conn); // closing the socket ends the session (quit_now is private to the server module)
            let reply = reply.map_err(|e| e.to_string())?;
            let row = reply.rows.first().ok_or("no row")?;
            Ok((num(row.first()), num(row.get(1))))
        }
    }
}

fn pool_snapshot(
    protocol: &str,
    db: &Database,
    user: &str,
    st: &PoolStatus,
    clients: usize,
    statements: u64,
    traffic: &TrafficTotals,
) -> PoolSnapshot {
    PoolSnapshot {
        name: st.name.clone(),
        backend: db.backend.clone(),
        protocol: protocol.to_owned(),
        database: db.name.clone(),
        user: user.to_owned(),
        mode: match db.pool_mode {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
        .to_owned(),
        target: db.target.as_str().to_owned(),
        open: st.open,
        idle: st.idle,
        in_use: st.in_use,
        connecting: st.connecting,
        waiters: st.waiters,
        oldest_wait_seconds: st.oldest_wait.map_or(0.0, |d| d.as_secs_f64()),
        size: st.size,
        cap: st.cap,
        clients,
        acquired_total: st.acquired_total,
        timeouts_total: st.timeouts_total,
        connects_total: st.connects_total,
        connect_errors_total: st.connect_errors_total,
        closed_total: st.closed_total,
        discarded: poolguard_pool::DiscardReason::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), st.discarded_total[r.index()]))
            .collect(),
        leaks_total: st.leaks_total,
        acquire_wait_buckets: st.acquire_wait_buckets.clone(),
        acquire_wait_sum: st.acquire_wait_sum,
        statements,
        transactions_total: traffic.transactions,
        queries_total: traffic.queries,
        bytes_received_total: traffic.bytes_received,
        bytes_sent_total: traffic.bytes_sent,
        transaction_seconds_total: traffic.transaction_seconds,
        query_seconds_total: traffic.query_seconds,
        parses_reused_total: traffic.parses_reused,
        paused: st.paused,
        rejected_waiters_total: st.rejected_waiters_total,
        refused_total: st.refused_total,
    }
}

impl Source for Shared {
    fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let clients = self.observe.clients.snapshot(now);
        let mut snap = Snapshot::default();
        let redact = self.config().redact_statements;
        let mut budgets: HashMap<String, (usize, usize)> = HashMap::new();
        for view in pools(self) {
            let (protocol, st) = (view.protocol, &view.status);
            let of_pool = clients
                .iter()
                .filter(|c| c.pool == st.name && c.protocol == protocol);
            let (n, statements) = of_pool.fold((0, 0), |(n, s), c| (n + 1, s + c.statements));
            budgets.insert(view.db.backend.clone(), (st.budget_limit, st.budget_in_use));
            snap.pools.push(view.snapshot(n, statements));
            snap.leases.extend(
                view.leases
                    .iter()
                    .map(|r| lease_snapshot(protocol, &view.db, r, now, redact)),
            );
            snap.idle_servers.extend(view.idle_servers(now));
        }
        snap.pools
            .sort_by(|a, b| (&a.backend, &a.name).cmp(&(&b.backend, &b.name)));
        // Stable: each pool's idle connections keep their order (least recently returned first).
        snap.idle_servers
            .sort_by(|a, b| (&a.backend, &a.pool).cmp(&(&b.backend, &b.pool)));
        snap.leases
            .sort_by(|a, b| b.held_seconds.total_cmp(&a.held_seconds));
        let polls = lock(&self.observe.servers).clone();
        for b in &self.config().backends {
            let (limit, in_use) = budgets.get(&b.name).copied().unwrap_or_else(|| {
                self.budget(&b.name)
                    .map_or((b.max_connections, 0), |x| x.snapshot())
            });
            let poll = polls.get(&b.name).cloned().unwrap_or_default();
            let hosts = self.hosts(&b.name);
            snap.backends.push(BackendSnapshot {
                name: b.name.clone(),
                protocol: b.protocol.to_string(),
                host: hosts
                    .as_ref()
                    .map(|h| h.write_host().addr.clone())
                    .unwrap_or_else(|| b.hosts.first().cloned().unwrap_or_default()),
                hosts: hosts
                    .as_ref()
                    .map(|h| host_snapshots(h))
                    .unwrap_or_default(),
                failovers_total: hosts.as_ref().map_or(0, |h| h.failovers_total()),
                budget_limit: limit,
                budget_in_use: in_use,
                server_connections: poll.connections,
                server_max_connections: poll.max_connections,
                poll_error: poll.error,
            });
        }
        snap.clients_connected = self.client_count();
        snap.clients_resting = self.observe.resting.load(Ordering::Relaxed);
        snap.clients = clients;
        snap.pins_total = self.pins_total() as u64;
        snap.idle_in_transaction_kills_total = self
            .observe
            .idle_in_transaction_kills
            .load(Ordering::Relaxed);
        snap.errors_total = lock(&self.observe.errors)
            .iter()
            .map(|((p, c), n)| ((*p).to_owned(), c.clone(), *n))
            .collect();
        snap.paused = self.observe.paused.load(Ordering::Relaxed);
        snap.panics_total = self.observe.panics.load(Ordering::Relaxed);
        snap.fleet = crate::fleet::snapshot(self);
        snap.stats_averages = lock(&self.observe.stats).averages().to_vec();
        snap
    }

    fn events(&self) -> &EventLog {
        &self.observe.events
    }

    fn reload(&self) -> Result<String, String> {
        Shared::reload(self).map_err(|e| e.to_string())
    }

    fn access(&self) -> poolguard_admin::Access {
        self.config().admin_access.clone()
    }

    fn tls(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.config().admin_tls.as_ref()?.acceptor()
    }

    /// Not draining, and every backend's write host lets connects through (its breaker is not
    /// open): a load balancer should send clients here.
    fn ready(&self) -> Result<(), String> {
        if self.draining.load(Ordering::Relaxed) {
            return Err("draining: shutting down".into());
        }
        crate::fleet::ready(self)?;
        for b in &self.config().backends {
            if let Some(set) = self.hosts(&b.name) {
                if set.admit::<crate::pg::server::ServerError>().is_err() {
                    return Err(format!(
                        "backend {}: its server is unreachable (circuit breaker open)",
                        b.name
                    ));
                }
            }
        }
        Ok(())
    }
}

fn host_snapshots(set: &crate::hosts::HostSet) -> Vec<poolguard_admin::model::HostSnapshot> {
    set.status()
        .into_iter()
        .map(|h| poolguard_admin::model::HostSnapshot {
            addr: h.addr,
            role: h.role.as_str().to_owned(),
            writes_here: h.writes_here,
            breaker: h.breaker.state.to_string(),
            breaker_gauge: h.breaker.state.as_gauge(),
            breaker_opened_total: h.breaker.opened_total,
            breaker_rejected_total: h.breaker.rejected_total,
            last_check_error: h.last_check.and_then(|c| c.error),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// Let spawned tasks run until they block, without moving the clock.
    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stats_periods_average_the_pools_traffic() {
        let shared = Shared::new(Config::builtin_default("pw"));
        let db = shared.config().databases[0].clone();
        let entry = shared.pg_pool(&db, "postgres");
        let period = Duration::from_secs(10);
        let task = spawn_stats(&shared, period);
        settle().await;
        entry.traffic.received(5_000);
        entry.traffic.sent(20_000);
        assert!(
            shared.snapshot().stats_averages.is_empty(),
            "no period has completed"
        );
        tokio::time::advance(period).await;
        settle().await;
        let averages = shared.snapshot().stats_averages;
        assert_eq!(averages.len(), 1);
        assert_eq!(averages[0].database, db.name);
        assert_eq!(averages[0].protocol, "postgres");
        assert_eq!(
            (averages[0].bytes_received, averages[0].bytes_sent),
            (500, 2_000)
        );
        // A quiet period: the averages drop to 0 at its end, not before.
        tokio::time::advance(period / 2).await;
        settle().await;
        assert_eq!(shared.snapshot().stats_averages[0].bytes_sent, 2_000);
        tokio::time::advance(period / 2).await;
        settle().await;
        assert_eq!(shared.snapshot().stats_averages[0].bytes_sent, 0);
        task.abort();
    }
}
