//! A logged-in MySQL client: commands relayed to a leased server, responses relayed back.
//!
//! States: *Idle* (no server; transaction mode between transactions), *Held* (a server is
//! leased, [`Held`]), *Busy* (a command's response is in flight, [`Inflight`]; client packets
//! wait in the buffer, except LOCAL INFILE data which is relayed), and closing, where
//! [`super::reclaim`] brings the server back to a clean idle state or discards it.
//! Commands are handled in [`command`], responses in [`response`], COM_CHANGE_USER in
//! [`change_user`].
//!
//! Invariants:
//! - one command at a time: the next client packet is read only once the previous response
//!   is complete, so the client sees exactly the responses to its own commands, in order;
//! - in transaction mode a server is released only between commands, with nothing unread,
//!   no long data pending and its last status outside a transaction (SERVER_STATUS_IN_TRANS
//!   clear); autocommit, schema, character set and replayable settings follow the client to the
//!   next server ([`super::sync`]), state that cannot move pins the client ([`super::sql`]);
//! - a server whose conversation position is unknown (lost mid-command, malformed response) is
//!   discarded, never returned to the pool.

mod change_user;
mod command;
mod response;
mod statements;

use std::sync::Arc;

use crate::stream::ClientStream;
use bytes::BytesMut;
use poolguard_mysql::consts::SERVER_STATUS_IN_TRANS;
use poolguard_mysql::{FrameDecoder, PacketCodec, ResponseTracker};
use poolguard_pool::{Clean, DiscardReason, Holder};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::config::PoolMode;
use crate::contain::ClientSocket;
use crate::error::ProxyError;
use crate::guard;
use crate::idle::Park;
use crate::mysql::kill::{kill_query, Registration, ServerKey};
use crate::mysql::login::LoggedIn;
use crate::mysql::pools::{DbSlot, MyLease, MyPoolEntry};
use crate::mysql::reclaim::{reclaim, Reclaim};
use crate::mysql::server::SERVER_MAX_PACKET;
use crate::mysql::stmts::ClientStatements;
use crate::mysql::sync::SessionState;
use crate::mysql::wire::err_packet;
use crate::state::{ClientSlot, Shared};

/// Client bytes buffered while a response is in flight before poolguard stops reading (the
/// client is then pipelining; its packets wait in the socket).
const MAX_BUFFERED_WHILE_BUSY: usize = 64 * 1024;

/// A leased server and where its conversation stands.
pub struct Held {
    pub lease: MyLease,
    /// Physical packets of the server's responses.
    pub frames: FrameDecoder,
    /// Statements (by text) whose server copy holds data from COM_STMT_SEND_LONG_DATA: keep
    /// the server until they are executed, reset or closed.
    pub long_data: Vec<bytes::Bytes>,
    /// The last response carried warnings: keep the server for one more command, so SHOW
    /// WARNINGS (or `@@warning_count`) sees them.
    pub sticky: bool,
    /// When the server last finished a command (idle-in-transaction is counted from the later
    /// of this and the client's last packet).
    pub idle_since: Instant,
    /// The command whose response is being relayed, if any. Kept here, not in the session:
    /// a command is only ever in flight on a held server, and an idle client (no server) then
    /// carries none of it, while a busy one allocates nothing more per statement.
    pub inflight: Option<Inflight>,
    /// Leased without an await while a KILL held the kill target's slot: the slot does not
    /// name this server yet, and no command may go to it until it does
    /// (`Session::wait_for_server` sets it).
    pub target_pending: bool,
}

impl Held {
    pub fn new(lease: MyLease) -> Box<Self> {
        Box::new(Held {
            lease,
            frames: FrameDecoder::new(SERVER_MAX_PACKET),
            long_data: Vec::new(),
            sticky: false,
            idle_since: Instant::now(),
            inflight: None,
            target_pending: false,
        })
    }

    pub fn in_transaction(&self) -> bool {
        self.lease.status & SERVER_STATUS_IN_TRANS != 0
    }

