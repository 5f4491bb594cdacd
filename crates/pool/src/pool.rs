//! The public handle: [`Pool`]. Cheap to clone (an `Arc` inside); all clones are one pool.
//!
//! An acquire queues at the back, is served in order with an idle connection or a slot to open
//! one, and runs under one deadline (`acquire_timeout`) covering the wait and the connect; the
//! deadline does not run while the pool is paused and restarts when it resumes. The wait is
//! timed by the pool's timekeeper (`inner::keeper`), which answers a waiter whose deadline
//! passed as it would grant it a connection, so a wait costs no timer of its own.
//! Cancelling it at any point leaks nothing: a grant already sent comes back through its `Drop`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::budget::Budget;
use crate::config::{Admission, PoolConfig, PoolStatus};
use crate::error::{AcquireError, HumanDuration};
use crate::inner::{Counters, Grant, Shared, Ticket};
use crate::lease::Lease;
use crate::{Connector, Holder, IdleRecord, LeaseRecord};

/// An acquire that waited this long (or half its deadline, if less) is logged as slow.
const SLOW_ACQUIRE: Duration = Duration::from_secs(1);

/// The reaper never spins faster than this.
const MIN_REAP_PERIOD: Duration = Duration::from_millis(1);

/// A bounded pool of connections made by `C`. See the crate docs for its guarantees.
pub struct Pool<C: Connector> {
    shared: Arc<Shared<C>>,
}

