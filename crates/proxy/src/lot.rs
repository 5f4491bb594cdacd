//! Where idle clients rest: a small record each, woken by their socket's readiness, with no
//! task and no place in tokio's reactor.
//!
//! A client parked in its task ([`crate::idle::Parked`]) still costs that task's cell (256 B,
//! cache-line aligned) and tokio's registration of its socket (256 B, aligned likewise), more
//! than its session record. Thousands of idle clients are what poolguard exists for (the
//! incidents were clients that held connections and did nothing), so an idle client that
//! rests is only its session: the session's task ends, its socket leaves tokio's reactor
//! and joins the lot's own epoll set, and the lot keeps the boxed session in a slot (16 B).
//! When the socket becomes readable (data, EOF, an error, a KILL_CLIENT shutdown) the lot
//! takes the session out, puts the socket back in tokio's reactor and spawns the session's
//! task again, on the same worker loop.
//!
//! One lot per worker loop; its task ([`Lot::run`]) waits for the lot's epoll descriptor to be
//! readable in tokio's reactor, then collects the ready clients without blocking.
//!
//! Going to rest and coming back cost four system calls and a task, so a busy client does not
//! rest between transactions: it rests at once after its login (a client that logs in and
//! waits), and otherwise after [`REST_AFTER`] with nothing to do (see `idle::Parked`).
//!
//! Invariants:
//! - a resting session is idle: no server held, nothing buffered, no deadline, plaintext (TLS
//!   keeps decrypted bytes beside the socket, so a TLS client stays in its task); so the only
//!   event it can miss is its socket's, which is what the lot watches;
//! - the session owns its socket while it rests (`ClientStream::Resting`), so the client list's
//!   guarantee (unlisted before the socket closes, [`crate::clients`]) holds as in a task: a
//!   dropped lot drops its sessions, each unlisting itself first;
//! - a registration with the lot's epoll set is made with the slot, and removed before the
//!   slot is given to another session, so an event names the session it was registered for;
//! - if the lot's task ends (its epoll set failed), every resting session is woken and no new
//!   one is taken: nobody is left asleep.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use tokio::io::unix::AsyncFd;

use crate::lock;

/// The token of the lot's own wake-up ([`Lot::wake_slot`]); a slot index never reaches it.
const WOKEN: Token = Token(usize::MAX);

/// How long a client that was busy waits in its task, with nothing to do, before it rests.
pub const REST_AFTER: Duration = Duration::from_secs(1);

/// A session that can rest in a lot (each door's session, boxed).
pub(crate) trait Resting: Send {
    /// Its socket's descriptor, registered with the lot while it rests.
    fn fd(&mut self) -> Option<RawFd>;

    /// About to rest in `slot`: a session that waits for another wake-up besides its socket
    /// (MySQL's KILL CONNECTION) points it at [`Lot::wake_slot`]. `true`: that wake-up is
    /// already there, so the session must not rest.
    fn arm(&mut self, lot: &Arc<Lot>, slot: usize) -> bool;

    /// Woken: back into a task on `lot`'s loop, counted live there again.
    fn resume(self: Box<Self>, lot: &Arc<Lot>);
}

/// One worker loop's resting clients.
pub struct Lot {
    /// Registers with the lot's epoll set (the set itself is the task's, see [`Lot::run`]).
    registry: Registry,
    /// Makes the set readable from anywhere (token [`WOKEN`]), for the slots in `woken`.
    waker: mio::Waker,
    /// Slots whose session's other wake-up came ([`Lot::wake_slot`]).
    woken: Mutex<Vec<usize>>,
    slots: Mutex<Slots>,
    /// The lot's task ended: it takes no one any more.
    closed: AtomicBool,
    /// The worker's live-session counts (`crate::workers`): a resting session stays counted.
    counts: Arc<[AtomicUsize]>,
    worker: usize,
}

#[derive(Default)]
struct Slots {
    entries: Vec<Option<Box<dyn Resting>>>,
    free: Vec<usize>,
}

impl Slots {
    /// An empty slot's index, to be filled or given back to `free`.
    fn reserve(&mut self) -> usize {
        self.free.pop().unwrap_or_else(|| {
            self.entries.push(None);
            self.entries.len() - 1
        })
    }

    fn fill(&mut self, i: usize, session: Box<dyn Resting>) {
        debug_assert!(i < self.entries.len(), "slot {i} was reserved");
        if let Some(slot) = self.entries.get_mut(i) {
            *slot = Some(session);
        }
    }

    /// Empties slot `i`; the caller frees it ([`Slots::free`]) once its registration is gone.
    fn take(&mut self, i: usize) -> Option<Box<dyn Resting>> {
        self.entries.get_mut(i)?.take()
    }
}

