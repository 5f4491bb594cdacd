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