    /// What can be proven about this server right now, for [`poolguard_pool::Lease::release`].
    pub fn proof(&self) -> Clean {
        let inflight = self.inflight.as_ref();
        Clean {
            idle: inflight.is_none() && self.lease.buf.is_empty(),
            no_transaction: !self.in_transaction(),
            // A schema on a connection that logged in without one is a reset poolguard cannot
            // make: the next client naming no database would find it.
            nothing_owed: self.long_data.is_empty()
                && !inflight.is_some_and(|i| i.infile != Infile::None)
                && (self.lease.with_schema || self.lease.state.schema.is_none()),
            in_step: self.frames.is_idle(),
        }
    }
}

/// LOCAL INFILE progress within a COM_QUERY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Infile {
    None,
    /// The client is sending the file: its packets go to the server (with this next sequence
    /// id) until an empty one.
    ClientSending {
        server_seq: u8,
    },
    /// poolguard refused it: the server's answer is swallowed and the client gets an ERR with
    /// this sequence id.
    Refused {
        client_seq: u8,
    },
}

/// A command whose response is being relayed.
pub struct Inflight {
    pub tracker: ResponseTracker,
    /// Added to each server sequence id to get the one the client expects.
    pub delta: u8,
    pub started: Instant,
    pub kill_sent: bool,
    pub infile: Infile,
    /// The client's id for a statement being prepared (written into STMT_PREPARE_OK).
    pub prepare_id: Option<u32>,
    /// Last non-zero LAST_INSERT_ID reported by an OK in this response.
    pub insert_id: Option<u64>,
    pub after: command::After,
    /// Status flags before the command (decides whether an error needs a status probe).
    pub status_before: u16,
    /// For SHOW PROCESSLIST: server thread -> poolguard client id, taken when it was sent.
    /// Boxed: 8 bytes in every command's record instead of a map's 48.
    #[allow(clippy::box_collection)]
    pub thread_ids: Option<Box<std::collections::HashMap<u32, u32>>>,
}

/// Why a session ended.
#[derive(Debug)]
pub(crate) enum End {
    /// COM_QUIT.
    Quit,
    /// The client closed its socket or it failed.
    ClientGone,
    /// poolguard closed the client after telling it why (`seq`: the ERR's sequence id).
    Kicked(ProxyError, u8),
    /// The server failed; the client was told.
    ServerFailed,
    /// The client sent no command within its session's `wait_timeout`: closed without a word,
    /// as MariaDB does (a transaction left open is rolled back by the reclaim).
    WaitTimeout,
}

enum Event {
    Client(std::io::Result<usize>),
    Server(std::io::Result<usize>),
    Deadline,
    Killed,
}

pub struct Session {
    /// First: fields drop in declaration order, and the client must be unlisted before its
    /// socket closes (KILL_CLIENT reaches it by descriptor number, see [`crate::clients`]).
    _slot: ClientSlot,
    /// Tells the client if this session panics ([`crate::contain`]).
    client: ClientSocket,
    cbuf: BytesMut,
    codec: PacketCodec,
    shared: Arc<Shared>,
    entry: Arc<MyPoolEntry>,
    holder: Holder,
    registration: Registration,
    db_slot: DbSlot,
    caps: u32,
    mariadb: bool,
    /// Boxed: an idle client (most of them) keeps 8 bytes here instead of the whole record.
    held: Option<Box<Held>>,
    transaction_mode: bool,
    /// Why the client keeps its server for the rest of the session, if it does.
    pinned: Option<Box<str>>,
    /// The client's session as it expects it on every server.
    state: SessionState,
    stmts: ClientStatements,
    last_client_activity: Instant,
    /// The session's `wait_timeout` in seconds, once the client set it: the server would
    /// close the connection after that long without a command, and so does poolguard, whose
    /// servers change under a transaction-mode client (read back from the server after a
    /// `SET` of it; unset again by COM_RESET_CONNECTION and COM_CHANGE_USER).
    wait_timeout: Option<std::num::NonZeroU32>,
    /// The collation the client logged in with (restored after its own resets).
    login_charset: u16,
    /// An error for the next COM_STMT_EXECUTE (a COM_STMT_SEND_LONG_DATA failed; it has no
    /// response of its own).
    deferred_error: Option<Box<ProxyError>>,
    /// When the open query and transaction started (the pool's traffic counters).
    clock: crate::traffic::Clock,
}

