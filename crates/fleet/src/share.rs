//! The share rule: how a backend's fleet budget is split among the instances that serve it.
//! Pure arithmetic on one snapshot of the members' records; no I/O.
//!
//! Each member publishes its *demand* (server connections in use plus clients waiting for
//! one). Every member computes the same split from the same records:
//! - **Floor.** Each member is owed one unit (so an idle instance can still open a
//!   connection at once), as long as the budget has one per member; with fewer units than
//!   members, the first members by name get one.
//! - **Enough for all.** When the wants (`max(demand, floor)`) fit in the budget, each member
//!   gets its want and the rest is spread evenly (remainder by name order): headroom for the
//!   next burst without a round trip to etcd.
//! - **Not enough.** Otherwise max-min fair ("water filling"): raise everyone's share one level
//!   at a time, a member stopping at its want, until the budget is spent. A small demand is
//!   met in full; the big ones split what is left evenly.
//!
//! Invariant: the targets sum to at most the budget (exactly the budget when there is at least
//! one member). Targets are goals only: the protocol in [`crate::agent`] moves a member's
//! grant towards its target without ever letting the grants sum above the budget.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a member writes under the backend's prefix (JSON), attached to its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The instance's name (`[fleet] instance`).
    pub instance: String,
    /// Server connections in use plus waiting clients, when written.
    pub demand: usize,
    /// Units of the budget this member holds: what its local limit may go up to.
    pub grant: usize,
}

/// Every member's target, by instance name, for a budget of `budget` units.
/// `demands` holds each member once (instance name, demand).
pub fn targets(budget: usize, demands: &BTreeMap<String, usize>) -> BTreeMap<String, usize> {
    let floors: Vec<usize> = (0..demands.len())
        .map(|i| usize::from(i < budget))
        .collect();
    let wants: Vec<usize> = demands
        .values()
        .zip(&floors)
        .map(|(&d, &f)| d.max(f))
        .collect();
    let wanted: usize = wants.iter().fold(0usize, |a, &w| a.saturating_add(w));
    let shares = if wanted <= budget {
        spread(&wants, budget - wanted)
    } else {
        water_fill(&floors, &wants, budget)
    };
    demands.keys().cloned().zip(shares).collect()
}

/// Each want, plus `spare` spread evenly (the first ones get the remainder).
fn spread(wants: &[usize], spare: usize) -> Vec<usize> {
    let n = wants.len().max(1);
    wants
        .iter()
        .enumerate()
        .map(|(i, &w)| w + spare / n + usize::from(i < spare % n))
        .collect()
}

/// Max-min fair shares of `budget` between `floors` and `wants` (the floors fit the budget).
fn water_fill(floors: &[usize], wants: &[usize], budget: usize) -> Vec<usize> {
    let mut shares = floors.to_vec();
    let mut left = budget.saturating_sub(shares.iter().sum());
    loop {
        let hungry = shares.iter().zip(wants).filter(|(s, w)| s < w).count();
        if hungry == 0 || left == 0 {
            return shares;
        }
        let step = (left / hungry).max(1);
        for (s, &w) in shares.iter_mut().zip(wants) {
            let add = step.min(w.saturating_sub(*s)).min(left);
            *s += add;
            left -= add;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demands(list: &[(&str, usize)]) -> BTreeMap<String, usize> {
        list.iter().map(|(n, d)| ((*n).to_owned(), *d)).collect()
    }

    fn shares(budget: usize, list: &[(&str, usize)]) -> Vec<usize> {
        targets(budget, &demands(list)).into_values().collect()
    }

    #[test]
    fn idle_members_split_the_budget_evenly() {
        assert_eq!(shares(30, &[("a", 0), ("b", 0), ("c", 0)]), [10, 10, 10]);
        assert_eq!(shares(31, &[("a", 0), ("b", 0), ("c", 0)]), [11, 10, 10]);
    }

    #[test]
    fn shares_follow_the_load_and_keep_a_floor() {
        assert_eq!(shares(30, &[("a", 40), ("b", 0), ("c", 0)]), [28, 1, 1]);
        assert_eq!(shares(30, &[("a", 40), ("b", 40), ("c", 2)]), [14, 14, 2]);
        assert_eq!(shares(30, &[("a", 5), ("b", 5), ("c", 5)]), [10, 10, 10]);
        assert_eq!(
            shares(30, &[("a", 100), ("b", 100), ("c", 100)]),
            [10, 10, 10]
        );
    }

    #[test]
    fn fewer_units_than_members() {
        assert_eq!(shares(2, &[("a", 9), ("b", 9), ("c", 9)]), [1, 1, 0]);
        assert_eq!(shares(0, &[("a", 9)]), [0]);
        assert!(targets(5, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn targets_never_sum_above_the_budget() {
        for budget in 0..40 {
            for a in [0, 1, 7, 50] {
                for b in [0, 3, 30] {
                    let t = targets(budget, &demands(&[("a", a), ("b", b), ("c", 1)]));
                    let sum: usize = t.values().sum();
                    assert_eq!(sum, budget, "budget {budget}, demands {a} {b} 1: {t:?}");
                }
            }
        }
    }
}
