//! Rate limits (`[[rate_limits]]`): new client connections and transactions per second, kept per
//! client address, per user or per database, with `governor`'s keyed GCRA buckets.
//!
//! A connection over its rate is refused at once (53400 / MySQL 1203): a login storm is cheaper
//! to turn away than to queue. A transaction over its rate is held until its bucket allows it,
//! but never longer than the pool's `acquire_timeout`; if the wait would be longer it is refused
//! at once with the same codes, so a throttled client learns immediately instead of timing out.
//!
//! Buckets live as long as their key is active: when a limiter holds more than
//! [`MAX_KEYS`] keys, the ones that are back to full are dropped, so memory stays bounded however
//! many addresses connect. A reload builds new limiters (buckets start full again).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use poolguard_pool::Holder;

use crate::config::guard::{RateLimit, RateScope};
use crate::error::ProxyError;

/// Keys a limiter may hold before idle ones are pruned.
const MAX_KEYS: usize = 10_000;

/// What is being admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Connection,
    Transaction,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Connection => "new connections",
            Kind::Transaction => "transactions",
        }
    }
}

struct Limiter {
    rule: usize,
    per: RateScope,
    kind: Kind,
    rate: f64,
    buckets: DefaultKeyedRateLimiter<String>,
}

impl Limiter {
    fn new(rule: usize, limit: &RateLimit, kind: Kind, rate: f64) -> Limiter {
        // GCRA: one cell every 1/rate seconds, `burst` cells at once (default: a second's worth).
        let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_nanos(1));
        let burst = limit.burst.unwrap_or_else(|| rate.ceil().max(1.0) as u32);
        let quota = Quota::with_period(period)
            .expect("a positive period")
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Limiter {
            rule,
            per: limit.per,
            kind,
            rate,
            buckets: RateLimiter::keyed(quota),
        }
    }

    fn key(&self, who: Who<'_>) -> String {
        match self.per {
            RateScope::Address => address_of(who.client).to_owned(),
            RateScope::User => who.user.to_owned(),
            RateScope::Database => who.database.to_owned(),
        }
    }

    /// Zero if allowed now (the cell is taken), else how long until it would be.
    fn check(&self, key: &String) -> Duration {
        if self.buckets.len() > MAX_KEYS {
            self.buckets.retain_recent();
        }
        match self.buckets.check_key(key) {
            Ok(()) => Duration::ZERO,
            Err(not_until) => not_until
                .wait_time_from(DefaultClock::default().now())
                .max(Duration::from_nanos(1)),
        }
    }

    fn refusal(&self, key: &str, detail: &str) -> ProxyError {
        ProxyError::TooManyClients(format!(
            "poolguard rate limit: more than {} {} per second for {} {key:?} (rate_limits[{}]){detail}; slow down or raise the limit",
            self.rate,
            self.kind.noun(),
            self.per,
            self.rule,
        ))
    }
}

/// Who is asking: the client's address (`ip:port`), user and database.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub client: &'a str,
    pub user: &'a str,
    pub database: &'a str,
}

impl<'a> From<&'a Holder> for Who<'a> {
    fn from(h: &'a Holder) -> Self {
        Who {
            client: &h.client,
            user: &h.user,
            database: &h.database,
        }
    }
}

/// Every configured limiter, built from the `[[rate_limits]]` rules.
#[derive(Default)]
pub struct RateLimits {
    limiters: Vec<Limiter>,
}

