//! Server -> client: relays a command's response frame by frame (physical packets, untouched
//! except for sequence ids when poolguard changed the request's chunking, and the statement id
//! in STMT_PREPARE_OK), follows it with the [`ResponseTracker`](poolguard_mysql::ResponseTracker)
//! to know where it ends and with which status, and records what the command changed in the
//! session once it is complete. Also: LOCAL INFILE (relayed, or refused by ending the transfer
//! with an empty packet and answering the client with an ERR), the query-timeout ERR in place
//! of the server's "interrupted", and [`apply_plan`], poolguard's own commands that bring a
//! server in line with a client.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use poolguard_mysql::consts::*;
use poolguard_mysql::packet::{encode_packet, FrameHead, HEADER_LEN};
use poolguard_mysql::response::{EofPacket, ErrPacket, OkPacket};
use poolguard_mysql::Progress;
use poolguard_pool::LeaseState;
use tokio::time::Instant;

use super::command::After;
use super::statements::close_on_server;
use super::{End, Held, Infile, Inflight, Session};
use crate::error::ProxyError;
use crate::fault::Point;
use crate::mysql::pools::MyLease;
use crate::mysql::server::{ServerConn, ServerError};
use crate::mysql::sync::{Plan, SessionState};
use crate::mysql::wire::err_packet;

/// The end of a response: its status and error code.
struct Done {
    status: Option<u16>,
    error: Option<u16>,
    /// Warnings the final OK/EOF announced.
    warnings: u16,
}

/// The warning count of a response's final OK or EOF packet (0 for anything else).
fn warnings_of(payload: &[u8], caps: u32) -> u16 {
    match payload.first() {
        Some(&OK_HEADER) => OkPacket::decode(payload, caps).map_or(0, |o| o.warnings),
        Some(&EOF_HEADER) if payload.len() < 9 => {
            EofPacket::decode(payload).map_or(0, |e| e.warnings)
        }
        _ => 0,
    }
}

/// What the client gets for a frame of the response.
enum Verdict {
    /// The frame, as readied in place.
    Relay,
    /// These bytes instead (none: the frame is swallowed).
    Replace(BytesMut),
}

/// Shifts a frame's sequence id by `delta` (ids wrap); frames shorter than a header are left
/// as they are.
fn shift_seq(frame: &mut [u8], delta: u8) {
    if delta == 0 {
        return;
    }
    if let Some([.., seq]) = frame.first_chunk_mut::<HEADER_LEN>() {
        *seq = seq.wrapping_add(delta);
    }
}

/// Puts the client's statement id into a STMT_PREPARE_OK frame in place of the server's.
fn set_prepare_id(frame: &mut [u8], client_id: Option<u32>) {
    // Header (4), status 0x00, then the statement id (4).
    if let (Some(id), Some([_, _, _, _, _, id_bytes @ ..])) =
        (client_id, frame.first_chunk_mut::<9>())
    {
        *id_bytes = id.to_le_bytes();
    }
}

