//! Which hosts of its backend a database's pools connect to: `target` and `standby_fallback`
//! of a `[[databases]]` entry.
//!
//! A database is a primary database (the default: connections go to the backend's write host)
//! or a standby database (`target = "standby"`: connections go to hosts the health checks last
//! saw as read-only replicas, spread over them). Reads are offloaded by pointing an application's
//! read-only traffic at a second database entry with the same `server_database`; poolguard does
//! not split one client's statements between servers, so a client never reads around its own
//! uncommitted or just-committed writes without knowing it.
//!
//! Invariant once validated: a standby database's backend has health checks on, since roles are
//! only known from them.

use super::{invalid, Backend, ConfigError};

/// Where a database's server connections go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// The backend's write host (moved by failover).
    #[default]
    Primary,
    /// Hosts last seen read-only. With `fallback`, the write host while none is usable;
    /// without it, clients are refused (57P03 / 2003) until a standby is back.
    Standby { fallback: bool },
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Primary => "primary",
            Target::Standby { .. } => "standby",
        }
    }

    /// Reads `target` and `standby_fallback` of `databases[i]` (`key`).
    pub fn from_raw(
        key: &str,
        target: Option<&str>,
        fallback: Option<bool>,
        backend: &Backend,
    ) -> Result<Target, ConfigError> {
        let target = match target.unwrap_or("primary") {
            "primary" => Target::Primary,
            "standby" => Target::Standby {
                fallback: fallback.unwrap_or(true),
            },
            other => {
                return Err(invalid(
                    format!("{key}.target"),
                    format!("{other:?} is not \"primary\" or \"standby\""),
                ))
            }
        };
        match target {
            Target::Primary if fallback.is_some() => Err(invalid(
                format!("{key}.standby_fallback"),
                "applies only to target = \"standby\"",
            )),
            Target::Standby { .. } if backend.guard.health_check_interval.is_none() => {
                Err(invalid(
                    format!("{key}.target"),
                    format!(
                        "\"standby\" needs health_check_interval on backend {:?}: only health checks tell which hosts are standbys",
                        backend.name
                    ),
                ))
            }
            t => Ok(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Protocol};

    fn config(backend_extra: &str, database_extra: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!(
            r#"
[postgres]
listen = "127.0.0.1:6432"

[[backends]]
name = "pg"
protocol = "postgres"
max_connections = 20
{backend_extra}

[[databases]]
name = "bank"
backend = "pg"

[[databases]]
name = "bank_ro"
server_database = "bank"
backend = "pg"
{database_extra}

[[users]]
name = "app"
password = "secret"
"#
        ))
    }

    fn target_of(c: &Config, db: &str) -> Target {
        c.database(Protocol::Postgres, db).unwrap().target
    }

    #[test]
    fn databases_go_to_the_primary_unless_they_ask_for_standbys() {
        let checks = "hosts = [\"127.0.0.1:5432\"]\nhealth_check_interval = \"1s\"";
        let c = config(checks, "target = \"standby\"").unwrap();
        assert_eq!(target_of(&c, "bank"), Target::Primary);
        assert_eq!(target_of(&c, "bank_ro"), Target::Standby { fallback: true });
        let c = config(checks, "target = \"standby\"\nstandby_fallback = false").unwrap();
        assert_eq!(
            target_of(&c, "bank_ro"),
            Target::Standby { fallback: false }
        );
    }

    #[test]
    fn a_standby_database_needs_health_checks_and_a_known_target() {
        // One host: no health checks unless asked for (several hosts get them by default).
        let one_host = "hosts = [\"127.0.0.1:5432\"]";
        let e = config(one_host, "target = \"standby\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("databases[1].target") && e.contains("health_check_interval"),
            "{e}"
        );
        let two_hosts = "hosts = [\"127.0.0.1:5432\", \"127.0.0.1:5433\"]";
        let c = config(two_hosts, "target = \"standby\"").unwrap();
        assert_eq!(target_of(&c, "bank_ro"), Target::Standby { fallback: true });
        let checks = two_hosts;
        let e = config(checks, "target = \"replica\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"replica\" is not"), "{e}");
        let e = config(checks, "standby_fallback = false")
            .unwrap_err()
            .to_string();
        assert!(e.contains("databases[1].standby_fallback"), "{e}");
    }
}
