//! Operator actions on a running proxy: PAUSE/RESUME, RELOAD and the drain on shutdown. The
//! admin console (`pg::console`), `POST /api/reload`, SIGHUP and SIGTERM all come here, so each
//! action has one implementation.
//!
//! Every action answers with a one-line summary an operator can read, or a `ProxyError` that
//! says what was refused and why. A reload never drops a client: pools that stay are resized in
//! place, pools whose database or user disappeared are closed (running transactions finish,
//! new ones are refused) and leave the map, new databases get pools on first use. A backend's
//! `server_tls` settings take effect for the next connection; when they changed, the backend's
//! pools retire the connections opened under the old ones (idle now, busy when returned).

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, Database, Protocol};
use crate::entry::admission;
use crate::entry::{PoolEntry, ServerConnector};
use crate::error::ProxyError;
use crate::lock;
use crate::state::Shared;

/// What a reload changed, for the log and the operator.
#[derive(Debug, Default)]
struct ReloadSummary {
    kept: usize,
    removed: usize,
    restart_needed: Vec<&'static str>,
}

impl Shared {
    /// Remember where the configuration came from, so RELOAD and SIGHUP can read it again.
    pub fn set_config_path(&self, path: PathBuf) {
        *lock(&self.config_path) = Some(path);
    }

    /// PAUSE [db]: hold new transactions on every pool (or the pools of `database`), and return
    /// once the transactions already running have ended. Held clients wait without their
    /// acquire deadline running (it restarts at RESUME); pools created while paused start
    /// paused. Like PgBouncer's PAUSE it waits as long as it takes: in session mode, that is
    /// until the clients holding servers disconnect.
    pub async fn pause(&self, database: Option<&str>) -> Result<String, ProxyError> {
        self.known_database(database)?;
        self.set_paused(|p| p.pause(database));
        let pools = self.pools_of(database);
        pools.iter().for_each(|p| p.pause());
        let what = database.map_or("all databases".to_owned(), |d| format!("database {d}"));
        tracing::info!(what = %what, pools = pools.len(), "PAUSE: holding new transactions, waiting for running ones");
        for p in &pools {
            p.wait_idle().await;
        }
        let summary = format!(
            "paused {what}: {} pool(s) hold new transactions; none is running",
            pools.len()
        );
        self.operator_event(summary.clone());
        Ok(summary)
    }

    /// RESUME [db]: let held transactions go on.
    pub fn resume(&self, database: Option<&str>) -> Result<String, ProxyError> {
        self.known_database(database)?;
        self.set_paused(|p| p.resume(database));
        let pools = self.pools_of(database);
        pools.iter().for_each(|p| p.resume());
        let what = database.map_or("all databases".to_owned(), |d| format!("database {d}"));
        let summary = format!("resumed {what}: {} pool(s)", pools.len());
        self.operator_event(summary.clone());
        Ok(summary)
    }

    /// Pause a pool created while its database is paused (called by the pool factories).
    pub(crate) fn adopt<C: poolguard_pool::Connector>(
        &self,
        pool: &poolguard_pool::Pool<C>,
        db: &Database,
    ) {
        pool.set_admission(admission(db));
        if lock(&self.paused).covers(&db.name) {
            pool.pause();
        }
    }

    fn set_paused(&self, change: impl FnOnce(&mut Paused)) {
        let mut paused = lock(&self.paused);
        change(&mut paused);
        self.observe
            .paused
            .store(paused.any(), std::sync::atomic::Ordering::Relaxed);
    }

    fn known_database(&self, database: Option<&str>) -> Result<(), ProxyError> {
        match database {
            Some(d) if !self.config().databases.iter().any(|db| db.name == d) => {
                Err(ProxyError::UnknownDatabase(d.to_owned()))
            }
            _ => Ok(()),
        }
    }

    /// Every pool of `database` (all pools when `None`), as pause/resume handles.
    fn pools_of(&self, database: Option<&str>) -> Vec<Box<dyn PausablePool>> {
        let wanted = |name: &str| database.is_none_or(|d| d == name);
        let mut out: Vec<Box<dyn PausablePool>> = Vec::new();
        for e in self.pg_pools() {
            if wanted(&e.db().name) {
                out.push(Box::new(e.pool.clone()));
            }
        }
        for e in self.mysql.pools() {
            if wanted(&e.db().name) {
                out.push(Box::new(e.pool.clone()));
            }
        }
        out
    }