impl Session {
    /// Relays what the server sent, tracking the response as it passes.
    ///
    /// The server's bytes are worked on where they arrived: each frame is checked, and
    /// renumbered or given the client's statement id in place, and the response goes to the
    /// client straight from that buffer. Only when a frame is left out (swallowed, or replaced
    /// by poolguard's own ERR) are the relayed frames gathered in a buffer of their own. The
    /// buffer is taken out of the lease meanwhile and always put back.
    pub(super) async fn pump_server(&mut self) -> Option<End> {
        let mut sbuf = std::mem::take(&mut self.held.as_mut()?.lease.buf);
        // The bytes to relay, once a frame was left out.
        let mut gathered: Option<BytesMut> = None;
        // Frames before `off` are done with; those from `kept_from` on are relayed as they are.
        let (mut off, mut kept_from) = (0usize, 0usize);
        let mut done = None;
        let mut failure = None;
        while done.is_none() {
            let Some(held) = self.held.as_mut() else {
                break;
            };
            let head = match held.frames.next_head(sbuf.get(off..).unwrap_or_default()) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    failure = Some(format!("malformed packet from server: {e}"));
                    break;
                }
            };
            // `next_head` found all `total` bytes in the buffer.
            let end = off.saturating_add(head.total).min(sbuf.len());
            let frame = sbuf.get_mut(off..end).unwrap_or_default();
            let step = match held.inflight {
                None => Err(unsolicited(frame)),
                Some(_) => self.on_frame(head, frame).await,
            };
            match step {
                Ok((Verdict::Relay, d)) => done = d,
                Ok((Verdict::Replace(instead), d)) => {
                    let out = gathered.get_or_insert_with(BytesMut::new);
                    out.extend_from_slice(sbuf.get(kept_from..off).unwrap_or_default());
                    out.extend_from_slice(&instead);
                    kept_from = end;
                    done = d;
                }
                Err(why) => {
                    // A frame that broke the conversation is not relayed.
                    failure = Some(why);
                    break;
                }
            }
            off = end;
        }
        let kept = sbuf.get(kept_from..off).unwrap_or_default();
        let relayed: &[u8] = match &mut gathered {
            Some(out) => {
                out.extend_from_slice(kept);
                out
            }
            None => kept,
        };
        let client_gone = if relayed.is_empty() {
            false
        } else {
            self.entry.traffic.sent(relayed.len());
            self.client.write_all(relayed).await.is_err()
        };
        sbuf.advance(off.min(sbuf.len()));
        if let Some(held) = self.held.as_mut() {
            held.lease.buf = sbuf;
        }
        if client_gone {
            return Some(End::ClientGone);
        }
        if let Some(why) = failure {
            return self.server_lost(&why).await;
        }
        match done {
            Some(d) => self.finish(d).await,
            None => None,
        }
    }

    /// One server frame of the response in flight (`frame`, header included): readies it for
    /// the client in place, or says what the client gets instead.
    async fn on_frame(
        &mut self,
        head: FrameHead,
        frame: &mut [u8],
    ) -> Result<(Verdict, Option<Done>), String> {
        let mariadb = self.mariadb;
        let local_infile_allowed = self.local_infile_allowed();
        let refusal = || local_infile_refusal(mariadb);
        let Some(Held {
            inflight: Some(inf),
            lease,
            ..
        }) = self.held.as_deref_mut()
        else {
            return Err("no command in flight".into());
        };
        let payload = frame.get(HEADER_LEN..).unwrap_or_default();
        let rows_before = inf.tracker.rows();
        let had_prepare_ok = inf.tracker.prepare_ok().is_some();
        let progress = inf
            .tracker
            .feed_chunk(payload, head.is_continuation)
            .map_err(|e| format!("unexpected packet from server: {e}"))?;
        note_insert_id(inf, payload, head.is_continuation, lease.caps, rows_before);
        let warnings = match progress {
            Progress::Done { .. } => warnings_of(payload, lease.caps),
            _ => 0,
        };
        let client_seq = head.seq.wrapping_add(inf.delta);
        if let Infile::Refused { client_seq } = inf.infile {
            if progress == Progress::LocalInfileRequested {
                // A later statement of the same text asks again: refused alike, or the server
                // would wait for a file forever.
                end_transfer(lease, head.seq).await?;
                return Ok((Verdict::Replace(BytesMut::new()), None));
            }
            let mut instead = BytesMut::new();
            let done =
                answer_refused_infile(progress, client_seq, &mut instead, &refusal(), mariadb);
            return Ok((Verdict::Replace(instead), done));
        }
        let rewrite_prepare = !had_prepare_ok && inf.tracker.prepare_ok().is_some();
        match progress {
            Progress::More => {
                let row = inf.tracker.rows() > rows_before && !head.is_continuation;
                if let Some(ids) = inf.thread_ids.as_deref().filter(|_| row) {
                    if let Some(instead) = processlist_row(frame, ids, client_seq) {
                        return Ok((Verdict::Replace(instead), None));
                    }
                }
                relay(frame, inf, rewrite_prepare);
                Ok((Verdict::Relay, None))
            }
            Progress::LocalInfileRequested if local_infile_allowed => {
                shift_seq(frame, inf.delta);
                inf.infile = Infile::ClientSending {
                    server_seq: head.seq.wrapping_add(1),
                };
                Ok((Verdict::Relay, None))
            }
            Progress::LocalInfileRequested => {
                // A LOAD the query's text did not show (it is refused before it is sent when
                // it does): end the transfer at once; the server sees an empty file.
                end_transfer(lease, head.seq).await?;
                inf.infile = Infile::Refused { client_seq };
                tracing::info!(client = %self.holder.client, "{LOCAL_INFILE_REFUSED}");
                Ok((Verdict::Replace(BytesMut::new()), None))
            }
            Progress::AuthContinue => Err("unexpected authentication request".into()),
            Progress::Done {
                status_flags,
                error,
            } => {
                let verdict = if error == Some(ER_QUERY_INTERRUPTED) && inf.kill_sent {
                    let timeout = self.entry.db().limits.query_timeout;
                    let mut instead = BytesMut::new();
                    err_packet(&mut instead, client_seq, &timeout_error(timeout), mariadb);
                    Verdict::Replace(instead)
                } else {
                    relay(frame, inf, rewrite_prepare);
                    Verdict::Relay
                };
                let done = Done {
                    status: status_flags,
                    error,
                    warnings,
                };
                Ok((verdict, Some(done)))
            }
        }
    }

    pub(super) fn infile_sending(&self) -> bool {
        self.inflight()
            .is_some_and(|i| matches!(i.infile, Infile::ClientSending { .. }))
    }

    /// Relays the client's LOCAL INFILE packets to the server until the empty one.
    pub(super) async fn relay_infile(&mut self) -> Option<End> {
        let mut out = BytesMut::new();
        loop {
            let p = match self.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => return Some(End::Kicked(e, 1)),
            };
            let inf = self.inflight_mut()?;
            let Infile::ClientSending { server_seq } = inf.infile else {
                break;
            };
            let next = encode_packet(&mut out, server_seq, &p.payload);
            inf.infile = if p.payload.is_empty() {
                Infile::None
            } else {
                Infile::ClientSending { server_seq: next }
            };
            if p.payload.is_empty() {
                break;
            }
        }
        if out.is_empty() {
            return None;
        }
        let held = self.held.as_mut()?;
        if let Err(e) = held.lease.stream.write_all(&out).await {
            return self.server_lost(&e.to_string()).await;
        }
        // Part of the client's file is at the server, the rest not yet.
        self.shared.faults.hit(Point::MyLoadData);
        None
    }

    /// The response is complete: record what the command changed.
    async fn finish(&mut self, done: Done) -> Option<End> {
        let held = self.held.as_mut()?;
        let inf = held.inflight.take()?;
        held.idle_since = Instant::now();
        // The client's wait (its `wait_timeout`, `client_idle_timeout`) starts at the answer,
        // as the server counts it, not at the command it sent.
        self.last_client_activity = self.last_client_activity.max(held.idle_since);
        held.sticky = done.warnings > 0;
        self.holder.note.set_state(if held.in_transaction() {
            LeaseState::IdleInTransaction
        } else {
            LeaseState::Idle
        });
        if let Some(s) = done.status {
            held.lease.note_status(s);
            self.state.autocommit = held.lease.state.autocommit;
        }
        if held.in_transaction() {
            self.shared.faults.hit(Point::MyInTransaction);
        }
        // SERVER_STATUS_IN_TRANS clear: a transaction (or an autocommit statement) ended.
        self.clock
            .answered(&self.entry.traffic, !held.in_transaction(), held.idle_since);
        if let Some(id) = inf.insert_id {
            self.state.last_insert_id = id;
            held.lease.state.last_insert_id = id;
        }
        let mut pin = None;
        if done
            .status
            .is_some_and(|s| s & SERVER_STATUS_CURSOR_EXISTS != 0)
        {
            pin = Some("a server-side cursor".to_owned());
        }
        let mut ask_schema = false;
        let mut ask_wait = false;
        match (inf.after, done.error) {
            (After::Query(f), None) => {
                ask_wait = f.settings.iter().any(|s| &*s.key == "wait_timeout");
                if let Some(schema) = f.use_schema {
                    let schema: Arc<str> = schema.into();
                    self.state.schema = Some(schema.clone());
                    held.lease.state.schema = Some(schema);
                }
                ask_schema = f.schema_unknown;
                if !f.settings.is_empty() {
                    held.lease.state.settings.apply(&f.settings);
                    if !self.state.settings.apply(&f.settings) {
                        pin = Some("more session settings than poolguard replays".to_owned());
                    }
                }
            }
            (After::InitDb(schema), None) => {
                let schema: Arc<str> = schema.into();
                self.state.schema = Some(schema.clone());
                held.lease.state.schema = Some(schema);
            }
            (After::Prepare { sql, client_id }, None) => {
                if let Some(ok) = inf.tracker.prepare_ok() {
                    if let Some(s) = self.stmts.get_mut(client_id) {
                        s.num_params = ok.num_params;
                        s.num_columns = ok.num_columns;
                    }
                    let closes = held.lease.stmts.insert(sql, ok.statement_id);
                    if let Err(e) = close_on_server(held, &closes).await {
                        return self.server_lost(&e.to_string()).await;
                    }
                }
            }
            (After::Prepare { client_id, .. }, Some(_)) => {
                self.stmts.remove(client_id);
            }
            (After::Execute { sql }, Some(ER_UNKNOWN_STMT_HANDLER)) => {
                held.lease.stmts.forget(&sql)
            }
            (After::ResetConnection, None) => {
                held.lease.state.after_reset();
                held.lease.stmts.clear();
            }
            _ => {}
        }
        if let Some(reason) = pin {
            self.pin(&reason);
        }
        let failed = done.error.is_some();
        let probe =
            failed && (inf.status_before & SERVER_STATUS_IN_TRANS != 0 || !self.state.autocommit);
        if !probe && !ask_schema && !ask_wait {
            return None;
        }
        // Boxed: rarely needed, and it would enlarge every busy client's state.
        Box::pin(self.after_response(probe, ask_schema, ask_wait)).await
    }

    /// Queries poolguard needs after a response: the schema after a multi-statement USE
    /// (`ask_schema`), the session's `wait_timeout` after a SET of it (`ask_wait`: the server
    /// has evaluated whatever expression gave it), and the transaction status after an error
    /// that may have opened or closed one (`probe`).
    async fn after_response(
        &mut self,
        probe: bool,
        ask_schema: bool,
        ask_wait: bool,
    ) -> Option<End> {
        let held = self.held.as_mut()?;
        if ask_wait {
            match held.lease.query("SELECT @@session.wait_timeout").await {
                Ok(r) => {
                    self.wait_timeout = r
                        .rows
                        .first()
                        .and_then(|r| r.first().cloned())
                        .flatten()
                        .and_then(|v| v.parse::<u32>().ok())
                        .and_then(std::num::NonZeroU32::new);
                }
                Err(e) => return self.server_lost(&e.to_string()).await,
            }
        }
        let held = self.held.as_mut()?;
        if ask_schema {
            match held.lease.query("SELECT DATABASE()").await {
                Ok(r) => {
                    let schema = r
                        .rows
                        .first()
                        .and_then(|r| r.first().cloned())
                        .flatten()
                        .map(Arc::<str>::from);
                    held.lease.state.schema = schema.clone();
                    self.state.schema = schema;
                }
                Err(e) => return self.server_lost(&e.to_string()).await,
            }
        }
        let held = self.held.as_mut()?;
        if probe {
            // COM_PING's OK carries the status flags: is a transaction open after the error?
            if let Err(e) = held.lease.exec(&[COM_PING]).await {
                return self.server_lost(&e.to_string()).await;
            }
        }
        None
    }
}

