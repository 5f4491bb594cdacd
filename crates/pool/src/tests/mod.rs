//! Pool tests on a paused clock, against a fake connector that counts what the "server" sees.
//!
//! `FakeStats::live` is the server's view: connections open or being opened. It is decremented
//! by the connection's own `Drop`, so a leaked unit shows up even if nobody calls `close`.

mod breaker;
mod budget;
mod caps;
mod control;
mod footprint;
mod home;
mod hygiene;
mod keeper;
mod leaks;
mod shares;
mod stress;
mod waiters;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{CloseReason, Connector, Holder, Lease, PoolConfig};

#[derive(Debug, thiserror::Error)]
#[error("fake connect failure")]
pub(crate) struct FakeError;

#[derive(Default)]
pub(crate) struct FakeStats {
    attempts: AtomicUsize,
    live: AtomicUsize,
    max_live: AtomicUsize,
    fail_next: AtomicUsize,
    delay_ms: AtomicU64,
    next_id: AtomicUsize,
    closes: Mutex<Vec<CloseReason>>,
    /// `admit` refuses while set (a breaker that knows the server is down).
    refusing: AtomicBool,
}

/// A connector whose clones share one set of stats (one "server").
#[derive(Clone, Default)]
pub(crate) struct Fake {
    stats: Arc<FakeStats>,
}

impl Fake {
    pub(crate) fn new() -> Self {
        Fake::default()
    }

    /// Each connect takes this long (on the paused clock).
    pub(crate) fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap();
        self.stats.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// `admit` refuses (true) or admits (false) from now on.
    pub(crate) fn set_refusing(&self, refusing: bool) {
        self.stats.refusing.store(refusing, Ordering::SeqCst);
    }

    /// The next `n` connects fail.
    pub(crate) fn fail_next(&self, n: usize) {
        self.stats.fail_next.store(n, Ordering::SeqCst);
    }

    pub(crate) fn attempts(&self) -> usize {
        self.stats.attempts.load(Ordering::SeqCst)
    }

    pub(crate) fn live(&self) -> usize {
        self.stats.live.load(Ordering::SeqCst)
    }

    pub(crate) fn max_live(&self) -> usize {
        self.stats.max_live.load(Ordering::SeqCst)
    }

    pub(crate) fn closes(&self) -> Vec<CloseReason> {
        self.stats.closes.lock().unwrap().clone()
    }

    pub(crate) fn closed(&self, reason: CloseReason) -> usize {
        self.closes().iter().filter(|r| **r == reason).count()
    }
}

/// Counts one server connection for as long as it lives.
struct Live(Arc<FakeStats>);

impl Live {
    fn new(stats: Arc<FakeStats>) -> Self {
        let now = stats.live.fetch_add(1, Ordering::SeqCst) + 1;
        stats.max_live.fetch_max(now, Ordering::SeqCst);
        Live(stats)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) struct FakeConn {
    pub(crate) id: usize,
    _live: Live,
}

impl Connector for Fake {
    type Conn = FakeConn;
    type Error = FakeError;

    fn connect(&self) -> impl Future<Output = Result<FakeConn, FakeError>> + Send {
        let stats = Arc::clone(&self.stats);
        async move {
            stats.attempts.fetch_add(1, Ordering::SeqCst);
            // Counted from the start: the server sees a connection being set up.
            let live = Live::new(Arc::clone(&stats));
            let delay = stats.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let failed = stats
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failed {
                return Err(FakeError);
            }
            let id = stats.next_id.fetch_add(1, Ordering::SeqCst);
            Ok(FakeConn { id, _live: live })
        }
    }

    fn close(&self, conn: FakeConn, reason: CloseReason) {
        self.stats.closes.lock().unwrap().push(reason);
        drop(conn);
    }

    fn admit(&self) -> Result<(), FakeError> {
        if self.stats.refusing.load(Ordering::SeqCst) {
            Err(FakeError)
        } else {
            Ok(())
        }
    }
}

/// A config with no lifetime, no idle timeout, no jitter and a 5 s acquire timeout.
pub(crate) fn cfg(name: &str, size: usize, max_overflow: usize) -> PoolConfig {
    PoolConfig {
        name: name.to_owned(),
        size,
        max_overflow,
        acquire_timeout: Duration::from_secs(5),
        max_lifetime: None,
        lifetime_jitter: 0.0,
        idle_timeout: None,
    }
}

pub(crate) fn holder(client: &str) -> Holder {
    Holder::new(
        client.to_owned().into(),
        "app".to_owned().into(),
        "bank".to_owned().into(),
        String::new().into(),
    )
}

/// Let spawned tasks run until they block, without moving the clock.
pub(crate) async fn settle() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

/// Which server connection a lease holds.
pub(crate) fn conn_id(lease: &Lease<Fake>) -> usize {
    let conn: &FakeConn = lease;
    conn.id
}

/// What a spawned acquire returns.
pub(crate) type Acquired = Result<Lease<Fake>, crate::AcquireError<FakeError>>;

/// Start an acquire for `who` in its own task and let it queue (or be served) before returning.
pub(crate) async fn spawn_acquire(
    pool: &crate::Pool<Fake>,
    who: Holder,
) -> tokio::task::JoinHandle<Acquired> {
    let pool = pool.clone();
    let task = tokio::spawn(async move { pool.acquire(who).await });
    settle().await;
    task
}

/// Hands leases back for reuse, as a holder that checked them clean does (dropping a lease
/// closes its connection: see `fail_closed` in `caps.rs`).
pub(crate) trait GiveBack {
    fn give_back(self);
}

/// What a holder that checked everything states.
pub(crate) const PROVEN: crate::Clean = crate::Clean {
    idle: true,
    no_transaction: true,
    nothing_owed: true,
    in_step: true,
};

impl<C: Connector> GiveBack for Lease<C> {
    fn give_back(self) {
        let _ = self.release(PROVEN);
    }
}

impl<T: GiveBack> GiveBack for Option<T> {
    fn give_back(self) {
        if let Some(t) = self {
            t.give_back();
        }
    }
}

impl<T: GiveBack> GiveBack for Vec<T> {
    fn give_back(self) {
        self.into_iter().for_each(GiveBack::give_back);
    }
}

impl<A: GiveBack, B: GiveBack> GiveBack for (A, B) {
    fn give_back(self) {
        self.0.give_back();
        self.1.give_back();
    }
}

/// Leases back for reuse (the tests' spelling of "the holder is done and the server is clean").
pub(crate) fn back(x: impl GiveBack) {
    x.give_back();
}

impl<T: GiveBack, const N: usize> GiveBack for [T; N] {
    fn give_back(self) {
        self.into_iter().for_each(GiveBack::give_back);
    }
}

/// A lease's connection id, the lease then handed back clean (waiter tasks report ids).
pub(crate) fn id_back(lease: Lease<Fake>) -> usize {
    let id = conn_id(&lease);
    back(lease);
    id
}
