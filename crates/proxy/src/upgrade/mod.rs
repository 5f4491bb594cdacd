//! Binary upgrade: a new `poolguard` process takes over from the running one without closing
//! a client connection.
//!
//! How (the way pg_doorman and PgBouncer's `so_reuseport` users upgrade, chosen over
//! SO_REUSEPORT because the kernel then balances new connections across *both* processes
//! and a connection queued on the old one's socket when it closes is lost): the running
//! process listens on a Unix control socket (`[general] upgrade_socket`). `poolguard run
//! --takeover` connects to it; the old process sends its listening sockets themselves (both
//! doors and the admin listener) with `SCM_RIGHTS` ([`wire`]), so nothing is ever closed or
//! re-bound and no connection waiting in an accept queue is lost. Once the new process
//! accepts on them (`STARTED`), the old one stops accepting and drains: the clients it has
//! keep being served by it until they disconnect, or until the drain deadline (then the
//! shutdown drain: new transactions refused, running ones get [`LAST_CALL`] to finish).
//!
//! Invariants:
//! - No gap: the listening sockets are open in at least one process at every moment; the old
//!   process stops accepting only after the new one said it accepts.
//! - Bounded: the two processes together never hold more than a backend's budget ([`share`]).
//! - Failing safe: if the new process goes away before `STARTED`, the old one lifts its caps
//!   and goes on as before; if the old one goes away, the new one has the whole budget.
//! - Long-lived clients are not moved: a client stays on the process it connected to (its
//!   socket, session state, prepared statements and cancel key live there). Moving
//!   transaction-mode clients between transactions is not done yet: a client connected for
//!   longer than the drain deadline is disconnected then (PostgreSQL 57P01 / MySQL 1053 on its
//!   next transaction), as with a shutdown.

mod share;
mod wire;

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::lock;
use crate::state::Shared;
use crate::Proxy;
use share::{Shares, Shrinking};
use wire::{parse_reserve, reserve_line, Wire};

/// How long each side waits for the other during the hand-off (the new process's start
/// includes verifying the budgets against the servers).
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(60);

/// After the drain deadline, how long running transactions still get before the old process
/// exits (as in the shutdown drain).
pub const LAST_CALL: Duration = Duration::from_secs(5);

/// How often the old process looks at its clients and shrinks its share.
const SHRINK_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("upgrade socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("upgrade: {0}")]
    Protocol(String),
    #[error("upgrade: no answer within {0:?}")]
    Timeout(Duration),
    #[error("upgrade socket {0} answers: another poolguard runs there (start this one with --takeover to replace it)")]
    InUse(PathBuf),
}

/// A listening socket a process can hand over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Postgres,
    Mysql,
    Admin,
}

impl Door {
    fn name(self) -> &'static str {
        match self {
            Door::Postgres => "postgres",
            Door::Mysql => "mysql",
            Door::Admin => "admin",
        }
    }

    fn parse(name: &str) -> Option<Door> {
        [Door::Postgres, Door::Mysql, Door::Admin]
            .into_iter()
            .find(|d| d.name() == name)
    }

    /// What a bind error adds after the address.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Door::Admin => " (admin)",
            _ => "",
        }
    }
}

/// Copies of a running proxy's listening sockets (what it would hand over).
#[derive(Default)]
pub struct Listeners {
    fds: Vec<(Door, OwnedFd)>,
}

impl Listeners {
    /// Remembers a copy of `listener` (a duplicated descriptor of the same socket).
    pub(crate) fn copy_of(&mut self, door: Door, listener: &TcpListener) -> std::io::Result<()> {
        self.fds
            .push((door, listener.as_fd().try_clone_to_owned()?));
        Ok(())
    }

    /// Takes a handed-over socket into the runtime, keeping a copy for the next upgrade.
    pub(crate) fn keep(
        &mut self,
        door: Door,
        listener: std::net::TcpListener,
    ) -> std::io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        self.copy_of(door, &listener)?;
        Ok(listener)
    }
}

/// What a new process got from the running one: listening sockets and its budget shares.
#[derive(Default)]
pub struct Inherited {
    listeners: Vec<(Door, std::net::TcpListener)>,
    /// The old process's share of each backend budget at the hand-off.
    shares: Shares,
}

impl Inherited {
    /// The handed-over socket for `door`, if it listens where the configuration says (a
    /// changed address is bound anew; the old socket closes with the old process).
    pub(crate) fn take(&mut self, door: Door, listen: SocketAddr) -> Option<std::net::TcpListener> {
        let i = self.listeners.iter().position(|(d, _)| *d == door)?;
        let (_, listener) = self.listeners.remove(i);
        match listener.local_addr() {
            Ok(at) if at == listen || listen.port() == 0 => Some(listener),
            Ok(at) => {
                tracing::warn!(door = door.name(), was = %at, now = %listen, "the listen address changed: binding the new one; the old one closes with the old process");
                None
            }
            Err(_) => None,
        }
    }

