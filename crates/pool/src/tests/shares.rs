//! Fair shares: a key at its share yields to waiters of other keys, but never idles a
//! connection; the counts follow leases, discards and failed connects.

use std::time::Duration;

use tokio::time::advance;

use super::{back, cfg, holder, settle, spawn_acquire, Fake};
use crate::{AcquireError, Admission, Budget, FairShare, Holder, OverShare, Pool, ShareKey};

fn app(application: &str, client: &str) -> Holder {
    Holder::new(
        client.into(),
        "app".into(),
        "bank".into(),
        application.into(),
    )
}

/// A pool of `size` (no overflow) where one key may hold `max` while others wait.
fn shared_pool(size: usize, by: ShareKey, max: usize) -> (Pool<Fake>, Fake) {
    share_pool(size, by, max, false)
}

fn share_pool(size: usize, by: ShareKey, max: usize, strict: bool) -> (Pool<Fake>, Fake) {
    let fake = Fake::new();
    let pool = Pool::new(cfg("db/u", size, 0), fake.clone(), Budget::new(10));
    pool.set_admission(Admission {
        fair_share: Some(FairShare { by, max, strict }),
        ..Admission::default()
    });
    (pool, fake)
}

/// The client of the newest lease.
fn newest(pool: &Pool<Fake>) -> String {
    pool.holders().last().unwrap().holder.client.to_string()
}

#[tokio::test(start_paused = true)]
async fn a_later_key_under_its_share_goes_before_a_key_at_its_share() {
    let (pool, _fake) = shared_pool(3, ShareKey::Application, 2);
    let _a1 = pool.acquire(app("a", "10.0.0.1:1")).await.unwrap();
    let a2 = pool.acquire(app("a", "10.0.0.1:2")).await.unwrap();
    let x = pool.acquire(app("x", "10.0.0.9:1")).await.unwrap();
    let a3 = spawn_acquire(&pool, app("a", "10.0.0.1:3")).await;
    let b1 = spawn_acquire(&pool, app("b", "10.0.0.2:1")).await;
    assert_eq!(pool.status().waiters, 2);

    back(x);
    let b1 = b1.await.unwrap().unwrap();
    assert_eq!(
        newest(&pool),
        "10.0.0.2:1",
        "b was under its share, a at it"
    );
    assert!(!a3.is_finished());

    // An `a` lease comes back: `a` is under its share again and its waiter is next.
    back(a2);
    let a3 = a3.await.unwrap().unwrap();
    assert_eq!(newest(&pool), "10.0.0.1:3");
    assert_eq!(pool.status().waiters, 0);
    back((a3, b1));
}

#[tokio::test(start_paused = true)]
async fn without_other_keys_waiting_a_key_may_exceed_its_share() {
    let (pool, fake) = shared_pool(3, ShareKey::Application, 1);
    let mut leases = Vec::new();
    for i in 0..3 {
        leases.push(
            pool.acquire(app("a", &format!("10.0.0.1:{i}")))
                .await
                .unwrap(),
        );
    }
    assert_eq!(pool.status().in_use, 3, "nobody else waits: all three");

    // b holds none, so its later waiter goes first; then a's waiter is the only one left and
    // is served although a is still at its share.
    let a4 = spawn_acquire(&pool, app("a", "10.0.0.1:4")).await;
    let b1 = spawn_acquire(&pool, app("b", "10.0.0.2:1")).await;
    back(leases.pop());
    let b1 = b1.await.unwrap().unwrap();
    back(leases.pop());
    let a4 = a4.await.unwrap().unwrap();
    assert_eq!(newest(&pool), "10.0.0.1:4");

    // Both keys at or over their share: served in arrival order (work-conserving).
    let a5 = spawn_acquire(&pool, app("a", "10.0.0.1:5")).await;
    let b2 = spawn_acquire(&pool, app("b", "10.0.0.2:2")).await;
    back(leases.pop());
    let a5 = a5.await.unwrap().unwrap();
    assert_eq!(newest(&pool), "10.0.0.1:5");
    assert!(!b2.is_finished());
    back(a5);
    b2.await.unwrap().unwrap();
    assert_eq!(fake.attempts(), 3);
    assert_eq!(pool.status().timeouts_total, 0);
    back((a4, b1));
}

