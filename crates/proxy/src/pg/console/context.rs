//! What the console's tables need from the running configuration: the configured databases,
//! the users, and `SHOW CONFIG`'s rows under PgBouncer's key names (what `pgbouncer_exporter`
//! reads) plus poolguard's `leak_threshold`.
//!
//! Read from the configuration in force at each statement, so a RELOAD shows at once.

use std::time::{Duration, SystemTime};

use poolguard_admin::console::{ConfigEntry, Context, DatabaseInfo};

use crate::config::{ClientAuth, Config, Limits, PoolMode};
use crate::state::Shared;

/// The console context for the configuration in force now.
pub fn of(shared: &Shared) -> Context {
    let config = shared.config();
    let databases = config
        .databases
        .iter()
        .map(|d| {
            let backend = config.backend(&d.backend);
            DatabaseInfo {
                name: d.name.clone(),
                protocol: d.protocol.to_string(),
                host: backend
                    .and_then(|b| b.hosts.first().cloned())
                    .unwrap_or_default(),
                server_database: d.server_database.clone(),
                pool_size: d.pool_size,
                reserve_pool: d.max_overflow,
                pool_mode: match d.pool_mode {
                    PoolMode::Session => "session",
                    PoolMode::Transaction => "transaction",
                }
                .to_owned(),
                max_connections: backend.map_or(0, |b| b.max_connections),
            }
        })
        .collect();
    Context {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        postgres_listen: config.postgres.as_ref().map(|p| p.listen),
        mysql_listen: config.mysql_listen,
        databases,
        users: config.users.iter().map(|u| u.name.clone()).collect(),
        config: entries(&config),
        now: SystemTime::now(),
    }
}

/// Seconds as PgBouncer writes them ("60", "0.5"); off is "0".
fn seconds(d: Option<Duration>) -> String {
    d.map_or_else(|| "0".to_owned(), |d| d.as_secs_f64().to_string())
}

/// Reads one duration setting of a `Limits`.
type Setting = fn(&Limits) -> Option<Duration>;

/// `SHOW CONFIG`: none is changeable from the console (no SET); RELOAD re-reads the file.
fn entries(config: &Config) -> Vec<ConfigEntry> {
    let (limits, default) = (&config.limits, Limits::default());
    let listen = config.postgres.as_ref().map(|p| p.listen);
    let auth = config.postgres.as_ref().map(|p| match p.auth {
        ClientAuth::ScramSha256 => "scram-sha-256",
        ClientAuth::Md5 => "md5",
    });
    let timeouts: [(&str, Setting); 6] = [
        ("client_idle_timeout", |l| l.client_idle_timeout),
        ("idle_transaction_timeout", |l| {
            l.idle_in_transaction_timeout
        }),
        ("query_timeout", |l| l.query_timeout),
        ("query_wait_timeout", |l| Some(l.acquire_timeout)),
        ("server_idle_timeout", |l| l.idle_timeout),
        ("server_lifetime", |l| l.max_lifetime),
    ];
    let mut rows: Vec<(&str, Option<String>, Option<String>)> = vec![
        (
            "admin_users",
            Some(config.admin_users.join(",")),
            Some(String::new()),
        ),
        (
            "auth_type",
            auth.map(str::to_owned),
            Some("scram-sha-256".into()),
        ),
        (
            "leak_threshold",
            Some(seconds(limits.leak_threshold)),
            Some(seconds(default.leak_threshold)),
        ),
        ("listen_addr", listen.map(|a| a.ip().to_string()), None),
        ("listen_port", listen.map(|a| a.port().to_string()), None),
        (
            "max_client_conn",
            Some(limits.max_client_connections.to_string()),
            Some(default.max_client_connections.to_string()),
        ),
        // poolguard has no per-user cap: its caps are per pool and per backend.
        ("max_user_connections", Some("0".into()), Some("0".into())),
    ];
    rows.extend(
        timeouts
            .iter()
            .map(|(k, f)| (*k, Some(seconds(f(limits))), Some(seconds(f(&default))))),
    );
    rows.sort_by_key(|r| r.0);
    rows.into_iter()
        .map(|(key, value, default)| ConfigEntry {
            key: key.to_owned(),
            value,
            default,
            changeable: false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rows_use_pgbouncer_names() {
        let config = Config::builtin_default("x");
        let rows = entries(&config);
        let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "sorted like PgBouncer's"
        );
        let get = |k: &str| rows.iter().find(|r| r.key == k).unwrap();
        assert_eq!(get("max_client_conn").value.as_deref(), Some("10000"));
        assert_eq!(get("max_user_connections").value.as_deref(), Some("0"));
        assert_eq!(get("server_idle_timeout").default.as_deref(), Some("600"));
    }
}
