//! The PostgreSQL door under a scripted server and scripted clients (see [`super`]).
//!
//! Input layout: byte 0 picks how many clients (1 to [`super::MAX_CLIENTS`]); then steps, each
//! a client index, an action and its reply plan ([`Plan`]) until the input ends; a client
//! whose steps run out disconnects. Each client picks a database first: `tx` (transaction mode,
//! two servers) or `sess` (session mode, one server), both on the same fake server.
//!
//! The fake server answers every request as its plan says (rows, errors, COPY in either
//! direction, notices and parameter reports, any ReadyForQuery status; or a stall until
//! cancelled, an early close, a malformed message) and keeps, per connection, its own account
//! of where the conversation stands ([`View`]). The plan travels in the request itself: a
//! `/*fz<client>:<plan>*/` comment in query text, a Bind parameter for Execute.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::{Buf, BufMut, BytesMut};
use poolguard_pg::backend::{self as be, ErrorFields};
use poolguard_pg::framing::decode_frame;
use poolguard_pg::startup::{self, StartupRequest};
use poolguard_pg::{frontend, md5auth};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{Rig, Script, Violations, ANSWER_WITHIN, MAX_CLIENTS};

const USER: &str = "fz";
const PASSWORD: &str = "fz-secret";
const MAX_LEN: usize = 1 << 20;

const CONFIG: &str = r#"
[postgres]
listen = "127.0.0.1:0"
auth_method = "md5"

[[backends]]
name = "fake"
protocol = "postgres"
hosts = ["{server}"]
max_connections = 4
connect_timeout = "5s"

[[databases]]
name = "tx"
backend = "fake"
pool_mode = "transaction"
pool_size = 2
max_overflow = 0

[[databases]]
name = "sess"
backend = "fake"
pool_mode = "session"
pool_size = 1
max_overflow = 0

[[users]]
name = "fz"
password = "fz-secret"

[limits]
acquire_timeout = "5s"
"#;

/// The fuzz target: one input, every invariant of [`super`] checked after it.
pub fn pg_session(data: &[u8]) {
    static RIG: OnceLock<Mutex<Rig>> = OnceLock::new();
    super::with_rig(&RIG, start, |rig| run(rig, data));
}

fn start() -> Rig {
    Rig::start(CONFIG, FakeServer::start, |shared| {
        shared.pg_pools().iter().map(|e| e.pool.status()).collect()
    })
}

/// Clients get names no earlier input used, so a server kept across inputs still tells them
/// apart.
static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);
/// Plans are numbered across inputs for the same reason; the fake server looks them up here.
static PLANS: OnceLock<Mutex<HashMap<u64, Plan>>> = OnceLock::new();
static NEXT_PLAN: AtomicU64 = AtomicU64::new(1);

fn plans() -> std::sync::MutexGuard<'static, HashMap<u64, Plan>> {
    PLANS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

fn run(rig: &Rig, data: &[u8]) {
    let mut s = Script::new(data);
    let n = 1 + s.below(MAX_CLIENTS);
    let mut scripts: Vec<ClientScript> = (0..n)
        .map(|_| ClientScript {
            name: format!("fz{}", NEXT_CLIENT.fetch_add(1, Ordering::Relaxed)),
            database: if s.byte() % 4 == 3 { "sess" } else { "tx" },
            steps: Vec::new(),
        })
        .collect();
    let mut plan_ids = Vec::new();
    while !s.is_empty() {
        let c = s.below(n);
        let step = Step::decode(&mut s, &mut plan_ids);
        scripts[c].steps.push(step);
    }
    let addr = rig.proxy.postgres_addr.expect("postgres door");
    let clients = scripts
        .into_iter()
        .map(|c| async move { c.run(addr).await })
        .collect();
    rig.check(super::run_clients(clients));
    let mut table = plans();
    for id in plan_ids {
        table.remove(&id);
    }
}

// ---------------------------------------------------------------------------------------------
// Plans: what the server answers