#[tokio::test(start_paused = true)]
async fn a_passed_over_waiter_that_times_out_is_told_why() {
    let (pool, _fake) = shared_pool(2, ShareKey::Application, 1);
    let _a1 = pool.acquire(app("a", "10.0.0.1:1")).await.unwrap();
    let x = pool.acquire(app("x", "10.0.0.9:1")).await.unwrap();
    let a2 = spawn_acquire(&pool, app("a", "10.0.0.1:2")).await;
    let b1 = spawn_acquire(&pool, app("b", "10.0.0.2:1")).await;
    back(x);
    let _b1 = b1.await.unwrap().unwrap();
    advance(Duration::from_secs(5)).await;
    let err = a2.await.unwrap().unwrap_err();
    let AcquireError::Timeout { over_share, .. } = &err else {
        panic!("expected a timeout, got {err:?}");
    };
    let expected = OverShare {
        by: ShareKey::Application,
        key: "a".to_owned(),
        held: 1,
        max: 1,
    };
    assert_eq!(over_share.as_ref(), Some(&expected));
    assert!(
        err.to_string().ends_with(
            "; this client was passed over: application 'a' held 1 connections (fair share 1) \
             while other clients waited, so they were served first"
        ),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn shares_by_address_ignore_the_port() {
    let (pool, _fake) = shared_pool(2, ShareKey::Address, 1);
    let _one = pool.acquire(holder("10.0.0.1:50001")).await.unwrap();
    let other = pool.acquire(holder("[::1]:6000")).await.unwrap();
    let same_host = spawn_acquire(&pool, holder("10.0.0.1:50002")).await;
    let v6 = spawn_acquire(&pool, holder("[::1]:6001")).await;
    back(other);
    // [::1] holds none after the return; 10.0.0.1 still holds one through another port.
    let _v6 = v6.await.unwrap().unwrap();
    assert_eq!(newest(&pool), "[::1]:6001");
    assert!(!same_host.is_finished());
}

#[tokio::test(start_paused = true)]
async fn counts_follow_discards_and_failed_connects() {
    let (pool, fake) = shared_pool(2, ShareKey::Application, 2);
    fake.fail_next(1);
    assert!(pool.acquire(app("a", "10.0.0.1:1")).await.is_err());
    pool.acquire(app("a", "10.0.0.1:2"))
        .await
        .unwrap()
        .discard(crate::DiscardReason::Broken);
    // Had the failed slot or the discarded lease stayed counted, `a` would be at its share.
    let _a = pool.acquire(app("a", "10.0.0.1:3")).await.unwrap();
    let x = pool.acquire(app("x", "10.0.0.9:1")).await.unwrap();
    let a2 = spawn_acquire(&pool, app("a", "10.0.0.1:4")).await;
    let b1 = spawn_acquire(&pool, app("b", "10.0.0.2:1")).await;
    back(x);
    let _a2 = a2.await.unwrap().unwrap();
    assert_eq!(newest(&pool), "10.0.0.1:4", "a holds 1 of 2: first in line");
    settle().await;
    assert!(!b1.is_finished());
}

#[tokio::test(start_paused = true)]
async fn a_strict_share_holds_a_key_back_even_when_nobody_else_waits() {
    let (pool, fake) = share_pool(3, ShareKey::Application, 2, true);
    let _a1 = pool.acquire(app("leaky", "10.0.0.1:1")).await.unwrap();
    let _a2 = pool.acquire(app("leaky", "10.0.0.1:2")).await.unwrap();
    // A third for the same key waits although a connection is free, and times out told why.
    let a3 = spawn_acquire(&pool, app("leaky", "10.0.0.1:3")).await;
    assert_eq!(pool.status().waiters, 1);
    assert_eq!(pool.status().open, 2);
    // Another key gets the free connection at once, past the held-back waiter.
    let b1 = pool.acquire(app("healthy", "10.0.0.2:1")).await.unwrap();
    assert_eq!(newest(&pool), "10.0.0.2:1");
    back(b1);
    advance(Duration::from_secs(6)).await;
    match a3.await.unwrap() {
        Err(e @ AcquireError::Timeout { .. }) => {
            assert!(e.to_string().contains("'leaky'"), "{e}");
        }
        other => panic!("expected a timeout, got {:?}", other.map(|_| ())),
    }
    assert_eq!(fake.attempts(), 3);
}
