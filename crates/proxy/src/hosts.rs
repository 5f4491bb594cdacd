//! A backend's hosts: which one takes writes, what each was last seen as, and a circuit breaker
//! per host. The health checker and the failover that act on them live in [`check`].
//!
//! Role: every pool of a backend connects through one shared [`HostSet`]; its connectors read
//! [`HostSet::write_host`] at each connect, so moving the write host redirects every new server
//! connection of the backend at once. Pools of a standby database (`target = "standby"`) pick
//! one of the hosts last seen read-only instead, in turn ([`HostSet::connect_target`]).
//!
//! Invariants:
//! - The write host starts as the first configured host and moves only to a host whose last
//!   health check found it writable, and only when the current one was last seen down or
//!   read-only. With no writable host in sight it stays where it is (its breaker fails fast).
//! - A host's breaker counts the pools' connects to it, never health checks: a check connects
//!   outside the breaker, so it can see a host come back while the breaker still refuses.
//! - With `[fleet] patroni_scope`, Patroni's leader key decides instead
//!   ([`HostSet::follow_leader`]): from the first leader reported on, health checks no longer
//!   move the write host (a check result from before a promotion must not undo it).
//! - Locks are short `std` mutexes, never held across `.await`; the write host is an atomic index.

pub mod check;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use poolguard_pool::{Breaker, BreakerConfig, BreakerOpen};
use tokio::time::Instant;

use crate::config::guard::HostGuard;
use crate::config::target::Target;
use crate::config::Backend;
use crate::tls::connect::ServerTls;

/// What a host was last seen as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not checked yet, or the last check could not tell (say, the check user's login was
    /// refused, which says nothing about the host).
    Unknown,
    /// Takes writes: PostgreSQL not in recovery, MySQL/MariaDB with `read_only = 0`.
    Primary,
    /// Answers but refuses writes: a PostgreSQL standby, a MySQL replica with `read_only = 1`.
    Standby,
    /// Unreachable, too slow, or refusing connections (shutting down, starting up).
    Down,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Unknown => "unknown",
            Role::Primary => "primary",
            Role::Standby => "standby",
            Role::Down => "down",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one health check of one host.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub at: Instant,
    pub took: Duration,
    pub role: Role,
    /// Why the check failed, if it did.
    pub error: Option<String>,
}

/// One host of a backend.
pub struct Host {
    /// `host:port` as configured.
    pub addr: String,
    /// Counts the pools' connects to this host; named after the address.
    pub breaker: Arc<Breaker>,
    last: Mutex<Option<CheckResult>>,
    /// Whether the log already said this host answers `prefer` without TLS.
    said_plain: std::sync::atomic::AtomicBool,
}

impl Host {
    /// What the last health check found ([`Role::Unknown`] before the first).
    pub fn role(&self) -> Role {
        self.last_check().map_or(Role::Unknown, |c| c.role)
    }

