//! How the budget reaches into a pool ([`Member`]), and what the pool does when its last
//! handle, lease and slot are gone.

use std::sync::{Arc, PoisonError};

use super::{Effects, Shared};
use crate::budget::Member;
use crate::{CloseReason, Connector};

impl<C: Connector> Member for Shared<C> {
    fn offer_unit(self: Arc<Self>) -> bool {
        let mut fx = Effects::new();
        let taken = {
            let mut st = self.lock();
            st.prune_dead_front();
            let next = st.next_waiter();
            if st.closed || st.paused || st.units() >= st.config.cap() || st.waiters.is_empty() {
                false
            } else if let Some(next) = next {
                self.grant_slot(&mut st, next, &mut fx);
                // Serve (or re-queue as starved, at the back) whoever else is waiting.
                self.dispatch_locked(&mut st, &mut fx);
                true
            } else {
                false
            }
        };
        fx.apply(&self);
        taken
    }

    fn idle_count(&self) -> usize {
        self.lock().idle.len()
    }

    fn reclaim_idle(self: Arc<Self>) -> bool {
        let Some(entry) = self.lock().idle.pop_front() else {
            return false;
        };
        let mut fx = Effects::new();
        fx.close.push((entry.conn, CloseReason::BudgetReclaim));
        fx.apply(&self);
        true
    }

    fn wake(self: Arc<Self>) {
        self.dispatch();
    }
}

impl<C: Connector> Drop for Shared<C> {
    /// The last handle, lease and slot are gone: close what is left idle and free its units.
    fn drop(&mut self) {
        let idle = std::mem::take(
            &mut self
                .state
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .idle,
        );
        for entry in idle {
            self.close_conn(entry.conn, CloseReason::PoolClosed);
            self.budget.release();
        }
        // A timekeeper waiting to be rung finds the pool gone and ends.
        self.bell.notify_one();
    }
}
