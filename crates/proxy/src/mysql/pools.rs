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

use poolguard_pool::{AcquireError, Holder, Lease};

use crate::config::{Database, Protocol};
use crate::error::ProxyError;
use crate::mysql::caps::Leg;
use crate::mysql::kill::KillRegistry;
use crate::mysql::server::{MyConnector, ServerError, ServerInfo};
use crate::state::Shared;

pub type MyLease = Lease<MyConnector>;

/// A MySQL pool: the shared entry (a pool per CLIENT_FOUND_ROWS choice is part of its key).
pub type MyPoolEntry = crate::entry::PoolEntry<MyConnector, ()>;

impl MyPoolEntry {
    pub fn mariadb(&self) -> bool {
        self.pool.connector().info().is_none_or(|i| i.mariadb)
    }

    /// The default schema a client of this pool starts with: its server database, none for
    /// a client that named none (the fallback entry's pool without a server database).
    pub fn login_schema(&self, db: &Database) -> Option<Arc<str>> {
        (!db.server_database.is_empty()).then(|| self.shared_name(&db.server_database))
    }
}

type PoolKey = (String, String, Leg);

#[derive(Default)]
pub struct MysqlState {
    pools: Mutex<HashMap<PoolKey, Arc<MyPoolEntry>>>,
    db_clients: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    info: Mutex<Option<Arc<ServerInfo>>>,
    pub kills: Arc<KillRegistry>,
    /// caching_sha2_password full authentication: warm users, generated key pair.
    pub sha2: crate::mysql::sha2::Sha2State,
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
    /// The pool for a database, user and [`Leg`] choice, created on first use.
    pub fn pool(&self, shared: &Shared, db: &Database, user: &str, leg: Leg) -> Arc<MyPoolEntry> {
        let key = (db.name.clone(), user.to_owned(), leg);
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = pools.get(&key) {
            return e.clone();
        }
        let entry = Arc::new(new_pool(shared, db, user, leg));
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
        let now = counter.fetch_add(1, Ordering::Relaxed).saturating_add(1);
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
        // A named database's backend, else the fallback's, logged in without a database.
        let named = config
            .databases
            .iter()
            .find(|d| d.protocol == Protocol::Mysql && d.names_a_server_database())
            .map(std::borrow::Cow::Borrowed);
        let Some(db) = named.or_else(|| config.database(Protocol::Mysql, "")) else {
            return Err(ProxyError::UnknownDatabase(
                "(none: no [[databases]] entry uses a mysql backend)".into(),
            ));
        };
        let mut last = None;
        // Any configured user will do; the connection stays in its pool for later use.
        for user in shared.config().users.iter().take(3) {
            let entry = self.pool(shared, &db, &user.name, Leg::default());
            let holder = Holder::new(
                "poolguard (greeting)".into(),
                user.name.as_str().into(),
                db.name.as_str().into(),
                "poolguard".into(),
            );
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

fn new_pool(shared: &Shared, db: &Database, user: &str, leg: Leg) -> MyPoolEntry {
    debug_assert_eq!(db.protocol, Protocol::Mysql);
    let front = shared
        .config()
        .mysql
        .as_ref()
        .map(|m| m.max_prepared_statements);
    let server_rsa_key = shared
        .config()
        .backend(&db.backend)
        .and_then(|b| b.server_rsa_key.clone());
    let finish = |c: &mut MyConnector| {
        c.leg = leg;
        c.server_rsa_key = server_rsa_key;
        c.target = db.target;
        if let Some(max) = front {
            c.max_prepared_statements = max;
        }
    };
    MyPoolEntry::new(shared, db, user, leg.suffix(), finish, ())
}
