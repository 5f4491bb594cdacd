//! The connection budget check: does what poolguard may open fit in what each server allows?
//!
//! For each PostgreSQL server (backends grouped by their first host), poolguard logs in as a
//! configured user, reads `max_connections`, `superuser_reserved_connections` and
//! `reserved_connections`, and compares what is left with the sum of the budgets of every
//! backend pointing at that server. MySQL/MariaDB servers are read with
//! `SELECT @@max_connections` and nothing is subtracted (their extra connection for SUPER
//! users comes on top of `max_connections`). The report prints the arithmetic either way.

use std::collections::BTreeMap;

use poolguard_pool::Connector;

use crate::config::{Config, Protocol};
use crate::mysql::server::{read_max_connections, MyConnector};
use crate::pg::server::PgConnector;
use crate::tls::connect::ServerTls;

#[derive(Debug)]
pub struct ServerBudget {
    pub host: String,
    pub max_connections: u64,
    pub superuser_reserved: u64,
    pub reserved: u64,
    /// (backend name, its budget)
    pub budgets: Vec<(String, usize)>,
    /// Connections poolguard may open beyond the budgets: one per MySQL backend, for
    /// `KILL QUERY` when every unit is in use.
    pub side_connections: u64,
}

impl ServerBudget {
    pub fn available(&self) -> u64 {
        self.max_connections
            .saturating_sub(self.superuser_reserved)
            .saturating_sub(self.reserved)
    }

    pub fn requested(&self) -> u64 {
        self.budgets.iter().map(|(_, b)| *b as u64).sum::<u64>() + self.side_connections
    }

    pub fn fits(&self) -> bool {
        self.requested() <= self.available()
    }

