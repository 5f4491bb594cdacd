//! The guard rules both front doors share, written once: when a session may hand its server
//! back to the pool, which of its timeouts is due next, and what the client is told when one
//! fires.
//!
//! Protocol-neutral: a session describes where it stands as a [`Phase`] (and, for a release,
//! a [`Clean`] proof built from its own protocol state); the decisions, the arithmetic and the
//! words live here and are unit-tested without a server.
//!
//! Invariants:
//! - a server goes back for reuse only in transaction mode, unpinned, when nothing asks to
//!   keep it and the proof holds ([`decide`]); the pool itself refuses a proof that does not
//!   hold ([`poolguard_pool::Lease::release`]), so a wrong decision here still fails closed;
//! - one deadline at a time, chosen by phase: a running request is timed by `query_timeout`
//!   (once: after the stop is sent nothing more is due), an open transaction by
//!   `idle_in_transaction_timeout` counted from the later of the client's last message and the
//!   server's last answer, an idle client by `client_idle_timeout`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use poolguard_pool::Clean;
use tokio::time::Instant;

use crate::config::Limits;
use crate::error::ProxyError;

/// What a session's conversation with its server looks like, for the timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A request is running on the server since `since`; `stopping`: its cancel (PostgreSQL)
    /// or KILL QUERY (MySQL) was already sent.
    Running { since: Instant, stopping: bool },
    /// The server waits for the client (COPY FROM STDIN, LOAD DATA LOCAL): not a query that
    /// runs long, and not an idle transaction either.
    ClientSending,
    /// A transaction is open and nothing runs; the server answered last at `idle_since`.
    InTransaction { idle_since: Instant },
    /// No transaction open (or no server held).
    Idle,
}

/// The timeouts a session consults on every turn of its relay, copied out of [`Limits`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub query: Option<Duration>,
    pub idle_in_transaction: Option<Duration>,
    pub client_idle: Option<Duration>,
}

impl Timeouts {
    pub fn of(limits: &Limits) -> Self {
        Timeouts {
            query: limits.query_timeout,
            idle_in_transaction: limits.idle_in_transaction_timeout,
            client_idle: limits.client_idle_timeout,
        }
    }
}

/// A pool's [`Timeouts`], stored beside its configuration and replaced with it on reload, read
/// with three relaxed loads: a session asks for its next deadline several times per
/// transaction, and loading the whole configuration each time cost more than the rest of the
/// decision.
#[derive(Debug, Default)]
pub struct SharedTimeouts([AtomicU64; 3]);

impl SharedTimeouts {
    pub fn new(limits: &Limits) -> Self {
        let t = SharedTimeouts::default();
        t.store(limits);
        t
    }

    pub fn store(&self, limits: &Limits) {
        let t = Timeouts::of(limits);
        // 0 is "none"; a duration is kept as nanoseconds + 1 (saturating: 584 years).
        let code = |d: Option<Duration>| {
            d.map_or(0, |d| {
                u64::try_from(d.as_nanos())
                    .unwrap_or(u64::MAX)
                    .saturating_add(1)
            })
        };
        for (slot, d) in self
            .0
            .iter()
            .zip([t.query, t.idle_in_transaction, t.client_idle])
        {
            slot.store(code(d), Ordering::Relaxed);
        }
    }

    pub fn load(&self) -> Timeouts {
        let get = |i: usize| match self.0[i].load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n - 1)),
        };
        Timeouts {
            query: get(0),
            idle_in_transaction: get(1),
            client_idle: get(2),
        }
    }
}

/// When the session must next look at the clock, if ever.
pub fn next_deadline(limits: Timeouts, phase: Phase, last_client: Instant) -> Option<Instant> {
    match phase {
        Phase::Running {
            since,
            stopping: false,
        } => limits.query.map(|t| since + t),
        Phase::Running { stopping: true, .. } | Phase::ClientSending => None,
        Phase::InTransaction { idle_since } => limits
            .idle_in_transaction
            .map(|t| last_client.max(idle_since) + t),
        Phase::Idle => limits.client_idle.map(|t| last_client + t),
    }
}

/// What a deadline that passed asks of the session.
#[derive(Debug)]
pub enum Due {
    /// Stop the running request (cancel / KILL QUERY); the client keeps its session.
    StopQuery { timeout: Duration },
    /// Tell the client why and close it (its transaction is rolled back by the reclaim).
    Kick(ProxyError),
}

/// What is due at `now`, if anything (a wake-up may come early or for another reason). Given
/// the same [`Timeouts`] as [`next_deadline`], so a reload between the two cannot make a
/// deadline that has passed look not yet due.
pub fn due(
    limits: Timeouts,
    phase: Phase,
    last_client: Instant,
    now: Instant,
    pool: &str,
) -> Option<Due> {
    let at = next_deadline(limits, phase, last_client)?;
    if now < at {
        return None;
    }
    match phase {
        Phase::Running { .. } => Some(Due::StopQuery {
            timeout: limits.query?,
        }),
        Phase::InTransaction { .. } => {
            let t = limits.idle_in_transaction?;
            Some(Due::Kick(ProxyError::IdleInTransaction(format!(
                "poolguard: transaction idle for more than {} (idle_in_transaction_timeout); it was rolled back and its server connection returned to pool {pool}",
                fmt_duration(t)
            ))))
        }
        Phase::Idle => {
            let t = limits.client_idle?;
            Some(Due::Kick(ProxyError::ClientIdle(format!(
                "poolguard: client idle for more than {} (client_idle_timeout)",
                fmt_duration(t)
            ))))
        }
        Phase::ClientSending => None,
    }
}

