//! Operator actions on a live pool: pause and resume the queue, retire every connection (the
//! backend moved to another server), and wait until no lease is out.
//!
//! Invariants:
//! - `State::paused` and `State::resumed_at` change together, under the pool's lock; the
//!   timekeeper reads both there (see `keeper` for how a pause stops the waiters' deadlines).
//! - Pausing stops handing out connections only; leases already out work and return normally,
//!   and returned connections stay idle for the queue to use on resume.
//! - `wait_idle` never polls: it registers on `quiet` before reading the counts, so a
//!   notification between the read and the wait cannot be missed.

use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;

use super::{Effects, Shared};
use crate::{CloseReason, Connector};

impl<C: Connector> Shared<C> {
    pub(crate) fn pause(&self) {
        let waiters = {
            let mut st = self.lock();
            if st.paused || st.closed {
                return;
            }
            // The timekeeper sees it at its next pass and times nobody out meanwhile.
            st.paused = true;
            // Paused waiters must not make sibling pools give up connections for them.
            self.budget.forget_starved(&self.member());
            st.live_waiters()
        };
        tracing::info!(pool = %self.name, waiters, "pool paused");
    }

    pub(crate) fn resume(self: &Arc<Self>) {
        let mut fx = Effects::new();
        let waiters = {
            let mut st = self.lock();
            if !st.paused {
                return;
            }
            st.paused = false;
            st.resumed_at = Some(Instant::now());
            let waiters = st.live_waiters();
            self.dispatch_locked(&mut st, &mut fx);
            if !st.waiters.is_empty() {
                // Every deadline restarted: the timekeeper, idle while paused, times them.
                fx.keeper = st.keeper_wake();
            }
            waiters
        };
        tracing::info!(pool = %self.name, waiters, "pool resumed");
        fx.apply(self);
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Close idle connections now and busy (or still connecting) ones when they come back; new
    /// connects belong to the new generation.
    pub(crate) fn retire_all(self: &Arc<Self>) {
        let mut fx = Effects::new();
        let (generation, busy, connecting) = {
            let mut st = self.lock();
            st.generation += 1;
            for entry in st.idle.drain(..) {
                fx.close.push((entry.conn, CloseReason::Retired));
            }
            self.dispatch_locked(&mut st, &mut fx);
            (st.generation, st.busy, st.connecting)
        };
        tracing::info!(
            pool = %self.name,
            generation,
            idle_closed = fx.close.len(),
            busy,
            connecting,
            "retiring every server connection"
        );
        fx.apply(self);
    }

    /// Resolves once no lease is out and nothing is connecting.
    pub(crate) fn wait_idle(self: &Arc<Self>) -> impl Future<Output = ()> + Send + 'static {
        let shared = Arc::clone(self);
        async move {
            loop {
                let notified = shared.quiet.notified();
                let mut notified = std::pin::pin!(notified);
                // Registered from here on: a notify after the check below still wakes us.
                notified.as_mut().enable();
                if shared.lock().is_quiet() {
                    return;
                }
                notified.await;
            }
        }
    }
}
