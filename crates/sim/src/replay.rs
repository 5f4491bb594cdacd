//! `poolguard replay INCIDENT`: the TradeMate (MariaDB) and bank-fee (PostgreSQL) incidents.
//!
//! A [`Lab`] holds sandbox servers with a small `max_connections` and one in-process poolguard
//! in front of them with the recommended settings. [`replay`] runs the incident's pattern twice,
//! straight to the server and through poolguard: healthy clients that open a connection per
//! request, leaking clients (idle, and idle in a transaction) from 15% of the run on, and a spike
//! of back-to-back writers from 45% to 70%. [`crate::verdict`] compares the two runs.

use std::net::SocketAddr;
use std::time::Duration;

use poolguard_proxy::config::Config;
use poolguard_proxy::Proxy;
use poolguard_sandbox::{MariaDbSandbox, PgSandbox};

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

/// Sandbox servers and one poolguard in front of them.
pub struct Lab {
    pub pg: Option<PgSandbox>,
    pub maria: Option<MariaDbSandbox>,
    pub proxy: Proxy,
}

/// The URLs one incident's runs use.
pub struct Urls {
    pub direct: String,
    pub guarded: String,
    pub server: String,
}

impl Lab {
    /// Starts the servers the incidents need and poolguard (with the admin listener if given).
    pub async fn start(incidents: &[Incident], ports: LabPorts) -> Result<Lab, SimError> {
        let sandbox_err = |e: poolguard_sandbox::SandboxError| SimError::Setup(e.to_string());
        let join_err = |e: tokio::task::JoinError| SimError::Setup(e.to_string());
        let pg = if incidents.contains(&Incident::Bankfee) {
            let s = tokio::task::spawn_blocking(|| {
                PgSandbox::builder()
                    .max_connections(MAX_CONNECTIONS)
                    .user(USER, PASSWORD)
                    .database(DB, USER)
                    .start()
            })
            .await
            .map_err(join_err)?
            .map_err(sandbox_err)?;
            tracing::info!(
                port = s.port(),
                max_connections = MAX_CONNECTIONS,
                "PostgreSQL sandbox up"
            );
            Some(s)
        } else {
            None
        };
        let maria = if incidents.contains(&Incident::Trademate) {
            let s = tokio::task::spawn_blocking(|| {
                MariaDbSandbox::builder()
                    .max_connections(MAX_CONNECTIONS)
                    .user(USER, PASSWORD)
                    .database(DB, USER)
                    .start()
            })
            .await
            .map_err(join_err)?
            .map_err(sandbox_err)?;
            tracing::info!(
                port = s.port(),
                max_connections = MAX_CONNECTIONS,
                "MariaDB sandbox up"
            );
            Some(s)
        } else {
            None
        };
        let text = lab_config(
            pg.as_ref().map(PgSandbox::port),
            maria.as_ref().map(MariaDbSandbox::port),
            &ports,
        );
        let config =
            Config::parse(&text).map_err(|e| SimError::Setup(format!("lab config: {e}")))?;
        let proxy = Proxy::start(config)
            .await
            .map_err(|e| SimError::Setup(format!("poolguard: {e}")))?;
        Ok(Lab { pg, maria, proxy })
    }

    pub fn urls(&self, incident: Incident) -> Result<Urls, SimError> {
        let missing = || SimError::Setup(format!("no {} in this lab", incident.server()));
        match incident {
            Incident::Bankfee => {
                let pg = self.pg.as_ref().ok_or_else(missing)?;
                let addr = self.proxy.postgres_addr.ok_or_else(missing)?;
                let (su, pw) = pg.superuser();
                Ok(Urls {
                    direct: pg.url(USER, PASSWORD, DB),
                    guarded: format!("postgres://{USER}:{PASSWORD}@{addr}/{DB}"),
                    server: pg.url(su, pw, DB),
                })
            }
            Incident::Trademate => {
                let my = self.maria.as_ref().ok_or_else(missing)?;
                let addr = self.proxy.mysql_addr.ok_or_else(missing)?;
                let (root, pw) = my.root();
                Ok(Urls {
                    direct: my.url(USER, PASSWORD, DB),
                    guarded: format!("mysql://{USER}:{PASSWORD}@{addr}/{DB}"),
                    server: my.url(root, pw, DB),
                })
            }
        }
    }
}

/// Where the lab's poolguard listens (port 0 = any free port).
#[derive(Clone, Debug, Default)]
pub struct LabPorts {
    pub postgres: u16,
    pub mysql: u16,
    /// The admin HTTP listener (dashboard), if wanted.
    pub admin: Option<SocketAddr>,
}

/// `port` if it is free on 127.0.0.1 now, else 0 (any free port).
pub fn free_or_any(port: u16) -> u16 {
    if port != 0 && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
        port
    } else {
        0
    }
}

/// poolguard's configuration for the lab: the recommended settings on each server present.
pub fn lab_config(pg: Option<u16>, maria: Option<u16>, ports: &LabPorts) -> String {
    let budget = POOL_SIZE + MAX_OVERFLOW;
    let mut s = String::new();
    if let Some(a) = ports.admin {
        s += &format!("[admin]\nlisten = \"{a}\"\n\n");
    }
    let db = |backend: &str| {
        format!(
            "[[databases]]\nname = \"{DB}\"\nbackend = \"{backend}\"\npool_mode = \"transaction\"\n\
             pool_size = {POOL_SIZE}\nmax_overflow = {MAX_OVERFLOW}\n\n"
        )
    };
    if let Some(port) = pg {
        s += &format!(
            "[postgres]\nlisten = \"127.0.0.1:{}\"\n\n[[backends]]\nname = \"bankfee-pg\"\nprotocol = \"postgres\"\n\
             hosts = [\"127.0.0.1:{port}\"]\nmax_connections = {budget}\n\n{}",
            ports.postgres,
            db("bankfee-pg")
        );
    }
    if let Some(port) = maria {
        s += &format!(
            "[mysql]\nlisten = \"127.0.0.1:{}\"\n\n[[backends]]\nname = \"trademate-mariadb\"\nprotocol = \"mysql\"\n\
             hosts = [\"127.0.0.1:{port}\"]\nmax_connections = {budget}\n\n{}",
            ports.mysql,
            db("trademate-mariadb")
        );
    }
    s += &format!(
        "[[users]]\nname = \"{USER}\"\npassword = \"{PASSWORD}\"\n\n[limits]\n\
         acquire_timeout = \"{ACQUIRE_TIMEOUT}\"\nidle_in_transaction_timeout = \"{IDLE_IN_TX_TIMEOUT}\"\n\
         leak_threshold = \"1s\"\n"
    );
    s
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

/// Runs the incident direct, then through poolguard.
pub async fn replay(
    lab: &Lab,
    incident: Incident,
    d: Duration,
    progress: bool,
) -> Result<Comparison, SimError> {
    let urls = lab.urls(incident)?;
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
