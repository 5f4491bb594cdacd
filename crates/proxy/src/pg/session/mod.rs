//! A logged-in PostgreSQL client: relays messages between the client and a leased server.
//!
//! States: *Idle* (no server; transaction mode between transactions), *Held* (a server is
//! leased; see [`Held`]), *Skipping* (a request was refused before reaching a server: the
//! client's messages up to its next Sync/Query are dropped, then it gets ErrorResponse +
//! ReadyForQuery, as PostgreSQL itself does after an error in an extended-protocol batch), and
//! closing, where [`super::reclaim`] brings the server back to a clean idle state or discards it.
//! Client messages are handled in [`from_client`], server messages in [`from_server`].
//!
//! Invariants:
//! - the client sees exactly the responses to its own messages, in order ([`Pending`]);
//! - in transaction mode a server is released only at a message boundary on both sides, with
//!   nothing pending, no extended-protocol message sent since the last Sync, and ReadyForQuery
//!   status 'I' (no transaction open);
//! - before a server runs a client's transaction it carries that client's tracked parameters
//!   and the statements the client's messages refer to (under poolguard-owned names);
//! - session state that cannot move (see [`super::features`]) either resets the server before
//!   anyone else gets it, pins the client to it, or is refused, per `session_state`.

mod from_client;
mod from_server;
mod local_prepare;
mod statement_sql;

use std::sync::Arc;

use crate::stream::ClientStream;
use bytes::BytesMut;
use poolguard_pg::framing::DEFAULT_MAX_MESSAGE_LEN;
use poolguard_pg::{backend, frontend};
use poolguard_pool::{AcquireError, Clean, DiscardReason, Holder, Lease};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::config::{PoolMode, SessionStatePolicy};
use crate::contain::ClientSocket;
use crate::error::ProxyError;
use crate::error::CLOSED_POOL;
use crate::guard;
use crate::idle::Park;
use crate::pg::cancel::{send_cancel, Registration, ServerKey};
use crate::pg::features::SessionFeature;
use crate::pg::login::{write_error, LoggedIn};
use crate::pg::params::{sync_queries, ParamSet};
use crate::pg::pending::{Expect, Pending, Synthetic};
use crate::pg::prepared::ClientStatements;
use crate::pg::reclaim::{reclaim, Reclaim};
use crate::pg::scan::Scanner;
use crate::pg::server::{PgConnector, ServerError};
use crate::state::{ClientSlot, PgPoolEntry, Shared};

pub type PgLease = Lease<PgConnector>;

/// A leased server and where its conversation stands.
pub struct Held {
    pub lease: PgLease,
    pub scan: Scanner,
    /// What the server still owes, in order.
    pub pending: Pending,
    /// Status of the last ReadyForQuery: b'I' idle, b'T' in a transaction, b'E' failed one.
    pub status: u8,
    /// Extended-protocol messages were sent after the last Sync.
    pub unsynced: bool,
    /// The server asked for COPY data (CopyInResponse) and the client has not ended it.
    pub copy_in: bool,
    /// The client changed session state on this server: reset it before reuse.
    pub dirty: bool,
    /// When the oldest unanswered request was sent (drives query_timeout).
    pub busy_since: Option<Instant>,
    /// When the server last became idle (its last ReadyForQuery): idle-in-transaction time is
    /// counted from the later of this and the client's last message, never while a statement
    /// runs or the client waits for a server.
    pub idle_since: Instant,
    pub cancel_sent: bool,
    /// The client was given the server's own FATAL (a terminated backend, say): when the
    /// server then closes, the client has been told, as directly, and gets nothing more.
    pub fatal_relayed: bool,
}

impl Held {
    fn new(mut lease: PgLease) -> Box<Self> {
        let pending = std::mem::take(&mut lease.spare_pending).recycle();
        Box::new(Held {
            lease,
            scan: Scanner::new(DEFAULT_MAX_MESSAGE_LEN),
            pending,
            status: b'I',
            unsynced: false,
            copy_in: false,
            dirty: false,
            busy_since: None,
            idle_since: Instant::now(),
            cancel_sent: false,
            fatal_relayed: false,
        })
    }

    fn key(&self) -> Arc<ServerKey> {
        self.lease.cancel_key()
    }

    /// A transaction (or an unfinished extended-protocol batch) is open on the server.
    pub fn in_transaction(&self) -> bool {
        self.status != b'I' || self.unsynced || self.copy_in
    }

