//! The backend budgets during a binary upgrade: two processes, one budget each backend.
//!
//! Each process keeps a *cap* per backend (`Shared::upgrade_caps`): its budget limit is
//! `min(max_connections, cap)`, whatever a reload says. Outside an upgrade there are no caps.
//!
//! - The old process, at hand-off, freezes its share: `cap = min(limit, max(busy, need))`,
//!   where `busy` is what it holds and cannot give back now (leased, connecting, a monitoring
//!   unit) and `need` what its remaining clients may still use (per pool, `min(pool cap,
//!   clients)`, counting every connected client and login in progress, which over-counts and
//!   so only errs on the safe side). Idle connections beyond it close at once.
//! - From then on its share only shrinks (clients leave, so `need` falls); it never rises. The
//!   old process never accepts again, so `need` cannot grow beyond what the share covers.
//! - The new process starts with `cap = max_connections - old share` for every backend and
//!   raises it as the old reports a smaller share, so a late report only keeps it lower.
//! - A report is sent [`RELEASE_GRACE`] after the share shrank: the server ends a backend
//!   process a moment after its client closed the socket, and during that moment it still
//!   counts against `max_connections` and a role's CONNECTION LIMIT.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::lock;
use crate::state::Shared;

/// How long after its share shrank the old process reports it (see the module docs).
pub(crate) const RELEASE_GRACE: Duration = Duration::from_millis(250);

/// Server connections per backend name.
pub(crate) type Shares = HashMap<String, usize>;

impl Shared {
    /// The limit of `backend`'s budget: `max_connections`, or less while an upgrade caps it.
    pub(crate) fn budget_limit(&self, backend: &str, max_connections: usize) -> usize {
        lock(&self.upgrade_caps)
            .get(backend)
            .map_or(max_connections, |cap| max_connections.min(*cap))
    }

    /// Sets (or with `None` removes) the cap of every backend named, and applies the limits.
    pub(crate) fn set_upgrade_caps(&self, caps: impl IntoIterator<Item = (String, Option<usize>)>) {
        let config = self.config();
        for (backend, cap) in caps {
            match cap {
                Some(c) => lock(&self.upgrade_caps).insert(backend.clone(), c),
                None => lock(&self.upgrade_caps).remove(&backend),
            };
            if let (Some(b), Some(budget)) = (config.backend(&backend), self.budget(&backend)) {
                budget.set_limit(self.budget_limit(&backend, b.max_connections));
            }
        }
    }

    /// What this process may still need of each backend (the old side; see the module docs).
    pub(crate) fn share_needed(&self) -> Shares {
        let clients = self
            .client_count()
            .saturating_add(self.logins.in_progress());
        let mut need: Shares = HashMap::new();
        let mut add = |backend: &str, cap: usize| {
            let n = need.entry(backend.to_owned()).or_default();
            *n = n.saturating_add(cap.min(clients));
        };
        for e in self.pg_pools() {
            add(&e.db().backend, e.pool.status().cap);
        }
        for e in self.mysql.pools() {
            add(&e.db().backend, e.pool.status().cap);
        }
        let mut out = Shares::new();
        for b in &self.config().backends {
            let Some(budget) = self.budget(&b.name) else {
                continue;
            };
            let (limit, in_use) = budget.snapshot();
            let idle = self.idle_on(&b.name);
            let busy = in_use.saturating_sub(idle);
            let wanted = busy.max(need.get(&b.name).copied().unwrap_or(0));
            out.insert(b.name.clone(), limit.min(wanted));
        }
        out
    }

    /// Server connections held per backend right now (open, opening, or monitoring).
    pub(crate) fn shares_held(&self) -> Shares {
        self.config()
            .backends
            .iter()
            .filter_map(|b| Some((b.name.clone(), self.budget(&b.name)?.in_use())))
            .collect()
    }

    /// Idle server connections of every pool on `backend`.
    fn idle_on(&self, backend: &str) -> usize {
        let pg = self
            .pg_pools()
            .into_iter()
            .filter(|e| e.db().backend == backend)
            .map(|e| e.pool.status().idle);
        let my = self
            .mysql
            .pools()
            .into_iter()
            .filter(|e| e.db().backend == backend)
            .map(|e| e.pool.status().idle);
        pg.chain(my).sum()
    }
}

/// The old process's shares over time: shrinks at once, reported after [`RELEASE_GRACE`].
pub(crate) struct Shrinking {
    current: Shares,
    /// Shares not reported yet, with when they were taken (oldest first).
    pending: Vec<(Instant, Shares)>,
}

impl Shrinking {
    /// `share` is in force from `now`; until it is reported, `reported` (what was held
    /// before, connections being closed included) stands.
    pub(crate) fn new(share: Shares, now: Instant) -> Shrinking {
        Shrinking {
            pending: vec![(now, share.clone())],
            current: share,
        }
    }

    pub(crate) fn current(&self) -> &Shares {
        &self.current
    }

    /// Lowers each share to `needed` where that is smaller (never raises one); returns the
    /// backends whose share shrank, with the new value.
    pub(crate) fn lower(&mut self, needed: &Shares, now: Instant) -> Vec<(String, usize)> {
        let mut lowered = Vec::new();
        for (backend, share) in self.current.iter_mut() {
            let want = needed.get(backend).copied().unwrap_or(0);
            if want < *share {
                *share = want;
                lowered.push((backend.clone(), want));
            }
        }
        if !lowered.is_empty() {
            self.pending.push((now, self.current.clone()));
        }
        lowered
    }

    /// The shares that are at least [`RELEASE_GRACE`] old and not reported yet.
    pub(crate) fn due(&mut self, now: Instant) -> Option<Shares> {
        let ripe = self
            .pending
            .iter()
            .rposition(|(at, _)| now.saturating_duration_since(*at) >= RELEASE_GRACE)?;
        let mut taken: Vec<_> = self.pending.drain(..=ripe).collect();
        taken.pop().map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(n: usize) -> Shares {
        HashMap::from([("pg".to_owned(), n)])
    }

    #[test]
    fn a_share_only_shrinks_and_is_reported_after_the_grace() {
        let t0 = Instant::now();
        let mut s = Shrinking::new(shares(5), t0);
        assert_eq!(s.due(t0 + RELEASE_GRACE), Some(shares(5)));
        assert!(s.lower(&shares(7), t0).is_empty(), "never raised");
        assert_eq!(s.lower(&shares(3), t0), vec![("pg".to_owned(), 3)]);
        assert_eq!(s.current(), &shares(3));
        assert_eq!(s.due(t0), None, "not before the grace");
        let later = t0 + RELEASE_GRACE;
        assert_eq!(s.lower(&shares(1), later), vec![("pg".to_owned(), 1)]);
        assert_eq!(s.due(later), Some(shares(3)));
        assert_eq!(s.due(later + RELEASE_GRACE), Some(shares(1)));
        assert_eq!(s.due(later + RELEASE_GRACE * 2), None);
    }
}
