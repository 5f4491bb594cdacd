//! Pause and resume (deadlines held, then restarted), `wait_idle`, `retire_all`, and the
//! connector's fast refusal (`Connector::admit`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{advance, Instant};

use super::{back, cfg, conn_id, holder, settle, spawn_acquire, Fake};
use crate::{AcquireError, Budget, CloseReason, Pool};

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn paused_pool_holds_waiters_without_timing_them_out_then_serves_in_order() {
    let fake = Fake::new();
    let pool = Pool::new(cfg("db/u", 1, 0), fake.clone(), Budget::new(10));
    let before = pool.acquire(holder("a:1")).await.unwrap();
    pool.pause();
    assert!(pool.is_paused());
    let mut waiting = Vec::new();
    for i in 0..3 {
        waiting.push(spawn_acquire(&pool, holder(&format!("w:{i}"))).await);
    }
    // Twelve acquire timeouts pass: nobody is served and nobody times out.
    advance(60 * SECOND).await;
    settle().await;
    let st = pool.status();
    assert!(st.paused);
    assert_eq!(
        (st.waiters, st.timeouts_total, st.acquired_total),
        (3, 0, 1)
    );
    // The lease taken before the pause works and comes back normally, and stays idle.
    assert_eq!(conn_id(&before), 0);
    back(before);
    let st = pool.status();
    assert_eq!((st.idle, st.in_use, st.waiters), (1, 0, 3));
    assert!(waiting.iter().all(|t| !t.is_finished()));

    pool.resume();
    assert!(!pool.is_paused());
    let mut served = Vec::new();
    for task in waiting {
        let lease = task.await.unwrap().unwrap();
        served.push(pool.holders()[0].holder.client.to_string());
        back(lease);
    }
    assert_eq!(served, ["w:0", "w:1", "w:2"], "FIFO across the pause");
    assert_eq!(
        fake.attempts(),
        1,
        "the one connection passed along the queue"
    );
    assert_eq!(pool.status().timeouts_total, 0);
}

#[tokio::test(start_paused = true)]
async fn deadline_restarts_whole_when_the_pool_resumes() {
    let pool = Pool::new(cfg("db/u", 1, 0), Fake::new(), Budget::new(10));
    let _held = pool.acquire(holder("a:1")).await.unwrap();
    let start = Instant::now();
    let waiter = spawn_acquire(&pool, holder("w:1")).await;
    advance(3 * SECOND).await; // 3 s of its 5 s used before the pause
    pool.pause();
    advance(100 * SECOND).await;
    pool.resume();
    advance(4 * SECOND).await;
    settle().await;
    assert!(!waiter.is_finished(), "a whole timeout from the resume");
    assert_eq!(pool.status().timeouts_total, 0);
    advance(SECOND).await;
    let err = waiter.await.unwrap().unwrap_err();
    match err {
        AcquireError::Timeout { waited, .. } => assert_eq!(waited, 108 * SECOND),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(start.elapsed(), 108 * SECOND);
    assert_eq!(pool.status().timeouts_total, 1);
}

#[tokio::test(start_paused = true)]
async fn paused_pool_does_not_hand_out_idle_connections() {
    let fake = Fake::new();
    let pool = Pool::new(cfg("db/u", 2, 0), fake.clone(), Budget::new(10));
    back(pool.acquire(holder("a:1")).await.unwrap());
    pool.pause();
    let waiter = spawn_acquire(&pool, holder("w:1")).await;
    let st = pool.status();
    assert_eq!((st.idle, st.waiters, st.in_use), (1, 1, 0));
    pool.pause(); // idempotent
    pool.resume();
    let lease = waiter.await.unwrap().unwrap();
    assert_eq!(conn_id(&lease), 0, "the idle connection, no new connect");
    assert_eq!(fake.attempts(), 1);
}

/// Spawn `pool.wait_idle()` and report whether it has finished.
fn watch_idle(pool: &Pool<Fake>) -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    let wait = pool.wait_idle();
    let flag = Arc::clone(&done);
    tokio::spawn(async move {
        wait.await;
        flag.store(true, Ordering::SeqCst);
    });
    done
}

