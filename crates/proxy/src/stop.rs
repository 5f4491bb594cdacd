//! Where a client's running statement can be stopped, shared by both doors: the server key a
//! session records for each lease (PostgreSQL: the server's BackendKeyData; MySQL: its thread
//! id), and the hold that a stopper from outside the session (another connection's
//! CancelRequest or `KILL QUERY`) takes while it stops that statement. (`query_timeout` stops
//! from the session's own task, which holds the server itself, and needs no hold.)
//!
//! Invariant: while a hold is taken the key cannot change. A session clears its key before its
//! server goes back to the pool, and waits for a hold to end before it can, so a stop is only
//! ever sent to a server while the client it was meant for still holds it. A stopper must
//! therefore keep its hold until the server has acted on the stop, and must not run where a
//! timeout of its caller could drop it half-way (the PostgreSQL door runs each CancelRequest
//! in a task of its own for that reason). Stoppers and
//! waiting sessions take turns first come, first served, so repeated stops cannot keep a
//! session (and the server it holds) waiting for ever.
//!
//! Why not an async mutex around the key: a session sets it twice per transaction, and tokio's
//! mutex takes its waiter list's lock on every release, even with nobody waiting. Here a set
//! that finds no hold is one uncontended std mutex lock; only stoppers, and sessions that found
//! a hold, queue on the async lock of turns.

use std::sync::{Mutex, MutexGuard};

use crate::lock;

/// One client's stop target (`K`: the door's server key).
pub struct StopTarget<K> {
    slot: Mutex<Slot<K>>,
    /// Whose turn it is: a stopper for the length of its hold, or a session that found a hold
    /// and waits to set its key. Never taken by a set that finds no hold.
    turns: tokio::sync::Mutex<()>,
}

struct Slot<K> {
    key: Option<K>,
    /// A stopper holds the key (it is stopping the statement on that server).
    held: bool,
}

impl<K> Default for StopTarget<K> {
    fn default() -> Self {
        StopTarget {
            slot: Mutex::new(Slot {
                key: None,
                held: false,
            }),
            turns: tokio::sync::Mutex::new(()),
        }
    }
}

impl<K: Clone> StopTarget<K> {
    /// Records the server the client's statements run on (`None`: none). Waits while a stopper
    /// holds the key, in turn with stoppers that came earlier.
    ///
    /// The key is set (or found held) when this is called, not when the future is first
    /// polled: the common case is done before the caller awaits, and its future only says so.
    pub fn set(&self, key: Option<K>) -> impl std::future::Future<Output = ()> + '_ {
        let held = self.try_set(key).err();
        async move {
            if let Some(key) = held {
                // Boxed: the rare wait stays out of the caller's future.
                let _turn = Box::pin(self.turns.lock()).await;
                // Holds are taken only on a turn, and this is ours: nobody holds the key now.
                self.slot().key = key;
            }
        }
    }

    /// The key as it is now (a copy; for reports such as SHOW PROCESSLIST's ids, never to
    /// stop anything: only a [`Hold`] keeps it in place).
    pub fn peek(&self) -> Option<K>
    where
        K: Clone,
    {
        self.slot().key.clone()
    }

    /// [`StopTarget::set`] if no stopper holds the key (nearly always: twice per transaction,
    /// without building the lock's future); otherwise the key comes back.
    pub fn try_set(&self, key: Option<K>) -> Result<(), Option<K>> {
        let mut slot = self.slot();
        if slot.held {
            return Err(key);
        }
        slot.key = key;
        Ok(())
    }

    /// Takes a hold, in turn: the key then names the server to stop (if the client holds
    /// one), and stays so until the hold is dropped.
    pub async fn hold(&self) -> Hold<'_, K> {
        let turn = self.turns.lock().await;
        let key = {
            let mut slot = self.slot();
            // Cloned before the flag is raised: nothing may leave it raised without a hold.
            let key = slot.key.clone();
            slot.held = true;
            key
        };
        Hold {
            target: self,
            key,
            _turn: turn,
        }
    }
}