    /// Requests are in flight.
    pub fn busy(&self) -> bool {
        !self.pending.is_empty()
    }

    /// What can be proven about this server right now, for [`poolguard_pool::Lease::release`];
    /// `client_in_step`: the client's side is at a message boundary too.
    pub fn proof(&self, client_in_step: bool) -> Clean {
        Clean {
            nothing_owed: self.proof_before_reset(client_in_step).nothing_owed && !self.dirty,
            ..self.proof_before_reset(client_in_step)
        }
    }

    /// [`Held::proof`] leaving out the reset a dirty server still owes: whether the server may
    /// go to [`reclaim`] for that reset now. The reset's own release proves the rest again.
    fn proof_before_reset(&self, client_in_step: bool) -> Clean {
        Clean {
            idle: !self.busy() && self.lease.buf.is_empty(),
            no_transaction: self.status == b'I',
            nothing_owed: !self.unsynced && !self.copy_in,
            in_step: client_in_step && !self.scan.mid_message(),
        }
    }
}

/// Why a session ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The client sent Terminate.
    Terminate,
    /// The client closed its socket or it failed.
    ClientGone,
    /// poolguard closed the client after telling it why.
    Kicked(ProxyError),
    /// The server failed; the client was told.
    ServerFailed,
}

/// What [`Session::try_acquire_now`] managed.
enum Acquired {
    /// A server is held and ready for the client's transaction.
    Leased,
    /// A server was leased; making it the client's needs waiting ([`Session::start_lease`]).
    Start(Box<Held>),
    /// Nothing leased: the whole [`Session::acquire`] is needed.
    Wait,
}

enum Event {
    Client(std::io::Result<usize>),
    Server(std::io::Result<usize>),
    Deadline,
}

pub struct Session {
    /// First: fields drop in declaration order, and the client must be unlisted before its
    /// socket closes (KILL_CLIENT reaches it by descriptor number, see [`crate::clients`]).
    _slot: ClientSlot,
    /// Tells the client if this session panics ([`crate::contain`]).
    client: ClientSocket,
    cbuf: BytesMut,
    cscan: Scanner,
    shared: Arc<Shared>,
    entry: Arc<PgPoolEntry>,
    holder: Holder,
    registration: Registration,
    /// Boxed: an idle client (most of them) keeps 8 bytes here instead of the whole record.
    held: Option<Box<Held>>,
    transaction_mode: bool,
    /// The client has changed its encoding during the session
    /// ([`crate::pg::features::Findings::changes_encoding`]): its text is read in every
    /// layout from then on ([`crate::pg::features::Lexing::any_encoding`]).
    encoding_changed: std::cell::Cell<bool>,
    /// Why the client keeps its server for the rest of the session, if it does.
    pinned: Option<Box<str>>,
    /// A refusal in progress: the client's messages are dropped through its sync point.
    skipping: Option<Box<Refusal>>,
    last_client_activity: Instant,
    /// The client's named statements (transaction mode).
    statements: ClientStatements,
    /// The client's tracked parameters, as it expects its session to have them; shared with
    /// other clients that logged in alike until this one changes them.
    params: Arc<ParamSet>,
    /// Scratch buffer for rewritten client messages.
    out: BytesMut,
    /// When the open query batch and transaction started (the pool's traffic counters).
    clock: crate::traffic::Clock,
}

/// Maps a pool refusal to the client-facing error.
pub fn acquire_error(e: AcquireError<ServerError>) -> ProxyError {
    match e {
        AcquireError::Timeout { .. } => ProxyError::PoolExhausted(format!("poolguard: {e}")),
        AcquireError::Connect(ServerError::Refused { notice, .. }) => ProxyError::Server(notice),
        AcquireError::Connect(other) => ProxyError::BackendUnavailable(format!(
            "poolguard cannot open a server connection: {other}"
        )),
        AcquireError::Closed => ProxyError::ShuttingDown(CLOSED_POOL.into()),
        AcquireError::TooManyWaiters { .. } => {
            ProxyError::TooManyClients(format!("poolguard: {e}"))
        }
    }
}

