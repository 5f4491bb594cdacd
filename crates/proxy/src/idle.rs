//! What a connected client costs while it does nothing, for both front doors.
//!
//! A client's task keeps its future for as long as the client is connected, and an `async`
//! future is as large as its largest await point. So a logged-in client is not an `async fn`
//! at all: it is a [`Parked`] record, a hand-written future of a few words that holds the boxed
//! session and, while the client is idle, polls the client's socket for readability itself
//! (tokio's per-socket reader slot, no waiter node), plus a boxed timer only when a deadline
//! is set, and asks the session whether its door's own wake-up came ([`Park::poll_signal`]:
//! MySQL's KILL CONNECTION, a [`Signal`] the session keeps, so parking allocates nothing for it).
//! Woken, it hands the session to a *busy stretch* ([`stretch`]), a boxed future that
//! owns the session, relays until the client is idle again and gives the session back; the
//! stretch's kilobytes exist only while the client is busy (one allocation per stretch, as
//! the relay box it replaces). The login runs boxed too and is gone once the session starts
//! ([`serve`]).
//!
//! An idle plaintext session without a deadline does not stay parked here for long: it goes to
//! rest in its worker's lot ([`crate::lot`]) at once after its login, and otherwise once the
//! rest timer finds it idle for [`REST_AFTER`] (set once per window, not per park, so a busy
//! client pays no clock read or timer work for it). Then this task ends and the lot resumes
//! the session in a new one ([`Parked::resumed`]) when its socket or its door's wake-up calls.
//!
//! Invariants:
//! - an idle client in its task costs its session record, this record and the task around
//!   it, and, for the one to two seconds before it rests, its read and write buffers (a
//!   session that cannot rest gives them back at every park, see [`Park::shed`]); a resting
//!   one only its session record and a slot; the footprint tests in `lib.rs` and here fail
//!   if a future grows;
//! - only an idle session rests (nothing buffered, no server, no deadline, not TLS), and the
//!   lot watches the same events a parked task does, its socket and [`Park::arm_rest`]'s
//!   wake-up, so resting loses no event either;
//! - an idle client wakes on everything the relay itself would see: data, EOF or an error on
//!   the socket (KILL_CLIENT shuts the socket down, so it is one of these), plaintext rustls
//!   already decrypted ([`ClientStream::poll_readable`]), its deadline, and the door's extra
//!   wake-up. Nothing else reaches an idle client, so parking loses no event;
//! - the session is never dropped by parking: a stretch that ends the session does the
//!   session's own closing (rollback, lease, goodbye) before it returns `None`; a panic is
//!   caught around the whole task (`crate::contain`) as before.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Weak};

use tokio::time::{Instant, Sleep};

use crate::lot::{Lot, Resting, REST_AFTER};
use crate::state::Shared;
use crate::stream::{ClientStream, RestRefused};
use crate::workers::Place;

/// A boxed, sendable future: a busy stretch, or an extra wake-up.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A session that can be parked between busy stretches. Each door's session says how it
/// starts, relays, parks and closes; the order of those steps is [`stretch`]'s, for both.
pub(crate) trait Park: Send + Sized + 'static {
    /// Why a session ended.
    type End: Send;

    /// What kind of task it is, for a panic's log line ([`crate::contain`]).
    const WHAT: &'static str;

    /// For [`crate::contain`] around a task resumed from a lot.
    fn shared(&self) -> Arc<Shared>;

    /// Whether it may rest in a lot when idle (see [`crate::lot`]), beyond what every resting
    /// session must be (idle, plaintext, no deadline).
    fn may_rest(&self) -> bool {
        true
    }

    /// Its socket was closed while converting it in or out of tokio's reactor (see
    /// [`crate::clients::ClientList::detach`]); the session is dropped next.
    fn lost_socket(&mut self);

    /// About to rest in `lot`'s `slot`: the door's own wake-up ([`Park::poll_signal`]) is
    /// pointed there. `true`: it came already, so the session must not rest.
    fn arm_rest(&mut self, _lot: &Arc<Lot>, _slot: usize) -> bool {
        false
    }

    /// Before the first stretch: what the login left to set up (a session-mode server).
    fn start(&mut self) -> impl Future<Output = ()> + Send;

    /// Nothing to do until the client sends something: no server held, nothing buffered.
    fn is_idle(&self) -> bool;

    /// Relays until the session ends (`Some`) or the client is idle again (`None`), after at
    /// least one wait (the one that woke the client).
    fn relay(&mut self) -> impl Future<Output = Option<Self::End>> + Send;

    /// The session's end: the client told why, its server rolled back and returned, or
    /// discarded.
    fn close(self: Box<Self>, end: Self::End) -> impl Future<Output = ()> + Send;

    /// Gets ready to wait: says until when. Its buffers stay (see [`Park::shed`]), unless
    /// one grew for a large message (`SpareBuffers::trim`).
    fn park(&mut self) -> Parking;

    /// Gives its buffers back to the spares: before it rests, and at every park of a session
    /// that cannot rest (it may stay idle in its task for hours). A session that may rest
    /// keeps them between parks, so a busy client does not trade its buffers with the stash
    /// at every statement.
    fn shed(&mut self);

    /// Ready once the door's own wake-up came (MySQL: KILL CONNECTION); polled with the
    /// client's socket while parked, so it must register `cx`'s waker when not ready.
    fn poll_signal(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }

    /// Woken: takes buffers again if it shed them.
    fn wake(&mut self);

    /// The client's connection, whose readability wakes the session.
    fn client(&mut self) -> &mut ClientStream;
}

