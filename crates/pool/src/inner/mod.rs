//! The pool's shared state and the one place that hands out capacity (`dispatch_locked`).
//!
//! Invariants (all under `Shared::state`):
//! - `units = idle + busy + connecting`; each unit holds exactly one unit of the budget.
//! - A new unit is created only when `units < cap` and the budget granted one (in
//!   `dispatch_locked`) or handed one over (in `offer_unit`), and only for a live waiter.
//! - Waiters are served in arrival order, except that with a fair share the first waiter under
//!   its share goes before earlier ones at or over theirs (`share`); a waiter leaves the queue
//!   only to receive a grant (or when found dead, or the pool closes). A paused pool serves
//!   nobody: its waiters stay queued (`control`).
//! - A connection whose `ConnMeta::generation` is older than the pool's is never handed out
//!   again: `retire_all` bumps the generation and closes idle ones; busy ones close on return.
//! - When `busy + connecting` reaches 0, `quiet` is notified (after the lock), which is what
//!   `wait_idle` waits for.
//! - Idle connections are a stack: checkout takes the most recently returned (LIFO keeps few
//!   warm), reclaim and shrink take the least recently used.
//! - Work that may run user code, take another pool's lock, or drop a lease/slot (closing a
//!   connection, releasing a budget unit, sending a grant) is collected in [`Effects`] under the
//!   lock and applied after it is released.
//!
//! `queue` lets acquires in (or refuses them); `keeper` times them out; `share` picks the
//! next waiter under a fair share; `report` reads the state (status, holders, timeout
//! numbers); `member` is the budget's side; `control` holds the operator actions (pause,
//! resume, retire, wait for idle).

mod control;
mod keeper;
mod member;
mod queue;
mod report;
mod share;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::budget::{Budget, Member};
use crate::config::{Admission, PoolConfig};
use crate::error::OverShare;
use crate::lease::{ConnMeta, Lease, Slot};
use crate::{CloseReason, Connector, DiscardReason, Holder, LeaseRecord};
use keeper::{Call, Keeper};
pub(crate) use queue::Ticket;
use queue::Waiter;
use share::Shares;

/// How many of the oldest holders a timeout error names.
const OLDEST_IN_ERROR: usize = 3;

/// Monotonic totals, read without the lock.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) acquired: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) connect_errors: AtomicU64,
    pub(crate) closed: AtomicU64,
    /// Leases reported as held past the leak threshold.
    pub(crate) leaks: AtomicU64,
    /// Acquires refused at once because `Connector::admit` said no and nothing was idle.
    pub(crate) refused: AtomicU64,
    /// Acquires refused at once because `max_waiters` were waiting.
    pub(crate) rejected_waiters: AtomicU64,
    /// Time from acquire to lease, successful acquires only.
    pub(crate) wait: crate::note::WaitHistogram,
    /// Leased connections closed instead of reused, per [`DiscardReason`] (its index).
    pub(crate) discarded: [AtomicU64; DiscardReason::COUNT],
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a waiter receives: a ready connection, a slot to open one (carrying its holder) with
/// what is left of its deadline for the connect (`None`: none runs), or word from the
/// timekeeper that its deadline passed (with why it was passed over, if a fair share did).
pub(crate) enum Grant<C: Connector> {
    Lease(Lease<C>),
    Slot(Slot<C>, Option<Instant>),
    TimedOut(Option<Box<OverShare>>),
}

struct Idle<T> {
    conn: T,
    meta: ConnMeta,
    since: Instant,
}

struct State<C: Connector> {
    config: PoolConfig,
    /// Bumped whenever `config` changes, so connections recompute their expiry (see
    /// `ConnMeta::expiry`) only then.
    config_epoch: u64,
    /// Back = most recently returned.
    idle: VecDeque<Idle<C::Conn>>,
    busy: usize,
    connecting: usize,
    waiters: VecDeque<Waiter<C>>,
    /// Leases out, by ascending id (= oldest first): ids are taken under the lock as leases are
    /// pushed. A `Vec` rather than a map keeps its buffer when the pool goes quiet, so a lease
    /// costs no allocation.
    leases: Vec<LeaseRecord>,
    closed: bool,
    paused: bool,
    /// When the pool last resumed: waiters' deadlines restart from it (see `Pool::pause`).
    resumed_at: Option<Instant>,
    /// The timekeeper that times the waiters out (`keeper`).
    keeper: Keeper,
    /// The next waiter's `Waiter::serial`.
    next_serial: u64,
    /// Bumped by `retire_all`; connections of an older generation are closed, not reused.
    generation: u64,
    admission: Admission,
    /// Units held per fair-share key (`share`).
    shares: Shares,
}

