//! The share protocol: one instance's side, run as one task for all its backends.
//!
//! Keys, under `/poolguard/<fleet name>/<backend>/`:
//! - `members/<instance>`: this instance's [`Record`] (demand, grant), attached to its lease.
//! - `epoch`: no lease, no meaning but its `mod_revision`: every transaction that *raises* a
//!   grant compares it with the revision read and rewrites it.
//!
//! Invariants (the budget is never over-committed, including during changes):
//! - **Grants sum to at most the budget in etcd.** A member reads the prefix (one consistent
//!   snapshot), takes at most `budget - sum(grants)` units, and commits only if `epoch` is
//!   unchanged since that read. Every raise rewrites `epoch`, so two raises computed from the
//!   same snapshot cannot both commit; lowering a grant or a lease expiring (keys deleted) only
//!   shrinks the sum, so they need no compare.
//! - **Local limit <= grant.** The local limit is raised only after a raise commits; a grant is
//!   lowered in etcd only after the local limit was lowered and `in_use` fits under the new grant
//!   (`grant' = max(target, in_use)` right after lowering the limit: `in_use` cannot grow past
//!   either from then on).
//! - **Fail safe.** etcd unreachable: the limit never goes up, it stays at the last grant while
//!   the lease may still be alive (the time of the last successful keep-alive plus its TTL), and
//!   drops to 0 once the lease may have expired, since other members may then take those units.
//!   A lease found gone has the same effect; the member then joins again with a new lease.
//!
//! The loop ticks every `lease_ttl / 10` (between 100 ms and 500 ms): it renews the lease every
//! third of its TTL and runs one round per backend (read, compute targets, lower or claim,
//! publish demand). All calls are sequential and bounded by the client's timeout.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::etcd::{Etcd, EtcdError, ModRevisionIs, Put};
use crate::share::{targets, Record};
use crate::FleetConfig;

/// What the fleet needs from a backend's local budget (implemented by the proxy over the
/// pool's `Budget`): the fleet sets the limit, the pool does the rest.
pub trait LocalBudget: Send + Sync + 'static {
    /// The most server connections this instance may hold on the backend from now on.
    fn set_limit(&self, limit: usize);
    /// Units in use now.
    fn in_use(&self) -> usize;
    /// Units in use plus clients waiting for one.
    fn demand(&self) -> usize;
}

/// One backend's share as this instance sees it, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShareStatus {
    pub backend: String,
    /// The fleet budget (`max_connections`).
    pub budget: usize,
    /// Units this instance holds in etcd.
    pub grant: usize,
    /// The local limit in force (at most the grant).
    pub limit: usize,
    /// Members seen at the last successful read (this one included).
    pub members: usize,
}

/// Shared between the task and the readers (metrics, readiness).
#[derive(Debug, Default)]
pub struct Status {
    shares: Mutex<Vec<ShareStatus>>,
    etcd_errors: AtomicU64,
    /// The last etcd call failed (cleared by the next success).
    failing: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Leases granted (1 in a healthy run; more after a lease was lost).
    leases: AtomicUsize,
}

impl Status {
    pub fn shares(&self) -> Vec<ShareStatus> {
        self.shares
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// etcd calls that failed (monotonic).
    pub fn etcd_errors_total(&self) -> u64 {
        self.etcd_errors.load(Ordering::Relaxed)
    }

    /// Why etcd is failing right now, if it is.
    pub fn failing(&self) -> Option<String> {
        if !self.failing.load(Ordering::Relaxed) {
            return None;
        }
        let last = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Some(last.clone().unwrap_or_else(|| "etcd unreachable".into()))
    }

    pub fn leases_granted(&self) -> usize {
        self.leases.load(Ordering::Relaxed)
    }

    pub(crate) fn error(&self, e: &EtcdError) {
        self.etcd_errors.fetch_add(1, Ordering::Relaxed);
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "fleet: etcd call failed; shares held, none raised");
        }
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
    }

    fn ok(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!("fleet: etcd answers again");
        }
    }

    fn publish(&self, backends: &[Backend]) {
        let list = backends.iter().map(|b| b.status.clone()).collect();
        *self.shares.lock().unwrap_or_else(PoisonError::into_inner) = list;
    }
}