/// A SHOW PROCESSLIST row (a whole text-protocol row in one frame) with its Id, the first
/// column, shown as the poolguard id of the client running on that server thread, as the
/// server shows a client its own connection id (`None`: nothing to change, or not a row this
/// can read; it is relayed as it is).
fn processlist_row(
    frame: &[u8],
    ids: &std::collections::HashMap<u32, u32>,
    client_seq: u8,
) -> Option<BytesMut> {
    let payload = frame.get(HEADER_LEN..)?;
    if payload.len() >= 0xff_ffff {
        return None; // the row goes on in the next frame
    }
    let (&len, rest) = payload.split_first()?;
    // A short length-encoded string: one length byte below 0xfb (0xfb is NULL).
    if len >= 0xfb {
        return None;
    }
    let (digits, rest) = rest.split_at_checked(usize::from(len))?;
    let thread: u32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let id = ids.get(&thread)?.to_string();
    let mut row = Vec::with_capacity(payload.len().saturating_add(10));
    row.push(u8::try_from(id.len()).ok()?);
    row.extend_from_slice(id.as_bytes());
    row.extend_from_slice(rest);
    if row.len() >= 0xff_ffff {
        return None;
    }
    let mut out = BytesMut::with_capacity(row.len().saturating_add(HEADER_LEN));
    encode_packet(&mut out, client_seq, &row);
    Some(out)
}