/// How the fake server answers one request (a simple Query, or an Execute).
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// RowDescription, `rows` DataRows, CommandComplete, with a NoticeResponse and a
    /// ParameterStatus mixed in when `extras` says; then ReadyForQuery `status`.
    Rows { rows: u8, extras: u8, status: u8 },
    /// ErrorResponse, ReadyForQuery `status`.
    Error { status: u8 },
    /// EmptyQueryResponse, ReadyForQuery `status`.
    Empty { status: u8 },
    /// CopyInResponse; after the client's CopyDone, CommandComplete (or an ErrorResponse when
    /// `fail`), ReadyForQuery `status`.
    CopyIn { fail: bool, status: u8 },
    /// CopyOutResponse, `rows` CopyData, CopyDone, CommandComplete, ReadyForQuery `status`.
    CopyOut { rows: u8, status: u8 },
    /// Part of an answer, then nothing until the query is cancelled.
    Stall,
    /// The server closes the connection, after part of an answer when `partial`.
    Close { partial: bool },
    /// A message the framing cannot accept (length below 4, or beyond any limit): the
    /// stream cannot be trusted after it.
    Broken { huge: bool },
    /// A ReadyForQuery whose status byte is not I, T or E.
    OddStatus,
    /// A ReadyForQuery without a body.
    ShortReady,
    /// A message no request asked for (ParseComplete, BindComplete) before a normal answer.
    Stray { status: u8 },
}

const STATUSES: [u8; 3] = [b'I', b'T', b'E'];

impl Plan {
    fn decode(s: &mut Script<'_>) -> Plan {
        let status = STATUSES[s.below(3)];
        match s.below(16) {
            0..=4 => Plan::Rows {
                rows: s.byte() % 4,
                extras: s.byte(),
                status,
            },
            5 | 6 => Plan::Error { status },
            7 => Plan::Empty { status },
            8 => Plan::CopyIn {
                fail: s.byte().is_multiple_of(4),
                status,
            },
            9 => Plan::CopyOut {
                rows: s.byte() % 3,
                status,
            },
            10 => Plan::Stall,
            11 => Plan::Close {
                partial: s.byte().is_multiple_of(2),
            },
            12 => Plan::Broken {
                huge: s.byte().is_multiple_of(2),
            },
            13 => Plan::OddStatus,
            14 => Plan::ShortReady,
            _ => Plan::Stray { status },
        }
    }

    /// The client can expect no answer: it sends and goes.
    fn stalls(self) -> bool {
        matches!(self, Plan::Stall)
    }
}

fn new_plan(s: &mut Script<'_>, ids: &mut Vec<u64>) -> (u64, Plan) {
    let plan = Plan::decode(s);
    let id = NEXT_PLAN.fetch_add(1, Ordering::Relaxed);
    plans().insert(id, plan);
    ids.push(id);
    (id, plan)
}

// ---------------------------------------------------------------------------------------------
// Clients

/// What a client does with a COPY the server asked it for.
#[derive(Debug, Clone, Copy)]
enum CopyMove {
    Done,
    Fail,
    Leave,
}

#[derive(Debug, Clone)]
enum Step {
    /// A simple Query.
    Query {
        plan: u64,
        stalls: bool,
        copy: CopyMove,
    },
    /// Parse (named or not), Bind, Describe, Execute, and Sync unless `sync` is false.
    Extended {
        plan: u64,
        stalls: bool,
        statement: Option<u8>,
        reuse: bool,
        sync: bool,
    },
    /// A lone Sync.
    Sync,
    /// Close a named statement, then Sync.
    Close(u8),
    Terminate,
    Disconnect,
    /// Half a message, then gone.
    Partial,
    /// A query sent, the connection dropped without reading the answer.
    SendAndGo(u64),
}

impl Step {
    fn decode(s: &mut Script<'_>, ids: &mut Vec<u64>) -> Step {
        match s.below(16) {
            0..=5 => {
                let (plan, p) = new_plan(s, ids);
                let copy = [
                    CopyMove::Done,
                    CopyMove::Done,
                    CopyMove::Fail,
                    CopyMove::Leave,
                ][s.below(4)];
                Step::Query {
                    plan,
                    stalls: p.stalls(),
                    copy,
                }
            }
            6..=9 => {
                let (plan, p) = new_plan(s, ids);
                let flags = s.byte();
                Step::Extended {
                    plan,
                    stalls: p.stalls(),
                    statement: (flags & 1 != 0).then_some((flags >> 4) % 3),
                    reuse: flags & 2 != 0,
                    sync: flags & 12 != 12,
                }
            }
            10 => Step::Sync,
            11 => Step::Close(s.byte() % 3),
            12 => Step::Terminate,
            13 => Step::Disconnect,
            14 => Step::Partial,
            _ => Step::SendAndGo(new_plan(s, ids).0),
        }
    }
}

