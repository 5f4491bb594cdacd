//! The RAII handles that carry a unit of capacity: [`Lease`] (a connection checked out to a
//! holder) and `Slot` (permission to open one).
//!
//! Invariants:
//! - A lease owns its connection until [`Lease::release`], [`Lease::discard`] or `Drop`, each
//!   of which hands it back to the pool exactly once.
//! - Only [`Lease::release`] with a [`Clean`] proof that holds puts the connection back for
//!   reuse. `Drop` runs on every path, the panicking and the forgotten ones included, so it does
//!   the safe thing: it closes the connection (the server rolls back whatever was open) and
//!   counts why ([`DiscardReason::Dropped`], or [`DiscardReason::Panicked`] while unwinding).
//! - A slot that is dropped without becoming a lease (connect failed, acquire cancelled, waiter
//!   gone) gives its unit back to the pool and the budget; a slot that becomes a lease is
//!   disarmed first, so its unit is transferred, never released twice.
//! - Both hold an `Arc` of the pool's shared state, so they stay valid after every `Pool` handle
//!   is gone; closing then happens as they come back.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::config::PoolConfig;
use crate::inner::Shared;
use crate::{Connector, Holder};

/// When a connection was made and its jitter draw; its expiry follows from the current config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnMeta {
    pub(crate) created_at: Instant,
    /// Uniform in `[0, 1]`: the fraction of the configured jitter this connection gets.
    jitter_draw: f64,
    /// The pool's generation when the connect was granted; an older one than the pool's is
    /// retired (`Pool::retire_all`), so a connect already under way to the old server is too.
    pub(crate) generation: u64,
    /// [`Self::expires_at`] as last computed, and the pool's config epoch it was computed
    /// for: checked on every checkout and check-in, recomputed only after a config change.
    expiry: Option<(u64, Option<Instant>)>,
    /// The thread that made the connection: its socket is registered with that thread's
    /// event loop, so a holder on the same thread is woken without crossing threads.
    pub(crate) home: std::thread::ThreadId,
}

impl ConnMeta {
    pub(crate) fn new(created_at: Instant, generation: u64) -> Self {
        ConnMeta {
            created_at,
            jitter_draw: rand::thread_rng().gen_range(0.0..=1.0),
            generation,
            expiry: None,
            home: std::thread::current().id(),
        }
    }

    /// [`Self::expires_at`] under `config`, whose epoch (bumped by every change of the pool's
    /// config) is `epoch`; computed once per epoch.
    pub(crate) fn expiry(&mut self, config: &PoolConfig, epoch: u64) -> Option<Instant> {
        match self.expiry {
            Some((at_epoch, at)) if at_epoch == epoch => at,
            _ => {
                let at = self.expires_at(config);
                self.expiry = Some((epoch, at));
                at
            }
        }
    }

    /// `created_at + max_lifetime * (1 - draw * jitter)`; `None` when lifetimes are off (or the
    /// instant is out of range, which is as good as never).
    pub(crate) fn expires_at(&self, config: &PoolConfig) -> Option<Instant> {
        let lifetime = config.max_lifetime?;
        // The factor is in [0, 0.5], so the cut is at most half the lifetime. Computed in
        // float nanoseconds: `Duration::mul_f64` goes through a checked seconds conversion
        // (and `as_nanos` through 128-bit arithmetic) that cost more than the rest of a
        // checkout, and this runs on every one.
        let factor = self.jitter_draw * config.effective_jitter();
        let cut = (lifetime.as_secs_f64() * factor * 1e9) as u64;
        let shortened = lifetime.saturating_sub(Duration::from_nanos(cut));
        self.created_at.checked_add(shortened)
    }

    pub(crate) fn is_expired(&mut self, config: &PoolConfig, epoch: u64, now: Instant) -> bool {
        self.expiry(config, epoch).is_some_and(|at| now >= at)
    }
}

