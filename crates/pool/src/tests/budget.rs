//! The backend budget across pools: the total cap, FIFO across starved pools, reclaiming a
//! sibling's idle connections, and changing the limit at run time.

use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::{back, cfg, holder, settle, Fake};
use crate::{AcquireError, Budget, CloseReason, Pool, PoolConfig};

fn patient(name: &str, size: usize, max_overflow: usize) -> PoolConfig {
    PoolConfig {
        acquire_timeout: Duration::from_secs(60),
        ..cfg(name, size, max_overflow)
    }
}

#[tokio::test(start_paused = true)]
async fn budget_shared_by_two_pools_caps_the_total() {
    let fake = Fake::new(); // one server behind both pools
    fake.set_delay(Duration::from_millis(5));
    let budget = Budget::new(4);
    let pools = [
        Pool::new(patient("db/a", 3, 1), fake.clone(), budget.clone()),
        Pool::new(patient("db/b", 3, 1), fake.clone(), budget.clone()),
    ];
    let mut tasks = Vec::new();
    for i in 0..50u64 {
        let pool = pools[(i % 2) as usize].clone();
        let budget = budget.clone();
        tasks.push(tokio::spawn(async move {
            let lease = pool.acquire(holder(&format!("c:{i}"))).await.unwrap();
            assert!(budget.in_use() <= 4);
            sleep(Duration::from_millis(10 + i % 5)).await;
            back(lease);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(fake.max_live(), 4);
    let acquired: u64 = pools.iter().map(|p| p.status().acquired_total).sum();
    assert_eq!(acquired, 50);
    let open: usize = pools.iter().map(|p| p.status().open).sum();
    assert_eq!((budget.in_use(), fake.live()), (open, open));
    assert!(pools.iter().all(|p| p.status().timeouts_total == 0));
}

#[tokio::test(start_paused = true)]
async fn starved_pool_reclaims_a_siblings_idle_connection() {
    let fake = Fake::new();
    let budget = Budget::new(2);
    let a = Pool::new(cfg("db/a", 2, 0), fake.clone(), budget.clone());
    let b = Pool::new(cfg("db/b", 2, 0), fake.clone(), budget.clone());
    let leases = [
        a.acquire(holder("a:1")).await.unwrap(),
        a.acquire(holder("a:2")).await.unwrap(),
    ];
    back(leases);
    assert_eq!((a.status().idle, budget.in_use()), (2, 2));

    let start = Instant::now();
    let lease = b.acquire(holder("b:1")).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "served at once, not after a wait"
    );
    assert_eq!(fake.closes(), [CloseReason::BudgetReclaim]);
    assert_eq!(
        (a.status().idle, b.status().in_use, budget.in_use()),
        (1, 1, 2)
    );
    assert_eq!(fake.max_live(), 2);
    back(lease);
}

#[tokio::test(start_paused = true)]
async fn freed_units_go_to_starved_pools_in_order() {
    let fake = Fake::new();
    let budget = Budget::new(1);
    let a = Pool::new(patient("db/a", 1, 0), fake.clone(), budget.clone());
    let b = Pool::new(patient("db/b", 1, 0), fake.clone(), budget.clone());
    let c = Pool::new(patient("db/c", 1, 0), fake.clone(), budget.clone());
    let held = a.acquire(holder("a:1")).await.unwrap();
    let spawn = |pool: &Pool<Fake>, client: &'static str| {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire(holder(client)).await })
    };
    let wait_b = spawn(&b, "b:1");
    settle().await;
    let wait_c = spawn(&c, "c:1");
    settle().await;
    assert_eq!((b.status().waiters, c.status().waiters), (1, 1));

    held.discard(crate::DiscardReason::Broken); // the unit goes to b, the first starved pool
    let lease_b = wait_b.await.unwrap().unwrap();
    assert_eq!(c.status().waiters, 1);

    // b's connection comes back with nobody in b waiting: c is starved, so it moves on.
    back(lease_b);
    let lease_c = wait_c.await.unwrap().unwrap();
    assert_eq!(
        fake.closes(),
        [CloseReason::Discarded, CloseReason::BudgetReclaim]
    );
    assert_eq!(
        (b.status().open, budget.in_use(), fake.max_live()),
        (0, 1, 1)
    );
    back(lease_c);
}

#[tokio::test(start_paused = true)]
async fn budget_starved_timeout_says_so() {
    let budget = Budget::new(1);
    let a = Pool::new(cfg("db/a", 1, 0), Fake::new(), budget.clone());
    let b = Pool::new(cfg("db/b", 2, 0), Fake::new(), budget.clone());
    let _held = a.acquire(holder("a:1")).await.unwrap();
    let err = b.acquire(holder("b:1")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "pool db/b exhausted: waited 5s; 0 of 2 server connections in use \
         (pool_size 2 + max_overflow 0), backend budget 1 with 1 in use, 0 clients waiting; \
         oldest holders: none in this pool"
    );
}

#[tokio::test(start_paused = true)]
async fn lowering_the_limit_stops_opens_and_closes_returns() {
    let fake = Fake::new();
    let budget = Budget::new(4);
    let pool = Pool::new(patient("db/u", 4, 0), fake.clone(), budget.clone());
    let mut leases = Vec::new();
    for i in 0..4 {
        leases.push(pool.acquire(holder(&format!("a:{i}"))).await.unwrap());
    }
    budget.set_limit(2);
    assert_eq!((budget.limit(), budget.in_use()), (2, 4));
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(holder("w:1")).await.map(super::id_back) }
    });
    settle().await;
    assert_eq!(pool.status().waiters, 1);

    back(leases.pop()); // conn 3: over the limit, closed
    assert_eq!(budget.in_use(), 3);
    back(leases.pop()); // conn 2: closed, 2 in use = the limit, still no room to open
    settle().await;
    assert_eq!((budget.in_use(), pool.status().waiters), (2, 1));
    assert_eq!(fake.closed(CloseReason::BudgetReclaim), 2);

    back(leases.pop()); // conn 1: within the limit, handed to the waiter
    assert_eq!(waiter.await.unwrap().unwrap(), 1);
    assert_eq!(fake.closes().len(), 2);
    assert_eq!((fake.attempts(), budget.in_use()), (4, 2));
}