/// Readies a frame for the client: its sequence id renumbered, and the client's statement id
/// if it is the STMT_PREPARE_OK.
fn relay(frame: &mut [u8], inf: &Inflight, rewrite_prepare: bool) {
    shift_seq(frame, inf.delta);
    if rewrite_prepare {
        set_prepare_id(frame, inf.prepare_id);
    }
}

/// Remembers LAST_INSERT_ID from an OK packet of the response (not from rows or
/// STMT_PREPARE_OK, which also start with 0x00). `payload`: the frame's.
fn note_insert_id(
    inf: &mut Inflight,
    payload: &[u8],
    is_continuation: bool,
    caps: u32,
    rows_before: u64,
) {
    if !is_continuation
        && payload.first() == Some(&OK_HEADER)
        && inf.tracker.rows() == rows_before
        && inf.tracker.command() != COM_STMT_PREPARE
    {
        if let Ok(ok) = OkPacket::decode(payload, caps) {
            if ok.last_insert_id != 0 {
                inf.insert_id = Some(ok.last_insert_id);
            }
        }
    }
}

/// What the log says of a refused LOAD DATA LOCAL.
pub(super) const LOCAL_INFILE_REFUSED: &str = "LOAD DATA LOCAL INFILE refused (the client did not offer CLIENT_LOCAL_FILES, or [mysql] allow_local_infile = false)";

