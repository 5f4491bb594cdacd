//! PgBouncer's SHOW STATS arithmetic: per-database totals (the sum of a database's pools) and
//! their averages over a stats period (PgBouncer's `stats_period`, [`STATS_PERIOD`]).
//!
//! The proxy keeps one [`StatsPeriods`] and closes a period every [`STATS_PERIOD`] with the
//! totals of that moment; each snapshot carries the averages of the last completed period, so
//! the console's SHOW STATS / STATS_AVERAGES read them and keep no state of their own. Until a
//! first period has completed there are none, and the console shows 0.
//!
//! Invariants: averages change only when a period closes, never between; rates are per second
//! of the period's measured length, times are means per transaction, query or acquire in that
//! period, all whole numbers rounded down (PgBouncer's integer arithmetic). Totals only grow,
//! except when a pool goes away (a reload): a delta that would be negative counts as 0.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::model::PoolSnapshot;

/// PgBouncer's default `stats_period`: how often the averages are recomputed.
pub const STATS_PERIOD: Duration = Duration::from_secs(60);

/// How SHOW STATS keys a database: `(name, protocol)`; both front doors may use one name.
pub type DatabaseKey = (String, String);

/// One database's monotonic traffic counters, summed over its pools (one per user).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DatabaseTotals {
    pub xacts: u64,
    pub queries: u64,
    /// Bytes received from clients.
    pub received: u64,
    /// Bytes sent to clients.
    pub sent: u64,
    /// Time spent in transactions, seconds.
    pub xact_seconds: f64,
    /// Time spent in queries, seconds.
    pub query_seconds: f64,
    /// Time clients waited for a server (acquire waits), seconds.
    pub wait_seconds: f64,
    /// How many acquire waits `wait_seconds` sums (successful acquires).
    pub waits: u64,
}

impl DatabaseTotals {
    /// Sums `pools` per database.
    pub fn per_database(pools: &[PoolSnapshot]) -> BTreeMap<DatabaseKey, DatabaseTotals> {
        let mut out: BTreeMap<DatabaseKey, DatabaseTotals> = BTreeMap::new();
        for p in pools {
            let t = out
                .entry((p.database.clone(), p.protocol.clone()))
                .or_default();
            t.xacts += p.transactions_total;
            t.queries += p.queries_total;
            t.received += p.bytes_received_total;
            t.sent += p.bytes_sent_total;
            t.xact_seconds += p.transaction_seconds_total;
            t.query_seconds += p.query_seconds_total;
            t.wait_seconds += p.acquire_wait_sum;
            // The histogram's +Inf bucket counts every wait its sum holds.
            t.waits += p.acquire_wait_buckets.last().copied().unwrap_or(0);
        }
        out
    }
}

/// One database's averages over one stats period, as SHOW STATS_AVERAGES lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsAverages {
    pub database: String,
    /// "postgres" or "mysql".
    pub protocol: String,
    /// Transactions per second.
    pub xact_count: u64,
    /// Queries per second.
    pub query_count: u64,
    /// Bytes received from clients per second.
    pub bytes_received: u64,
    /// Bytes sent to clients per second.
    pub bytes_sent: u64,
    /// Mean transaction duration, microseconds.
    pub xact_time: u64,
    /// Mean query duration, microseconds.
    pub query_time: u64,
    /// Mean wait for a server per acquire, microseconds.
    pub wait_time: u64,
}

