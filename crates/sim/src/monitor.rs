//! The server's own view, sampled over a separate monitoring connection straight to the server:
//! client connections (`pg_stat_activity` / `information_schema.processlist`), sessions idle in a
//! transaction (the leak's signature), and `max_connections`.
//!
//! The monitoring connection is opened before the load starts (a superuser or root may use the
//! server's reserved slot), and is itself left out of the counts.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::driver::{Conn, Engine, OpError};

/// One sample of the server.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ServerSample {
    /// Seconds since the run started.
    pub t: f64,
    /// Client connections, the monitor excluded.
    pub connections: u64,
    /// Sessions idle inside an open transaction.
    pub idle_in_tx: u64,
}

/// Samples shared with the progress line and the report.
pub type Samples = Arc<Mutex<Vec<ServerSample>>>;

pub struct Monitor {
    conn: Conn,
    pub max_connections: u64,
}

const PG_SAMPLE: &str = "SELECT count(*) FILTER (WHERE backend_type = 'client backend' \
     AND pid <> pg_backend_pid()), count(*) FILTER (WHERE state = 'idle in transaction' \
     AND state_change < now() - interval '1 second') \
     FROM pg_stat_activity";
const MY_SAMPLE: &str = "SELECT (SELECT count(*) FROM information_schema.processlist \
     WHERE command <> 'Daemon' AND id <> CONNECTION_ID()), \
     (SELECT count(*) FROM information_schema.innodb_trx t JOIN information_schema.processlist p \
     ON p.id = t.trx_mysql_thread_id WHERE p.command = 'Sleep' AND p.time >= 1)";

impl Monitor {
    pub async fn connect(url: &str) -> Result<Monitor, OpError> {
        let mut conn = Conn::connect(url, Duration::from_secs(10)).await?;
        let sql = match conn.engine() {
            Engine::Postgres => "SELECT current_setting('max_connections')::int",
            Engine::Mysql => "SELECT CAST(@@max_connections AS SIGNED)",
        };
        let max = conn.ints(sql).await?.first().copied().unwrap_or(0).max(0) as u64;
        Ok(Monitor {
            conn,
            max_connections: max,
        })
    }

    pub async fn sample(&mut self, t: f64) -> Result<ServerSample, OpError> {
        let sql = match self.conn.engine() {
            Engine::Postgres => PG_SAMPLE,
            Engine::Mysql => MY_SAMPLE,
        };
        let v = self.conn.ints(sql).await?;
        let at = |i: usize| v.get(i).copied().unwrap_or(0).max(0) as u64;
        Ok(ServerSample {
            t,
            connections: at(0),
            idle_in_tx: at(1),
        })
    }

    /// Samples every `every` until `stop` flips, appending to `out`.
    pub async fn run(
        mut self,
        started: Instant,
        every: Duration,
        out: Samples,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if *stop.borrow() {
                break;
            }
            let t = started.elapsed().as_secs_f64();
            match crate::driver::within(every * 4, self.sample(t)).await {
                Ok(s) => {
                    if let Ok(mut v) = out.lock() {
                        v.push(s);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "server sample failed"),
            }
        }
        self.conn.close().await;
    }
}
