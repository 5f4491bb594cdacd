//! Pool settings ([`PoolConfig`], and [`Admission`]: the waiter cap and fair shares) and the
//! point-in-time snapshot ([`PoolStatus`]).
//!
//! Settings can change at run time ([`crate::Pool::set_config`]); the pool reads them under its
//! lock at each decision, so nothing caches a stale value. The pool's name is fixed at creation.
//! `Admission` is separate from `PoolConfig` because callers build `PoolConfig` field by field.

use std::time::Duration;

/// How one pool behaves. Defaults follow the config contract's `[limits]` examples.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// The pool's name in messages and metrics, e.g. "bank/app" (database/user).
    pub name: String,
    /// `pool_size`: connections kept open when idle.
    pub size: usize,
    /// `max_overflow`: extra connections beyond `size` while busy; closed on return when nobody
    /// waits (SQLAlchemy semantics).
    pub max_overflow: usize,
    /// `acquire_timeout`: one deadline for the whole acquire (waiting plus connecting).
    pub acquire_timeout: Duration,
    /// `max_lifetime`: a connection older than this (less its jitter) is closed, not reused.
    pub max_lifetime: Option<Duration>,
    /// 0.0..=0.5 (clamped): each connection's lifetime is shortened by a random fraction in
    /// `[0, jitter]`, so connections opened together do not all expire together.
    pub lifetime_jitter: f64,
    /// `idle_timeout`: an idle connection unused for this long is closed by [`crate::Pool::reap`].
    pub idle_timeout: Option<Duration>,
}

impl PoolConfig {
    /// Largest jitter accepted; larger values are clamped to it.
    pub const MAX_JITTER: f64 = 0.5;

    /// `size + max_overflow`: the most units (open or connecting) this pool may hold.
    pub fn cap(&self) -> usize {
        self.size.saturating_add(self.max_overflow)
    }

    /// The jitter actually applied: clamped to `0.0..=0.5`, and 0 when not a number.
    pub fn effective_jitter(&self) -> f64 {
        if self.lifetime_jitter.is_finite() {
            self.lifetime_jitter.clamp(0.0, Self::MAX_JITTER)
        } else {
            0.0
        }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            name: "pool".to_owned(),
            size: 10,
            max_overflow: 5,
            acquire_timeout: Duration::from_secs(5),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            lifetime_jitter: 0.1,
            idle_timeout: Some(Duration::from_secs(10 * 60)),
        }
    }
}

/// Who may queue for a pool and how its leases are shared among clients. Kept apart from
/// [`PoolConfig`] (set with [`crate::Pool::set_admission`]) so that code building a
/// `PoolConfig` field by field keeps compiling. Default: no cap, no fair share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// `max_waiters`: the most acquires that may wait at once (a paused pool's queue counts
    /// too); one more fails at once with [`crate::AcquireError::TooManyWaiters`]. `None`: no cap.
    pub max_waiters: Option<usize>,
    /// Keep one application or address from holding every connection while others wait.
    pub fair_share: Option<FairShare>,
}

/// One key (application or client address) may hold at most `max` of the pool's connections
/// *while clients with other keys are waiting*. When nobody else waits it may take more (the
/// pool never leaves a connection unused to enforce a share), unless the share is `strict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FairShare {
    /// What makes two clients "the same" for their share.
    pub by: ShareKey,
    /// Connections one key may hold (leased, or being opened for it) before waiters of other
    /// keys go first.
    pub max: usize,
    /// Never more than `max` for one key, even when nobody else waits. A lenient share only
    /// reorders the queue, so a key that took every connection while the pool was quiet and
    /// never gives them back (a leak) still starves the clients that come later; a strict share
    /// keeps `size - max` connections out of any one key's reach.
    pub strict: bool,
}

/// How clients are grouped for a [`FairShare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareKey {
    /// [`crate::Holder::application`] (empty names are one group).
    Application,
    /// The IP address of [`crate::Holder::client`], without the port.
    Address,
}

