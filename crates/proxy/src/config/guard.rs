//! Keys that make poolguard degrade gracefully: per backend, health checks and the circuit
//! breaker of each host.
//!
//! Parsed from `[[backends]]` entries (`raw::RawBackend`); defaults are chosen so a backend with
//! one host and no keys behaves as before (breaker on with forgiving numbers, health checks only
//! where there is a choice of hosts to make).

use std::time::Duration;

use super::raw::RawBackend;
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
