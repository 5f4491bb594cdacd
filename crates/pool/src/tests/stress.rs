//! Many tasks on two worker threads, three pools on one budget (two with fair shares), with
//! cancellations, discards, failed connects and limit changes thrown in. Asserts only counts: the caps held, nothing
//! leaked, nothing deadlocked (the test finishes).

use std::time::Duration;

use rand::Rng;

use super::{cfg, Fake};
use crate::{Admission, Budget, FairShare, Holder, Pool, PoolConfig, ShareKey};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_churn_keeps_every_cap_and_leaks_nothing() {
    let fake = Fake::new();
    let budget = Budget::new(6);
    let pools: Vec<_> = (0..3)
        .map(|i| {
            let config = PoolConfig {
                acquire_timeout: Duration::from_secs(30),
                ..cfg(&format!("db/{i}"), 2, 2)
            };
            let pool = Pool::new(config, fake.clone(), budget.clone());
            // Two of the pools reorder their queue by fair share; the counts must still hold.
            let by = [ShareKey::Application, ShareKey::Address];
            pool.set_admission(Admission {
                fair_share: by.get(i).map(|&by| FairShare {
                    by,
                    max: 1,
                    strict: false,
                }),
                ..Admission::default()
            });
            pool
        })
        .collect();
    let mut tasks = Vec::new();
    for i in 0..600usize {
        let pool = pools[i % 3].clone();
        let (fake, budget) = (fake.clone(), budget.clone());
        tasks.push(tokio::spawn(async move {
            let (cancel_after, discard, fail, lower) = {
                let mut rng = rand::thread_rng();
                (
                    if rng.gen_bool(0.5) {
                        1_000_000
                    } else {
                        rng.gen_range(0..500u64)
                    },
                    rng.gen_bool(0.1),
                    rng.gen_bool(0.05),
                    rng.gen_bool(0.02),
                )
            };
            if fail {
                fake.fail_next(1);
            }
            if lower {
                budget.set_limit(if i % 2 == 0 { 3 } else { 6 });
            }
            let who = Holder::new(
                format!("10.0.0.{}:{i}", i % 7).into(),
                "app".into(),
                "bank".into(),
                format!("app{}", i % 5).into(),
            );
            let acquire = pool.acquire(who);
            let lease =
                match tokio::time::timeout(Duration::from_micros(cancel_after), acquire).await {
                    Err(_cancelled) => return,
                    Ok(Ok(lease)) => lease,
                    // A lost wakeup would show up as a patient acquire timing out.
                    Ok(Err(err)) => {
                        assert!(!err.is_timeout(), "{err}");
                        return;
                    }
                };
            let st = pool.status();
            assert!(st.open + st.connecting <= st.cap, "{st:?}");
            for _ in 0..(i % 4) {
                tokio::task::yield_now().await;
            }
            if discard {
                lease.discard(crate::DiscardReason::Broken);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    budget.set_limit(6);
    assert!(fake.max_live() <= 6, "max live {}", fake.max_live());
    let mut open = 0;
    for pool in &pools {
        let st = pool.status();
        assert_eq!((st.in_use, st.connecting, st.waiters), (0, 0, 0), "{st:?}");
        assert!(pool.holders().is_empty());
        open += st.open;
    }
    let acquired: u64 = pools.iter().map(|p| p.status().acquired_total).sum();
    assert!(acquired >= 100, "the patient half got served: {acquired}");
    assert_eq!(budget.in_use(), open);
    assert_eq!(fake.live(), open);
    drop(pools);
    assert_eq!((budget.in_use(), fake.live()), (0, 0));
}
