//! Reading the pool: the status snapshot, the holder and idle lists and the timeout error's
//! numbers.
//! Each takes the lock once and copies what it needs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::{Counters, Shared, OLDEST_IN_ERROR};
use crate::config::PoolStatus;
use crate::error::{AcquireError, OverShare};
use crate::{Connector, IdleRecord, LeaseRecord};

impl<C: Connector> Shared<C> {
    pub(crate) fn status(&self) -> PoolStatus {
        let (limit, budget_in_use) = self.budget.snapshot();
        let st = self.lock();
        let now = Instant::now();
        let mut live = st.waiters.iter().filter(|w| w.alive());
        let oldest_wait = live.next().map(|w| now.saturating_duration_since(w.since));
        let waiters = usize::from(oldest_wait.is_some()) + live.count();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (acquire_wait_buckets, acquire_wait_sum) = self.counters.wait.snapshot();
        PoolStatus {
            name: self.name.to_string(),
            open: st.open(),
            idle: st.idle.len(),
            in_use: st.busy,
            connecting: st.connecting,
            waiters,
            paused: st.paused,
            oldest_wait,
            cap: st.config.cap(),
            size: st.config.size,
            budget_limit: limit,
            budget_in_use,
            acquired_total: load(&self.counters.acquired),
            timeouts_total: load(&self.counters.timeouts),
            connects_total: load(&self.counters.connects),
            connect_errors_total: load(&self.counters.connect_errors),
            closed_total: load(&self.counters.closed),
            discarded_total: std::array::from_fn(|i| load(&self.counters.discarded[i])),
            leaks_total: load(&self.counters.leaks),
            refused_total: load(&self.counters.refused),
            rejected_waiters_total: load(&self.counters.rejected_waiters),
            acquire_wait_buckets,
            acquire_wait_sum,
        }
    }

    pub(crate) fn holders(&self) -> Vec<LeaseRecord> {
        self.lock().leases.to_vec()
    }

    pub(crate) fn idle(&self) -> Vec<IdleRecord> {
        self.lock()
            .idle
            .iter()
            .map(|i| IdleRecord {
                opened_at: i.meta.created_at,
                idle_since: i.since,
            })
            .collect()
    }

    pub(crate) fn take_leaks(&self, threshold: Duration) -> Vec<LeaseRecord> {
        let now = Instant::now();
        let mut found = Vec::new();
        {
            let mut st = self.lock();
            for record in st.leases.iter_mut() {
                if !record.leak_reported && now.saturating_duration_since(record.since) >= threshold
                {
                    record.leak_reported = true;
                    found.push(record.clone());
                }
            }
        }
        self.counters
            .leaks
            .fetch_add(found.len() as u64, Ordering::Relaxed);
        found
    }

    /// The error for an acquire that waited `waited` in vain (its own waiter is already gone);
    /// `over_share` if it was passed over for its fair share.
    pub(crate) fn timeout_error<E>(
        &self,
        waited: Duration,
        over_share: Option<OverShare>,
    ) -> AcquireError<E> {
        Counters::bump(&self.counters.timeouts);
        let (budget_limit, budget_in_use) = self.budget.snapshot();
        let now = Instant::now();
        let (in_use, config, waiters, oldest) = {
            let st = self.lock();
            let waiters = st.live_waiters();
            if waiters == 0 {
                self.budget.forget_starved(&self.member());
            }
            let oldest: Vec<_> = st
                .leases
                .iter()
                .take(OLDEST_IN_ERROR)
                .map(|r| (r.holder.clone(), now.saturating_duration_since(r.since)))
                .collect();
            (st.units(), st.config.clone(), waiters, oldest)
        };
        tracing::warn!(
            pool = %self.name,
            waited = ?waited,
            in_use,
            cap = config.cap(),
            budget_limit,
            budget_in_use,
            waiters,
            over_share = over_share.as_ref().map(|o| tracing::field::display(&o.key)),
            "acquire timed out"
        );
        AcquireError::Timeout {
            pool: self.name.to_string(),
            waited,
            in_use,
            cap: config.cap(),
            size: config.size,
            overflow: config.max_overflow,
            budget_limit,
            budget_in_use,
            waiters,
            oldest,
            over_share,
        }
    }
}