impl Session {
    pub fn new(
        client: ClientStream,
        cbuf: BytesMut,
        shared: Arc<Shared>,
        ready: LoggedIn,
        slot: ClientSlot,
    ) -> Self {
        let max_packet = shared
            .config()
            .mysql
            .as_ref()
            .map_or(poolguard_mysql::packet::DEFAULT_MAX_ALLOWED_PACKET, |m| {
                m.max_allowed_packet
            });
        let transaction_mode = ready.entry.db().pool_mode == PoolMode::Transaction;
        Session {
            client: ClientSocket::mysql(client),
            cbuf,
            codec: PacketCodec::new(max_packet),
            shared,
            entry: ready.entry,
            holder: ready.holder,
            registration: ready.registration,
            _slot: slot,
            db_slot: ready.db_slot,
            caps: ready.caps,
            mariadb: ready.mariadb,
            held: ready.lease.map(Held::new),
            transaction_mode,
            pinned: None,
            login_charset: ready.state.charset,
            state: ready.state,
            stmts: ClientStatements::default(),
            last_client_activity: Instant::now(),
            wait_timeout: None,
            deferred_error: None,
            clock: Default::default(),
        }
    }

    /// Relays until the session ends (`Some`) or the client is idle (`None`): no server held,
    /// no command in flight and nothing buffered, after at least one wait (the one that woke
    /// the idle client).
    async fn relay_until_idle(&mut self) -> Option<End> {
        let mut woken = true;
        loop {
            if self.inflight().is_none() {
                // The packet is taken out of the decoder's result before the await, so the
                // result (error variant included) is not kept in this future.
                let packet = match self.next_packet() {
                    Ok(p) => p,
                    Err(e) => {
                        // Answer with the sequence id after the offending packet's.
                        let seq = poolguard_mysql::packet::peek_header(&self.cbuf)
                            .map_or(1, |(_, s)| s.wrapping_add(1));
                        return Some(End::Kicked(e, seq));
                    }
                };
                if let Some(p) = packet {
                    if let Some(end) = self.on_command(p).await {
                        return Some(end);
                    }
                    continue;
                }
                self.maybe_release().await;
            } else if self.infile_sending() {
                if let Some(end) = self.relay_infile().await {
                    return Some(end);
                }
            }
            let idle = self.is_idle();
            if idle && !woken {
                return None;
            }
            woken = false;
            let deadline = self.next_deadline();
            // While the client sends a LOCAL INFILE file the server waits for its bytes: they
            // are read whatever is buffered (a packet of the file may be longer than the cap,
            // and is relayed once whole; its length is bounded by max_allowed_packet).
            let read_client = self.inflight().is_none()
                || self.cbuf.len() < MAX_BUFFERED_WHILE_BUSY
                || self.infile_sending();
            self.cbuf.reserve(4096);
            let event = {
                let client = &mut self.client;
                let cbuf = &mut self.cbuf;
                let kicked = &self.registration.target.kicked;
                let server = self.held.as_mut().map(|h| &mut *h.lease);
                tokio::select! {
                    r = client.read_buf(cbuf), if read_client => Event::Client(r),
                    r = async {
                        match server {
                            Some(s) => { s.buf.reserve(16384); s.stream.read_buf(&mut s.buf).await }
                            None => std::future::pending().await,
                        }
                    } => Event::Server(r),
                    _ = async {
                        match deadline {
                            Some(d) => tokio::time::sleep_until(d).await,
                            None => std::future::pending().await,
                        }
                    } => Event::Deadline,
                    _ = std::future::poll_fn(|cx| kicked.poll(cx)) => Event::Killed,
                }
            };
            match event {
                Event::Client(Ok(0)) | Event::Client(Err(_)) => return Some(End::ClientGone),
                Event::Client(Ok(n)) => {
                    self.entry.traffic.received(n);
                    self.last_client_activity = Instant::now();
                }
                Event::Server(Ok(0)) | Event::Server(Err(_)) => {
                    // The client's `wait_timeout`, replayed on its server, runs out there a
                    // moment before it does here (the server counts from sending its answer,
                    // poolguard from receiving it). A close within a second of our deadline
                    // (the timeout is whole seconds) is that timeout, and ends the session as
                    // ours would: without a word.
                    let grace = std::time::Duration::from_secs(1);
                    if self.wait_deadline(self.phase()).is_some_and(|at| {
                        Instant::now().checked_add(grace).is_some_and(|n| at <= n)
                    }) {
                        // The connection is at its end: closed here, never reclaimed (the
                        // kill target is cleared by `close`; a KILL still holding it finds
                        // a thread that is gone, and MariaDB does not reuse thread ids).
                        if let Some(held) = self.held.take() {
                            held.lease.discard(DiscardReason::Broken);
                        }
                        return Some(End::WaitTimeout);
                    }
                    if let Some(end) = self.server_lost("the server closed the connection").await {
                        return Some(end);
                    }
                }
                Event::Server(Ok(_)) => {
                    if let Some(end) = self.pump_server().await {
                        return Some(end);
                    }
                }
                Event::Deadline => {
                    // Boxed: rare, and a KILL QUERY's future is large.
                    if let Some(end) = Box::pin(self.on_deadline()).await {
                        return Some(end);
                    }
                }
                Event::Killed => {
                    return Some(End::Kicked(
                        ProxyError::ShuttingDown(
                            "poolguard: connection killed by KILL CONNECTION".into(),
                        ),
                        1,
                    ))
                }
            }
        }
    }

