//! # poolguard-pool: a generic, bounded, protocol-agnostic async pool
//!
//! A [`Pool`] hands out [`Lease`]s on connections made by a [`Connector`]. It knows nothing about
//! PostgreSQL or MySQL: the connector opens and closes, the pool counts, queues and reaps.
//!
//! ## Invariants
//! - **Units.** Every connection the pool holds (idle, leased, or still connecting) is one *unit*.
//!   Per pool, `idle + in_use + connecting <= size + max_overflow`; across every pool sharing a
//!   [`Budget`], the units never exceed [`Budget::limit`]. Capacity is decided under a short
//!   `std::sync::Mutex`; connects happen outside it, holding an RAII slot that gives its unit back
//!   if the connect fails or the acquire is cancelled.
//! - **Fail closed.** A leased connection is reused only through [`Lease::release`], whose
//!   [`Clean`] proof states what the holder checked (idle, no transaction, nothing owed, both
//!   sides in step); a proof that does not hold, [`Lease::discard`], and a lease dropped any
//!   other way (an early return, a cancelled future, a panic unwinding) close the connection,
//!   counted per [`DiscardReason`]. No path returns a connection for reuse by accident.
//! - **Every unit is returned exactly once.** [`Lease::release`], [`Lease::discard`] or the
//!   lease's `Drop` returns it;
//!   a slot's `Drop` returns it; closing a connection releases its budget unit, which the budget
//!   hands to the first budget-starved pool (FIFO across pools) or frees.
//! - **Idle connections never starve a sibling.** A pool refused a budget unit asks pools with
//!   idle connections to close one, and a connection returned where nobody waits is closed
//!   while another pool is starved (`CloseReason::BudgetReclaim`). Lowering the limit closes
//!   idle connections at once and returned ones until `in_use` fits.
//! - **FIFO and one deadline.** Waiters are served first come, first served within a pool
//!   (a fair share, when set, lets a waiter under its share go before ones over theirs); an
//!   acquire has one deadline covering the wait and the connect, held while the pool is paused.
//!   A grant sent to a waiter that has gone away comes back to the pool through its own `Drop`.
//!   When nobody waits, an acquire that finds an idle connection takes it under the lock
//!   without joining the queue (no channel, no wake-up): the queue would serve it at once
//!   anyway, so the order is the same.
//! - **Lock order.** Pool state, then budget; never the reverse, never across `.await`, and no
//!   user code ([`Connector::close`]) or lease/slot `Drop` runs while a lock is held: such work is
//!   collected under the lock and applied after it is released.
//! - **Time** is `tokio::time::Instant`, so everything runs on a paused test clock.
//!
//! ## Operator controls
//! - **Pause / resume** ([`Pool::pause`], [`Pool::resume`]): a paused pool queues acquires but
//!   serves none, and their `acquire_timeout` does not run; on resume each waiter's deadline
//!   restarts with a whole `acquire_timeout`. Leases already out work and return normally.
//! - **Wait for idle** ([`Pool::wait_idle`]): resolves when no lease is out and nothing is
//!   connecting, woken by the pool (never polled); PAUSE and shutdown drain wait on it.
//! - **Retire** ([`Pool::retire_all`]): after a fail-over, every connection of the old
//!   generation is closed (`CloseReason::Retired`): idle ones now, busy ones on return. The pool
//!   stays open and opens new ones through the connector.
//! - **Waiter cap** ([`Admission::max_waiters`]): an acquire that would wait while
//!   `max_waiters` others already do (a paused pool's queue included) fails at once with
//!   [`AcquireError::TooManyWaiters`], counted in `PoolStatus::rejected_waiters_total`. An
//!   acquire served at once never counts against it.
//! - **Fair shares** ([`Admission::fair_share`], set with [`Pool::set_admission`]): one
//!   application or client address may hold at most `max` connections while clients of other
//!   keys wait; the dispatch serves the first waiter under its share before earlier ones at or
//!   over theirs. With nobody else waiting (or everybody over) it serves in order, so no
//!   connection is left unused. A waiter that times out after being passed over is told so
//!   ([`OverShare`] in [`AcquireError::Timeout`]).
//! - **Fast refusal** ([`Connector::admit`]): asked before each acquire; when it refuses and
//!   nothing is idle, the acquire fails at once instead of waiting out `acquire_timeout`.
//!
//! ## Modules
//! `config` (settings and the status snapshot), `budget` (the cross-pool budget), `lease` (the
//! RAII lease and connect slot), `inner` (shared state and the dispatch that hands out capacity;
//! `inner::report` reads it, `inner::member` is the budget's side), `pool` (the public handle),
//! `error` (what an acquire can fail with), `breaker` (a standalone circuit breaker for connects
//! to one server). Tests live in `tests/` beside them.
//!
//! ## Circuit breaker
//! [`Breaker`] counts consecutive failed connects to one server; at `failures` it opens and
//! refuses ([`BreakerOpen`]) for a cool-down, then lets exactly one probe through (half-open).
//! The probe's success closes it; its failure re-opens it with the cool-down doubled, up to
//! `max_cooldown`. It is protocol-free and does not call into a pool: a [`Connector`] holds one,
//! asks [`Breaker::try_pass`] in `connect` and reports on the pass.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs)]