impl Session {
    pub fn new(client: ClientStream, cbuf: BytesMut, shared: Arc<Shared>, ready: LoggedIn) -> Self {
        let transaction_mode = ready.entry.db().pool_mode == PoolMode::Transaction;
        let params = ready.entry.share_params(ready.params);
        Session {
            client: ClientSocket::postgres(client),
            cbuf,
            cscan: Scanner::new(crate::pg::scan::client_max_len(&shared.config())),
            shared,
            entry: ready.entry,
            holder: ready.holder,
            registration: ready.registration,
            _slot: ready.slot,
            held: ready.lease.map(Held::new),
            transaction_mode,
            encoding_changed: std::cell::Cell::new(false),
            pinned: None,
            skipping: None,
            last_client_activity: Instant::now(),
            statements: ClientStatements::default(),
            params,
            out: BytesMut::new(),
            clock: Default::default(),
        }
    }

    /// Relays until the session ends (`Some`) or the client is idle (`None`): no server held
    /// and nothing buffered, after at least one wait (the one that woke the idle client).
    async fn relay_until_idle(&mut self) -> Option<End> {
        let mut woken = true;
        loop {
            if let Some(end) = self.pump_client().await {
                return Some(end);
            }
            self.maybe_release().await;
            let deadline = self.next_deadline();
            let idle = self.is_idle();
            if idle && !woken {
                return None;
            }
            woken = false;
            let event = {
                let client = &mut self.client;
                let cbuf = &mut self.cbuf;
                let server = self.held.as_mut().map(|h| &mut *h.lease);
                tokio::select! {
                    r = read_client(client, cbuf) => Event::Client(r),
                    r = async {
                        match server {
                            Some(s) => { s.buf.reserve(8192); s.stream.read_buf(&mut s.buf).await }
                            None => std::future::pending().await,
                        }
                    } => Event::Server(r),
                    _ = async {
                        match deadline {
                            Some(d) => tokio::time::sleep_until(d).await,
                            None => std::future::pending().await,
                        }
                    } => Event::Deadline,
                }
            };
            match event {
                Event::Client(Ok(0)) | Event::Client(Err(_)) => return Some(End::ClientGone),
                Event::Client(Ok(n)) => {
                    self.entry.traffic.received(n);
                    self.last_client_activity = Instant::now();
                }
                Event::Server(Ok(0)) | Event::Server(Err(_)) => {
                    return Some(Box::pin(self.server_lost()).await)
                }
                Event::Server(Ok(_)) => {
                    if let Some(end) = self.pump_server().await {
                        return Some(end);
                    }
                }
                Event::Deadline => {
                    if let Some(end) = Box::pin(self.on_deadline()).await {
                        return Some(end);
                    }
                }
            }
        }
    }

    /// The server connection broke. Its transaction is gone with it; tell the client plainly,
    /// unless the server's own FATAL already did (then the client sees what it would see
    /// directly: that FATAL, and the connection closed).
    async fn server_lost(&mut self) -> End {
        let mut told = false;
        if let Some(held) = self.held.take() {
            tracing::warn!(client = %self.holder.client, server = %held.lease.addr, "server connection lost");
            told = held.fatal_relayed;
            held.lease.discard(DiscardReason::Broken);
        }
        if told {
            return End::ServerFailed;
        }
        let e = ProxyError::BackendUnavailable(
            "poolguard: the PostgreSQL server closed the connection unexpectedly; any open transaction was rolled back by the server".into(),
        );
        let mut m = BytesMut::new();
        write_error(&mut m, "FATAL", &e);
        self.entry.traffic.sent(m.len());
        let _ = self.client.write_all(&m).await;
        End::ServerFailed
    }

    /// [`Session::acquire`] without waiting for anything, the common case: no transaction
    /// rule to pass, an idle server to lease at once (nobody waiting first), its parameters
    /// already the client's and its cancel target free. Done without a boxed future.
    fn try_acquire_now(&mut self) -> Acquired {
        if !self.shared.transactions_unlimited() {
            return Acquired::Wait;
        }
        let Ok(lease) = self.entry.pool.try_acquire_idle(self.holder.clone()) else {
            return Acquired::Wait;
        };
        let held = Held::new(lease);
        let stamp = (self.registration.serial, self.params.version());
        let in_step =
            held.lease.synced_for == Some(stamp) || self.params.same_entries(&held.lease.current);
        if !in_step || self.registration.target.try_set(Some(held.key())).is_err() {
            return Acquired::Start(held);
        }
        let mut held = held;
        if held.lease.synced_for != Some(stamp) {
            held.lease.synced_for = Some(stamp);
            held.lease.current.share_values(&self.params);
        }
        self.held = Some(held);
        Acquired::Leased
    }