impl StatsAverages {
    /// The averages of a period of length `period` whose totals went from `start` to `end`.
    pub fn between(
        key: &DatabaseKey,
        start: &DatabaseTotals,
        end: &DatabaseTotals,
        period: Duration,
    ) -> StatsAverages {
        let xacts = end.xacts.saturating_sub(start.xacts);
        let queries = end.queries.saturating_sub(start.queries);
        let waits = end.waits.saturating_sub(start.waits);
        StatsAverages {
            database: key.0.clone(),
            protocol: key.1.clone(),
            xact_count: per_second(xacts, period),
            query_count: per_second(queries, period),
            bytes_received: per_second(end.received.saturating_sub(start.received), period),
            bytes_sent: per_second(end.sent.saturating_sub(start.sent), period),
            xact_time: mean_micros(start.xact_seconds, end.xact_seconds, xacts),
            query_time: mean_micros(start.query_seconds, end.query_seconds, queries),
            wait_time: mean_micros(start.wait_seconds, end.wait_seconds, waits),
        }
    }
}

/// `count` per second of `period`, rounded down; 0 for an empty period.
fn per_second(count: u64, period: Duration) -> u64 {
    let micros = period.as_micros();
    if micros == 0 {
        return 0;
    }
    u64::try_from(u128::from(count) * 1_000_000 / micros).unwrap_or(u64::MAX)
}

/// Whole microseconds of `seconds` (negative as 0), as PgBouncer's SHOW STATS times are.
pub(crate) fn micros(seconds: f64) -> u64 {
    (seconds.max(0.0) * 1e6).round() as u64
}

/// The mean of `count` durations that took the total from `start` to `end` seconds, in whole
/// microseconds rounded down; 0 without any.
fn mean_micros(start: f64, end: f64, count: u64) -> u64 {
    if count == 0 {
        return 0;
    }
    micros(end).saturating_sub(micros(start)) / count
}

/// The stats period bookkeeping: the totals when the current period started, and the averages
/// of the last completed one.
#[derive(Debug, Default)]
pub struct StatsPeriods {
    /// When the current period started, and every database's totals then.
    started: Option<(Instant, BTreeMap<DatabaseKey, DatabaseTotals>)>,
    /// The last completed period's averages, one per database, in key order.
    averages: Vec<StatsAverages>,
}

impl StatsPeriods {
    /// Ends the current period at `now`, where the totals are `totals`, and starts the next.
    /// The ended period's averages replace the previous ones; the first call only starts a
    /// period. A database absent at the start counts from zero (its pools are new); one absent
    /// now has no row (its pools are gone).
    pub fn close(&mut self, now: Instant, totals: BTreeMap<DatabaseKey, DatabaseTotals>) {
        if let Some((since, before)) = &self.started {
            let period = now.saturating_duration_since(*since);
            self.averages = totals
                .iter()
                .map(|(key, end)| {
                    let start = before.get(key).copied().unwrap_or_default();
                    StatsAverages::between(key, &start, end, period)
                })
                .collect();
        }
        self.started = Some((now, totals));
    }

