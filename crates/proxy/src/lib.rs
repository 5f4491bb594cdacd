//! poolguard's proxy: configuration, listeners, and client sessions wired to pools.
//!
//! Data flows one way: listener -> client session (protocol) -> pool (lease) -> server
//! connection -> back to the client. [`Proxy::start`] binds the configured front doors and
//! returns a handle; nothing here is global, so tests may run several proxies in one process.

// One exception, in `clients` (KILL_CLIENT without a second descriptor per client): see there.
#![deny(unsafe_code)]
#![deny(rust_2018_idioms)]

pub(crate) mod admission;
pub mod check;
pub(crate) mod clients;
pub mod config;
pub(crate) mod contain;
pub(crate) mod control;
pub(crate) mod entry;
pub(crate) mod error;
pub(crate) mod fault;
pub(crate) mod fleet;
/// Fuzz target entry points (see `fuzz/`); not an API.
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod gate;
pub(crate) mod guard;
pub(crate) mod hosts;
pub(crate) mod idle;
pub(crate) mod kill;
pub(crate) mod lot;
pub(crate) mod mysql;
pub(crate) mod observe;
pub(crate) mod pg;
pub(crate) mod spare;
pub mod state;
pub(crate) mod stop;
pub(crate) mod stream;
pub(crate) mod tls;
pub(crate) mod traffic;
pub mod upgrade;
pub mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use config::Config;
use state::Shared;
use workers::Workers;

/// A running proxy: its bound addresses and its accept loops.
pub struct Proxy {
    pub shared: Arc<Shared>,
    pub postgres_addr: Option<SocketAddr>,
    pub mysql_addr: Option<SocketAddr>,
    /// The admin HTTP address (`[admin] listen`), once bound.
    pub admin_addr: Option<SocketAddr>,
    /// The accept loops (both doors, admin HTTP): what a binary upgrade stops.
    accepts: Vec<JoinHandle<()>>,
    /// Everything else (alert ticks, observation, health checks).
    tasks: Vec<JoinHandle<()>>,
    /// Copies of the listening sockets, for handing them to a new binary (`upgrade`).
    pub(crate) listeners: upgrade::Listeners,
}

impl Proxy {
    /// Binds every configured front door and starts accepting clients.
    pub async fn start(config: Config) -> std::io::Result<Proxy> {
        Proxy::start_with(config, upgrade::Inherited::default(), Workers::local()).await
    }

    /// As [`Proxy::start`], taking over what a running poolguard handed over: its listening
    /// sockets (used instead of binding) and its share of each backend budget (kept out of
    /// reach until it reports it released). Clients are spread over `workers`.
    pub async fn start_with(
        config: Config,
        mut inherited: upgrade::Inherited,
        workers: Arc<Workers>,
    ) -> std::io::Result<Proxy> {
        let shared = Shared::new(config);
        inherited.apply_caps(&shared);
        let mut tasks = Vec::new();
        let mut accepts = Vec::new();
        let mut listeners = upgrade::Listeners::default();
        // The admin side first: once a front door accepts clients (what a readiness probe or
        // a test waits for), the metrics and the console already answer.
        let mut admin_addr = None;
        if let Some(listen) = shared.config().admin_listen {
            let source: Arc<dyn poolguard_admin::Source> = shared.clone();
            let rules = shared.config().alerts.clone();
            let listener =
                match open(&mut inherited, &mut listeners, upgrade::Door::Admin, listen).await {
                    Ok(l) => l,
                    Err(e) => return Err(e),
                };
            let (addr, mut admin_tasks) = poolguard_admin::serve(listener, source, rules)?;
            admin_addr = Some(addr);
            // The first task serves HTTP; the rest (alert ticks) go on through an upgrade.
            accepts.extend(admin_tasks.drain(..1));
            tasks.extend(admin_tasks);
        }
        let mut postgres_addr = None;
        if let Some(pg) = &shared.config().postgres {
            let listener = match open(
                &mut inherited,
                &mut listeners,
                upgrade::Door::Postgres,
                pg.listen,
            )
            .await
            {
                Ok(l) => l,
                Err(e) => return Err(stop_started(&accepts, &tasks, e)),
            };
            let addr = listener.local_addr()?;
            tracing::info!(listen = %addr, "PostgreSQL front door open");
            postgres_addr = Some(addr);
            accepts.push(tokio::spawn(accept_postgres(
                listener,
                shared.clone(),
                workers.clone(),
            )));
        }
        let mut mysql_addr = None;
        if let Some(listen) = shared.config().mysql_listen {
            let listener =
                match open(&mut inherited, &mut listeners, upgrade::Door::Mysql, listen).await {
                    Ok(l) => l,
                    Err(e) => return Err(stop_started(&accepts, &tasks, e)),
                };
            let addr = listener.local_addr()?;
            tracing::info!(listen = %addr, "MySQL front door open");
            mysql_addr = Some(addr);
            accepts.push(tokio::spawn(accept_mysql(
                listener,
                shared.clone(),
                workers.clone(),
            )));
        }
        tasks.extend(observe::spawn(&shared));
        tasks.extend(hosts::check::spawn(&shared));
        if let Some(fleet) = fleet::start(&shared) {
            shared.set_fleet(fleet);
        }
        Ok(Proxy {
            shared,
            postgres_addr,
            mysql_addr,
            admin_addr,
            accepts,
            tasks,
            listeners,
        })
    }

    /// Stops accepting new clients. Sessions already running finish on their own. The kept
    /// copies of the listening sockets close too: while one is open the kernel still
    /// completes connections nobody will accept, and a client hangs instead of being refused.
    pub fn stop_accepting(&mut self) {
        self.accepts
            .iter()
            .chain(&self.tasks)
            .for_each(|t| t.abort());
        self.listeners = upgrade::Listeners::default();
    }