/// What a holder checked before handing a connection back for reuse: the one door back into
/// the pool ([`Lease::release`]). Every field must be true; the protocol layer that fills it in
/// decides what each means for its wire protocol, the pool only refuses a proof that does not
/// hold. Built field by field on purpose: there is no constructor that proves everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Clean {
    /// No request is unanswered and nothing unread is buffered from the server.
    pub idle: bool,
    /// The server reported no open transaction (nor a failed one) last.
    pub no_transaction: bool,
    /// Nothing is owed to or from the server: no COPY, no unsynced extended-protocol batch,
    /// no LOAD DATA transfer, no long data, no reset still to run.
    pub nothing_owed: bool,
    /// Both directions are at a message boundary (no half-relayed message either way).
    pub in_step: bool,
}

impl Clean {
    /// Every check passed.
    pub fn holds(&self) -> bool {
        self.idle && self.no_transaction && self.nothing_owed && self.in_step
    }
}

/// Why a leased connection was closed instead of reused. Counted per pool
/// (`PoolStatus::discarded_total`); each has a stable label ([`DiscardReason::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscardReason {
    /// The lease was dropped without a release or a discard: an early return, a cancelled
    /// task, a branch that forgot it. Closed, never reused: its state was never proven.
    Dropped,
    /// The lease was dropped while its task unwound from a panic.
    Panicked,
    /// [`Lease::release`] was called with a proof that did not hold.
    Unproven,
    /// The holder found the connection broken: the server went away, an I/O error, a
    /// protocol message out of place.
    Broken,
    /// The client left work that must not be finished on its behalf (an unsynced batch, a
    /// COPY or LOAD DATA transfer, long data): closing lets the server abort it.
    Unfinished,
    /// Bringing it back to a clean state (rollback, reset) failed or did not finish in time.
    CleanupFailed,
}

impl DiscardReason {
    /// How many reasons there are (the length of `PoolStatus::discarded_total`).
    pub const COUNT: usize = 6;
    /// Every reason, in index order.
    pub const ALL: [DiscardReason; Self::COUNT] = [
        DiscardReason::Dropped,
        DiscardReason::Panicked,
        DiscardReason::Unproven,
        DiscardReason::Broken,
        DiscardReason::Unfinished,
        DiscardReason::CleanupFailed,
    ];

    /// Its position in [`Self::ALL`] and in `PoolStatus::discarded_total`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// A short lowercase name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DiscardReason::Dropped => "dropped",
            DiscardReason::Panicked => "panicked",
            DiscardReason::Unproven => "unproven",
            DiscardReason::Broken => "broken",
            DiscardReason::Unfinished => "unfinished",
            DiscardReason::CleanupFailed => "cleanup_failed",
        }
    }
}

impl fmt::Display for DiscardReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connection checked out of a [`crate::Pool`]. Dereferences to the connection. It goes back
/// for reuse only through [`Lease::release`]; dropped, it is closed (see the module docs).
pub struct Lease<C: Connector> {
    /// `Some` from creation until `discard` or `Drop` takes it.
    conn: Option<C::Conn>,
    id: u64,
    meta: ConnMeta,
    expires_at: Option<Instant>,
    shared: Arc<Shared<C>>,
    /// Sent to a waiter and not yet received: no holder has seen the connection, which was
    /// idle in the pool a moment ago, so a waiter that gave up lets it go back unused.
    in_transit: bool,
}

impl<C: Connector> Lease<C> {
    pub(crate) fn new(
        shared: Arc<Shared<C>>,
        id: u64,
        conn: C::Conn,
        meta: ConnMeta,
        expires_at: Option<Instant>,
    ) -> Self {
        Lease {
            conn: Some(conn),
            id,
            meta,
            expires_at,
            shared,
            in_transit: false,
        }
    }

    /// The dispatch sends this lease (made from an idle connection) to a waiter.
    pub(crate) fn send_to_waiter(mut self) -> Self {
        self.in_transit = true;
        self
    }

    /// The waiter received it: from now on it belongs to a holder.
    pub(crate) fn received(mut self) -> Self {
        self.in_transit = false;
        self
    }