mod breaker;
mod budget;
mod config;
mod error;
mod inner;
mod lease;
mod note;
mod pool;
#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

pub use breaker::{
    Breaker, BreakerConfig, BreakerOpen, BreakerPass, BreakerState, BreakerStats, Transition,
};
pub use budget::{Budget, ReservedUnit};
pub use config::{Admission, FairShare, PoolConfig, PoolStatus, ShareKey};
pub use error::{AcquireError, OverShare};
pub use lease::{Clean, DiscardReason, Lease};
pub use note::{LeaseNote, LeaseState, WaitHistogram, WAIT_BUCKETS};
pub use pool::Pool;

/// Opens (and optionally closes) the connections a [`Pool`] manages.
pub trait Connector: Send + Sync + 'static {
    /// The connection type.
    type Conn: Send + 'static;
    /// What a failed connect returns.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Open a new connection. Called outside any lock, at most once per granted slot; the pool
    /// never retries a failed connect itself.
    fn connect(&self) -> impl Future<Output = Result<Self::Conn, Self::Error>> + Send;

    /// Called (synchronously) when the pool closes a connection for good (lifetime, idle,
    /// overflow, discard, retire, pool close). Default: drop it.
    fn close(&self, conn: Self::Conn, reason: CloseReason) {
        let _ = (conn, reason);
    }

    /// Called (synchronously, under the pool's lock: it must not block or wait) on an idle
    /// connection about to be handed out: is it still usable? A connection the server closed,
    /// or wrote to, while it sat idle (a terminated backend's FATAL, the server's own idle
    /// timeout) answers false: it is closed (`CloseReason::Dead`) and the next idle one, or a
    /// new one, is taken, so no client inherits what a dead connection left behind.
    /// Default: true.
    fn is_alive(&self, _conn: &mut Self::Conn) -> bool {
        true
    }

    /// Called (synchronously, outside any lock) at the start of every [`Pool::acquire`]: may a
    /// client be served at all? An error refuses the acquire at once with
    /// [`AcquireError::Connect`], without queueing (counted in `PoolStatus::refused_total`),
    /// unless the pool has an idle connection to hand out, which is then served as usual.
    ///
    /// This is how a connector whose [`Breaker`] knows the server is down refuses clients
    /// immediately ([`Breaker::refusing`]) instead of letting them wait out `acquire_timeout`
    /// for a connect that would be refused anyway. Default: always admit.
    fn admit(&self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Why the pool closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Past its (jittered) `max_lifetime`.
    Lifetime,
    /// Idle for longer than `idle_timeout`.
    Idle,
    /// Beyond `pool_size` (or beyond a shrunk capacity) and nobody waiting for it.
    Overflow,
    /// A leased connection not proven clean: discarded, or its lease dropped unreleased
    /// (the [`DiscardReason`] is counted in `PoolStatus::discarded_total`).
    Discarded,
    /// The backend budget needed the unit: another pool was starved, or the limit was lowered.
    BudgetReclaim,
    /// The pool was closed.
    PoolClosed,
    /// Opened before [`Pool::retire_all`] (the backend moved to another server).
    Retired,
    /// Found closed, or written to, by the server while it sat idle ([`Connector::is_alive`]).
    Dead,
}