    /// Stops the accept loops only (a new binary accepts on the same sockets now); sessions,
    /// observation and health checks go on.
    pub(crate) fn stop_front_doors(&mut self) {
        self.accepts.iter().for_each(|t| t.abort());
        self.listeners = upgrade::Listeners::default();
    }
}

/// A front door's listener: the one handed over for this door if any, else bound now.
async fn open(
    inherited: &mut upgrade::Inherited,
    listeners: &mut upgrade::Listeners,
    door: upgrade::Door,
    listen: SocketAddr,
) -> std::io::Result<TcpListener> {
    if let Some(l) = inherited.take(door, listen) {
        return listeners.keep(door, l);
    }
    let listener = TcpListener::bind(listen).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {listen}{}: {e}", door.label()),
        )
    })?;
    listeners.copy_of(door, &listener)?;
    Ok(listener)
}

/// A start that fails half-way stops what it had started (the admin listener and its alert
/// tasks), so the port is free again and nothing runs on for a proxy that does not exist.
fn stop_started(
    accepts: &[JoinHandle<()>],
    tasks: &[JoinHandle<()>],
    error: std::io::Error,
) -> std::io::Error {
    accepts.iter().chain(tasks).for_each(|t| t.abort());
    error
}

async fn accept_postgres(listener: TcpListener, shared: Arc<Shared>, workers: Arc<Workers>) {
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
                let shared = shared.clone();
                workers.spawn_client(stream, move |stream, place| {
                    let client = pg::login::serve_client(stream, admitted, shared.clone(), place);
                    contain::contain(client, "postgres client", shared).instrument(span)
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn accept_mysql(listener: TcpListener, shared: Arc<Shared>, workers: Arc<Workers>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                use tracing::Instrument;
                let Some(admitted) = gate::admit(&shared, &stream, peer, gate::Door::Mysql) else {
                    continue;
                };
                let span = tracing::debug_span!("client", client = %peer, front = "mysql");
                let shared = shared.clone();
                workers.spawn_client(stream, move |stream, place| {
                    let client =
                        mysql::login::serve_client(stream, admitted, shared.clone(), place);
                    contain::contain(client, "mysql client", shared).instrument(span)
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Takes `m` even if a panic poisoned it: a panic is contained to its task
/// ([`contain`]), and the data these locks guard (lists, counts, maps) is never left half
/// written across a statement that can panic, so the next holder can use it as it is.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod footprint {
    //! What a connected client costs in its task and its session record. Every client, idle
    //! or not, keeps its task's future for as long as it is connected: a logged-in client's is
    //! a [`crate::idle::Parked`] record (a few words), and the login and every busy stretch
    //! are boxed, so an unboxed login, console or relay state there would multiply by the
    //! number of clients. The session records are kept by every client too.

    fn future_size<A, B, C, D, F: std::future::Future>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The client task's future (debug build; the states this guards against were 0.5 to
    /// 8 KB). 152: the worker's place (lot and live count) and the rest timer; an idle client
    /// has this only for its first `lot::REST_AFTER` idle, then it rests without a task.
    const TASK_LIMIT: usize = 152;

    #[test]
    fn a_client_task_stays_small() {
        let pg = future_size(crate::pg::login::serve_client);
        let mysql = future_size(crate::mysql::login::serve_client);
        eprintln!("client task futures: PostgreSQL {pg} bytes, MySQL {mysql} bytes");
        assert!(pg <= TASK_LIMIT, "PostgreSQL client task: {pg} bytes");
        assert!(mysql <= TASK_LIMIT, "MySQL client task: {mysql} bytes");
    }

    /// A busy stretch (boxed per wake-up, so once per statement in transaction mode) fits
    /// glibc's per-thread cache, which serves requests up to 1,032 bytes; a larger box goes
    /// through the allocator's bins at every statement (about 300 instructions more per
    /// allocation and free, measured with callgrind). The doors box their rare or large
    /// steps where they are awaited to stay under it.
    #[test]
    fn a_busy_stretch_fits_the_allocators_thread_cache() {
        fn size<A, B, F: std::future::Future>(_: fn(A, B) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let pg = size(crate::idle::stretch::<crate::pg::session::Session>);
        let mysql = size(crate::idle::stretch::<crate::mysql::session::Session>);
        eprintln!("busy stretches: PostgreSQL {pg} bytes, MySQL {mysql} bytes");
        assert!(pg <= STRETCH_LIMIT, "PostgreSQL stretch: {pg} bytes");
        assert!(mysql <= STRETCH_LIMIT, "MySQL stretch: {mysql} bytes");
    }

    const STRETCH_LIMIT: usize = 1032;

    #[test]
    fn a_session_record_stays_small() {
        let pg = std::mem::size_of::<crate::pg::session::Session>();
        let mysql = std::mem::size_of::<crate::mysql::session::Session>();
        eprintln!("session records: PostgreSQL {pg} bytes, MySQL {mysql} bytes");
        assert!(pg <= PG_SESSION_LIMIT, "PostgreSQL session: {pg} bytes");
        assert!(mysql <= MYSQL_SESSION_LIMIT, "MySQL session: {mysql} bytes");
    }

    // 400: the cancel registration's session serial (8 bytes) keeps one client from being
    // taken as another that had the same process id (parameters then compared, not assumed).
    const PG_SESSION_LIMIT: usize = 400;
    const MYSQL_SESSION_LIMIT: usize = 528;
}
