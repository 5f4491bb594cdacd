//! Health checks, failover, and the announcement of breaker transitions.
//!
//! Tasks ([`spawn`], from `Proxy::start`):
//! - one per backend that has a `health_check_interval` (started at start, or within
//!   [`TRANSITION_PERIOD`] of a reload that adds the backend or turns its checks on; the
//!   interval is re-read every round, and the task ends when the backend or its checks go):
//!   every interval, each host is checked
//!   concurrently (log in as the first `[[users]]` entry, as the server poll does, then
//!   `SELECT pg_is_in_recovery()` / `SELECT @@global.read_only`), each check bounded by
//!   `health_check_timeout`. A check holds a unit of the backend's budget while its connection
//!   is open, so the hard cap holds for checks too; when no unit is free that host is not
//!   checked this round and its last result stands. After each result the write host is
//!   reconsidered ([`HostSet::choose_write_host`]); a move retires every pool of the backend
//!   (idle server connections close now, busy ones when returned), so no new transaction
//!   reaches the old host, and is logged and pushed as a `failover` event. A host becoming or
//!   ceasing to be a standby retires the backend's standby databases' pools the same way, so
//!   their connections are chosen again from the standbys as they are now.
//! - one for all backends: every [`TRANSITION_PERIOD`] the hosts' breaker transitions become
//!   log lines and `breaker` events.
//!
//! Invariants: the tasks hold only a `Weak<Shared>` between rounds and end when the proxy is
//! dropped; no lock is held across `.await`; every check is bounded in time.

use std::sync::Arc;
use std::time::Duration;

use poolguard_admin::EventKind;
use poolguard_pool::{BreakerState, Transition};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

use super::{CheckResult, Failover, HostError, HostSet, Role};
use crate::config::target::Target;
use crate::config::{Backend, Database, Protocol};
use crate::entry::ServerConnector;
use crate::mysql::server::MyConnector;
use crate::pg::server::PgConnector;
use crate::state::Shared;

/// How often breaker transitions are turned into log lines and events.
pub const TRANSITION_PERIOD: Duration = Duration::from_millis(200);

/// Starts the task that announces breaker transitions and keeps one health checker running
/// per backend with a `health_check_interval`, including backends a reload adds.
pub fn spawn(shared: &Arc<Shared>) -> Vec<JoinHandle<()>> {
    ensure_checkers(shared);
    let weak = Arc::downgrade(shared);
    vec![tokio::spawn(async move {
        let mut ticks = tokio::time::interval(TRANSITION_PERIOD);
        loop {
            ticks.tick().await;
            let Some(shared) = weak.upgrade() else { return };
            announce_transitions(&shared);
            // A reload may have added a backend or turned checks on: start its checker here
            // rather than in the reload, which runs without an `Arc<Shared>`.
            ensure_checkers(&shared);
        }
    })]
}

/// Starts a checker for every configured backend that wants checks and has none running.
fn ensure_checkers(shared: &Arc<Shared>) {
    let config = shared.config();
    for b in &config.backends {
        if b.guard.health_check_interval.is_none() || !shared.claim_checker(&b.name) {
            continue;
        }
        let set = shared.hosts_or_new(b);
        tokio::spawn(run_checker(Arc::downgrade(shared), b.name.clone(), set));
    }
}

