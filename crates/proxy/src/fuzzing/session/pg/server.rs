//! The fake PostgreSQL server: trust login, then every request answered as its [`Plan`] says
//! (poolguard's own queries as PostgreSQL would), cancels honoured. It keeps per connection
//! its own account of where the conversation stands ([`View`]) and reports a connection that
//! changes hands while that account is not clean.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Buf, BufMut, BytesMut};
use poolguard_pg::backend::{self as be, ErrorFields};
use poolguard_pg::framing::decode_frame;
use poolguard_pg::frontend;
use poolguard_pg::startup::{self, StartupRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{plans, Plan, MAX_LEN};
use crate::fuzzing::session::Violations;

pub(super) struct FakeServer {
    violations: Arc<Violations>,
    next_pid: AtomicI32,
    /// Each live connection's cancel line, by process id.
    cancels: Mutex<HashMap<i32, mpsc::UnboundedSender<()>>>,
}

impl FakeServer {
    pub(super) async fn start(violations: Arc<Violations>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("fake server");
        let addr = listener.local_addr().expect("fake server address");
        let server = Arc::new(FakeServer {
            violations,
            next_pid: AtomicI32::new(1000),
            cancels: Mutex::new(HashMap::new()),
        });
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(server.clone().serve(stream));
            }
        });
        addr
    }

    fn cancels(&self) -> std::sync::MutexGuard<'_, HashMap<i32, mpsc::UnboundedSender<()>>> {
        self.cancels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn serve(self: Arc<Self>, mut stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let mut buf = BytesMut::new();
        let request = loop {
            match startup::decode_startup(&mut buf) {
                Ok(Some(StartupRequest::Ssl | StartupRequest::GssEnc)) => {
                    if stream.write_all(b"N").await.is_err() {
                        return;
                    }
                }
                Ok(Some(r)) => break r,
                Ok(None) => match stream.read_buf(&mut buf).await {
                    Ok(n) if n > 0 => {}
                    _ => return,
                },
                Err(_) => return,
            }
        };
        if let StartupRequest::Cancel { pid, .. } = request {
            if let Some(line) = self.cancels().get(&pid) {
                let _ = line.send(());
            }
            return;
        }
        let pid = self.next_pid.fetch_add(1, Ordering::Relaxed);
        let (tx, cancels) = mpsc::unbounded_channel();
        self.cancels().insert(pid, tx);
        let mut conn = FakeConn {
            stream,
            buf,
            out: BytesMut::new(),
            pid,
            view: View::default(),
            violations: self.violations.clone(),
            portal_plan: None,
            stalled: false,
            cancel_pending: false,
        };
        conn.serve(cancels).await;
        self.cancels().remove(&pid);
    }
}

/// The fake server's own account of one connection.
#[derive(Debug)]
pub(super) struct View {
    /// Status of the last ReadyForQuery sent.
    status: u8,
    /// A COPY FROM STDIN is under way: the plan to finish it with.
    copy_in: Option<Plan>,
    /// Queries (and Syncs) not yet answered with ReadyForQuery.
    unanswered: usize,
    /// Extended-protocol messages received since the last Sync.
    unsynced: bool,
    /// An error in the current extended-protocol batch: skip to Sync.
    failed: bool,
    /// The status the batch's statements leave when they succeed.
    batch_status: Option<u8>,
    /// A frame the proxy cannot parse was sent: the stream is out of step for good.
    broken: bool,
    /// The client whose marker was seen last.
    owner: Option<String>,
}

impl Default for View {
    fn default() -> Self {
        View {
            status: b'I',
            copy_in: None,
            unanswered: 0,
            unsynced: false,
            failed: false,
            batch_status: None,
            broken: false,
            owner: None,
        }
    }
}

impl View {
    fn clean(&self) -> bool {
        self.status == b'I'
            && self.copy_in.is_none()
            && self.unanswered == 0
            && !self.unsynced
            && !self.broken
    }
}

struct FakeConn {
    stream: TcpStream,
    buf: BytesMut,
    out: BytesMut,
    pid: i32,
    view: View,
    violations: Arc<Violations>,
    /// The plan of the unnamed portal (the only one the clients use).
    portal_plan: Option<u64>,
    /// A query waits for its cancel; later messages wait in `buf`.
    stalled: bool,
    /// A cancel came before the statement it was for had started: the cancel connection can
    /// overtake the request. PostgreSQL would lose it (and poolguard would give up on the
    /// server after its reclaim timeout, as it should); the fake server keeps it, so that a
    /// race between two sockets does not cost an input ten seconds.
    cancel_pending: bool,
}

