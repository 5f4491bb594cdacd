//! The data the admin side reads: a point-in-time [`Snapshot`] of every backend, pool, client,
//! lease and idle server connection (plus the last stats period's averages), and the
//! [`EventLog`] ring buffer of leak and alert events.
//!
//! The proxy builds snapshots (it implements [`crate::Source`]); everything here is plain
//! serialisable data, so metrics, the JSON API, the console and alerts all render the same
//! numbers. The event log is the only shared mutable piece: a short mutex around a bounded
//! deque, written once per event, never on a per-message path.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Everything observable, right now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub backends: Vec<BackendSnapshot>,
    pub pools: Vec<PoolSnapshot>,
    pub clients: Vec<ClientSnapshot>,
    /// Current leases (checked-out server connections), oldest first.
    pub leases: Vec<LeaseSnapshot>,
    /// Pooled server connections no client holds, per pool (in pool order), least recently
    /// returned first.
    pub idle_servers: Vec<IdleServerSnapshot>,
    /// Per database, the averages of the last completed stats period (empty until one has
    /// completed; see [`crate::stats`]).
    pub stats_averages: Vec<crate::stats::StatsAverages>,
    /// Clients connected through every front door.
    pub clients_connected: usize,
    /// Of those, idle clients resting in a worker's lot (no task, no place in the reactor).
    pub clients_resting: usize,
    /// Clients pinned to a server for their session by transaction-mode rules (monotonic).
    pub pins_total: u64,
    /// Idle-in-transaction reclaims (monotonic).
    pub idle_in_transaction_kills_total: u64,
    /// Errors sent to clients, by SQLSTATE or MySQL error code (monotonic).
    pub errors_total: Vec<(String, String, u64)>,
    /// Whether new transactions are paused (console PAUSE).
    pub paused: bool,
    /// Client and cleanup tasks stopped by a panic, each contained to its own client
    /// (monotonic).
    pub panics_total: u64,
    /// `[fleet]`: this instance's shares of the fleet budgets, and etcd's state.
    pub fleet: Option<FleetSnapshot>,
}

/// This instance's side of a fleet sharing budgets through etcd.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetSnapshot {
    pub instance: String,
    /// etcd calls that failed (monotonic).
    pub etcd_errors_total: u64,
    /// Why etcd is failing now (the last call failed), if it is.
    pub etcd_error: Option<String>,
    pub shares: Vec<FleetShareSnapshot>,
}

/// One backend's share.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetShareSnapshot {
    pub backend: String,
    /// The fleet budget on the backend (`max_connections`).
    pub budget: usize,
    /// The limit in force here (at most `grant`).
    pub share: usize,
    /// Units held in etcd.
    pub grant: usize,
    /// Members seen at the last read (this one included).
    pub members: usize,
}

/// A backend (one server, or one failover group) and its budget.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackendSnapshot {
    pub name: String,
    /// "postgres" or "mysql".
    pub protocol: String,
    pub host: String,
    /// poolguard's budget on this server (`[[backends]] max_connections`).
    pub budget_limit: usize,
    /// Units in use across every pool on the backend.
    pub budget_in_use: usize,
    /// The server's own count of connections (all clients, not only poolguard), last poll.
    pub server_connections: Option<u64>,
    /// The server's `max_connections`, last poll.
    pub server_max_connections: Option<u64>,
    /// Why the last poll failed, if it did.
    pub poll_error: Option<String>,
    /// Each configured host: its role, whether writes go there, its circuit breaker.
    pub hosts: Vec<HostSnapshot>,
    /// Times writes moved to another host (monotonic).
    pub failovers_total: u64,
}

/// One host of a backend.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostSnapshot {
    pub addr: String,
    /// "primary", "standby", "down" or "unknown" (last health check).
    pub role: String,
    /// New server connections of the backend go to this host.
    pub writes_here: bool,
    /// "closed", "open" or "half-open".
    pub breaker: String,
    /// 0 closed, 1 open, 2 half-open.
    pub breaker_gauge: u8,
    /// Times the breaker opened (monotonic).
    pub breaker_opened_total: u64,
    /// Connects refused by the open breaker (monotonic).
    pub breaker_rejected_total: u64,
    /// The last health check's error, if it failed.
    pub last_check_error: Option<String>,
}