/// A busy stretch: from a wake-up, or `first` from the login (a session-mode server to start
/// on, or bytes the client pipelined), relays until the client is idle again (`Some`) or the
/// session ended and was closed (`None`). Boxed by [`Parked`] for as long as it runs; in
/// transaction mode a stretch is often a single statement, so the doors keep what it awaits
/// small (under 1 KiB, where the allocator's per-thread cache serves it, and cheap to move
/// in) and box their rare or large steps where they are awaited.
pub(crate) async fn stretch<S: Park>(mut session: Box<S>, first: bool) -> Option<Box<S>> {
    if first {
        // Boxed: once per session, not worth sizing every stretch for.
        Box::pin(session.start()).await;
        // A client that logs in and waits starts idle.
        if session.is_idle() {
            return Some(session);
        }
    }
    session.wake();
    match session.relay().await {
        None => Some(session),
        Some(end) => {
            // Boxed: once per session.
            Box::pin(session.close(end)).await;
            None
        }
    }
}

/// What a parked session waits for besides its client and its [`Park::poll_signal`].
#[derive(Default)]
pub struct Parking {
    pub deadline: Option<Instant>,
}

/// A one-way, level-triggered wake-up for one session, parked in its task or resting in a lot:
/// raised once, it stays raised. A flag and who to wake (the task's last waker, or the lot
/// slot the session rests in), so waiting on it costs neither an allocation nor a waiter node,
/// where a boxed `Notify` wait cost both per park.
#[derive(Debug, Default)]
pub struct Signal {
    raised: AtomicBool,
    waiter: Mutex<Option<Waiter>>,
}

#[derive(Debug)]
enum Waiter {
    Task(Waker),
    Resting { lot: Weak<Lot>, slot: usize },
}