    /// The arithmetic, in a few lines an operator can check by hand.
    pub fn explain(&self) -> String {
        let mut names: Vec<String> = self
            .budgets
            .iter()
            .map(|(n, b)| format!("{b} (backend {n:?})"))
            .collect();
        if self.side_connections > 0 {
            names.push(format!(
                "{} (KILL QUERY side connection)",
                self.side_connections
            ));
        }
        let verdict = if self.fits() {
            format!(
                "fits, {} left for other clients",
                self.available() - self.requested()
            )
        } else {
            format!(
                "DOES NOT FIT: {} more than the server allows; lower [[backends]] max_connections or raise the server's max_connections",
                self.requested() - self.available()
            )
        };
        format!(
            "server {}: max_connections {} - superuser_reserved_connections {} - reserved_connections {} = {} available\n  poolguard budget: {} = {} -> {}",
            self.host,
            self.max_connections,
            self.superuser_reserved,
            self.reserved,
            self.available(),
            names.join(" + "),
            self.requested(),
            verdict
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("backend {backend:?}: {problem}")]
    Unreachable { backend: String, problem: String },
}

/// Reads each server's limits (PostgreSQL and MySQL backends).
pub async fn read_budgets(config: &Config) -> Result<Vec<ServerBudget>, CheckError> {
    let mut out = read_pg_budgets(config).await?;
    out.extend(read_mysql_budgets(config).await?);
    Ok(out)
}

/// Backends of one protocol grouped by their first host: host -> [(backend, budget)].
fn by_host(config: &Config, protocol: Protocol) -> BTreeMap<String, Vec<(String, usize)>> {
    let mut by_host: BTreeMap<String, Vec<(String, usize)>> = BTreeMap::new();
    for b in config.backends.iter().filter(|b| b.protocol == protocol) {
        if let Some(h) = b.hosts.first() {
            by_host
                .entry(h.clone())
                .or_default()
                .push((b.name.clone(), b.max_connections));
        }
    }
    by_host
}

/// MySQL/MariaDB: `SELECT @@max_connections`, nothing reserved.
async fn read_mysql_budgets(config: &Config) -> Result<Vec<ServerBudget>, CheckError> {
    let mut out = Vec::new();
    for (host, budgets) in by_host(config, Protocol::Mysql) {
        let backend = budgets[0].0.clone();
        let unreachable = |problem: String| CheckError::Unreachable {
            backend: backend.clone(),
            problem,
        };
        let db = config
            .databases
            .iter()
            .filter(|d| d.names_a_server_database())
            .find(|d| budgets.iter().any(|(n, _)| *n == d.backend))
            .map(|d| d.server_database.clone())
            .unwrap_or_default();
        let user = config
            .service_user()
            .ok_or_else(|| unreachable("no [[users]] entry to log in with".into()))?;
        let timeout = config
            .backend(&backend)
            .map(|b| b.connect_timeout)
            .unwrap_or_default();
        let tls = config
            .backend(&backend)
            .map_or_else(ServerTls::disabled, |b| b.server_tls.clone());
        let mut connector = MyConnector::new(
            host.clone(),
            tls,
            user.name.clone(),
            user.password.clone(),
            db,
            timeout,
        );
        connector.server_rsa_key = config
            .backend(&backend)
            .and_then(|b| b.server_rsa_key.clone());
        let max_connections = read_max_connections(&connector)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        out.push(ServerBudget {
            host,
            max_connections,
            superuser_reserved: 0,
            reserved: 0,
            side_connections: budgets.len() as u64,
            budgets,
        });
    }
    Ok(out)
}

async fn read_pg_budgets(config: &Config) -> Result<Vec<ServerBudget>, CheckError> {
    let mut out = Vec::new();
    for (host, budgets) in by_host(config, Protocol::Postgres) {
        let backend = budgets[0].0.clone();
        let unreachable = |problem: String| CheckError::Unreachable {
            backend: backend.clone(),
            problem,
        };
        let db = config
            .databases
            .iter()
            .filter(|d| d.names_a_server_database())
            .find(|d| budgets.iter().any(|(n, _)| *n == d.backend))
            .map(|d| d.server_database.clone())
            .unwrap_or_else(|| "postgres".into());
        let user = config
            .service_user()
            .ok_or_else(|| unreachable("no [[users]] entry to log in with".into()))?;
        let timeout = config
            .backend(&backend)
            .map(|b| b.connect_timeout)
            .unwrap_or_default();
        let tls = config
            .backend(&backend)
            .map_or_else(ServerTls::disabled, |b| b.server_tls.clone());
        let connector = PgConnector::new(
            host.clone(),
            tls,
            user.name.clone(),
            user.password.clone(),
            db,
            timeout,
        );
        let mut conn = connector
            .connect()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (rows, _) = conn
            .simple_query(
                "SELECT current_setting('max_connections'), current_setting('superuser_reserved_connections'), coalesce(current_setting('reserved_connections', true), '0')",
            )
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        connector.close(conn, poolguard_pool::CloseReason::PoolClosed);
        let num = |i: usize| -> u64 {
            rows.first()
                .and_then(|r| r.get(i))
                .and_then(|v| v.as_deref())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        out.push(ServerBudget {
            host,
            max_connections: num(0),
            superuser_reserved: num(1),
            reserved: num(2),
            budgets,
            side_connections: 0,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_is_explained() {
        let b = ServerBudget {
            host: "127.0.0.1:5432".into(),
            max_connections: 20,
            superuser_reserved: 3,
            reserved: 0,
            budgets: vec![("a".into(), 10), ("b".into(), 10)],
            side_connections: 0,
        };
        assert!(!b.fits());
        let text = b.explain();
        assert!(
            text.contains("20 - superuser_reserved_connections 3"),
            "{text}"
        );
        assert!(text.contains("= 20 -> DOES NOT FIT: 3 more"), "{text}");
    }

    #[test]
    fn a_mysql_side_connection_counts_against_the_server() {
        let b = ServerBudget {
            host: "127.0.0.1:3306".into(),
            max_connections: 10,
            superuser_reserved: 0,
            reserved: 0,
            budgets: vec![("my".into(), 10)],
            side_connections: 1,
        };
        assert!(!b.fits());
        let text = b.explain();
        assert!(
            text.contains("10 (backend \"my\") + 1 (KILL QUERY side connection) = 11"),
            "{text}"
        );
    }
}
