//! A consecutive-failures circuit breaker for connect attempts to one server ([`Breaker`]).
//!
//! Standalone and protocol-free: whoever connects asks for a [`BreakerPass`] first
//! ([`Breaker::try_pass`]) and reports the outcome on it. `failures` consecutive failed connects
//! open the breaker; while it is open every pass is refused until the cool-down is over; then
//! exactly one caller gets a *probe* pass (half-open). A probe that succeeds closes the breaker;
//! one that fails re-opens it with the cool-down doubled (capped at `max_cooldown`).
//!
//! Invariants (all under the breaker's own `Mutex`, never held across `.await` or while
//! logging):
//! - At most one probe is out at a time: only the caller that moves `Open -> HalfOpen` gets one,
//!   and a probe that is dropped unreported puts the state back to `Open` with the cool-down
//!   already over, so the next caller probes instead of everybody waiting forever.
//! - Every change of state bumps an *epoch*; a pass remembers the epoch it was issued in and its
//!   report counts only if the epoch is unchanged. A connect that started while closed and fails
//!   after the breaker opened (or closed again) therefore cannot re-open it or extend it.
//! - `failures == 0` disables the breaker: it never opens, and disabling it closes it.
//! - Time is `tokio::time::Instant`, so tests run on a paused clock.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::HumanDuration;

/// Transitions kept for [`Breaker::take_transitions`]; older ones are dropped first, so a
/// breaker nobody reads from cannot grow without bound.
const MAX_PENDING_TRANSITIONS: usize = 64;

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failed connects that open the breaker; 0 disables it (it never opens).
    pub failures: u32,
    /// How long an open breaker refuses before it lets one probe through.
    pub cooldown: Duration,
    /// Each failed probe doubles the cool-down, up to this (never below `cooldown`).
    pub max_cooldown: Duration,
}

impl Default for BreakerConfig {
    /// 5 failures, 2 s cool-down, at most 30 s: the proxy's `[[backends]]` defaults.
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            cooldown: Duration::from_secs(2),
            max_cooldown: Duration::from_secs(30),
        }
    }
}

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BreakerState {
    /// Connects go through.
    #[default]
    Closed,
    /// Connects are refused until the cool-down is over.
    Open,
    /// One probe connect is out; everybody else is refused until it reports.
    HalfOpen,
}

impl BreakerState {
    /// For a metric gauge: closed 0, open 1, half-open 2.
    pub fn as_gauge(&self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }

    /// `closed`, `open` or `half-open`.
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connect refused because the breaker is open (or its one probe is out, in which case
/// `retry_after` is zero: the probe's outcome decides, any moment now).
#[derive(Debug, Clone)]
pub struct BreakerOpen {
    /// The breaker's name (the server it guards).
    pub name: String,
    /// How long until the breaker lets a probe through.
    pub retry_after: Duration,
    /// Failed connects in a row that led here.
    pub consecutive_failures: u32,
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit breaker for {} is open after {} failed connects; retry in {}",
            self.name,
            self.consecutive_failures,
            HumanDuration(self.retry_after)
        )
    }
}

impl std::error::Error for BreakerOpen {}

/// One change of state, for events and logs.
#[derive(Debug, Clone)]
pub struct Transition {
    /// The breaker's name.
    pub name: String,
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
    /// Failed connects in a row at the time.
    pub consecutive_failures: u32,
    /// The cool-down in force after the change (for `Open`, how long it refuses).
    pub cooldown: Duration,
}

/// Counts and state, right now.
#[derive(Debug, Clone, Default)]
pub struct BreakerStats {
    /// The current state.
    pub state: BreakerState,
    /// Failed connects in a row.
    pub consecutive_failures: u32,
    /// Times the breaker opened (a failed probe re-opening it counts too; monotonic).
    pub opened_total: u64,
    /// Passes refused (monotonic).
    pub rejected_total: u64,
    /// While refusing: how long until a probe is let through.
    pub retry_after: Option<Duration>,
}

struct Inner {
    config: BreakerConfig,
    state: BreakerState,
    /// While `Open`: when the cool-down is over.
    open_until: Instant,
    /// The cool-down in force; doubles with each failed probe, back to `config.cooldown` on close.
    cooldown: Duration,
    consecutive_failures: u32,
    /// Bumped on every change of state; see the module docs.
    epoch: u64,
    opened_total: u64,
    rejected_total: u64,
    transitions: Vec<Transition>,
}