/// One backend's checker: a round every interval, re-read from the configuration each round
/// so a reload changes it in place. Ends (and gives up its claim) when the backend is gone,
/// its host set was replaced, or its checks were turned off.
async fn run_checker(weak: std::sync::Weak<Shared>, backend: String, set: Arc<HostSet>) {
    let mut every = None;
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    loop {
        let wanted = {
            let Some(shared) = weak.upgrade() else { return };
            let interval = shared
                .config()
                .backend(&backend)
                .and_then(|b| b.guard.health_check_interval);
            let same_set = shared
                .hosts(&backend)
                .is_some_and(|s| Arc::ptr_eq(&s, &set));
            match interval {
                Some(i) if same_set => i,
                _ => {
                    shared.release_checker(&backend);
                    return;
                }
            }
        };
        if every != Some(wanted) {
            every = Some(wanted);
            ticks = tokio::time::interval(wanted);
            // A round slower than the interval (a host timing out) delays the next one rather
            // than starting rounds back to back.
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
        ticks.tick().await;
        let Some(shared) = weak.upgrade() else { return };
        check_backend(&shared, &set).await;
    }
}

/// The backend's connector for the check user; it probes any host of the set by address.
enum Prober {
    Pg(PgConnector),
    My(MyConnector),
}

impl Prober {
    /// Logs in as [`Config::service_user`](crate::config::Config::service_user) (to the first
    /// database on this backend), as the server poll does; `None` when there is no user to log in with.
    fn of(shared: &Shared, backend: &Backend, set: &Arc<HostSet>) -> Option<Prober> {
        let config = shared.config();
        let user = config.service_user()?;
        let db = config
            .databases
            .iter()
            .filter(|d| d.names_a_server_database())
            .find(|d| d.backend == backend.name)
            .map(|d| d.server_database.clone());
        let timeout = backend.guard.health_check_timeout;
        let (name, password) = (user.name.clone(), user.password.clone());
        Some(match backend.protocol {
            Protocol::Postgres => Prober::Pg(PgConnector::for_hosts(
                set.clone(),
                name,
                password,
                db.unwrap_or_else(|| "postgres".into()),
                timeout,
            )),
            Protocol::Mysql => {
                let mut c = MyConnector::for_hosts(
                    set.clone(),
                    name,
                    password,
                    db.unwrap_or_default(),
                    timeout,
                );
                c.server_rsa_key = backend.server_rsa_key.clone();
                Prober::My(c)
            }
        })
    }

    /// The host's role, or `(role, why)` when the check failed: `Down` if the failure says the
    /// host is unusable for everyone, `Unknown` if it only says the check's login was refused.
    async fn probe(&self, addr: &str) -> Result<Role, (Role, String)> {
        let (writable, host_failure) = match self {
            Prober::Pg(c) => match c.probe_writable(addr).await {
                Ok(w) => (Ok(w), false),
                Err(e) => (Err(e.to_string()), e.is_host_failure()),
            },
            Prober::My(c) => match c.probe_writable(addr).await {
                Ok(w) => (Ok(w), false),
                Err(e) => (Err(e.to_string()), e.is_host_failure()),
            },
        };
        match writable {
            Ok(true) => Ok(Role::Primary),
            Ok(false) => Ok(Role::Standby),
            Err(why) if host_failure => Err((Role::Down, why)),
            Err(why) => Err((Role::Unknown, why)),
        }
    }
}

/// One round of checks for one backend.
async fn check_backend(shared: &Arc<Shared>, set: &Arc<HostSet>) {
    let Some(backend) = shared.config().backend(set.backend()).cloned() else {
        return;
    };
    let Some(prober) = Prober::of(shared, &backend, set) else {
        tracing::warn!(backend = %backend.name, "health check skipped: no [[users]] entry to log in with");
        return;
    };
    let prober = Arc::new(prober);
    let timeout = backend.guard.health_check_timeout;
    let mut checks = JoinSet::new();
    for (index, host) in set.hosts().iter().enumerate() {
        let Some(unit) = shared.budget(&backend.name).and_then(|b| b.try_reserve()) else {
            tracing::debug!(backend = %backend.name, host = %host.addr, "health check skipped: every server connection of the budget is in use");
            continue;
        };
        let (prober, addr) = (prober.clone(), host.addr.clone());
        checks.spawn(async move {
            let started = Instant::now();
            let outcome = match tokio::time::timeout(timeout, prober.probe(&addr)).await {
                Ok(outcome) => outcome,
                Err(_) => Err((Role::Down, format!("no answer within {timeout:?}"))),
            };
            drop(unit); // the check's connection is closed by now
            (index, started, outcome)
        });
    }
    // Results are acted on as they arrive: a host that answers at once is not held up by one
    // that times out.
    while let Some(done) = checks.join_next().await {
        let Ok((index, started, outcome)) = done else {
            continue;
        };
        let (role, error) = match outcome {
            Ok(role) => (role, None),
            Err((role, why)) => (role, Some(why)),
        };
        let host = &set.hosts()[index];
        let before = host.role();
        if before != role {
            tracing::info!(backend = %backend.name, host = %host.addr, from = %before, to = %role, error = error.as_deref().unwrap_or(""), "host role changed");
        }
        set.record(
            index,
            CheckResult {
                at: Instant::now(),
                took: started.elapsed(),
                role,
                error,
            },
        );
        // The set of standbys changed: the standby databases' connections were chosen from
        // the old one (a fallback to the write host, or a host that is no standby now).
        if (before == Role::Standby) != (role == Role::Standby) {
            let retired = retire_pools(shared, &backend.name, |db| {
                matches!(db.target, Target::Standby { .. })
            });
            if retired > 0 {
                tracing::info!(backend = %backend.name, host = %host.addr, pools_retired = retired, "standbys changed: standby databases reconnect");
            }
        }
        if let Some(failover) = set.choose_write_host() {
            fail_over(shared, &backend.name, &failover);
        }
    }
}

/// Retires the pools of `backend` whose database `which` selects (idle server connections close
/// now, busy ones when returned); how many.
pub(crate) fn retire_pools(
    shared: &Shared,
    backend: &str,
    which: impl Fn(&Database) -> bool,
) -> usize {
    let mut retired = 0usize;
    for e in shared.pg_pools() {
        let db = e.db();
        if db.backend == backend && which(&db) {
            e.pool.retire_all();
            retired += 1;
        }
    }
    for e in shared.mysql.pools() {
        let db = e.db();
        if db.backend == backend && which(&db) {
            e.pool.retire_all();
            retired += 1;
        }
    }
    retired
}

/// After the write host moved: retire every pool of the backend, announce it.
pub(crate) fn fail_over(shared: &Shared, backend: &str, f: &Failover) {
    let retired = retire_pools(shared, backend, |_| true);
    let why = f.from_error.as_deref().unwrap_or("");
    tracing::warn!(
        backend,
        from = %f.from,
        from_role = %f.from_role,
        reason = why,
        to = %f.to,
        pools_retired = retired,
        "failover: writes move to another host"
    );
    let reason = if why.is_empty() {
        String::new()
    } else {
        format!(": {why}")
    };
    let message = format!(
        "backend {backend}: writes move from {} ({}{reason}) to {} (primary); {retired} pools retired",
        f.from, f.from_role, f.to
    );
    shared
        .observe
        .events
        .push(EventKind::Failover, message, None, None, None);
}

/// Every host's breaker transitions since the last call, as log lines and events.
fn announce_transitions(shared: &Shared) {
    let backends: Vec<String> = shared
        .config()
        .backends
        .iter()
        .map(|b| b.name.clone())
        .collect();
    for name in backends {
        let Some(set) = shared.hosts(&name) else {
            continue;
        };
        for host in set.hosts() {
            for t in host.breaker.take_transitions() {
                announce(shared, &name, &t);
            }
        }
    }
}

fn announce(shared: &Shared, backend: &str, t: &Transition) {
    let (from, to) = (t.from.as_str(), t.to.as_str());
    if t.to == BreakerState::Open {
        tracing::warn!(backend, host = %t.name, from, to, consecutive_failures = t.consecutive_failures, cooldown = ?t.cooldown, "circuit breaker opened: connects to this host are refused");
    } else {
        tracing::info!(backend, host = %t.name, from, to, consecutive_failures = t.consecutive_failures, "circuit breaker changed state");
    }
    let detail = match t.to {
        BreakerState::Open => format!(
            "{} failed connects in a row; refusing for {:?}",
            t.consecutive_failures, t.cooldown
        ),
        BreakerState::HalfOpen => "cool-down over; one probe connect let through".to_owned(),
        BreakerState::Closed => "a connect succeeded; connects go through".to_owned(),
    };
    let message = format!(
        "backend {backend}: circuit breaker of {} {from} -> {to} ({detail})",
        t.name
    );
    shared.observe.events.push(
        EventKind::Breaker,
        message,
        None,
        None,
        Some(f64::from(t.to.as_gauge())),
    );
}
