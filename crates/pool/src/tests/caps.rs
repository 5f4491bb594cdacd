//! Caps, FIFO, the one deadline, cancellation, overflow, discard, connect errors, LIFO reuse.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{advance, sleep, Instant};

use super::{back, cfg, conn_id, holder, settle, Fake};
use crate::{AcquireError, Budget, CloseReason, Holder, Pool, PoolConfig};

#[tokio::test(start_paused = true)]
async fn cap_is_respected_under_50_concurrent_acquirers() {
    let fake = Fake::new();
    fake.set_delay(Duration::from_millis(10));
    let config = PoolConfig {
        acquire_timeout: Duration::from_secs(60),
        ..cfg("db/u", 5, 3)
    };
    let pool = Pool::new(config, fake.clone(), Budget::new(100));
    let mut tasks = Vec::new();
    for i in 0..50u64 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let lease = pool
                .acquire(holder(&format!("10.0.0.1:{i}")))
                .await
                .unwrap();
            let st = pool.status();
            assert!(st.open + st.connecting <= st.cap, "{st:?}");
            sleep(Duration::from_millis(20 + i % 7)).await;
            back(lease);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        fake.max_live(),
        8,
        "never more than size + overflow, and reaches it"
    );
    let st = pool.status();
    assert_eq!(st.acquired_total, 50);
    assert_eq!((st.in_use, st.connecting, st.waiters), (0, 0, 0));
    assert_eq!(st.idle, 5, "overflow closed as it came back, size kept");
    assert_eq!(fake.live(), 5);
    assert_eq!(st.budget_in_use, 5);
    assert_eq!(fake.closed(CloseReason::Overflow), 3);
    assert_eq!(st.connects_total, 8);
    assert_eq!(st.closed_total, 3);
    assert!(pool.holders().is_empty());
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_fifo_and_dead_ones_skipped() {
    let fake = Fake::new();
    let pool = Pool::new(cfg("db/u", 1, 0), fake.clone(), Budget::new(10));
    let first = pool.acquire(holder("a:1")).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..5 {
        let (pool, order) = (pool.clone(), Arc::clone(&order));
        tasks.push(tokio::spawn(async move {
            let lease = pool.acquire(holder(&format!("w:{i}"))).await.unwrap();
            order.lock().unwrap().push(i);
            sleep(Duration::from_millis(1)).await;
            back(lease);
        }));
        settle().await; // enqueue in this order
    }
    assert_eq!(pool.status().waiters, 5);
    tasks[2].abort();
    settle().await;
    assert_eq!(pool.status().waiters, 4);
    back(first);
    for (i, task) in tasks.into_iter().enumerate() {
        if i != 2 {
            task.await.unwrap();
        }
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 3, 4]);
    assert_eq!(fake.attempts(), 1, "one connection passed along the queue");
}

fn billing(client: &str) -> Holder {
    Holder::new(client.into(), "app".into(), "bank".into(), "billing".into())
}

