//! The parking mechanism on its own, with a real socket pair and a paused clock where time
//! matters: what wakes a parked session, and that nothing else does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A session that counts its stretches, ends on EOF, and reads what woke it.
struct Echo {
    client: ClientStream,
    shared: Arc<Shared>,
    stretches: Arc<AtomicUsize>,
    deadline: Option<Instant>,
    also: Option<Arc<Signal>>,
    /// Set with the extra wake-up: the next stretch ends the session.
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// Times it gave its buffers back.
    sheds: Arc<AtomicUsize>,
}

impl Park for Echo {
    type End = ();

    const WHAT: &'static str = "test client";

    fn arm_rest(&mut self, lot: &Arc<Lot>, slot: usize) -> bool {
        self.also.as_ref().is_some_and(|s| s.rest_in(lot, slot))
    }

    fn lost_socket(&mut self) {}

    fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    async fn start(&mut self) {
        self.stretches.fetch_add(1, Ordering::SeqCst);
    }

    fn is_idle(&self) -> bool {
        true
    }

    async fn relay(&mut self) -> Option<()> {
        self.stretches.fetch_add(1, Ordering::SeqCst);
        if self.stop.load(Ordering::SeqCst) {
            return Some(());
        }
        if self.deadline.is_some_and(|d| d <= Instant::now()) {
            self.deadline = None;
            return None;
        }
        let mut buf = [0u8; 16];
        match self.client.read(&mut buf).await {
            Ok(0) | Err(_) => Some(()),
            Ok(_) => None,
        }
    }

    async fn close(self: Box<Self>, _: ()) {}

    fn park(&mut self) -> Parking {
        Parking {
            deadline: self.deadline,
        }
    }

    fn poll_signal(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &self.also {
            Some(signal) => signal.poll(cx),
            None => Poll::Pending,
        }
    }

    fn shed(&mut self) {
        self.sheds.fetch_add(1, Ordering::SeqCst);
    }

    fn wake(&mut self) {}

    fn client(&mut self) -> &mut ClientStream {
        &mut self.client
    }
}

/// A connected pair, the second end read from once, as a login does: a fresh socket may
/// report itself readable before anything came (tokio allows spurious readiness); a short
/// read settles that, and a session is parked only after its login's reads.
async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (mut b, _) = l.accept().await.unwrap();
    a.write_all(b"login").await.unwrap();
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 5 {
        got += b.read(&mut buf[got..]).await.unwrap();
    }
    (a, b)
}

fn shared() -> Arc<Shared> {
    Shared::new(crate::config::Config::builtin_default("pw"))
}

fn echo(
    ours: TcpStream,
    stretches: Arc<AtomicUsize>,
    deadline: Option<Instant>,
    also: Option<Arc<Signal>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Box<Echo> {
    Box::new(Echo {
        client: ClientStream::Plain(ours),
        shared: shared(),
        stretches,
        deadline,
        also,
        stop,
        sheds: Default::default(),
    })
}

/// A lot on this test's loop, with its live counts.
fn lot() -> (Arc<[AtomicUsize]>, Arc<Lot>) {
    let counts: Arc<[AtomicUsize]> = Arc::from([AtomicUsize::new(0)]);
    let lot = Lot::start(counts.clone(), 0).unwrap();
    (counts, lot)
}

/// Waits (bounded, by count of turns rather than by time) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..100_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never happened: {what}");
}

/// A fresh session rests in the lot at once (its task ends), data wakes it into a task
/// again, it rests once more after `REST_AFTER` idle (the paused clock jumps there as soon
/// as nothing else can run), and EOF wakes it to end. The worker's live count holds one
/// session throughout and none at the end.
#[tokio::test(start_paused = true)]
async fn an_idle_session_rests_in_the_lot_and_its_socket_wakes_it() {
    let (mut peer, ours) = pair().await;
    let (counts, lot) = lot();
    let stretches = Arc::new(AtomicUsize::new(0));
    let session = echo(ours, stretches.clone(), None, None, Default::default());
    // The login's stretch, then rest: the task is over, the session is in the lot.
    rest_after_login(session, &counts, &lot).await;
    assert_eq!(stretches.load(Ordering::SeqCst), 1);
    assert_eq!(lot.resting(), 1);
    assert_eq!(
        counts[0].load(Ordering::SeqCst),
        1,
        "still counted while resting"
    );
    peer.write_all(b"x").await.unwrap();
    until("data woke the resting session", || {
        stretches.load(Ordering::SeqCst) == 2
    })
    .await;
    // Back in a task and idle there; it rests again once REST_AFTER has passed (the
    // paused clock gets there while this test sleeps, the session's timer first).
    assert_eq!(lot.resting(), 0);
    // (It rests between REST_AFTER and twice that after it last did something.)
    tokio::time::sleep(REST_AFTER * 3).await;
    assert_eq!(lot.resting(), 1, "rested again after REST_AFTER");
    assert_eq!(
        stretches.load(Ordering::SeqCst),
        2,
        "nothing ran while waiting"
    );
    assert_eq!(counts[0].load(Ordering::SeqCst), 1);
    drop(peer);
    until("EOF woke it and ended it", || {
        stretches.load(Ordering::SeqCst) == 3 && counts[0].load(Ordering::SeqCst) == 0
    })
    .await;
    assert_eq!(lot.resting(), 0);
}