    /// Caps each backend the old process holds a share of at the rest of its budget.
    pub(crate) fn apply_caps(&self, shared: &Shared) {
        let config = shared.config();
        shared.set_upgrade_caps(config.backends.iter().filter_map(|b| {
            let old = self.shares.get(&b.name)?;
            Some((b.name.clone(), Some(b.max_connections.saturating_sub(*old))))
        }));
    }
}

/// The running process's end of the control socket.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

/// A new process asking to take over.
pub struct Request(Wire);

impl ControlSocket {
    /// Listens on `path`. Unless `replace` (a process that just took over binds the path its
    /// predecessor used), a socket there that answers means another poolguard runs: refused.
    pub async fn bind(path: &Path, replace: bool) -> Result<ControlSocket, UpgradeError> {
        if !replace && UnixStream::connect(path).await.is_ok() {
            return Err(UpgradeError::InUse(path.to_owned()));
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        let listener = UnixListener::bind(path)?;
        tracing::info!(path = %path.display(), "upgrade socket open (poolguard run --takeover)");
        Ok(ControlSocket {
            listener,
            path: path.to_owned(),
        })
    }

    /// The next process asking to take over.
    pub async fn next(&self) -> Result<Request, UpgradeError> {
        let (stream, _) = self.listener.accept().await?;
        Ok(Request(Wire::new(stream)))
    }

    /// On a normal exit (not after a hand-off, where the path is the new process's).
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A hand-off in progress on the new process's side: sockets received, not accepting yet.
pub struct Takeover {
    wire: Wire,
    inherited: Option<Inherited>,
}

/// Asks the poolguard answering on `path` to hand over. `Ok(None)` when nobody answers there
/// (no socket, or a stale one): start as usual.
pub async fn take_over(path: &Path) -> Result<Option<Takeover>, UpgradeError> {
    let stream = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e.into()),
    };
    let mut wire = Wire::new(stream);
    wire.send_line("TAKEOVER 1").await?;
    let mut fds = Vec::new();
    let first = within(wire.read_line_with_fds(&mut fds)).await?;
    let doors = first
        .strip_prefix("LISTENERS")
        .ok_or_else(|| UpgradeError::Protocol(format!("the running poolguard said {first:?}")))?;
    let doors: Vec<Door> = doors
        .split_whitespace()
        .map(|d| Door::parse(d).ok_or_else(|| UpgradeError::Protocol(format!("unknown door {d}"))))
        .collect::<Result<_, _>>()?;
    if doors.len() != fds.len() {
        return Err(UpgradeError::Protocol(format!(
            "{} doors named, {} sockets received",
            doors.len(),
            fds.len()
        )));
    }
    let listeners = doors
        .into_iter()
        .zip(fds)
        .map(|(d, fd)| (d, std::net::TcpListener::from(fd)))
        .collect();
    let mut shares = Shares::new();
    loop {
        let line = within(wire.read_line()).await?;
        if line == "RESERVED" {
            break;
        }
        let (backend, n) = parse_reserve(&line)
            .ok_or_else(|| UpgradeError::Protocol(format!("unexpected {line:?}")))?;
        shares.insert(backend, n);
    }
    tracing::info!(
        ?shares,
        "listening sockets received from the running poolguard"
    );
    Ok(Some(Takeover {
        wire,
        inherited: Some(Inherited { listeners, shares }),
    }))
}

impl Takeover {
    /// The sockets and shares, for [`Proxy::start_with`].
    pub fn inherited(&mut self) -> Inherited {
        self.inherited.take().unwrap_or_default()
    }

    /// The new proxy accepts: tell the old process to stop, and follow its shrinking share
    /// until it exits (the returned task ends then, with the budgets whole).
    pub async fn started(mut self, shared: Arc<Shared>) -> Result<JoinHandle<()>, UpgradeError> {
        self.wire.send_line("STARTED").await?;
        Ok(tokio::spawn(follow(self.wire, shared)))
    }
}

async fn follow(mut wire: Wire, shared: Arc<Shared>) {
    while let Ok(Some(line)) = wire.read_line().await {
        let Some((backend, old)) = parse_reserve(&line) else {
            continue;
        };
        let max = shared.config().backend(&backend).map(|b| b.max_connections);
        if let Some(max) = max {
            tracing::debug!(backend = %backend, old_share = old, "the previous poolguard's share shrank");
            shared.set_upgrade_caps([(backend, Some(max.saturating_sub(old)))]);
        }
    }
    // End of file: the old process has exited, and its connections closed with it.
    let backends: Vec<String> = lock(&shared.upgrade_caps).keys().cloned().collect();
    shared.set_upgrade_caps(backends.into_iter().map(|b| (b, None)));
    tracing::info!("the previous poolguard has exited: every backend budget is whole again");
    shared.observe.events.push(
        poolguard_admin::EventKind::Operator,
        "upgrade complete: the previous process has exited; budgets whole".into(),
        None,
        None,
        None,
    );
}

/// The old process after the hand-off: its clients, draining.
pub struct Handover {
    wire: Wire,
    shares: Shrinking,
    /// When the new process said it accepts.
    pub at: Instant,
}