    /// Leases a server for the client's next transaction and brings its parameters in line.
    async fn acquire(&mut self) -> Result<(), ProxyError> {
        let patience = self.entry.db().limits.acquire_timeout;
        self.shared
            .admit_transaction(&self.holder, patience)
            .await?;
        let lease = self
            .entry
            .pool
            .acquire(self.holder.clone())
            .await
            .map_err(acquire_error)?;
        self.start_lease(Held::new(lease)).await
    }

    /// Makes a freshly leased server the client's: cancel target, and its parameters.
    pub(super) async fn start_lease(&mut self, mut held: Box<Held>) -> Result<(), ProxyError> {
        self.registration.target.set(Some(held.key())).await;
        let stamp = (self.registration.serial, self.params.version());
        if held.lease.synced_for != Some(stamp) {
            held.lease.synced_for = Some(stamp);
            let queries = sync_queries(&self.params, &held.lease.current);
            if queries.is_empty() {
                held.lease.current.share_values(&self.params);
            } else {
                tracing::debug!(client = %self.holder.client, sql = ?queries, "synchronising parameters");
                let mut m = BytesMut::new();
                for sql in &queries {
                    frontend::query(&mut m, sql);
                }
                // Extras have no ParameterStatus; record what the server will now carry.
                let current = &mut held.lease.current;
                for (name, value) in self.params.iter() {
                    current.set(name, value);
                }
                let stale: Vec<String> = current
                    .iter()
                    .filter(|(n, _)| self.params.get(n).is_none())
                    .map(|(n, _)| n.to_owned())
                    .collect();
                for n in stale {
                    current.remove(&n);
                }
                held.lease.unnamed.forget();
                if let Err(e) = held.lease.stream.write_all(&m).await {
                    held.lease.discard(DiscardReason::Broken);
                    return Err(ProxyError::server_io(e));
                }
                for _ in &queries {
                    held.pending.push(Expect::InjectedQuery);
                }
                held.busy_since = Some(Instant::now());
            }
        }
        self.held = Some(held);
        Ok(())
    }

    fn extra_parameters(&self) -> ExtraParameters {
        ExtraParameters(self.shared.config())
    }

    fn policy(&self) -> SessionStatePolicy {
        self.shared
            .config()
            .postgres
            .as_ref()
            .map(|p| p.session_state)
            .unwrap_or(SessionStatePolicy::Follow)
    }

    /// [`crate::pg::features::scan`] of a client's statement, with the operator's
    /// `track_extra_parameters` when `extras`. The common plain statement is answered before
    /// the client's lexing and the configuration are looked up.
    fn scan(&self, sql: &[u8], extras: bool) -> crate::pg::features::Findings {
        use crate::pg::features::{is_plain, scan, Findings};
        if is_plain(sql) {
            return Findings::default();
        }
        let f = if extras {
            scan(sql, self.lexing(), &self.extra_parameters())
        } else {
            scan(sql, self.lexing(), &[])
        };
        if f.changes_encoding {
            self.encoding_changed.set(true);
        }
        f
    }

    /// How to read this client's SQL, and whether its every SET follows it (policy `follow`).
    fn lexing(&self) -> crate::pg::features::Lexing {
        crate::pg::features::Lexing {
            follow_sets: self.transaction_mode && self.policy() == SessionStatePolicy::Follow,
            any_encoding: self.encoding_changed.get(),
            ..crate::pg::features::Lexing::of(&self.params)
        }
    }

    /// Applies the session-state policy to features found in a statement. Returns an error
    /// to refuse the statement with (policy "error", at the start of a batch only).
    fn on_features(
        &mut self,
        features: &[SessionFeature],
        batch_start: bool,
    ) -> Option<ProxyError> {
        if !self.transaction_mode || features.is_empty() {
            return None;
        }
        let policy = self.policy();
        if policy == SessionStatePolicy::Error && batch_start {
            let what = features
                .first()
                .map(SessionFeature::describe)
                .unwrap_or_default();
            return Some(ProxyError::FeatureNotSupported(format!(
                "poolguard: {what} cannot work in transaction pooling (the next transaction may run on another server connection); use a database with pool_mode = \"session\", or session_state = \"pin\""
            )));
        }
        let pin = features
            .iter()
            .find(|f| policy != SessionStatePolicy::Reset || f.needs_pin());
        if let Some(f) = pin {
            if self.pinned.is_none() {
                let reason = f.describe();
                tracing::info!(client = %self.holder.client, pool = %self.entry.pool.config().name, reason = %reason, "client pinned to its server connection for the rest of its session");
                self.shared.count_pin();
                self.holder.note.pin(&reason);
                self.pinned = Some(reason.into_boxed_str());
            }
        }
        if let Some(h) = self.held.as_mut() {
            h.dirty = true;
        }
        None
    }

