//! A logged-in PostgreSQL client: relays messages between the client and a leased server.
//!
//! States: *Idle* (no server; transaction mode between transactions), *Held* (a server is
//! leased; see [`Held`]), *Skipping* (an acquire failed: the client's messages up to its next
//! Sync/Query are dropped, then it gets ErrorResponse + ReadyForQuery, as PostgreSQL itself does
//! after an error in an extended-protocol batch), and closing, where [`super::reclaim`] brings the
//! server back to a clean idle state or discards it.
//!
//! Invariants:
//! - bytes are forwarded untouched, whole messages or streamed long ones, never reordered;
//! - in transaction mode a server is released only at a message boundary on both sides, with no
//!   Sync/Query awaiting its ReadyForQuery, no extended-protocol message sent since the last Sync,
//!   and ReadyForQuery status 'I' (no transaction open);
//! - a server that changed session state (SET, PREPARE, temp tables, LISTEN ...) is reset with
//!   DISCARD ALL before anyone else gets it, or, with `session_state = "pin"`, stays with this
//!   client until it leaves.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use poolguard_pg::framing::DEFAULT_MAX_MESSAGE_LEN;
use poolguard_pg::{backend, tags};
use poolguard_pool::{AcquireError, Holder, Lease};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::{PoolMode, SessionStatePolicy};
use crate::error::ProxyError;
use crate::pg::cancel::{send_cancel, Registration, ServerKey};
use crate::pg::login::{write_error, LoggedIn};
use crate::pg::reclaim::{reclaim, Reclaim};
use crate::pg::scan::{Scanner, Step};
use crate::pg::server::{PgConnector, ServerError};
use crate::state::{ClientSlot, PgPoolEntry, Shared};

pub type PgLease = Lease<PgConnector>;

/// A leased server and where its conversation stands.
pub struct Held {
    pub lease: PgLease,
    pub scan: Scanner,
    /// Sync, Query and FunctionCall messages sent whose ReadyForQuery has not come back.
    pub outstanding: u32,
    /// Status of the last ReadyForQuery: b'I' idle, b'T' in a transaction, b'E' failed one.
    pub status: u8,
    /// Extended-protocol messages were sent after the last Sync.
    pub unsynced: bool,
    /// The server asked for COPY data (CopyInResponse) and the client has not ended it.
    pub copy_in: bool,
    /// The client changed session state on this server.
    pub dirty: bool,
    /// When the oldest unanswered request was sent (drives query_timeout).
    pub busy_since: Option<Instant>,
    pub cancel_sent: bool,
}

impl Held {
    fn new(lease: PgLease) -> Self {
        Held {
            lease,
            scan: Scanner::new(DEFAULT_MAX_MESSAGE_LEN),
            outstanding: 0,
            status: b'I',
            unsynced: false,
            copy_in: false,
            dirty: false,
            busy_since: None,
            cancel_sent: false,
        }
    }

    fn key(&self) -> ServerKey {
        ServerKey {
            addr: self.lease.addr,
            pid: self.lease.key.0,
            secret: self.lease.key.1,
        }
    }

    /// A transaction (or an unfinished extended-protocol batch) is open on the server.
    pub fn in_transaction(&self) -> bool {
        self.status != b'I' || self.unsynced || self.copy_in
    }
}

/// Why a session ended.
#[derive(Debug)]
enum End {
    /// The client sent Terminate.
    Terminate,
    /// The client closed its socket or it failed.
    ClientGone,
    /// poolguard closed the client after telling it why.
    Kicked(ProxyError),
    /// The server failed; the client was told.
    ServerFailed,
}

enum Event {
    Client(std::io::Result<usize>),
    Server(std::io::Result<usize>),
    Deadline,
}

pub struct Session {
    client: TcpStream,
    cbuf: BytesMut,
    cscan: Scanner,
    shared: Arc<Shared>,
    entry: Arc<PgPoolEntry>,
    holder: Holder,
    registration: Registration,
    _slot: ClientSlot,
    held: Option<Held>,
    pinned: bool,
    /// An acquire failed; drop client messages through the next sync point, then report this.
    skipping: Option<ProxyError>,
    last_client_activity: Instant,
}

/// Maps a pool refusal to the client-facing error.
pub fn acquire_error(e: AcquireError<ServerError>) -> ProxyError {
    match e {
        AcquireError::Timeout { .. } => ProxyError::PoolExhausted(format!("poolguard: {e}")),
        AcquireError::Connect(ServerError::Refused { notice, .. }) => ProxyError::Server(notice),
        AcquireError::Connect(other) => ProxyError::BackendUnavailable(format!(
            "poolguard cannot open a server connection: {other}"
        )),
        AcquireError::Closed => ProxyError::ShuttingDown("poolguard: this pool is closed".into()),
    }
}

