//! Client -> server: one command at a time. Each command is answered locally (COM_PING without
//! a server, COM_SET_OPTION, COM_RESET_CONNECTION without a server, COM_STMT_CLOSE, KILL of a
//! poolguard connection id), refused (commands poolguard does not relay: 1047, client stays),
//! or forwarded: a server is leased if none is held, brought in line with the client's session
//! ([`crate::mysql::sync`]), and the command written to it, rewritten only for statement ids.

use bytes::{Bytes, BytesMut};
use poolguard_mysql::consts::*;
use poolguard_mysql::packet::{encode_packet, HEADER_LEN};
use poolguard_mysql::{Packet, ResponseTracker};
use tokio::time::Instant;

use super::{End, Held, Infile, Inflight, Session};
use crate::error::ProxyError;
use crate::mysql::kill::KillOutcome;
use crate::mysql::pools::acquire_error;
use crate::mysql::sql::{self, Findings};
use crate::mysql::sync;
use crate::mysql::wire::{eof_packet, err_packet, ok_packet};

/// What to record once a forwarded command's response is complete.
pub enum After {
    Plain,
    Query(Box<Findings>),
    InitDb(String),
    Prepare { sql: Bytes, client_id: u32 },
    Execute { sql: Bytes },
    ResetConnection,
}

/// Why a command could not be forwarded.
pub(super) enum Refusal {
    /// The session ends (the client was told, or is gone).
    End(End),
    /// Answer the command with this error; the client stays.
    Answer(ProxyError),
}

/// Why bringing a server in line failed.
pub(super) enum SyncFail {
    /// The server refused a step (its ERR goes to the client; the server is fine).
    Refused(ProxyError),
    /// The server connection failed.
    Lost(String),
}

/// The bytes after a command packet's command byte (none for an empty packet).
pub(super) fn command_body(payload: &[u8]) -> &[u8] {
    payload.split_first().map_or(&[], |(_, body)| body)
}

/// A command packet without even a command byte: the client is not speaking the protocol.
fn empty_command(seq: u8) -> Option<End> {
    let e = ProxyError::Protocol("poolguard: empty command packet".into());
    Some(End::Kicked(e, seq))
}

