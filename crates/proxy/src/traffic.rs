//! Traffic counters per pool: transactions, queries, client bytes and the time spent in
//! transactions and queries, for `/metrics`, `/api/pools` and the dashboard.
//!
//! One [`Traffic`] lives in each pool entry and is shared by every session of the pool; each
//! session keeps a [`Clock`] of its own (when its open query and transaction started). The hot
//! path only does relaxed atomic adds where the session already handles the message: no locks,
//! no allocation, and at most one `Instant::now()` per batch of queries.
//!
//! What counts (PgBouncer's definitions, so numbers compare):
//! - a *query* is a simple Query, an extended-protocol Execute, a MySQL COM_QUERY or
//!   COM_STMT_EXECUTE sent to a server (Parse, Bind, Describe and COM_STMT_PREPARE are not);
//! - a *transaction* ends when the server reports no transaction open after at least one query
//!   since the last one ended: an explicit BEGIN..COMMIT counts once, and so does each
//!   autocommit statement run outside a transaction;
//! - query time runs from the first query of a batch reaching the server to the server's
//!   answer (ReadyForQuery, or the end of the MySQL response); transaction time from the first
//!   query of the transaction to its end;
//! - bytes are what was read from and written to the client's socket once it was logged in.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

/// One pool's counters (monotonic).
#[derive(Debug, Default)]
pub struct Traffic {
    transactions: AtomicU64,
    queries: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
    transaction_nanos: AtomicU64,
    query_nanos: AtomicU64,
    parses_reused: AtomicU64,
}

/// A point-in-time copy of a [`Traffic`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TrafficTotals {
    pub transactions: u64,
    pub queries: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub transaction_seconds: f64,
    pub query_seconds: f64,
    pub parses_reused: u64,
}

impl Traffic {
    /// Bytes read from a client's socket.
    #[inline]
    pub fn received(&self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Bytes written to a client's socket.
    #[inline]
    pub fn sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A Parse of the unnamed statement answered by poolguard because the server held it.
    #[inline]
    pub fn parse_reused(&self) {
        self.parses_reused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn totals(&self) -> TrafficTotals {
        let secs = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e9;
        TrafficTotals {
            transactions: self.transactions.load(Ordering::Relaxed),
            queries: self.queries.load(Ordering::Relaxed),
            bytes_received: self.received.load(Ordering::Relaxed),
            bytes_sent: self.sent.load(Ordering::Relaxed),
            transaction_seconds: secs(&self.transaction_nanos),
            query_seconds: secs(&self.query_nanos),
            parses_reused: self.parses_reused.load(Ordering::Relaxed),
        }
    }
}

/// Nanoseconds from `since` to `now`, saturating (a u64 of nanoseconds lasts 584 years).
fn nanos(since: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(since).as_nanos()).unwrap_or(u64::MAX)
}

/// One session's view: which of its requests ran a query, and when its open query batch and
/// transaction started.
///
/// PostgreSQL clients may pipeline: a Query can be sent before the ReadyForQuery of an earlier
/// Sync arrives. So each request that ends in ReadyForQuery (Query, Sync, FunctionCall) is
/// remembered, in order, with whether its batch ran a query, and each ReadyForQuery is matched
/// to its own request; an idle ReadyForQuery ends a transaction only if a query ran since the
/// last one. MySQL runs one command at a time and needs no such queue. Times are taken from the
/// first query of a batch (or transaction) that was not already being timed, so pipelined work
/// is counted whole but its time only from the first request.
#[derive(Debug, Default)]
pub struct Clock {
    query_since: Option<Instant>,
    transaction_since: Option<Instant>,
    /// Requests awaiting ReadyForQuery, oldest in bit 0: whether each ran a query.
    outstanding: u64,
    outstanding_len: u32,
    /// A query was sent since the last request that ends in ReadyForQuery.
    batch_ran_query: bool,
    /// A query was answered since the server was last idle.
    transaction_ran_query: bool,
}

impl Clock {
    /// A query is going to the server: counts it and starts the clocks that are not running.
    #[inline]
    pub fn query(&mut self, traffic: &Traffic) {
        traffic.queries.fetch_add(1, Ordering::Relaxed);
        self.batch_ran_query = true;
        if self.query_since.is_none() {
            let now = Instant::now();
            self.query_since = Some(now);
            self.transaction_since.get_or_insert(now);
        }
    }

    /// A request that the server answers with ReadyForQuery went to it (PostgreSQL Query,
    /// Sync, FunctionCall); call it after [`Clock::query`] for a Query.
    #[inline]
    pub fn request_sent(&mut self) {
        let ran = u64::from(std::mem::take(&mut self.batch_ran_query));
        // Past 64 unanswered requests the newest ones share one slot: counts stay right
        // unless a client pipelines that deep with autocommit statements.
        let at = self.outstanding_len.min(63);
        self.outstanding |= ran << at;
        self.outstanding_len = (self.outstanding_len + 1).min(64);
    }