struct ClientScript {
    name: String,
    database: &'static str,
    steps: Vec<Step>,
}

/// A client connection to the proxy and what it is owed.
struct Client {
    stream: TcpStream,
    buf: BytesMut,
    name: String,
    /// ReadyForQuery messages still owed (one per Query and per Sync sent).
    owed: usize,
    /// Named statements this client prepared.
    prepared: [bool; 3],
}

/// Why a client stopped early: the proxy closed it (often right), or it broke a rule.
enum Stop {
    Closed,
    Problem(String),
}

impl ClientScript {
    async fn run(self, proxy: SocketAddr) -> Result<(), String> {
        let Some(mut c) = Client::login(proxy, &self.name, self.database).await? else {
            return Ok(());
        };
        for step in &self.steps {
            match c.step(step).await {
                Ok(true) => {}
                Ok(false) | Err(Stop::Closed) => return Ok(()),
                Err(Stop::Problem(p)) => return Err(format!("{}: {p}", self.name)),
            }
        }
        // Out of steps: leave politely half the time.
        if self.steps.len().is_multiple_of(2) {
            let mut m = BytesMut::new();
            frontend::terminate(&mut m);
            let _ = c.stream.write_all(&m).await;
        }
        Ok(())
    }
}

impl Client {
    /// Logs in through the proxy (md5); `None` if the proxy refused (it may, when a pool is
    /// exhausted).
    async fn login(
        proxy: SocketAddr,
        name: &str,
        database: &str,
    ) -> Result<Option<Client>, String> {
        let stream = TcpStream::connect(proxy)
            .await
            .map_err(|e| format!("connect to the proxy: {e}"))?;
        let _ = stream.set_nodelay(true);
        let mut c = Client {
            stream,
            buf: BytesMut::new(),
            name: name.to_owned(),
            owed: 1,
            prepared: [false; 3],
        };
        let mut m = BytesMut::new();
        startup::encode_startup(
            &mut m,
            &[
                ("user", USER),
                ("database", database),
                ("application_name", name),
            ],
        );
        if c.stream.write_all(&m).await.is_err() {
            return Ok(None);
        }
        loop {
            let (tag, body) = match c.read().await {
                Ok(f) => f,
                Err(Stop::Closed) => return Ok(None),
                Err(Stop::Problem(p)) => return Err(format!("{name} login: {p}")),
            };
            match tag {
                b'R' if body.len() >= 8 && body[..4] == [0, 0, 0, 5] => {
                    let salt = [body[4], body[5], body[6], body[7]];
                    let r = md5auth::md5_response(USER, PASSWORD, salt);
                    m.clear();
                    frontend::password_message(&mut m, r.as_bytes());
                    if c.stream.write_all(&m).await.is_err() {
                        return Ok(None);
                    }
                }
                b'Z' => {
                    c.owed = 0;
                    return Ok(Some(c));
                }
                b'E' => return Ok(None),
                _ => {}
            }
        }
    }

    /// Reads one message from the proxy, within [`ANSWER_WITHIN`].
    async fn read(&mut self) -> Result<(u8, bytes::Bytes), Stop> {
        let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
        loop {
            match decode_frame(&mut self.buf, MAX_LEN) {
                Ok(Some(f)) => return Ok((f.tag, f.body)),
                Ok(None) => {}
                Err(e) => return Err(Stop::Problem(format!("the proxy sent a bad frame: {e}"))),
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Err(Stop::Closed),
                Ok(Ok(_)) => {}
                Err(_) => {
                    return Err(Stop::Problem(format!(
                        "no answer within {ANSWER_WITHIN:?} ({} ReadyForQuery owed)",
                        self.owed
                    )))
                }
            }
        }
    }

    async fn send(&mut self, m: &[u8]) -> Result<(), Stop> {
        self.stream.write_all(m).await.map_err(|_| Stop::Closed)
    }