/// How long poolguard's own commands before a client's may take.
const SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Session {
    pub(super) async fn on_command(&mut self, p: Packet) -> Option<End> {
        let Some(&cmd) = p.payload.first() else {
            return empty_command(p.next_seq());
        };
        tracing::trace!(client = %self.holder.client, command = command_name(cmd), len = p.payload.len(), "command");
        // Should this command's handling panic, the client's error answers this command.
        self.client.expect_seq(p.next_seq());
        match cmd {
            COM_QUIT => Some(End::Quit),
            COM_PING if self.held.is_none() => self.reply_ok(p.next_seq()).await,
            COM_SET_OPTION => self.set_option(&p).await,
            // Boxed (here and below): rare, and each would enlarge every busy client's state.
            COM_RESET_CONNECTION => Box::pin(self.reset_connection(p)).await,
            COM_CHANGE_USER => Box::pin(self.change_user(p)).await,
            COM_STMT_CLOSE => self.stmt_close(&p).await,
            COM_STMT_RESET => Box::pin(self.stmt_reset(p)).await,
            // A client prepares a statement once and executes it many times.
            COM_STMT_PREPARE => Box::pin(self.prepare(p)).await,
            COM_STMT_EXECUTE | COM_STMT_SEND_LONG_DATA | COM_STMT_FETCH => {
                self.stmt_command(cmd, p).await
            }
            COM_QUERY => self.query(p).await,
            COM_PROCESS_KILL => Box::pin(self.process_kill(p)).await,
            COM_INIT_DB => {
                let schema = String::from_utf8_lossy(command_body(&p.payload)).into_owned();
                self.forward(p, None, After::InitDb(schema), false).await
            }
            COM_PING | COM_FIELD_LIST | COM_STATISTICS | COM_PROCESS_INFO | COM_DEBUG => {
                self.forward(p, None, After::Plain, false).await
            }
            other => {
                let e = ProxyError::Protocol(format!(
                    "poolguard does not relay {} (0x{other:02x})",
                    command_name(other)
                ));
                self.reply_err(p.next_seq(), &e).await
            }
        }
    }

    /// Records what the client is running, for leak reports (statement text, never parameters).
    fn note_statement(&self, payload: &[u8], after: &After) {
        let text: &[u8] = match (payload.split_first(), after) {
            (Some((&(COM_QUERY | COM_STMT_PREPARE), sql)), _) => sql,
            (_, After::Execute { sql }) => sql,
            (first, _) => command_name(first.map_or(0, |(&c, _)| c)).as_bytes(),
        };
        self.holder.note.statement_bytes(text);
    }

    /// The status flags a locally answered OK carries.
    pub(super) fn client_status(&self) -> u16 {
        let mut s = 0;
        if self.state.autocommit {
            s |= SERVER_STATUS_AUTOCOMMIT;
        }
        if self.held.as_deref().is_some_and(Held::in_transaction) {
            s |= SERVER_STATUS_IN_TRANS;
        }
        s
    }

    pub(super) async fn reply_ok(&mut self, seq: u8) -> Option<End> {
        let mut m = BytesMut::new();
        ok_packet(&mut m, seq, self.client_status());
        self.write_client(&m).await
    }

    /// Answers a command with an ERR; the client stays connected.
    pub(super) async fn reply_err(&mut self, seq: u8, e: &ProxyError) -> Option<End> {
        tracing::debug!(client = %self.holder.client, code = e.mysql_code(self.mariadb), error = %e, "command refused");
        let mut m = BytesMut::new();
        err_packet(&mut m, seq, e, self.mariadb);
        self.write_client(&m).await
    }

    pub(super) async fn write_client(&mut self, bytes: &[u8]) -> Option<End> {
        self.entry.traffic.sent(bytes.len());
        match self.client.write_all(bytes).await {
            Ok(()) => None,
            Err(_) => Some(End::ClientGone),
        }
    }

    async fn set_option(&mut self, p: &Packet) -> Option<End> {
        let on = match p.payload.get(1..3) {
            Some([0, 0]) => true,
            Some([1, 0]) => false,
            _ => {
                let e = ProxyError::Protocol("poolguard: unknown COM_SET_OPTION option".into());
                return self.reply_err(p.next_seq(), &e).await;
            }
        };
        self.state.multi_statements = on;
        let mut m = BytesMut::new();
        eof_packet(&mut m, p.next_seq(), self.client_status());
        self.write_client(&m).await
    }

    async fn reset_connection(&mut self, p: Packet) -> Option<End> {
        self.stmts.clear();
        self.state.after_reset();
        self.wait_timeout = None;
        self.state.charset = self.handshake_charset();
        if self.pinned.take().is_some() {
            tracing::info!(client = %self.holder.client, "COM_RESET_CONNECTION: client no longer pinned");
        }
        if self.held.is_some() {
            return self.forward(p, None, After::ResetConnection, false).await;
        }
        self.reply_ok(p.next_seq()).await
    }

    /// The collation the client asked for at login (kept across its own resets).
    fn handshake_charset(&self) -> u16 {
        self.login_charset
    }

    /// Whether a LOAD DATA LOCAL of this client's is relayed: it offered CLIENT_LOCAL_FILES and
    /// `[mysql] allow_local_infile` is on.
    pub(super) fn local_infile_allowed(&self) -> bool {
        self.caps & CLIENT_LOCAL_FILES != 0
            && self
                .shared
                .config()
                .mysql
                .as_ref()
                .is_some_and(|m| m.allow_local_infile)
    }

    /// Whether the client's text may be in a character set whose multibyte characters hold
    /// ASCII bytes: its collation says so (or is not known), or it set such a one (or one
    /// poolguard cannot name) itself.
    pub(super) fn ascii_in_multibyte(&self) -> bool {
        sql::ascii_in_multibyte(self.state.charset) || self.state.settings.may_hide_ascii()
    }

    async fn query(&mut self, p: Packet) -> Option<End> {
        // Boxed now rather than when handed on: the future keeps 8 bytes for it, not 120.
        let findings = Box::new(sql::scan(command_body(&p.payload), || {
            self.ascii_in_multibyte()
        }));
        if let Some(k) = findings.kill {
            // `KILL CONNECTION_ID()` names the client's own poolguard id.
            let own = u64::from(self.registration.id);
            let id = k.id.unwrap_or(own);
            if id == own && !k.query_only {
                // As the server ends a connection that kills itself: an error, then closed
                // (its server connection is rolled back and reset as when any client leaves).
                let (code, message) = if self.mariadb {
                    (1927, "Connection was killed")
                } else {
                    (1317, "Query execution was interrupted")
                };
                let e = ProxyError::MysqlServer {
                    code,
                    sqlstate: "70100".into(),
                    message: message.into(),
                };
                return Some(End::Kicked(e, p.next_seq()));
            }
            match Box::pin(self.route_kill(id, k.query_only)).await {
                KillOutcome::NotOurs => {}
                outcome => return Box::pin(self.kill_answer(outcome, id, p.next_seq())).await,
            }
        }
        if findings.local_infile && !self.local_infile_allowed() {
            // As a server with local files disabled answers, before anything of the text runs
            // (a refusal after the server asked for the file could not stop the statements
            // behind it).
            let e = super::response::local_infile_refusal(self.mariadb);
            tracing::info!(client = %self.holder.client, "{}", super::response::LOCAL_INFILE_REFUSED);
            return self.reply_err(p.next_seq(), &e).await;
        }
        if let Some(reason) = &findings.pin {
            self.pin(reason);
        }
        let reads_insert_id = findings.reads_insert_id;
        let rewritten = self.own_connection_id(&p.payload, &findings.connection_id_calls);
        self.forward(p, rewritten, After::Query(findings), reads_insert_id)
            .await
    }

    /// The COM_QUERY with each `CONNECTION_ID()` call replaced by the client's poolguard id
    /// (what its greeting said and what KILL takes here), or `None` when there is none: the
    /// server's thread id would name whichever server this transaction runs on.
    fn own_connection_id(
        &self,
        payload: &[u8],
        calls: &[std::ops::Range<usize>],
    ) -> Option<BytesMut> {
        if calls.is_empty() {
            return None;
        }
        let body = command_body(payload);
        let id = self.registration.id.to_string();
        let mut out = BytesMut::with_capacity(payload.len().saturating_add(16));
        out.extend_from_slice(payload.get(..1)?);
        let mut at = 0;
        for call in calls {
            out.extend_from_slice(body.get(at..call.start)?);
            out.extend_from_slice(id.as_bytes());
            at = call.end;
        }
        out.extend_from_slice(body.get(at..)?);
        Some(out)
    }

    async fn process_kill(&mut self, p: Packet) -> Option<End> {
        let id = p
            .payload
            .get(1..5)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes);
        let Some(id) = id else {
            let e = ProxyError::Protocol("poolguard: malformed COM_PROCESS_KILL".into());
            return Some(End::Kicked(e, p.next_seq()));
        };
        match self.route_kill(u64::from(id), false).await {
            KillOutcome::NotOurs => self.forward(p, None, After::Plain, false).await,
            outcome => self.kill_answer(outcome, u64::from(id), p.next_seq()).await,
        }
    }

    async fn route_kill(&mut self, id: u64, query_only: bool) -> KillOutcome {
        let kills = self.shared.mysql.kills.clone();
        match kills.kill(id, query_only, Some(&self.holder.user)).await {
            // MariaDB's rule only: MySQL 8 also protects SYSTEM_USER accounts from killers
            // without it, which this check cannot see (poolguard kills with the target's
            // credentials): there, another user's client stays 1095.
            KillOutcome::NotOwner if self.mariadb && self.may_kill_others().await => {
                kills.kill(id, query_only, None).await
            }
            outcome => outcome,
        }
    }

    /// Whether the client's user may kill other users' connections (SUPER, or CONNECTION
    /// ADMIN), as the server says: asked on a server connection of the client's own pool,
    /// which logs in as that user. An answer that cannot be had counts as no.
    async fn may_kill_others(&mut self) -> bool {
        const ASK: &str = "SELECT COUNT(*) FROM information_schema.USER_PRIVILEGES \
            WHERE GRANTEE = CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', \
            SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''') \
            AND PRIVILEGE_TYPE IN ('SUPER', 'CONNECTION ADMIN', 'CONNECTION_ADMIN')";
        if self.ensure_server().await.is_err() {
            return false;
        }
        let Some(held) = self.held.as_mut() else {
            return false;
        };
        // Not bounded by a timer: an answer abandoned half-way would be read as the next
        // command's. A failure is the socket's, which no later command gets past.
        match held.lease.query(ASK).await {
            Ok(r) => r
                .rows
                .first()
                .and_then(|r| r.first().cloned())
                .flatten()
                .is_some_and(|n| n != "0"),
            Err(_) => false,
        }
    }

    async fn kill_answer(&mut self, outcome: KillOutcome, id: u64, seq: u8) -> Option<End> {
        if outcome == KillOutcome::NotOwner {
            let e = ProxyError::MysqlServer {
                code: 1095,
                sqlstate: "HY000".into(),
                message: format!("You are not owner of thread {id}"),
            };
            return self.reply_err(seq, &e).await;
        }
        // KILL of one's own connection too: answer, then the kick ends the session.
        self.reply_ok(seq).await
    }

    /// Leases a server if none is held. Servers that died while pooled (e.g. the server's
    /// `wait_timeout`) are noticed here, before anything is sent, and replaced.
    pub(super) async fn ensure_server(&mut self) -> Result<(), ProxyError> {
        if self.server_now() {
            return Ok(());
        }
        // Boxed: the wait (rate limits, the pool's queue, the kill target) is kilobytes of
        // state every statement's future would otherwise carry.
        Box::pin(self.wait_for_server()).await
    }

    /// The common case of [`Session::ensure_server`] without an await: a server held already,
    /// or an idle one leased at once (no transaction rate limit, nobody queued before this
    /// client, the kill target free). `false`: the caller waits instead (no idle connection;
    /// or the server is held and the kill target's slot is busy).
    fn server_now(&mut self) -> bool {
        if let Some(held) = &self.held {
            return !held.target_pending;
        }
        if !self.shared.transactions_unlimited() {
            return false;
        }
        // The pool has checked that an idle connection is still open (`Connector::is_alive`).
        let Ok(lease) = self.entry.pool.try_acquire_idle(self.holder.clone()) else {
            return false;
        };
        let mut held = Held::new(lease);
        let key = self.server_key(&held);
        // A KILL holding the slot: the caller waits for it (`wait_for_server`).
        held.target_pending = self.registration.target.stop.try_set(Some(key)).is_err();
        let ready = !held.target_pending;
        self.held = Some(held);
        ready
    }

    async fn wait_for_server(&mut self) -> Result<(), ProxyError> {
        if let Some(held) = &self.held {
            // Leased by `server_now` while a KILL held the kill target's slot.
            let key = self.server_key(held);
            self.registration.target.stop.set(Some(key)).await;
            if let Some(held) = self.held.as_mut() {
                held.target_pending = false;
            }
            return Ok(());
        }
        let patience = self.entry.db().limits.acquire_timeout;
        self.shared
            .admit_transaction(&self.holder, patience)
            .await?;
        // An idle connection is taken at once (the pool has checked it is still open); only an
        // acquire that has to wait builds (and boxes) the pool's acquire future, which would
        // otherwise make every client's relay state several kilobytes larger (it is moved into
        // a box per busy stretch).
        let lease = match self.entry.pool.try_acquire_idle(self.holder.clone()) {
            Ok(lease) => lease,
            Err(holder) => Box::pin(self.entry.pool.acquire(holder))
                .await
                .map_err(acquire_error)?,
        };
        let held = Held::new(lease);
        self.registration
            .target
            .stop
            .set(Some(self.server_key(&held)))
            .await;
        self.held = Some(held);
        Ok(())
    }

    /// A server is held, or leased at once, and needs nothing to be in line with the client's
    /// session: [`Session::prepare_server`]'s common case, without an await.
    pub(super) fn ready_now(&mut self, reads_insert_id: bool) -> bool {
        self.server_now() && self.in_sync(reads_insert_id)
    }

    /// The held server needs nothing to be in line with the client's session.
    fn in_sync(&self, reads_insert_id: bool) -> bool {
        self.held.as_ref().is_some_and(|held| {
            sync::plan(&self.state, &held.lease.state, reads_insert_id).is_empty()
        })
    }

    /// Brings the held server in line with the client's session.
    pub(super) async fn sync_server(&mut self, reads_insert_id: bool) -> Result<(), SyncFail> {
        let Some(held) = self.held.as_mut() else {
            return Err(SyncFail::Lost("no server held".into()));
        };
        let plan = sync::plan(&self.state, &held.lease.state, reads_insert_id);
        if plan.is_empty() {
            return Ok(());
        }
        tracing::debug!(client = %self.holder.client, server = %held.lease.addr, ?plan, "synchronising session state");
        let work = super::response::apply_plan(&mut held.lease, &plan, &self.state);
        // Boxed: only needed when the server differs from the client's session.
        match Box::pin(tokio::time::timeout(SYNC_TIMEOUT, work)).await {
            Ok(Ok(None)) => Ok(()),
            Ok(Ok(Some(err))) => Err(SyncFail::Refused(ProxyError::MysqlServer {
                code: err.code,
                sqlstate: err.sql_state_str().to_owned(),
                message: err.message,
            })),
            Ok(Err(e)) => Err(SyncFail::Lost(e.to_string())),
            Err(_) => Err(SyncFail::Lost(format!(
                "no answer to poolguard's own commands within {SYNC_TIMEOUT:?}"
            ))),
        }
    }

    /// Leases and synchronises a server for a command.
    pub(super) async fn prepare_server(
        &mut self,
        seq: u8,
        reads_insert_id: bool,
    ) -> Result<(), Refusal> {
        if let Err(e) = self.ensure_server().await {
            tracing::warn!(client = %self.holder.client, pool = %self.pool_name(), code = e.mysql_code(self.mariadb), error = %e, "acquire failed");
            if matches!(e, ProxyError::ShuttingDown(_)) {
                return Err(Refusal::End(End::Kicked(e, seq)));
            }
            return Err(Refusal::Answer(e));
        }
        match self.sync_server(reads_insert_id).await {
            Ok(()) => Ok(()),
            Err(SyncFail::Refused(e)) => Err(Refusal::Answer(e)),
            Err(SyncFail::Lost(why)) => Err(self.lose_server(&why).await),
        }
    }

    /// The server failed before the client's command was sent.
    pub(super) async fn lose_server(&mut self, why: &str) -> Refusal {
        if let Some(end) = self.server_lost(why).await {
            return Refusal::End(end);
        }
        Refusal::Answer(ProxyError::BackendUnavailable(format!(
            "poolguard: the server connection failed before your command was sent ({why}); nothing was run, retry it"
        )))
    }

    /// Answers a command that could not be forwarded. Boxed, as [`Session::server_lost`] is:
    /// an error path awaited from the common ones.
    pub(super) fn refuse(
        &mut self,
        seq: u8,
        r: Refusal,
    ) -> std::pin::Pin<Box<impl std::future::Future<Output = Option<End>> + '_>> {
        Box::pin(self.refuse_now(seq, r))
    }

    async fn refuse_now(&mut self, seq: u8, r: Refusal) -> Option<End> {
        match r {
            Refusal::End(end) => Some(end),
            Refusal::Answer(e) => self.reply_err(seq, &e).await,
        }
    }

    /// Forwards a command (its own bytes, or `rewritten`) and starts relaying the response.
    pub(super) async fn forward(
        &mut self,
        p: Packet,
        rewritten: Option<BytesMut>,
        after: After,
        reads_insert_id: bool,
    ) -> Option<End> {
        // The common case, a server leased at once and already in line with the session,
        // takes no await; the rest is boxed, or every statement's future would be sized for
        // it (the compiler does not overlap it with the send below).
        if !self.ready_now(reads_insert_id) {
            if let Err(answered) =
                Box::pin(self.prepare_or_refuse(p.next_seq(), reads_insert_id)).await
            {
                return answered;
            }
        }
        // Framed here rather than through `send_command`: one async level less in every
        // command's future (each level keeps its own copy of the arguments).
        let (out, server_next) = frame(rewritten.as_deref().unwrap_or(&p.payload));
        drop(rewritten);
        self.send_packet(&p, &out, server_next, after).await
    }

    /// [`Session::prepare_server`], and the refusal answered if it fails (`Err`: what the
    /// command's handling returns then).
    async fn prepare_or_refuse(
        &mut self,
        seq: u8,
        reads_insert_id: bool,
    ) -> Result<(), Option<End>> {
        match self.prepare_server(seq, reads_insert_id).await {
            Ok(()) => Ok(()),
            Err(r) => Err(self.refuse(seq, r).await),
        }
    }

    /// Writes the command to the held server and records what its response must look like.
    pub(super) async fn send_command(
        &mut self,
        p: &Packet,
        payload: &[u8],
        after: After,
    ) -> Option<End> {
        let (out, server_next) = frame(payload);
        self.send_packet(p, &out, server_next, after).await
    }

    /// [`Session::send_command`] for a command already framed for the server (`out`, starting
    /// at sequence id 0; `server_next`: the id after its last chunk).
    pub(super) async fn send_packet(
        &mut self,
        p: &Packet,
        out: &[u8],
        server_next: u8,
        after: After,
    ) -> Option<End> {
        let payload = out.get(HEADER_LEN..).unwrap_or_default();
        // Callers pass the client's command (never empty) or poolguard's rewrite of it.
        let Some(&command) = payload.first() else {
            return empty_command(p.next_seq());
        };
        let prepare_id = match &after {
            After::Prepare { client_id, .. } => Some(*client_id),
            _ => None,
        };
        self.note_statement(payload, &after);
        if matches!(command, COM_QUERY | COM_STMT_EXECUTE) {
            self.clock.query(&self.entry.traffic);
        }
        let held = self.held.as_mut()?;
        let tracker = ResponseTracker::new(command, held.lease.caps);
        if let Err(e) = held.lease.stream.write_all(out).await {
            let r = self.lose_server(&e.to_string()).await;
            return self.refuse(p.next_seq(), r).await;
        }
        if tracker.is_done() {
            return None; // no response (COM_STMT_SEND_LONG_DATA)
        }
        let status_before = held.lease.status;
        held.sticky = false;
        let thread_ids = match &after {
            After::Query(f) if f.processlist => Some(Box::new(
                self.shared.mysql.kills.threads_on(&held.lease.host),
            )),
            _ => None,
        };
        held.inflight = Some(Inflight {
            tracker,
            delta: p.next_seq().wrapping_sub(server_next),
            started: Instant::now(),
            kill_sent: false,
            infile: Infile::None,
            prepare_id,
            insert_id: None,
            after,
            status_before,
            thread_ids,
        });
        if command == COM_STMT_EXECUTE {
            // The statement runs at the server; its answer is not relayed yet.
            self.shared
                .faults
                .hit(crate::fault::Point::MyPreparedExecute);
        }
        None
    }
}

/// A command's payload framed for the server, and the sequence id after its last chunk.
/// Commands start at sequence id 0 towards the server whatever the client sent; the response
/// is renumbered to what the client expects.
fn frame(payload: &[u8]) -> (BytesMut, u8) {
    let mut out = BytesMut::with_capacity(payload.len().saturating_add(8));
    let server_next = encode_packet(&mut out, 0, payload);
    (out, server_next)
}
