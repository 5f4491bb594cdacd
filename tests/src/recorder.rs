//! A client loop running in the background while a test acts (stops a server, promotes one),
//! recording what each of its requests saw: the test waits for a record that satisfies a
//! condition, then stops the loop and examines every record.
//!
//! Invariants: the loop runs on a thread of its own with a one-worker runtime, so the test's
//! blocking waits never stall it; it is told to stop on `finish` and on drop (a failing test),
//! and must itself end by its own deadline whatever happens.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::admin::wait_for;

/// The records a loop appends to.
pub type Records<T> = Arc<Mutex<Vec<T>>>;

/// A running loop and its records.
pub struct Recorder<T> {
    stop: Arc<AtomicBool>,
    log: Records<T>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Clone + Send + 'static> Recorder<T> {
    /// Runs `body(stop, records)` in the background; it should return soon after `stop` is set.
    pub fn start<F, Fut>(body: F) -> Recorder<T>
    where
        F: FnOnce(Arc<AtomicBool>, Records<T>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s, l) = (stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(body(s, l));
        });
        Recorder {
            stop,
            log,
            thread: Some(thread),
        }
    }

    /// Every record so far.
    pub fn records(&self) -> Vec<T> {
        self.log.lock().unwrap().clone()
    }

    /// Waits (90 s at most) for a record satisfying `f`.
    pub fn wait_for_record(&self, what: &str, f: impl Fn(&T) -> bool) -> T {
        wait_for(Duration::from_secs(90), what, || {
            self.records().into_iter().find(|r| f(r))
        })
    }

    /// Stops the loop, waits for it to end; every record.
    pub fn finish(mut self) -> Vec<T> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.records()
    }
}

impl<T> Drop for Recorder<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