impl<K> StopTarget<K> {
    fn slot(&self) -> MutexGuard<'_, Slot<K>> {
        // Nothing panics under this lock (it only moves a key), so a poisoned one is whole.
        lock(&self.slot)
    }
}

/// A stopper's hold on a target; dropping it (also when the stopper's future is dropped, or
/// panics) lets the session set its key again.
pub struct Hold<'a, K> {
    target: &'a StopTarget<K>,
    /// The server to stop, as the session last recorded it.
    pub key: Option<K>,
    // Dropped after `drop` below has cleared `held`, so the next in turn finds it clear.
    _turn: tokio::sync::MutexGuard<'a, ()>,
}

impl<K> Drop for Hold<'_, K> {
    fn drop(&mut self) {
        self.target.slot().held = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    /// Futures are polled by hand, one step at a time, so the order of events is the test's.
    struct Nobody;
    impl Wake for Nobody {
        fn wake(self: Arc<Self>) {}
    }

    fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(&Waker::from(Arc::new(Nobody))))
    }

    fn ready<T>(p: Poll<T>) -> T {
        match p {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("expected the future to be ready"),
        }
    }

    #[test]
    fn a_hold_sees_the_key_and_keeps_it_until_dropped() {
        let t = StopTarget::<u32>::default();
        assert_eq!(t.try_set(Some(7)), Ok(()));
        let hold = ready(poll_once(pin!(t.hold())));
        assert_eq!(hold.key, Some(7));
        // The session cannot clear it (and so cannot give its server back) meanwhile.
        assert_eq!(t.try_set(None), Err(None));
        let mut clear = pin!(t.set(None));
        assert!(poll_once(clear.as_mut()).is_pending());
        assert!(poll_once(clear.as_mut()).is_pending());
        drop(hold);
        ready(poll_once(clear.as_mut()));
        let hold = ready(poll_once(pin!(t.hold())));
        assert_eq!(hold.key, None);
    }

    #[test]
    fn without_a_hold_a_set_is_immediate() {
        let t = StopTarget::<u32>::default();
        ready(poll_once(pin!(t.set(Some(1)))));
        assert_eq!(t.try_set(Some(2)), Ok(()));
        assert_eq!(ready(poll_once(pin!(t.hold()))).key, Some(2));
        // The hold above was dropped at the end of its statement: sets work again.
        assert_eq!(t.try_set(None), Ok(()));
    }

    #[test]
    fn a_waiting_session_goes_before_a_later_stopper() {
        let t = StopTarget::<u32>::default();
        t.try_set(Some(1)).unwrap();
        let first = ready(poll_once(pin!(t.hold())));
        let mut session = pin!(t.set(None));
        assert!(poll_once(session.as_mut()).is_pending());
        let mut second = pin!(t.hold());
        assert!(poll_once(second.as_mut()).is_pending());
        drop(first);
        // The second stopper is still behind the session, though it is polled first.
        assert!(poll_once(second.as_mut()).is_pending());
        ready(poll_once(session.as_mut()));
        // The session's turn ended with its set: the second stopper finds the key cleared.
        assert_eq!(ready(poll_once(second.as_mut())).key, None);
    }

    #[test]
    fn a_stopper_dropped_while_waiting_for_its_turn_leaves_no_hold() {
        let t = StopTarget::<u32>::default();
        t.try_set(Some(1)).unwrap();
        let first = ready(poll_once(pin!(t.hold())));
        {
            let mut second = pin!(t.hold());
            assert!(poll_once(second.as_mut()).is_pending());
        }
        drop(first);
        assert_eq!(t.try_set(None), Ok(()));
        // Nor a turn: the next stopper gets one at once.
        assert_eq!(ready(poll_once(pin!(t.hold()))).key, None);
    }

    #[test]
    fn a_set_takes_effect_when_called_not_when_awaited() {
        let t = StopTarget::<u32>::default();
        drop(t.set(Some(3)));
        assert_eq!(ready(poll_once(pin!(t.hold()))).key, Some(3));
    }
}