    /// Reads until every ReadyForQuery owed has come, answering COPY requests with `copy`.
    async fn settle(&mut self, copy: CopyMove) -> Result<(), Stop> {
        while self.owed > 0 {
            let (tag, _) = self.read().await?;
            match tag {
                b'Z' => self.owed -= 1,
                b'G' => {
                    let mut m = BytesMut::new();
                    match copy {
                        CopyMove::Done => {
                            for row in ["1\n", "2\n"] {
                                m.put_u8(b'd');
                                m.put_i32(4 + row.len() as i32);
                                m.put_slice(row.as_bytes());
                            }
                            m.put_slice(&[b'c', 0, 0, 0, 4]);
                        }
                        CopyMove::Fail => {
                            m.put_u8(b'f');
                            m.put_i32(4 + 5);
                            m.put_slice(b"nope\0");
                        }
                        CopyMove::Leave => return Err(Stop::Closed),
                    }
                    self.send(&m).await?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Runs one step; `false` when the client has left.
    async fn step(&mut self, step: &Step) -> Result<bool, Stop> {
        let mut m = BytesMut::new();
        match *step {
            Step::Query { plan, stalls, copy } => {
                frontend::query(&mut m, format!("/*{}:{plan}*/ SELECT 1", self.name));
                self.send(&m).await?;
                self.owed += 1;
                if stalls {
                    return Ok(false);
                }
                self.settle(copy).await?;
            }
            Step::Extended {
                plan,
                stalls,
                statement,
                reuse,
                sync,
            } => {
                let name = statement.map_or(String::new(), |i| format!("s{i}"));
                let known = statement.is_some_and(|i| self.prepared[usize::from(i)]);
                if !(reuse && known) {
                    if let Some(i) = statement {
                        if known {
                            frontend::close(&mut m, b'S', &name);
                        }
                        self.prepared[usize::from(i)] = true;
                    }
                    let sql = format!("/*{}:{plan}*/ SELECT $1", self.name);
                    frontend::parse_message(&mut m, &name, &sql, &[]);
                }
                let value = plan.to_string();
                let mut rest = BytesMut::new();
                rest.put_i16(0);
                rest.put_i16(1);
                rest.put_i32(value.len() as i32);
                rest.put_slice(value.as_bytes());
                rest.put_i16(0);
                frontend::bind_with_rest(&mut m, "", &name, &rest);
                frontend::describe(&mut m, b'P', "");
                frontend::execute(&mut m, "", 0);
                if sync {
                    frontend::sync(&mut m);
                    self.owed += 1;
                } else {
                    frontend::flush(&mut m);
                }
                self.send(&m).await?;
                if stalls {
                    return Ok(false);
                }
                self.settle(CopyMove::Fail).await?;
            }
            Step::Sync => {
                frontend::sync(&mut m);
                self.send(&m).await?;
                self.owed += 1;
                self.settle(CopyMove::Fail).await?;
            }
            Step::Close(i) => {
                frontend::close(&mut m, b'S', format!("s{i}"));
                self.prepared[usize::from(i)] = false;
                frontend::sync(&mut m);
                self.send(&m).await?;
                self.owed += 1;
                self.settle(CopyMove::Fail).await?;
            }
            Step::Terminate => {
                frontend::terminate(&mut m);
                let _ = self.send(&m).await;
                return Ok(false);
            }
            Step::Disconnect => return Ok(false),
            Step::Partial => {
                frontend::query(&mut m, format!("/*{}:0*/ SELECT 1", self.name));
                let _ = self.send(&m[..m.len() / 2]).await;
                return Ok(false);
            }
            Step::SendAndGo(plan) => {
                frontend::query(&mut m, format!("/*{}:{plan}*/ SELECT 1", self.name));
                let _ = self.send(&m).await;
                return Ok(false);
            }
        }
        Ok(true)
    }
}

// ---------------------------------------------------------------------------------------------
// The fake server

struct FakeServer {
    violations: Arc<Violations>,
    next_pid: AtomicI32,
    /// Each live connection's cancel line, by process id.
    cancels: Mutex<HashMap<i32, mpsc::UnboundedSender<()>>>,
}

impl FakeServer {
    async fn start(violations: Arc<Violations>) -> SocketAddr {
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
struct View {
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
