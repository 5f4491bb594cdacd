//! What every session shares: the validated config, one budget per backend, the pools (one per
//! database and user, created on first use), the cancel registry and the client counts.
//!
//! No global state: a [`Shared`] is built by [`Shared::new`] and handed to whoever needs it, so
//! tests can run several proxies in one process. Locks here are short and synchronous.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use poolguard_pg::scram::ScramVerifier;
use poolguard_pool::{Budget, Holder, Pool};

use crate::config::{Config, Database, Protocol};
use crate::error::ProxyError;
use crate::hosts::HostSet;
use crate::lock;
use crate::pg::cancel::CancelRegistry;
use crate::pg::server::PgConnector;

pub type PgPool = Pool<PgConnector>;

/// A PostgreSQL pool: the shared entry, with the statement names its servers know.
pub type PgPoolEntry = crate::entry::PoolEntry<PgConnector, PgPoolExtra>;

/// What a PostgreSQL pool keeps beside the shared entry. Server statement names some server
/// of the pool parsed successfully: a client's prepare-only request for one of these is
/// answered without taking a server. The pool's statement epoch, part of every server
/// statement name defined in it. And the parameters its last client logged in with
/// ([`PgPoolEntry::share_params`]).
#[derive(Default)]
pub struct PgPoolExtra {
    names: Mutex<std::collections::HashSet<Arc<str>>>,
    epoch: std::sync::atomic::AtomicU64,
    login_params: Mutex<Option<Arc<crate::pg::params::ParamSet>>>,
}

/// Bound on remembered statement names per pool (cleared when exceeded).
const MAX_KNOWN_STATEMENTS: usize = 10_000;

impl PgPoolEntry {
    /// A logged-in client's parameters, shared with the previous client's when they are the
    /// same (clients of one application log in alike): an idle client then holds a pointer,
    /// not its own set. A session copies the set when it changes it (`Arc::make_mut`).
    pub fn share_params(
        &self,
        params: crate::pg::params::ParamSet,
    ) -> Arc<crate::pg::params::ParamSet> {
        let mut last = lock(&self.extra.login_params);
        match &*last {
            Some(p) if p.same_entries(&params) => p.clone(),
            _ => {
                let p = Arc::new(params);
                *last = Some(p.clone());
                p
            }
        }
    }

    pub fn statement_is_known(&self, server_name: &str) -> bool {
        lock(&self.extra.names).contains(server_name)
    }

    pub fn remember_statement(&self, server_name: Arc<str>) {
        let mut known = lock(&self.extra.names);
        if known.len() >= MAX_KNOWN_STATEMENTS {
            known.clear();
        }
        known.insert(server_name);
    }

    /// The epoch new statement definitions are named in.
    pub fn statement_epoch(&self) -> u64 {
        self.extra.epoch.load(Ordering::Relaxed)
    }

