//! A backend's connection budget, shared by every pool on that backend.
//!
//! The budget counts *units*: one per server connection open or being opened, whichever pool
//! holds it. Its limit can change at run time (reload, later a coordinator), so pools ask it at
//! every decision and never cache it.
//!
//! Invariants:
//! - A unit is taken only while `in_use < limit` ([`Budget::try_acquire_or_wait`]), so lowering
//!   the limit stops new opens until `in_use` has dropped below it.
//! - A pool refused a unit is queued as *starved* (once, FIFO across pools) in the same critical
//!   section, so a unit freed right after cannot be missed.
//! - A freed unit ([`Budget::release`]) goes to the first starved pool that can use it, without
//!   ever passing through "free" (no other pool can snatch it); when nobody can, it is freed. When
//!   `in_use` is above the limit it is always freed.
//! - Idle connections must not starve another pool: a starved pool asks siblings with idle
//!   connections to close one each ([`Budget::reclaim_for`]), and a pool that gets a connection
//!   back with nobody of its own waiting closes it while another pool is starved, so the unit
//!   moves (both as `CloseReason::BudgetReclaim`).
//! - The budget's lock is never held while calling into a pool: pools lock themselves, then
//!   (maybe) the budget, never the other way round.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

/// What the budget needs from a pool. Implemented by the pool's shared state.
pub(crate) trait Member: Send + Sync {
    /// A unit freed elsewhere is offered to this starved pool. Returns true if the pool gave it
    /// to one of its waiters (the unit now belongs to the pool), false to pass it on.
    fn offer_unit(self: Arc<Self>) -> bool;
    /// How many idle connections this pool holds.
    fn idle_count(&self) -> usize;
    /// Close the least recently used idle connection with `CloseReason::BudgetReclaim`,
    /// releasing its unit to the budget. False if there was none.
    fn reclaim_idle(self: Arc<Self>) -> bool;
    /// Units may have become available (the limit was raised): serve waiters again.
    fn wake(self: Arc<Self>);
}

/// A backend's connection budget, shared (in an `Arc`) by all pools on that backend.
pub struct Budget {
    state: Mutex<State>,
}

/// One budget unit held outside any pool; released on drop.
pub struct ReservedUnit {
    budget: Arc<Budget>,
}

impl Drop for ReservedUnit {
    fn drop(&mut self) {
        self.budget.release();
    }
}

struct State {
    limit: usize,
    in_use: usize,
    /// Pools with waiters that were refused a unit, oldest first; each at most once.
    starved: VecDeque<Weak<dyn Member>>,
    /// Every pool on this budget, for reclaiming idle connections.
    members: Vec<Weak<dyn Member>>,
}