#[tokio::test(start_paused = true)]
async fn timeout_after_exactly_the_deadline_with_numbers_and_holders() {
    let fake = Fake::new();
    let pool = Pool::new(cfg("bank/app", 2, 1), fake.clone(), Budget::new(10));
    let _a = pool.acquire(billing("127.0.0.1:50412")).await.unwrap();
    advance(Duration::from_secs(10)).await;
    let _b = pool.acquire(billing("127.0.0.1:50413")).await.unwrap();
    advance(Duration::from_secs(10)).await;
    let _c = pool.acquire(holder("127.0.0.1:50414")).await.unwrap();
    advance(Duration::from_secs(7)).await;
    // Another client queues one second after us and is still waiting when we give up.
    let other = tokio::spawn({
        let pool = pool.clone();
        async move {
            sleep(Duration::from_secs(1)).await;
            pool.acquire(holder("127.0.0.1:9")).await
        }
    });
    let start = Instant::now();
    let err = pool.acquire(holder("127.0.0.1:1")).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    match &err {
        AcquireError::Timeout {
            pool,
            waited,
            in_use,
            cap,
            size,
            overflow,
            budget_limit,
            budget_in_use,
            waiters,
            oldest,
            over_share,
        } => {
            assert_eq!(*over_share, None, "no fair share configured");
            assert_eq!(pool, "bank/app");
            assert_eq!(*waited, Duration::from_secs(5));
            assert_eq!((*in_use, *cap, *size, *overflow), (3, 3, 2, 1));
            assert_eq!((*budget_limit, *budget_in_use), (10, 3));
            assert_eq!(*waiters, 1);
            let oldest: Vec<_> = oldest
                .iter()
                .map(|(h, d)| (&*h.client, d.as_secs()))
                .collect();
            assert_eq!(
                oldest,
                [
                    ("127.0.0.1:50412", 32),
                    ("127.0.0.1:50413", 22),
                    ("127.0.0.1:50414", 12)
                ]
            );
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "pool bank/app exhausted: waited 5s; 3 of 3 server connections in use \
         (pool_size 2 + max_overflow 1), backend budget 10 with 3 in use, 1 client waiting; \
         oldest holders: 127.0.0.1:50412 (app=billing, user=app) for 32s, \
         127.0.0.1:50413 (app=billing, user=app) for 22s, 127.0.0.1:50414 (user=app) for 12s"
    );
    assert!(other.await.unwrap().unwrap_err().is_timeout());
    let st = pool.status();
    assert_eq!(
        (st.timeouts_total, st.acquired_total, st.waiters),
        (2, 3, 0)
    );
    assert_eq!(fake.attempts(), 3);
}

#[tokio::test(start_paused = true)]
async fn holders_are_listed_oldest_first_and_removed_on_return() {
    let pool = Pool::new(cfg("db/u", 3, 0), Fake::new(), Budget::new(10));
    let a = pool.acquire(holder("a:1")).await.unwrap();
    advance(Duration::from_secs(1)).await;
    let b = pool.acquire(holder("b:1")).await.unwrap();
    advance(Duration::from_secs(1)).await;
    let c = pool.acquire(holder("c:1")).await.unwrap();
    let clients = |p: &Pool<Fake>| -> Vec<String> {
        p.holders()
            .into_iter()
            .map(|r| r.holder.client.to_string())
            .collect()
    };
    assert_eq!(clients(&pool), ["a:1", "b:1", "c:1"]);
    assert_eq!(pool.holders()[1].id, b.id());
    back(b);
    assert_eq!(clients(&pool), ["a:1", "c:1"]);
    a.discard(crate::DiscardReason::Broken);
    assert_eq!(clients(&pool), ["c:1"]);
    back(c);
    assert!(pool.holders().is_empty());
}

#[tokio::test(start_paused = true)]
async fn cancelled_while_waiting_leaks_nothing() {
    let fake = Fake::new();
    let pool = Pool::new(cfg("db/u", 1, 0), fake.clone(), Budget::new(10));
    let lease = pool.acquire(holder("a:1")).await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(holder("b:1")).await }
    });
    settle().await;
    assert_eq!(pool.status().waiters, 1);
    waiter.abort();
    settle().await;
    assert_eq!(pool.status().waiters, 0);
    back(lease);
    let st = pool.status();
    assert_eq!((st.idle, st.in_use, st.budget_in_use), (1, 0, 1));
    let again = pool.acquire(holder("c:1")).await.unwrap();
    assert_eq!(again.id(), 2);
    assert_eq!(fake.attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn connection_sent_to_a_cancelled_waiter_comes_back() {
    let fake = Fake::new();
    let pool = Pool::new(cfg("db/u", 1, 0), fake.clone(), Budget::new(10));
    let lease = pool.acquire(holder("a:1")).await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(holder("b:1")).await }
    });
    settle().await;
    back(lease); // handed to the waiter's channel...
    assert_eq!(pool.holders().len(), 1);
    waiter.abort(); // ...which is dropped before it reads it
    settle().await;
    let st = pool.status();
    assert_eq!((st.idle, st.in_use, st.budget_in_use), (1, 0, 1));
    assert!(pool.holders().is_empty());
    assert_eq!(fake.live(), 1);
    let _again = pool.acquire(holder("c:1")).await.unwrap();
    assert_eq!(fake.attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn slot_sent_to_a_cancelled_waiter_is_released() {
    let fake = Fake::new();
    let pool = Pool::new(cfg("db/u", 1, 0), fake.clone(), Budget::new(10));
    let lease = pool.acquire(holder("a:1")).await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(holder("b:1")).await }
    });
    settle().await;
    lease.discard(crate::DiscardReason::Broken); // the freed unit becomes a slot sent to the waiter...
    assert_eq!(pool.status().connecting, 1);
    waiter.abort(); // ...who is gone before using it
    settle().await;
    let st = pool.status();
    assert_eq!((st.open, st.connecting, st.budget_in_use), (0, 0, 0));
    assert_eq!((fake.attempts(), fake.live()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn cancelled_while_connecting_leaks_nothing() {
    let fake = Fake::new();
    fake.set_delay(Duration::from_secs(10));
    let pool = Pool::new(cfg("db/u", 1, 0), fake.clone(), Budget::new(10));
    let task = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(holder("a:1")).await }
    });
    advance(Duration::from_secs(1)).await;
    let st = pool.status();
    assert_eq!((st.connecting, st.budget_in_use, fake.live()), (1, 1, 1));
    task.abort();
    settle().await;
    let st = pool.status();
    assert_eq!((st.open, st.connecting, st.budget_in_use), (0, 0, 0));
    assert_eq!((fake.live(), st.connects_total), (0, 0));
    fake.set_delay(Duration::ZERO);
    let _lease = pool.acquire(holder("b:1")).await.unwrap();
    assert_eq!(fake.attempts(), 2);
}

