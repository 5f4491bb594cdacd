//! Annotations a holder keeps on its leases ([`LeaseNote`]) and the acquire-wait histogram
//! ([`WaitHistogram`]).
//!
//! Both are written without the pool's lock: a note is updated at most once per statement by
//! its session (an atomic store plus a short mutex on the statement text), the histogram with
//! relaxed atomic adds once per acquire. Readers (leak watcher, metrics) copy them out.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Longest statement text a note keeps, in bytes (cut at a character boundary).
pub const MAX_NOTED_STATEMENT: usize = 200;

/// What a holder is doing with its server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Nothing reported yet.
    Unknown,
    /// A statement was sent and has not been answered yet.
    Active,
    /// Between statements with no transaction open.
    Idle,
    /// Between statements inside an open transaction: the classic leak.
    IdleInTransaction,
}

impl LeaseState {
    /// PostgreSQL `pg_stat_activity.state` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Unknown => "unknown",
            LeaseState::Active => "active",
            LeaseState::Idle => "idle",
            LeaseState::IdleInTransaction => "idle in transaction",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => LeaseState::Active,
            2 => LeaseState::Idle,
            3 => LeaseState::IdleInTransaction,
            _ => LeaseState::Unknown,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            LeaseState::Unknown => 0,
            LeaseState::Active => 1,
            LeaseState::Idle => 2,
            LeaseState::IdleInTransaction => 3,
        }
    }
}

/// A holder's running annotations: state, last statement (truncated, never parameters) and
/// how many statements it sent. Cheap to update; shared through an `Arc` in [`crate::Holder`].
#[derive(Debug, Default)]
pub struct LeaseNote {
    state: AtomicU8,
    statements: AtomicU64,
    /// The last statement's bytes as sent (blanks trimmed, at most a few bytes past
    /// [`MAX_NOTED_STATEMENT`]), empty until one is seen, and whether bytes were dropped. One
    /// buffer per holder, overwritten in place: noting a statement copies bytes and allocates
    /// nothing once the buffer has grown; the readers (leak watcher, console) decode the text.
    last: Mutex<(Vec<u8>, bool)>,
    /// Why the holder keeps its connection for the rest of its session, once it does.
    pinned: std::sync::OnceLock<Box<str>>,
}

impl LeaseNote {
    /// The holder is pinned to its connection from now on, for `reason` (the first one stays).
    pub fn pin(&self, reason: &str) {
        let _ = self.pinned.set(reason.into());
    }

    /// Why the holder is pinned, if it is.
    pub fn pinned(&self) -> Option<&str> {
        self.pinned.get().map(|r| &**r)
    }

    /// A statement was sent: remember its text (truncated) and mark the holder active.
    pub fn statement(&self, sql: &str) {
        self.statement_bytes(sql.as_bytes())
    }

    /// [`LeaseNote::statement`] for a statement as the client sent it, bytes that are UTF-8
    /// nearly always: kept as bytes, so the text is made only when someone reads it. A few
    /// bytes past what can be shown are kept, so the last character shown is whole.
    pub fn statement_bytes(&self, sql: &[u8]) {
        let sql = sql.trim_ascii();
        let kept = sql.get(..MAX_NOTED_STATEMENT + 4).unwrap_or(sql);
        {
            let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            last.0.clear();
            last.0.extend_from_slice(kept);
            last.1 = kept.len() < sql.len();
        }
        self.statements.fetch_add(1, Ordering::Relaxed);
        self.state
            .store(LeaseState::Active.to_u8(), Ordering::Relaxed);
    }

    /// The holder's state changed (e.g. the server reported idle or idle in transaction).
    pub fn set_state(&self, state: LeaseState) {
        self.state.store(state.to_u8(), Ordering::Relaxed);
    }