impl<C: Connector> State<C> {
    fn open(&self) -> usize {
        self.idle.len() + self.busy
    }

    fn units(&self) -> usize {
        self.open() + self.connecting
    }

    /// Lease `id` is back (checked in or discarded): uncount it.
    fn end_lease(&mut self, id: u64) {
        if let Ok(i) = self.leases.binary_search_by_key(&id, |r| r.id) {
            let record = self.leases.remove(i);
            self.shares.remove(&record.holder);
        }
        self.busy = self.busy.saturating_sub(1);
    }

    /// No lease out and nothing connecting (waiters may still be queued).
    fn is_quiet(&self) -> bool {
        self.busy == 0 && self.connecting == 0
    }

    fn live_waiters(&self) -> usize {
        self.waiters.iter().filter(|w| w.alive()).count()
    }

    /// Someone still waits. Not `live_waiters() > 0`: a check-in asks this, and counting
    /// would look at every waiter's channel (hundreds of cache misses per transaction when
    /// hundreds of clients queue); the front one is nearly always alive.
    fn has_live_waiter(&self) -> bool {
        self.waiters.iter().any(Waiter::alive)
    }

    fn prune_dead_front(&mut self) {
        while self.waiters.front().is_some_and(|w| !w.alive()) {
            self.waiters.pop_front();
        }
    }

    /// Why an idle connection must not be reused, if it must not.
    fn idle_verdict(&self, idle: &mut Idle<C::Conn>, now: Instant) -> Option<CloseReason> {
        if idle.meta.generation != self.generation {
            Some(CloseReason::Retired)
        } else if idle.meta.is_expired(&self.config, self.config_epoch, now) {
            Some(CloseReason::Lifetime)
        } else if self
            .config
            .idle_timeout
            .is_some_and(|t| now.saturating_duration_since(idle.since) >= t)
        {
            Some(CloseReason::Idle)
        } else {
            None
        }
    }
}

/// Deferred work, applied by [`Effects::apply`] once the lock is released.
#[must_use = "effects must be applied after the lock is released"]
pub(crate) struct Effects<C: Connector> {
    close: Vec<(C::Conn, CloseReason)>,
    /// Units freed without a connection to close (abandoned slots).
    release: usize,
    send: Vec<(oneshot::Sender<Grant<C>>, Grant<C>)>,
    /// Waiters were left waiting because the budget is exhausted.
    starved: bool,
    /// No lease out and nothing connecting after the change: wake `wait_idle`.
    quiet: bool,
    /// Start or ring the timekeeper.
    keeper: Call,
}

impl<C: Connector> Effects<C> {
    fn new() -> Self {
        Effects {
            close: Vec::new(),
            release: 0,
            send: Vec::new(),
            starved: false,
            quiet: false,
            keeper: Call::Nothing,
        }
    }

    fn apply(self, shared: &Arc<Shared<C>>) {
        let Effects {
            close,
            release,
            send,
            starved,
            quiet,
            keeper,
        } = self;
        let freed = close.len() + release;
        for (conn, reason) in close {
            shared.close_conn(conn, reason);
        }
        for _ in 0..freed {
            shared.budget.release();
        }
        for (tx, grant) in send {
            // The waiter gave up after we checked: the grant's own Drop puts it back.
            if let Err(grant) = tx.send(grant) {
                drop(grant);
            }
        }
        if freed > 0 {
            // Units went back to the budget; waiters blocked by this pool's cap may now open.
            shared.dispatch();
        }
        if starved {
            shared.reclaim_for_waiters();
        }
        if quiet {
            shared.quiet.notify_waiters();
        }
        match keeper {
            Call::Nothing => {}
            Call::Start => shared.start_keeper(),
            Call::Ring => shared.bell.notify_one(),
        }
    }
}

/// Everything a pool's handles, leases and slots share.
pub(crate) struct Shared<C: Connector> {
    pub(crate) connector: C,
    pub(crate) budget: Arc<Budget>,
    /// Fixed at creation; also kept in `config.name`.
    pub(crate) name: Arc<str>,
    pub(crate) counters: Counters,
    state: Mutex<State<C>>,
    me: Weak<Shared<C>>,
    next_lease: AtomicU64,
    /// Rings the timekeeper (`keeper`): a waiter with an earlier deadline, a resume.
    bell: Arc<Notify>,
    /// Notified when `busy + connecting` drops to 0.
    quiet: Notify,
}