#[tokio::test(start_paused = true)]
async fn deadline_covers_the_connect() {
    let fake = Fake::new();
    fake.set_delay(Duration::from_secs(10));
    let pool = Pool::new(cfg("db/u", 1, 0), fake.clone(), Budget::new(10));
    let start = Instant::now();
    let err = pool.acquire(holder("a:1")).await.unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    let st = pool.status();
    assert_eq!((st.connecting, st.budget_in_use, fake.live()), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn overflow_is_closed_on_return_when_nobody_waits() {
    let fake = Fake::new();
    let pool = Pool::new(cfg("db/u", 1, 2), fake.clone(), Budget::new(10));
    let leases = [
        pool.acquire(holder("a:1")).await.unwrap(),
        pool.acquire(holder("a:2")).await.unwrap(),
        pool.acquire(holder("a:3")).await.unwrap(),
    ];
    assert_eq!(pool.status().open, 3);
    back(leases);
    let st = pool.status();
    assert_eq!((st.open, st.idle, st.budget_in_use), (1, 1, 1));
    assert_eq!(
        fake.closes(),
        [CloseReason::Overflow, CloseReason::Overflow]
    );
}

#[tokio::test(start_paused = true)]
async fn overflow_goes_to_a_waiter_instead_of_closing() {
    let fake = Fake::new();
    let pool = Pool::new(cfg("db/u", 1, 1), fake.clone(), Budget::new(10));
    let a = pool.acquire(holder("a:1")).await.unwrap();
    let b = pool.acquire(holder("a:2")).await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(holder("b:1")).await }
    });
    settle().await;
    back(b);
    let handed = waiter.await.unwrap().unwrap();
    assert_eq!(conn_id(&handed), 1, "b's connection, not a new one");
    assert!(fake.closes().is_empty());
    back(handed); // now nobody waits: overflow closes
    back(a);
    assert_eq!(fake.closes(), [CloseReason::Overflow]);
    assert_eq!(pool.status().idle, 1);
}

