//! The lab the demo and `poolguard replay` run in: sandbox PostgreSQL and MariaDB servers with
//! a small `max_connections`, and one in-process poolguard in front of them with the
//! recommended settings. It lives in the CLI (not in the simulator, which is only a client):
//! the replays get its URLs ([`Lab::urls`]).

use std::net::SocketAddr;

use poolguard_proxy::config::Config;
use poolguard_proxy::Proxy;
use poolguard_sandbox::{MariaDbSandbox, PgSandbox};
use poolguard_sim::replay::{
    Incident, Urls, ACQUIRE_TIMEOUT, DB, IDLE_IN_TX_TIMEOUT, MAX_CONNECTIONS, MAX_OVERFLOW,
    PASSWORD, POOL_SIZE, USER,
};
use poolguard_sim::SimError;

/// Sandbox servers and one poolguard in front of them.
pub struct Lab {
    pub pg: Option<PgSandbox>,
    pub maria: Option<MariaDbSandbox>,
    pub proxy: Proxy,
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
