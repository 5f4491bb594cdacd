//! # poolguard-fleet: several poolguard instances sharing one server's budget through etcd
//!
//! With `[fleet]`, a backend's `max_connections` is the budget of the whole fleet on that
//! server. Each instance holds a share of it under an etcd lease ([`agent`] for the protocol,
//! [`share`] for the rule), and sets its pools' budget limit through [`LocalBudget`]: the pool
//! knows neither etcd nor the fleet, and this crate knows no database protocol.
//! With `patroni_scope`, [`patroni`] follows Patroni's leader key in the same etcd and reports
//! the new write host the moment it changes.
//!
//! Modules: `etcd` (a small v3 client over etcd's JSON gateway), `share` (the split), `agent`
//! (lease, records, transactions, fail-safe), `patroni` (leader following).
//!
//! Invariants: no global state (several fleets may run in one process, as in tests); the tasks
//! end when the [`Fleet`] handle is dropped or [`Fleet::leave`] is called.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod agent;
pub mod etcd;
pub mod patroni;
pub mod share;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use agent::{BackendShare, LocalBudget, ShareStatus, Status};
pub use patroni::{Leader, OnLeader};

/// `[fleet]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// `host:port` (or `http://host:port`) of etcd's client endpoints.
    pub etcd_endpoints: Vec<String>,
    /// This instance's name, unique in the fleet.
    pub instance: String,
    /// The lease's TTL: how long a dead instance's share stays taken.
    pub lease_ttl: Duration,
    /// Follow Patroni's leader of this scope (`/service/<scope>/leader`).
    pub patroni_scope: Option<String>,
    /// The fleet's name: its keys live under `/poolguard/<name>/`.
    pub name: String,
}

impl FleetConfig {
    /// Each etcd call's bound: a third of the TTL (keep-alives are due every third), 2 s at most.
    pub fn call_timeout(&self) -> Duration {
        (self.lease_ttl / 3).min(Duration::from_secs(2))
    }
}

enum Command {
    SetBudget(String, usize),
    Leave(oneshot::Sender<bool>),
}

/// A running fleet member: the share task (and the Patroni follower, if configured).
pub struct Fleet {
    status: Arc<Status>,
    commands: mpsc::UnboundedSender<Command>,
    tasks: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// Starts the share protocol for `backends`, each limit at 0 until its first claim commits.
    /// `on_leader` is told of each new Patroni leader when `patroni_scope` is set.
    pub fn start(
        config: FleetConfig,
        backends: Vec<BackendShare>,
        on_leader: Option<OnLeader>,
    ) -> Fleet {
        let etcd = Arc::new(etcd::Etcd::new(
            &config.etcd_endpoints,
            config.call_timeout(),
        ));
        let status = Arc::new(Status::default());
        let mut tasks = Vec::new();
        if let (Some(scope), Some(on_leader)) = (config.patroni_scope.clone(), on_leader) {
            tasks.push(tokio::spawn(patroni::follow(
                etcd.clone(),
                scope,
                status.clone(),
                on_leader,
            )));
        }
        let (commands, mut rx) = mpsc::unbounded_channel();
        let mut agent = agent::Agent::new(etcd, config, backends, status.clone());
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(agent.period());
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => agent.tick().await,
                    command = rx.recv() => match command {
                        Some(Command::SetBudget(backend, budget)) => agent.set_budget(&backend, budget),
                        Some(Command::Leave(done)) => {
                            let _ = done.send(agent.leave().await);
                            return;
                        }
                        None => return,
                    },
                }
            }
        }));
        Fleet {
            status,
            commands,
            tasks,
        }
    }

    /// Shares, errors and etcd's state, for metrics and readiness.
    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// A reload changed a backend's `max_connections`: the fleet budget from the next round.
    pub fn set_budget(&self, backend: &str, budget: usize) {
        let _ = self
            .commands
            .send(Command::SetBudget(backend.to_owned(), budget));
    }

    /// Orderly exit: limits to 0, the lease revoked (our records go at once, so the others
    /// need not wait for the TTL). Bounded by the etcd call timeout once the current round
    /// is over. Whether our records are gone; false if etcd refused or had left already.
    pub async fn leave(&self) -> bool {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Leave(done)).is_err() {
            return false;
        }
        wait.await.unwrap_or(false)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