#[tokio::test(start_paused = true)]
async fn discard_frees_the_slot_for_a_waiter() {
    let fake = Fake::new();
    let pool = Pool::new(cfg("db/u", 1, 0), fake.clone(), Budget::new(10));
    let lease = pool.acquire(holder("a:1")).await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(holder("b:1")).await.map(super::id_back) }
    });
    settle().await;
    lease.discard(crate::DiscardReason::Broken);
    assert_eq!(waiter.await.unwrap().unwrap(), 1, "a fresh connection");
    assert_eq!(fake.closes(), [CloseReason::Discarded]);
    let st = pool.status();
    assert_eq!(
        (
            st.connects_total,
            st.closed_total,
            st.idle,
            st.budget_in_use
        ),
        (2, 1, 1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn connect_error_releases_the_unit() {
    let fake = Fake::new();
    let pool = Pool::new(cfg("db/u", 1, 0), fake.clone(), Budget::new(10));
    fake.fail_next(1);
    let err = pool.acquire(holder("a:1")).await.unwrap_err();
    assert!(matches!(err, AcquireError::Connect(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "could not open a server connection: fake connect failure"
    );
    let st = pool.status();
    assert_eq!((st.open, st.connecting, st.budget_in_use), (0, 0, 0));
    assert_eq!(
        (st.connect_errors_total, st.connects_total, fake.live()),
        (1, 0, 0)
    );
    let _lease = pool.acquire(holder("a:1")).await.unwrap();
    assert_eq!(fake.attempts(), 2);
}

#[tokio::test(start_paused = true)]
async fn failed_connect_passes_the_slot_to_the_next_waiter() {
    let fake = Fake::new();
    fake.set_delay(Duration::from_secs(1));
    fake.fail_next(1);
    let pool = Pool::new(cfg("db/u", 1, 0), fake.clone(), Budget::new(1));
    let first = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(holder("a:1")).await.map(super::id_back) }
    });
    settle().await;
    let second = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(holder("b:1")).await.map(super::id_back) }
    });
    assert!(matches!(
        first.await.unwrap(),
        Err(AcquireError::Connect(_))
    ));
    assert_eq!(
        second.await.unwrap().unwrap(),
        0,
        "the first connection that succeeded"
    );
    assert_eq!(fake.attempts(), 2);
    assert_eq!(fake.max_live(), 1);
}

#[tokio::test(start_paused = true)]
async fn idle_reuse_is_most_recently_returned_first() {
    let pool = Pool::new(cfg("db/u", 3, 0), Fake::new(), Budget::new(10));
    let a = pool.acquire(holder("a:1")).await.unwrap();
    let b = pool.acquire(holder("a:2")).await.unwrap();
    let (a_conn, b_conn) = (conn_id(&a), conn_id(&b));
    back(b);
    back(a);
    let again = pool.acquire(holder("a:3")).await.unwrap();
    assert_eq!(conn_id(&again), a_conn);
    let next = pool.acquire(holder("a:4")).await.unwrap();
    assert_eq!(conn_id(&next), b_conn);
}

/// Fail closed: only a release with a proof that holds puts a connection back for reuse. A
/// dropped lease (an early return, a forgotten branch), a lease dropped by a panicking task and
/// a proof with one check false all close the connection, each counted under its reason.
#[tokio::test(start_paused = true)]
async fn fail_closed() {
    use crate::{Clean, DiscardReason};
    let fake = Fake::new();
    let pool = Pool::new(cfg("db/u", 4, 0), fake.clone(), Budget::new(10));
    let count = |why: DiscardReason| pool.status().discarded_total[why.index()];

    drop(pool.acquire(holder("a:1")).await.unwrap());
    assert_eq!(fake.closes(), [CloseReason::Discarded]);
    assert_eq!(count(DiscardReason::Dropped), 1);
    assert_eq!(pool.status().idle, 0, "nothing went back for reuse");

    let lease = pool.acquire(holder("a:2")).await.unwrap();
    let panicked = tokio::spawn(async move {
        let _held = lease;
        panic!("a session fails while it holds a server");
    })
    .await;
    assert!(panicked.unwrap_err().is_panic());
    assert_eq!(count(DiscardReason::Panicked), 1);

    for unproven in [
        Clean {
            idle: false,
            ..super::PROVEN
        },
        Clean {
            no_transaction: false,
            ..super::PROVEN
        },
        Clean {
            nothing_owed: false,
            ..super::PROVEN
        },
        Clean {
            in_step: false,
            ..super::PROVEN
        },
    ] {
        let lease = pool.acquire(holder("a:3")).await.unwrap();
        assert!(!lease.release(unproven), "{unproven:?} is no proof");
    }
    assert_eq!(count(DiscardReason::Unproven), 4);
    assert_eq!(pool.status().idle, 0);

    let lease = pool.acquire(holder("a:4")).await.unwrap();
    assert!(lease.release(super::PROVEN));
    let st = pool.status();
    assert_eq!((st.idle, st.in_use), (1, 0), "a proven release is reused");
    assert_eq!(fake.closes().len(), 6);
    assert_eq!(
        fake.live(),
        1,
        "every discarded connection was closed at the server"
    );
}
