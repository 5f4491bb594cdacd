//! The waiter cap: an acquire that would queue beyond `max_waiters` fails at once; one that is
//! served at once never counts; dead waiters and a paused pool's queue are counted right.

use std::time::Duration;

use tokio::time::Instant;

use super::{back, cfg, conn_id, holder, settle, spawn_acquire, Fake};
use crate::{AcquireError, Admission, Budget, Pool};

fn capped_pool(size: usize, max_waiters: usize) -> Pool<Fake> {
    let pool = Pool::new(cfg("db/u", size, 0), Fake::new(), Budget::new(10));
    pool.set_admission(Admission {
        max_waiters: Some(max_waiters),
        ..Admission::default()
    });
    pool
}

#[tokio::test(start_paused = true)]
async fn an_acquire_beyond_max_waiters_fails_at_once_and_is_counted() {
    let pool = capped_pool(1, 2);
    let held = pool.acquire(holder("a:1")).await.unwrap();
    let first = spawn_acquire(&pool, holder("w:1")).await;
    let second = spawn_acquire(&pool, holder("w:2")).await;
    let start = Instant::now();
    let err = pool.acquire(holder("w:3")).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO, "not queued, not timed");
    match &err {
        AcquireError::TooManyWaiters { pool, waiters, max } => {
            assert_eq!((pool.as_str(), *waiters, *max), ("db/u", 2, 2));
        }
        other => panic!("expected TooManyWaiters, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "pool db/u has 2 clients waiting, the most its max_waiters (2) allows; refused at once \
         instead of queueing: retry later, or raise max_waiters or pool_size if this load is \
         expected"
    );
    let st = pool.status();
    assert_eq!(
        (st.waiters, st.rejected_waiters_total, st.timeouts_total),
        (2, 1, 0)
    );

    // A waiter that gave up frees its place in the cap.
    first.abort();
    settle().await;
    let third = spawn_acquire(&pool, holder("w:3")).await;
    assert_eq!(pool.status().waiters, 2);
    assert_eq!(pool.status().rejected_waiters_total, 1);
    back(held);
    second.await.unwrap().unwrap();
    third.await.unwrap().unwrap();
    assert_eq!(pool.status().acquired_total, 3);
}

#[tokio::test(start_paused = true)]
async fn an_acquire_served_at_once_never_counts_against_the_cap() {
    let pool = capped_pool(2, 0);
    let a = pool.acquire(holder("a:1")).await.unwrap();
    let b = pool.acquire(holder("b:1")).await.unwrap();
    let err = pool.acquire(holder("c:1")).await.unwrap_err();
    assert!(matches!(
        err,
        AcquireError::TooManyWaiters {
            waiters: 0,
            max: 0,
            ..
        }
    ));
    back(a);
    let _c = pool.acquire(holder("c:1")).await.unwrap();
    let st = pool.status();
    assert_eq!(
        (st.rejected_waiters_total, st.acquired_total, st.waiters),
        (1, 3, 0)
    );
    back(b);
}

#[tokio::test(start_paused = true)]
async fn a_paused_pools_queue_counts_toward_the_cap() {
    let pool = capped_pool(2, 1);
    pool.pause();
    let queued = spawn_acquire(&pool, holder("w:1")).await;
    let err = pool.acquire(holder("w:2")).await.unwrap_err();
    assert!(matches!(
        err,
        AcquireError::TooManyWaiters {
            waiters: 1,
            max: 1,
            ..
        }
    ));
    assert_eq!(pool.status().rejected_waiters_total, 1);
    pool.resume();
    queued.await.unwrap().unwrap();
    // Lifting the cap lets the queue grow again.
    pool.set_admission(Admission::default());
    pool.pause();
    let mut waiting = Vec::new();
    for i in 0..5 {
        waiting.push(spawn_acquire(&pool, holder(&format!("x:{i}"))).await);
    }
    assert_eq!(pool.status().waiters, 5);
    assert_eq!(pool.status().rejected_waiters_total, 1);
    pool.resume();
    for task in waiting {
        back(task.await.unwrap().unwrap());
    }
}

#[tokio::test(start_paused = true)]
async fn try_acquire_idle_takes_only_an_idle_connection_nobody_waits_for() {
    let pool = capped_pool(1, 2);
    // Nothing idle yet: the holder comes back and nothing was opened or counted.
    let h = pool.try_acquire_idle(holder("a:1")).unwrap_err();
    assert_eq!(h.client, holder("a:1").client);
    assert_eq!(pool.status().acquired_total, 0);
    let first = pool.acquire(h).await.unwrap();
    let id = conn_id(&first);
    back(first);
    // Idle: taken at once, the same connection, counted like an acquire.
    let again = pool.try_acquire_idle(holder("a:1")).unwrap();
    assert_eq!(conn_id(&again), id);
    assert_eq!(pool.status().acquired_total, 2);
    // Held, with a waiter queued: nothing to take, and no place jumped in the queue.
    let waiter = spawn_acquire(&pool, holder("w:1")).await;
    assert!(pool.try_acquire_idle(holder("b:1")).is_err());
    back(again);
    let served = waiter.await.unwrap().unwrap();
    assert_eq!(conn_id(&served), id, "the waiter got it, not a later try");
    assert_eq!(pool.status().waiters, 0);
}
