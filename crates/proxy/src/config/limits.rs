//! Per-pool limits: the `[limits]` table gives the defaults, a `[[databases]]` entry may
//! override any of them. Invariant once built: every duration is parsed, every fraction and
//! count is in range.

use std::time::Duration;

use super::raw::RawLimits;
use super::{invalid, parse_duration, required_duration, ConfigError};

/// Limits that apply per pool; `[limits]` gives defaults, a `[[databases]]` entry may override.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub acquire_timeout: Duration,
    pub max_lifetime: Option<Duration>,
    pub lifetime_jitter: f64,
    pub idle_timeout: Option<Duration>,
    pub idle_in_transaction_timeout: Option<Duration>,
    pub client_idle_timeout: Option<Duration>,
    pub query_timeout: Option<Duration>,
    pub max_client_connections: usize,
    pub leak_threshold: Option<Duration>,
    /// Most clients that may wait for a server at once; one more is refused at once (53400).
    pub max_waiters: Option<usize>,
    /// One application or client address may hold at most this fraction of the pool's servers
    /// while others wait (see `fair_share_by`).
    pub fair_share: Option<f64>,
    /// What a fair share is kept per: the application name or the client address.
    pub fair_share_by: poolguard_pool::ShareKey,
    /// "strict" (default): a share is a hard cap; "lenient": only while others wait.
    pub fair_share_strict: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            acquire_timeout: Duration::from_secs(5),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            lifetime_jitter: 0.1,
            idle_timeout: Some(Duration::from_secs(10 * 60)),
            idle_in_transaction_timeout: Some(Duration::from_secs(60)),
            client_idle_timeout: None,
            query_timeout: None,
            max_client_connections: 10_000,
            leak_threshold: Some(Duration::from_secs(30)),
            max_waiters: None,
            fair_share: None,
            fair_share_by: poolguard_pool::ShareKey::Application,
            fair_share_strict: true,
        }
    }
}

impl Limits {
    pub(super) fn from_raw(prefix: &str, raw: &RawLimits) -> Result<Limits, ConfigError> {
        let d = Limits::default();
        let key = |k: &str| format!("{prefix}.{k}");
        let opt = |k: &str, v: &Option<String>, default: Option<Duration>| match v {
            Some(text) => parse_duration(&key(k), text),
            None => Ok(default),
        };
        let acquire_timeout = match &raw.acquire_timeout {
            Some(t) => required_duration(&key("acquire_timeout"), t)?,
            None => d.acquire_timeout,
        };
        let lifetime_jitter = raw.lifetime_jitter.unwrap_or(d.lifetime_jitter);
        if !(0.0..=0.5).contains(&lifetime_jitter) {
            return Err(invalid(
                key("lifetime_jitter"),
                "must be between 0.0 and 0.5 (a fraction of max_lifetime)",
            ));
        }
        let max_client_connections = raw
            .max_client_connections
            .unwrap_or(d.max_client_connections);
        if max_client_connections == 0 {
            return Err(invalid(key("max_client_connections"), "must be at least 1"));
        }
        Ok(Limits {
            acquire_timeout,
            max_lifetime: opt("max_lifetime", &raw.max_lifetime, d.max_lifetime)?,
            lifetime_jitter,
            idle_timeout: opt("idle_timeout", &raw.idle_timeout, d.idle_timeout)?,
            idle_in_transaction_timeout: opt(
                "idle_in_transaction_timeout",
                &raw.idle_in_transaction_timeout,
                d.idle_in_transaction_timeout,
            )?,
            client_idle_timeout: opt(
                "client_idle_timeout",
                &raw.client_idle_timeout,
                d.client_idle_timeout,
            )?,
            query_timeout: opt("query_timeout", &raw.query_timeout, d.query_timeout)?,
            max_client_connections,
            leak_threshold: opt("leak_threshold", &raw.leak_threshold, d.leak_threshold)?,
            max_waiters: match raw.max_waiters {
                Some(0) => return Err(invalid(key("max_waiters"), "must be at least 1")),
                n => n,
            },
            fair_share: match raw.fair_share {
                Some(f) if !(f > 0.0 && f <= 1.0) => {
                    return Err(invalid(
                        key("fair_share"),
                        "must be a fraction of the pool above 0 and at most 1.0",
                    ))
                }
                f => f,
            },
            fair_share_by: match raw.fair_share_by.as_deref() {
                None | Some("application") => poolguard_pool::ShareKey::Application,
                Some("address") => poolguard_pool::ShareKey::Address,
                Some(other) => {
                    return Err(invalid(
                        key("fair_share_by"),
                        format!("{other:?} is not \"application\" or \"address\""),
                    ))
                }
            },
            fair_share_strict: match raw.fair_share_mode.as_deref() {
                None | Some("strict") => true,
                Some("lenient") => false,
                Some(other) => {
                    return Err(invalid(
                        key("fair_share_mode"),
                        format!("{other:?} is not \"strict\" or \"lenient\""),
                    ))
                }
            },
        })
    }
}