impl Inner {
    /// `Some` while a connect would be refused now.
    fn refusal(&self, name: &str, now: Instant) -> Option<BreakerOpen> {
        let retry_after = match self.state {
            BreakerState::Closed => return None,
            BreakerState::Open if now >= self.open_until => return None,
            BreakerState::Open => self.open_until.saturating_duration_since(now),
            BreakerState::HalfOpen => Duration::ZERO,
        };
        Some(BreakerOpen {
            name: name.to_owned(),
            retry_after,
            consecutive_failures: self.consecutive_failures,
        })
    }

    /// Move to `to`, recording the change; the caller logs it once the lock is released.
    fn go(&mut self, name: &str, to: BreakerState) -> Transition {
        let transition = Transition {
            name: name.to_owned(),
            from: self.state,
            to,
            consecutive_failures: self.consecutive_failures,
            cooldown: self.cooldown,
        };
        self.state = to;
        self.epoch += 1;
        if self.transitions.len() >= MAX_PENDING_TRANSITIONS {
            self.transitions.remove(0);
        }
        self.transitions.push(transition.clone());
        transition
    }

    fn open(&mut self, name: &str, cooldown: Duration, now: Instant) -> Transition {
        self.cooldown = cooldown;
        self.open_until = now.checked_add(cooldown).unwrap_or(now);
        self.opened_total += 1;
        self.go(name, BreakerState::Open)
    }

    fn close(&mut self, name: &str) -> Transition {
        self.consecutive_failures = 0;
        self.cooldown = self.config.cooldown;
        self.go(name, BreakerState::Closed)
    }
}

/// A circuit breaker for connects to one server; share it in the `Arc` [`Breaker::new`] returns.
pub struct Breaker {
    name: String,
    inner: Mutex<Inner>,
}