impl RateLimits {
    pub fn new(rules: &[RateLimit]) -> RateLimits {
        let mut limiters = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            if let Some(rate) = rule.connections_per_second {
                limiters.push(Limiter::new(i, rule, Kind::Connection, rate));
            }
            if let Some(rate) = rule.transactions_per_second {
                limiters.push(Limiter::new(i, rule, Kind::Transaction, rate));
            }
        }
        RateLimits { limiters }
    }

    /// A new client connection: allowed now, or refused.
    pub fn admit_connection(&self, who: Who<'_>) -> Result<(), ProxyError> {
        for l in self.of(Kind::Connection) {
            let key = l.key(who);
            if !l.check(&key).is_zero() {
                return Err(l.refusal(&key, ""));
            }
        }
        Ok(())
    }

    /// A transaction: returns once every bucket it falls in gave it a turn, waiting at most
    /// `patience` in all; refused at once when a bucket's next turn is further away than that.
    pub async fn admit_transaction(
        &self,
        holder: &Holder,
        patience: Duration,
    ) -> Result<(), ProxyError> {
        let start = tokio::time::Instant::now();
        for l in self.of(Kind::Transaction) {
            let key = l.key(holder.into());
            loop {
                let wait = l.check(&key);
                if wait.is_zero() {
                    break;
                }
                if start.elapsed() + wait > patience {
                    return Err(l.refusal(
                        &key,
                        &format!(
                            ", and waiting {:.1}s for a turn exceeds acquire_timeout",
                            wait.as_secs_f64()
                        ),
                    ));
                }
                tokio::time::sleep(wait).await;
            }
        }
        Ok(())
    }

    /// True when any rule limits transactions (lets the hot path skip the call).
    pub fn limits_transactions(&self) -> bool {
        self.of(Kind::Transaction).next().is_some()
    }

    fn of(&self, kind: Kind) -> impl Iterator<Item = &Limiter> {
        self.limiters.iter().filter(move |l| l.kind == kind)
    }
}

/// `127.0.0.1:5000` -> `127.0.0.1`, `[::1]:5000` -> `::1`; anything else as given.
pub fn address_of(client: &str) -> &str {
    match client.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            host.trim_start_matches('[').trim_end_matches(']')
        }
        _ => client,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(client: &str, user: &str) -> Holder {
        Holder::new(client.into(), user.into(), "bank".into(), "app".into())
    }

    fn rule(per: RateScope, conns: Option<f64>, txs: Option<f64>, burst: u32) -> RateLimit {
        RateLimit {
            per,
            connections_per_second: conns,
            transactions_per_second: txs,
            burst: Some(burst),
        }
    }

    #[test]
    fn connections_beyond_the_burst_are_refused_per_address() {
        let limits = RateLimits::new(&[rule(RateScope::Address, Some(0.001), None, 3)]);
        let a = holder("10.0.0.1:1000", "app");
        for port in 0..3 {
            let same_ip = holder(&format!("10.0.0.1:{}", 2000 + port), "app");
            assert!(limits.admit_connection((&same_ip).into()).is_ok());
        }
        let refused = limits.admit_connection((&a).into()).unwrap_err();
        assert_eq!(refused.sqlstate(), "53400");
        assert!(refused.to_string().contains("\"10.0.0.1\""), "{refused}");
        // Another address has its own bucket.
        assert!(limits
            .admit_connection((&holder("10.0.0.2:1", "app")).into())
            .is_ok());
        // Transactions are not limited by a connection rule.
        assert!(!limits.limits_transactions());
    }

    #[tokio::test]
    async fn transactions_get_a_turn_or_are_refused_at_once() {
        // One transaction per 10 s per user, burst 1.
        let limits = RateLimits::new(&[rule(RateScope::User, None, Some(0.1), 1)]);
        let h = holder("10.0.0.1:1", "app");
        assert!(limits.admit_transaction(&h, Duration::ZERO).await.is_ok());
        // The next turn is about 10 s away: refused with 1 s of patience, without waiting.
        let refused = limits
            .admit_transaction(&h, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(refused.sqlstate(), "53400");
        // Another user is not affected.
        let other = holder("10.0.0.1:1", "other");
        assert!(limits
            .admit_transaction(&other, Duration::ZERO)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn a_short_wait_is_served() {
        // 50 per second, burst 1: the second transaction waits about 20 ms, then goes.
        let limits = RateLimits::new(&[rule(RateScope::Database, None, Some(50.0), 1)]);
        let h = holder("10.0.0.1:1", "app");
        for _ in 0..3 {
            assert!(limits
                .admit_transaction(&h, Duration::from_secs(5))
                .await
                .is_ok());
        }
    }

    #[test]
    fn addresses_lose_their_port() {
        assert_eq!(address_of("127.0.0.1:5432"), "127.0.0.1");
        assert_eq!(address_of("[::1]:5432"), "::1");
        assert_eq!(address_of("unix"), "unix");
    }
}
