//! Leak reporting: each lease held past the threshold is reported exactly once, with its
//! holder's note; the acquire-wait histogram counts every successful acquire. The idle list
//! reports what waits in the pool without changing it.

use std::time::Duration;

use tokio::time::{advance, Instant};

use super::{back, cfg, holder, Fake};
use crate::{Budget, LeaseState, Pool};

#[tokio::test(start_paused = true)]
async fn leaks_are_reported_once_with_their_note() {
    let pool = Pool::new(cfg("db/u", 5, 0), Fake::new(), Budget::new(10));
    let leaky = holder("10.0.0.1:5000");
    let lease = pool.acquire(leaky.clone()).await.unwrap();
    leaky
        .note
        .statement("BEGIN; UPDATE accounts SET fee = fee + 1");
    leaky.note.set_state(LeaseState::IdleInTransaction);
    let quick = pool.acquire(holder("10.0.0.2:5000")).await.unwrap();
    advance(Duration::from_secs(5)).await;
    back(quick);
    assert!(pool.take_leaks(Duration::from_secs(10)).is_empty());
    advance(Duration::from_secs(6)).await;
    let leaks = pool.take_leaks(Duration::from_secs(10));
    assert_eq!(leaks.len(), 1);
    assert_eq!(&*leaks[0].holder.client, "10.0.0.1:5000");
    assert_eq!(leaks[0].holder.note.state(), LeaseState::IdleInTransaction);
    assert!(leaks[0]
        .holder
        .note
        .last_statement()
        .unwrap()
        .starts_with("BEGIN"));
    advance(Duration::from_secs(60)).await;
    assert!(pool.take_leaks(Duration::from_secs(10)).is_empty(), "once");
    let st = pool.status();
    assert_eq!(st.leaks_total, 1);
    assert_eq!(st.acquire_wait_buckets.last().copied(), Some(2));
    back(lease);
    assert!(pool.holders().is_empty());
}

#[tokio::test(start_paused = true)]
async fn idle_list_copies_what_waits_in_the_pool() {
    let pool = Pool::new(cfg("db/u", 5, 0), Fake::new(), Budget::new(10));
    let opened = Instant::now();
    let a = pool.acquire(holder("10.0.0.1:5000")).await.unwrap();
    let b = pool.acquire(holder("10.0.0.2:5000")).await.unwrap();
    assert!(pool.idle().is_empty(), "both leased");
    advance(Duration::from_secs(3)).await;
    back(a);
    advance(Duration::from_secs(4)).await;
    back(b);
    let idle = pool.idle();
    assert_eq!(idle.len(), 2);
    assert!(idle.iter().all(|i| i.opened_at == opened));
    // Least recently returned first.
    assert_eq!(idle[0].idle_since, opened + Duration::from_secs(3));
    assert_eq!(idle[1].idle_since, opened + Duration::from_secs(7));
    assert_eq!(pool.status().idle, 2, "listing takes nothing out");
    let again = pool.acquire(holder("10.0.0.3:5000")).await.unwrap();
    assert_eq!(pool.idle().len(), 1);
    back(again);
}