impl<C: Connector> Shared<C> {
    pub(crate) fn new(config: PoolConfig, connector: C, budget: Arc<Budget>) -> Arc<Self> {
        let shared = Arc::new_cyclic(|me| Shared {
            connector,
            budget,
            name: Arc::from(config.name.as_str()),
            counters: Counters::default(),
            state: Mutex::new(State {
                config,
                config_epoch: 0,
                idle: VecDeque::new(),
                busy: 0,
                connecting: 0,
                waiters: VecDeque::new(),
                leases: Vec::new(),
                closed: false,
                paused: false,
                resumed_at: None,
                keeper: Keeper::default(),
                next_serial: 0,
                generation: 0,
                admission: Admission::default(),
                shares: Shares::default(),
            }),
            me: me.clone(),
            next_lease: AtomicU64::new(1),
            bell: Arc::new(Notify::new()),
            quiet: Notify::new(),
        });
        shared.budget.register(shared.member());
        shared
    }

    fn lock(&self) -> MutexGuard<'_, State<C>> {
        // Every critical section leaves the counts consistent before anything can panic, so
        // the data behind a poisoned lock is still good.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn member(&self) -> Weak<dyn Member> {
        self.me.clone()
    }

    pub(crate) fn config(&self) -> PoolConfig {
        self.lock().config.clone()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub(crate) fn dispatch(self: &Arc<Self>) {
        let mut fx = Effects::new();
        self.dispatch_locked(&mut self.lock(), &mut fx);
        fx.apply(self);
    }

    /// Serve the queue (`serve_locked`), then note whether the pool went quiet. Every change
    /// that lowers `busy` or `connecting` ends here (directly, or through `Effects::apply`).
    fn dispatch_locked(self: &Arc<Self>, st: &mut State<C>, fx: &mut Effects<C>) {
        self.serve_locked(st, fx);
        fx.quiet = st.is_quiet();
    }

    /// Serve waiters in order: an idle connection first, else a slot if both the pool's cap and
    /// the budget allow; stop at the first waiter that cannot be served, or at once if paused.
    fn serve_locked(self: &Arc<Self>, st: &mut State<C>, fx: &mut Effects<C>) {
        // Read once, and only when someone waits (nearly every check-in finds nobody).
        let mut clock = None;
        loop {
            st.prune_dead_front();
            if st.closed || st.paused {
                return;
            }
            if st.waiters.is_empty() {
                return;
            }
            let now = *clock.get_or_insert_with(Instant::now);
            // The front, or the first waiter under its fair share (none: a strict share holds
            // every waiter back).
            let Some(next) = st.next_waiter() else {
                return;
            };
            if let Some(idle) = self.take_idle(st, now, fx) {
                if let Some(waiter) = st.take_waiter(next) {
                    st.shares.add(&waiter.holder);
                    let lease = self.lease_locked(st, idle.conn, idle.meta, waiter.holder, now);
                    fx.send
                        .push((waiter.tx, Grant::Lease(lease.send_to_waiter())));
                }
                continue;
            }
            if st.units() >= st.config.cap() {
                return;
            }
            if !self.budget.try_acquire_or_wait(&self.member()) {
                fx.starved = true;
                return;
            }
            self.grant_slot(st, next, fx);
        }
    }

    /// Count a unit as connecting (and in the waiter's share) and send waiter `index` the slot
    /// to open it; the caller has checked the cap and taken the budget unit.
    fn grant_slot(self: &Arc<Self>, st: &mut State<C>, index: usize, fx: &mut Effects<C>) {
        let Some(waiter) = st.take_waiter(index) else {
            // Unreachable (the index came from the queue under this lock); keep the unit whole.
            fx.release += 1;
            return;
        };
        st.connecting += 1;
        st.shares.add(&waiter.holder);
        // The connect runs under what is left of the wait's deadline (never paused here: a
        // paused pool grants nothing).
        let deadline = keeper::deadline(st.resumed_at, waiter.since, waiter.patience);
        let slot = Slot::new(Arc::clone(self), waiter.holder, st.generation);
        fx.send.push((waiter.tx, Grant::Slot(slot, deadline)));
    }

    /// The most recently returned idle connection still fit for use; unfit ones are closed.
    fn take_idle(
        &self,
        st: &mut State<C>,
        now: Instant,
        fx: &mut Effects<C>,
    ) -> Option<Idle<C::Conn>> {
        // One made on this thread first (see `ConnMeta::home`), the most recently returned
        // of those; then any, most recently returned first.
        let here = std::thread::current().id();
        let verdict = |st: &State<C>, idle: &mut Idle<C::Conn>| {
            st.idle_verdict(idle, now)
                .or_else(|| (!self.connector.is_alive(&mut idle.conn)).then_some(CloseReason::Dead))
        };
        while let Some(i) = st.idle.iter().rposition(|e| e.meta.home == here) {
            let Some(mut idle) = st.idle.remove(i) else {
                break;
            };
            match verdict(st, &mut idle) {
                Some(reason) => fx.close.push((idle.conn, reason)),
                None => return Some(idle),
            }
        }
        while let Some(mut idle) = st.idle.pop_back() {
            match verdict(st, &mut idle) {
                Some(reason) => fx.close.push((idle.conn, reason)),
                None => return Some(idle),
            }
        }
        None
    }

    /// Record a lease for `holder` on a connection that was just counted out of idle or
    /// connecting; counts it busy.
    fn lease_locked(
        self: &Arc<Self>,
        st: &mut State<C>,
        conn: C::Conn,
        meta: ConnMeta,
        holder: Holder,
        now: Instant,
    ) -> Lease<C> {
        let id = self.next_lease.fetch_add(1, Ordering::Relaxed);
        st.busy += 1;
        st.leases.push(LeaseRecord {
            id,
            holder,
            since: now,
            leak_reported: false,
        });
        let mut meta = meta;
        let expires_at = meta.expiry(&st.config, st.config_epoch);
        Lease::new(Arc::clone(self), id, conn, meta, expires_at)
    }

    /// A lease came back: close it or keep it idle, then serve waiters (LIFO hands this very
    /// connection to the first live waiter).
    pub(crate) fn checkin(self: &Arc<Self>, id: u64, conn: C::Conn, mut meta: ConnMeta) {
        let mut fx = Effects::new();
        {
            let mut st = self.lock();
            st.end_lease(id);
            let now = Instant::now();
            match self.checkin_verdict(&st, &mut meta, now) {
                Some(reason) => fx.close.push((conn, reason)),
                None => st.idle.push_back(Idle {
                    conn,
                    meta,
                    since: now,
                }),
            }
            self.dispatch_locked(&mut st, &mut fx);
        }
        fx.apply(self);
    }

    /// Why a returned connection (no longer counted) must be closed, if it must.
    fn checkin_verdict(
        &self,
        st: &State<C>,
        meta: &mut ConnMeta,
        now: Instant,
    ) -> Option<CloseReason> {
        if st.closed {
            Some(CloseReason::PoolClosed)
        } else if meta.generation != st.generation {
            Some(CloseReason::Retired)
        } else if meta.is_expired(&st.config, st.config_epoch, now) {
            Some(CloseReason::Lifetime)
        } else if st.units() + 1 > st.config.cap() {
            // The pool was shrunk below what it holds.
            Some(CloseReason::Overflow)
        } else if self.budget.over_limit() {
            Some(CloseReason::BudgetReclaim)
        } else if st.has_live_waiter() {
            // Handed straight to our own next waiter by the dispatch that follows.
            None
        } else if st.open() + 1 > st.config.size {
            Some(CloseReason::Overflow)
        } else if self.budget.starved_besides(&self.member()) {
            // Nobody here wants it and another pool on the backend is starved: the unit moves.
            Some(CloseReason::BudgetReclaim)
        } else {
            None
        }
    }

    /// A leased connection is closed instead of reused (see [`DiscardReason`]).
    pub(crate) fn discard(self: &Arc<Self>, id: u64, conn: C::Conn, why: DiscardReason) {
        Counters::bump(&self.counters.discarded[why.index()]);
        let mut fx = Effects::new();
        {
            let mut st = self.lock();
            st.end_lease(id);
            fx.close.push((conn, CloseReason::Discarded));
        }
        fx.apply(self);
    }

    /// A slot was dropped unused: its unit goes back (to a starved pool or free), and waiters
    /// held back by this pool's cap get another chance in `apply`.
    pub(crate) fn slot_abandoned(self: &Arc<Self>, holder: &Holder) {
        let mut fx = Effects::new();
        {
            let mut st = self.lock();
            st.connecting = st.connecting.saturating_sub(1);
            st.shares.remove(holder);
            fx.release += 1;
        }
        fx.apply(self);
    }

    /// A slot's connect succeeded: the unit becomes a lease, unless the pool closed meanwhile.
    /// A slot granted before `retire_all` still becomes a lease (the client is served) with
    /// its old generation, so the connection is closed when it comes back.
    pub(crate) fn slot_connected(
        self: &Arc<Self>,
        conn: C::Conn,
        holder: Holder,
        generation: u64,
    ) -> Option<Lease<C>> {
        let mut fx = Effects::new();
        let lease = {
            let mut st = self.lock();
            st.connecting = st.connecting.saturating_sub(1);
            let now = Instant::now();
            if st.closed {
                st.shares.remove(&holder);
                fx.close.push((conn, CloseReason::PoolClosed));
                None
            } else {
                let meta = ConnMeta::new(now, generation);
                Some(self.lease_locked(&mut st, conn, meta, holder, now))
            }
        };
        fx.apply(self);
        lease
    }

    /// Close idle connections past their lifetime or idle timeout.
    pub(crate) fn reap(self: &Arc<Self>) {
        let mut fx = Effects::new();
        {
            let mut st = self.lock();
            let now = Instant::now();
            let idle = std::mem::take(&mut st.idle);
            for mut entry in idle {
                match st.idle_verdict(&mut entry, now) {
                    Some(reason) => fx.close.push((entry.conn, reason)),
                    None => st.idle.push_back(entry),
                }
            }
            self.dispatch_locked(&mut st, &mut fx);
        }
        fx.apply(self);
    }

    /// Refuse new acquires, close idle connections, wake waiters (their senders are dropped,
    /// which they read as `Closed`). Busy connections are closed as they come back.
    pub(crate) fn close(self: &Arc<Self>) {
        let mut fx = Effects::new();
        let waiters = {
            let mut st = self.lock();
            if st.closed {
                return;
            }
            st.closed = true;
            for entry in st.idle.drain(..) {
                fx.close.push((entry.conn, CloseReason::PoolClosed));
            }
            self.budget.forget_starved(&self.member());
            std::mem::take(&mut st.waiters)
        };
        tracing::info!(pool = %self.name, waiters = waiters.len(), "pool closed");
        drop(waiters);
        fx.apply(self);
        // A timekeeper waiting to be rung (the pool was paused) ends now.
        self.bell.notify_one();
    }

    /// New settings (the name stays). Shrinking closes surplus idle connections, least
    /// recently used first; growing may serve waiters at once.
    pub(crate) fn set_config(self: &Arc<Self>, mut config: PoolConfig) {
        config.name = self.name.to_string();
        let mut fx = Effects::new();
        {
            let mut st = self.lock();
            st.config = config;
            st.config_epoch += 1;
            while !st.idle.is_empty()
                && (st.open() > st.config.size || st.units() > st.config.cap())
            {
                if let Some(entry) = st.idle.pop_front() {
                    fx.close.push((entry.conn, CloseReason::Overflow));
                }
            }
            self.dispatch_locked(&mut st, &mut fx);
        }
        fx.apply(self);
    }

    pub(crate) fn admission(&self) -> Admission {
        self.lock().admission.clone()
    }

    /// New waiter cap and fair share. Waiters already queued beyond a lowered cap stay; a new
    /// share applies from the next dispatch, which runs now.
    pub(crate) fn set_admission(self: &Arc<Self>, admission: Admission) {
        let mut fx = Effects::new();
        {
            let mut st = self.lock();
            let st = &mut *st;
            st.shares.set_enabled(
                admission.fair_share.is_some(),
                st.leases.iter().map(|r| &r.holder),
            );
            st.admission = admission;
            self.dispatch_locked(st, &mut fx);
        }
        fx.apply(self);
    }

    /// Budget-starved waiters and siblings with idle connections: have the budget move units.
    fn reclaim_for_waiters(self: &Arc<Self>) {
        let wanted = {
            let st = self.lock();
            if st.closed {
                0
            } else {
                let headroom = st.config.cap().saturating_sub(st.units());
                st.live_waiters().min(headroom)
            }
        };
        if wanted > 0 && self.budget.exhausted() {
            self.budget.reclaim_for(&self.member(), wanted);
        }
    }

    fn close_conn(&self, conn: C::Conn, reason: CloseReason) {
        Counters::bump(&self.counters.closed);
        tracing::debug!(pool = %self.name, reason = %reason, "closing server connection");
        self.connector.close(conn, reason);
    }
}