impl CloseReason {
    /// A short lowercase name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Lifetime => "lifetime",
            CloseReason::Idle => "idle",
            CloseReason::Overflow => "overflow",
            CloseReason::Discarded => "discarded",
            CloseReason::BudgetReclaim => "budget_reclaim",
            CloseReason::PoolClosed => "pool_closed",
            CloseReason::Retired => "retired",
            CloseReason::Dead => "dead",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who holds a lease: plain data supplied by the caller, protocol-agnostic. Cloned on every
/// acquire (the lease record keeps one) and by the client registries, so a clone is one
/// reference count: every logged-in client has a holder, most of them idle, and the session,
/// its registry entries and its leases share that one record.
#[derive(Debug, Clone, Default)]
pub struct Holder(Arc<HolderInfo>);

/// What a [`Holder`] says.
#[derive(Debug, Default)]
pub struct HolderInfo {
    /// The client's address, "ip:port".
    pub client: Arc<str>,
    /// Who it is logged in as (read as `holder.user` and so on, through `Deref`).
    names: Arc<HolderNames>,
    /// What the holder is doing (state, last statement); shared by every clone, so a session
    /// updates it once and every lease record taken with this holder shows it.
    pub note: LeaseNote,
}

/// The names a holder logged in with: the same for the many clients of one application, so a
/// pool hands its clients one shared set ([`Holder::with_names`]), a pointer each.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HolderNames {
    /// The user it authenticated as.
    pub user: Arc<str>,
    /// The database it asked for.
    pub database: Arc<str>,
    /// Its application name (PostgreSQL `application_name`, MySQL `program_name`), if any.
    pub application: Arc<str>,
}

impl std::ops::Deref for HolderInfo {
    type Target = HolderNames;

    fn deref(&self) -> &HolderNames {
        &self.names
    }
}

impl Holder {
    /// A holder with a fresh note.
    pub fn new(
        client: Arc<str>,
        user: Arc<str>,
        database: Arc<str>,
        application: Arc<str>,
    ) -> Holder {
        let names = HolderNames {
            user,
            database,
            application,
        };
        Holder::with_names(client, Arc::new(names))
    }

    /// A holder with a fresh note and names shared with other holders.
    pub fn with_names(client: Arc<str>, names: Arc<HolderNames>) -> Holder {
        Holder(Arc::new(HolderInfo {
            client,
            names,
            note: LeaseNote::default(),
        }))
    }
}

impl std::ops::Deref for Holder {
    type Target = HolderInfo;

    fn deref(&self) -> &HolderInfo {
        &self.0
    }
}

impl PartialEq for Holder {
    /// Identity only: the note is an annotation, not part of who the holder is.
    fn eq(&self, other: &Self) -> bool {
        self.client == other.client
            && self.user == other.user
            && self.database == other.database
            && self.application == other.application
    }
}

impl Eq for Holder {}

impl fmt::Display for Holder {
    /// `127.0.0.1:50412 (app=billing, user=app)`; empty fields are left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let client = if self.client.is_empty() {
            "unknown client"
        } else {
            &self.client
        };
        f.write_str(client)?;
        let mut parts = Vec::with_capacity(2);
        if !self.application.is_empty() {
            parts.push(format!("app={}", self.application));
        }
        if !self.user.is_empty() {
            parts.push(format!("user={}", self.user));
        }
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

/// A current lease: who holds which connection since when.
#[derive(Debug, Clone)]
pub struct LeaseRecord {
    /// The lease id ([`Lease::id`]); increases with every lease the pool hands out.
    pub id: u64,
    /// Who holds it.
    pub holder: Holder,
    /// When it was handed out.
    pub since: tokio::time::Instant,
    /// Already reported as held past the leak threshold ([`Pool::take_leaks`]).
    pub leak_reported: bool,
}

/// An idle connection, as [`Pool::idle`] reports it: when it was opened and since when it has
/// waited in the pool. A copy; the connection itself stays in the pool.
#[derive(Debug, Clone, Copy)]
pub struct IdleRecord {
    /// When the connect completed.
    pub opened_at: tokio::time::Instant,
    /// When it was last returned to the pool.
    pub idle_since: tokio::time::Instant,
}
