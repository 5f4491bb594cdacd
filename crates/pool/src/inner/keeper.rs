//! The pool's timekeeper: one task per pool that times out queued acquires, instead of a
//! timer (and a pause subscription) per waiting acquire.
//!
//! A waiting acquire costs the timer wheel two locked updates (register, deregister) and the
//! pause watch two more, on every wait, though nearly every wait ends with a grant long before
//! its deadline. The timekeeper sleeps until the earliest deadline among the queued waiters,
//! answers every waiter whose deadline has passed with [`Grant::TimedOut`], and sleeps again.
//! Under a steady queue it wakes about once per `acquire_timeout`: by the time the front's
//! deadline comes, the front has long been served and the next one is young.
//!
//! Invariants (under the pool's lock):
//! - While a waiter is queued, a timekeeper is running or the enqueue that queued it has
//!   asked for one to start ([`Keeper::running`]); it stops only after finding the queue empty
//!   on two passes in a row, a linger of up to `acquire_timeout` apart.
//! - [`Keeper::armed`] is when the running timekeeper will next look by itself (`None`: only
//!   when rung). A waiter whose deadline is earlier rings it; with one `acquire_timeout` for
//!   all, deadlines come in arrival order and no enqueue rings. Pausing needs no ring (the
//!   next pass sees the pause and arms nothing); resuming rings, as deadlines restart.
//! - A waiter's deadline is a whole `acquire_timeout` (its own, read when it queued) from the
//!   later of its start and the last resume, and does not exist while the pool is paused;
//!   `Pool::pause` documents why.
//! - The task holds the pool only weakly while it sleeps: a pool dropped without `close` is
//!   freed, and `close` and the pool's drop ring it so it ends then.
//! - It runs on the runtime of the acquire that started it. If that runtime shuts down while
//!   acquires (from other runtimes) still wait, the dropped task starts another on a thread
//!   of its own, which ends like any timekeeper once nobody waits: no waiter is ever left
//!   without its deadline.
//! - A pass stops at the first live waiter not yet due when every queued waiter has the same
//!   `acquire_timeout` (their deadlines then come in queue order); only after a reload changed
//!   it ([`Keeper::mixed`]) does a pass look at the whole queue. Under overload, when a waiter
//!   times out every few milliseconds, each pass is then a few steps, not the whole queue.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Effects, Grant, Shared, State};
use crate::Connector;

/// The timekeeper's state, kept in the pool's [`State`].
#[derive(Debug, Default)]
pub(super) struct Keeper {
    pub(super) running: bool,
    pub(super) armed: Option<Instant>,
    /// Queued waiters may have different timeouts: deadlines are not in queue order.
    pub(super) mixed: bool,
}

/// What an enqueue (or a resume) asks of the timekeeper, done after the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Call {
    Nothing,
    Start,
    Ring,
}

/// When a waiter that started at `since` with `patience` gives up, given the last resume;
/// `None`: beyond the clock's range (as good as never). The caller checks for a pause.
pub(super) fn deadline(
    resumed_at: Option<Instant>,
    since: Instant,
    patience: Duration,
) -> Option<Instant> {
    let from = resumed_at.map_or(since, |resumed| resumed.max(since));
    from.checked_add(patience)
}

/// How long an idle timekeeper waits for the next waiter before it ends: no longer than the
/// shortest wait it might have to time (so a new waiter never needs to ring it), and never a
/// busy loop.
fn linger(timeout: Duration) -> Duration {
    timeout.clamp(Duration::from_millis(1), Duration::from_secs(60))
}

impl<C: Connector> State<C> {
    /// A waiter that gives up at `deadline` (`None`: no deadline runs) was queued or restarted:
    /// what the timekeeper needs to hear.
    pub(super) fn keeper_call(&mut self, deadline: Option<Instant>) -> Call {
        if !self.keeper.running {
            self.keeper.running = true;
            self.keeper.armed = None;
            return Call::Start;
        }
        match (deadline, self.keeper.armed) {
            (Some(at), Some(armed)) if at >= armed => Call::Nothing,
            (None, _) => Call::Nothing,
            _ => Call::Ring,
        }
    }
}

impl<C: Connector> State<C> {
    /// Every deadline may have moved (a resume): the timekeeper must look now.
    pub(super) fn keeper_wake(&mut self) -> Call {
        match self.keeper_call(None) {
            Call::Nothing => Call::Ring,
            call => call,
        }
    }
}

/// What one pass of the timekeeper found.
enum Pass {
    /// Look again at this instant (or when rung).
    At(Instant),
    /// Nothing to time (paused): look again only when rung.
    Rung,
    /// The pool is closed, or nobody waited for a whole linger: the timekeeper ends.
    Stop,
}