    /// The server answered (PostgreSQL ReadyForQuery, end of a MySQL response) at `now`;
    /// `idle` is whether it has no transaction open.
    #[inline]
    pub fn answered(&mut self, traffic: &Traffic, idle: bool, now: Instant) {
        let ran = if self.outstanding_len > 0 {
            let ran = self.outstanding & 1 != 0;
            self.outstanding >>= 1;
            self.outstanding_len -= 1;
            ran
        } else {
            std::mem::take(&mut self.batch_ran_query)
        };
        if ran {
            if let Some(since) = self.query_since.take() {
                traffic
                    .query_nanos
                    .fetch_add(nanos(since, now), Ordering::Relaxed);
            }
            self.transaction_ran_query = true;
        }
        if !idle || !std::mem::take(&mut self.transaction_ran_query) {
            return;
        }
        traffic.transactions.fetch_add(1, Ordering::Relaxed);
        if let Some(since) = self.transaction_since.take() {
            traffic
                .transaction_nanos
                .fetch_add(nanos(since, now), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One simple Query and its ReadyForQuery.
    fn simple(c: &mut Clock, t: &Traffic, idle: bool) {
        c.query(t);
        c.request_sent();
        c.answered(t, idle, Instant::now());
    }

    #[test]
    fn explicit_and_autocommit_transactions() {
        let t = Traffic::default();
        let mut c = Clock::default();
        // BEGIN; 3 statements; COMMIT: five queries, one transaction.
        for _ in 0..4 {
            simple(&mut c, &t, false);
        }
        simple(&mut c, &t, true);
        // Two autocommit statements: two transactions.
        simple(&mut c, &t, true);
        simple(&mut c, &t, true);
        // Parse + Sync (a prepare) is answered without a query: nothing counted.
        c.request_sent();
        c.answered(&t, true, Instant::now());
        t.received(10);
        t.sent(32);
        let got = t.totals();
        assert_eq!((got.transactions, got.queries), (3, 7));
        assert_eq!((got.bytes_received, got.bytes_sent), (10, 32));
        assert!(got.transaction_seconds > 0.0 && got.query_seconds > 0.0);
    }

    #[test]
    fn pipelined_requests_are_matched_to_their_own_answers() {
        let t = Traffic::default();
        let mut c = Clock::default();
        // Close + Sync (no query), then BEGIN, before either is answered.
        c.request_sent();
        c.query(&t);
        c.request_sent();
        c.answered(&t, true, Instant::now()); // the Sync's: idle, but no query ran
        assert_eq!(t.totals().transactions, 0);
        c.answered(&t, false, Instant::now()); // BEGIN's
                                               // Parse/Bind/Execute x2 + Sync, then COMMIT.
        c.query(&t);
        c.query(&t);
        c.request_sent();
        c.query(&t);
        c.request_sent();
        c.answered(&t, false, Instant::now());
        c.answered(&t, true, Instant::now());
        assert_eq!((t.totals().transactions, t.totals().queries), (1, 4));
        // Three pipelined autocommit statements: three transactions.
        for _ in 0..3 {
            c.query(&t);
            c.request_sent();
        }
        for _ in 0..3 {
            c.answered(&t, true, Instant::now());
        }
        assert_eq!((t.totals().transactions, t.totals().queries), (4, 7));
    }

    #[test]
    fn mysql_commands_need_no_queue() {
        let t = Traffic::default();
        let mut c = Clock::default();
        c.query(&t); // BEGIN
        c.answered(&t, false, Instant::now());
        c.query(&t); // INSERT
        c.answered(&t, false, Instant::now());
        c.answered(&t, false, Instant::now()); // COM_PING in the transaction
        c.query(&t); // COMMIT
        c.answered(&t, true, Instant::now());
        c.query(&t); // autocommit SELECT
        c.answered(&t, true, Instant::now());
        c.answered(&t, true, Instant::now()); // COM_PING outside: nothing
        assert_eq!((t.totals().transactions, t.totals().queries), (2, 4));
    }

    #[test]
    fn a_deep_pipeline_does_not_overflow() {
        let t = Traffic::default();
        let mut c = Clock::default();
        for _ in 0..100 {
            c.query(&t);
            c.request_sent();
        }
        for _ in 0..100 {
            c.answered(&t, true, Instant::now());
        }
        let got = t.totals();
        assert_eq!(got.queries, 100);
        assert!(got.transactions >= 64 && got.transactions <= 100, "{got:?}");
    }
}
