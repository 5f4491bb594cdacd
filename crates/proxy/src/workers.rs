//! Where client sessions run: one event loop per worker thread, shared nothing.
//!
//! A work-stealing runtime moves tasks between threads and shares one I/O driver, so a
//! transaction's two wake-ups (the client's request, the server's answer) often land on
//! different threads, each crossing costing a futex and a cache miss. poolguard instead runs
//! one single-threaded runtime per worker (PgBouncer's event loop, once per core): the accept
//! loop hands each new client to the worker with the fewest live clients, and the client's
//! session, the server connections it opens and their timers stay on that worker's loop. The
//! pool prefers a server connection made on the asking worker (see
//! `poolguard_pool::Pool::try_acquire_idle`), so a transaction crosses threads only when its
//! worker has no idle connection of its own.
//!
//! Invariants: a session runs on exactly one worker for its whole life; a socket handed to
//! another worker leaves this loop's reactor first and joins that worker's (registration is
//! per runtime); the counts are of live sessions (decremented when the session's future is
//! dropped, however it ends).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::net::TcpStream;
use tokio::runtime::Handle;

use crate::lot::Lot;

/// The worker loops clients are spread over. `local()` has none besides the loop the accept
/// runs on: every client is spawned there (tests, `--threads 1`).
#[derive(Default)]
pub struct Workers {
    /// Other workers' runtimes; the accept loop's own runtime is worker 0 and is not listed.
    others: Vec<Handle>,
    /// Live sessions per worker, index 0 being the accept loop's own.
    live: Arc<[AtomicUsize]>,
    /// Each worker's lot of resting clients, made on that worker's loop when its first client
    /// comes (`None`: it could not be made; that worker's clients then stay in their tasks).
    lots: Arc<[OnceLock<Option<Arc<Lot>>>]>,
}

/// Where a client's session runs: its worker's lot, and its place in that worker's live count.
pub struct Place {
    pub(crate) lot: Option<Arc<Lot>>,
    pub(crate) live: Live,
}

impl Workers {
    /// Every client on the runtime the accept loop runs on.
    pub fn local() -> Arc<Workers> {
        Arc::new(Workers {
            others: Vec::new(),
            live: Arc::from([AtomicUsize::new(0)]),
            lots: Arc::from([OnceLock::new()]),
        })
    }

    /// Clients spread over the accept loop's runtime and `others`.
    pub fn spread(others: Vec<Handle>) -> Arc<Workers> {
        let live = (0..=others.len()).map(|_| AtomicUsize::new(0)).collect();
        let lots = (0..=others.len()).map(|_| OnceLock::new()).collect();
        Arc::new(Workers { others, live, lots })
    }

    /// How many loops clients are spread over.
    pub fn count(&self) -> usize {
        self.live.len()
    }

    /// Runs a new client's session, made by `session` from its socket and its [`Place`], on
    /// the worker with the fewest live sessions (the first such, so a quiet proxy keeps
    /// clients on the accept loop's worker).
    ///
    /// The task spawned holds the session's future and nothing else: tokio sizes a task's
    /// cell for the future it was spawned with for as long as the task lives, and an `async`
    /// block that made the session's future itself would keep the socket, `session`'s captures
    /// and the future side by side (a 512-byte cell per connected client instead of 256).
    pub fn spawn_client<F>(
        &self,
        stream: TcpStream,
        session: impl FnOnce(TcpStream, Place) -> F + Send + 'static,
    ) where
        F: Future<Output = ()> + Send + 'static,
    {
        let worker = self.least_loaded();
        tracing::debug!(worker, "client placed on worker");
        let live = Live::enter(self.live.clone(), worker);
        if worker == 0 {
            let lot = lot_here(&self.lots, &self.live, 0);
            tokio::spawn(session(stream, Place { lot, live }));
            return;
        }
        // Registered with this loop's reactor until now: leave it, join the worker's there.
        let socket = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a client to a worker");
                return;
            }
        };
        // A short task on the worker registers the socket with that loop's reactor (only
        // possible there) and spawns the session's own task beside it.
        let lots = self.lots.clone();
        let counts = self.live.clone();
        self.others[worker - 1].spawn(async move {
            match TcpStream::from_std(socket) {
                Ok(stream) => {
                    let lot = lot_here(&lots, &counts, worker);
                    tokio::spawn(session(stream, Place { lot, live }));
                }
                Err(e) => tracing::warn!(error = %e, "a worker cannot take a client"),
            }
        });
    }

    fn least_loaded(&self) -> usize {
        let mut best = 0;
        let mut fewest = usize::MAX;
        for (i, n) in self.live.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            if n < fewest {
                best = i;
                fewest = n;
            }
        }
        best
    }
}