/// Ends a LOCAL INFILE transfer the server asked for (its request was packet `seq`) with an
/// empty file.
async fn end_transfer(lease: &mut MyLease, seq: u8) -> Result<(), String> {
    let empty = [0, 0, 0, seq.wrapping_add(1)];
    lease
        .stream
        .write_all(&empty)
        .await
        .map_err(|e| e.to_string())
}

/// Why a LOAD DATA LOCAL is refused, in the server's words when local files are disabled on
/// either side (MariaDB 4166, MySQL 3948). poolguard offers CLIENT_LOCAL_FILES only with
/// `[mysql] allow_local_infile`, so a refused client is always one without it, as the server
/// would see it.
pub(super) fn local_infile_refusal(mariadb: bool) -> ProxyError {
    let (code, sqlstate, message) = if mariadb {
        (4166, "HY000", "The used command is not allowed because the MariaDB server or client has disabled the local infile capability")
    } else {
        (3948, "42000", "Loading local data is disabled; this must be enabled on both the client and server sides")
    };
    ProxyError::MysqlServer {
        code,
        sqlstate: sqlstate.into(),
        message: message.into(),
    }
}

/// The server's answer to the empty transfer poolguard sent is swallowed; at its end the client
/// gets poolguard's refusal `e` instead.
fn answer_refused_infile(
    progress: Progress,
    client_seq: u8,
    out: &mut BytesMut,
    e: &ProxyError,
    mariadb: bool,
) -> Option<Done> {
    let Progress::Done { status_flags, .. } = progress else {
        return None;
    };
    err_packet(out, client_seq, e, mariadb);
    Some(Done {
        status: status_flags,
        error: Some(e.mysql_code(mariadb)),
        warnings: 0,
    })
}

fn timeout_error(timeout: Option<std::time::Duration>) -> ProxyError {
    ProxyError::QueryTimeout(format!(
        "poolguard: query ran longer than query_timeout ({}) and was killed",
        crate::guard::fmt_duration(timeout.unwrap_or_default())
    ))
}

/// Describes data a server sent outside any command (usually an ERR before it closes);
/// `frame`: the physical packet, header included.
fn unsolicited(frame: &[u8]) -> String {
    match ErrPacket::decode(frame.get(HEADER_LEN..).unwrap_or_default()) {
        Ok(e) => format!(
            "server sent error {} between commands: {}",
            e.code, e.message
        ),
        Err(_) => "server sent data between commands".into(),
    }
}