impl<C: Connector> Shared<C> {
    /// Start a timekeeper on the current runtime, or on a thread of its own outside one.
    pub(super) fn start_keeper(self: &Arc<Self>) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                // Made here, not in the task: a runtime that is shutting down drops the task
                // unpolled, and the guard's drop must still hand over to a thread.
                let running = Running {
                    pool: Arc::downgrade(self),
                    ended: false,
                };
                runtime.spawn(keep_time(running, Arc::clone(&self.bell)));
            }
            Err(_) => self.keep_time_on_a_thread(),
        }
    }

    /// The timekeeper on a thread of its own, with a runtime of its own: for waiters whose
    /// timekeeper's runtime went away (or none was current).
    fn keep_time_on_a_thread(self: &Arc<Self>) {
        let pool = Arc::downgrade(self);
        let bell = Arc::clone(&self.bell);
        let started = std::thread::Builder::new()
            .name("poolguard-keeper".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build();
                match runtime {
                    Ok(runtime) => {
                        let running = Running { pool, ended: false };
                        runtime.block_on(keep_time(running, bell));
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "no runtime to time out waiters on");
                        if let Some(shared) = pool.upgrade() {
                            shared.lock().keeper.stopped();
                        }
                    }
                }
            });
        if let Err(err) = started {
            tracing::error!(pool = %self.name, error = %err, "no thread to time out waiters on");
            self.lock().keeper.stopped();
        }
    }

    #[cfg(test)]
    pub(crate) fn keeper_running(&self) -> bool {
        self.lock().keeper.running
    }

    /// Answer every waiter whose deadline has passed, drop dead ones, and say when to look
    /// next. `was_empty`: the previous pass found nobody waiting.
    fn expire_waiters(self: &Arc<Self>, was_empty: bool) -> (Pass, bool) {
        let mut fx = Effects::new();
        let (pass, empty) = {
            let mut st = self.lock();
            let now = Instant::now();
            // Stops at the first live waiter (nearly always the front), not a walk of the queue.
            let empty = !st.has_live_waiter();
            let pass = if st.closed || (empty && was_empty) {
                Pass::Stop
            } else if empty {
                st.waiters.clear();
                st.keeper.mixed = false;
                Pass::At(now + linger(st.config.acquire_timeout))
            } else if st.paused {
                Pass::Rung
            } else {
                self.expire_locked(&mut st, now, &mut fx)
            };
            st.keeper.armed = match pass {
                Pass::At(at) => Some(at),
                Pass::Rung | Pass::Stop => None,
            };
            if matches!(pass, Pass::Stop) {
                st.keeper.stopped();
            }
            (pass, empty)
        };
        fx.apply(self);
        (pass, empty)
    }

    fn expire_locked(&self, st: &mut State<C>, now: Instant, fx: &mut Effects<C>) -> Pass {
        let resumed_at = st.resumed_at;
        let in_order = !st.keeper.mixed;
        let mut next: Option<Instant> = None;
        let mut removed = false;
        // The one timeout every waiter still queued has, if they share one.
        let mut shared_patience: Option<Option<Duration>> = None;
        let mut i = 0;
        while let Some(w) = st.waiters.get(i) {
            let at = deadline(resumed_at, w.since, w.patience);
            let due = at.is_some_and(|at| at <= now);
            if !due && w.alive() {
                next = match (next, at) {
                    (Some(n), Some(at)) => Some(n.min(at)),
                    (n, at) => n.or(at),
                };
                if in_order {
                    // Everyone behind it is due later.
                    break;
                }
                shared_patience = match shared_patience {
                    None => Some(Some(w.patience)),
                    Some(Some(p)) if p == w.patience => Some(Some(p)),
                    Some(_) => Some(None),
                };
                i += 1;
                continue;
            }
            // Removing near the front (where deadlines pass first) is cheap.
            if let Some(w) = st.waiters.remove(i) {
                removed = true;
                if due && w.alive() {
                    fx.send.push((w.tx, Grant::TimedOut(w.over_share)));
                }
            }
        }
        if !in_order && shared_patience != Some(None) {
            // The full pass found one timeout for all: the next passes may stop early again.
            st.keeper.mixed = false;
        }
        if removed && !st.has_live_waiter() {
            // Nobody is left to starve for: sibling pools need not give units up for us.
            self.budget.forget_starved(&self.member());
        }
        match next {
            Some(at) => Pass::At(at),
            // Every deadline is beyond the clock: look again after a linger.
            None => Pass::At(now + linger(st.config.acquire_timeout)),
        }
    }
}

impl Keeper {
    /// No timekeeper runs now (`mixed` stays: it describes the queue, not the keeper).
    fn stopped(&mut self) {
        self.running = false;
        self.armed = None;
    }
}

/// Owned by a timekeeper from the moment it is spawned: if the task is dropped without ending
/// itself (its runtime shut down, perhaps before ever polling it), the keeper is marked
/// stopped, or, with acquires still waiting, carried on on a thread of its own.
struct Running<C: Connector> {
    pool: Weak<Shared<C>>,
    ended: bool,
}

impl<C: Connector> Drop for Running<C> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let Some(shared) = self.pool.upgrade() else {
            return;
        };
        let waiting = {
            let mut st = shared.lock();
            let waiting = !st.closed && st.has_live_waiter();
            if !waiting {
                st.keeper.stopped();
            }
            waiting
        };
        if waiting {
            // Our runtime is going away (we cannot spawn on it): carry on elsewhere.
            shared.keep_time_on_a_thread();
        }
    }
}

async fn keep_time<C: Connector>(mut running: Running<C>, bell: Arc<Notify>) {
    let pool = running.pool.clone();
    let mut was_empty = false;
    loop {
        let pass = {
            let Some(shared) = pool.upgrade() else {
                running.ended = true;
                return;
            };
            let (pass, empty) = shared.expire_waiters(was_empty);
            was_empty = empty;
            pass
        };
        match pass {
            Pass::Stop => {
                running.ended = true;
                return;
            }
            Pass::Rung => bell.notified().await,
            Pass::At(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = bell.notified() => {}
                }
            }
        }
    }
}