impl ShareKey {
    /// `application` or `address`, for messages and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ShareKey::Application => "application",
            ShareKey::Address => "address",
        }
    }

    /// The holder's key: its application name, or its client address without the port
    /// (`127.0.0.1:54321` -> `127.0.0.1`, `[::1]:5432` -> `::1`; no port: as it is).
    pub fn of(self, holder: &crate::Holder) -> &str {
        match self {
            ShareKey::Application => &holder.application,
            ShareKey::Address => strip_port(&holder.client),
        }
    }
}

impl std::fmt::Display for ShareKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn strip_port(client: &str) -> &str {
    if let Some(bracketed) = client.strip_prefix('[') {
        // `[v6]:port` (or a bare `[v6]`).
        return bracketed.split(']').next().unwrap_or(bracketed);
    }
    match client.split_once(':') {
        // Exactly one colon: `v4:port` or `host:port`. More than one: a bare IPv6 address.
        Some((host, port)) if !port.contains(':') => host,
        _ => client,
    }
}

/// A snapshot of one pool, taken under its lock (counts) and from atomics (totals).
#[derive(Debug, Clone)]
pub struct PoolStatus {
    /// The pool's name.
    pub name: String,
    /// Open server connections: `idle + in_use`.
    pub open: usize,
    /// Open and not leased.
    pub idle: usize,
    /// Leased to a client.
    pub in_use: usize,
    /// Being opened right now (each holds a unit of the pool and of the budget).
    pub connecting: usize,
    /// Acquires waiting for a connection.
    pub waiters: usize,
    /// Paused ([`crate::Pool::pause`]): waiters queue but are not served.
    pub paused: bool,
    /// How long the longest-waiting acquire has waited.
    pub oldest_wait: Option<Duration>,
    /// `size + max_overflow`.
    pub cap: usize,
    /// `pool_size`.
    pub size: usize,
    /// The backend budget's current limit.
    pub budget_limit: usize,
    /// Units in use across every pool on the backend.
    pub budget_in_use: usize,
    /// Successful acquires (monotonic).
    pub acquired_total: u64,
    /// Acquires that hit their deadline (monotonic).
    pub timeouts_total: u64,
    /// Connections opened (successful connects, monotonic).
    pub connects_total: u64,
    /// Connect attempts that failed (monotonic).
    pub connect_errors_total: u64,
    /// Connections closed, for any reason (monotonic).
    pub closed_total: u64,
    /// Leased connections closed instead of reused, per reason: index with
    /// [`crate::DiscardReason::index`], names in [`crate::DiscardReason::ALL`] (monotonic).
    pub discarded_total: [u64; crate::DiscardReason::COUNT],
    /// Leases reported as held past the leak threshold (monotonic).
    pub leaks_total: u64,
    /// Acquires refused at once because [`crate::Connector::admit`] said no and no connection
    /// was idle (monotonic).
    pub refused_total: u64,
    /// Acquires refused at once because `max_waiters` were already waiting (monotonic).
    pub rejected_waiters_total: u64,
    /// Acquire waits: cumulative counts per [`crate::WAIT_BUCKETS`] bound, then `+Inf`.
    pub acquire_wait_buckets: Vec<u64>,
    /// Sum of all acquire waits, in seconds.
    pub acquire_wait_sum: f64,
}

#[cfg(test)]
mod tests {
    use super::ShareKey;
    use crate::Holder;

    #[test]
    fn address_key_strips_the_port() {
        let key = |client: &str| {
            let holder = Holder::new(client.into(), "".into(), "".into(), "".into());
            ShareKey::Address.of(&holder).to_owned()
        };
        assert_eq!(key("127.0.0.1:54321"), "127.0.0.1");
        assert_eq!(key("[::1]:5432"), "::1");
        assert_eq!(key("10.0.0.7"), "10.0.0.7");
        assert_eq!(key("fe80::1"), "fe80::1");
        assert_eq!(key(""), "");
    }
}
