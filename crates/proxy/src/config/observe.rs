//! The observability keys: `[admin]` (console users, HTTP tokens, allowed hosts, redaction) and
//! `[[alerts]]`, validated into the admin crate's [`AlertRule`]s and [`Access`]. Kept apart from
//! `mod.rs` so the core config stays readable.

use std::time::Duration;

use poolguard_admin::{Access, AlertRule, Quantity};
use serde::Deserialize;

use super::raw::RawConfig;
use super::{invalid, parse_duration, ConfigError, User};

/// One `[[alerts]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlert {
    pub name: String,
    /// What to watch; one of [`Quantity::NAMES`]. `quantity` is accepted as a synonym.
    #[serde(alias = "quantity")]
    pub metric: String,
    /// Fire when the value is >= this (ratios are 0..1). Unused by `forecast`.
    pub threshold: Option<f64>,
    /// How long the condition must hold ("30s"); default 0s.
    #[serde(rename = "for")]
    pub for_: Option<String>,
    /// `http://host:port/path` to POST firing/resolved notices to.
    pub webhook: Option<String>,
    /// Only this backend (default: all).
    pub backend: Option<String>,
    /// `forecast`: warn when connections run out within this long (default "15m").
    pub horizon: Option<String>,
}

/// `([admin] users, [[alerts]])`, every user and backend name checked.
pub fn validate(
    raw: &RawConfig,
    users: &[User],
) -> Result<(Vec<String>, Vec<AlertRule>), ConfigError> {
    let admin_users = raw
        .admin
        .as_ref()
        .and_then(|a| a.users.clone())
        .unwrap_or_default();
    for u in &admin_users {
        if !users.iter().any(|x| &x.name == u) {
            return Err(invalid(
                "admin.users",
                format!("{u:?} is not defined in [[users]] (admin users log in with a [[users]] password)"),
            ));
        }
    }
    let mut rules = Vec::new();
    for (i, a) in raw.alerts.iter().enumerate() {
        let key = format!("alerts[{i}]");
        let quantity = Quantity::parse(&a.metric).ok_or_else(|| {
            invalid(
                format!("{key}.metric"),
                format!("{:?} is not one of {}", a.metric, Quantity::NAMES),
            )
        })?;
        if quantity != Quantity::Forecast && a.threshold.is_none() {
            return Err(invalid(format!("{key}.threshold"), "is required"));
        }
        if let Some(url) = &a.webhook {
            if !url.starts_with("http://") {
                return Err(invalid(
                    format!("{key}.webhook"),
                    format!("{url:?}: only http:// URLs are supported (use a relay for https)"),
                ));
            }
        }
        if let Some(b) = &a.backend {
            if !raw.backends.iter().any(|x| &x.name == b) {
                return Err(invalid(
                    format!("{key}.backend"),
                    format!("{b:?} is not defined in [[backends]]"),
                ));
            }
        }
        let duration = |k: &str, v: &Option<String>, d: Duration| match v {
            Some(t) => {
                parse_duration(&format!("{key}.{k}"), t).map(|d| d.unwrap_or(Duration::ZERO))
            }
            None => Ok(d),
        };
        rules.push(AlertRule {
            name: a.name.clone(),
            quantity,
            threshold: a.threshold.unwrap_or(0.0),
            for_: duration("for", &a.for_, Duration::ZERO)?,
            webhook: a.webhook.clone(),
            backend: a.backend.clone(),
            horizon: duration("horizon", &a.horizon, Duration::from_secs(15 * 60))?,
        });
    }
    Ok((admin_users, rules))
}

/// The `[admin]` keys besides `listen`, `users` and the alerts.
pub struct AdminKeys {
    pub stats_users: Vec<String>,
    pub access: Access,
    pub redact_statements: bool,
    /// HTTPS on the admin listener (`tls_cert_file` and `tls_key_file` set).
    pub tls: Option<crate::tls::accept::ClientTls>,
}

/// Reads the HTTP tokens (files named in `[admin]`, else `POOLGUARD_ADMIN_TOKEN` /
/// `POOLGUARD_READ_TOKEN`; never the TOML itself) and refuses an admin listener off loopback
/// that no token guards.
pub fn admin(
    raw: &RawConfig,
    users: &[User],
    listen: Option<std::net::SocketAddr>,
) -> Result<AdminKeys, ConfigError> {
    let a = raw.admin.as_ref();
    let stats_users = a.and_then(|a| a.stats_users.clone()).unwrap_or_default();
    for u in &stats_users {
        if !users.iter().any(|x| &x.name == u) {
            return Err(invalid(
                "admin.stats_users",
                format!("{u:?} is not defined in [[users]]"),
            ));
        }
    }
    let token =
        |key: &str, file: Option<&String>, env: &str| -> Result<Option<String>, ConfigError> {
            let text = match file {
                Some(path) => std::fs::read_to_string(path).map_err(|e| {
                    invalid(format!("admin.{key}"), format!("cannot read {path:?}: {e}"))
                })?,
                None => match std::env::var(env) {
                    Ok(t) => t,
                    Err(_) => return Ok(None),
                },
            };
            let t = text.trim().to_owned();
            if t.len() < 16 {
                return Err(invalid(
                    format!("admin.{key}"),
                    format!(
                        "the token (from {}) must be at least 16 characters",
                        file.map_or(env, |f| f.as_str())
                    ),
                ));
            }
            Ok(Some(t))
        };
    let access = Access {
        admin_token: token(
            "admin_token_file",
            a.and_then(|a| a.admin_token_file.as_ref()),
            "POOLGUARD_ADMIN_TOKEN",
        )?,
        read_token: token(
            "read_token_file",
            a.and_then(|a| a.read_token_file.as_ref()),
            "POOLGUARD_READ_TOKEN",
        )?,
        allowed_hosts: a.and_then(|a| a.allowed_hosts.clone()).unwrap_or_default(),
    };
    if let Some(addr) = listen {
        let guarded = access.admin_token.is_some() || access.read_token.is_some();
        if !addr.ip().is_loopback() && !guarded {
            return Err(invalid(
                "admin.listen",
                format!("{addr} is not a loopback address: set admin_token_file / read_token_file (or POOLGUARD_ADMIN_TOKEN / POOLGUARD_READ_TOKEN) so the admin side does not answer anyone who can reach it"),
            ));
        }
    }
    let tls = match a {
        Some(a)
            if a.tls_cert_file.is_some()
                || a.tls_key_file.is_some()
                || a.tls_client_ca_file.is_some() =>
        {
            // Once configured, HTTPS only: a plaintext request on the same port is not served.
            let keys = crate::tls::accept::TlsKeys {
                cert_file: a.tls_cert_file.as_deref(),
                key_file: a.tls_key_file.as_deref(),
                mode: Some("require"),
                client_ca_file: a.tls_client_ca_file.as_deref(),
            };
            Some(
                crate::tls::accept::ClientTls::load("admin", &keys, Some(b"http/1.1"))
                    .map_err(|e| invalid(e.key, e.problem))?,
            )
        }
        _ => None,
    };
    Ok(AdminKeys {
        stats_users,
        access,
        redact_statements: a.and_then(|a| a.redact_statements).unwrap_or(true),
        tls,
    })
}