    /// A server reported a shared statement stale (the schema changed under it). Every server
    /// of the pool that prepared the same text holds the same stale plan or parameter types, so
    /// definitions from now on get new server names, prepared afresh wherever they run, and no
    /// prepare is answered from memory until a server has parsed it again. A client keeps using
    /// its old definitions until it prepares again, as it would directly.
    pub fn statements_went_stale(&self) {
        let mut known = lock(&self.extra.names);
        known.clear();
        self.extra.epoch.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct Shared {
    /// The running configuration; replaced whole by a reload (see `control`).
    config: ArcSwap<Config>,
    /// Where the configuration was read from (what a reload reads again), if from a file.
    pub(crate) config_path: Mutex<Option<std::path::PathBuf>>,
    /// One budget per backend; a reload adds budgets and changes limits, never removes one in use.
    budgets: Mutex<HashMap<String, Arc<Budget>>>,
    pg_pools: Mutex<HashMap<(String, String), Arc<PgPoolEntry>>>,
    /// One host set per backend (write host, host roles, breakers), shared by its pools.
    hosts: Mutex<HashMap<String, Arc<HostSet>>>,
    pub cancels: Arc<CancelRegistry>,
    clients: AtomicUsize,
    /// Databases held by PAUSE (pools created meanwhile start paused).
    pub(crate) paused: Mutex<crate::control::Paused>,
    /// `[[rate_limits]]`, rebuilt by a reload.
    rate_limits: ArcSwap<crate::admission::RateLimits>,
    /// Set by a shutdown drain: pools refuse new transactions with "shutting down".
    pub(crate) draining: std::sync::atomic::AtomicBool,
    /// Clients pinned to a server for their session by transaction-mode rules.
    pins: AtomicUsize,
    /// SCRAM verifiers derived once at start (PBKDF2 is deliberately slow).
    /// Per user: the secret it was derived from, and the verifier.
    verifiers: ArcSwap<HashMap<String, (String, ScramVerifier)>>,
    /// `auth_query` answers, briefly cached (see [`crate::pg::authquery`]).
    pub auth_cache: crate::pg::authquery::AuthCache,
    /// The MySQL front door's pools, greeting and KILL registry.
    pub mysql: crate::mysql::pools::MysqlState,
    /// Clients, events, server polls and error counts for the admin side.
    pub observe: crate::observe::Observe,
    /// Backends whose health checker is running (at most one each).
    checkers: Mutex<std::collections::HashSet<String>>,
    /// Read and write buffers of clients that went idle, for clients that wake.
    pub spare: crate::spare::SpareBuffers,
    /// Test builds only: where sessions are made to fail on purpose ([`crate::fault`]).
    pub faults: crate::fault::Faults,
    /// Sockets accepted and not yet logged in (see `gate`).
    pub logins: Arc<crate::gate::Logins>,
    /// During a binary upgrade, the most server connections this process may hold per backend
    /// (below `max_connections`: the other process holds the rest). See `upgrade::share`.
    pub(crate) upgrade_caps: Mutex<HashMap<String, usize>>,
    /// Made at start, never shown: the stand-in SCRAM verifiers of unknown users are derived
    /// from it, so their salts are stable for a user name yet unpredictable from outside.
    stand_in_key: [u8; 32],
    /// `[fleet]`'s share protocol, once started (see `crate::fleet`).
    fleet: std::sync::OnceLock<poolguard_fleet::Fleet>,
}

/// Counts one connected client; dropping it gives the places back.
pub struct ClientSlot {
    shared: Arc<Shared>,
    entry: Option<Arc<PgPoolEntry>>,
    /// Its id in `observe`'s client list, once described.
    pub(crate) observed: Option<std::num::NonZeroU64>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.shared.clients.fetch_sub(1, Ordering::Relaxed);
        if let Some(e) = &self.entry {
            e.clients.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(id) = self.observed {
            self.shared.observe.clients.forget(id.get());
        }
    }
}

impl Shared {
    pub fn new(config: Config) -> Arc<Shared> {
        let budgets = config
            .backends
            .iter()
            // In a fleet a budget is 0 until the fleet's claim commits (see `crate::fleet`).
            .map(|b| {
                (
                    b.name.clone(),
                    Budget::new(own_limit(&config, b.max_connections)),
                )
            })
            .collect();
        let verifiers = scram_verifiers(&config, &HashMap::new());
        let rate_limits = crate::admission::RateLimits::new(&config.rate_limits);
        let hosts = config
            .backends
            .iter()
            .map(|b| (b.name.clone(), HostSet::new(b)))
            .collect();
        Arc::new(Shared {
            config: ArcSwap::from_pointee(config),
            config_path: Mutex::new(None),
            budgets: Mutex::new(budgets),
            pg_pools: Mutex::new(HashMap::new()),
            hosts: Mutex::new(hosts),
            cancels: Arc::new(CancelRegistry::default()),
            clients: AtomicUsize::new(0),
            pins: AtomicUsize::new(0),
            draining: Default::default(),
            paused: Default::default(),
            rate_limits: ArcSwap::from_pointee(rate_limits),
            verifiers: ArcSwap::from_pointee(verifiers),
            auth_cache: Default::default(),
            mysql: Default::default(),
            observe: Default::default(),
            spare: Default::default(),
            checkers: Default::default(),
            faults: crate::fault::Faults::from_env(),
            logins: Default::default(),
            upgrade_caps: Default::default(),
            stand_in_key: rand::random(),
            fleet: Default::default(),
        })
    }

    /// The configuration in force right now. Hold the guard briefly: a reload swaps it.
    pub fn config(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    /// Replace the running configuration (the caller has applied it to pools and budgets).
    pub(crate) fn store_config(&self, config: Config) {
        self.config.store(Arc::new(config));
    }

    /// The budget of a backend (every pool on it shares this one).
    pub fn budget(&self, backend: &str) -> Option<Arc<Budget>> {
        lock(&self.budgets).get(backend).cloned()
    }

    /// The hosts of a backend: which one takes writes, their roles and breakers.
    pub fn hosts(&self, backend: &str) -> Option<Arc<HostSet>> {
        lock(&self.hosts).get(backend).cloned()
    }

    /// The host set of a backend, made now if a reload added the backend.
    pub(crate) fn hosts_or_new(&self, backend: &crate::config::Backend) -> Arc<HostSet> {
        lock(&self.hosts)
            .entry(backend.name.clone())
            .or_insert_with(|| HostSet::new(backend))
            .clone()
    }

    /// Marks the backend's health checker as running; false if one already is.
    pub(crate) fn claim_checker(&self, backend: &str) -> bool {
        // Asked every few hundred milliseconds: no allocation when the answer is no.
        let mut running = lock(&self.checkers);
        !running.contains(backend) && running.insert(backend.to_owned())
    }

    /// The backend's health checker has ended.
    pub(crate) fn release_checker(&self, backend: &str) {
        lock(&self.checkers).remove(backend);
    }

    /// The budget of a backend, made now if a reload added the backend (at 0 in a fleet: a
    /// backend joins the fleet only at start).
    pub(crate) fn budget_or_new(&self, backend: &str, limit: usize) -> Arc<Budget> {
        let limit = own_limit(&self.config(), limit);
        lock(&self.budgets)
            .entry(backend.to_owned())
            .or_insert_with(|| Budget::new(limit))
            .clone()
    }

    /// The fleet this instance is part of (`[fleet]`), once started.
    pub fn fleet(&self) -> Option<&poolguard_fleet::Fleet> {
        self.fleet.get()
    }

    pub(crate) fn set_fleet(&self, fleet: poolguard_fleet::Fleet) {
        if self.fleet.set(fleet).is_err() {
            tracing::warn!("fleet already started; the second one is dropped");
        }
    }

    pub fn verifier(&self, user: &str) -> Option<ScramVerifier> {
        self.verifiers.load().get(user).map(|(_, v)| v.clone())
    }

    /// The verifier an unknown user's SCRAM exchange runs against: the same salt on every try
    /// for the same name, the iteration count real users have, a proof no one can produce.
    /// Costs two HMACs, no PBKDF2, like a real user's precomputed verifier.
    pub fn stand_in_verifier(&self, user: &str) -> ScramVerifier {
        let verifiers = self.verifiers.load();
        ScramVerifier::stand_in(&self.stand_in_key, user, usual_iterations(&verifiers))
    }

    /// New SCRAM verifiers after a reload: unchanged users keep theirs (PBKDF2 is slow).
    pub(crate) fn refresh_verifiers(&self, config: &Config) {
        let old = self.verifiers.load_full();
        self.verifiers
            .store(Arc::new(scram_verifiers(config, &old)));
    }

    pub fn count_pin(&self) {
        self.pins.fetch_add(1, Ordering::Relaxed);
    }

    pub fn pins_total(&self) -> usize {
        self.pins.load(Ordering::Relaxed)
    }

    pub fn client_count(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// `[[rate_limits]]` on new connections: 53400 / 1203 when over.
    pub fn admit_connection(&self, who: crate::admission::Who<'_>) -> Result<(), ProxyError> {
        self.rate_limits.load().admit_connection(who)
    }

    /// `[[rate_limits]]` on transactions: waits for a turn within `patience` (the pool's
    /// acquire_timeout), else 53400 / 1203. Free when no rule limits transactions.
    pub async fn admit_transaction(
        &self,
        holder: &Holder,
        patience: Duration,
    ) -> Result<(), ProxyError> {
        // The common case (no transaction rule) costs one guard load, no reference count.
        let limits = self.rate_limits.load();
        if !limits.limits_transactions() {
            return Ok(());
        }
        let limits = arc_swap::Guard::into_inner(limits);
        // Boxed: the caller's future (a session's, moved into a box per busy stretch) stays
        // small in the common case above.
        Box::pin(limits.admit_transaction(holder, patience)).await
    }

    /// No rule limits transactions: [`Shared::admit_transaction`] would admit at once.
    pub fn transactions_unlimited(&self) -> bool {
        !self.rate_limits.load().limits_transactions()
    }

    pub(crate) fn refresh_rate_limits(&self, config: &Config) {
        self.rate_limits
            .store(Arc::new(crate::admission::RateLimits::new(
                &config.rate_limits,
            )));
    }

    /// Admits one more client overall (`[limits] max_client_connections`), 53400 beyond it.
    pub fn admit_client(self: &Arc<Self>) -> Result<ClientSlot, ProxyError> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(ProxyError::ShuttingDown(
                "poolguard is shutting down and accepts no new clients".into(),
            ));
        }
        let cap = self.config().limits.max_client_connections;
        let now = self.clients.fetch_add(1, Ordering::Relaxed) + 1;
        let slot = ClientSlot {
            shared: self.clone(),
            entry: None,
            observed: None,
        };
        if now > cap {
            return Err(ProxyError::TooManyClients(format!(
                "poolguard refuses the connection: {cap} clients already connected (max_client_connections = {cap}); close idle clients or raise the limit"
            )));
        }
        Ok(slot)
    }

    /// Counts the client against its pool's own `max_client_connections` too.
    pub fn admit_to_pool(
        &self,
        slot: &mut ClientSlot,
        entry: &Arc<PgPoolEntry>,
    ) -> Result<(), ProxyError> {
        let cap = entry.db().limits.max_client_connections;
        let now = entry.clients.fetch_add(1, Ordering::Relaxed) + 1;
        slot.entry = Some(entry.clone());
        if now > cap {
            return Err(ProxyError::TooManyClients(format!(
                "poolguard refuses the connection: database {} already has {cap} clients (max_client_connections = {cap})",
                entry.db().name
            )));
        }
        Ok(())
    }

    /// The pool for a database and user, created on first use.
    pub fn pg_pool(&self, db: &Database, user: &str) -> Arc<PgPoolEntry> {
        let key = (db.name.clone(), user.to_owned());
        let mut pools = lock(&self.pg_pools);
        if let Some(e) = pools.get(&key) {
            return e.clone();
        }
        let entry = Arc::new(self.new_pg_pool(db, user));
        pools.insert(key, entry.clone());
        entry
    }

    /// Keep the pools `keep` says yes to; the others leave the map (the caller closes them).
    pub(crate) fn retain_pg_pools(&self, mut keep: impl FnMut(&PgPoolEntry) -> bool) {
        lock(&self.pg_pools).retain(|_, e| keep(e));
    }

    /// A client is about to drop (or rename) server database `name`, which the server refuses
    /// while any session is connected to it: the pools on it close their idle connections now
    /// (and their busy ones as they come back), as a direct client's own connections would
    /// not be there. Returns how many pools were told.
    pub fn let_go_of_database(&self, name: &str) -> usize {
        let pools: Vec<_> = self
            .pg_pools()
            .into_iter()
            .filter(|e| e.db().server_database == name)
            .collect();
        for e in &pools {
            tracing::info!(pool = %e.name(), database = name, "closing idle server connections: a client drops or renames their database");
            e.pool.retire_all();
        }
        pools.len()
    }

    pub fn pg_pools(&self) -> Vec<Arc<PgPoolEntry>> {
        lock(&self.pg_pools).values().cloned().collect()
    }

    fn new_pg_pool(&self, db: &Database, user: &str) -> PgPoolEntry {
        debug_assert_eq!(db.protocol, Protocol::Postgres);
        let front = self
            .config()
            .postgres
            .as_ref()
            .map(|p| p.max_prepared_statements);
        let finish = |c: &mut PgConnector| {
            if let Some(max) = front {
                c.max_prepared_statements = max;
            }
            c.target = db.target;
        };
        PgPoolEntry::new(self, db, user, "", finish, PgPoolExtra::default())
    }
}

/// A backend's starting limit: its `max_connections`, or 0 in a fleet (the fleet raises it).
fn own_limit(config: &Config, max_connections: usize) -> usize {
    if config.fleet.is_some() {
        0
    } else {
        max_connections
    }
}

/// The iteration count most configured verifiers use (PostgreSQL's default with none): what an
/// unknown user's stand-in shows, so it looks like everyone else's.
fn usual_iterations(verifiers: &HashMap<String, (String, ScramVerifier)>) -> u32 {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for (_, v) in verifiers.values() {
        *counts.entry(v.iterations).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(iterations, n)| (n, iterations))
        .map_or(poolguard_pg::scram::DEFAULT_ITERATIONS, |(i, _)| i)
}

/// SCRAM verifiers for every user, reusing `previous` where the secret did not change.
fn scram_verifiers(
    config: &Config,
    previous: &HashMap<String, (String, ScramVerifier)>,
) -> HashMap<String, (String, ScramVerifier)> {
    let mut out = HashMap::new();
    for u in &config.users {
        if let Some(kept) = previous.get(&u.name).filter(|(s, _)| *s == u.password) {
            out.insert(u.name.clone(), kept.clone());
            continue;
        }
        match ScramVerifier::for_secret(&u.password) {
            Ok(v) => {
                out.insert(u.name.clone(), (u.password.clone(), v));
            }
            Err(e) => {
                tracing::warn!(user = %u.name, error = %e, "user cannot log in with SCRAM-SHA-256");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stand_in_salt_is_stable_per_process_and_user() {
        let config = Config::builtin_default("x");
        let one = Shared::new(config.clone());
        let other = Shared::new(config);
        let a = one.stand_in_verifier("mallory");
        assert_eq!(a, one.stand_in_verifier("mallory"));
        assert_ne!(a.salt, one.stand_in_verifier("eve").salt);
        assert_ne!(
            a.salt,
            other.stand_in_verifier("mallory").salt,
            "keys differ"
        );
        let real = one.verifier("postgres").expect("configured user");
        assert_eq!(
            (a.iterations, a.salt.len()),
            (real.iterations, real.salt.len())
        );
    }
}