#[cfg(test)]
impl Place {
    /// A place on no worker's loop and without a lot.
    pub(crate) fn detached() -> Place {
        Place::on(Arc::from([AtomicUsize::new(0)]), 0, None)
    }

    /// Worker `worker` of `counts`, counted from now, with `lot`.
    pub(crate) fn on(counts: Arc<[AtomicUsize]>, worker: usize, lot: Option<Arc<Lot>>) -> Place {
        Place {
            lot,
            live: Live::enter(counts, worker),
        }
    }
}

/// Worker `worker`'s lot, made on first use (this must run on that worker's loop).
fn lot_here(
    lots: &[OnceLock<Option<Arc<Lot>>>],
    counts: &Arc<[AtomicUsize]>,
    worker: usize,
) -> Option<Arc<Lot>> {
    lots.get(worker)?
        .get_or_init(|| match Lot::start(counts.clone(), worker) {
            Ok(lot) => Some(lot),
            Err(e) => {
                tracing::warn!(worker, error = %e, "cannot make a lot for idle clients: they stay in their tasks");
                None
            }
        })
        .clone()
}

/// One live session on a worker, counted until dropped, or until it goes to rest in the
/// worker's lot (which counts it from then on, and gives a new one back when it wakes).
pub(crate) struct Live {
    counts: Arc<[AtomicUsize]>,
    worker: usize,
    counted: bool,
}

impl Live {
    fn enter(counts: Arc<[AtomicUsize]>, worker: usize) -> Live {
        counts[worker].fetch_add(1, Ordering::Relaxed);
        Live {
            counts,
            worker,
            counted: true,
        }
    }

    /// A session back from the lot, which kept it counted.
    pub(crate) fn resumed(counts: Arc<[AtomicUsize]>, worker: usize) -> Live {
        Live {
            counts,
            worker,
            counted: true,
        }
    }

    /// The session went to rest: the lot counts it now.
    pub(crate) fn rest(&mut self) {
        self.counted = false;
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if self.counted {
            self.counts[self.worker].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Starts `n - 1` worker threads, each running a single-threaded runtime for as long as the
/// process lives, and returns their handles; the caller's own runtime is the first worker.
pub fn start_threads(n: usize) -> std::io::Result<Vec<Handle>> {
    let mut handles = Vec::with_capacity(n.saturating_sub(1));
    for i in 1..n {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        handles.push(runtime.handle().clone());
        std::thread::Builder::new()
            .name(format!("poolguard-worker-{i}"))
            .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    }
    Ok(handles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clients_go_to_the_least_loaded_worker_and_leave_it() {
        let others = start_threads(2).unwrap();
        let workers = Workers::spread(others);
        assert_eq!(workers.count(), 2);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..4 {
            let client = TcpStream::connect(addr).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let done = done_tx.clone();
            workers.spawn_client(server, move |mut s, place| {
                Box::pin(async move {
                    let _place = place;
                    use tokio::io::AsyncReadExt;
                    let thread = std::thread::current().name().map(str::to_owned);
                    let _ = done.send(thread);
                    // Lives until the client closes.
                    let mut b = [0u8; 1];
                    let _ = s.read(&mut b).await;
                })
            });
            held.push(client);
        }
        let mut threads = Vec::new();
        for _ in 0..4 {
            threads.push(done_rx.recv().await.unwrap());
        }
        let on_worker = threads
            .iter()
            .filter(|t| t.as_deref() == Some("poolguard-worker-1"))
            .count();
        assert_eq!(
            on_worker, 2,
            "two of four clients on the second worker: {threads:?}"
        );
        assert_eq!(workers.live[0].load(Ordering::Relaxed), 2);
        assert_eq!(workers.live[1].load(Ordering::Relaxed), 2);
        held.clear();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while workers.live.iter().any(|n| n.load(Ordering::Relaxed) != 0) {
            assert!(std::time::Instant::now() < deadline, "sessions never ended");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
