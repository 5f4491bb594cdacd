//! The two real client libraries behind one small interface: tokio-postgres for postgres:// URLs,
//! mysql_async for mysql:// URLs. Connect, run a request of a workload, leak a connection, set up
//! the table, and name every failure by its SQLSTATE or MySQL error code.
//!
//! Statements go through the simple (text) protocol with integer literals only, so any pooler in
//! between sees what a plain driver sends and nothing here can be injected.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use rand::Rng;

use crate::plan::Workload;
use crate::SimError;

/// The table every built-in workload uses.
pub const TABLE: &str = "poolguard_sim";
/// Rows the read workload picks from.
pub const SEED_ROWS: u32 = 1000;

/// A failed request or connect, named for grouping: a SQLSTATE (`53300`), a MySQL code (`1040`),
/// or `timeout`, `closed`, `io`, `driver`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpError {
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl From<tokio_postgres::Error> for OpError {
    fn from(e: tokio_postgres::Error) -> OpError {
        let code = match e.code() {
            Some(c) => c.code().to_owned(),
            None if e.is_closed() => "closed".to_owned(),
            None => "io".to_owned(),
        };
        let message = match e.as_db_error() {
            Some(db) => db.message().to_owned(),
            None => e.to_string(),
        };
        OpError { code, message }
    }
}

impl From<mysql_async::Error> for OpError {
    fn from(e: mysql_async::Error) -> OpError {
        let code = match &e {
            mysql_async::Error::Server(s) => s.code.to_string(),
            mysql_async::Error::Io(_) => "io".to_owned(),
            mysql_async::Error::Driver(_) => "driver".to_owned(),
            _ => "other".to_owned(),
        };
        let message = match &e {
            mysql_async::Error::Server(s) => s.message.clone(),
            other => other.to_string(),
        };
        OpError { code, message }
    }
}

/// Which protocol a URL speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Engine {
    Postgres,
    Mysql,
}

impl Engine {
    pub fn of(url: &str) -> Result<Engine, SimError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Engine::Postgres)
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            Ok(Engine::Mysql)
        } else {
            Err(SimError::Usage(format!(
                "unsupported URL {}: use postgres://... or mysql://...",
                redact(url)
            )))
        }
    }
}

/// The URL with its password replaced by `***`, for reports and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((auth, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// One client connection of either kind.
pub enum Conn {
    Pg {
        client: tokio_postgres::Client,
        /// Ends by itself once the client is dropped (it then sends Terminate).
        _task: tokio::task::JoinHandle<()>,
    },
    My(mysql_async::Conn),
}