    /// In transaction mode, gives the server back once the client's transaction is over
    /// ([`guard::decide`]); a server whose session state the client changed is reset first,
    /// off the client's path.
    async fn maybe_release(&mut self) {
        let Some(h) = &self.held else {
            return;
        };
        // A server that sent its FATAL is closing: never back to the pool; its close ends
        // the session as directly ([`Session::server_lost`]).
        if h.fatal_relayed {
            return;
        }
        // A dirty server is proven clean by its reset (in `reclaim`), not here: decide on the
        // rest of the proof, and `decide` sends it to the reset.
        let proof = if h.dirty {
            h.proof_before_reset(!self.cscan.mid_message())
        } else {
            h.proof(!self.cscan.mid_message())
        };
        let decision = guard::decide(
            self.transaction_mode,
            self.pinned.is_some(),
            false,
            proof,
            h.dirty,
        );
        if decision == guard::Release::Keep {
            return;
        }
        self.registration.target.set(None).await;
        let Some(held) = self.held.take() else {
            return;
        };
        match decision {
            guard::Release::Now(proof) => {
                let Held {
                    mut lease, pending, ..
                } = *held;
                lease.spare_pending = pending.recycle();
                lease.release(proof);
            }
            _ => {
                let pool = self.entry.pool.config().name;
                let shared = self.shared.clone();
                let reset = async move {
                    let how = Reclaim::Clean { reset: true };
                    reclaim(held, how, &pool, &shared.faults).await
                };
                tokio::spawn(crate::contain::contain(
                    reset,
                    "postgres server reset",
                    self.shared.clone(),
                ));
            }
        }
    }

    /// Writes poolguard's own answers that have reached the head of the queue.
    fn take_synthetics(&mut self, out: &mut BytesMut) {
        let Some(held) = self.held.as_mut() else {
            return;
        };
        while let Some(s) = held.pending.take_synthetic() {
            match s {
                Synthetic::ParseComplete => backend::parse_complete(out),
                Synthetic::CloseComplete => backend::close_complete(out),
                Synthetic::Deallocated => {
                    backend::command_complete(out, "DEALLOCATE");
                    backend::ready_for_query(out, held.status);
                }
            }
        }
    }

    /// Where the conversation stands, for the timeouts ([`guard`]).
    fn phase(&self) -> guard::Phase {
        match &self.held {
            Some(h) if h.busy() => match h.busy_since {
                Some(since) => guard::Phase::Running {
                    since,
                    stopping: h.cancel_sent,
                },
                None => guard::Phase::ClientSending,
            },
            Some(h) if h.in_transaction() => guard::Phase::InTransaction {
                idle_since: h.idle_since,
            },
            _ => guard::Phase::Idle,
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        guard::next_deadline(
            self.entry.timeouts.load(),
            self.phase(),
            self.last_client_activity,
        )
    }

    async fn on_deadline(&mut self) -> Option<End> {
        let pool = self.entry.pool.config().name;
        let due = guard::due(
            self.entry.timeouts.load(),
            self.phase(),
            self.last_client_activity,
            Instant::now(),
            &pool,
        )?;
        let timeout = match due {
            guard::Due::Kick(e) => return Some(End::Kicked(e)),
            guard::Due::StopQuery { timeout } => timeout,
        };
        let h = self.held.as_mut()?;
        h.cancel_sent = true;
        let key = h.key();
        tracing::warn!(client = %self.holder.client, pool = %pool, timeout = ?timeout, "query_timeout exceeded; cancelling the query");
        let mut m = BytesMut::new();
        backend::notice_response(
            &mut m,
            &backend::ErrorFields {
                severity: "WARNING",
                code: "57014",
                message: &guard::query_timeout_message(timeout),
                detail: None,
                hint: None,
            },
        );
        self.entry.traffic.sent(m.len());
        let _ = self.client.write_all(&m).await;
        if let Err(e) = send_cancel(&key).await {
            tracing::warn!(error = %e, "cancel for query_timeout failed");
        }
        None
    }
}

impl crate::idle::Park for Session {
    type End = End;

