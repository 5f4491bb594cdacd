//! The MySQL front door's share of [`Shared`]: pools per (database, user, CLIENT_FOUND_ROWS),
//! per-database client counts, the greeting poolguard shows clients, and the KILL registry.
//!
//! Pools draw on the same per-backend [`poolguard_pool::Budget`]s as PostgreSQL pools, so the
//! budget caps every pool on a backend together. CLIENT_FOUND_ROWS changes what UPDATE reports
//! and is fixed when a server connection logs in, so clients asking for it get a pool of their
//! own (same size, same budget).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poolguard_pool::{AcquireError, Holder, Lease, Pool};

use crate::config::{Database, Protocol};
use crate::error::ProxyError;
use crate::mysql::kill::KillRegistry;
use crate::mysql::server::{MyConnector, ServerError, ServerInfo};
use crate::state::{pool_config, reap_period, Shared};

pub type MyLease = Lease<MyConnector>;

/// A pool and what it serves.
pub struct MyPoolEntry {
    pub pool: Pool<MyConnector>,
    /// The `[[databases]]` entry as of the last reload (sessions read limits from it).
    db: arc_swap::ArcSwap<Database>,
    pub user: String,
    pub found_rows: bool,
    /// Transactions, queries and client bytes of the pool's sessions.
    pub traffic: crate::traffic::Traffic,
}

impl MyPoolEntry {
    /// The database entry in force (a reload may replace it).
    pub fn db(&self) -> arc_swap::Guard<Arc<Database>> {
        self.db.load()
    }

    pub(crate) fn set_db(&self, db: Database) {
        self.db.store(Arc::new(db));
    }

    pub fn name(&self) -> Arc<str> {
        self.pool.name()
    }

    pub fn mariadb(&self) -> bool {
        self.pool.connector().info().is_none_or(|i| i.mariadb)
    }
}

type PoolKey = (String, String, bool);

#[derive(Default)]
pub struct MysqlState {
    pools: Mutex<HashMap<PoolKey, Arc<MyPoolEntry>>>,
    db_clients: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    info: Mutex<Option<Arc<ServerInfo>>>,
    pub kills: Arc<KillRegistry>,
}

/// One client counted against its database's `max_client_connections`; dropping it gives the
/// place back.
pub struct DbSlot(Arc<AtomicUsize>);

impl Drop for DbSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Maps a pool refusal to the client-facing error.
pub fn acquire_error(e: AcquireError<ServerError>) -> ProxyError {
    match e {
        AcquireError::Timeout { .. } => ProxyError::PoolExhausted(format!("poolguard: {e}")),
        AcquireError::Connect(ServerError::Refused { err, .. }) => ProxyError::MysqlServer {
            code: err.code,
            sqlstate: err.sql_state_str().to_owned(),
            message: err.message,
        },
        AcquireError::Connect(other) => ProxyError::BackendUnavailable(format!(
            "poolguard cannot open a server connection: {other}"
        )),
        AcquireError::Closed => ProxyError::ShuttingDown(crate::error::CLOSED_POOL.into()),
        AcquireError::TooManyWaiters { .. } => {
            ProxyError::TooManyClients(format!("poolguard: {e}"))
        }
    }
}

impl MysqlState {
    /// The pool for a database, user and FOUND_ROWS choice, created on first use.
    pub fn pool(
        &self,
        shared: &Shared,
        db: &Database,
        user: &str,
        found_rows: bool,
    ) -> Arc<MyPoolEntry> {
        let key = (db.name.clone(), user.to_owned(), found_rows);
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = pools.get(&key) {
            return e.clone();
        }
        let entry = Arc::new(new_pool(shared, db, user, found_rows));
        pools.insert(key, entry.clone());
        entry
    }