    pub fn last_check(&self) -> Option<CheckResult> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A move of the write host, as decided by [`HostSet::choose_write_host`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover {
    pub from: String,
    /// What the old write host was last seen as (down or standby).
    pub from_role: Role,
    /// Why its last check failed, if it did.
    pub from_error: Option<String>,
    pub to: String,
}

/// A host's state for the admin side and tests.
#[derive(Debug, Clone)]
pub struct HostStatus {
    pub addr: String,
    pub role: Role,
    pub writes_here: bool,
    pub last_check: Option<CheckResult>,
    pub breaker: poolguard_pool::BreakerStats,
}

/// A leader address that is none of the backend's configured hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownHost;

/// What the connectors' errors tell the host set: whether a failure counts against the host,
/// and how a refusal by its breaker is expressed.
pub trait HostError: Sized {
    /// The host is unusable for everyone (unreachable, too slow, shutting down), as opposed
    /// to a refusal that concerns one user or the configuration.
    fn is_host_failure(&self) -> bool;
    /// The error for "the breaker is open; nothing was attempted".
    fn unavailable(open: BreakerOpen) -> Self;
    /// The error for "a standby database without fallback has no usable standby".
    fn no_standby(backend: &str) -> Self;
}

/// The hosts of one backend and which of them takes writes.
pub struct HostSet {
    backend: String,
    hosts: Vec<Host>,
    /// Index into `hosts` of the host the pools connect to.
    write: AtomicUsize,
    /// Where the search for the next standby starts, so a standby database's connections
    /// spread over the standbys.
    next_standby: AtomicUsize,
    failovers: AtomicU64,
    /// Patroni's leader key decides the write host (set by the first leader followed).
    led: AtomicBool,
    /// The one connection the backend may open beyond its budget, for work that cannot wait
    /// for a unit: a MySQL `KILL QUERY`, when every unit may be held by the very statement to
    /// kill. `poolguard check` counts it against the server's `max_connections`.
    side_connection: tokio::sync::Semaphore,
    /// How connections to these hosts use TLS (`server_tls`); a reload replaces it for the
    /// connections opened after it.
    tls: arc_swap::ArcSwap<ServerTls>,
}

/// The breaker settings of a backend's `[[backends]]` keys.
pub fn breaker_config(guard: &HostGuard) -> BreakerConfig {
    BreakerConfig {
        failures: guard.breaker_failures,
        cooldown: guard.breaker_cooldown,
        max_cooldown: guard.breaker_max_cooldown,
    }
}

impl HostSet {
    /// The hosts of a configured backend, the first one taking writes until checks say otherwise.
    pub fn new(backend: &Backend) -> Arc<HostSet> {
        Self::build(
            &backend.name,
            &backend.hosts,
            breaker_config(&backend.guard),
            backend.server_tls.clone(),
        )
    }

    /// One fixed host with its breaker disabled: one-off connections (`check`, server polls),
    /// using TLS as `tls` says (their backend's `server_tls`).
    pub fn fixed(addr: String, tls: ServerTls) -> Arc<HostSet> {
        let off = BreakerConfig {
            failures: 0,
            ..BreakerConfig::default()
        };
        Self::build("", &[addr], off, tls)
    }

    fn build(
        backend: &str,
        addrs: &[String],
        config: BreakerConfig,
        tls: ServerTls,
    ) -> Arc<HostSet> {
        // Config validation requires at least one host; an empty address keeps this total
        // (connecting to it fails with a clear error).
        let addrs = if addrs.is_empty() {
            vec![String::new()]
        } else {
            addrs.to_vec()
        };
        let hosts = addrs
            .into_iter()
            .map(|addr| Host {
                breaker: Breaker::new(addr.clone(), config),
                addr,
                last: Mutex::new(None),
                said_plain: Default::default(),
            })
            .collect();
        Arc::new(HostSet {
            backend: backend.to_owned(),
            hosts,
            write: AtomicUsize::new(0),
            next_standby: AtomicUsize::new(0),
            failovers: AtomicU64::new(0),
            led: AtomicBool::new(false),
            side_connection: tokio::sync::Semaphore::new(1),
            tls: arc_swap::ArcSwap::from_pointee(tls),
        })
    }

    /// The TLS settings for the next connection to one of these hosts.
    pub fn tls(&self) -> Arc<ServerTls> {
        self.tls.load_full()
    }

    /// A connection to `addr` went on in the clear under `server_tls = "prefer"` because the
    /// server does not offer TLS: logged once per host, since with `prefer` nothing else tells
    /// an operator that the traffic is not encrypted.
    pub fn note_plain_fallback(&self, addr: &str) {
        let host = self.hosts.iter().find(|h| h.addr == addr);
        if host.is_some_and(|h| !h.said_plain.swap(true, Ordering::Relaxed)) {
            tracing::warn!(
                backend = %self.backend,
                host = %addr,
                "the server does not offer TLS; server_tls = \"prefer\" connects in the clear (\"require\" or \"verify-full\" would refuse, \"disable\" saves the attempt)"
            );
        }
    }

    /// A reload changed `server_tls` or its files: connections opened from now on follow it
    /// (open ones keep the TLS they were opened with until they retire).
    pub fn set_tls(&self, tls: &ServerTls) {
        self.tls.store(Arc::new(tls.clone()));
    }

    /// Waits for the backend's single connection beyond its budget (see the field).
    pub async fn side_connection(&self) -> tokio::sync::SemaphorePermit<'_> {
        // Never closed, so acquiring cannot fail.
        self.side_connection
            .acquire()
            .await
            .expect("the side-connection semaphore is never closed")
    }

    /// The backend's name (empty for a fixed host).
    pub fn backend(&self) -> &str {
        &self.backend
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The host new server connections go to.
    pub fn write_host(&self) -> &Host {
        &self.hosts[self.write.load(Ordering::Acquire).min(self.hosts.len() - 1)]
    }

    /// Connects to the write host through its breaker: refused at once while it is open,
    /// otherwise `connect(addr)` runs and its outcome is reported (a failure only if
    /// [`HostError::is_host_failure`]; a login refused for one user proves the host answers).
    pub async fn connect_write_host<T, E, F>(
        &self,
        connect: impl FnOnce(String) -> F,
    ) -> Result<T, E>
    where
        E: HostError,
        F: std::future::Future<Output = Result<T, E>>,
    {
        self.connect_target(Target::Primary, connect).await
    }

    /// `Err` while the write host's breaker refuses (no side effects): the pools' `admit`.
    pub fn admit<E: HostError>(&self) -> Result<(), E> {
        match self.write_host().breaker.refusing() {
            Some(open) => Err(E::unavailable(open)),
            None => Ok(()),
        }
    }

    /// A host last seen as a standby whose breaker lets connects through, taking the hosts in
    /// turn from one call to the next; `None` when there is none.
    pub fn standby_host(&self) -> Option<&Host> {
        // One pass: roles and breakers may change meanwhile, so the count and the choice come
        // from the same list (a second scan could find fewer and return nothing).
        let usable: Vec<&Host> = self
            .hosts
            .iter()
            .filter(|h| h.role() == Role::Standby && h.breaker.refusing().is_none())
            .collect();
        if usable.is_empty() {
            return None;
        }
        let turn = self.next_standby.fetch_add(1, Ordering::Relaxed) % usable.len();
        Some(usable[turn])
    }

    /// Connects where a database of this `target` belongs: the write host for a primary
    /// database; for a standby database the next usable standby, else the write host if it
    /// falls back, else [`HostError::no_standby`]. Outcomes are reported to the chosen host's
    /// breaker as in [`connect_write_host`](Self::connect_write_host).
    pub async fn connect_target<T, E, F>(
        &self,
        target: Target,
        connect: impl FnOnce(String) -> F,
    ) -> Result<T, E>
    where
        E: HostError,
        F: std::future::Future<Output = Result<T, E>>,
    {
        let host = match target {
            Target::Primary => self.write_host(),
            Target::Standby { fallback } => match self.standby_host() {
                Some(h) => h,
                None if fallback => self.write_host(),
                None => return Err(E::no_standby(&self.backend)),
            },
        };
        let pass = host.breaker.try_pass().map_err(E::unavailable)?;
        let result = connect(host.addr.clone()).await;
        match &result {
            Err(e) if e.is_host_failure() => pass.failed(),
            _ => pass.succeeded(),
        }
        result
    }

    /// The pools' `admit` for a database of this `target` (no side effects): refused while no
    /// host it may use would let a connect through.
    pub fn admit_target<E: HostError>(&self, target: Target) -> Result<(), E> {
        match target {
            Target::Primary => self.admit(),
            Target::Standby { fallback } => {
                let usable = self
                    .hosts
                    .iter()
                    .any(|h| h.role() == Role::Standby && h.breaker.refusing().is_none());
                match (usable, fallback) {
                    (true, _) => Ok(()),
                    (false, true) => self.admit(),
                    (false, false) => Err(E::no_standby(&self.backend)),
                }
            }
        }
    }

    /// Times the write host moved (monotonic).
    pub fn failovers_total(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }

    /// New breaker settings for every host (a reload changed the backend's keys).
    pub fn set_guard(&self, guard: &HostGuard) {
        for h in &self.hosts {
            h.breaker.set_config(breaker_config(guard));
        }
    }

    /// Records a health check of the host at `index`.
    pub fn record(&self, index: usize, result: CheckResult) {
        if let Some(h) = self.hosts.get(index) {
            *h.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
        }
    }

    /// Moves the write host if it was last seen down or read-only and another host was last
    /// seen writable (the first such in configured order). Returns the move, if one was made.
    /// Checks run one task per backend, so two decisions never race; the compare-exchange
    /// only makes that explicit.
    pub fn choose_write_host(&self) -> Option<Failover> {
        if self.led.load(Ordering::Acquire) {
            return None;
        }
        let current = self.write.load(Ordering::Acquire);
        let host = &self.hosts[current];
        let last = host.last_check();
        let role = last.as_ref().map_or(Role::Unknown, |c| c.role);
        if !matches!(role, Role::Down | Role::Standby) {
            return None;
        }
        let to = self.hosts.iter().position(|h| h.role() == Role::Primary)?;
        self.write
            .compare_exchange(current, to, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        self.failovers.fetch_add(1, Ordering::Relaxed);
        Some(Failover {
            from: host.addr.clone(),
            from_role: role,
            from_error: last.and_then(|c| c.error),
            to: self.hosts[to].addr.clone(),
        })
    }

    /// Patroni says `addr` leads: writes go there from now on, and health checks stop moving
    /// them. The move made, if any; [`UnknownHost`] when `addr` is not a configured host.
    /// Leader reports come from one task, so two moves never race.
    pub fn follow_leader(&self, addr: &str) -> Result<Option<Failover>, UnknownHost> {
        let to = self
            .hosts
            .iter()
            .position(|h| h.addr == addr)
            .ok_or(UnknownHost)?;
        self.led.store(true, Ordering::Release);
        let from = self.write.swap(to, Ordering::AcqRel);
        if from == to {
            return Ok(None);
        }
        self.failovers.fetch_add(1, Ordering::Relaxed);
        let old = self.hosts.get(from);
        Ok(Some(Failover {
            from: old.map(|h| h.addr.clone()).unwrap_or_default(),
            from_role: old.map_or(Role::Unknown, Host::role),
            from_error: Some("Patroni's leader key moved".into()),
            to: addr.to_owned(),
        }))
    }

    /// Every host's role, check and breaker, in configured order.
    pub fn status(&self) -> Vec<HostStatus> {
        let write = self.write.load(Ordering::Acquire);
        self.hosts
            .iter()
            .enumerate()
            .map(|(i, h)| HostStatus {
                addr: h.addr.clone(),
                role: h.role(),
                writes_here: i == write,
                last_check: h.last_check(),
                breaker: h.breaker.stats(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: usize) -> Arc<HostSet> {
        let addrs: Vec<String> = (0..n).map(|i| format!("10.0.0.{i}:5432")).collect();
        HostSet::build(
            "pg",
            &addrs,
            BreakerConfig::default(),
            ServerTls::disabled(),
        )
    }

    fn seen(set: &HostSet, index: usize, role: Role) {
        set.record(
            index,
            CheckResult {
                at: Instant::now(),
                took: Duration::ZERO,
                role,
                error: (role == Role::Down).then(|| "connection refused".into()),
            },
        );
    }

    #[tokio::test]
    async fn the_first_host_takes_writes_until_checks_say_otherwise() {
        let s = set(3);
        assert_eq!(s.write_host().addr, "10.0.0.0:5432");
        assert_eq!(s.choose_write_host(), None, "nothing checked yet");
        seen(&s, 0, Role::Primary);
        seen(&s, 1, Role::Primary);
        assert_eq!(s.choose_write_host(), None, "a writable write host stays");
    }

    #[tokio::test]
    async fn a_down_write_host_moves_to_the_first_writable_one() {
        let s = set(3);
        seen(&s, 0, Role::Down);
        seen(&s, 1, Role::Standby);
        assert_eq!(s.choose_write_host(), None, "never to a read-only host");
        assert_eq!(s.write_host().addr, "10.0.0.0:5432");
        seen(&s, 2, Role::Primary);
        let f = s.choose_write_host().unwrap();
        assert_eq!(
            (f.from.as_str(), f.from_role, f.to.as_str()),
            ("10.0.0.0:5432", Role::Down, "10.0.0.2:5432")
        );
        assert_eq!(f.from_error.as_deref(), Some("connection refused"));
        assert_eq!(s.write_host().addr, "10.0.0.2:5432");
        assert_eq!(s.failovers_total(), 1);
        // The old primary coming back writable (split brain) does not pull writes back.
        seen(&s, 0, Role::Primary);
        assert_eq!(s.choose_write_host(), None);
        let st = s.status();
        assert!(st[2].writes_here && !st[0].writes_here);
    }

    #[tokio::test]
    async fn a_demoted_write_host_moves_too_and_unknown_does_not() {
        let s = set(2);
        seen(&s, 1, Role::Primary);
        seen(&s, 0, Role::Unknown);
        assert_eq!(
            s.choose_write_host(),
            None,
            "an inconclusive check moves nothing"
        );
        seen(&s, 0, Role::Standby);
        assert_eq!(s.choose_write_host().unwrap().to, "10.0.0.1:5432");
    }

    /// A connect outcome for the breaker bookkeeping: `true` is a host failure.
    #[derive(Debug, PartialEq)]
    enum TestError {
        Failed,
        Open,
        NoStandby,
    }

    impl HostError for TestError {
        fn is_host_failure(&self) -> bool {
            *self == TestError::Failed
        }
        fn unavailable(_: BreakerOpen) -> Self {
            TestError::Open
        }
        fn no_standby(_: &str) -> Self {
            TestError::NoStandby
        }
    }

    /// The address a database of `target` would connect to next.
    async fn next(s: &HostSet, target: Target) -> Result<String, TestError> {
        s.connect_target(target, |addr| async move { Ok(addr) })
            .await
    }

    #[tokio::test]
    async fn a_standby_database_takes_the_standbys_in_turn() {
        let s = set(3);
        seen(&s, 0, Role::Primary);
        seen(&s, 1, Role::Standby);
        seen(&s, 2, Role::Standby);
        let standby = Target::Standby { fallback: true };
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(next(&s, standby).await.unwrap());
        }
        got.sort();
        assert_eq!(
            got,
            [
                "10.0.0.1:5432",
                "10.0.0.1:5432",
                "10.0.0.2:5432",
                "10.0.0.2:5432"
            ]
        );
        assert_eq!(next(&s, Target::Primary).await.unwrap(), "10.0.0.0:5432");
        assert_eq!(s.admit_target::<TestError>(standby), Ok(()));
    }

    #[tokio::test]
    async fn without_a_usable_standby_it_falls_back_or_refuses() {
        let s = set(2);
        let (lenient, strict) = (
            Target::Standby { fallback: true },
            Target::Standby { fallback: false },
        );
        // Nothing checked yet: no host is known to be a standby.
        assert_eq!(next(&s, lenient).await.unwrap(), "10.0.0.0:5432");
        assert_eq!(next(&s, strict).await, Err(TestError::NoStandby));
        assert_eq!(s.admit_target(strict), Err(TestError::NoStandby));
        seen(&s, 0, Role::Primary);
        seen(&s, 1, Role::Standby);
        assert_eq!(next(&s, strict).await.unwrap(), "10.0.0.1:5432");
        // The standby's breaker opens: it is skipped like a host seen down.
        for _ in 0..BreakerConfig::default().failures {
            let r: Result<(), TestError> = s
                .connect_target(strict, |_| async { Err(TestError::Failed) })
                .await;
            assert_eq!(r, Err(TestError::Failed));
        }
        assert_eq!(next(&s, strict).await, Err(TestError::NoStandby));
        assert_eq!(next(&s, lenient).await.unwrap(), "10.0.0.0:5432");
        assert_eq!(s.admit_target::<TestError>(lenient), Ok(()));
    }

    #[tokio::test]
    async fn after_a_promotion_a_standby_database_falls_back_to_the_new_primary() {
        let s = set(2);
        seen(&s, 0, Role::Primary);
        seen(&s, 1, Role::Standby);
        let lenient = Target::Standby { fallback: true };
        assert_eq!(next(&s, lenient).await.unwrap(), "10.0.0.1:5432");
        seen(&s, 0, Role::Down);
        seen(&s, 1, Role::Primary);
        assert!(s.choose_write_host().is_some());
        assert_eq!(next(&s, lenient).await.unwrap(), "10.0.0.1:5432");
        assert_eq!(next(&s, Target::Primary).await.unwrap(), "10.0.0.1:5432");
    }

    #[tokio::test]
    async fn a_patroni_leader_moves_writes_and_checks_no_longer_do() {
        let s = set(2);
        assert_eq!(s.follow_leader("10.0.0.9:5432"), Err(UnknownHost));
        assert_eq!(s.follow_leader("10.0.0.0:5432"), Ok(None), "already there");
        let f = s.follow_leader("10.0.0.1:5432").unwrap().unwrap();
        assert_eq!(
            (f.from.as_str(), f.to.as_str()),
            ("10.0.0.0:5432", "10.0.0.1:5432")
        );
        assert_eq!(s.write_host().addr, "10.0.0.1:5432");
        // A stale check from before the promotion does not pull writes back.
        seen(&s, 1, Role::Standby);
        seen(&s, 0, Role::Primary);
        assert_eq!(s.choose_write_host(), None);
        assert_eq!(s.failovers_total(), 1);
    }

    #[tokio::test]
    async fn a_fixed_host_never_opens_its_breaker() {
        let s = HostSet::fixed("127.0.0.1:1".into(), ServerTls::disabled());
        for _ in 0..20 {
            s.write_host().breaker.try_pass().unwrap().failed();
        }
        assert!(s.write_host().breaker.refusing().is_none());
    }
}
