//! Operator actions on a running proxy: PAUSE/RESUME, RELOAD and the drain on shutdown. The
//! admin console (`pg::console`), `POST /api/reload`, SIGHUP and SIGTERM all come here, so each
//! action has one implementation.
//!
//! Every action answers with a one-line summary an operator can read, or a `ProxyError` that
//! says what was refused and why. A reload never drops a client: pools that stay are resized in
//! place, pools whose database or user disappeared are closed (running transactions finish,
//! new ones are refused) and leave the map, new databases get pools on first use.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, Database, Protocol};
use crate::error::ProxyError;
use crate::state::{pool_config, Shared};

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
        *self.config_path.lock().unwrap_or_else(|p| p.into_inner()) = Some(path);
    }

    /// PAUSE [db]: hold new transactions on every pool (or the pools of `database`), and return
    /// once the transactions already running have ended.
    pub async fn pause(&self, database: Option<&str>) -> Result<String, ProxyError> {
        let _ = database;
        Err(ProxyError::FeatureNotSupported(
            "PAUSE is not available yet".into(),
        ))
    }

    /// RESUME [db]: let held transactions go on.
    pub fn resume(&self, database: Option<&str>) -> Result<String, ProxyError> {
        let _ = database;
        Err(ProxyError::FeatureNotSupported(
            "RESUME is not available yet".into(),
        ))
    }

    /// RELOAD: read the configuration file again and apply it without dropping clients. A bad
    /// file is refused and the running configuration kept.
    pub fn reload(&self) -> Result<String, ProxyError> {
        let path = self
            .config_path
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                ProxyError::ConfigRejected(
                    "poolguard runs without a configuration file (built-in default): nothing to reload".into(),
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
    /// they end or `deadline` passes. Returns what happened. The caller stops accepting clients
    /// first and exits after: whatever is still running at the deadline is cut when the
    /// process closes its sockets, and the server rolls it back.
    pub async fn drain(&self, deadline: std::time::Duration) -> String {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let pg: Vec<_> = self
            .pg_pools()
            .into_iter()
            .map(|e| e.pool.clone())
            .collect();
        let my: Vec<_> = self
            .mysql
            .pools()
            .into_iter()
            .map(|e| e.pool.clone())
            .collect();
        pg.iter().for_each(|p| p.close());
        my.iter().for_each(|p| p.close());
        let busy = || {
            pg.iter()
                .map(|p| p.status())
                .chain(my.iter().map(|p| p.status()))
                .map(|s| s.in_use + s.connecting)
                .sum::<usize>()
        };
        let running = busy();
        self.operator_event(format!(
            "shutting down: {running} transaction(s) running, waiting up to {deadline:?}"
        ));
        let waited = tokio::time::timeout(deadline, async {
            // TODO(pool wait_idle): replace this poll with Pool::wait_idle once it lands.
            while busy() > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await;
        match waited {
            Ok(()) => format!("{running} running transaction(s) finished; nothing cut"),
            Err(_) => format!(
                "{} of {running} running transaction(s) finished; {} cut at the {deadline:?} deadline",
                running.saturating_sub(busy()),
                busy()
            ),
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
        if old.alerts.len() != new.alerts.len() {
            summary.restart_needed.push("[[alerts]]");
        }
        for b in &new.backends {
            self.budget_or_new(&b.name, b.max_connections)
                .set_limit(b.max_connections);
        }
        // The pools: resized in place, or closed when their database or user is gone.
        let mut closing = Vec::new();
        let mut kept = 0;
        let mut reconcile = |e: &dyn ReloadablePool, protocol: Protocol| {
            let db = e.database();
            let next = new
                .database(protocol, &db.name)
                .filter(|now| now.backend == db.backend && new.user(e.user()).is_some());
            match next {
                Some(now) => {
                    e.reconfigure(now.clone());
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

/// What a reload needs of a pool entry, whichever protocol it serves.
pub(crate) trait ReloadablePool {
    fn database(&self) -> Arc<Database>;
    fn user(&self) -> &str;
    /// Apply a changed `[[databases]]` entry: pool settings now, limits for what comes next.
    fn reconfigure(&self, db: Database);
    /// Closes the pool when called (after the map's lock is released).
    fn closer(&self) -> Box<dyn FnOnce() + Send>;
}

macro_rules! reloadable {
    ($entry:ty) => {
        impl ReloadablePool for $entry {
            fn database(&self) -> Arc<Database> {
                self.db().clone()
            }

            fn user(&self) -> &str {
                &self.user
            }

            fn reconfigure(&self, db: Database) {
                self.pool.set_config(pool_config(&db, &self.user));
                self.set_db(db);
            }

            fn closer(&self) -> Box<dyn FnOnce() + Send> {
                let pool = self.pool.clone();
                Box::new(move || pool.close())
            }
        }
    };
}

reloadable!(crate::state::PgPoolEntry);
reloadable!(crate::mysql::pools::MyPoolEntry);

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
