//! One pool entry for both front doors: a pool of server connections for one database and
//! user, the `[[databases]]` entry it serves (swapped by a reload), its clients and traffic,
//! and whatever the door keeps per pool beside them (`X`).
//!
//! Building a pool (backend budget, host set, password, reaper, pause state) and reconfiguring
//! it on reload are written once here; a door only says how to make its connector
//! ([`ServerConnector`]). So the plumbing under both doors is the same code, not two copies
//! that drift.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use poolguard_pool::{Connector, Pool, PoolConfig};

use crate::config::{Database, User};
use crate::hosts::HostSet;
use crate::state::Shared;
use crate::tls::connect::ServerTls;

/// A door's connector, as the shared plumbing makes and reconfigures it.
pub trait ServerConnector: Connector + Sized {
    /// A connector for a backend's host set, logging in as `user` to `database`.
    fn for_hosts(
        hosts: Arc<HostSet>,
        user: String,
        password: String,
        database: String,
        connect_timeout: Duration,
    ) -> Self;

    /// A reload changed the user's password: the next login uses the new one.
    fn set_password(&self, password: &str);
}

/// A pool and what it serves.
pub struct PoolEntry<C: Connector, X> {
    pub pool: Pool<C>,
    /// The `[[databases]]` entry as of the last reload (sessions read limits from it).
    db: ArcSwap<Database>,
    /// The database's session timeouts, kept with `db` (read on every turn of a relay).
    pub timeouts: crate::guard::SharedTimeouts,
    pub user: String,
    /// Clients connected to this pool (counted against its `max_client_connections`).
    pub clients: AtomicUsize,
    /// Transactions, queries and client bytes of the pool's sessions.
    pub traffic: crate::traffic::Traffic,
    /// What the door keeps per pool beside the rest.
    pub extra: X,
    /// The names its clients' holders share ([`PoolEntry::holder`]).
    names: Names,
    /// The name sets its clients' holders share (the first [`MAX_NAMES`] distinct ones).
    name_sets: std::sync::Mutex<Vec<Arc<poolguard_pool::HolderNames>>>,
}

impl<C: Connector, X> PoolEntry<C, X> {
    /// The database entry in force (a reload may replace it).
    pub fn db(&self) -> arc_swap::Guard<Arc<Database>> {
        self.db.load()
    }

    /// The pool's name, `database/user` (shared, not copied).
    pub fn name(&self) -> Arc<str> {
        self.pool.name()
    }

    /// `name` as the pool's clients share it (a database name every client of the pool keeps).
    pub fn shared_name(&self, name: &str) -> Arc<str> {
        self.names.get(name)
    }

    /// Who a logged-in client of this pool is, for its leases and the registries: its own
    /// address, and user, database and application names shared with the pool's other clients
    /// (the same few names for thousands of clients; each copy would cost an idle client a
    /// small allocation).
    pub fn holder(
        &self,
        client: std::net::SocketAddr,
        user: &str,
        database: &str,
        application: &str,
    ) -> poolguard_pool::Holder {
        let names = self.names_for(user, database, application);
        poolguard_pool::Holder::with_names(client.to_string().into(), names)
    }

    /// The pool's shared name set for these names (a new one past the first [`MAX_NAMES`]).
    pub fn names_for(
        &self,
        user: &str,
        database: &str,
        application: &str,
    ) -> Arc<poolguard_pool::HolderNames> {
        let mut sets = self.name_sets.lock().unwrap_or_else(|p| p.into_inner());
        let known = sets.iter().find(|n| {
            *n.user == *user && *n.database == *database && *n.application == *application
        });
        match known {
            Some(n) => n.clone(),
            None => {
                let n = Arc::new(poolguard_pool::HolderNames {
                    user: self.names.get(user),
                    database: self.names.get(database),
                    application: self.names.get(application),
                });
                if sets.len() < MAX_NAMES {
                    sets.push(n.clone());
                }
                n
            }
        }
    }
}