impl Conn {
    /// Connects, failing with `timeout` after `limit`.
    pub async fn connect(url: &str, limit: Duration) -> Result<Conn, OpError> {
        let engine = Engine::of(url).map_err(|e| OpError {
            code: "usage".into(),
            message: e.to_string(),
        })?;
        within(limit, async {
            match engine {
                Engine::Postgres => {
                    let url = url.replacen("postgresql://", "postgres://", 1);
                    let (client, conn) =
                        tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
                    let task = tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended");
                        }
                    });
                    Ok(Conn::Pg {
                        client,
                        _task: task,
                    })
                }
                Engine::Mysql => {
                    let url = url.replacen("mariadb://", "mysql://", 1);
                    let opts = mysql_async::Opts::from_url(&url).map_err(|e| OpError {
                        code: "usage".into(),
                        message: e.to_string(),
                    })?;
                    let opts = mysql_async::OptsBuilder::from_opts(opts).prefer_socket(false);
                    Ok(Conn::My(mysql_async::Conn::new(opts).await?))
                }
            }
        })
        .await
    }

    pub fn engine(&self) -> Engine {
        match self {
            Conn::Pg { .. } => Engine::Postgres,
            Conn::My(_) => Engine::Mysql,
        }
    }

    /// Runs one statement, discarding its rows.
    pub async fn exec(&mut self, sql: &str) -> Result<(), OpError> {
        match self {
            Conn::Pg { client, .. } => client.simple_query(sql).await.map(drop).map_err(Into::into),
            Conn::My(c) => c.query_drop(sql).await.map_err(Into::into),
        }
    }

    /// The first row's columns as integers (NULL as 0).
    pub async fn ints(&mut self, sql: &str) -> Result<Vec<i64>, OpError> {
        match self {
            Conn::Pg { client, .. } => {
                let msgs = client.simple_query(sql).await?;
                for m in msgs {
                    if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                        return Ok((0..r.len())
                            .map(|i| r.get(i).and_then(|v| v.parse().ok()).unwrap_or(0))
                            .collect());
                    }
                }
                Ok(Vec::new())
            }
            Conn::My(c) => {
                let row: Option<mysql_async::Row> = c.query_first(sql).await?;
                Ok(row
                    .map(|r| {
                        (0..r.len())
                            .map(|i| {
                                r.get_opt::<Option<i64>, usize>(i)
                                    .and_then(Result::ok)
                                    .flatten()
                                    .unwrap_or(0)
                            })
                            .collect()
                    })
                    .unwrap_or_default())
            }
        }
    }

    /// One request of `workload`; `run` and `worker` tag the rows it inserts.
    pub async fn request(&mut self, w: &Workload, run: &str, worker: u32) -> Result<(), OpError> {
        let id = rand::thread_rng().gen_range(1..=SEED_ROWS);
        let select = format!("SELECT payload FROM {TABLE} WHERE id = {id}");
        let insert = format!(
            "INSERT INTO {TABLE} (run, worker, payload) VALUES ('{run}', {worker}, 'w{id}')"
        );
        match w {
            Workload::Read => self.exec(&select).await,
            Workload::Write => self.transaction(&[&insert]).await,
            Workload::Mixed => self.transaction(&[&select, &insert]).await,
            Workload::Sql(stmts) => {
                for s in stmts {
                    self.exec(s).await?;
                }
                Ok(())
            }
        }
    }

    async fn transaction(&mut self, stmts: &[&str]) -> Result<(), OpError> {
        self.exec("BEGIN").await?;
        for s in stmts {
            self.exec(s).await?;
        }
        self.exec("COMMIT").await
    }

    /// A query that sleeps on the server.
    pub async fn sleep(&mut self, d: Duration) -> Result<(), OpError> {
        let secs = d.as_secs_f64();
        match self.engine() {
            Engine::Postgres => self.exec(&format!("SELECT pg_sleep({secs:.3})")).await,
            Engine::Mysql => self.exec(&format!("SELECT SLEEP({secs:.3})")).await,
        }
    }

    /// Opens a transaction that writes a row and is never finished (the leak).
    pub async fn leak_in_tx(&mut self, run: &str, worker: u32) -> Result<(), OpError> {
        self.exec("BEGIN").await?;
        self.exec(&format!(
            "INSERT INTO {TABLE} (run, worker, payload) VALUES ('{run}-leak', {worker}, 'leaked')"
        ))
        .await
    }

    /// Creates the table and its seed rows if missing.
    pub async fn setup(&mut self) -> Result<(), OpError> {
        let ddl = match self.engine() {
            Engine::Postgres => format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY, run text NOT NULL, \
                 worker int NOT NULL, payload text NOT NULL, \
                 created_at timestamptz NOT NULL DEFAULT now())"
            ),
            Engine::Mysql => format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (id bigint AUTO_INCREMENT PRIMARY KEY, \
                 run varchar(64) NOT NULL, worker int NOT NULL, payload varchar(64) NOT NULL, \
                 created_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP, KEY (run)) ENGINE=InnoDB"
            ),
        };
        self.exec(&ddl).await?;
        if self.engine() == Engine::Postgres {
            self.exec(&format!(
                "CREATE INDEX IF NOT EXISTS {TABLE}_run ON {TABLE} (run)"
            ))
            .await?;
        }
        let seeded = self
            .ints(&format!("SELECT count(*) FROM {TABLE} WHERE run = 'seed'"))
            .await?;
        if seeded.first().copied().unwrap_or(0) == 0 {
            self.exec(&format!(
                "INSERT INTO {TABLE} (run, worker, payload) WITH RECURSIVE s(n) AS \
                 (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {SEED_ROWS}) \
                 SELECT 'seed', 0, 'seed' FROM s"
            ))
            .await?;
        }
        Ok(())
    }

    /// Rows committed by run `run` (its write or mixed requests).
    pub async fn rows_of_run(&mut self, run: &str) -> Result<u64, OpError> {
        let v = self
            .ints(&format!("SELECT count(*) FROM {TABLE} WHERE run = '{run}'"))
            .await?;
        Ok(v.first().copied().unwrap_or(0).max(0) as u64)
    }

    /// Closes politely (MySQL sends COM_QUIT; PostgreSQL's Terminate is sent on drop).
    pub async fn close(self) {
        if let Conn::My(c) = self {
            let _ = c.disconnect().await;
        }
    }
}

/// Runs `f`, failing with code `timeout` after `limit`.
pub async fn within<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, OpError>>,
) -> Result<T, OpError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(OpError {
            code: "timeout".into(),
            message: format!("no answer within {limit:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://app:secret@127.0.0.1:5432/bank"),
            "postgres://app:***@127.0.0.1:5432/bank"
        );
        assert_eq!(redact("mysql://root@h/db"), "mysql://root@h/db");
        assert!(Engine::of("http://x").is_err());
    }
}
