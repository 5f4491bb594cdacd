//! Keys that make poolguard degrade gracefully: per backend, health checks and the circuit
//! breaker of each host; `[[rate_limits]]` rules.
//!
//! Parsed from `[[backends]]` entries (`raw::RawBackend`); defaults are chosen so a backend with
//! one host and no keys behaves as before (breaker on with forgiving numbers, health checks only
//! where there is a choice of hosts to make).

use std::time::Duration;

use super::raw::{RawBackend, RawRateLimit};
use super::{invalid, required_duration, ConfigError};

/// How poolguard watches a backend's hosts and when it stops trying one.
#[derive(Debug, Clone, PartialEq)]
pub struct HostGuard {
    /// How often each host is checked (connect, log in, ask whether it takes writes). Checks
    /// run only for backends with more than one host, unless set explicitly.
    pub health_check_interval: Option<Duration>,
    /// A check that takes longer than this counts as failed.
    pub health_check_timeout: Duration,
    /// Consecutive failed connects or logins to a host that open its breaker; 0 = no breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses before it lets one probe through (half-open).
    pub breaker_cooldown: Duration,
    /// Each failed probe doubles the cool-down, up to this.
    pub breaker_max_cooldown: Duration,
}

impl HostGuard {
    pub(super) fn from_raw(key: &str, b: &RawBackend) -> Result<HostGuard, ConfigError> {
        let duration = |name: &str, value: &Option<String>, default: Duration| match value {
            Some(t) => required_duration(&format!("{key}.{name}"), t),
            None => Ok(default),
        };
        let health_check_interval = match &b.health_check_interval {
            Some(t) => Some(required_duration(
                &format!("{key}.health_check_interval"),
                t,
            )?),
            None if b.hosts.len() > 1 => Some(Duration::from_secs(1)),
            None => None,
        };
        let health_check_timeout = duration(
            "health_check_timeout",
            &b.health_check_timeout,
            Duration::from_secs(2),
        )?;
        let breaker_cooldown = duration(
            "breaker_cooldown",
            &b.breaker_cooldown,
            Duration::from_secs(2),
        )?;
        let breaker_max_cooldown = duration(
            "breaker_max_cooldown",
            &b.breaker_max_cooldown,
            Duration::from_secs(30),
        )?;
        if breaker_max_cooldown < breaker_cooldown {
            return Err(invalid(
                format!("{key}.breaker_max_cooldown"),
                "must be at least breaker_cooldown",
            ));
        }
        Ok(HostGuard {
            health_check_interval,
            health_check_timeout,
            breaker_failures: b.breaker_failures.unwrap_or(5),
            breaker_cooldown,
            breaker_max_cooldown,
        })
    }
}

/// What a rate-limit bucket is kept per.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateScope {
    /// The client's IP address (not the port).
    Address,
    User,
    Database,
}

impl std::fmt::Display for RateScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RateScope::Address => "address",
            RateScope::User => "user",
            RateScope::Database => "database",
        })
    }
}

/// One validated `[[rate_limits]]` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    pub per: RateScope,
    pub connections_per_second: Option<f64>,
    pub transactions_per_second: Option<f64>,
    pub burst: Option<u32>,
}

impl RateLimit {
    pub(super) fn from_raw(key: &str, r: &RawRateLimit) -> Result<RateLimit, ConfigError> {
        let per = match r.per.as_str() {
            "address" => RateScope::Address,
            "user" => RateScope::User,
            "database" => RateScope::Database,
            other => {
                return Err(invalid(
                    format!("{key}.per"),
                    format!("{other:?} is not one of \"address\", \"user\", \"database\""),
                ))
            }
        };
        for (name, rate) in [
            ("connections_per_second", r.connections_per_second),
            ("transactions_per_second", r.transactions_per_second),
        ] {
            if let Some(rate) = rate {
                if !(rate.is_finite() && rate > 0.0 && rate <= 1e9) {
                    return Err(invalid(
                        format!("{key}.{name}"),
                        "must be a positive number of events per second",
                    ));
                }
            }
        }
        if r.connections_per_second.is_none() && r.transactions_per_second.is_none() {
            return Err(invalid(
                key,
                "sets neither connections_per_second nor transactions_per_second",
            ));
        }
        if r.burst == Some(0) {
            return Err(invalid(format!("{key}.burst"), "must be at least 1"));
        }
        Ok(RateLimit {
            per,
            connections_per_second: r.connections_per_second,
            transactions_per_second: r.transactions_per_second,
            burst: r.burst,
        })
    }
}