impl<C: ServerConnector, X> PoolEntry<C, X> {
    /// The pool for `db` and `user` on the database's backend: its connector made by the door
    /// (`finish` sets what only that door knows), its budget the backend's, its reaper running,
    /// paused if the database is.
    pub fn new(
        shared: &Shared,
        db: &Database,
        user: &str,
        name_suffix: &str,
        finish: impl FnOnce(&mut C),
        extra: X,
    ) -> Self {
        // Config validation guarantees the backend exists; the fallbacks only keep this total.
        let config = shared.config();
        let backend = config.backend(&db.backend);
        let hosts = backend.map_or_else(
            || HostSet::fixed(String::new(), ServerTls::disabled()),
            |b| shared.hosts_or_new(b),
        );
        let connect_timeout = backend
            .map(|b| b.connect_timeout)
            .unwrap_or(Duration::from_secs(5));
        let budget = shared.budget_or_new(
            &db.backend,
            backend.map_or(db.pool_size + db.max_overflow, |b| b.max_connections),
        );
        let password = config
            .user(user)
            .map(|u| u.password.clone())
            .unwrap_or_default();
        let mut connector = C::for_hosts(
            hosts,
            user.to_owned(),
            password,
            db.server_database.clone(),
            connect_timeout,
        );
        finish(&mut connector);
        let mut settings = pool_config(db, user);
        settings.name.push_str(name_suffix);
        let pool = Pool::new(settings, connector, budget);
        shared.adopt(&pool, db);
        pool.spawn_reaper(reap_period(db));
        PoolEntry {
            pool,
            db: ArcSwap::from_pointee(db.clone()),
            timeouts: crate::guard::SharedTimeouts::new(&db.limits),
            user: user.to_owned(),
            clients: AtomicUsize::new(0),
            traffic: Default::default(),
            extra,
            names: Names::default(),
            name_sets: Default::default(),
        }
    }

    /// A reload changed the `[[databases]]` or `[[users]]` entry: pool settings now, limits
    /// for what comes next, the password for the next server login (a user `auth_query`
    /// found has no entry: its secret is the lookup's).
    pub fn reconfigure(&self, db: Database, user: Option<&User>) {
        self.pool.set_config(pool_config(&db, &self.user));
        self.pool.set_admission(admission(&db));
        if let Some(user) = user {
            self.pool.connector().set_password(&user.password);
        }
        self.timeouts.store(&db.limits);
        self.db.store(Arc::new(db));
    }
}

/// A pool's clients' names, shared: the first [`MAX_NAMES`] distinct ones are kept, later ones
/// are copied per client (a bound, so that clients inventing application names cannot grow it).
#[derive(Default)]
struct Names(std::sync::Mutex<Vec<Arc<str>>>);

const MAX_NAMES: usize = 16;

impl Names {
    fn get(&self, name: &str) -> Arc<str> {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = kept.iter().find(|n| ***n == *name) {
            return n.clone();
        }
        let n: Arc<str> = name.into();
        if kept.len() < MAX_NAMES {
            kept.push(n.clone());
        }
        n
    }
}

pub fn pool_config(db: &Database, user: &str) -> PoolConfig {
    PoolConfig {
        name: format!("{}/{}", db.name, user),
        size: db.pool_size,
        max_overflow: db.max_overflow,
        acquire_timeout: db.limits.acquire_timeout,
        max_lifetime: db.limits.max_lifetime,
        lifetime_jitter: db.limits.lifetime_jitter,
        idle_timeout: db.limits.idle_timeout,
    }
}

/// The waiter cap and fair share of a database's pools. A share is a fraction of the pool's
/// cap, rounded up, and at least one connection.
pub fn admission(db: &Database) -> poolguard_pool::Admission {
    let cap = db.pool_size + db.max_overflow;
    poolguard_pool::Admission {
        max_waiters: db.limits.max_waiters,
        fair_share: db.limits.fair_share.map(|f| poolguard_pool::FairShare {
            by: db.limits.fair_share_by,
            strict: db.limits.fair_share_strict,
            max: ((cap as f64 * f).ceil() as usize).max(1),
        }),
    }
}

/// Reaping often enough that idle and lifetime limits are honoured to within a few percent.
pub fn reap_period(db: &Database) -> Duration {
    let shortest = [db.limits.idle_timeout, db.limits.max_lifetime]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(Duration::from_secs(60));
    (shortest / 10).clamp(Duration::from_millis(100), Duration::from_secs(10))
}
