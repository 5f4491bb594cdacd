//! Lifetime with jitter, idle timeout, the reaper, close, run-time resizing, drop.

use std::time::Duration;

use tokio::time::{advance, Instant};

use super::{back, cfg, conn_id, holder, settle, Fake};
use crate::{AcquireError, Budget, CloseReason, Pool, PoolConfig};

const SECOND: Duration = Duration::from_secs(1);

async fn advance_to(at: Instant) {
    advance(at - Instant::now()).await;
}

#[tokio::test(start_paused = true)]
async fn lifetimes_are_jittered_within_bounds_and_reaped() {
    let fake = Fake::new();
    let config = PoolConfig {
        max_lifetime: Some(100 * SECOND),
        lifetime_jitter: 0.2,
        ..cfg("db/u", 20, 0)
    };
    let pool = Pool::new(config, fake.clone(), Budget::new(100));
    let t0 = Instant::now();
    let mut leases = Vec::new();
    for i in 0..20 {
        leases.push(pool.acquire(holder(&format!("a:{i}"))).await.unwrap());
    }
    let mut expiries: Vec<Instant> = leases.iter().map(|l| l.expires_at().unwrap()).collect();
    for (lease, at) in leases.iter().zip(&expiries) {
        assert_eq!(lease.created_at(), t0);
        assert!(
            *at >= t0 + 80 * SECOND && *at <= t0 + 100 * SECOND,
            "{:?}",
            *at - t0
        );
    }
    expiries.sort();
    assert!(expiries[0] < expiries[19], "jitter spreads expiries");

    advance(79 * SECOND).await;
    assert!(leases.iter().all(|l| !l.is_expired()));
    back(leases);
    pool.reap();
    assert_eq!(pool.status().idle, 20);

    advance(11 * SECOND).await; // t0 + 90s
    pool.reap();
    let due = expiries
        .iter()
        .filter(|at| **at <= t0 + 90 * SECOND)
        .count();
    assert_eq!(fake.closed(CloseReason::Lifetime), due);
    assert_eq!(pool.status().idle, 20 - due);

    advance(10 * SECOND).await; // t0 + 100s: every one is past its lifetime
    pool.reap();
    assert_eq!(fake.closed(CloseReason::Lifetime), 20);
    let st = pool.status();
    assert_eq!((st.open, st.budget_in_use, fake.live()), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn expired_idle_connection_is_skipped_at_checkout() {
    let fake = Fake::new();
    let config = PoolConfig {
        max_lifetime: Some(10 * SECOND),
        ..cfg("db/u", 2, 0)
    };
    let pool = Pool::new(config, fake.clone(), Budget::new(1));
    back(pool.acquire(holder("a:1")).await.unwrap());
    advance(10 * SECOND).await;
    let lease = pool.acquire(holder("a:2")).await.unwrap();
    assert_eq!(conn_id(&lease), 1, "a new connection");
    assert_eq!(fake.closes(), [CloseReason::Lifetime]);
    assert_eq!(
        fake.max_live(),
        1,
        "the old unit was given back before the new one was taken"
    );
}

#[tokio::test(start_paused = true)]
async fn expired_lease_is_closed_on_return_and_the_waiter_opens_anew() {
    let fake = Fake::new();
    let config = PoolConfig {
        max_lifetime: Some(10 * SECOND),
        acquire_timeout: 60 * SECOND,
        ..cfg("db/u", 1, 0)
    };
    let pool = Pool::new(config, fake.clone(), Budget::new(10));
    let lease = pool.acquire(holder("a:1")).await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(holder("b:1")).await.map(super::id_back) }
    });
    advance(11 * SECOND).await;
    assert!(lease.is_expired());
    back(lease);
    assert_eq!(waiter.await.unwrap().unwrap(), 1);
    assert_eq!(fake.closes(), [CloseReason::Lifetime]);
    assert_eq!(pool.status().connects_total, 2);
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_reaps_connections_idle_too_long() {
    let fake = Fake::new();
    let config = PoolConfig {
        idle_timeout: Some(60 * SECOND),
        ..cfg("db/u", 3, 0)
    };
    let pool = Pool::new(config, fake.clone(), Budget::new(10));
    let t0 = Instant::now();
    let mut leases = Vec::new();
    for i in 0..3 {
        leases.push(pool.acquire(holder(&format!("a:{i}"))).await.unwrap());
    }
    back(leases.pop()); // idle since 0s
    advance_to(t0 + 30 * SECOND).await;
    back(leases.pop()); // idle since 30s
    advance_to(t0 + 50 * SECOND).await;
    back(leases.pop()); // idle since 50s
    for (at, closed) in [(59, 0), (60, 1), (89, 1), (90, 2), (109, 2), (110, 3)] {
        advance_to(t0 + at * SECOND).await;
        pool.reap();
        assert_eq!(fake.closed(CloseReason::Idle), closed, "at {at}s");
    }
    let st = pool.status();
    assert_eq!((st.open, st.budget_in_use, fake.live()), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn reaper_runs_periodically_and_stops_with_the_pool() {
    let fake = Fake::new();
    let config = PoolConfig {
        idle_timeout: Some(10 * SECOND),
        ..cfg("db/u", 2, 0)
    };
    let pool = Pool::new(config, fake.clone(), Budget::new(10));
    let reaper = pool.spawn_reaper(5 * SECOND);
    back(pool.acquire(holder("a:1")).await.unwrap());
    advance(9 * SECOND).await;
    settle().await;
    assert_eq!(pool.status().idle, 1);
    advance(6 * SECOND).await;
    settle().await;
    assert_eq!(pool.status().idle, 0);
    assert_eq!(fake.closes(), [CloseReason::Idle]);
    drop(pool);
    tokio::time::timeout(60 * SECOND, reaper)
        .await
        .unwrap()
        .unwrap();

    let pool = Pool::new(cfg("db/v", 1, 0), fake.clone(), Budget::new(10));
    let reaper = pool.spawn_reaper(SECOND);
    pool.close();
    tokio::time::timeout(60 * SECOND, reaper)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn close_closes_idle_now_and_busy_on_return() {
    let fake = Fake::new();
    let budget = Budget::new(10);
    let pool = Pool::new(cfg("db/u", 2, 0), fake.clone(), budget.clone());
    let busy = pool.acquire(holder("a:1")).await.unwrap();
    back(pool.acquire(holder("a:2")).await.unwrap()); // idle
    pool.close();
    assert!(pool.is_closed());
    assert_eq!(fake.closes(), [CloseReason::PoolClosed]);
    assert!(matches!(
        pool.acquire(holder("late")).await,
        Err(AcquireError::Closed)
    ));
    assert_eq!((pool.status().idle, budget.in_use()), (0, 1));
    back(busy);
    assert_eq!((budget.in_use(), fake.live()), (0, 0));
    assert_eq!(
        fake.closes(),
        [CloseReason::PoolClosed, CloseReason::PoolClosed]
    );
    assert!(pool.holders().is_empty());
}

#[tokio::test(start_paused = true)]
async fn close_wakes_every_waiter_with_closed() {
    let pool = Pool::new(cfg("db/u", 1, 0), Fake::new(), Budget::new(10));
    let _busy = pool.acquire(holder("a:1")).await.unwrap();
    let waiters: Vec<_> = (0..3)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.acquire(holder(&format!("w:{i}"))).await })
        })
        .collect();
    settle().await;
    let start = Instant::now();
    pool.close();
    for waiter in waiters {
        assert!(matches!(waiter.await.unwrap(), Err(AcquireError::Closed)));
    }
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "woken at once, not at the deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn close_during_connect_closes_the_new_connection() {
    let fake = Fake::new();
    fake.set_delay(2 * SECOND);
    let budget = Budget::new(10);
    let pool = Pool::new(cfg("db/u", 1, 0), fake.clone(), budget.clone());
    let task = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(holder("a:1")).await }
    });
    advance(SECOND).await;
    pool.close();
    assert!(matches!(task.await.unwrap(), Err(AcquireError::Closed)));
    assert_eq!(fake.closes(), [CloseReason::PoolClosed]);
    assert_eq!((budget.in_use(), fake.live()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_shorter_lifetime_applies_to_connections_already_open() {
    let fake = Fake::new();
    let config = |lifetime: u32| PoolConfig {
        max_lifetime: Some(lifetime * SECOND),
        lifetime_jitter: 0.0,
        ..cfg("db/u", 2, 0)
    };
    let pool = Pool::new(config(600), fake.clone(), Budget::new(2));
    // Checked out and back in once: its expiry (600 s) has been worked out and remembered.
    back(pool.acquire(holder("a:1")).await.unwrap());
    let busy = pool.acquire(holder("a:2")).await.unwrap();
    assert_eq!(conn_id(&busy), 0, "the same connection");
    back(busy);
    advance(20 * SECOND).await;
    pool.set_config(config(10));
    let lease = pool.acquire(holder("a:3")).await.unwrap();
    assert_eq!(
        conn_id(&lease),
        1,
        "the 20 s old connection is past the new 10 s lifetime"
    );
    assert_eq!(fake.closes(), [CloseReason::Lifetime]);
}

#[tokio::test(start_paused = true)]
async fn set_config_shrinks_idle_and_grows_for_waiters() {
    let fake = Fake::new();
    let pool = Pool::new(cfg("db/u", 4, 0), fake.clone(), Budget::new(10));
    let mut leases = Vec::new();
    for i in 0..4 {
        leases.push(pool.acquire(holder(&format!("a:{i}"))).await.unwrap());
    }
    back(leases);
    assert_eq!(pool.status().idle, 4);
    pool.set_config(PoolConfig {
        name: "ignored".to_owned(),
        ..cfg("db/u", 2, 0)
    });
    let st = pool.status();
    assert_eq!((st.idle, st.size, st.cap, st.budget_in_use), (2, 2, 2, 2));
    assert_eq!(st.name, "db/u", "the name is fixed");
    assert_eq!(fake.closed(CloseReason::Overflow), 2);

    let a = pool.acquire(holder("b:1")).await.unwrap();
    let b = pool.acquire(holder("b:2")).await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(holder("b:3")).await.map(super::id_back) }
    });
    settle().await;
    assert_eq!(pool.status().waiters, 1);
    pool.set_config(cfg("db/u", 3, 0));
    assert_eq!(
        waiter.await.unwrap().unwrap(),
        4,
        "a new connection at once"
    );

    // Shrink below what is busy: the idle one goes now, busy ones as they come back, down to
    // the new size.
    pool.set_config(cfg("db/u", 1, 0));
    assert_eq!(fake.closed(CloseReason::Overflow), 3);
    back(a);
    back(b);
    let st = pool.status();
    assert_eq!((st.open, st.idle, st.budget_in_use), (1, 1, 1));
    assert_eq!(fake.closed(CloseReason::Overflow), 4);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_closes_idle_connections() {
    let fake = Fake::new();
    let budget = Budget::new(10);
    let pool = Pool::new(cfg("db/u", 2, 0), fake.clone(), budget.clone());
    let a = pool.acquire(holder("a:1")).await.unwrap();
    let b = pool.acquire(holder("a:2")).await.unwrap();
    back(a);
    drop(pool);
    assert_eq!(budget.in_use(), 2, "a lease keeps the pool alive");
    back(b);
    assert_eq!(budget.in_use(), 0);
    assert_eq!(
        fake.closes(),
        [CloseReason::PoolClosed, CloseReason::PoolClosed]
    );
    assert_eq!(fake.live(), 0);
}