/// The warning a PostgreSQL client gets before its query is cancelled (MySQL clients see the
/// server's own "query execution was interrupted").
pub fn query_timeout_message(timeout: Duration) -> String {
    format!(
        "poolguard: query ran longer than query_timeout ({}); cancelling it",
        fmt_duration(timeout)
    )
}

/// What to do with a held server once the client's request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Keep it: session mode, a pinned client, an open transaction, a request in flight, or
    /// the door's own reason to keep it one more command.
    Keep,
    /// Hand it back now, with the proof.
    Now(Clean),
    /// Hand it back once its session state is reset (the client changed what the next client
    /// must not inherit); the reset runs off the client's path.
    AfterReset,
}

/// The release rule, for both doors. `keep`: the door wants the server one more command (the
/// MySQL door keeps it while warnings wait for SHOW WARNINGS); `reset_owed`: the client
/// changed session state that a reset must clear before anyone else gets the server.
pub fn decide(
    transaction_mode: bool,
    pinned: bool,
    keep: bool,
    proof: Clean,
    reset_owed: bool,
) -> Release {
    if !transaction_mode || pinned || keep || !proof.holds() {
        Release::Keep
    } else if reset_owed {
        Release::AfterReset
    } else {
        Release::Now(proof)
    }
}

pub fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: Clean = Clean {
        idle: true,
        no_transaction: true,
        nothing_owed: true,
        in_step: true,
    };

    fn limits() -> Limits {
        Limits {
            query_timeout: Some(Duration::from_secs(5)),
            idle_in_transaction_timeout: Some(Duration::from_secs(60)),
            client_idle_timeout: Some(Duration::from_secs(600)),
            ..Limits::default()
        }
    }

    #[test]
    fn only_a_clean_unpinned_transaction_mode_server_goes_back() {
        assert_eq!(
            decide(true, false, false, CLEAN, false),
            Release::Now(CLEAN)
        );
        assert_eq!(decide(true, false, false, CLEAN, true), Release::AfterReset);
        assert_eq!(decide(false, false, false, CLEAN, false), Release::Keep);
        assert_eq!(decide(true, true, false, CLEAN, false), Release::Keep);
        assert_eq!(decide(true, false, true, CLEAN, false), Release::Keep);
        for dirty in [
            Clean {
                idle: false,
                ..CLEAN
            },
            Clean {
                no_transaction: false,
                ..CLEAN
            },
            Clean {
                nothing_owed: false,
                ..CLEAN
            },
            Clean {
                in_step: false,
                ..CLEAN
            },
        ] {
            assert_eq!(decide(true, false, false, dirty, false), Release::Keep);
            assert_eq!(decide(true, false, false, dirty, true), Release::Keep);
        }
    }

    #[test]
    fn one_deadline_per_phase() {
        // Through the shared copy a pool keeps: what a session reads.
        let l = SharedTimeouts::new(&limits()).load();
        assert_eq!(l, Timeouts::of(&limits()));
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let running = Phase::Running {
            since: t0,
            stopping: false,
        };
        assert_eq!(next_deadline(l, running, t0), Some(t0 + s(5)));
        let stopping = Phase::Running {
            since: t0,
            stopping: true,
        };
        assert_eq!(next_deadline(l, stopping, t0), None, "stopped once");
        assert_eq!(next_deadline(l, Phase::ClientSending, t0), None);
        // Counted from the later of the client's last message and the server's last answer.
        let tx = Phase::InTransaction {
            idle_since: t0 + s(10),
        };
        assert_eq!(next_deadline(l, tx, t0), Some(t0 + s(70)));
        assert_eq!(next_deadline(l, tx, t0 + s(20)), Some(t0 + s(80)));
        assert_eq!(next_deadline(l, Phase::Idle, t0), Some(t0 + s(600)));
        let off = Limits {
            query_timeout: None,
            idle_in_transaction_timeout: None,
            client_idle_timeout: None,
            ..limits()
        };
        let shared = SharedTimeouts::new(&limits());
        shared.store(&off);
        for phase in [running, tx, Phase::Idle] {
            assert_eq!(next_deadline(shared.load(), phase, t0), None);
        }
    }

    #[test]
    fn what_is_due_and_what_the_client_is_told() {
        let l = limits();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let running = Phase::Running {
            since: t0,
            stopping: false,
        };
        assert!(
            due(Timeouts::of(&l), running, t0, t0 + s(4), "db/u").is_none(),
            "early"
        );
        assert!(matches!(
            due(Timeouts::of(&l), running, t0, t0 + s(5), "db/u"),
            Some(Due::StopQuery { timeout }) if timeout == s(5)
        ));
        let tx = Phase::InTransaction { idle_since: t0 };
        match due(Timeouts::of(&l), tx, t0, t0 + s(60), "db/u") {
            Some(Due::Kick(e @ ProxyError::IdleInTransaction(_))) => {
                assert_eq!(e.sqlstate(), "25P03");
                assert!(
                    e.to_string().contains("1m (idle_in_transaction_timeout)"),
                    "{e}"
                );
                assert!(e.to_string().contains("pool db/u"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        match due(Timeouts::of(&l), Phase::Idle, t0, t0 + s(600), "db/u") {
            Some(Due::Kick(e @ ProxyError::ClientIdle(_))) => {
                assert!(e.to_string().contains("10m (client_idle_timeout)"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            query_timeout_message(s(5)),
            "poolguard: query ran longer than query_timeout (5s); cancelling it"
        );
    }
}