    /// Keep the pools `keep` says yes to; the others leave the map (the caller closes them).
    pub(crate) fn retain_pools(&self, mut keep: impl FnMut(&MyPoolEntry) -> bool) {
        self.pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, e| keep(e));
    }

    pub fn pools(&self) -> Vec<Arc<MyPoolEntry>> {
        self.pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Counts a client against its database's `max_client_connections` (1203 beyond it).
    pub fn admit(&self, db: &Database) -> Result<DbSlot, ProxyError> {
        let counter = self
            .db_clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(db.name.clone())
            .or_default()
            .clone();
        let cap = db.limits.max_client_connections;
        let now = counter.fetch_add(1, Ordering::Relaxed) + 1;
        let slot = DbSlot(counter);
        if now > cap {
            return Err(ProxyError::TooManyClients(format!(
                "poolguard refuses the connection: database {} already has {cap} clients (max_client_connections = {cap})",
                db.name
            )));
        }
        Ok(slot)
    }

    /// What poolguard's greeting announces: the server version and capabilities of the first
    /// MySQL backend, learnt from a pooled login the first time a client connects.
    pub async fn server_info(&self, shared: &Arc<Shared>) -> Result<Arc<ServerInfo>, ProxyError> {
        if let Some(i) = self.info.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(i);
        }
        let config = shared.config();
        let Some(db) = config
            .databases
            .iter()
            .find(|d| d.protocol == Protocol::Mysql)
        else {
            return Err(ProxyError::UnknownDatabase(
                "(none: no [[databases]] entry uses a mysql backend)".into(),
            ));
        };
        let mut last = None;
        // Any configured user will do; the connection stays in its pool for later use.
        for user in shared.config().users.iter().take(3) {
            let entry = self.pool(shared, db, &user.name, false);
            let holder = Holder {
                client: "poolguard (greeting)".into(),
                user: user.name.as_str().into(),
                database: db.name.as_str().into(),
                application: "poolguard".into(),
                note: Default::default(),
            };
            match entry.pool.acquire(holder).await {
                Ok(lease) => {
                    // Only logged in (or idle in the pool): nothing was sent on it.
                    let proof = lease.untouched();
                    lease.release(proof);
                    if let Some(info) = entry.pool.connector().info() {
                        *self.info.lock().unwrap_or_else(|p| p.into_inner()) = Some(info.clone());
                        return Ok(info);
                    }
                }
                Err(e) => last = Some(acquire_error(e)),
            }
        }
        Err(last.unwrap_or_else(|| {
            ProxyError::BackendUnavailable("poolguard: no [[users]] entry to log in with".into())
        }))
    }
}

fn new_pool(shared: &Shared, db: &Database, user: &str, found_rows: bool) -> MyPoolEntry {
    debug_assert_eq!(db.protocol, Protocol::Mysql);
    // Config validation guarantees the backend exists; the fallbacks only keep this total.
    let config = shared.config();
    let backend = config.backend(&db.backend);
    let hosts = backend.map_or_else(
        || crate::hosts::HostSet::fixed(String::new()),
        |b| shared.hosts_or_new(b),
    );
    let connect_timeout = backend
        .map(|b| b.connect_timeout)
        .unwrap_or(Duration::from_secs(5));
    let budget = shared.budget_or_new(
        &db.backend,
        backend.map_or(db.pool_size + db.max_overflow, |b| b.max_connections),
    );
    let password = shared
        .config()
        .user(user)
        .map(|u| u.password.clone())
        .unwrap_or_default();
    let mut connector = MyConnector::for_hosts(
        hosts,
        user.to_owned(),
        password,
        db.server_database.clone(),
        connect_timeout,
    );
    connector.found_rows = found_rows;
    connector.target = db.target;
    if let Some(front) = &shared.config().mysql {
        connector.max_prepared_statements = front.max_prepared_statements;
    }
    let mut config = pool_config(db, user);
    if found_rows {
        config.name.push_str(" (found_rows)");
    }
    let pool = Pool::new(config, connector, budget);
    shared.adopt(&pool, db);
    pool.spawn_reaper(reap_period(db));
    MyPoolEntry {
        pool,
        db: arc_swap::ArcSwap::from_pointee(db.clone()),
        user: user.to_owned(),
        found_rows,
        traffic: Default::default(),
    }
}
