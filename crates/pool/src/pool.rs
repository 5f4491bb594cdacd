//! The public handle: [`Pool`]. Cheap to clone (an `Arc` inside); all clones are one pool.
//!
//! An acquire queues at the back, is served in order with an idle connection or a slot to open
//! one, and runs under one deadline (`acquire_timeout`) covering the wait and the connect.
//! Cancelling it at any point leaks nothing: a grant already sent comes back through its `Drop`.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::budget::Budget;
use crate::config::{PoolConfig, PoolStatus};
use crate::error::{AcquireError, HumanDuration};
use crate::inner::{Counters, Grant, Shared};
use crate::lease::Lease;
use crate::{Connector, Holder, LeaseRecord};

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
    pub async fn acquire(&self, holder: Holder) -> Result<Lease<C>, AcquireError<C::Error>> {
        let start = Instant::now();
        let timeout = self.shared.acquire_timeout();
        let result = match start.checked_add(timeout) {
            Some(deadline) => {
                match tokio::time::timeout_at(deadline, self.acquire_inner(holder)).await {
                    Ok(result) => result,
                    // The inner future (and with it our place in the queue) is gone by now.
                    Err(_elapsed) => Err(self.shared.timeout_error(start.elapsed())),
                }
            }
            // A deadline beyond the clock's range: no deadline.
            None => self.acquire_inner(holder).await,
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

    async fn acquire_inner(&self, holder: Holder) -> Result<Lease<C>, AcquireError<C::Error>> {
        let rx = self.shared.enqueue(holder).ok_or(AcquireError::Closed)?;
        let (slot, holder) = match rx.await {
            Ok(Grant::Lease(lease)) => return Ok(lease),
            Ok(Grant::Slot(slot, holder)) => (slot, holder),
            // Only `close` drops a waiter's sender without sending.
            Err(_) => return Err(AcquireError::Closed),
        };
        match self.shared.connector.connect().await {
            Ok(conn) => {
                Counters::bump(&self.shared.counters.connects);
                slot.connected(conn, holder).ok_or(AcquireError::Closed)
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