    /// This lease's id, as in [`crate::LeaseRecord::id`].
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Hands the connection back for reuse, if `proof` holds; otherwise closes it
    /// ([`DiscardReason::Unproven`]). Returns whether it went back for reuse.
    pub fn release(mut self, proof: Clean) -> bool {
        let Some(conn) = self.conn.take() else {
            return false;
        };
        if proof.holds() {
            self.shared.checkin(self.id, conn, self.meta);
            true
        } else {
            tracing::warn!(pool = %self.shared.name, ?proof, "server connection released without proof that it is clean; closing it");
            self.shared.discard(self.id, conn, DiscardReason::Unproven);
            false
        }
    }

    /// The connection must not be reused: close it (`CloseReason::Discarded`, counted under
    /// `why`), free its slot and budget unit, and let a waiter open a new one.
    pub fn discard(mut self, why: DiscardReason) {
        if let Some(conn) = self.conn.take() {
            self.shared.discard(self.id, conn, why);
        }
    }

    /// When the server connection was opened.
    pub fn created_at(&self) -> Instant {
        self.meta.created_at
    }

    /// When the connection passes its jittered lifetime (as configured at checkout).
    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }

    /// Past its jittered lifetime: it will be closed, not reused, when returned.
    pub fn is_expired(&self) -> bool {
        self.expires_at.is_some_and(|at| Instant::now() >= at)
    }
}

impl<C: Connector> Deref for Lease<C> {
    type Target = C::Conn;

    fn deref(&self) -> &C::Conn {
        match &self.conn {
            Some(conn) => conn,
            // Only `discard` (which consumes the lease) and `Drop` take the connection, so no
            // live lease can be without one.
            None => unreachable!("a live lease always holds its connection"),
        }
    }
}

impl<C: Connector> DerefMut for Lease<C> {
    fn deref_mut(&mut self) -> &mut C::Conn {
        match &mut self.conn {
            Some(conn) => conn,
            // As in `deref`.
            None => unreachable!("a live lease always holds its connection"),
        }
    }
}

impl<C: Connector> Drop for Lease<C> {
    /// Neither released nor discarded: nothing proves the connection clean, so it is closed.
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.in_transit {
                // Never handed to a holder (its waiter gave up): as clean as when it was idle.
                self.shared.checkin(self.id, conn, self.meta);
                return;
            }
            let why = if std::thread::panicking() {
                DiscardReason::Panicked
            } else {
                DiscardReason::Dropped
            };
            tracing::warn!(pool = %self.shared.name, reason = %why, "server connection dropped without a clean release; closing it");
            self.shared.discard(self.id, conn, why);
        }
    }
}

impl<C: Connector> fmt::Debug for Lease<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("pool", &&*self.shared.name)
            .field("id", &self.id)
            .field("created_at", &self.meta.created_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Permission to open one connection: a unit of the pool and of the budget, already counted
/// as `connecting` (and in its holder's fair share). Dropped unused, it gives the unit back.
pub(crate) struct Slot<C: Connector> {
    shared: Arc<Shared<C>>,
    /// `Some` until the slot becomes a lease or is dropped.
    holder: Option<Holder>,
    generation: u64,
}

impl<C: Connector> Slot<C> {
    /// Only the pool creates slots, after counting the unit under its lock.
    pub(crate) fn new(shared: Arc<Shared<C>>, holder: Holder, generation: u64) -> Self {
        Slot {
            shared,
            holder: Some(holder),
            generation,
        }
    }

    /// The connect succeeded: turn the unit into a lease. `None` if the pool was closed
    /// meanwhile (the connection is then closed and the unit released).
    pub(crate) fn connected(mut self, conn: C::Conn) -> Option<Lease<C>> {
        let holder = self.holder.take()?;
        self.shared.slot_connected(conn, holder, self.generation)
    }
}

impl<C: Connector> Drop for Slot<C> {
    fn drop(&mut self) {
        if let Some(holder) = self.holder.take() {
            self.shared.slot_abandoned(&holder);
        }
    }
}