/// Finds the client marker in text sent to the server: `/*fz7:12*/` (client and plan) or
/// `application_name = 'fz7'` (the proxy's parameter sync on handover).
fn marker(text: &str) -> (Option<String>, Option<u64>) {
    if let Some(rest) = text.split("/*").nth(1) {
        if let Some((body, _)) = rest.split_once("*/") {
            if let Some((who, plan)) = body.split_once(':') {
                return (Some(who.to_owned()), plan.trim().parse().ok());
            }
        }
    }
    if let Some(rest) = text.split("application_name = '").nth(1) {
        if let Some((who, _)) = rest.split_once('\'') {
            if who.starts_with("fz") {
                return (Some(who.to_owned()), None);
            }
        }
    }
    (None, None)
}

fn notice(out: &mut BytesMut, severity: &str, code: &str, message: &str, error: bool) {
    let f = ErrorFields {
        severity,
        code,
        message,
        detail: None,
        hint: None,
    };
    if error {
        be::error_response(out, &f);
    } else {
        be::notice_response(out, &f);
    }
}

fn error(out: &mut BytesMut, code: &str) {
    notice(out, "ERROR", code, "scripted error", true);
}

impl FakeConn {
    async fn serve(&mut self, mut cancels: mpsc::UnboundedReceiver<()>) {
        be::authentication_ok(&mut self.out);
        for (k, v) in [
            ("server_version", "16.0"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("TimeZone", "UTC"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
            ("application_name", "poolguard"),
        ] {
            be::parameter_status(&mut self.out, k, v);
        }
        be::backend_key_data(&mut self.out, self.pid, 7);
        be::ready_for_query(&mut self.out, b'I');
        if !self.flush().await {
            return;
        }
        loop {
            while !self.stalled {
                match decode_frame(&mut self.buf, MAX_LEN) {
                    Ok(Some(f)) => {
                        if !self.on_message(f.tag, &f.body).await {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            if !self.flush().await {
                return;
            }
            tokio::select! {
                r = self.stream.read_buf(&mut self.buf) => match r {
                    Ok(n) if n > 0 => {}
                    _ => return,
                },
                Some(()) = cancels.recv() => {
                    if self.stalled {
                        self.end_stall();
                    } else {
                        self.cancel_pending = true;
                    }
                }
            }
        }
    }

    /// The stalled statement is cancelled: it fails, as PostgreSQL's does.
    fn end_stall(&mut self) {
        self.stalled = false;
        self.cancel_pending = false;
        notice(
            &mut self.out,
            "ERROR",
            "57014",
            "canceling statement due to user request",
            true,
        );
        if self.view.unsynced {
            // An Execute stalled: the batch has failed, Sync will say so.
            self.view.failed = true;
        } else {
            self.ready(if self.view.status == b'I' { b'I' } else { b'E' });
        }
    }

    /// A statement stalls until cancelled, or fails at once if a cancel already came for it.
    fn stall(&mut self) {
        self.stalled = true;
        if self.cancel_pending {
            self.end_stall();
        }
    }

    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let ok = self.stream.write_all(&self.out).await.is_ok();
        self.out.clear();
        ok
    }

    fn ready(&mut self, status: u8) {
        self.view.status = status;
        self.view.unanswered = self.view.unanswered.saturating_sub(1);
        if self.view.unanswered == 0 && self.buf.is_empty() {
            // Everything asked so far is answered: a cancel from now on is for later work.
            self.cancel_pending = false;
        }
        be::ready_for_query(&mut self.out, status);
    }

    /// A request marked as `who`'s: if the connection changes hands here, it must be clean.
    fn arrived_from(&mut self, who: Option<String>) {
        let Some(who) = who else { return };
        if self.view.owner.as_deref() != Some(&who) {
            if !self.view.clean() {
                self.violations.push(format!(
                    "server connection {} handed from {:?} to {who} while {:?}",
                    self.pid, self.view.owner, self.view
                ));
            }
            self.view.owner = Some(who);
        }
    }

    /// Handles one message; `false` to close the connection.
    async fn on_message(&mut self, tag: u8, body: &[u8]) -> bool {
        if let Some(plan) = self.view.copy_in {
            return self.on_copy_message(tag, plan);
        }
        match tag {
            b'Q' => {
                let text = String::from_utf8_lossy(frontend::parse_query(body).unwrap_or_default())
                    .into_owned();
                let (who, plan) = marker(&text);
                self.arrived_from(who);
                self.view.unanswered += 1;
                match plan.and_then(|id| plans().get(&id).copied()) {
                    Some(plan) => self.answer_query(plan).await,
                    None => {
                        self.internal_query(&text);
                        true
                    }
                }
            }
            b'P' | b'B' | b'D' | b'E' | b'C' | b'H' => {
                self.view.unsynced |= tag != b'H';
                self.extended(tag, body).await
            }
            b'S' => {
                let status = if self.view.failed {
                    if self.view.status == b'I' {
                        b'I'
                    } else {
                        b'E'
                    }
                } else {
                    self.view.batch_status.unwrap_or(self.view.status)
                };
                self.view.unsynced = false;
                self.view.failed = false;
                self.view.batch_status = None;
                self.view.unanswered += 1;
                self.ready(status);
                true
            }
            b'X' => false,
            // CopyData and friends outside a COPY: PostgreSQL ignores them too.
            _ => true,
        }
    }

    fn on_copy_message(&mut self, tag: u8, plan: Plan) -> bool {
        let status = match plan {
            Plan::CopyIn { status, .. } => status,
            _ => self.view.status,
        };
        let failed = |v: &View| if v.status == b'I' { b'I' } else { b'E' };
        match tag {
            b'd' | b'H' | b'S' => {}
            b'c' => {
                self.view.copy_in = None;
                if matches!(plan, Plan::CopyIn { fail: true, .. }) {
                    error(&mut self.out, "22P04");
                    let s = failed(&self.view);
                    self.ready(s);
                } else {
                    be::command_complete(&mut self.out, "COPY 2");
                    self.ready(status);
                }
            }
            b'X' => return false,
            _ => {
                // CopyFail, or a message out of place: the COPY fails.
                self.view.copy_in = None;
                error(&mut self.out, "57014");
                let s = failed(&self.view);
                self.ready(s);
            }
        }
        true
    }

    /// poolguard's own queries (ROLLBACK, DISCARD ALL, parameter SETs, polls), answered as
    /// PostgreSQL would.
    fn internal_query(&mut self, text: &str) {
        let upper = text.trim_start().to_ascii_uppercase();
        if upper.starts_with("ROLLBACK") {
            be::command_complete(&mut self.out, "ROLLBACK");
            self.ready(b'I');
        } else if upper.starts_with("DISCARD ALL") {
            if self.view.status == b'I' {
                be::command_complete(&mut self.out, "DISCARD ALL");
                self.ready(b'I');
            } else {
                error(&mut self.out, "25001");
                self.ready(b'E');
            }
        } else if self.view.status == b'E' {
            error(&mut self.out, "25P02");
            self.ready(b'E');
        } else if upper.starts_with("SET ") || upper.starts_with("RESET ") {
            if let (Some(who), _) = marker(text) {
                be::parameter_status(&mut self.out, "application_name", &who);
            }
            be::command_complete(&mut self.out, "SET");
            let s = self.view.status;
            self.ready(s);
        } else {
            let recovery = upper.contains("PG_IS_IN_RECOVERY");
            be::row_description(&mut self.out, &["a", "b"]);
            if recovery {
                be::data_row(&mut self.out, &[Some("f"), Some("f")]);
            } else {
                be::data_row(&mut self.out, &[Some("1"), Some("100")]);
            }
            be::command_complete(&mut self.out, "SELECT 1");
            let s = self.view.status;
            self.ready(s);
        }
    }

    /// Answers a marked simple Query as its plan says; `false` to close.
    async fn answer_query(&mut self, plan: Plan) -> bool {
        match plan {
            Plan::Rows {
                rows,
                extras,
                status,
            } => {
                self.rows(rows, extras);
                self.ready(status);
            }
            Plan::Error { status } => {
                error(&mut self.out, "42P01");
                self.ready(status);
            }
            Plan::Empty { status } => {
                be::empty_query_response(&mut self.out);
                self.ready(status);
            }
            Plan::CopyIn { .. } => {
                self.out.put_slice(&[b'G', 0, 0, 0, 7, 0, 0, 0]);
                self.view.copy_in = Some(plan);
            }
            Plan::CopyOut { rows, status } => {
                self.out.put_slice(&[b'H', 0, 0, 0, 7, 0, 0, 0]);
                for _ in 0..rows {
                    self.out.put_slice(&[b'd', 0, 0, 0, 6, b'x', b'\n']);
                }
                self.out.put_slice(&[b'c', 0, 0, 0, 4]);
                be::command_complete(&mut self.out, "COPY 1");
                self.ready(status);
            }
            Plan::Stall => {
                be::row_description(&mut self.out, &["a"]);
                self.stall();
            }
            Plan::Close { partial } => {
                if partial {
                    be::row_description(&mut self.out, &["a"]);
                    self.flush().await;
                }
                return false;
            }
            Plan::Broken { huge } => self.broken(huge),
            Plan::OddStatus => {
                be::command_complete(&mut self.out, "SELECT 0");
                self.ready(b'X');
            }
            Plan::ShortReady => {
                be::command_complete(&mut self.out, "SELECT 0");
                self.out.put_slice(&[b'Z', 0, 0, 0, 4]);
                self.view.unanswered -= 1;
                self.view.status = b'?';
            }
            Plan::Stray { status } => {
                be::parse_complete(&mut self.out);
                be::command_complete(&mut self.out, "SELECT 0");
                self.ready(status);
            }
        }
        true
    }

    /// A frame no decoder accepts: a length field below 4, or one beyond any limit.
    fn broken(&mut self, huge: bool) {
        if huge {
            self.out.put_slice(&[b'D', 0x7f, 0xff, 0xff, 0xff]);
        } else {
            self.out.put_slice(&[b'C', 0, 0, 0, 2]);
        }
        self.view.broken = true;
    }

    fn rows(&mut self, rows: u8, extras: u8) {
        if extras & 1 != 0 {
            notice(&mut self.out, "NOTICE", "00000", "scripted notice", false);
        }
        be::row_description(&mut self.out, &["a"]);
        for i in 0..rows {
            be::data_row(&mut self.out, &[Some(&i.to_string())]);
        }
        if extras & 2 != 0 {
            be::parameter_status(&mut self.out, "TimeZone", "UTC");
        }
        be::command_complete(&mut self.out, &format!("SELECT {rows}"));
    }

    /// Parse, Bind, Describe, Execute, Close, Flush; `false` to close.
    async fn extended(&mut self, tag: u8, body: &[u8]) -> bool {
        if self.view.failed {
            return true;
        }
        match tag {
            b'P' => {
                if let Ok(p) = frontend::parse_parse(body) {
                    let (who, _) = marker(&String::from_utf8_lossy(p.query));
                    self.arrived_from(who);
                }
                be::parse_complete(&mut self.out);
            }
            b'B' => {
                self.portal_plan = frontend::split_bind(body)
                    .ok()
                    .and_then(|(_, rest)| first_parameter(rest));
                be::bind_complete(&mut self.out);
            }
            b'D' => be::no_data(&mut self.out),
            b'C' => be::close_complete(&mut self.out),
            b'E' => {
                let plan = self.portal_plan.and_then(|id| plans().get(&id).copied());
                return self.execute(plan).await;
            }
            _ => {}
        }
        true
    }

    async fn execute(&mut self, plan: Option<Plan>) -> bool {
        match plan.unwrap_or(Plan::Rows {
            rows: 0,
            extras: 0,
            status: b'I',
        }) {
            Plan::Rows {
                rows,
                extras,
                status,
            } => {
                self.rows(rows, extras & 1);
                self.view.batch_status = Some(status);
            }
            Plan::Empty { status } | Plan::Stray { status } => {
                be::empty_query_response(&mut self.out);
                self.view.batch_status = Some(status);
            }
            Plan::Stall => self.stall(),
            Plan::Close { .. } => return false,
            Plan::Broken { huge } => self.broken(huge),
            _ => {
                error(&mut self.out, "42P01");
                self.view.failed = true;
            }
        }
        true
    }
}

/// The first parameter of a Bind body's remainder, read as a plan number.
fn first_parameter(mut rest: &[u8]) -> Option<u64> {
    if rest.len() < 2 {
        return None;
    }
    let formats = rest.get_i16().max(0) as usize;
    if rest.len() < formats * 2 + 2 {
        return None;
    }
    rest.advance(formats * 2);
    if rest.get_i16() < 1 || rest.len() < 4 {
        return None;
    }
    let len = rest.get_i32();
    let len = usize::try_from(len).ok()?;
    std::str::from_utf8(rest.get(..len)?).ok()?.parse().ok()
}