impl Budget {
    /// A budget of `limit` server connections.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Budget {
            state: Mutex::new(State {
                limit,
                in_use: 0,
                starved: VecDeque::new(),
                members: Vec::new(),
            }),
        })
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    /// Units in use across all pools on this budget.
    pub fn in_use(&self) -> usize {
        self.lock().in_use
    }

    /// `(limit, in_use)` read together.
    pub fn snapshot(&self) -> (usize, usize) {
        let st = self.lock();
        (st.limit, st.in_use)
    }

    /// Change the limit. Raising it wakes starved pools. Lowering it below `in_use` stops new
    /// opens, closes idle connections (most idle pool first) until `in_use` fits, and makes
    /// pools close returned connections instead of keeping them until it does.
    pub fn set_limit(&self, limit: usize) {
        let (woken, over) = {
            let mut st = self.lock();
            let raised = limit > st.limit;
            st.limit = limit;
            let woken: Vec<_> = if raised {
                st.starved.drain(..).collect()
            } else {
                Vec::new()
            };
            (woken, st.in_use > st.limit)
        };
        tracing::info!(limit, "backend budget limit changed");
        for member in woken.iter().filter_map(Weak::upgrade) {
            member.wake();
        }
        if over {
            self.reclaim_over_limit();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves plain counters behind; keep going.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn register(&self, member: Weak<dyn Member>) {
        let mut st = self.lock();
        st.members.retain(|m| m.strong_count() > 0);
        st.members.push(member);
    }

    /// `in_use > limit`: the limit was lowered and units must be given back, not reused.
    pub(crate) fn over_limit(&self) -> bool {
        let st = self.lock();
        st.in_use > st.limit
    }

    /// `in_use >= limit`: no unit can be taken right now.
    pub(crate) fn exhausted(&self) -> bool {
        let st = self.lock();
        st.in_use >= st.limit
    }

    /// Another live pool than `member` is queued as starved.
    pub(crate) fn starved_besides(&self, member: &Weak<dyn Member>) -> bool {
        self.lock()
            .starved
            .iter()
            .any(|m| !m.ptr_eq(member) && m.strong_count() > 0)
    }

    /// `member` has nobody waiting any more: drop it from the starved queue, so pools do not
    /// give up connections for it.
    pub(crate) fn forget_starved(&self, member: &Weak<dyn Member>) {
        self.lock().starved.retain(|m| !m.ptr_eq(member));
    }

    /// Take a unit for `member`, or queue it as starved (once) so the next freed unit is offered
    /// to it. Called under the member's own lock (pool, then budget).
    pub(crate) fn try_acquire_or_wait(&self, member: &Weak<dyn Member>) -> bool {
        let mut st = self.lock();
        if st.in_use < st.limit {
            st.in_use += 1;
            return true;
        }
        if !st.starved.iter().any(|m| m.ptr_eq(member)) {
            st.starved.push_back(member.clone());
        }
        false
    }

    /// Takes one unit for a connection opened outside any pool (the server monitor), if one is
    /// free right now. Never waits and never queues: monitoring must not compete with clients.
    /// The unit returns to the budget (and to a starved pool, if any) when the guard drops.
    pub fn try_reserve(self: &Arc<Self>) -> Option<ReservedUnit> {
        let mut st = self.lock();
        if st.in_use < st.limit {
            st.in_use += 1;
            return Some(ReservedUnit {
                budget: self.clone(),
            });
        }
        None
    }

    /// Give back one unit: hand it to the first starved pool that takes it, or free it.
    /// Must not be called with any pool lock held.
    pub(crate) fn release(&self) {
        loop {
            let next = {
                let mut st = self.lock();
                if st.in_use > st.limit {
                    st.in_use -= 1;
                    return;
                }
                match st.starved.pop_front() {
                    Some(next) => next,
                    None => {
                        st.in_use = st.in_use.saturating_sub(1);
                        return;
                    }
                }
            };
            // The unit stays counted while it is offered, so nobody else can take it meanwhile.
            if next.upgrade().is_some_and(|member| member.offer_unit()) {
                return;
            }
        }
    }

    /// `requester` is starved while siblings keep idle connections: close up to `wanted` of
    /// them (from whichever sibling has the most idle), so the units move to the starved pools.
    pub(crate) fn reclaim_for(&self, requester: &Weak<dyn Member>, wanted: usize) {
        let siblings = self.members_except(Some(requester));
        // One attempt per wanted unit: bounded even if siblings race us for their idle conns.
        for _ in 0..wanted {
            if !self.exhausted() {
                return;
            }
            match most_idle(&siblings) {
                Some(sibling) => {
                    sibling.reclaim_idle();
                }
                None => return,
            }
        }
    }

    /// The limit was lowered below `in_use`: close idle connections until it fits (or none
    /// are left; busy ones are closed as they come back).
    fn reclaim_over_limit(&self) {
        let members = self.members_except(None);
        while self.over_limit() {
            let reclaimed = most_idle(&members).is_some_and(|member| member.reclaim_idle());
            if !reclaimed {
                return;
            }
        }
    }

    fn members_except(&self, except: Option<&Weak<dyn Member>>) -> Vec<Arc<dyn Member>> {
        let mut st = self.lock();
        st.members.retain(|m| m.strong_count() > 0);
        st.members
            .iter()
            .filter(|m| !except.is_some_and(|e| m.ptr_eq(e)))
            .filter_map(Weak::upgrade)
            .collect()
    }
}

/// The member with the most idle connections, if any has one.
fn most_idle(members: &[Arc<dyn Member>]) -> Option<Arc<dyn Member>> {
    members
        .iter()
        .map(|m| (m.idle_count(), m))
        .filter(|(idle, _)| *idle > 0)
        .max_by_key(|(idle, _)| *idle)
        .map(|(_, m)| Arc::clone(m))
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("Budget")
            .field("limit", &st.limit)
            .field("in_use", &st.in_use)
            .field("starved_pools", &st.starved.len())
            .field("pools", &st.members.len())
            .finish()
    }
}

#[cfg(test)]
mod reserve_tests {
    use super::*;

    #[test]
    fn reserved_units_count_and_come_back() {
        let b = Budget::new(2);
        let one = b.try_reserve().expect("free unit");
        let two = b.try_reserve().expect("free unit");
        assert!(b.try_reserve().is_none(), "never beyond the limit");
        assert_eq!(b.in_use(), 2);
        drop(one);
        drop(two);
        assert_eq!(b.in_use(), 0);
    }
}