impl Signal {
    /// Raises it and wakes the session waiting on it, if any.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        let waiter = self
            .waiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match waiter {
            Some(Waiter::Task(w)) => w.wake(),
            Some(Waiter::Resting { lot, slot }) => {
                if let Some(lot) = lot.upgrade() {
                    lot.wake_slot(slot);
                }
            }
            None => {}
        }
    }

    /// Ready once raised; otherwise `cx`'s waker is kept for [`Signal::raise`].
    pub fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.raised.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        {
            let mut waiter = self.waiter.lock().unwrap_or_else(PoisonError::into_inner);
            if !matches!(&*waiter, Some(Waiter::Task(w)) if w.will_wake(cx.waker())) {
                *waiter = Some(Waiter::Task(cx.waker().clone()));
            }
        }
        self.raised_since()
    }

    /// The session rests in `lot`'s `slot` from now on: [`Signal::raise`] wakes it there.
    /// `true` if raised already (the session must not rest).
    pub(crate) fn rest_in(&self, lot: &Arc<Lot>, slot: usize) -> bool {
        *self.waiter.lock().unwrap_or_else(PoisonError::into_inner) = Some(Waiter::Resting {
            lot: Arc::downgrade(lot),
            slot,
        });
        self.raised_since().is_ready()
    }

    /// Raised between a first look and the waiter being stored: `raise` may have found no
    /// waiter to wake.
    fn raised_since(&self) -> Poll<()> {
        if self.raised.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Runs a client: `open` (the login, boxed by the caller so that its state does not size the
/// task) and, if it yields a session, the session, parked whenever it is idle.
pub async fn serve<S: Park>(open: Pin<Box<impl Future<Output = Option<Box<S>>>>>, place: Place) {
    // Awaited on its own line: in an `if let` scrutinee the finished login's box would live
    // on for the whole session.
    let session = open.await;
    if let Some(session) = session {
        Parked::new(session, place).await;
    }
}

/// A logged-in client's task state (see the module docs): a few words while idle.
pub struct Parked<S: Park> {
    state: State<S>,
    place: Place,
    /// Sends an idle client to rest: made at its first park in this task, and set again
    /// only when it fires, not at every park (no clock read or timer work per transaction).
    /// When it fires with the client idle since the park it was set at (`parks` unchanged),
    /// the session rests; after newer activity it is set again from then. So a client rests
    /// between [`REST_AFTER`] and twice that after it last did something.
    rest: Option<Pin<Box<Sleep>>>,
    /// Parks in this task so far, and the one `rest` was set at.
    parks: u32,
    rest_set_at: u32,
    /// `rest` counts for this park (the session may rest).
    resting_soon: bool,
    /// `rest` was polled since it was last set, so it holds this task's waker: later parks
    /// only look at whether it fired (a poll per park re-registered the waker each time).
    rest_polled: bool,
    /// The next park is the first since the login: the session rests at once (a client that
    /// logs in and waits).
    fresh: bool,
}

enum State<S> {
    Idle {
        session: Box<S>,
        /// Boxed: a timer is over a hundred bytes, and most idle clients have no deadline.
        sleep: Option<Pin<Box<Sleep>>>,
    },
    Busy(BoxFuture<Option<Box<S>>>),
    Done,
}

impl<S: Park> Parked<S> {
    /// Starts with a stretch: the login may have left a server leased or bytes buffered.
    pub fn new(session: Box<S>, place: Place) -> Self {
        Parked {
            state: State::Busy(Box::pin(stretch(session, true))),
            place,
            rest: None,
            parks: 0,
            rest_set_at: 0,
            resting_soon: false,
            rest_polled: false,
            fresh: true,
        }
    }

    /// Back from the lot: idle in its task, looking at its socket and its door's wake-up
    /// first (a wake-up meant for the slot's previous session, or the sweep of a failed lot,
    /// finds nothing there and the session rests again after [`REST_AFTER`]). It rests again
    /// only after [`REST_AFTER`] idle, so a client that comes back every few hundred
    /// milliseconds does not pay for the trip each time.
    fn resumed(session: Box<S>, place: Place) -> Self {
        let may_rest = session.may_rest();
        Parked {
            state: State::Idle {
                session,
                sleep: None,
            },
            place,
            rest: Some(Box::pin(tokio::time::sleep_until(
                Instant::now() + REST_AFTER,
            ))),
            parks: 0,
            rest_set_at: 0,
            resting_soon: may_rest,
            rest_polled: false,
            fresh: false,
        }
    }

    /// The session goes to rest in the lot: `Ok` when it did (this task ends); otherwise it
    /// stays here, or (`Err(None)`) it lost its socket leaving tokio's reactor and ends.
    fn try_rest(&mut self, mut session: Box<S>) -> Result<(), Option<Box<S>>> {
        // Idle long enough to rest (or just logged in): its buffers go, whether or not it
        // can rest; it takes them again when it wakes.
        session.shed();
        let Some(lot) = self.place.lot.clone() else {
            return Err(Some(session));
        };
        if !lot.is_open() {
            // Its task failed: no client rests there any more.
            self.place.lot = None;
            return Err(Some(session));
        }
        match session.client().rest() {
            Ok(_) => {}
            Err(RestRefused::Kept) => return Err(Some(session)),
            Err(RestRefused::Lost(e)) => {
                session.lost_socket();
                tracing::warn!(error = %e, "a client's socket was lost leaving the reactor to rest; its session ends");
                return Err(None);
            }
        }
        let shared = session.shared();
        match lot.admit(session) {
            Ok(()) => {
                // The lot counts it now.
                self.place.live.rest();
                shared.observe.resting.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(mut session) => match session.client().wake_up() {
                Ok(()) => Err(Some(session)),
                Err(e) => {
                    session.lost_socket();
                    tracing::warn!(error = %e, "a client's socket was lost returning to the reactor; its session ends");
                    Err(None)
                }
            },
        }
    }
}

impl<S: Park> Resting for S {
    fn fd(&mut self) -> Option<RawFd> {
        self.client().fd().map(|fd| fd.as_raw_fd())
    }

    fn arm(&mut self, lot: &Arc<Lot>, slot: usize) -> bool {
        self.arm_rest(lot, slot)
    }

    fn resume(mut self: Box<Self>, lot: &Arc<Lot>) {
        let place = Place {
            lot: Some(lot.clone()),
            live: lot.resumed_live(),
        };
        let shared = self.shared();
        shared.observe.resting.fetch_sub(1, Ordering::Relaxed);
        if let Err(e) = self.client().wake_up() {
            self.lost_socket();
            tracing::warn!(error = %e, "a resting client's socket could not return to the reactor; its session ends");
            return;
        }
        tokio::spawn(crate::contain::contain(
            Parked::resumed(self, place),
            S::WHAT,
            shared,
        ));
    }
}

impl<S: Park> Future for Parked<S> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Busy(stretch) => match stretch.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => {
                        this.state = State::Done;
                        return Poll::Ready(());
                    }
                    Poll::Ready(Some(mut session)) => {
                        let Parking { deadline } = session.park();
                        let may_rest = deadline.is_none()
                            && this.place.lot.is_some()
                            && !session.client().is_tls()
                            && session.may_rest();
                        if !may_rest {
                            session.shed();
                        }
                        let fresh = std::mem::take(&mut this.fresh);
                        if may_rest && fresh {
                            match this.try_rest(session) {
                                Ok(()) | Err(None) => {
                                    this.state = State::Done;
                                    return Poll::Ready(());
                                }
                                Err(Some(back)) => session = back,
                            }
                        }
                        this.resting_soon = may_rest;
                        if may_rest {
                            this.parks = this.parks.wrapping_add(1);
                            match &mut this.rest {
                                Some(timer) if !timer.is_elapsed() => {}
                                Some(timer) => {
                                    timer.as_mut().reset(Instant::now() + REST_AFTER);
                                    this.rest_set_at = this.parks;
                                    this.rest_polled = false;
                                }
                                None => {
                                    let at = Instant::now() + REST_AFTER;
                                    this.rest = Some(Box::pin(tokio::time::sleep_until(at)));
                                    this.rest_set_at = this.parks;
                                    this.rest_polled = false;
                                }
                            }
                        }
                        this.state = State::Idle {
                            session,
                            sleep: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
                        };
                        // Polled at once: that registers the wake-ups (and catches what is
                        // already there).
                    }
                },
                State::Idle { session, sleep } => {
                    // Every source is polled, woken or not, so each has this task's waker.
                    let readable = session.client().poll_readable(cx).is_ready();
                    let due = sleep
                        .as_mut()
                        .is_some_and(|s| s.as_mut().poll(cx).is_ready());
                    let other = session.poll_signal(cx).is_ready();
                    if !(readable || due || other) {
                        let Some(timer) = this.rest.as_mut().filter(|_| this.resting_soon) else {
                            return Poll::Pending;
                        };
                        let fired = if this.rest_polled {
                            timer.is_elapsed()
                        } else {
                            this.rest_polled = true;
                            timer.as_mut().poll(cx).is_ready()
                        };
                        if !fired {
                            return Poll::Pending;
                        }
                        if this.parks != this.rest_set_at {
                            // Busy since it was set: set again from this park.
                            timer.as_mut().reset(Instant::now() + REST_AFTER);
                            this.rest_set_at = this.parks;
                            this.rest_polled = false;
                            continue;
                        }
                        this.resting_soon = false;
                        let State::Idle { session, .. } =
                            std::mem::replace(&mut this.state, State::Done)
                        else {
                            unreachable!("matched Idle above")
                        };
                        match this.try_rest(session) {
                            Ok(()) | Err(None) => return Poll::Ready(()),
                            Err(Some(session)) => {
                                this.state = State::Idle {
                                    session,
                                    sleep: None,
                                };
                                continue;
                            }
                        }
                    }
                    let State::Idle { session, .. } =
                        std::mem::replace(&mut this.state, State::Done)
                    else {
                        unreachable!("matched Idle above")
                    };
                    this.state = State::Busy(Box::pin(stretch(session, false)));
                }
                State::Done => return Poll::Ready(()),
            }
        }
    }
}

#[cfg(test)]
mod tests;
