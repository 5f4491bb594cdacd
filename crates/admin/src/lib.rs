//! # poolguard-admin: see it coming
//!
//! The observability side of poolguard, kept apart from the protocols and the pools: it reads a
//! [`Source`] (implemented by the proxy) and serves
//! - `GET /metrics`: Prometheus text ([`metrics`]),
//! - `GET /api/...`: JSON ([`api`]),
//! - `GET /`: a self-contained live dashboard (`dashboard.html`, no CDN),
//! - `GET /healthz`, `GET /readyz`: probes for load balancers and orchestrators,
//!
//! every request checked first by [`access`] (Host, Origin, read or admin token),
//! evaluates `[[alerts]]` rules every second and delivers firing/resolved notices to the log
//! and to webhooks ([`alerts`]), and renders PgBouncer-style console answers ([`console`]) with
//! SHOW STATS averages over a stats period ([`stats`]).
//!
//! Invariants: nothing here is on a client's path; a snapshot is taken per request or tick and
//! rendered from copies, so a slow scraper never holds a pool lock.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod access;
pub mod alerts;
pub mod api;
pub mod console;
mod https;
pub mod metrics;
pub mod model;
pub mod process;
pub mod redact;
pub mod stats;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;

pub use access::Access;
pub use alerts::{AlertRule, Quantity};
pub use model::{Event, EventKind, EventLog, Snapshot};

/// What the admin side observes. Implemented by the proxy's shared state.
pub trait Source: Send + Sync + 'static {
    /// Everything, right now.
    fn snapshot(&self) -> Snapshot;
    /// The event log leak and alert events go to.
    fn events(&self) -> &EventLog;
    /// Re-read and apply the configuration (`POST /api/reload`): a summary, or why not.
    fn reload(&self) -> Result<String, String> {
        Err("this poolguard cannot reload its configuration".into())
    }
    /// Who may use the HTTP side now ([`access`]); a reload may change it.
    fn access(&self) -> Access {
        Access::default()
    }
    /// Ready to serve (`GET /readyz`): `Err` says why not (draining, no server reachable).
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }
    /// HTTPS: the handshake for the next connection (a reload may change the certificate).
    /// `None` at start: plain HTTP for the life of the listener.
    fn tls(&self) -> Option<tokio_rustls::TlsAcceptor> {
        None
    }
}

/// Binds `listen`, serves HTTP and runs the alert monitor. Returns the bound address and the
/// tasks (abort them to stop).
pub async fn start(
    listen: SocketAddr,
    source: Arc<dyn Source>,
    rules: Vec<AlertRule>,
) -> std::io::Result<(SocketAddr, Vec<JoinHandle<()>>)> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {listen} (admin): {e}"))
    })?;
    serve(listener, source, rules)
}

/// As [`start`], on a listener already bound (one handed over by a running poolguard during a
/// binary upgrade).
pub fn serve(
    listener: tokio::net::TcpListener,
    source: Arc<dyn Source>,
    rules: Vec<AlertRule>,
) -> std::io::Result<(SocketAddr, Vec<JoinHandle<()>>)> {
    let addr = listener.local_addr()?;
    let monitor = alerts::Monitor::new(rules);
    let app = api::router(source.clone(), monitor.clone(), addr);
    tracing::info!(listen = %addr, "admin HTTP open (/metrics, /api, dashboard)");
    let http = if source.tls().is_some() {
        tokio::spawn(https::serve(listener, app, source.clone()))
    } else {
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "admin HTTP server stopped");
            }
        })
    };
    let ticks = tokio::spawn(monitor.run(source));
    Ok((addr, vec![http, ticks]))
}