    const WHAT: &'static str = "postgres client";

    fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    fn lost_socket(&mut self) {
        self.shared.observe.clients.detach(&self._slot);
    }

    async fn start(&mut self) {
        if let Some(h) = self.held.take() {
            // Session mode: the server leased at login.
            if let Err(e) = self.start_lease(h).await {
                tracing::warn!(client = %self.holder.client, error = %e, "server failed at session start");
            }
        }
    }

    /// No server held and nothing buffered.
    fn is_idle(&self) -> bool {
        self.held.is_none() && self.cbuf.is_empty()
    }

    fn relay(&mut self) -> impl std::future::Future<Output = Option<End>> + Send {
        self.relay_until_idle()
    }

    async fn close(mut self: Box<Self>, end: End) {
        let pool = self.entry.pool.config().name;
        match &end {
            End::Kicked(e) => {
                self.shared
                    .observe
                    .count_error("postgres", e.sqlstate().to_owned());
                tracing::warn!(client = %self.holder.client, pool = %pool, code = e.sqlstate(), reason = %e, "client disconnected by poolguard");
                let mut m = BytesMut::new();
                write_error(&mut m, "FATAL", e);
                self.entry.traffic.sent(m.len());
                let _ = self.client.write_all(&m).await;
            }
            other => {
                tracing::debug!(client = %self.holder.client, pool = %pool, end = ?other, "client session ended")
            }
        }
        let _ = self.client.shutdown().await;
        self.registration.target.set(None).await;
        if let Some(held) = self.held.take() {
            let how = match end {
                End::ServerFailed => Reclaim::Discard(DiscardReason::Broken),
                _ if self.cscan.mid_message() => Reclaim::Discard(DiscardReason::Unfinished),
                _ => Reclaim::Clean {
                    reset: !self.transaction_mode || held.dirty || self.pinned.is_some(),
                },
            };
            Box::pin(reclaim(held, how, &pool, &self.shared.faults)).await;
        }
    }

    fn park(&mut self) -> crate::idle::Parking {
        self.shared.spare.trim(&mut self.cbuf);
        self.shared.spare.trim(&mut self.out);
        crate::idle::Parking {
            deadline: self.next_deadline(),
        }
    }

    fn shed(&mut self) {
        self.shared.spare.give(std::mem::take(&mut self.cbuf));
        self.shared.spare.give(std::mem::take(&mut self.out));
    }

    fn wake(&mut self) {
        if self.cbuf.capacity() == 0 {
            self.cbuf = self.shared.spare.take();
        }
        if self.out.capacity() == 0 {
            self.out = self.shared.spare.take();
        }
    }

    fn client(&mut self) -> &mut ClientStream {
        &mut self.client
    }
}

/// Reads from the client into `cbuf`. Through `read_buf`, not `readable` + `try_read`: a
/// short read then tells tokio the socket is drained, so the next wait costs no `recvfrom`
/// that could only fail (one per transaction otherwise). An idle client holds no buffer, but it
/// is parked ([`crate::idle`]), not waiting here; it gets a spare buffer when it wakes.
async fn read_client(client: &mut ClientStream, cbuf: &mut BytesMut) -> std::io::Result<usize> {
    cbuf.reserve(2048);
    client.read_buf(cbuf).await
}

/// `[postgres] track_extra_parameters` of the config in force, borrowed without a copy.
struct ExtraParameters(arc_swap::Guard<Arc<crate::config::Config>>);

impl std::ops::Deref for ExtraParameters {
    type Target = [String];

    fn deref(&self) -> &[String] {
        self.0
            .postgres
            .as_ref()
            .map(|p| p.track_extra_parameters.as_slice())
            .unwrap_or(&[])
    }
}

/// A refused request whose batch is being skipped (see `from_client::skip_to_sync`).
pub(super) struct Refusal {
    pub(super) error: ProxyError,
    /// The ErrorResponse went out when the refusal began: nothing earlier in the batch was
    /// owed by the server, so it could go at once, as the server sends its own errors (a
    /// driver that sends Flush rather than Sync waits for it). Otherwise it goes at the sync
    /// point, after everything the server answered.
    pub(super) reported: bool,
}