/// Runs the steps of a [`Plan`] on a server. An ERR from the server stops it and is returned.
pub async fn apply_plan(
    server: &mut ServerConn,
    plan: &Plan,
    client: &SessionState,
) -> Result<Option<ErrPacket>, ServerError> {
    if plan.reset {
        let r = server.exec(&[COM_RESET_CONNECTION]).await?;
        if r.error.is_some() {
            return Ok(r.error);
        }
        server.state.after_reset();
        server.stmts.clear();
    }
    if !plan.statements.is_empty() {
        let batches: Vec<String> = if server.state.multi_statements {
            vec![plan.statements.join("; ")]
        } else {
            plan.statements.clone()
        };
        for sql in batches {
            let mut payload = vec![COM_QUERY];
            payload.extend_from_slice(sql.as_bytes());
            let r = server.exec(&payload).await?;
            if r.error.is_some() {
                return Ok(r.error);
            }
        }
        server.state.charset = client.charset;
        server.state.settings = client.settings.clone();
    }
    if let Some(on) = plan.multi_statements {
        let r = server.exec(&[COM_SET_OPTION, u8::from(!on), 0]).await?;
        if r.error.is_some() {
            return Ok(r.error);
        }
        server.state.multi_statements = on;
    }
    if let Some(schema) = &plan.init_db {
        let mut payload = vec![COM_INIT_DB];
        payload.extend_from_slice(schema.as_bytes());
        let r = server.exec(&payload).await?;
        if r.error.is_some() {
            return Ok(r.error);
        }
        server.state.schema = Some(schema.clone());
    }
    if let Some(id) = plan.last_insert_id {
        let r = server
            .exec(format!("\x03DO LAST_INSERT_ID({id})").as_bytes())
            .await?;
        if r.error.is_some() {
            return Ok(r.error);
        }
        server.state.last_insert_id = id;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends a frame as the relay does: copied, then its sequence id shifted in place.
    fn push_frame(out: &mut BytesMut, raw: &[u8], delta: u8) {
        let at = out.len();
        out.extend_from_slice(raw);
        shift_seq(&mut out[at..], delta);
    }

    /// The same for a STMT_PREPARE_OK, whose statement id becomes the client's.
    fn push_prepare_ok(out: &mut BytesMut, raw: &[u8], client_id: Option<u32>, delta: u8) {
        let at = out.len();
        push_frame(out, raw, delta);
        set_prepare_id(&mut out[at..], client_id);
    }

    #[test]
    fn sequence_ids_are_shifted_and_wrap() {
        let mut out = BytesMut::from(&b"before"[..]);
        push_frame(&mut out, &[1, 0, 0, 0xff, 0x00], 2);
        assert_eq!(&out[..], b"before\x01\x00\x00\x01\x00");
        let mut out = BytesMut::new();
        push_frame(&mut out, &[1, 0, 0, 7, 0x00], 0);
        assert_eq!(&out[..], &[1, 0, 0, 7, 0x00]);
    }

    #[test]
    fn frames_shorter_than_a_header_are_relayed_untouched() {
        for raw in [&[][..], &[1], &[1, 0, 0]] {
            let mut out = BytesMut::from(&b"xyz"[..]);
            push_frame(&mut out, raw, 5);
            assert_eq!(&out[3..], raw);
            assert_eq!(&out[..3], b"xyz");
        }
    }

    #[test]
    fn prepare_ok_gets_the_client_id_and_nothing_else_changes() {
        // STMT_PREPARE_OK: status 0, statement id 0x01020304, 1 column, 2 params, filler, 0 warnings.
        let ok: &[u8] = &[12, 0, 0, 1, 0, 4, 3, 2, 1, 1, 0, 2, 0, 0, 0, 0];
        let mut out = BytesMut::from(&b"ab"[..]);
        push_prepare_ok(&mut out, ok, Some(9), 1);
        assert_eq!(
            &out[..],
            &[b'a', b'b', 12, 0, 0, 2, 0, 9, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0]
        );
        let mut out = BytesMut::new();
        push_prepare_ok(&mut out, ok, None, 0);
        assert_eq!(&out[..], ok);
        // Truncated answers are relayed as they came, never indexed past their end.
        for raw in [&[4, 0, 0, 1, 0, 4, 3, 2][..], &[1, 0, 0, 1, 0], &[0, 0]] {
            let mut out = BytesMut::new();
            push_prepare_ok(&mut out, raw, Some(9), 0);
            assert_eq!(&out[..], raw);
        }
    }

    #[test]
    fn warnings_of_truncated_or_odd_packets_are_zero() {
        for payload in [
            &[][..],
            &[OK_HEADER],
            &[OK_HEADER, 0xfc],
            &[EOF_HEADER],
            &[EOF_HEADER, 1],
            &[EOF_HEADER, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[ERR_HEADER, 0x15, 0x04],
        ] {
            assert_eq!(warnings_of(payload, CLIENT_PROTOCOL_41), 0, "{payload:?}");
        }
        assert_eq!(
            warnings_of(&[EOF_HEADER, 3, 0, 2, 0], CLIENT_PROTOCOL_41),
            3
        );
    }
}