    /// RELOAD: read the configuration file again and apply it without dropping clients. A bad
    /// file is refused and the running configuration kept.
    pub fn reload(&self) -> Result<String, ProxyError> {
        let path = lock(&self.config_path).clone().ok_or_else(|| {
            ProxyError::ConfigRejected(
                "poolguard runs without a configuration file (built-in default): nothing to reload"
                    .into(),
            )
        })?;
        let config = Config::load(&path).map_err(|e| {
            tracing::warn!(path = %path.display(), error = %e, "reload refused; the running configuration stays");
            ProxyError::ConfigRejected(format!(
                "reload refused, the running configuration stays: {e}"
            ))
        })?;
        let summary = self.apply_config(config);
        tracing::info!(path = %path.display(), %summary, "configuration reloaded");
        self.operator_event(format!("configuration reloaded: {summary}"));
        Ok(summary)
    }

    /// Shutdown drain: every pool refuses new transactions (57P01 / 1053, "shutting down") and
    /// closes its idle server connections; transactions already running keep their server until
    /// they end or `deadline` passes; then, in a fleet, the shares go back (see
    /// `fleet::leave_after_drain`). Returns what happened. The caller stops accepting clients
    /// first and exits after: whatever is still running at the deadline is cut when the
    /// process closes its sockets, and the server rolls it back.
    pub async fn drain(&self, deadline: std::time::Duration) -> String {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let pools = self.pools_of(None);
        pools.iter().for_each(|p| p.close());
        let busy = || pools.iter().map(|p| p.busy()).sum::<usize>();
        let running = busy();
        self.operator_event(format!(
            "shutting down: {running} transaction(s) running, waiting up to {deadline:?}"
        ));
        let waited = tokio::time::timeout(deadline, async {
            for p in &pools {
                p.wait_idle().await;
            }
        })
        .await;
        let summary = match waited {
            Ok(()) => format!("{running} running transaction(s) finished; nothing cut"),
            Err(_) => format!(
                "{} of {running} running transaction(s) finished; {} cut at the {deadline:?} deadline",
                running.saturating_sub(busy()),
                busy()
            ),
        };
        match crate::fleet::leave_after_drain(self, waited.is_ok()).await {
            Some(fleet) => format!("{summary}; {fleet}"),
            None => summary,
        }
    }

    /// Record an operator action in the event log (dashboard, `/api/events`).
    fn operator_event(&self, message: String) {
        self.observe.events.push(
            poolguard_admin::EventKind::Operator,
            message,
            None,
            None,
            None,
        );
    }

    /// Apply a validated configuration to the running proxy (see the module docs).
    pub fn apply_config(&self, new: Config) -> String {
        let old = self.config();
        let mut summary = ReloadSummary::default();
        if old.postgres.as_ref().map(|p| p.listen) != new.postgres.as_ref().map(|p| p.listen) {
            summary.restart_needed.push("[postgres] listen");
        }
        if old.mysql_listen != new.mysql_listen {
            summary.restart_needed.push("[mysql] listen");
        }
        if old.admin_listen != new.admin_listen {
            summary.restart_needed.push("[admin] listen");
        }
        if old.fleet != new.fleet {
            summary.restart_needed.push("[fleet]");
        }
        if old.alerts.len() != new.alerts.len() {
            summary.restart_needed.push("[[alerts]]");
        }
        for b in &new.backends {
            match self.fleet() {
                // The fleet owns the limit: it applies the new fleet budget in its next round.
                Some(fleet) => {
                    self.budget_or_new(&b.name, b.max_connections);
                    fleet.set_budget(&b.name, b.max_connections);
                }
                // During a binary upgrade the other process's share stays out of reach.
                None => {
                    let limit = self.budget_limit(&b.name, b.max_connections);
                    self.budget_or_new(&b.name, limit).set_limit(limit);
                }
            }
            if let Some(set) = self.hosts(&b.name) {
                let same_hosts = set.hosts().iter().map(|h| &h.addr).eq(b.hosts.iter());
                if same_hosts {
                    set.set_guard(&b.guard);
                    let tls_changed = !set.tls().same_settings(&b.server_tls);
                    // Always stored: the files were read again (a renewed certificate).
                    set.set_tls(&b.server_tls);
                    if tls_changed {
                        // Connections opened under the old TLS settings are not reused: a
                        // stricter mode must not be satisfied by a connection made without it.
                        crate::hosts::check::retire_pools(self, &b.name, |_| true);
                    }
                } else {
                    summary.restart_needed.push("[[backends]] hosts");
                }
            }
        }
        // The pools: resized in place, or closed when their database or user is gone.
        let mut closing = Vec::new();
        let mut kept = 0;
        let mut reconcile = |e: &dyn ReloadablePool, protocol: Protocol| {
            let db = e.database();
            let next = new
                .database(protocol, &db.name)
                // A pool's connector is fixed to where it connects: another backend, server
                // database or target means a new pool (this one drains).
                .filter(|now| {
                    now.backend == db.backend
                        && now.server_database == db.server_database
                        && now.target == db.target
                })
                .and_then(|now| match new.user(e.user()) {
                    Some(user) => Some((now, Some(user))),
                    // A user its database's auth_query found stays while the lookup does
                    // (its secret comes from the server, not from this file).
                    None if now.auth.is_some() => Some((now, None)),
                    None => None,
                });
            match next {
                Some((now, user)) => {
                    e.reconfigure(now.into_owned(), user);
                    kept += 1;
                    true
                }
                None => {
                    closing.push(e.closer());
                    false
                }
            }
        };
        self.retain_pg_pools(|e| reconcile(e, Protocol::Postgres));
        self.mysql.retain_pools(|e| reconcile(e, Protocol::Mysql));
        summary.kept = kept;
        summary.removed = closing.len();
        // Closing outside the maps' locks: a closed pool refuses new transactions at once and
        // closes each server connection as its running transaction hands it back.
        closing.into_iter().for_each(|close| close());
        self.refresh_verifiers(&new);
        self.refresh_rate_limits(&new);
        self.store_config(new);
        summary.to_string()
    }
}