/// Command tags after which the server carries state that must not reach another client.
fn changes_session_state(tag: &str) -> bool {
    let mut words = tag.split(' ');
    match words.next() {
        Some("SET" | "RESET" | "PREPARE" | "LISTEN" | "DECLARE" | "LOAD") => true,
        // Temporary tables report plain "CREATE TABLE"; any table creation counts.
        Some("CREATE") => words.next() == Some("TABLE"),
        _ => false,
    }
}

impl Session {
    pub fn new(client: TcpStream, cbuf: BytesMut, shared: Arc<Shared>, ready: LoggedIn) -> Self {
        let pinned = ready.entry.db.pool_mode == PoolMode::Session;
        Session {
            client,
            cbuf,
            cscan: Scanner::new(DEFAULT_MAX_MESSAGE_LEN),
            shared,
            entry: ready.entry,
            holder: ready.holder,
            registration: ready.registration,
            _slot: ready.slot,
            held: ready.lease.map(Held::new),
            pinned,
            skipping: None,
            last_client_activity: Instant::now(),
        }
    }

    pub async fn run(mut self) {
        if let Some(h) = &self.held {
            let key = h.key();
            self.registration.target.set(Some(key)).await;
        }
        let end = self.relay().await;
        let pool = self.entry.pool.config().name;
        match &end {
            End::Kicked(e) => {
                tracing::warn!(client = %self.holder.client, pool = %pool, code = e.sqlstate(), reason = %e, "client disconnected by poolguard");
                let mut m = BytesMut::new();
                write_error(&mut m, "FATAL", e);
                let _ = self.client.write_all(&m).await;
            }
            other => {
                tracing::debug!(client = %self.holder.client, pool = %pool, end = ?other, "client session ended")
            }
        }
        let _ = self.client.shutdown().await;
        self.registration.target.set(None).await;
        if let Some(held) = self.held.take() {
            let client_mid_message = self.cscan.mid_message();
            let session_mode = self.entry.db.pool_mode == PoolMode::Session;
            let how = match end {
                End::ServerFailed => Reclaim::Discard,
                _ if client_mid_message => Reclaim::Discard,
                _ => Reclaim::Clean {
                    reset: session_mode || held.dirty,
                },
            };
            reclaim(held, how, &pool).await;
        }
    }

