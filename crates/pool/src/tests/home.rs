//! A connection made on the asking thread is preferred: its socket is on that thread's event
//! loop, so using it crosses no thread (the proxy runs one loop per worker thread).

use super::{conn_id, holder, Fake, GiveBack};
use crate::{Budget, Pool};

/// Acquires one connection on a thread of its own (its own runtime) and returns it held.
fn acquire_elsewhere(pool: &Pool<Fake>) -> crate::Lease<Fake> {
    let pool = pool.clone();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(pool.acquire(holder("elsewhere:1")))
            .unwrap()
    })
    .join()
    .unwrap()
}

#[tokio::test]
async fn an_idle_connection_made_on_this_thread_is_taken_first() {
    let pool = Pool::new(super::cfg("db/u", 4, 0), Fake::new(), Budget::new(10));
    let here = pool.acquire(holder("here:1")).await.unwrap();
    let here_id = conn_id(&here);
    let there = acquire_elsewhere(&pool);
    let there_id = conn_id(&there);
    // The other thread's connection is the most recently returned: plain LIFO would take it.
    here.give_back();
    there.give_back();
    let first = pool.acquire(holder("here:2")).await.unwrap();
    assert_eq!(conn_id(&first), here_id, "this thread's connection first");
    // With none of this thread's left idle, any idle connection serves.
    let second = pool.try_acquire_idle(holder("here:3")).ok().unwrap();
    assert_eq!(conn_id(&second), there_id);
    (first, second).give_back();
}
