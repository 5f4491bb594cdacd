//! Session state machines fuzzed end to end: the real proxy ([`crate::Proxy`]) in front of a
//! scripted fake server, driven by scripted clients, both scripts read from the fuzz input.
//!
//! The proxy, its runtime and the fake server live across inputs ([`Rig`], started once per
//! process and per door): starting a proxy per input would cost more than the input itself.
//! Inputs run one at a time (the rig is behind a mutex) and each ends only once the proxy has
//! settled: no client connected, no server leased or being opened.
//!
//! Invariants checked after every input (a failure panics, which libFuzzer and the replay test
//! report with the input):
//! - no session task panicked (`observe.panics`);
//! - no lease was dropped or released without a proof that held (`discarded_total[Dropped]`,
//!   `discarded_total[Unproven]`): the sessions' decisions, not the pool's last line of
//!   defence, kept unclean servers out of the pool;
//! - the fake server never saw a connection change hands while, by its own account, a
//!   transaction was open, a COPY or a result was unfinished, a request was unanswered, or its
//!   byte stream was broken ([`Violations`]). Clients are told apart by a marker each sends
//!   (its `application_name`, which the proxy forwards with a SET on every handover, and a
//!   comment in each query), so the fake server needs no knowledge of the proxy;
//! - every client got its answers within [`ANSWER_WITHIN`] (a hang is reported, not waited out).

pub mod mysql;
pub mod pg;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use poolguard_pool::{DiscardReason, PoolStatus};

use crate::state::Shared;

/// How long a client waits for an answer it is owed before the harness calls it a hang. Far
/// above any real answer here (everything is on loopback and the fake server answers at once),
/// far below libFuzzer's `-timeout`.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// How long the proxy may take to settle after the clients are done: every session ended,
/// every lease back, every reset finished. Beyond the reclaim timeout (10 s, after which a
/// server that does not come back is discarded), so only a stuck session is reported.
const SETTLE_WITHIN: Duration = Duration::from_secs(15);

/// At most this many clients per input: with pools of one or two servers, enough for
/// servers to change hands and for clients to queue.
pub const MAX_CLIENTS: usize = 3;

/// The fuzz input, read front to back; past its end every read is 0, so any prefix of an
/// input is a complete script.
pub struct Script<'a> {
    data: &'a [u8],
}

impl<'a> Script<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Script { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n.max(1)
    }
}

/// What the fake servers saw that must not happen, in the order seen.
#[derive(Default)]
pub struct Violations(Mutex<Vec<String>>);

impl Violations {
    pub fn push(&self, what: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(what);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The pools' statuses, from whichever door's registry holds them.
type Statuses = fn(&Shared) -> Vec<PoolStatus>;

/// A proxy on its own runtime, with the fake server it fronts.
pub struct Rig {
    pub runtime: tokio::runtime::Runtime,
    pub proxy: crate::Proxy,
    pub violations: Arc<Violations>,
    statuses: Statuses,
}

impl Rig {
    /// Starts the proxy from `config` (TOML) on a fresh runtime, once `start_server` (run on
    /// that runtime) has given the fake server's address for `{server}` in the text.
    fn start<F>(
        config: &str,
        start_server: impl FnOnce(Arc<Violations>) -> F,
        statuses: Statuses,
    ) -> Rig
    where
        F: std::future::Future<Output = std::net::SocketAddr>,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("fuzz runtime");
        let violations = Arc::new(Violations::default());
        let server = runtime.block_on(start_server(violations.clone()));
        let text = config.replace("{server}", &server.to_string());
        let config = crate::config::Config::parse(&text).expect("fuzz config");
        let proxy = runtime
            .block_on(crate::Proxy::start(config))
            .expect("start the proxy");
        Rig {
            runtime,
            proxy,
            violations,
            statuses,
        }
    }

    /// Waits (bounded) until no client is connected and no server is leased or connecting.
    async fn settle(&self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + SETTLE_WITHIN;
        loop {
            let busy: Vec<PoolStatus> = (self.statuses)(&self.proxy.shared)
                .into_iter()
                .filter(|s| s.in_use > 0 || s.connecting > 0)
                .collect();
            let clients = self.proxy.shared.client_count();
            if busy.is_empty() && clients == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "the proxy did not settle within {SETTLE_WITHIN:?}: {clients} clients, busy pools {busy:?}"
                ));
            }
            // Polled: a session ends on its own task, with nothing to await from here.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Runs one input's clients (`run`), lets the proxy settle, then checks every invariant;
    /// panics naming the first one broken.
    pub fn check<F>(&self, run: F)
    where
        F: std::future::Future<Output = Vec<String>>,
    {
        let (client_problems, settled) = self.runtime.block_on(async {
            let problems = run.await;
            (problems, self.settle().await)
        });
        let mut problems = client_problems;
        if let Err(e) = settled {
            problems.push(e);
        }
        problems.extend(self.violations.take());
        let panics = self.proxy.shared.observe.panics.load(Ordering::Relaxed);
        if panics > 0 {
            problems.push(format!("{panics} proxy task(s) panicked"));
        }
        for s in (self.statuses)(&self.proxy.shared) {
            for why in [DiscardReason::Dropped, DiscardReason::Unproven] {
                let n = s.discarded_total[why.index()];
                if n > 0 {
                    problems.push(format!(
                        "pool {}: {n} server connection(s) discarded as {why}",
                        s.name
                    ));
                }
            }
        }
        assert!(
            problems.is_empty(),
            "session invariants broken: {problems:#?}"
        );
    }
}

/// Runs `clients` concurrently on the current runtime; returns what went wrong on their side.
pub async fn run_clients<F>(clients: Vec<F>) -> Vec<String>
where
    F: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let tasks: Vec<_> = clients.into_iter().map(tokio::spawn).collect();
    let mut problems = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(e),
            Err(e) => problems.push(format!("harness client task failed: {e}")),
        }
    }
    problems
}

/// A process-wide rig, started on first use: libFuzzer calls a target once per input, with
/// nothing to carry state between calls but a static. The replay test uses it too, so its
/// inputs meet the same long-lived proxy (servers reused across inputs) as the fuzzer's.
pub fn with_rig(
    cell: &'static std::sync::OnceLock<Mutex<Rig>>,
    start: fn() -> Rig,
    f: impl FnOnce(&Rig),
) {
    let rig = cell.get_or_init(|| Mutex::new(start()));
    // A failed input panics while holding the lock; the rig is still usable for the next one
    // (the replay test reports every failure, not just the first).
    let rig = rig.lock().unwrap_or_else(PoisonError::into_inner);
    f(&rig);
}