impl Proxy {
    /// Hands the listening sockets to the process behind `request` (see the module docs).
    /// On success this proxy no longer accepts; on failure it goes on as before.
    pub async fn hand_over(&mut self, request: Request) -> Result<Handover, UpgradeError> {
        let mut wire = request.0;
        let hello = within(wire.read_line()).await?;
        if hello != "TAKEOVER 1" {
            return Err(UpgradeError::Protocol(format!("unexpected {hello:?}")));
        }
        let started = Instant::now();
        // Frozen before the new process can open anything: from here on this share only shrinks.
        // The new process first learns what is held now, idle connections this closes
        // included: the server counts them until their backends have ended.
        let held = self.shared.shares_held();
        let shares = self.shared.share_needed();
        self.shared
            .set_upgrade_caps(shares.iter().map(|(b, n)| (b.clone(), Some(*n))));
        let first: Shares = shares
            .iter()
            .map(|(b, n)| (b.clone(), (*n).max(held.get(b).copied().unwrap_or(0))))
            .collect();
        match self.send_sockets(&mut wire, &first).await {
            Ok(()) => {}
            Err(e) => {
                // The new process is not there: take the whole budgets back, keep accepting.
                self.shared
                    .set_upgrade_caps(shares.keys().map(|b| (b.clone(), None)));
                return Err(e);
            }
        }
        self.stop_front_doors();
        let took = started.elapsed();
        tracing::info!(
            ?shares,
            ?took,
            "handed the listening sockets to the new poolguard; draining"
        );
        self.shared.observe.events.push(
            poolguard_admin::EventKind::Operator,
            format!("upgrade: a new poolguard accepts on the listening sockets (hand-off {took:?}); this process drains"),
            None,
            None,
            None,
        );
        Ok(Handover {
            wire,
            shares: Shrinking::new(shares, started),
            at: Instant::now(),
        })
    }

    async fn send_sockets(&self, wire: &mut Wire, shares: &Shares) -> Result<(), UpgradeError> {
        let doors: Vec<&str> = self.listeners.fds.iter().map(|(d, _)| d.name()).collect();
        let fds: Vec<_> = self
            .listeners
            .fds
            .iter()
            .map(|(_, fd)| fd.as_fd())
            .collect();
        wire.send_fds(&format!("LISTENERS {}", doors.join(" ")), &fds)
            .await?;
        for (backend, n) in shares {
            if backend.contains('\n') {
                return Err(UpgradeError::Protocol(format!("backend name {backend:?}")));
            }
            wire.send_line(&reserve_line(backend, *n)).await?;
        }
        wire.send_line("RESERVED").await?;
        match within(wire.read_line()).await? {
            line if line == "STARTED" => Ok(()),
            line => Err(UpgradeError::Protocol(format!("unexpected {line:?}"))),
        }
    }
}

impl Handover {
    /// Serves the clients this process has until they are gone or `deadline` passes, shrinking
    /// its budget share as they leave and reporting it; then the shutdown drain. Returns a
    /// summary for the log.
    pub async fn drain(mut self, shared: &Arc<Shared>, deadline: Duration) -> String {
        let until = self.at + deadline;
        let mut tick = tokio::time::interval(SHRINK_EVERY);
        loop {
            tick.tick().await;
            let gone = shared.client_count() == 0 && shared.logins.in_progress() == 0;
            if gone || Instant::now() >= until {
                break;
            }
            if self.shrink(shared).await.is_err() {
                // The new process is gone; nothing to report to. Keep serving to the deadline.
                tracing::warn!("the new poolguard closed the upgrade connection");
            }
        }
        let left = shared.client_count();
        let summary = shared.drain(LAST_CALL).await;
        // Every server connection is closed now (or is cut as the process exits right after).
        tokio::time::sleep(share::RELEASE_GRACE).await;
        let zeros: Vec<_> = self.shares.current().keys().cloned().collect();
        for b in zeros {
            let _ = self.wire.send_line(&reserve_line(&b, 0)).await;
        }
        format!(
            "drained after the upgrade in {:?}: {left} client(s) left at the end; {summary}",
            self.at.elapsed()
        )
    }

    async fn shrink(&mut self, shared: &Shared) -> Result<(), UpgradeError> {
        let now = Instant::now();
        let lowered = self.shares.lower(&shared.share_needed(), now);
        if !lowered.is_empty() {
            shared.set_upgrade_caps(lowered.into_iter().map(|(b, n)| (b, Some(n))));
        }
        if let Some(due) = self.shares.due(now) {
            for (backend, n) in due {
                self.wire.send_line(&reserve_line(&backend, n)).await?;
            }
        }
        Ok(())
    }
}

async fn within<T>(
    f: impl std::future::Future<Output = Result<Option<T>, UpgradeError>>,
) -> Result<T, UpgradeError> {
    match tokio::time::timeout(HANDOFF_TIMEOUT, f).await {
        Err(_) => Err(UpgradeError::Timeout(HANDOFF_TIMEOUT)),
        Ok(r) => {
            r?.ok_or_else(|| UpgradeError::Protocol("the other side closed the connection".into()))
        }
    }
}