    /// The current state.
    pub fn state(&self) -> LeaseState {
        LeaseState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// The last statement, if any: bytes that are not UTF-8 shown as U+FFFD, blanks trimmed,
    /// cut at a character boundary to at most [`MAX_NOTED_STATEMENT`] bytes (then followed
    /// by `...`). The text is made before it is cut, so a replaced byte counts as the three
    /// it is shown as, as if the whole statement had been converted.
    pub fn last_statement(&self) -> Option<Arc<str>> {
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let (bytes, dropped) = (&last.0, last.1);
        let bytes = if dropped {
            without_cut_char(bytes)
        } else {
            bytes
        };
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        let (shown, cut) = truncate(text, MAX_NOTED_STATEMENT);
        Some(if cut || dropped {
            Arc::from(format!("{shown}..."))
        } else {
            Arc::from(shown)
        })
    }

    /// Statements sent so far.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }
}

/// `bytes` without a UTF-8 character that their end cut short (where the note stopped keeping
/// bytes), which would otherwise show as U+FFFD.
fn without_cut_char(bytes: &[u8]) -> &[u8] {
    let from = bytes.len().saturating_sub(3);
    for (i, &b) in bytes.iter().enumerate().skip(from).rev() {
        // The last byte that starts a character (not a continuation byte, 0b10xx_xxxx).
        if b & 0xC0 != 0x80 {
            let len = match b {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            };
            return if bytes.len() - i < len {
                &bytes[..i]
            } else {
                bytes
            };
        }
    }
    bytes
}

/// `text` cut to at most `max` bytes at a character boundary, and whether it was cut.
fn truncate(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

/// Upper bounds (seconds) of the acquire-wait histogram buckets; `+Inf` is implied.
pub const WAIT_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A cumulative-on-read histogram of acquire waits, in relaxed atomics.
#[derive(Debug, Default)]
pub struct WaitHistogram {
    /// One per bucket in [`WAIT_BUCKETS`], plus one for `+Inf`; not cumulative.
    counts: [AtomicU64; WAIT_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl WaitHistogram {
    /// Records one wait.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = WAIT_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(WAIT_BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// `(cumulative counts per bucket incl. +Inf, sum in seconds)`.
    pub fn snapshot(&self) -> (Vec<u64>, f64) {
        let mut acc = 0;
        let cumulative = self
            .counts
            .iter()
            .map(|c| {
                acc += c.load(Ordering::Relaxed);
                acc
            })
            .collect();
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (cumulative, sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_truncates_at_char_boundary() {
        let note = LeaseNote::default();
        assert_eq!(note.state(), LeaseState::Unknown);
        note.statement(&"é".repeat(300));
        let last = note.last_statement().unwrap();
        assert!(last.len() <= MAX_NOTED_STATEMENT + 3);
        assert!(last.ends_with("..."));
        assert_eq!(note.state(), LeaseState::Active);
        note.set_state(LeaseState::IdleInTransaction);
        assert_eq!(note.state().as_str(), "idle in transaction");
        assert_eq!(note.statements(), 1);
    }

    #[test]
    fn statement_bytes_are_noted_as_text() {
        let note = LeaseNote::default();
        note.statement_bytes(b"  SELECT 1 ");
        assert_eq!(note.last_statement().as_deref(), Some("SELECT 1"));
        note.statement_bytes(b"SELECT '\xff'");
        assert_eq!(note.last_statement().as_deref(), Some("SELECT '\u{fffd}'"));
        let noted = |sql: &[u8]| {
            note.statement_bytes(sql);
            note.last_statement().unwrap()
        };
        // Long text (where the note stops keeping bytes splits an é): shown cut, at a
        // character boundary.
        let last = noted(format!("SELECT 'x{}'", "é".repeat(600)).as_bytes());
        assert!(
            last.ends_with("é...") && !last.contains('\u{fffd}'),
            "{last}"
        );
        assert_eq!(note.statements(), 3);
        // Invalid bytes count as the U+FFFD they are shown as; leading Unicode blanks are
        // trimmed and never bring the character cut where the note stopped into view.
        let last = noted(&[b'\xff'; 300]);
        assert!(last.len() <= MAX_NOTED_STATEMENT + 3 && last.ends_with("\u{fffd}..."));
        let last = noted(format!("\u{3000}\u{3000}SELECT 'x{}'", "é".repeat(300)).as_bytes());
        assert!(
            last.starts_with("SELECT") && !last.contains('\u{fffd}'),
            "{last}"
        );
    }

    #[test]
    fn histogram_is_cumulative() {
        let h = WaitHistogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(10));
        let (counts, sum) = h.snapshot();
        assert_eq!(counts.len(), WAIT_BUCKETS.len() + 1);
        assert_eq!(counts[0], 1);
        assert_eq!(counts[6], 2); // <= 0.05
        assert_eq!(*counts.last().unwrap(), 3);
        assert!(sum > 10.0);
    }
}
