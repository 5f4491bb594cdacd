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
//!   freed, and its timekeeper ends at its next wake. It runs on the runtime of the acquire
//!   that started it; if that runtime shuts down first, `running` is reset as the task is
//!   dropped, and the next acquire to queue starts another.

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
    /// Start a timekeeper on the current runtime; outside one, forget that it was asked for
    /// (the next acquire to queue asks again).
    pub(super) fn start_keeper(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(pool = %self.name, "no runtime to time out waiters on");
            self.lock().keeper = Keeper::default();
            return;
        };
        runtime.spawn(keep_time(Arc::downgrade(self), Arc::clone(&self.bell)));
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
            let empty = st.waiters.iter().all(|w| !w.alive());
            let pass = if st.closed || (empty && was_empty) {
                Pass::Stop
            } else if empty {
                st.waiters.clear();
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
            st.keeper.running = !matches!(pass, Pass::Stop);
            (pass, empty)
        };
        fx.apply(self);
        (pass, empty)
    }

    fn expire_locked(&self, st: &mut State<C>, now: Instant, fx: &mut Effects<C>) -> Pass {
        let resumed_at = st.resumed_at;
        let mut next: Option<Instant> = None;
        let mut expired = 0;
        let mut i = 0;
        while let Some(w) = st.waiters.get(i) {
            let at = deadline(resumed_at, w.since, w.patience);
            let due = at.is_some_and(|at| at <= now);
            if !due && w.alive() {
                next = match (next, at) {
                    (Some(n), Some(at)) => Some(n.min(at)),
                    (n, at) => n.or(at),
                };
                i += 1;
                continue;
            }
            // Removing near the front (where deadlines pass first) is cheap.
            if let Some(w) = st.waiters.remove(i) {
                if due && w.alive() {
                    expired += 1;
                    fx.send.push((w.tx, Grant::TimedOut(w.over_share)));
                }
            }
        }
        if expired > 0 && st.waiters.is_empty() {
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

/// Resets `running` if the task is dropped without ending itself (its runtime shut down).
struct Running<C: Connector> {
    pool: Weak<Shared<C>>,
    ended: bool,
}

impl<C: Connector> Drop for Running<C> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        if let Some(shared) = self.pool.upgrade() {
            shared.lock().keeper = Keeper::default();
        }
    }
}

async fn keep_time<C: Connector>(pool: Weak<Shared<C>>, bell: Arc<Notify>) {
    let mut running = Running {
        pool: pool.clone(),
        ended: false,
    };
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