    async fn relay(&mut self) -> End {
        loop {
            if let Some(end) = self.pump_client().await {
                return end;
            }
            self.maybe_release().await;
            let deadline = self.next_deadline();
            self.cbuf.reserve(4096);
            let event = {
                let client = &mut self.client;
                let cbuf = &mut self.cbuf;
                let server = self.held.as_mut().map(|h| &mut *h.lease);
                tokio::select! {
                    r = client.read_buf(cbuf) => Event::Client(r),
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
                Event::Client(Ok(0)) | Event::Client(Err(_)) => return End::ClientGone,
                Event::Client(Ok(_)) => self.last_client_activity = Instant::now(),
                Event::Server(Ok(0)) | Event::Server(Err(_)) => return self.server_lost().await,
                Event::Server(Ok(_)) => {
                    if let Some(end) = self.pump_server().await {
                        return end;
                    }
                }
                Event::Deadline => {
                    if let Some(end) = self.on_deadline().await {
                        return end;
                    }
                }
            }
        }
    }

    /// The server connection broke. Its transaction is gone with it; tell the client plainly.
    async fn server_lost(&mut self) -> End {
        if let Some(held) = self.held.take() {
            tracing::warn!(client = %self.holder.client, server = %held.lease.addr, "server connection lost");
            held.lease.discard();
        }
        let e = ProxyError::BackendUnavailable(
            "poolguard: the PostgreSQL server closed the connection unexpectedly; any open transaction was rolled back by the server".into(),
        );
        let mut m = BytesMut::new();
        write_error(&mut m, "FATAL", &e);
        let _ = self.client.write_all(&m).await;
        End::ServerFailed
    }

    /// Forwards buffered client messages, acquiring a server first if needed.
    async fn pump_client(&mut self) -> Option<End> {
        loop {
            if self.cbuf.is_empty() {
                return None;
            }
            if self.skipping.is_some() {
                match self.skip_to_sync().await {
                    Ok(true) => continue,
                    Ok(false) => return None,
                    Err(end) => return Some(end),
                }
            }
            if self.held.is_none() {
                if self.cbuf.len() < 5 {
                    return None;
                }
                if self.cbuf[0] == tags::frontend::TERMINATE {
                    return Some(End::Terminate);
                }
                match self.entry.pool.acquire(self.holder.clone()).await {
                    Ok(lease) => {
                        let held = Held::new(lease);
                        self.registration.target.set(Some(held.key())).await;
                        self.held = Some(held);
                    }
                    Err(e) => {
                        let e = acquire_error(e);
                        tracing::warn!(client = %self.holder.client, code = e.sqlstate(), error = %e, "acquire failed");
                        if matches!(e, ProxyError::ShuttingDown(_)) {
                            return Some(End::Kicked(e));
                        }
                        self.skipping = Some(e);
                        continue;
                    }
                }
            }
            return self.forward_client().await;
        }
    }

    /// Drops client messages through the next Sync/Query/FunctionCall; then reports the error
    /// that caused the skip. Returns whether the sync point was reached.
    async fn skip_to_sync(&mut self) -> Result<bool, End> {
        let mut pos = 0;
        let mut reached = false;
        loop {
            let step = match self.cscan.step(&self.cbuf[pos..], |_| false) {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(e) => {
                    return Err(End::Kicked(ProxyError::Protocol(format!(
                        "invalid message: {e}"
                    ))))
                }
            };
            let len = step.len();
            let tag = match step {
                Step::Whole { tag, .. } => Some(tag),
                _ => None,
            };
            pos += len;
            if tag == Some(tags::frontend::TERMINATE) {
                return Err(End::Terminate);
            }
            if matches!(
                tag,
                Some(tags::frontend::SYNC | tags::frontend::QUERY | tags::frontend::FUNCTION_CALL)
            ) {
                reached = true;
                break;
            }
        }
        self.cbuf.advance(pos);
        if reached {
            if let Some(e) = self.skipping.take() {
                let mut m = BytesMut::new();
                write_error(&mut m, "ERROR", &e);
                backend::ready_for_query(&mut m, b'I');
                if self.client.write_all(&m).await.is_err() {
                    return Err(End::ClientGone);
                }
            }
        }
        Ok(reached)
    }

    async fn forward_client(&mut self) -> Option<End> {
        let held = self.held.as_mut()?;
        let mut pos = 0;
        let mut terminate = false;
        let mut failure = None;
        loop {
            let step = match self.cscan.step(&self.cbuf[pos..], |_| false) {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(e) => {
                    failure = Some(ProxyError::Protocol(format!(
                        "invalid message from client: {e}"
                    )));
                    break;
                }
            };
            let tag = match step {
                Step::Whole { tag, .. } | Step::Head { tag, .. } => Some(tag),
                Step::Rest { .. } => None,
            };
            if tag == Some(tags::frontend::TERMINATE) {
                terminate = true;
                break;
            }
            if let Some(tag) = tag {
                note_client_message(held, tag);
            }
            pos += step.len();
        }
        if pos > 0 {
            if let Err(e) = held.lease.stream.write_all(&self.cbuf[..pos]).await {
                tracing::warn!(error = %e, "write to server failed");
                return Some(self.server_lost().await);
            }
            self.cbuf.advance(pos);
        }
        if let Some(e) = failure {
            return Some(End::Kicked(e));
        }
        terminate.then_some(End::Terminate)
    }

    /// Forwards what the server sent, tracking transaction state as it passes.
    async fn pump_server(&mut self) -> Option<End> {
        let held = self.held.as_mut()?;
        let mut pos = 0;
        let need_body = |t: u8| {
            matches!(
                t,
                tags::backend::READY_FOR_QUERY | tags::backend::COMMAND_COMPLETE
            )
        };
        let mut pin_reason = None;
        loop {
            let step = match held.scan.step(&held.lease.buf[pos..], need_body) {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(server = %held.lease.addr, error = %e, "malformed message from server");
                    return Some(self.server_lost().await);
                }
            };
            match step {
                Step::Whole {
                    tag: tags::backend::READY_FOR_QUERY,
                    body,
                    ..
                } => {
                    held.outstanding = held.outstanding.saturating_sub(1);
                    held.status = body.first().copied().unwrap_or(b'I');
                    held.copy_in = false;
                    held.busy_since = (held.outstanding > 0).then(Instant::now);
                    held.cancel_sent = false;
                }
                Step::Whole {
                    tag: tags::backend::COMMAND_COMPLETE,
                    body,
                    ..
                } => {
                    let text =
                        std::str::from_utf8(body.strip_suffix(&[0]).unwrap_or(body)).unwrap_or("");
                    if changes_session_state(text) {
                        held.dirty = true;
                        pin_reason.get_or_insert_with(|| text.to_owned());
                    }
                }
                Step::Whole {
                    tag: tags::backend::COPY_IN,
                    ..
                }
                | Step::Head {
                    tag: tags::backend::COPY_IN,
                    ..
                } => {
                    held.copy_in = true;
                }
                _ => {}
            }
            pos += step.len();
        }
        if pos > 0 {
            let r = self.client.write_all(&held.lease.buf[..pos]).await;
            held.lease.buf.advance(pos);
            if r.is_err() {
                return Some(End::ClientGone);
            }
        }
        if let Some(reason) = pin_reason {
            if !self.pinned
                && self
                    .shared
                    .config
                    .postgres
                    .as_ref()
                    .map(|p| p.session_state)
                    == Some(SessionStatePolicy::Pin)
            {
                tracing::info!(client = %self.holder.client, command = %reason, "client pinned to its server for the session");
                self.pinned = true;
            }
        }
        None
    }