    /// The next whole client packet, if buffered. Oversized: 1153; malformed framing: 1047.
    fn next_packet(&mut self) -> Result<Option<poolguard_mysql::Packet>, ProxyError> {
        self.codec.decode(&mut self.cbuf).map_err(|e| {
            if e.is_too_large() {
                ProxyError::PacketTooLarge(format!(
                    "poolguard: {e} (raise [mysql] max_allowed_packet to allow it)"
                ))
            } else {
                ProxyError::Protocol(format!("poolguard: malformed packet from client: {e}"))
            }
        })
    }

    fn server_key(&self, held: &Held) -> ServerKey {
        ServerKey {
            entry: self.entry.clone(),
            host: held.lease.host.clone(),
            thread_id: held.lease.thread_id,
        }
    }

    /// The command whose response is being relayed, if any (see [`Held::inflight`]).
    fn inflight(&self) -> Option<&Inflight> {
        self.held.as_ref()?.inflight.as_ref()
    }

    fn inflight_mut(&mut self) -> Option<&mut Inflight> {
        self.held.as_mut()?.inflight.as_mut()
    }

    fn pool_name(&self) -> Arc<str> {
        self.entry.name()
    }

    /// The server connection broke or misbehaved. Outside a command and a transaction (in
    /// transaction mode) the client does not notice: the next command gets another server.
    /// Otherwise the client is told and disconnected, since its transaction or command is lost.
    ///
    /// Boxed: a rare path awaited from many places, each of whose futures would otherwise be
    /// laid out for it (see `crate::idle::stretch` on why a busy stretch is kept small).
    fn server_lost<'a>(
        &'a mut self,
        why: &'a str,
    ) -> std::pin::Pin<Box<impl std::future::Future<Output = Option<End>> + 'a>> {
        Box::pin(self.server_lost_now(why))
    }

    async fn server_lost_now(&mut self, why: &str) -> Option<End> {
        let mut held = self.held.take()?;
        let inflight = held.inflight.take();
        let quiet = inflight.is_none()
            && !held.in_transaction()
            && self.transaction_mode
            && self.pinned.is_none()
            && held.long_data.is_empty();
        tracing::warn!(client = %self.holder.client, server = %held.lease.addr, thread = held.lease.thread_id, reason = why, quiet, "MySQL server connection lost");
        held.lease.discard(DiscardReason::Broken);
        self.registration.target.stop.set(None).await;
        if quiet {
            return None;
        }
        let during_command = inflight.is_some();
        let seq = inflight.map_or(1, |i| i.delta.wrapping_add(1));
        let message = if during_command {
            format!("Lost connection to server during query (poolguard: the MySQL server connection was lost: {why}; the outcome of the running statement is unknown, and an open transaction was rolled back by the server)")
        } else {
            format!("Server has gone away (poolguard: the MySQL server connection was lost: {why}; an open transaction was rolled back by the server)")
        };
        let e = ProxyError::ServerLost {
            during_command,
            message,
        };
        let mut m = BytesMut::new();
        err_packet(&mut m, seq, &e, self.mariadb);
        self.entry.traffic.sent(m.len());
        let _ = self.client.write_all(&m).await;
        Some(End::ServerFailed)
    }

    /// In transaction mode, gives the server back once the client's transaction is over
    /// ([`guard::decide`]). Session state follows the client to its next server
    /// ([`super::sync`]) or pins it, so no reset is owed here.
    async fn maybe_release(&mut self) {
        let Some(h) = &self.held else {
            return;
        };
        if !h.lease.with_schema && h.lease.state.schema.is_some() {
            // No command takes the schema off again, so the connection cannot go back to the
            // pool: the client keeps it (and it is closed when the client leaves).
            self.pin("a schema chosen on a server connection that logged in without one");
        }
        let Some(h) = &self.held else {
            return;
        };
        let proof = h.proof();
        let decision = guard::decide(
            self.transaction_mode,
            self.pinned.is_some(),
            h.sticky,
            proof,
            false,
        );
        let guard::Release::Now(proof) = decision else {
            return;
        };
        self.registration.target.stop.set(None).await;
        if let Some(held) = self.held.take() {
            held.lease.release(proof);
        }
    }

    /// Pins the client to its server for the rest of the session (counted and logged once).
    fn pin(&mut self, reason: &str) {
        if !self.transaction_mode || self.pinned.is_some() {
            return;
        }
        tracing::info!(client = %self.holder.client, pool = %self.pool_name(), reason = %reason, "MySQL client pinned to its server connection for the rest of its session");
        self.shared.count_pin();
        self.holder.note.pin(reason);
        self.pinned = Some(reason.into());
    }

    /// Where the conversation stands, for the timeouts ([`guard`]).
    fn phase(&self) -> guard::Phase {
        match (&self.held, self.inflight()) {
            (_, Some(i)) if matches!(i.infile, Infile::ClientSending { .. }) => {
                guard::Phase::ClientSending
            }
            (_, Some(i)) => guard::Phase::Running {
                since: i.started,
                stopping: i.kill_sent,
            },
            (Some(h), None) if h.in_transaction() => guard::Phase::InTransaction {
                idle_since: h.idle_since,
            },
            _ => guard::Phase::Idle,
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let phase = self.phase();
        let guard =
            guard::next_deadline(self.entry.timeouts.load(), phase, self.last_client_activity);
        match (guard, self.wait_deadline(phase)) {
            (Some(g), Some(w)) => Some(g.min(w)),
            (g, w) => g.or(w),
        }
    }

    /// When the client's own `wait_timeout` ends its session: counted from its last bytes,
    /// while the server waits for it (not while a command runs or a LOCAL INFILE streams).
    fn wait_deadline(&self, phase: guard::Phase) -> Option<Instant> {
        let secs = self.wait_timeout?;
        match phase {
            guard::Phase::Idle | guard::Phase::InTransaction { .. } => self
                .last_client_activity
                .checked_add(std::time::Duration::from_secs(u64::from(secs.get()))),
            guard::Phase::Running { .. } | guard::Phase::ClientSending => None,
        }
    }

    async fn on_deadline(&mut self) -> Option<End> {
        if self
            .wait_deadline(self.phase())
            .is_some_and(|at| at <= Instant::now())
        {
            tracing::info!(client = %self.holder.client, pool = %self.pool_name(), wait_timeout = self.wait_timeout.map_or(0, |s| s.get()), "MySQL client closed: no command within its session's wait_timeout");
            return Some(End::WaitTimeout);
        }
        let pool = self.pool_name();
        let due = guard::due(
            self.entry.timeouts.load(),
            self.phase(),
            self.last_client_activity,
            Instant::now(),
            &pool,
        )?;
        let timeout = match due {
            guard::Due::Kick(e) => return Some(End::Kicked(e, 1)),
            guard::Due::StopQuery { timeout } => timeout,
        };
        let key = self.held.as_ref().map(|h| self.server_key(h))?;
        self.inflight_mut()?.kill_sent = true;
        tracing::warn!(client = %self.holder.client, pool = %pool, thread = key.thread_id, timeout = ?timeout, "query_timeout exceeded; killing the query");
        if let Err(e) = kill_query(&key).await {
            tracing::warn!(error = %e, "KILL QUERY for query_timeout failed");
        }
        None
    }
}

