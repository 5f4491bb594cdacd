//! What an acquire can fail with. Messages are one line and say which limit was hit, the
//! current numbers and who holds the connections, so an operator can act on them directly.

use std::fmt;
use std::time::Duration;

use crate::{Holder, ShareKey};

/// Why [`crate::Pool::acquire`] did not return a lease.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError<E> {
    /// The deadline passed before a connection or a slot to open one became free.
    #[error(
        "pool {pool} exhausted: waited {}; {in_use} of {cap} server connections in use \
         (pool_size {size} + max_overflow {overflow}), backend budget {budget_limit} with \
         {budget_in_use} in use, {waiters} {} waiting; oldest holders: {}{}",
        HumanDuration(*.waited),
        if *.waiters == 1 { "client" } else { "clients" },
        OldestHolders(.oldest),
        PassedOver(.over_share)
    )]
    Timeout {
        /// The pool's name.
        pool: String,
        /// How long the acquire waited (its whole deadline).
        waited: Duration,
        /// Units this pool holds: open connections plus those being opened.
        in_use: usize,
        /// `size + max_overflow`.
        cap: usize,
        /// `pool_size`.
        size: usize,
        /// `max_overflow`.
        overflow: usize,
        /// The backend budget's limit.
        budget_limit: usize,
        /// Units in use across the backend.
        budget_in_use: usize,
        /// Other acquires still waiting on this pool.
        waiters: usize,
        /// Up to three oldest leases of this pool, with how long each has been held.
        oldest: Vec<(Holder, Duration)>,
        /// Set when this acquire was passed over for its fair share: its key held too many
        /// connections while clients of other keys waited, and they were served first.
        over_share: Option<OverShare>,
    },
    /// `max_waiters` acquires were already waiting: refused at once instead of queueing.
    #[error(
        "pool {pool} has {waiters} {} waiting, the most its max_waiters ({max}) allows; \
         refused at once instead of queueing: retry later, or raise max_waiters or pool_size \
         if this load is expected",
        if *.waiters == 1 { "client" } else { "clients" }
    )]
    TooManyWaiters {
        /// The pool's name.
        pool: String,
        /// Acquires waiting when this one arrived.
        waiters: usize,
        /// The pool's `max_waiters`.
        max: usize,
    },
    /// A connect attempt failed; its slot and budget unit were released. Not retried.
    #[error("could not open a server connection: {0}")]
    Connect(E),
    /// The pool is closed (reload removed it, or shutdown).
    #[error("pool is closed")]
    Closed,
}

impl<E> AcquireError<E> {
    /// True for [`AcquireError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, AcquireError::Timeout { .. })
    }
}

/// Why an acquire was passed over: its key was at or above its fair share while clients of
/// other keys waited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverShare {
    /// How keys were formed.
    pub by: ShareKey,
    /// This client's key (an application name or an address).
    pub key: String,
    /// Connections that key held when this client was passed over.
    pub held: usize,
    /// The fair share (`FairShare::max`).
    pub max: usize,
}

impl fmt::Display for OverShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} '{}' held {} connections (fair share {}) while other clients waited, so they \
             were served first",
            self.by, self.key, self.held, self.max
        )
    }
}

/// `; passed over: <why>`, or nothing.
struct PassedOver<'a>(&'a Option<OverShare>);

impl fmt::Display for PassedOver<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(over) => write!(f, "; this client was passed over: {over}"),
            None => Ok(()),
        }
    }
}

/// `250ms`, `5s`, `1.5s`, `42s`: durations as an operator reads them.
pub(crate) struct HumanDuration(pub(crate) Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms < 1000 {
            write!(f, "{ms}ms")
        } else if self.0.subsec_millis() == 0 {
            write!(f, "{}s", self.0.as_secs())
        } else {
            write!(f, "{:.1}s", self.0.as_secs_f64())
        }
    }
}

/// `a (app=x, user=y) for 42s, b (...) for 3s`, or a note when this pool holds none.
struct OldestHolders<'a>(&'a [(Holder, Duration)]);

impl fmt::Display for OldestHolders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none in this pool");
        }
        for (i, (holder, held)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{holder} for {}", HumanDuration(*held))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::HumanDuration;
    use std::time::Duration;

    #[test]
    fn durations_read_like_an_operator_writes_them() {
        let show = |d: Duration| HumanDuration(d).to_string();
        assert_eq!(show(Duration::from_millis(250)), "250ms");
        assert_eq!(show(Duration::from_secs(5)), "5s");
        assert_eq!(show(Duration::from_millis(1500)), "1.5s");
        assert_eq!(show(Duration::from_secs(42)), "42s");
    }
}
