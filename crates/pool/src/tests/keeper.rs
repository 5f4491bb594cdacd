//! The timekeeper: one task per pool times the waiters out. A waiter with an earlier deadline
//! than the one it is armed for (a lowered timeout) is still timed exactly, and so are waiters
//! whose deadlines restart at a resume; it ends once nobody waits, or the pool is closed or
//! gone, and the next waiter starts another; one dropped with its runtime while others wait
//! carries on on a thread of its own.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{advance, Instant};

use super::{back, cfg, holder, settle, spawn_acquire, Acquired, Fake};
use crate::{AcquireError, Budget, Lease, Pool, PoolConfig};

const SECOND: Duration = Duration::from_secs(1);

fn waited(err: &AcquireError<super::FakeError>) -> Duration {
    match err {
        AcquireError::Timeout { waited, .. } => *waited,
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_waiter_with_a_shorter_timeout_than_those_before_it_is_timed_exactly() {
    let pool = Pool::new(cfg("db/u", 1, 0), Fake::new(), Budget::new(10));
    let held = pool.acquire(holder("a:1")).await.unwrap();
    let start = Instant::now();
    let patient = spawn_acquire(&pool, holder("w:1")).await; // the timekeeper arms for 5 s
    pool.set_config(PoolConfig {
        acquire_timeout: SECOND,
        ..cfg("db/u", 1, 0)
    });
    let hasty = spawn_acquire(&pool, holder("w:2")).await;
    advance(SECOND).await;
    settle().await;
    assert!(
        hasty.is_finished(),
        "timed at its own 1 s, not the armed 5 s"
    );
    assert_eq!(waited(&hasty.await.unwrap().unwrap_err()), SECOND);
    assert!(!patient.is_finished(), "the first waiter keeps its 5 s");
    advance(4 * SECOND).await;
    assert_eq!(waited(&patient.await.unwrap().unwrap_err()), 5 * SECOND);
    assert_eq!(start.elapsed(), 5 * SECOND);
    assert_eq!(pool.status().timeouts_total, 2);
    back(held);
}

#[tokio::test(start_paused = true)]
async fn the_timekeeper_ends_when_nobody_waits_and_the_next_waiter_starts_another() {
    let pool = Pool::new(cfg("db/u", 1, 0), Fake::new(), Budget::new(10));
    assert!(!pool.keeper_running(), "nobody has waited yet");
    let held = pool.acquire(holder("a:1")).await.unwrap();
    let waiter = spawn_acquire(&pool, holder("w:1")).await;
    assert!(pool.keeper_running());
    advance(5 * SECOND).await;
    waiter.await.unwrap().unwrap_err();
    // Two passes that find nobody, a linger (the 5 s timeout) apart.
    advance(5 * SECOND).await;
    settle().await;
    advance(5 * SECOND).await;
    settle().await;
    assert!(
        !pool.keeper_running(),
        "ended after a linger with nobody waiting"
    );
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        0,
        "its task is gone"
    );

    let start = Instant::now();
    let waiter = spawn_acquire(&pool, holder("w:2")).await;
    assert!(pool.keeper_running(), "started again by the next waiter");
    advance(5 * SECOND).await;
    assert_eq!(waited(&waiter.await.unwrap().unwrap_err()), 5 * SECOND);
    assert_eq!(start.elapsed(), 5 * SECOND);
    back(held);
}

#[tokio::test(start_paused = true)]
async fn a_pool_dropped_while_its_timekeeper_sleeps_is_freed_and_the_task_ends() {
    let pool = Pool::new(cfg("db/u", 1, 0), Fake::new(), Budget::new(10));
    let held = pool.acquire(holder("a:1")).await.unwrap();
    let waiter = spawn_acquire(&pool, holder("w:1")).await;
    waiter.abort();
    settle().await;
    let alive = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    assert_eq!(alive(), 1, "the timekeeper sleeps");
    drop(held);
    drop(pool);
    // It holds the pool only weakly while it sleeps: at its next wake it finds it gone.
    advance(5 * SECOND).await;
    settle().await;
    assert_eq!(alive(), 0);
}

/// A runtime of its own for the tests that use more than one, on a paused clock or real time.
fn runtime(paused: bool) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(paused)
        .build()
        .unwrap()
}

/// A pool of one whose acquires give up after 50 ms: for the tests whose waiter is timed out
/// on a timekeeper thread's real clock.
fn hasty_pool() -> Pool<Fake> {
    Pool::new(
        PoolConfig {
            acquire_timeout: Duration::from_millis(50),
            ..cfg("db/u", 1, 0)
        },
        Fake::new(),
        Budget::new(10),
    )
}