/// One backend this instance serves with the fleet.
pub struct BackendShare {
    pub name: String,
    /// The fleet budget: the backend's `max_connections`.
    pub budget: usize,
    pub local: Arc<dyn LocalBudget>,
}

struct Backend {
    local: Arc<dyn LocalBudget>,
    prefix: String,
    /// What our record in etcd says (0 while we have none).
    grant: usize,
    /// The record last written, to skip writing an unchanged one.
    written: Option<Record>,
    status: ShareStatus,
}

impl Backend {
    /// Sets the local limit (only when it changes: the budget logs every change).
    fn limit_to(&mut self, limit: usize) {
        if limit != self.status.limit {
            self.local.set_limit(limit);
            self.status.limit = limit;
        }
    }
}

struct Lease {
    id: i64,
    /// After this, etcd may have expired the lease (last renewal sent + its TTL).
    expires: Instant,
    renewed: Instant,
}

/// The running protocol for all backends of one instance.
pub(crate) struct Agent {
    etcd: Arc<Etcd>,
    config: FleetConfig,
    backends: Vec<Backend>,
    lease: Option<Lease>,
    status: Arc<Status>,
}

impl Agent {
    pub(crate) fn new(
        etcd: Arc<Etcd>,
        config: FleetConfig,
        shares: Vec<BackendShare>,
        status: Arc<Status>,
    ) -> Agent {
        let backends = shares
            .into_iter()
            .map(|s| {
                // Nothing is ours until a claim commits.
                s.local.set_limit(0);
                Backend {
                    prefix: format!("/poolguard/{}/{}/", config.name, s.name),
                    local: s.local,
                    grant: 0,
                    written: None,
                    status: ShareStatus {
                        backend: s.name,
                        budget: s.budget,
                        ..ShareStatus::default()
                    },
                }
            })
            .collect();
        Agent {
            etcd,
            config,
            backends,
            lease: None,
            status,
        }
    }

    /// The tick of the loop.
    pub(crate) fn period(&self) -> Duration {
        (self.config.lease_ttl / 10).clamp(Duration::from_millis(100), Duration::from_millis(500))
    }

    /// A new fleet budget for a backend (reload); its next round applies it.
    pub(crate) fn set_budget(&mut self, backend: &str, budget: usize) {
        if let Some(b) = self
            .backends
            .iter_mut()
            .find(|b| b.status.backend == backend)
        {
            b.status.budget = budget;
        }
    }

    /// One tick: the lease, then a round per backend, then the fail-safe check.
    pub(crate) async fn tick(&mut self) {
        if let Err(e) = self.keep_lease().await {
            self.status.error(&e);
        }
        if let Some(id) = self.lease.as_ref().map(|l| l.id) {
            for i in 0..self.backends.len() {
                let result = match self.backends.get_mut(i) {
                    Some(b) => round(&self.etcd, &self.config.instance, id, b).await,
                    None => Ok(()),
                };
                match result {
                    Ok(()) => self.status.ok(),
                    Err(e) if e.lease_not_found() => {
                        self.status.error(&e);
                        self.lease_lost("etcd no longer knows the lease");
                        break;
                    }
                    Err(e) => self.status.error(&e),
                }
            }
        }
        if self
            .lease
            .as_ref()
            .is_some_and(|l| Instant::now() >= l.expires)
        {
            self.lease_lost("no keep-alive got through within the lease's TTL");
        }
        self.status.publish(&self.backends);
    }