/// A wake-up with nothing behind it (meant for the slot's previous session) resumes the
/// session idle in a task, runs nothing, and the session rests again.
#[tokio::test(start_paused = true)]
async fn a_spurious_wake_up_runs_nothing_and_the_session_rests_again() {
    let (_peer, ours) = pair().await;
    let (counts, lot) = lot();
    let stretches = Arc::new(AtomicUsize::new(0));
    let session = echo(ours, stretches.clone(), None, None, Default::default());
    rest_after_login(session, &counts, &lot).await;
    assert_eq!(lot.resting(), 1);
    lot.wake_slot(0);
    until("the wake-up resumed it", || lot.resting() == 0).await;
    tokio::time::sleep(REST_AFTER * 3).await;
    assert_eq!(lot.resting(), 1, "it rested again");
    assert_eq!(stretches.load(Ordering::SeqCst), 1, "nothing ran");
    assert_eq!(counts[0].load(Ordering::SeqCst), 1);
}

/// The door's other wake-up reaches a resting session too (MySQL's KILL CONNECTION), from
/// another thread, and one already raised keeps the session from resting at all.
#[tokio::test]
async fn the_extra_wake_up_resumes_a_resting_session() {
    let (_peer, ours) = pair().await;
    let (counts, lot) = lot();
    let stretches = Arc::new(AtomicUsize::new(0));
    let wake = Arc::new(Signal::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let session = echo(
        ours,
        stretches.clone(),
        None,
        Some(wake.clone()),
        stop.clone(),
    );
    rest_after_login(session, &counts, &lot).await;
    assert_eq!(lot.resting(), 1);
    stop.store(true, Ordering::SeqCst);
    let raiser = wake.clone();
    std::thread::spawn(move || raiser.raise()).join().unwrap();
    until("the extra wake-up resumed and ended it", || {
        stretches.load(Ordering::SeqCst) == 2 && counts[0].load(Ordering::SeqCst) == 0
    })
    .await;
    assert_eq!(lot.resting(), 0);

    // Raised before the session would rest: it stays in its task, which sees it at once.
    let (_peer, ours) = pair().await;
    let stretches = Arc::new(AtomicUsize::new(0));
    let wake = Arc::new(Signal::default());
    wake.raise();
    let session = echo(ours, stretches.clone(), None, Some(wake), stop.clone());
    let mut task = Parked::new(session, Place::on(counts.clone(), 0, Some(lot.clone())));
    assert!(poll_once(&mut task), "woken at once and ended");
    assert_eq!(stretches.load(Ordering::SeqCst), 2);
    assert_eq!(lot.resting(), 0);
}

/// A TLS client, or a session with a deadline, or one whose door says no, stays in its task.
#[tokio::test]
async fn a_session_with_a_deadline_does_not_rest() {
    let (_peer, ours) = pair().await;
    let (counts, lot) = lot();
    let session = echo(
        ours,
        Default::default(),
        Some(Instant::now() + Duration::from_secs(3600)),
        None,
        Default::default(),
    );
    let sheds = session.sheds.clone();
    let mut task = Parked::new(session, Place::on(counts, 0, Some(lot.clone())));
    assert!(!poll_once(&mut task), "parked in its task");
    assert_eq!(lot.resting(), 0);
    assert_eq!(
        sheds.load(Ordering::SeqCst),
        1,
        "a session that cannot rest gives its buffers back at its park"
    );
}

/// A session that may rest keeps its buffers from one park to the next (no trade with the
/// spares per statement) and gives them back when it rests.
#[tokio::test(start_paused = true)]
async fn a_busy_session_keeps_its_buffers_until_it_rests() {
    let (mut peer, ours) = pair().await;
    let (counts, lot) = lot();
    let stretches = Arc::new(AtomicUsize::new(0));
    let session = echo(ours, stretches.clone(), None, None, Default::default());
    let sheds = session.sheds.clone();
    rest_after_login(session, &counts, &lot).await;
    assert_eq!(
        sheds.load(Ordering::SeqCst),
        1,
        "shed to rest after the login"
    );
    for (i, byte) in [b"x", b"y", b"z"].into_iter().enumerate() {
        peer.write_all(byte).await.unwrap();
        until("data woke the session", || {
            stretches.load(Ordering::SeqCst) == 2 + i
        })
        .await;
        assert_eq!(lot.resting(), 0, "in its task between statements");
        assert_eq!(
            sheds.load(Ordering::SeqCst),
            1,
            "buffers kept between parks"
        );
    }
    tokio::time::sleep(REST_AFTER * 3).await;
    assert_eq!(lot.resting(), 1, "rested once idle");
    assert_eq!(sheds.load(Ordering::SeqCst), 2, "shed to rest");
}

/// Runs a fresh session on `lot`'s worker until it rests there (its task ends).
async fn rest_after_login(session: Box<Echo>, counts: &Arc<[AtomicUsize]>, lot: &Arc<Lot>) {
    let place = Place::on(counts.clone(), 0, Some(lot.clone()));
    tokio::time::timeout(
        Duration::from_secs(60),
        tokio::spawn(Parked::new(session, place)),
    )
    .await
    .expect("the session rested and its task ended")
    .unwrap();
}

/// Polls `f` once (without waiting): whether it finished.
fn poll_once<F: Future + Unpin>(f: &mut F) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    Pin::new(f).poll(&mut cx).is_ready()
}

