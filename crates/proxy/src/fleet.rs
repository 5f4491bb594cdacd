//! The proxy's side of `[fleet]`: joins each backend's budget to the fleet's share protocol
//! (`poolguard-fleet`), and moves a PostgreSQL backend's write host to Patroni's leader.
//!
//! Invariants:
//! - With `[fleet]`, every budget starts at 0 (see `Shared::new`) and only the fleet raises it,
//!   after its claim committed in etcd; a reload never sets a fleet budget's limit itself, it
//!   hands the new `max_connections` to the fleet (`control`).
//! - Demand is read from the pools (units in use plus waiting clients), never pushed: nothing
//!   on a client's path knows the fleet exists.
//! - On shutdown the lease is revoked only once the drain closed every server connection; a
//!   drain cut short leaves the lease to expire, so shares never free units still in use.
//! - A Patroni leader whose address is not one of the backend's `hosts` moves nothing (logged):
//!   poolguard connects only where its configuration says it may.

use std::sync::{Arc, Weak};

use poolguard_fleet::{BackendShare, Fleet, Leader, LocalBudget, OnLeader};
use poolguard_pool::Budget;

use crate::config::Protocol;
use crate::state::Shared;

/// A backend's budget as the fleet sees it.
struct Local {
    shared: Weak<Shared>,
    backend: String,
    budget: Arc<Budget>,
}

impl LocalBudget for Local {
    fn set_limit(&self, limit: usize) {
        self.budget.set_limit(limit);
    }

    fn in_use(&self) -> usize {
        self.budget.in_use()
    }

    fn demand(&self) -> usize {
        let waiting = self
            .shared
            .upgrade()
            .map_or(0, |s| waiters(&s, &self.backend));
        self.budget.in_use().saturating_add(waiting)
    }
}

/// Clients waiting for a server connection in every pool of `backend`.
fn waiters(shared: &Shared, backend: &str) -> usize {
    let pg = shared
        .pg_pools()
        .into_iter()
        .filter(|e| e.db().backend == backend)
        .map(|e| e.pool.status().waiters);
    let my = shared
        .mysql
        .pools()
        .into_iter()
        .filter(|e| e.db().backend == backend)
        .map(|e| e.pool.status().waiters);
    pg.chain(my).fold(0, usize::saturating_add)
}

/// Starts the fleet for every configured backend, if `[fleet]` is configured.
pub fn start(shared: &Arc<Shared>) -> Option<Fleet> {
    let config = shared.config();
    let fleet = config.fleet.clone()?;
    let backends = config
        .backends
        .iter()
        .filter_map(|b| {
            let budget = shared.budget(&b.name)?;
            let local = Local {
                shared: Arc::downgrade(shared),
                backend: b.name.clone(),
                budget,
            };
            Some(BackendShare {
                name: b.name.clone(),
                budget: b.max_connections,
                local: Arc::new(local),
            })
        })
        .collect();
    let weak = Arc::downgrade(shared);
    let on_leader: OnLeader = Arc::new(move |leader: &Leader| {
        if let Some(shared) = weak.upgrade() {
            follow_leader(&shared, leader);
        }
    });
    tracing::info!(instance = %fleet.instance, endpoints = ?fleet.etcd_endpoints, "fleet: joining; budgets are 0 until claimed");
    Some(Fleet::start(fleet, backends, Some(on_leader)))
}

/// Patroni named a new leader: every PostgreSQL backend with that host writes there now.
fn follow_leader(shared: &Shared, leader: &Leader) {
    let config = shared.config();
    for b in config
        .backends
        .iter()
        .filter(|b| b.protocol == Protocol::Postgres)
    {
        let Some(set) = shared.hosts(&b.name) else {
            continue;
        };
        match set.follow_leader(&leader.addr) {
            Ok(Some(failover)) => crate::hosts::check::fail_over(shared, &b.name, &failover),
            Ok(None) => {}
            Err(crate::hosts::UnknownHost) => tracing::warn!(
                backend = %b.name,
                member = %leader.member,
                addr = %leader.addr,
                "patroni leader is not one of the backend's hosts; writes stay where they are"
            ),
        }
    }
}

/// The end of a shutdown drain (`Shared::drain`). With every transaction finished and every
/// server connection closed, this instance's shares go back at once: the lease is revoked, so
/// the others claim the units in their next round instead of after `lease_ttl`. With
/// transactions cut at the deadline, their server connections live until the process exits,
/// so the lease is left to expire and the units stay counted until then (fail closed: never
/// more connections on the server than the fleet budget). What happened, for the summary;
/// `None` without `[fleet]`.
pub(crate) async fn leave_after_drain(shared: &Shared, nothing_cut: bool) -> Option<&'static str> {
    let fleet = shared.fleet()?;
    if !nothing_cut {
        return Some("fleet shares kept until the lease expires (connections cut)");
    }
    // Leaving takes longer than the lease only if etcd is failing, and by then the lease has
    // expired anyway: the exit waits no longer than that.
    let ttl = shared.config().fleet.as_ref().map(|f| f.lease_ttl)?;
    match tokio::time::timeout(ttl, fleet.leave()).await {
        Ok(true) => {
            tracing::info!("fleet: left; this instance's shares are free for the others");
            Some("fleet lease revoked, shares returned")
        }
        Ok(false) | Err(_) => Some("fleet lease not revoked; it expires on its own"),
    }
}

/// The fleet's part of the admin snapshot.
pub fn snapshot(shared: &Shared) -> Option<poolguard_admin::model::FleetSnapshot> {
    let fleet = shared.fleet()?;
    let status = fleet.status();
    Some(poolguard_admin::model::FleetSnapshot {
        instance: shared
            .config()
            .fleet
            .as_ref()
            .map(|f| f.instance.clone())
            .unwrap_or_default(),
        etcd_errors_total: status.etcd_errors_total(),
        etcd_error: status.failing(),
        shares: status
            .shares()
            .into_iter()
            .map(|s| poolguard_admin::model::FleetShareSnapshot {
                backend: s.backend,
                budget: s.budget,
                share: s.limit,
                grant: s.grant,
                members: s.members,
            })
            .collect(),
    })
}

/// Not ready while etcd fails: this instance holds its shares but cannot raise them, and
/// drops them once its lease may have expired.
pub fn ready(shared: &Shared) -> Result<(), String> {
    match shared.fleet().and_then(|f| f.status().failing()) {
        Some(why) => Err(format!(
            "fleet: etcd unreachable, shares held, none raised: {why}"
        )),
        None => Ok(()),
    }
}