    /// The last completed period's averages (empty before one has completed).
    pub fn averages(&self) -> &[StatsAverages] {
        &self.averages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(db: &str) -> DatabaseKey {
        (db.to_owned(), "postgres".to_owned())
    }

    fn pool(db: &str, user: &str) -> PoolSnapshot {
        PoolSnapshot {
            name: format!("{db}/{user}"),
            protocol: "postgres".into(),
            database: db.into(),
            user: user.into(),
            ..Default::default()
        }
    }

    #[test]
    fn totals_sum_the_pools_of_each_database() {
        let mut app = pool("bank", "app");
        (app.transactions_total, app.queries_total) = (10, 30);
        (app.acquire_wait_sum, app.acquire_wait_buckets) = (0.5, vec![3, 7, 10]);
        let mut ro = pool("bank", "ro");
        (ro.transactions_total, ro.acquire_wait_buckets) = (5, vec![0, 2]);
        let mut shop = pool("shop", "app");
        shop.protocol = "mysql".into();
        shop.bytes_sent_total = 99;
        let totals = DatabaseTotals::per_database(&[app, ro, shop]);
        assert_eq!(totals.len(), 2);
        let bank = totals[&key("bank")];
        assert_eq!((bank.xacts, bank.queries, bank.waits), (15, 30, 12));
        assert_eq!(bank.wait_seconds, 0.5);
        assert_eq!(totals[&("shop".into(), "mysql".into())].sent, 99);
    }

    #[test]
    fn averages_are_rates_per_second_and_means_per_event() {
        let start = DatabaseTotals {
            xacts: 100,
            queries: 300,
            received: 10_000,
            sent: 50_000,
            xact_seconds: 1.0,
            query_seconds: 0.5,
            wait_seconds: 0.25,
            waits: 100,
        };
        let end = DatabaseTotals {
            xacts: 100 + 125,
            queries: 300 + 500,
            received: 10_000 + 9_999,
            sent: 50_000 + 60_000,
            xact_seconds: 1.0 + 2.5,
            query_seconds: 0.5 + 1.0,
            wait_seconds: 0.25 + 0.003,
            waits: 100 + 3,
        };
        let avg = StatsAverages::between(&key("bank"), &start, &end, Duration::from_secs(10));
        assert_eq!(avg.database, "bank");
        assert_eq!(avg.xact_count, 12, "125 in 10 s, rounded down");
        assert_eq!(avg.query_count, 50);
        assert_eq!(avg.bytes_received, 999);
        assert_eq!(avg.bytes_sent, 6_000);
        assert_eq!(avg.xact_time, 20_000, "2.5 s over 125 transactions");
        assert_eq!(avg.query_time, 2_000, "1 s over 500 queries");
        assert_eq!(avg.wait_time, 1_000, "3 ms over 3 acquires");
    }

    #[test]
    fn quiet_empty_or_shrinking_periods_average_zero() {
        let t = DatabaseTotals {
            xacts: 5,
            queries: 5,
            xact_seconds: 1.0,
            ..Default::default()
        };
        let quiet = StatsAverages::between(&key("bank"), &t, &t, STATS_PERIOD);
        assert_eq!(
            quiet,
            StatsAverages {
                database: "bank".into(),
                protocol: "postgres".into(),
                ..Default::default()
            }
        );
        let empty = DatabaseTotals { xacts: 6, ..t };
        let none = StatsAverages::between(&key("bank"), &t, &empty, Duration::ZERO);
        assert_eq!((none.xact_count, none.xact_time), (0, 0));
        // A pool dropped by a reload: the totals went down.
        let shrunk =
            StatsAverages::between(&key("bank"), &t, &DatabaseTotals::default(), STATS_PERIOD);
        assert_eq!((shrunk.xact_count, shrunk.xact_time), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn periods_report_the_last_completed_one() {
        let period = Duration::from_secs(5);
        let totals = |xacts: u64| {
            BTreeMap::from([(
                key("bank"),
                DatabaseTotals {
                    xacts,
                    ..Default::default()
                },
            )])
        };
        let mut periods = StatsPeriods::default();
        periods.close(Instant::now(), totals(0));
        assert!(periods.averages().is_empty(), "no period has completed");
        tokio::time::advance(period).await;
        periods.close(Instant::now(), totals(50));
        assert_eq!(periods.averages()[0].xact_count, 10);
        tokio::time::advance(period).await;
        periods.close(Instant::now(), totals(60));
        assert_eq!(
            periods.averages()[0].xact_count,
            2,
            "only the last period counts"
        );
        // A database first seen during a period counts from zero; a gone one has no row.
        tokio::time::advance(period).await;
        let mut next = totals(60);
        next.insert(
            key("shop"),
            DatabaseTotals {
                queries: 25,
                ..Default::default()
            },
        );
        periods.close(Instant::now(), next);
        let avg = periods.averages();
        assert_eq!(avg.len(), 2);
        assert_eq!((avg[0].database.as_str(), avg[0].xact_count), ("bank", 0));
        assert_eq!((avg[1].database.as_str(), avg[1].query_count), ("shop", 5));
        tokio::time::advance(period).await;
        periods.close(Instant::now(), totals(60));
        assert_eq!(periods.averages().len(), 1);
    }
}