impl Lot {
    /// A lot for the worker loop this is called on (its task spawned there), for worker
    /// `worker` of `counts`.
    pub(crate) fn start(counts: Arc<[AtomicUsize]>, worker: usize) -> io::Result<Arc<Lot>> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = mio::Waker::new(&registry, WOKEN)?;
        // The deprecated constructor is sound here: `AsyncFd` owns the `Poll`, so the set's
        // descriptor leaves tokio's reactor before it is closed (what the I/O-safety note is
        // about); the replacement is `unsafe`, which this crate does not allow.
        #[allow(deprecated)]
        let set = AsyncFd::with_interest(poll, tokio::io::Interest::READABLE)?;
        let lot = Arc::new(Lot {
            registry,
            waker,
            woken: Mutex::default(),
            slots: Mutex::default(),
            closed: AtomicBool::new(false),
            counts,
            worker,
        });
        tokio::spawn(lot.clone().run(set));
        Ok(lot)
    }

    /// Whether it still takes sessions (its task has not failed).
    pub(crate) fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    /// How many sessions rest here now (counted from the slots, for tests: the metric is
    /// `Observe::resting`, kept by the sessions as they come and go).
    #[cfg(test)]
    pub fn resting(&self) -> usize {
        lock(&self.slots).entries.iter().flatten().count()
    }

    /// Takes `session` to rest: from now on its socket's readiness resumes it. Given back if
    /// the lot cannot take it (the session then stays in its task).
    pub(crate) fn admit<S: Resting + 'static>(
        self: &Arc<Self>,
        mut session: Box<S>,
    ) -> Result<(), Box<S>> {
        let Some(fd) = session.fd() else {
            return Err(session);
        };
        let mut slots = lock(&self.slots);
        // Under the slots' lock, which the failed task's sweep takes after closing: a session
        // admitted here is swept.
        if self.closed.load(Ordering::Acquire) {
            return Err(session);
        }
        let i = slots.reserve();
        // The slots stay locked until the session is in its slot, so a wake-up for it that
        // comes meanwhile finds it there.
        if session.arm(self, i) {
            slots.free.push(i);
            return Err(session);
        }
        // Edge-triggered, and reported at once if the socket is readable already: bytes that
        // came while the session was leaving its task wake it here (once the lock is free).
        match self
            .registry
            .register(&mut SourceFd(&fd), Token(i), Interest::READABLE)
        {
            Ok(()) => {
                slots.fill(i, session);
                Ok(())
            }
            Err(e) => {
                slots.free.push(i);
                tracing::debug!(error = %e, "a client cannot rest: it stays in its task");
                Err(session)
            }
        }
    }

    /// Resumes the session resting in `slot`, from any thread (a session's other wake-up,
    /// see [`crate::idle::Signal`]). A session that left the slot before this may make it wake
    /// the slot's next session: a spurious wake-up, which a session takes as any other (it
    /// finds nothing to do and rests again).
    pub(crate) fn wake_slot(&self, slot: usize) {
        lock(&self.woken).push(slot);
        if let Err(e) = self.waker.wake() {
            tracing::warn!(error = %e, "cannot wake a worker's lot of idle clients");
        }
    }

    /// The live count a resumed session takes over (it stayed counted while resting).
    pub(crate) fn resumed_live(&self) -> crate::workers::Live {
        crate::workers::Live::resumed(self.counts.clone(), self.worker)
    }

    /// Wakes the session in slot `i`: out of the epoll set, then back into a task.
    fn wake(self: &Arc<Self>, i: usize) {
        let Some(mut session) = lock(&self.slots).take(i) else {
            return;
        };
        if let Some(fd) = session.fd() {
            // Before the slot can be given again: a later event for this descriptor must not
            // name the next session in it. Closing the socket would remove it too, so a
            // failure here leaves nothing behind that matters.
            let _ = self.registry.deregister(&mut SourceFd(&fd));
        }
        lock(&self.slots).free.push(i);
        // Nothing in a resume is expected to panic (it spawns a task); if something did, the
        // session is dropped (its client told and unlisted, see `crate::contain`) and every
        // other resting session keeps its lot.
        let resumed =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session.resume(self)));
        if resumed.is_err() {
            tracing::error!(
                "resuming a resting client panicked; that client's connection is closed"
            );
        }
    }

    /// The lot's task: waits for its epoll set `set` to be readable in tokio's reactor, then
    /// resumes every session whose socket became readable.
    async fn run(self: Arc<Self>, mut set: AsyncFd<Poll>) {
        let mut events = Events::with_capacity(256);
        let failed = loop {
            let mut guard = match set.readable_mut().await {
                Ok(g) => g,
                Err(e) => break e,
            };
            let error = loop {
                events.clear();
                let polled = guard
                    .get_inner_mut()
                    .poll(&mut events, Some(Duration::ZERO));
                match polled {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => break Some(e),
                }
                if events.is_empty() {
                    // Drained; readiness that came since is kept by tokio for the next wait.
                    guard.clear_ready();
                    break None;
                }
                for event in events.iter() {
                    if event.token() == WOKEN {
                        let woken = std::mem::take(&mut *lock(&self.woken));
                        for i in woken {
                            self.wake(i);
                        }
                    } else {
                        self.wake(event.token().0);
                    }
                }
            };
            if let Some(e) = error {
                break e;
            }
        };
        tracing::error!(error = %failed, "a worker's lot of idle clients failed: its clients are woken and none rests any more");
        let all = {
            let slots = lock(&self.slots);
            self.closed.store(true, Ordering::Release);
            slots.entries.len()
        };
        for i in 0..all {
            self.wake(i);
        }
    }
}