/// What a connection costs before it has logged in: global `[limits]` keys (a database entry
/// cannot override them, since a socket is counted before anyone knows its database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginLimits {
    /// A client that has not logged in by then is closed.
    pub client_login_timeout: Duration,
    /// Sockets accepted and not yet logged in, all addresses together; the next is refused
    /// at accept (53400 / 1203) and closed.
    pub max_logins_in_progress: usize,
    /// The same, per client IP address.
    pub max_logins_per_address: usize,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            client_login_timeout: Duration::from_secs(15),
            // Generous enough for a legitimate burst: an application host warming up a pool of
            // 50 to 100 connections has them all logging in at once (e.g. 50 psycopg threads
            // while the first login opens the pool's server connection), and they would be
            // refused; a flood still costs at most this many descriptors and small tasks.
            max_logins_in_progress: 512,
            max_logins_per_address: 128,
        }
    }
}

impl LoginLimits {
    pub(super) fn from_raw(raw: &RawLimits) -> Result<LoginLimits, ConfigError> {
        let d = LoginLimits::default();
        let client_login_timeout = match &raw.client_login_timeout {
            // Off is not offered: an unbounded login is exactly what a slow-loris client wants.
            Some(t) => required_duration("limits.client_login_timeout", t)?,
            None => d.client_login_timeout,
        };
        let count = |key: &str, v: Option<usize>, default: usize| match v {
            Some(0) => Err(invalid(format!("limits.{key}"), "must be at least 1")),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        Ok(LoginLimits {
            client_login_timeout,
            max_logins_in_progress: count(
                "max_logins_in_progress",
                raw.max_logins_in_progress,
                d.max_logins_in_progress,
            )?,
            max_logins_per_address: count(
                "max_logins_per_address",
                raw.max_logins_per_address,
                d.max_logins_per_address,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_limits_defaults_and_errors() {
        let d = LoginLimits::from_raw(&RawLimits::default()).unwrap();
        assert_eq!(d, LoginLimits::default());
        let raw = RawLimits {
            client_login_timeout: Some("1s".into()),
            max_logins_in_progress: Some(4),
            max_logins_per_address: Some(2),
            ..Default::default()
        };
        let l = LoginLimits::from_raw(&raw).unwrap();
        assert_eq!(l.client_login_timeout, Duration::from_secs(1));
        assert_eq!((l.max_logins_in_progress, l.max_logins_per_address), (4, 2));
        let off = RawLimits {
            client_login_timeout: Some("0s".into()),
            ..Default::default()
        };
        let e = LoginLimits::from_raw(&off).unwrap_err().to_string();
        assert!(e.contains("limits.client_login_timeout"), "{e}");
        let zero = RawLimits {
            max_logins_per_address: Some(0),
            ..Default::default()
        };
        let e = LoginLimits::from_raw(&zero).unwrap_err().to_string();
        assert!(e.contains("limits.max_logins_per_address"), "{e}");
    }
}