#[test]
fn a_timekeeper_dropped_with_its_runtime_is_replaced_by_the_next_waiter() {
    let pool = Pool::new(cfg("db/u", 1, 0), Fake::new(), Budget::new(10));
    let first = runtime(true);
    let held = first.block_on(async {
        let held = pool.acquire(holder("a:1")).await.unwrap();
        // Queue once (starting the timekeeper on this runtime), then give up.
        let waiter = spawn_acquire(&pool, holder("w:1")).await;
        waiter.abort();
        settle().await;
        assert!(pool.keeper_running());
        held
    });
    drop(first);
    assert!(!pool.keeper_running(), "reset as its task was dropped");

    let second = runtime(true);
    second.block_on(async {
        let start = Instant::now();
        let waiter = spawn_acquire(&pool, holder("w:2")).await;
        let err = tokio::time::timeout(60 * SECOND, waiter)
            .await
            .expect("timed out by a new timekeeper")
            .unwrap()
            .unwrap_err();
        assert_eq!(waited(&err), 5 * SECOND);
        assert_eq!(start.elapsed(), 5 * SECOND);
    });
    back(held);
}

/// A pool of one, its connection held and the pool paused with one acquire waiting, a minute
/// on: the timekeeper has looked, found nothing to time, and waits to be rung.
async fn paused_a_minute_with_a_waiter() -> (Pool<Fake>, Lease<Fake>, JoinHandle<Acquired>) {
    let pool = Pool::new(cfg("db/u", 1, 0), Fake::new(), Budget::new(10));
    let held = pool.acquire(holder("a:1")).await.unwrap();
    pool.pause();
    let waiter = spawn_acquire(&pool, holder("w:1")).await;
    advance(60 * SECOND).await;
    settle().await;
    (pool, held, waiter)
}

#[tokio::test(start_paused = true)]
async fn a_resume_wakes_a_timekeeper_that_slept_through_the_pause() {
    let (pool, held, waiter) = paused_a_minute_with_a_waiter().await;
    pool.resume();
    let err = tokio::time::timeout(600 * SECOND, waiter)
        .await
        .expect("timed out 5 s after the resume")
        .unwrap()
        .unwrap_err();
    assert_eq!(waited(&err), 65 * SECOND);
    back(held);
}

#[tokio::test(start_paused = true)]
async fn closing_a_paused_pool_ends_its_timekeeper() {
    let (pool, held, waiter) = paused_a_minute_with_a_waiter().await;
    pool.close();
    assert!(matches!(
        waiter.await.unwrap().unwrap_err(),
        AcquireError::Closed
    ));
    settle().await;
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        0,
        "rung by close, it found the pool closed and ended"
    );
    drop(held);
}

/// The timekeeper runs on one runtime while an acquire waits on another; the first runtime
/// shuts down. The waiter is still timed out (on real time: the thread's runtime is not the
/// test's paused clock, so the timeout is short).
#[test]
fn a_waiter_outlives_the_runtime_its_timekeeper_ran_on() {
    let pool = hasty_pool();
    let first = runtime(false);
    let second = runtime(false);
    let held = first.block_on(async {
        let held = pool.acquire(holder("a:1")).await.unwrap();
        let waiter = spawn_acquire(&pool, holder("w:1")).await;
        waiter.abort();
        settle().await;
        held
    });
    assert!(pool.keeper_running(), "started on the first runtime");
    let waiter = {
        let pool = pool.clone();
        second.spawn(async move { pool.acquire(holder("w:2")).await })
    };
    second.block_on(settle());
    assert_eq!(
        pool.status().waiters,
        1,
        "queued, its timekeeper already running"
    );
    drop(first);
    let err = second
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), waiter).await })
        .expect("timed out by a timekeeper on a thread of its own")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, AcquireError::Timeout { .. }), "{err:?}");
    back(held);
}

/// An acquire that queues with a runtime entered that has already shut down: the timekeeper
/// it starts is dropped by that runtime unpolled, and must still hand over to a thread.
#[test]
fn a_timekeeper_its_runtime_drops_unpolled_still_times_the_waiter_out() {
    let pool = hasty_pool();
    let gone = runtime(false);
    let held = gone.block_on(pool.acquire(holder("a:1"))).unwrap();
    let handle = gone.handle().clone();
    drop(gone);
    let mut waiter = Box::pin(pool.acquire(holder("w:1")));
    {
        let _entered = handle.enter();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(waiter.as_mut().poll(&mut cx).is_pending(), "queued");
    }
    let err = runtime(false)
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), waiter).await })
        .expect("timed out by a timekeeper on a thread of its own")
        .unwrap_err();
    assert!(matches!(err, AcquireError::Timeout { .. }), "{err:?}");
    back(held);
}