impl Breaker {
    /// A closed breaker named `name` (the server it guards, for messages and logs).
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Arc<Breaker> {
        Arc::new(Breaker {
            name: name.into(),
            inner: Mutex::new(Inner {
                config,
                state: BreakerState::Closed,
                open_until: Instant::now(),
                cooldown: config.cooldown,
                consecutive_failures: 0,
                epoch: 0,
                opened_total: 0,
                rejected_total: 0,
                transitions: Vec::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the fields consistent before anything can panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// New settings (reload). An open breaker keeps its current cool-down running; disabling
    /// the breaker (`failures == 0`) closes it at once.
    pub fn set_config(&self, config: BreakerConfig) {
        let transition = {
            let mut inner = self.lock();
            inner.config = config;
            let cap = config.max_cooldown.max(config.cooldown);
            inner.cooldown = inner.cooldown.min(cap);
            if config.failures == 0 && inner.state != BreakerState::Closed {
                Some(inner.close(&self.name))
            } else {
                None
            }
        };
        log(transition);
    }

    /// Before a connect attempt. Closed: a pass. Open with the cool-down running: refused
    /// (counted in `rejected_total`). Open with the cool-down over: moves to half-open and
    /// gives the pass to exactly one caller (the probe); others are refused until it reports.
    pub fn try_pass(self: &Arc<Self>) -> Result<BreakerPass, BreakerOpen> {
        let now = Instant::now();
        let (result, transition) = {
            let mut inner = self.lock();
            match inner.refusal(&self.name, now) {
                Some(refused) => {
                    inner.rejected_total += 1;
                    (Err(refused), None)
                }
                None if inner.state == BreakerState::Open => {
                    let transition = inner.go(&self.name, BreakerState::HalfOpen);
                    (Ok(self.pass(true, inner.epoch)), Some(transition))
                }
                None => (Ok(self.pass(false, inner.epoch)), None),
            }
        };
        log(transition);
        result
    }

    fn pass(self: &Arc<Self>, probe: bool, epoch: u64) -> BreakerPass {
        BreakerPass {
            breaker: Arc::clone(self),
            probe,
            epoch,
            reported: false,
        }
    }

    /// Would a connect be refused right now? Does not take the probe and does not count a
    /// rejection.
    pub fn refusing(&self) -> Option<BreakerOpen> {
        self.lock().refusal(&self.name, Instant::now())
    }

    /// The current state. An open breaker whose cool-down is over still reads `Open` until a
    /// caller takes the probe.
    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// State and counts, right now.
    pub fn stats(&self) -> BreakerStats {
        let inner = self.lock();
        BreakerStats {
            state: inner.state,
            consecutive_failures: inner.consecutive_failures,
            opened_total: inner.opened_total,
            rejected_total: inner.rejected_total,
            retry_after: inner
                .refusal(&self.name, Instant::now())
                .map(|r| r.retry_after),
        }
    }

    /// Every change of state since the last call, oldest first (at most the last 64).
    pub fn take_transitions(&self) -> Vec<Transition> {
        std::mem::take(&mut self.lock().transitions)
    }

    /// A pass reported; `epoch` is the one it was issued in.
    fn report(&self, probe: bool, epoch: u64, ok: bool) {
        let now = Instant::now();
        let transition = {
            let mut inner = self.lock();
            if inner.epoch != epoch {
                // Issued before the last change of state: its outcome describes the past.
                return;
            }
            if ok {
                inner.consecutive_failures = 0;
                (inner.state != BreakerState::Closed).then(|| inner.close(&self.name))
            } else {
                inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
                let threshold = inner.config.failures;
                if probe {
                    let cap = inner.config.max_cooldown.max(inner.config.cooldown);
                    let doubled = inner.cooldown.saturating_mul(2).min(cap);
                    Some(inner.open(&self.name, doubled, now))
                } else if threshold > 0 && inner.consecutive_failures >= threshold {
                    let cooldown = inner.config.cooldown;
                    Some(inner.open(&self.name, cooldown, now))
                } else {
                    None
                }
            }
        };
        log(transition);
    }

    /// A probe was dropped unreported: free its slot so the next caller probes.
    fn abandon_probe(&self, epoch: u64) {
        let transition = {
            let mut inner = self.lock();
            if inner.epoch != epoch || inner.state != BreakerState::HalfOpen {
                return;
            }
            inner.open_until = Instant::now();
            inner.go(&self.name, BreakerState::Open)
        };
        log(Some(transition));
    }
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("name", &self.name)
            .field("state", &self.state())
            .finish()
    }
}

/// Logged after the breaker's lock is released: opening is a warning, the rest information.
fn log(transition: Option<Transition>) {
    let Some(t) = transition else {
        return;
    };
    if t.to == BreakerState::Open {
        tracing::warn!(
            breaker = %t.name,
            from = %t.from,
            consecutive_failures = t.consecutive_failures,
            cooldown = %HumanDuration(t.cooldown),
            "circuit breaker open"
        );
    } else {
        tracing::info!(
            breaker = %t.name,
            from = %t.from,
            to = %t.to,
            consecutive_failures = t.consecutive_failures,
            "circuit breaker state changed"
        );
    }
}

/// Permission for one connect attempt; report its outcome with [`BreakerPass::succeeded`] or
/// [`BreakerPass::failed`]. Dropped unreported: a probe's slot is freed (the next caller probes);
/// a closed-state pass changes nothing.
#[must_use = "report the connect's outcome with succeeded() or failed()"]
pub struct BreakerPass {
    breaker: Arc<Breaker>,
    probe: bool,
    epoch: u64,
    reported: bool,
}

impl BreakerPass {
    /// True for the one pass a half-open breaker lets through.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The connect worked: failures reset; a probe closes the breaker (and resets the cool-down).
    pub fn succeeded(mut self) {
        self.reported = true;
        self.breaker.report(self.probe, self.epoch, true);
    }

    /// The connect failed: counted; reaching `failures` opens the breaker with `cooldown`; a
    /// failed probe re-opens it with the cool-down doubled, capped at `max_cooldown`.
    pub fn failed(mut self) {
        self.reported = true;
        self.breaker.report(self.probe, self.epoch, false);
    }
}

impl Drop for BreakerPass {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            self.breaker.abandon_probe(self.epoch);
        }
    }
}

impl fmt::Debug for BreakerPass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerPass")
            .field("breaker", &self.breaker.name)
            .field("probe", &self.probe)
            .finish()
    }
}