/// Which databases are paused: all, or some by name.
#[derive(Debug, Default)]
pub(crate) struct Paused {
    all: bool,
    databases: std::collections::HashSet<String>,
}

impl Paused {
    fn pause(&mut self, database: Option<&str>) {
        match database {
            Some(d) => {
                self.databases.insert(d.to_owned());
            }
            None => self.all = true,
        }
    }

    fn resume(&mut self, database: Option<&str>) {
        match database {
            Some(d) => {
                self.databases.remove(d);
            }
            None => {
                self.all = false;
                self.databases.clear();
            }
        }
    }

    fn covers(&self, database: &str) -> bool {
        self.all || self.databases.contains(database)
    }

    pub(crate) fn any(&self) -> bool {
        self.all || !self.databases.is_empty()
    }
}

/// A pool of either protocol, as PAUSE and the drain see it.
trait PausablePool: Send + Sync {
    fn pause(&self);
    fn resume(&self);
    fn close(&self);
    fn busy(&self) -> usize;
    fn wait_idle(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
}

impl<C: poolguard_pool::Connector> PausablePool for poolguard_pool::Pool<C> {
    fn pause(&self) {
        poolguard_pool::Pool::pause(self)
    }
    fn resume(&self) {
        poolguard_pool::Pool::resume(self)
    }
    fn close(&self) {
        poolguard_pool::Pool::close(self)
    }
    fn busy(&self) -> usize {
        let s = self.status();
        s.in_use + s.connecting
    }
    fn wait_idle(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(poolguard_pool::Pool::wait_idle(self))
    }
}

/// What a reload needs of a pool entry, whichever protocol it serves (the one entry type,
/// [`crate::entry::PoolEntry`], over either door's connector).
pub(crate) trait ReloadablePool {
    fn database(&self) -> Arc<Database>;
    fn user(&self) -> &str;
    /// `user`: its `[[users]]` entry, `None` for a user `auth_query` found.
    fn reconfigure(&self, db: Database, user: Option<&crate::config::User>);
    /// Closes the pool when called (after the map's lock is released).
    fn closer(&self) -> Box<dyn FnOnce() + Send>;
}

impl<C: ServerConnector, X> ReloadablePool for PoolEntry<C, X> {
    fn database(&self) -> Arc<Database> {
        self.db().clone()
    }

    fn user(&self) -> &str {
        &self.user
    }

    fn reconfigure(&self, db: Database, user: Option<&crate::config::User>) {
        PoolEntry::reconfigure(self, db, user)
    }

    fn closer(&self) -> Box<dyn FnOnce() + Send> {
        let pool = self.pool.clone();
        Box::new(move || pool.close())
    }
}

impl std::fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} pool(s) updated in place, {} removed (draining)",
            self.kept, self.removed
        )?;
        if !self.restart_needed.is_empty() {
            write!(
                f,
                "; changes to {} take effect only after a restart",
                self.restart_needed.join(", ")
            )?;
        }
        Ok(())
    }
}