    /// In transaction mode, gives the server back once the client's transaction is over.
    async fn maybe_release(&mut self) {
        let releasable = match &self.held {
            Some(h) => {
                !self.pinned
                    && h.outstanding == 0
                    && !h.in_transaction()
                    && !self.cscan.mid_message()
                    && !h.scan.mid_message()
                    && h.lease.buf.is_empty()
            }
            None => false,
        };
        if !releasable {
            return;
        }
        self.registration.target.set(None).await;
        if let Some(held) = self.held.take() {
            if held.dirty {
                let pool = self.entry.pool.config().name;
                tokio::spawn(
                    async move { reclaim(held, Reclaim::Clean { reset: true }, &pool).await },
                );
            }
            // Otherwise dropping `held` returns the lease to the pool.
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let limits = &self.entry.db.limits;
        match &self.held {
            Some(h) if h.outstanding > 0 => match (limits.query_timeout, h.busy_since) {
                (Some(t), Some(since)) if !h.cancel_sent => Some(since + t),
                _ => None,
            },
            Some(h) if h.in_transaction() => limits
                .idle_in_transaction_timeout
                .map(|t| self.last_client_activity + t),
            _ => limits
                .client_idle_timeout
                .map(|t| self.last_client_activity + t),
        }
    }

    async fn on_deadline(&mut self) -> Option<End> {
        let limits = self.entry.db.limits.clone();
        let now = Instant::now();
        let pool = self.entry.pool.config().name;
        match self.held.as_mut() {
            Some(h) if h.outstanding > 0 => {
                let (Some(t), Some(since)) = (limits.query_timeout, h.busy_since) else {
                    return None;
                };
                if h.cancel_sent || now < since + t {
                    return None;
                }
                h.cancel_sent = true;
                let key = h.key();
                tracing::warn!(client = %self.holder.client, pool = %pool, timeout = ?t, "query_timeout exceeded; cancelling the query");
                let mut m = BytesMut::new();
                backend::notice_response(
                    &mut m,
                    &backend::ErrorFields {
                        severity: "WARNING",
                        code: "57014",
                        message: &format!(
                            "poolguard: query ran longer than query_timeout ({}); cancelling it",
                            fmt_duration(t)
                        ),
                        detail: None,
                        hint: None,
                    },
                );
                let _ = self.client.write_all(&m).await;
                if let Err(e) = send_cancel(key).await {
                    tracing::warn!(error = %e, "cancel for query_timeout failed");
                }
                None
            }
            Some(h) if h.in_transaction() => {
                let t = limits.idle_in_transaction_timeout?;
                if now < self.last_client_activity + t {
                    return None;
                }
                Some(End::Kicked(ProxyError::IdleInTransaction(format!(
                    "poolguard: transaction idle for more than {} (idle_in_transaction_timeout); it was rolled back and its server connection returned to pool {pool}",
                    fmt_duration(t)
                ))))
            }
            _ => {
                let t = limits.client_idle_timeout?;
                if now < self.last_client_activity + t {
                    return None;
                }
                Some(End::Kicked(ProxyError::ClientIdle(format!(
                    "poolguard: client idle for more than {} (client_idle_timeout)",
                    fmt_duration(t)
                ))))
            }
        }
    }
}

/// Updates what we know of the server's conversation when a client message passes.
fn note_client_message(held: &mut Held, tag: u8) {
    match tag {
        tags::frontend::QUERY | tags::frontend::FUNCTION_CALL | tags::frontend::SYNC => {
            if held.outstanding == 0 {
                held.busy_since = Some(Instant::now());
            }
            held.outstanding += 1;
            if tag == tags::frontend::SYNC {
                held.unsynced = false;
            }
        }
        tags::frontend::COPY_DATA => {}
        tags::frontend::COPY_DONE | tags::frontend::COPY_FAIL => held.copy_in = false,
        tags::frontend::FLUSH => {}
        _ => held.unsynced = true,
    }
}

pub fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