/// One pool (database + user on one front door).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PoolSnapshot {
    pub name: String,
    pub backend: String,
    pub protocol: String,
    pub database: String,
    pub user: String,
    /// "transaction" or "session".
    pub mode: String,
    /// Where its server connections go: "primary" (the write host) or "standby".
    pub target: String,
    pub open: usize,
    pub idle: usize,
    pub in_use: usize,
    pub connecting: usize,
    pub waiters: usize,
    pub oldest_wait_seconds: f64,
    pub size: usize,
    pub cap: usize,
    pub clients: usize,
    pub acquired_total: u64,
    pub timeouts_total: u64,
    pub connects_total: u64,
    pub connect_errors_total: u64,
    pub closed_total: u64,
    /// Leased server connections closed instead of reused, per reason (dropped, panicked,
    /// unproven, broken, unfinished, cleanup_failed), every reason listed (monotonic).
    pub discarded: Vec<(String, u64)>,
    pub leaks_total: u64,
    /// Cumulative counts per [`AcquireHistogram::bounds`] bound, then `+Inf`.
    pub acquire_wait_buckets: Vec<u64>,
    pub acquire_wait_sum: f64,
    /// Statements sent by clients currently connected to this pool (a gauge, not a total).
    pub statements: u64,
    /// Transactions completed through this pool (monotonic; autocommit statements count one each).
    pub transactions_total: u64,
    /// Queries (simple Query messages, extended-protocol Executes, MySQL COM_QUERY and
    /// COM_STMT_EXECUTE) relayed to servers of this pool (monotonic).
    pub queries_total: u64,
    /// Bytes received from clients of this pool (monotonic).
    pub bytes_received_total: u64,
    /// Bytes sent to clients of this pool (monotonic).
    pub bytes_sent_total: u64,
    /// Time spent in transactions, summed (seconds, monotonic).
    pub transaction_seconds_total: f64,
    /// Time spent in queries, summed (seconds, monotonic).
    pub query_seconds_total: f64,
    /// Parses of the unnamed statement answered by poolguard because the server already held
    /// that exact statement (postgres; monotonic).
    pub parses_reused_total: u64,
    /// True while the pool is paused (PAUSE on the admin console): new transactions are held.
    pub paused: bool,
    /// Acquires refused at once because `max_waiters` clients already waited (monotonic).
    pub rejected_waiters_total: u64,
    /// Acquires refused at once because the backend's breaker was open (monotonic).
    pub refused_total: u64,
}

/// Upper bounds of the acquire-wait histogram buckets, in seconds (the pool's buckets).
pub struct AcquireHistogram;

impl AcquireHistogram {
    pub const BOUNDS: [f64; 12] = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
    ];
}

/// One connected client.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClientSnapshot {
    pub id: u64,
    pub protocol: String,
    /// "ip:port".
    pub client: String,
    pub user: String,
    pub database: String,
    pub application: String,
    pub pool: String,
    /// "active" (holds a server), "waiting" (queued for one) or "idle".
    pub state: String,
    pub connected_seconds: f64,
    pub statements: u64,
    /// Why the client keeps its server for its whole session (transaction mode), if it does.
    pub pinned: String,
}

/// One checked-out server connection and who holds it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LeaseSnapshot {
    pub id: u64,
    pub pool: String,
    pub backend: String,
    pub protocol: String,
    pub client: String,
    pub user: String,
    pub database: String,
    pub application: String,
    pub held_seconds: f64,
    /// "active", "idle", "idle in transaction" or "unknown".
    pub state: String,
    pub last_statement: String,
    pub leak_reported: bool,
}

/// One idle pooled server connection.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IdleServerSnapshot {
    pub pool: String,
    pub backend: String,
    pub protocol: String,
    /// The pool's user and database (the database's name on the front door).
    pub user: String,
    pub database: String,
    /// Since the connection was opened.
    pub connected_seconds: f64,
    /// Since it was last returned to the pool.
    pub idle_seconds: f64,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A lease was held past `leak_threshold`.
    Leak,
    /// An alert rule started firing.
    AlertFiring,
    /// An alert rule stopped firing.
    AlertResolved,
    /// A host's circuit breaker changed state (`value`: 0 closed, 1 open, 2 half-open).
    Breaker,
    /// A backend's writes moved to another host.
    Failover,
    /// An operator acted: reload, pause, resume, shutdown drain.
    Operator,
}

/// One event, as kept in the ring buffer and served by `/api/events`.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Increases by one per event; clients poll with `?after=seq`.
    pub seq: u64,
    /// Unix time, milliseconds.
    pub at_ms: u64,
    pub kind: EventKind,
    /// One line for people.
    pub message: String,
    /// Leak events: the lease, with attribution. Alert events: `None`.
    pub lease: Option<LeaseSnapshot>,
    /// Alert events: the rule name.
    pub rule: Option<String>,
    /// Alert events: the observed value.
    pub value: Option<f64>,
}

/// How many events the log keeps.
pub const EVENT_CAPACITY: usize = 512;

/// A bounded, append-only log of recent events.
#[derive(Debug, Default)]
pub struct EventLog {
    events: Mutex<VecDeque<Event>>,
    next: AtomicU64,
}

impl EventLog {
    /// Appends an event (dropping the oldest beyond [`EVENT_CAPACITY`]); returns its seq.
    pub fn push(
        &self,
        kind: EventKind,
        message: String,
        lease: Option<LeaseSnapshot>,
        rule: Option<String>,
        value: Option<f64>,
    ) -> u64 {
        let seq = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let event = Event {
            seq,
            at_ms: now_ms(),
            kind,
            message,
            lease,
            rule,
            value,
        };
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        if events.len() >= EVENT_CAPACITY {
            events.pop_front();
        }
        events.push_back(event);
        seq
    }

    /// Events with `seq > after`, oldest first.
    pub fn since(&self, after: u64) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|e| e.seq > after)
            .cloned()
            .collect()
    }

    /// How many events of `kind` are still in the log.
    pub fn count(&self, kind: EventKind) -> usize {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|e| e.kind == kind)
            .count()
    }
}

/// Unix time in milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_log_is_bounded_and_ordered() {
        let log = EventLog::default();
        for i in 0..(EVENT_CAPACITY + 10) {
            log.push(EventKind::Leak, format!("leak {i}"), None, None, None);
        }
        let all = log.since(0);
        assert_eq!(all.len(), EVENT_CAPACITY);
        assert_eq!(all[0].seq, 11);
        assert_eq!(log.since(all.last().unwrap().seq).len(), 0);
        assert_eq!(log.count(EventKind::Leak), EVENT_CAPACITY);
    }
}
