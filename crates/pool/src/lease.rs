//! The RAII handles that carry a unit of capacity: [`Lease`] (a connection checked out to a
//! holder) and `Slot` (permission to open one).
//!
//! Invariants:
//! - A lease owns its connection until `Drop` or [`Lease::discard`], each of which hands it back
//!   to the pool exactly once (checked in, or closed and its unit released).
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
}

impl ConnMeta {
    pub(crate) fn new(created_at: Instant, generation: u64) -> Self {
        ConnMeta {
            created_at,
            jitter_draw: rand::thread_rng().gen_range(0.0..=1.0),
            generation,
            expiry: None,
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

/// A connection checked out of a [`crate::Pool`]. Dereferences to the connection; dropping it
/// returns the connection to the pool (see the crate docs for what happens then).
pub struct Lease<C: Connector> {
    /// `Some` from creation until `discard` or `Drop` takes it.
    conn: Option<C::Conn>,
    id: u64,
    meta: ConnMeta,
    expires_at: Option<Instant>,
    shared: Arc<Shared<C>>,
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
        }
    }

    /// This lease's id, as in [`crate::LeaseRecord::id`].
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The connection is broken or unusable: close it (`CloseReason::Discarded`), free its slot
    /// and budget unit, and let a waiter open a new one.
    pub fn discard(mut self) {
        if let Some(conn) = self.conn.take() {
            self.shared.discard(self.id, conn);
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
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.shared.checkin(self.id, conn, self.meta);
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