    /// Grants a lease when there is none, renews it every third of its TTL.
    async fn keep_lease(&mut self) -> Result<(), EtcdError> {
        let ttl = self.config.lease_ttl;
        let sent = Instant::now();
        match &self.lease {
            None => {
                let id = self.etcd.grant(ttl).await?;
                self.status.leases.fetch_add(1, Ordering::Relaxed);
                tracing::info!(lease = id, ttl = ?ttl, instance = %self.config.instance, "fleet: lease granted");
                self.lease = Some(Lease {
                    id,
                    expires: sent + ttl,
                    renewed: sent,
                });
            }
            Some(lease) if sent.duration_since(lease.renewed) >= ttl / 3 => {
                let id = lease.id;
                match self.etcd.keep_alive(id).await? {
                    Some(granted) => {
                        self.lease = Some(Lease {
                            id,
                            expires: sent + granted,
                            renewed: sent,
                        });
                    }
                    None => self.lease_lost("etcd says the lease expired"),
                }
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// The lease is gone or may be: others may take our units, so nothing is ours any more.
    fn lease_lost(&mut self, why: &str) {
        if self.lease.take().is_none() {
            return;
        }
        tracing::warn!(
            reason = why,
            "fleet: lease lost; every share drops to 0 until a new lease claims again"
        );
        for b in &mut self.backends {
            b.limit_to(0);
            b.grant = 0;
            b.written = None;
            b.status.grant = 0;
        }
    }

    /// Gives our units back at once (orderly shutdown): revoking the lease deletes our records.
    /// Whether they are gone (revoked, or no lease held).
    pub(crate) async fn leave(&mut self) -> bool {
        for b in &self.backends {
            b.local.set_limit(0);
        }
        let Some(lease) = self.lease.take() else {
            return true;
        };
        match self.etcd.revoke(lease.id).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "fleet: could not revoke the lease; it expires on its own");
                false
            }
        }
    }
}

/// One backend's round: read the members, compute our target, lower or claim, publish.
async fn round(etcd: &Etcd, me: &str, lease: i64, b: &mut Backend) -> Result<(), EtcdError> {
    let (_, kvs) = etcd.range(&b.prefix, true).await?;
    let epoch_key = format!("{}epoch", b.prefix);
    let my_key = format!("{}members/{me}", b.prefix);
    let mut epoch = 0;
    let mut others_granted = 0usize;
    let mut demands = BTreeMap::new();
    let mut mine_exists = false;
    for kv in &kvs {
        if kv.key == epoch_key {
            epoch = kv.mod_revision;
        } else if kv.key == my_key {
            mine_exists = true;
        } else if let Ok(r) = serde_json::from_slice::<Record>(&kv.value) {
            others_granted = others_granted.saturating_add(r.grant);
            demands.insert(r.instance, r.demand);
        }
    }
    if !mine_exists && b.grant > 0 {
        // Our record vanished (lease expired under us): our units may be someone else's now.
        b.limit_to(0);
        b.grant = 0;
        b.written = None;
    }
    let budget = b.status.budget;
    let demand = b.local.demand();
    demands.insert(me.to_owned(), demand);
    let target = targets(budget, &demands).get(me).copied().unwrap_or(0);
    b.status.members = demands.len();

    // Lower first (always safe), then release what in_use allows.
    b.limit_to(target.min(b.grant));
    let mut grant = b.grant;
    if grant > target {
        grant = target.max(b.local.in_use()).min(grant);
    }
    let free = budget.saturating_sub(others_granted).saturating_sub(grant);
    let take = target.saturating_sub(grant).min(free);
    let record = Record {
        instance: me.to_owned(),
        demand,
        grant: grant + take,
    };
    let put = Put {
        key: my_key,
        value: serde_json::to_vec(&record).unwrap_or_default(),
        lease,
    };
    if take > 0 {
        let bump = Put {
            key: epoch_key.clone(),
            value: Vec::new(),
            lease: 0,
        };
        let unchanged = ModRevisionIs {
            key: epoch_key,
            mod_revision: epoch,
        };
        if etcd.txn(&[unchanged], &[bump, put]).await? {
            b.grant = record.grant;
            b.written = Some(record);
        } else {
            // Another member raised its grant since our read: read again next round.
            tracing::debug!(backend = %b.status.backend, "fleet: claim lost a race; retrying next round");
        }
    } else if b.written.as_ref() != Some(&record) {
        etcd.put(&put).await?;
        b.grant = record.grant;
        b.written = Some(record);
    }
    b.limit_to(target.min(b.grant));
    b.status.grant = b.grant;
    Ok(())
}