#[tokio::test(start_paused = true)]
async fn wait_idle_resolves_when_the_last_lease_is_back() {
    let fake = Fake::new();
    let pool = Pool::new(cfg("db/u", 3, 0), fake.clone(), Budget::new(10));
    pool.wait_idle().await; // nothing out: at once

    let a = pool.acquire(holder("a:1")).await.unwrap();
    let b = pool.acquire(holder("b:1")).await.unwrap();
    let done = watch_idle(&pool);
    settle().await;
    assert!(!done.load(Ordering::SeqCst));
    back(a);
    settle().await;
    assert!(!done.load(Ordering::SeqCst), "one lease still out");
    b.discard(crate::DiscardReason::Broken);
    settle().await;
    assert!(done.load(Ordering::SeqCst), "a discard counts as back");

    // A connect under way counts as out, and a paused queue does not keep it pending.
    fake.set_delay(SECOND);
    pool.pause();
    let queued = spawn_acquire(&pool, holder("q:1")).await;
    pool.wait_idle().await;
    pool.resume();
    settle().await;
    let done = watch_idle(&pool);
    settle().await;
    assert!(!done.load(Ordering::SeqCst), "a connect is under way");
    advance(SECOND).await;
    let lease = queued.await.unwrap().unwrap();
    assert!(!done.load(Ordering::SeqCst), "the new lease is out");
    back(lease);
    settle().await;
    assert!(done.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn retire_all_closes_idle_now_busy_and_connecting_on_return() {
    let fake = Fake::new();
    let pool = Pool::new(cfg("db/u", 4, 0), fake.clone(), Budget::new(10));
    let busy = pool.acquire(holder("a:1")).await.unwrap();
    let idle1 = pool.acquire(holder("b:1")).await.unwrap();
    let idle2 = pool.acquire(holder("c:1")).await.unwrap();
    fake.set_delay(SECOND);
    let connecting = spawn_acquire(&pool, holder("d:1")).await;
    back((idle1, idle2));
    assert_eq!(pool.status().connecting, 1);

    pool.retire_all();
    assert_eq!(fake.closed(CloseReason::Retired), 2, "idle ones at once");
    let st = pool.status();
    assert_eq!((st.idle, st.in_use, st.connecting), (0, 1, 1));
    assert!(!pool.is_closed());

    // The connect granted before the retire still serves its client, then closes on return.
    advance(SECOND).await;
    let old = connecting.await.unwrap().unwrap();
    back(old);
    assert_eq!(fake.closed(CloseReason::Retired), 3);
    back(busy);
    assert_eq!(fake.closed(CloseReason::Retired), 4);

    // New connections belong to the new generation and are kept.
    fake.set_delay(Duration::ZERO);
    let fresh = pool.acquire(holder("e:1")).await.unwrap();
    back(fresh);
    let st = pool.status();
    assert_eq!((st.idle, st.in_use, st.budget_in_use), (1, 0, 1));
    assert_eq!(fake.closed(CloseReason::Retired), 4);
    assert_eq!(fake.live(), 1);
    assert_eq!(fake.attempts(), 5);
}

#[tokio::test(start_paused = true)]
async fn admit_refusal_fails_at_once_unless_a_connection_is_idle() {
    let fake = Fake::new();
    let pool = Pool::new(cfg("db/u", 2, 0), fake.clone(), Budget::new(10));
    fake.set_refusing(true);
    let start = Instant::now();
    let err = pool.acquire(holder("a:1")).await.unwrap_err();
    assert!(matches!(err, AcquireError::Connect(_)), "{err:?}");
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "no wait for acquire_timeout"
    );
    let st = pool.status();
    assert_eq!((st.refused_total, st.waiters, st.timeouts_total), (1, 0, 0));
    assert_eq!(fake.attempts(), 0, "no connect tried");

    // With a connection idle, the refusal does not matter: it is served.
    fake.set_refusing(false);
    let busy = pool.acquire(holder("a:1")).await.unwrap();
    back(pool.acquire(holder("b:1")).await.unwrap());
    fake.set_refusing(true);
    let served = pool.acquire(holder("c:1")).await.unwrap();
    assert_eq!(pool.status().refused_total, 1);

    // Nothing idle again (both busy): refused at once rather than queued.
    let err = pool.acquire(holder("d:1")).await.unwrap_err();
    assert!(matches!(err, AcquireError::Connect(_)));
    let st = pool.status();
    assert_eq!((st.refused_total, st.waiters, st.acquired_total), (2, 0, 3));
    back((busy, served));
}
