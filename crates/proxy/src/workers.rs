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
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::net::TcpStream;
use tokio::runtime::Handle;

/// The worker loops clients are spread over. `local()` has none besides the loop the accept
/// runs on: every client is spawned there (tests, `--threads 1`).
#[derive(Default)]
pub struct Workers {
    /// Other workers' runtimes; the accept loop's own runtime is worker 0 and is not listed.
    others: Vec<Handle>,
    /// Live sessions per worker, index 0 being the accept loop's own.
    live: Arc<[AtomicUsize]>,
}

impl Workers {
    /// Every client on the runtime the accept loop runs on.
    pub fn local() -> Arc<Workers> {
        Arc::new(Workers {
            others: Vec::new(),
            live: Arc::from([AtomicUsize::new(0)]),
        })
    }

    /// Clients spread over the accept loop's runtime and `others`.
    pub fn spread(others: Vec<Handle>) -> Arc<Workers> {
        let live = (0..=others.len()).map(|_| AtomicUsize::new(0)).collect();
        Arc::new(Workers { others, live })
    }

    /// How many loops clients are spread over.
    pub fn count(&self) -> usize {
        self.live.len()
    }

    /// Runs a new client's session, made by `session` from its socket, on the worker with the
    /// fewest live sessions (the first such, so a quiet proxy keeps clients on the accept
    /// loop's worker).
    ///
    /// The task spawned holds the session's future and the live count, nothing else: tokio
    /// sizes a task's cell for the future it was spawned with for as long as the task lives,
    /// and an `async` block that made the session's future itself would keep the socket,
    /// `session`'s captures and the future side by side (a 512-byte cell per connected
    /// client instead of 256).
    pub fn spawn_client<F>(
        &self,
        stream: TcpStream,
        session: impl FnOnce(TcpStream) -> F + Send + 'static,
    ) where
        F: Future<Output = ()> + Send + Unpin + 'static,
    {
        let worker = self.least_loaded();
        tracing::debug!(worker, "client placed on worker");
        let live = Live::enter(self.live.clone(), worker);
        if worker == 0 {
            tokio::spawn(Counted {
                task: session(stream),
                _live: live,
            });
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
        self.others[worker - 1].spawn(async move {
            match TcpStream::from_std(socket) {
                Ok(stream) => {
                    tokio::spawn(Counted {
                        task: session(stream),
                        _live: live,
                    });
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

/// A client's task: its session's future, counted live until dropped.
struct Counted<F> {
    task: F,
    _live: Live,
}

impl<F: Future<Output = ()> + Unpin> Future for Counted<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.task).poll(cx)
    }
}

/// One live session on a worker, counted until dropped.
struct Live {
    counts: Arc<[AtomicUsize]>,
    worker: usize,
}

impl Live {
    fn enter(counts: Arc<[AtomicUsize]>, worker: usize) -> Live {
        counts[worker].fetch_add(1, Ordering::Relaxed);
        Live { counts, worker }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.counts[self.worker].fetch_sub(1, Ordering::Relaxed);
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
            workers.spawn_client(server, move |mut s| {
                Box::pin(async move {
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
