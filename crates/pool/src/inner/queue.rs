//! Joining the queue: the waiter record, the ticket an acquire waits on, and the refusals that
//! happen before any wait (pool closed, `Connector::admit` said no, `max_waiters` reached).
//!
//! Invariants (under the pool's lock):
//! - An acquire is refused by the connector only when no connection is idle: an idle one is
//!   always worth handing out, whatever the connector thinks of new connects.
//! - The waiter cap is checked *after* the new waiter has been offered a dispatch, so an
//!   acquire served at once never counts against it; dead waiters are dropped before counting.
//! - The fast path ([`Shared::lease_idle_now`]) hands out an idle connection only when the
//!   queue would have done the same at once: open, not paused, nobody waiting (so nobody is
//!   overtaken), and the holder within a strict fair share. Anything else queues.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::keeper::deadline;
use super::{Counters, Effects, Grant, Shared, State};
use crate::error::{AcquireError, OverShare};
use crate::{Connector, Holder, Lease};

/// A queued acquire, as the pool sees it.
pub(super) struct Waiter<C: Connector> {
    pub(super) tx: oneshot::Sender<Grant<C>>,
    pub(super) holder: Holder,
    /// When the acquire started.
    pub(super) since: Instant,
    /// Its `acquire_timeout`, as it was when it queued.
    pub(super) patience: Duration,
    /// Why a fair share last passed it over, told to it if it times out (boxed: rare, and
    /// the queue is scanned).
    pub(super) over_share: Option<Box<OverShare>>,
    /// Tells this waiter from the others (the waiter cap looks for the one just queued).
    pub(super) serial: u64,
}

/// Why an acquire was refused without queueing; small, unlike [`AcquireError`], which the
/// acquire builds from it.
pub(crate) enum Refusal<E> {
    Closed,
    /// `Connector::admit` said no and nothing was idle.
    Admit(E),
    /// `max` acquires were waiting (`waiters`, not counting this one).
    Full {
        waiters: usize,
        max: usize,
    },
}

impl<E> Refusal<E> {
    pub(crate) fn into_error(self, pool: &str) -> AcquireError<E> {
        match self {
            Refusal::Closed => AcquireError::Closed,
            Refusal::Admit(err) => AcquireError::Connect(err),
            Refusal::Full { waiters, max } => AcquireError::TooManyWaiters {
                pool: pool.to_owned(),
                waiters,
                max,
            },
        }
    }
}

/// A queued acquire's side: where its grant (or its timeout) arrives, and the
/// `acquire_timeout` it waits under.
pub(crate) struct Ticket<C: Connector> {
    pub(crate) rx: oneshot::Receiver<Grant<C>>,
    pub(crate) patience: Duration,
}

impl<C: Connector> Waiter<C> {
    /// Its acquire is still waiting (not timed out, cancelled or refused).
    pub(super) fn alive(&self) -> bool {
        !self.tx.is_closed()
    }
}

impl<C: Connector> Shared<C> {
    /// The common case of an acquire, without queueing (no channel, no wake-up, no allocation):
    /// when the pool is open, not paused and nobody waits, the most recently returned idle
    /// connection that is fit for use (at `now`, the acquire's start) goes to `holder` at once.
    /// Gives the holder back when the acquire must queue instead.
    pub(crate) fn lease_idle_now(
        self: &Arc<Self>,
        holder: Holder,
        now: Instant,
    ) -> Result<Lease<C>, Holder> {
        let mut fx = Effects::new();
        let leased = {
            let mut st = self.lock();
            st.prune_dead_front();
            let over_share = st.admission.fair_share.is_some_and(|share| {
                share.strict && st.shares.held(share.by, &holder) >= share.max
            });
            if st.closed || st.paused || !st.waiters.is_empty() || over_share {
                return Err(holder);
            }
            match self.take_idle(&mut st, now, &mut fx) {
                Some(idle) => {
                    st.shares.add(&holder);
                    Ok(self.lease_locked(&mut st, idle.conn, idle.meta, holder, now))
                }
                None => Err(holder),
            }
        };
        // Unfit idle connections found on the way are closed, their units freed.
        fx.apply(self);
        leased
    }

    /// Queue an acquire that started at `since` (at the back, FIFO) and serve the queue.
    /// `admitted` is what `Connector::admit` said: a refusal fails the acquire at once unless a
    /// connection is idle. An acquire left waiting when `max_waiters` others already wait is
    /// taken out again and refused. One still waiting is the timekeeper's to time out.
    pub(crate) fn enqueue(
        self: &Arc<Self>,
        holder: Holder,
        since: Instant,
        admitted: Result<(), C::Error>,
    ) -> Result<Ticket<C>, Refusal<C::Error>> {
        let (tx, rx) = oneshot::channel();
        let mut fx = Effects::new();
        let patience = {
            let mut st = self.lock();
            if st.closed {
                return Err(Refusal::Closed);
            }
            if let Err(err) = admitted {
                if st.idle.is_empty() {
                    drop(st);
                    Counters::bump(&self.counters.refused);
                    tracing::debug!(
                        pool = %self.name,
                        error = %err,
                        "acquire refused by connector"
                    );
                    return Err(Refusal::Admit(err));
                }
            }
            let patience = st.config.acquire_timeout;
            if st.waiters.back().is_some_and(|w| w.patience != patience) {
                // A reload changed the timeout: deadlines are no longer in queue order. (An
                // acquire that started a little before the one queued ahead of it, held up on
                // the way, is not counted: it is timed out when that one is, late by the
                // moment it was held up, and marking it would make every pass under
                // concurrent load a scan of the whole queue again.)
                st.keeper.mixed = true;
            }
            let serial = st.next_serial;
            st.next_serial += 1;
            st.waiters.push_back(Waiter {
                tx,
                holder,
                since,
                patience,
                over_share: None,
                serial,
            });
            self.dispatch_locked(&mut st, &mut fx);
            if let Some((waiters, max)) = st.beyond_waiter_cap(serial) {
                // Effects still apply: the dispatch may have served others.
                drop(st);
                fx.apply(self);
                Counters::bump(&self.counters.rejected_waiters);
                tracing::debug!(
                    pool = %self.name,
                    waiters,
                    max_waiters = max,
                    "acquire refused: too many waiters"
                );
                return Err(Refusal::Full { waiters, max });
            }
            if st.waiters.back().is_some_and(|w| w.serial == serial) {
                // Still waiting: its deadline must be timed.
                let at = (!st.paused)
                    .then(|| deadline(st.resumed_at, since, patience))
                    .flatten();
                fx.keeper = st.keeper_call(at);
            }
            patience
        };
        fx.apply(self);
        Ok(Ticket { rx, patience })
    }
}

impl<C: Connector> State<C> {
    /// The acquire `serial` was just queued and dispatched: if it is still waiting and
    /// `max_waiters` others are too, take it out; returns `(others waiting, max_waiters)`.
    fn beyond_waiter_cap(&mut self, serial: u64) -> Option<(usize, usize)> {
        let max = self.admission.max_waiters?;
        if self.waiters.len() <= max {
            // At most `max - 1` others, dead ones included: no need to look at each.
            return None;
        }
        // Dead waiters (timed out, cancelled) do not count; drop them so the length is exact.
        self.waiters.retain(Waiter::alive);
        let ours = self.waiters.back().is_some_and(|w| w.serial == serial);
        let others = self.waiters.len().saturating_sub(1);
        if !ours || others < max {
            return None;
        }
        // Its sender is dropped here, with its receiver still unawaited: nothing runs.
        self.waiters.pop_back();
        Some((others, max))
    }
}
