//! `poolguard replay INCIDENT`: the TradeMate (MariaDB) and bank-fee (PostgreSQL) incidents.
//!
//! The CLI's lab holds sandbox servers with a small `max_connections` and one in-process
//! poolguard in front of them with the recommended settings, built from the constants here.
//! [`replay`] runs the incident's pattern twice,
//! straight to the server and through poolguard: healthy clients that open a connection per
//! request, leaking clients (idle, and idle in a transaction) from 15% of the run on, and a spike
//! of back-to-back writers from 45% to 70%. [`crate::verdict`] compares the two runs.

use std::time::Duration;

use crate::monitor::Monitor;
use crate::plan::{Group, Plan, Role, Workload};
use crate::stats::RunReport;
use crate::SimError;

pub const USER: &str = "app";
pub const PASSWORD: &str = "app-secret";
pub const DB: &str = "bank";
/// The servers' `max_connections` (PostgreSQL keeps 3 of them for superusers).
pub const MAX_CONNECTIONS: u32 = 20;
/// poolguard's recommended settings, the ones the incident reports asked for (with a short
/// idle-in-transaction timeout so a replay shows it).
pub const POOL_SIZE: u32 = 10;
pub const MAX_OVERFLOW: u32 = 5;
pub const IDLE_IN_TX_TIMEOUT: &str = "2s";
pub const ACQUIRE_TIMEOUT: &str = "10s";

/// The two incidents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Incident {
    Trademate,
    Bankfee,
}

impl std::str::FromStr for Incident {
    type Err = SimError;
    fn from_str(s: &str) -> Result<Incident, SimError> {
        match s {
            "trademate" => Ok(Incident::Trademate),
            "bankfee" => Ok(Incident::Bankfee),
            other => Err(SimError::Usage(format!(
                "unknown incident {other:?}: use trademate or bankfee"
            ))),
        }
    }
}

impl Incident {
    pub fn name(self) -> &'static str {
        match self {
            Incident::Trademate => "trademate",
            Incident::Bankfee => "bankfee",
        }
    }

    pub fn story(self) -> &'static str {
        match self {
            Incident::Trademate => "TradeMate: a Flask + SQLAlchemy + PyMySQL service on MySQL never closed idle connections; MySQL hit max_connections and every request failed for 2h45m.",
            Incident::Bankfee => "Bank fee tool: a Node.js + pg-pool service on PostgreSQL checked clients out and never released them, some inside a transaction; PostgreSQL hit its limit and the tool was down for 2h35m, first misread as a traffic spike.",
        }
    }

    pub fn server(self) -> &'static str {
        match self {
            Incident::Trademate => "MariaDB",
            Incident::Bankfee => "PostgreSQL",
        }
    }

    /// Leakers of each kind: together they exceed what the server has for the application.
    fn leakers(self) -> u32 {
        match self {
            Incident::Trademate => 10,
            Incident::Bankfee => 9,
        }
    }
}

/// The URLs one incident's runs use.
pub struct Urls {
    pub direct: String,
    pub guarded: String,
    pub server: String,
}

/// The incident's pattern over `d`, against `url`, sampled through `server`.
pub fn incident_plan(
    incident: Incident,
    title: String,
    url: &str,
    server: &str,
    d: Duration,
    progress: bool,
) -> Plan {
    let at = |f: f64| d.mul_f64(f);
    let group = |name: &str, role: Role, workers: u32, start: Duration, end: Duration| Group {
        name: name.to_owned(),
        role,
        workers,
        start,
        end,
        reconnect: false,
        pace: None,
        workload: Workload::Write,
    };
    let mut healthy = group("healthy", Role::Traffic, 4, Duration::ZERO, d);
    healthy.reconnect = true;
    healthy.pace = Some(Duration::from_millis(50));
    healthy.workload = Workload::Mixed;
    let n = incident.leakers();
    Plan {
        title,
        url: url.to_owned(),
        server_url: Some(server.to_owned()),
        groups: vec![
            healthy,
            group("leak-idle", Role::LeakIdle, n, at(0.15), d),
            group("leak-in-tx", Role::LeakInTx, n, at(0.15), d),
            group("spike 5x", Role::Traffic, 16, at(0.45), at(0.70)),
        ],
        duration: d,
        max_requests: None,
        request_timeout: Duration::from_secs(15),
        progress,
    }
}

/// Both runs of one incident.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Comparison {
    pub incident: Incident,
    pub story: String,
    pub server: String,
    pub settings: String,
    pub direct: RunReport,
    pub guarded: RunReport,
}

/// Runs the incident direct, then through poolguard, at the URLs a lab gives (the CLI's
/// `lab` starts the sandboxes and the proxy: this crate is only a client).
pub async fn replay(
    urls: &Urls,
    incident: Incident,
    d: Duration,
    progress: bool,
) -> Result<Comparison, SimError> {
    crate::engine::prepare(&urls.direct).await?;
    let name = incident.name();
    println!(
        "== {name}: direct to {} (max_connections {MAX_CONNECTIONS}), {:.0?}",
        incident.server(),
        d
    );
    let direct = crate::engine::run(&incident_plan(
        incident,
        format!("{name}: direct"),
        &urls.direct,
        &urls.server,
        d,
        progress,
    ))
    .await?;
    settle(&urls.server, 0).await;
    println!(
        "== {name}: through poolguard (pool_size {POOL_SIZE}, max_overflow {MAX_OVERFLOW}, \
         idle_in_transaction_timeout {IDLE_IN_TX_TIMEOUT}), {:.0?}",
        d
    );
    let guarded = crate::engine::run(&incident_plan(
        incident,
        format!("{name}: through poolguard"),
        &urls.guarded,
        &urls.server,
        d,
        progress,
    ))
    .await?;
    Ok(Comparison {
        incident,
        story: incident.story().to_owned(),
        server: format!(
            "{} sandbox, max_connections {MAX_CONNECTIONS}",
            incident.server()
        ),
        settings: format!(
            "pool_mode transaction, pool_size {POOL_SIZE}, max_overflow {MAX_OVERFLOW}, budget {}, \
             idle_in_transaction_timeout {IDLE_IN_TX_TIMEOUT}, acquire_timeout {ACQUIRE_TIMEOUT}",
            POOL_SIZE + MAX_OVERFLOW
        ),
        direct,
        guarded,
    })
}

/// Waits (up to 10 s) until the server has closed the previous run's connections.
async fn settle(server: &str, max: u64) {
    let Ok(mut m) = Monitor::connect(server).await else {
        return;
    };
    for _ in 0..40 {
        match m.sample(0.0).await {
            Ok(s) if s.connections <= max => break,
            Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            Err(_) => break,
        }
    }
}