impl crate::idle::Park for Session {
    type End = End;

    const WHAT: &'static str = "mysql client";

    fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    fn lost_socket(&mut self) {
        self.shared.observe.clients.detach(&self._slot);
    }

    /// KILL CONNECTION: a resting session is resumed by it too.
    fn arm_rest(&mut self, lot: &Arc<crate::lot::Lot>, slot: usize) -> bool {
        self.registration.target.kicked.rest_in(lot, slot)
    }

    async fn start(&mut self) {
        if let Some(h) = &self.held {
            // Session mode: the server leased at login is the one a KILL QUERY targets.
            let key = self.server_key(h);
            self.registration.target.stop.set(Some(key)).await;
        }
    }

    /// No server held, no command in flight and nothing buffered.
    fn is_idle(&self) -> bool {
        // (A command is only ever in flight on a held server.)
        self.held.is_none() && self.cbuf.is_empty()
    }

    fn relay(&mut self) -> impl std::future::Future<Output = Option<End>> + Send {
        self.relay_until_idle()
    }

    async fn close(mut self: Box<Self>, end: End) {
        let pool = self.entry.name();
        match &end {
            End::Kicked(e, seq) => {
                let code = e.mysql_code(self.mariadb).to_string();
                self.shared.observe.count_error("mysql", code);
                tracing::warn!(client = %self.holder.client, pool = %pool, code = e.mysql_code(self.mariadb), reason = %e, "MySQL client disconnected by poolguard");
                let mut m = BytesMut::new();
                err_packet(&mut m, *seq, e, self.mariadb);
                self.entry.traffic.sent(m.len());
                let _ = self.client.write_all(&m).await;
            }
            other => {
                tracing::debug!(client = %self.holder.client, pool = %pool, end = ?other, "MySQL client session ended")
            }
        }
        let _ = self.client.shutdown().await;
        self.registration.target.stop.set(None).await;
        if let Some(mut held) = self.held.take() {
            let how = match end {
                End::ServerFailed => Reclaim::Discard(DiscardReason::Broken),
                _ => Reclaim::Clean {
                    reset: !self.transaction_mode || self.pinned.is_some(),
                },
            };
            let inflight = held.inflight.take();
            Box::pin(reclaim(
                held,
                inflight,
                how,
                &self.entry,
                &self.shared.faults,
            ))
            .await;
        }
    }

    fn park(&mut self) -> crate::idle::Parking {
        self.shared.spare.trim(&mut self.cbuf);
        crate::idle::Parking {
            deadline: self.next_deadline(),
        }
    }

    fn shed(&mut self) {
        self.shared.spare.give(std::mem::take(&mut self.cbuf));
    }

    /// KILL CONNECTION wakes the client; the signal stays raised for the relay to see.
    fn poll_signal(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.registration.target.kicked.poll(cx)
    }

    fn wake(&mut self) {
        if self.cbuf.capacity() == 0 {
            self.cbuf = self.shared.spare.take();
        }
    }

    fn client(&mut self) -> &mut ClientStream {
        &mut self.client
    }
}