#[tokio::test(start_paused = true)]
async fn lowering_the_limit_closes_idle_connections_at_once() {
    let fake = Fake::new();
    let budget = Budget::new(6);
    let a = Pool::new(cfg("db/a", 4, 0), fake.clone(), budget.clone());
    let b = Pool::new(cfg("db/b", 2, 0), fake.clone(), budget.clone());
    let mut leases = Vec::new();
    for i in 0..4 {
        leases.push(a.acquire(holder(&format!("a:{i}"))).await.unwrap());
    }
    let b_busy = b.acquire(holder("b:1")).await.unwrap();
    back(b.acquire(holder("b:2")).await.unwrap());
    back(leases);
    assert_eq!(
        (a.status().idle, b.status().idle, budget.in_use()),
        (4, 1, 6)
    );

    budget.set_limit(2);
    assert_eq!(budget.in_use(), 2);
    assert_eq!(fake.closed(CloseReason::BudgetReclaim), 4);
    assert_eq!(a.status().idle + b.status().idle, 1);
    back(b_busy);
}

#[tokio::test(start_paused = true)]
async fn raising_the_limit_wakes_starved_pools() {
    let fake = Fake::new();
    let budget = Budget::new(1);
    let pool = Pool::new(patient("db/u", 3, 0), fake.clone(), budget.clone());
    let _held = pool.acquire(holder("a:1")).await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(holder("w:1")).await.map(super::id_back) }
    });
    settle().await;
    assert_eq!(pool.status().waiters, 1);
    let start = Instant::now();
    budget.set_limit(2);
    assert_eq!(waiter.await.unwrap().unwrap(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(budget.in_use(), 2);
}

#[tokio::test(start_paused = true)]
async fn zero_budget_times_out_without_opening() {
    let fake = Fake::new();
    let pool = Pool::new(cfg("db/u", 2, 0), fake.clone(), Budget::new(0));
    let err = pool.acquire(holder("a:1")).await.unwrap_err();
    assert!(matches!(
        err,
        AcquireError::Timeout {
            budget_limit: 0,
            ..
        }
    ));
    assert_eq!(fake.attempts(), 0);
}