#[test]
fn a_parked_client_is_a_few_words() {
    // 88: the worker's lot and live count, and the rest timer with its two counts (a resting client has no
    // task at all, so this counts only for clients idle in their tasks).
    let size = std::mem::size_of::<Parked<Echo>>();
    assert!(size <= 88, "Parked: {size} bytes");
}

#[tokio::test]
async fn readable_data_and_eof_wake_a_parked_session() {
    let (mut peer, ours) = pair().await;
    let stretches = Arc::new(AtomicUsize::new(0));
    let session = echo(ours, stretches.clone(), None, None, Default::default());
    let mut task = Parked::new(session, Place::detached());
    // The first stretch runs at once and parks; nothing to read: still parked.
    assert!(!poll_once(&mut task));
    assert_eq!(stretches.load(Ordering::SeqCst), 1);
    assert!(!poll_once(&mut task));
    assert_eq!(stretches.load(Ordering::SeqCst), 1);
    let handle = tokio::spawn(task);
    peer.write_all(b"x").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stretches.load(Ordering::SeqCst) < 2 {
        assert!(std::time::Instant::now() < deadline, "data did not wake it");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(peer);
    tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("EOF ended the session")
        .unwrap();
    assert_eq!(stretches.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_and_the_extra_wake_up_wake_a_parked_session() {
    let (peer, ours) = pair().await;
    let stretches = Arc::new(AtomicUsize::new(0));
    let wake = Arc::new(Signal::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let session = echo(
        ours,
        stretches.clone(),
        Some(Instant::now() + Duration::from_secs(60)),
        Some(wake.clone()),
        stop.clone(),
    );
    let mut task = Parked::new(session, Place::detached());
    assert!(!poll_once(&mut task));
    assert_eq!(stretches.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(!poll_once(&mut task));
    assert_eq!(
        stretches.load(Ordering::SeqCst),
        1,
        "woken before its deadline"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(!poll_once(&mut task));
    assert_eq!(stretches.load(Ordering::SeqCst), 2, "the deadline woke it");
    assert!(!poll_once(&mut task));
    assert_eq!(stretches.load(Ordering::SeqCst), 2);
    // The extra wake-up alone (the peer sent nothing).
    stop.store(true, Ordering::SeqCst);
    wake.raise();
    assert!(poll_once(&mut task), "the extra wake-up woke it");
    assert_eq!(stretches.load(Ordering::SeqCst), 3);
    drop(peer);
}