impl<C: Connector> Clone for Pool<C> {
    fn clone(&self) -> Self {
        Pool {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C: Connector> Pool<C> {
    /// A pool drawing its units from `budget` (shared with the other pools on that backend).
    pub fn new(config: PoolConfig, connector: C, budget: Arc<Budget>) -> Self {
        Pool {
            shared: Shared::new(config, connector, budget),
        }
    }

    /// A connection for `holder`, within `acquire_timeout`: an idle one if any (most recently
    /// returned first), else a new one if the pool's cap and the backend budget allow, else
    /// the next one freed, in arrival order.
    ///
    /// [`Connector::admit`] is asked first; if it refuses and nothing is idle, the acquire fails
    /// at once with [`AcquireError::Connect`]. While the pool is paused the acquire waits
    /// without a deadline; see [`Pool::pause`].
    pub async fn acquire(&self, holder: Holder) -> Result<Lease<C>, AcquireError<C::Error>> {
        let start = Instant::now();
        let (result, timeout) = match self.lease_idle_at(holder, start) {
            Ok(lease) => return Ok(lease),
            Err(holder) => {
                // User code: called before any lock is taken.
                let admitted = self.shared.connector.admit();
                match self.shared.enqueue(holder, start, admitted) {
                    Ok(ticket) => {
                        let timeout = ticket.patience;
                        (self.wait_and_connect(ticket, start).await, timeout)
                    }
                    Err(refusal) => return Err(refusal.into_error(&self.shared.name)),
                }
            }
        };
        if result.is_ok() {
            Counters::bump(&self.shared.counters.acquired);
            let waited = start.elapsed();
            self.shared.counters.wait.observe(waited);
            if waited >= SLOW_ACQUIRE.min(timeout / 2) && !waited.is_zero() {
                tracing::info!(
                    pool = %self.shared.name,
                    waited = %HumanDuration(waited),
                    "slow acquire"
                );
            }
        }
        result
    }

    /// The first step of [`Pool::acquire`] on its own, without waiting: an idle connection if
    /// one can be leased at once (nobody waiting before `holder`, the pool open and not paused),
    /// else `holder` back. A caller that tries this before `acquire` keeps the large `acquire`
    /// future (boxed, say) off its common path; what it gets is what `acquire` would have
    /// returned at once.
    pub fn try_acquire_idle(&self, holder: Holder) -> Result<Lease<C>, Holder> {
        self.lease_idle_at(holder, Instant::now())
    }

    fn lease_idle_at(&self, holder: Holder, now: Instant) -> Result<Lease<C>, Holder> {
        let lease = self.shared.lease_idle_now(holder, now)?;
        // Served under the lock at once: nothing was waited for (and no second clock read is
        // spent on saying so).
        Counters::bump(&self.shared.counters.acquired);
        self.shared.counters.wait.observe(Duration::ZERO);
        Ok(lease)
    }

    /// Wait for a grant (or the timekeeper's word that the deadline passed), then connect (if
    /// the grant is a slot) under what is left of the deadline.
    async fn wait_and_connect(
        &self,
        ticket: Ticket<C>,
        start: Instant,
    ) -> Result<Lease<C>, AcquireError<C::Error>> {
        let (slot, deadline) = match ticket.rx.await {
            Ok(Grant::Lease(lease)) => return Ok(lease.received()),
            Ok(Grant::Slot(slot, deadline)) => (slot, deadline),
            // The timekeeper took it out of the queue first, so the numbers do not count it.
            Ok(Grant::TimedOut(over_share)) => {
                return Err(self
                    .shared
                    .timeout_error(start.elapsed(), over_share.map(|o| *o)));
            }
            // Only `close` drops a waiter's sender without sending.
            Err(_) => return Err(AcquireError::Closed),
        };
        // Boxed: a connector's connect (TCP, TLS, login) is kilobytes of state, and without
        // the box every acquire's future, which callers move into a box per wait, would be
        // sized for it though few acquires ever connect.
        let connect = Box::pin(self.shared.connector.connect());
        let connected = match deadline {
            Some(at) => match tokio::time::timeout_at(at, connect).await {
                Ok(connected) => connected,
                Err(_elapsed) => {
                    drop(slot);
                    return Err(self.shared.timeout_error(start.elapsed(), None));
                }
            },
            None => connect.await,
        };
        match connected {
            Ok(conn) => {
                Counters::bump(&self.shared.counters.connects);
                slot.connected(conn).ok_or(AcquireError::Closed)
            }
            Err(err) => {
                Counters::bump(&self.shared.counters.connect_errors);
                // Give the unit back before reporting, so the next waiter can try.
                drop(slot);
                tracing::warn!(pool = %self.shared.name, error = %err, "connect failed");
                Err(AcquireError::Connect(err))
            }
        }
    }

    /// Counts, limits and totals, right now.
    pub fn status(&self) -> PoolStatus {
        self.shared.status()
    }

    /// Current leases, oldest first.
    pub fn holders(&self) -> Vec<LeaseRecord> {
        self.shared.holders()
    }

    /// Idle connections, least recently returned first (the last is the next one handed out).
    /// Read-only, for display: copies taken under one short lock; the pool is not changed, so
    /// a connection past its idle timeout or lifetime is listed until the reaper or the next
    /// checkout closes it.
    pub fn idle(&self) -> Vec<IdleRecord> {
        self.shared.idle()
    }

    /// Leases held for `threshold` or longer and not reported before, oldest first; each is
    /// marked reported (so it is returned once) and counted in `PoolStatus::leaks_total`.
    pub fn take_leaks(&self, threshold: Duration) -> Vec<LeaseRecord> {
        self.shared.take_leaks(threshold)
    }

    /// Close idle connections past `idle_timeout` or past their (jittered) lifetime.
    pub fn reap(&self) {
        self.shared.reap();
    }

    /// Run [`Pool::reap`] every `period` on the current tokio runtime (panics outside one, as
    /// `tokio::spawn` does). The task holds only a weak reference: it ends once the pool is
    /// closed or its shared state is gone.
    pub fn spawn_reaper(&self, period: Duration) -> JoinHandle<()> {
        let weak = Arc::downgrade(&self.shared);
        let period = period.max(MIN_REAP_PERIOD);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ticks.tick().await; // the first tick is immediate
            loop {
                ticks.tick().await;
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                if shared.is_closed() {
                    return;
                }
                shared.reap();
            }
        })
    }

    /// Refuse new acquires ([`AcquireError::Closed`]), close idle connections now and busy
    /// ones when returned, and wake every waiter with `Closed`. Idempotent.
    pub fn close(&self) {
        self.shared.close();
    }

    /// The current waiter cap and fair share.
    pub fn admission(&self) -> Admission {
        self.shared.admission()
    }

    /// Whether the pool's timekeeper is running (tests).
    #[cfg(test)]
    pub(crate) fn keeper_running(&self) -> bool {
        self.shared.keeper_running()
    }

    /// Set the waiter cap and fair share (at creation or on reload). Lowering `max_waiters`
    /// below the current queue refuses only new acquires; a new fair share applies to the next
    /// connection handed out.
    pub fn set_admission(&self, admission: Admission) {
        self.shared.set_admission(admission);
    }

    /// Stop serving acquires: new and queued ones wait (and count against `max_waiters`), but
    /// their `acquire_timeout` does not run while the pool is paused. On [`Pool::resume`] every
    /// waiter's deadline *restarts*: it gets a whole `acquire_timeout` from the resume, however
    /// long it waited before or during the pause (PgBouncer's PAUSE holds clients without
    /// timing them out; after a switch-over the new server may need the whole time). Leases
    /// already out keep working and return normally; returned connections stay idle for the
    /// queue. Idempotent.
    pub fn pause(&self) {
        self.shared.pause();
    }

    /// Serve the queue again, in order; see [`Pool::pause`] for the waiters' deadlines.
    pub fn resume(&self) {
        self.shared.resume();
    }

    /// True between [`Pool::pause`] and [`Pool::resume`].
    pub fn is_paused(&self) -> bool {
        self.shared.is_paused()
    }

    /// Resolves once no lease is out and nothing is connecting (waiters may still be queued,
    /// e.g. on a paused pool). For PAUSE ("wait for running transactions to end") and shutdown
    /// drain. Woken by the pool when its last lease comes back, never by polling; a lease that
    /// is never returned keeps it pending, so callers put their own timeout around it. The
    /// future holds the pool's shared state, not a borrow of this handle.
    pub fn wait_idle(&self) -> impl Future<Output = ()> + Send + 'static {
        self.shared.wait_idle()
    }

    /// The backend moved (fail-over): close every idle connection now and every busy one (and
    /// any being opened) when it comes back, as `CloseReason::Retired`. The pool stays open;
    /// new connects go through the connector again, to wherever it now points.
    pub fn retire_all(&self) {
        self.shared.retire_all();
    }

    /// True once [`Pool::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// The connector this pool opens connections with.
    pub fn connector(&self) -> &C {
        &self.shared.connector
    }

    /// The backend budget this pool draws from.
    pub fn budget(&self) -> &Arc<Budget> {
        &self.shared.budget
    }

    /// The pool's name, fixed at creation (shared, not copied).
    pub fn name(&self) -> Arc<str> {
        Arc::clone(&self.shared.name)
    }

    /// The current settings.
    pub fn config(&self) -> PoolConfig {
        self.shared.config()
    }

    /// Apply new settings (reload). The name is fixed at creation and kept. Shrinking closes
    /// surplus idle connections now and surplus busy ones as they return; growing serves
    /// waiters at once. Lifetime settings apply to existing connections too.
    pub fn set_config(&self, config: PoolConfig) {
        self.shared.set_config(config);
    }
}

impl<C: Connector> std::fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &&*self.shared.name)
            .finish()
    }
}
