//! poolguard's proxy: configuration, listeners, and client sessions wired to pools.
//!
//! Data flows one way: listener -> client session (protocol) -> pool (lease) -> server
//! connection -> back to the client. [`Proxy::start`] binds the configured front doors and
//! returns a handle; nothing here is global, so tests may run several proxies in one process.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod admission;
pub mod check;
pub mod config;
pub mod contain;
pub mod control;
pub mod entry;
pub mod error;
pub mod fault;
/// Fuzz target entry points (see `fuzz/`); not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
pub mod guard;
pub mod hosts;
pub mod idle;
pub mod kill;
pub mod mysql;
pub mod observe;
pub mod pg;
pub mod spare;
pub mod state;
pub mod tls;
pub mod traffic;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use config::Config;
use state::Shared;

/// A running proxy: its bound addresses and its accept loops.
pub struct Proxy {
    pub shared: Arc<Shared>,
    pub postgres_addr: Option<SocketAddr>,
    pub mysql_addr: Option<SocketAddr>,
    /// The admin HTTP address (`[admin] listen`), once bound.
    pub admin_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Binds every configured front door and starts accepting clients.
    pub async fn start(config: Config) -> std::io::Result<Proxy> {
        let shared = Shared::new(config);
        let mut tasks = Vec::new();
        // The admin side first: once a front door accepts clients (what a readiness probe or
        // a test waits for), the metrics and the console already answer.
        let mut admin_addr = None;
        if let Some(listen) = shared.config().admin_listen {
            let source: Arc<dyn poolguard_admin::Source> = shared.clone();
            let (addr, admin_tasks) =
                poolguard_admin::start(listen, source, shared.config().alerts.clone()).await?;
            admin_addr = Some(addr);
            tasks.extend(admin_tasks);
        }
        let mut postgres_addr = None;
        if let Some(pg) = &shared.config().postgres {
            let listener = match TcpListener::bind(pg.listen).await {
                Ok(l) => l,
                Err(e) => {
                    return Err(stop_started(
                        &tasks,
                        std::io::Error::new(
                            e.kind(),
                            format!("cannot listen on {}: {e}", pg.listen),
                        ),
                    ))
                }
            };
            let addr = listener.local_addr()?;
            tracing::info!(listen = %addr, "PostgreSQL front door open");
            postgres_addr = Some(addr);
            tasks.push(tokio::spawn(accept_postgres(listener, shared.clone())));
        }
        let mut mysql_addr = None;
        if let Some(listen) = shared.config().mysql_listen {
            let listener = match TcpListener::bind(listen).await {
                Ok(l) => l,
                Err(e) => {
                    return Err(stop_started(
                        &tasks,
                        std::io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}")),
                    ))
                }
            };
            let addr = listener.local_addr()?;
            tracing::info!(listen = %addr, "MySQL front door open");
            mysql_addr = Some(addr);
            tasks.push(tokio::spawn(accept_mysql(listener, shared.clone())));
        }
        tasks.extend(observe::spawn(&shared));
        tasks.extend(hosts::check::spawn(&shared));
        Ok(Proxy {
            shared,
            postgres_addr,
            mysql_addr,
            admin_addr,
            tasks,
        })
    }

    /// Stops accepting new clients. Sessions already running finish on their own.
    pub fn stop_accepting(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A start that fails half-way stops what it had started (the admin listener and its alert
/// tasks), so the port is free again and nothing runs on for a proxy that does not exist.
fn stop_started(tasks: &[JoinHandle<()>], error: std::io::Error) -> std::io::Error {
    for t in tasks {
        t.abort();
    }
    error
}

async fn accept_postgres(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                use tracing::Instrument;
                // Over a cap the socket is answered and dropped (closed) here, costing no task.
                let Some(admitted) = gate::admit(&shared, &stream, peer, gate::Door::Postgres)
                else {
                    continue;
                };
                // debug: an enabled span costs each connected client a few hundred bytes in
                // the subscriber; the log lines that matter name the client themselves.
                let span = tracing::debug_span!("client", client = %peer);
                let client = pg::login::serve_client(stream, admitted, shared.clone());
                tokio::spawn(
                    contain::contain(client, "postgres client", shared.clone()).instrument(span),
                );
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn accept_mysql(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                use tracing::Instrument;
                let Some(admitted) = gate::admit(&shared, &stream, peer, gate::Door::Mysql) else {
                    continue;
                };
                let span = tracing::debug_span!("client", client = %peer, front = "mysql");
                let client = mysql::login::serve_client(stream, admitted, shared.clone());
                tokio::spawn(
                    contain::contain(client, "mysql client", shared.clone()).instrument(span),
                );
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod footprint {
    //! What a connected client's task costs. Every client, idle or not, keeps its task's
    //! future for as long as it is connected, sized for the largest await point anywhere in
    //! it; an unboxed login, console or relay state there multiplies by the number of clients.

    fn future_size<A, B, C, F: std::future::Future>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Generous for a debug build; the states this guards against were 5 to 8 KB.
    const LIMIT: usize = 1024;

    #[test]
    fn a_client_task_stays_small() {
        let pg = future_size(crate::pg::login::serve_client);
        let mysql = future_size(crate::mysql::login::serve_client);
        eprintln!("client task futures: PostgreSQL {pg} bytes, MySQL {mysql} bytes");
        assert!(pg <= LIMIT, "PostgreSQL client task: {pg} bytes");
        assert!(mysql <= LIMIT, "MySQL client task: {mysql} bytes");
    }
}
