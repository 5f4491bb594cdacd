//! The MySQL door under a scripted server and scripted clients (see [`super`]).
//!
//! Input layout: byte 0 picks how many clients (1 to [`super::MAX_CLIENTS`]); one byte per
//! client picks its database: `tx` (transaction mode, two servers) or `sess` (session mode, one
//! server), both on the same fake server. Then steps, each a client index, an action and its
//! reply plan ([`Plan`]), until the input ends; a client whose steps run out leaves (COM_QUIT
//! or a plain disconnect).
//!
//! The fake server logs poolguard in (HandshakeV10, mysql_native_password against the
//! configured password) and answers every command as its plan says (OK with
//! SERVER_STATUS_IN_TRANS set or clear, ERR, text or binary result sets, multi-results,
//! STMT_PREPARE_OK, a LOCAL INFILE request; or a stall until `KILL QUERY`, an early close, a
//! malformed packet). It keeps, per connection, its own account of where the conversation
//! stands ([`View`]). Clients are told apart by a `/*fz<client>:<plan>*/` comment in their
//! COM_QUERY and COM_STMT_PREPARE text; a COM_STMT_EXECUTE belongs to whoever prepared its
//! statement on that connection (poolguard prepares statements per server by text, and the
//! text carries the marker) and carries its plan as its one parameter. poolguard's own
//! commands (sync SETs, ROLLBACK, COM_RESET_CONNECTION, COM_PING probes, KILL QUERY on a side
//! connection) carry no marker and are answered as MySQL would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::{BufMut, BytesMut};
use poolguard_mysql::auth::{self, MYSQL_NATIVE_PASSWORD};
use poolguard_mysql::consts::*;
use poolguard_mysql::handshake::{
    decode_client_handshake, AuthSwitchRequest, ClientHandshake, HandshakeResponse41, HandshakeV10,
};
use poolguard_mysql::lenenc::{put_lenenc_bytes, put_lenenc_int, read_lenenc_int};
use poolguard_mysql::packet::encode_packet;
use poolguard_mysql::response::{encode_err, EofPacket, OkPacket};
use poolguard_mysql::resultset::{ColumnDefinition, MYSQL_TYPE_VAR_STRING};
use poolguard_mysql::stmt::StmtPrepareOk;
use poolguard_mysql::{Packet, PacketCodec, Progress, ResponseTracker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{Rig, Script, Violations, ANSWER_WITHIN, MAX_CLIENTS};

const USER: &str = "fz";
const PASSWORD: &str = "fz-secret";
const MAX_LEN: usize = 1 << 20;

const CONFIG: &str = r#"
[mysql]
listen = "127.0.0.1:0"
auth_method = "mysql_native_password"
allow_local_infile = true

[[backends]]
name = "fake"
protocol = "mysql"
hosts = ["{server}"]
max_connections = 8
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
pub fn mysql_session(data: &[u8]) {
    static RIG: OnceLock<Mutex<Rig>> = OnceLock::new();
    super::with_rig(&RIG, start, |rig| run(rig, data));
}

fn start() -> Rig {
    Rig::start(CONFIG, FakeServer::start, |shared| {
        shared
            .mysql
            .pools()
            .iter()
            .map(|e| e.pool.status())
            .collect()
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
    let addr = rig.proxy.mysql_addr.expect("mysql door");
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

/// How the fake server answers one marked command (COM_QUERY, COM_STMT_PREPARE,
/// COM_STMT_EXECUTE). `trans`: the transaction is open after the command
/// (SERVER_STATUS_IN_TRANS in the final OK/EOF).
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// OK, with a warning when `warn`.
    Ok { trans: bool, warn: bool },
    /// ERR. An error does not open a transaction (MySQL's); `rollback`: it ends one that was
    /// open, as a deadlock does.
    Err { rollback: bool },
    /// A result set (text for COM_QUERY, binary for COM_STMT_EXECUTE) of `rows` rows.
    Rows { rows: u8, trans: bool },
    /// A result set flagged SERVER_MORE_RESULTS_EXISTS, then an OK.
    Multi { trans: bool },
    /// A LOCAL INFILE request; after the client's data (ended by an empty packet), OK.
    Infile { trans: bool },
    /// Part of an answer (or none), then nothing until `KILL QUERY`.
    Stall { partial: bool },
    /// The server closes the connection, after part of an answer when `partial`.
    Close { partial: bool },
    /// A packet no tracker accepts (an OK or ERR cut short, a column count of 0), or a result
    /// set ending with a one-byte (pre-4.1) EOF that carries no status flags: the stream, or
    /// the transaction status, cannot be trusted after it.
    Broken { kind: u8 },
}

impl Plan {
    fn decode(s: &mut Script<'_>) -> Plan {
        let trans = s.byte() % 3 == 1;
        match s.below(16) {
            0..=3 => Plan::Ok {
                trans,
                warn: s.byte() % 4 == 1,
            },
            4 | 5 => Plan::Err {
                rollback: s.byte().is_multiple_of(4),
            },
            6..=8 => Plan::Rows {
                rows: s.byte() % 4,
                trans,
            },
            9 => Plan::Multi { trans },
            10 | 11 => Plan::Infile { trans },
            12 => Plan::Stall {
                partial: s.byte().is_multiple_of(2),
            },
            13 => Plan::Close {
                partial: s.byte().is_multiple_of(2),
            },
            _ => Plan::Broken { kind: s.byte() % 4 },
        }
    }

    /// The client can expect no answer: it sends and goes.
    fn stalls(self) -> bool {
        matches!(self, Plan::Stall { .. })
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

/// What a client does when the server asks it for a LOCAL INFILE.
#[derive(Debug, Clone, Copy)]
enum InfileMove {
    /// Two data packets, then the empty one.
    Send,
    /// The empty packet at once (no such file).
    Empty,
    /// Disconnects mid-transfer.
    Leave,
}

#[derive(Debug, Clone)]
enum Step {
    Query {
        plan: u64,
        stalls: bool,
        infile: InfileMove,
    },
    /// COM_STMT_PREPARE into slot `slot` (replacing what it held, closed first).
    Prepare {
        slot: u8,
        plan: u64,
        stalls: bool,
    },
    /// COM_STMT_EXECUTE of slot `slot`'s statement (prepared first if the slot is empty; a
    /// COM_QUERY if that fails).
    Execute {
        slot: u8,
        plan: u64,
        stalls: bool,
    },
    /// COM_STMT_CLOSE (no response).
    Close(u8),
    Ping,
    Quit,
    Disconnect,
    /// Half a packet, then gone.
    Partial,
    /// A query sent, the connection dropped without reading the answer.
    SendAndGo(u64),
    /// A statement with session or transaction meaning ([`SET_TEXTS`]), answered per `plan`.
    Set {
        text: u8,
        plan: u64,
    },
}

/// Statements poolguard's SQL scanner cares about (state that follows the client, pins,
/// transaction control); the fake server gives autocommit and transaction statements their
/// MySQL meaning on top of the plan.
const SET_TEXTS: [&str; 8] = [
    "SET autocommit = 0",
    "SET autocommit = 1",
    "SET time_zone = '+01:00'",
    "SET @fz = 1",
    "START TRANSACTION",
    "COMMIT",
    "SELECT GET_LOCK('fz', 0)",
    "SET NAMES utf8mb4",
];

impl Step {
    fn decode(s: &mut Script<'_>, ids: &mut Vec<u64>) -> Step {
        match s.below(17) {
            0..=4 => {
                let (plan, p) = new_plan(s, ids);
                let infile = [
                    InfileMove::Send,
                    InfileMove::Send,
                    InfileMove::Empty,
                    InfileMove::Leave,
                ][s.below(4)];
                Step::Query {
                    plan,
                    stalls: p.stalls(),
                    infile,
                }
            }
            5 | 6 => {
                let slot = s.byte() % 2;
                let (plan, p) = new_plan(s, ids);
                Step::Prepare {
                    slot,
                    plan,
                    stalls: p.stalls(),
                }
            }
            7..=9 => {
                let slot = s.byte() % 2;
                let (plan, p) = new_plan(s, ids);
                Step::Execute {
                    slot,
                    plan,
                    stalls: p.stalls(),
                }
            }
            10 => Step::Close(s.byte() % 2),
            11 => Step::Ping,
            12 => Step::Quit,
            13 => Step::Disconnect,
            14 => Step::Partial,
            15 => Step::SendAndGo(new_plan(s, ids).0),
            _ => Step::Set {
                text: s.byte() % SET_TEXTS.len() as u8,
                plan: new_plan(s, ids).0,
            },
        }
    }
}

struct ClientScript {
    name: String,
    database: &'static str,
    steps: Vec<Step>,
}

/// A client connection to the proxy.
struct Client {
    stream: TcpStream,
    buf: BytesMut,
    codec: PacketCodec,
    caps: u32,
    name: String,
    /// The statement ids the proxy gave this client, per slot.
    stmts: [Option<u32>; 2],
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
            let _ = c.send(0, &[COM_QUIT]).await;
        }
        Ok(())
    }
}

impl Client {
    /// Logs in through the proxy; `None` if the proxy refused (it may, when a pool is
    /// exhausted or its server failed).
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
            codec: PacketCodec::new(MAX_LEN),
            caps: 0,
            name: name.to_owned(),
            stmts: [None; 2],
        };
        let greeting = match c.read().await {
            Ok(p) => p,
            Err(Stop::Closed) => return Ok(None),
            Err(Stop::Problem(p)) => return Err(format!("{name} login: {p}")),
        };
        let Ok(hs) = HandshakeV10::decode(&greeting.payload) else {
            return Ok(None); // an ERR instead of the greeting
        };
        c.caps = (CLIENT_LONG_PASSWORD
            | CLIENT_PROTOCOL_41
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH
            | CLIENT_TRANSACTIONS
            | CLIENT_MULTI_RESULTS
            | CLIENT_PS_MULTI_RESULTS
            | CLIENT_LOCAL_FILES
            | CLIENT_CONNECT_ATTRS
            | CLIENT_CONNECT_WITH_DB)
            & hs.capabilities
            | CLIENT_PROTOCOL_41;
        let response = HandshakeResponse41 {
            capabilities: c.caps,
            max_packet_size: MAX_LEN as u32,
            charset: DEFAULT_COLLATION,
            username: USER.to_owned(),
            auth_response: scramble(&hs.auth_plugin_name, &hs.auth_plugin_data),
            database: Some(database.to_owned()),
            auth_plugin_name: Some(hs.auth_plugin_name.clone()),
            connect_attrs: vec![("program_name".into(), name.to_owned())],
            ..HandshakeResponse41::default()
        };
        let mut payload = BytesMut::new();
        response.encode(&mut payload);
        if c.send(greeting.next_seq(), &payload).await.is_err() {
            return Ok(None);
        }
        loop {
            let p = match c.read().await {
                Ok(p) => p,
                Err(Stop::Closed) => return Ok(None),
                Err(Stop::Problem(p)) => return Err(format!("{name} login: {p}")),
            };
            match p.payload.first().copied() {
                Some(OK_HEADER) => return Ok(Some(c)),
                Some(EOF_HEADER) => {
                    let Ok(switch) = AuthSwitchRequest::decode(&p.payload) else {
                        return Err(format!("{name} login: bad auth switch"));
                    };
                    let r = scramble(&switch.plugin_name, &switch.plugin_data);
                    if c.send(p.next_seq(), &r).await.is_err() {
                        return Ok(None);
                    }
                }
                Some(AUTH_MORE_DATA_HEADER) => {}
                _ => return Ok(None),
            }
        }
    }

    /// Reads one packet from the proxy, within [`ANSWER_WITHIN`].
    async fn read(&mut self) -> Result<Packet, Stop> {
        let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(p)) => return Ok(p),
                Ok(None) => {}
                Err(e) => return Err(Stop::Problem(format!("the proxy sent a bad packet: {e}"))),
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Err(Stop::Closed),
                Ok(Ok(_)) => {}
                Err(_) => return Err(Stop::Problem(format!("no answer within {ANSWER_WITHIN:?}"))),
            }
        }
    }

    async fn send(&mut self, seq: u8, payload: &[u8]) -> Result<(), Stop> {
        let mut m = BytesMut::new();
        encode_packet(&mut m, seq, payload);
        self.stream.write_all(&m).await.map_err(|_| Stop::Closed)
    }

    /// Sends a command and reads its whole response; the first packet of it (an ERR, an OK, a
    /// STMT_PREPARE_OK...).
    async fn command(&mut self, payload: &[u8], infile: InfileMove) -> Result<Packet, Stop> {
        self.send(0, payload).await?;
        let mut tracker = ResponseTracker::new(payload[0], self.caps);
        let mut first = None;
        loop {
            let p = self.read().await?;
            let progress = tracker
                .feed(&p.payload)
                .map_err(|e| Stop::Problem(format!("the proxy sent a bad response: {e}")))?;
            let seq = p.seq;
            if first.is_none() {
                first = Some(p);
            }
            match progress {
                Progress::More => {}
                Progress::LocalInfileRequested => match infile {
                    InfileMove::Send => {
                        self.send(seq.wrapping_add(1), b"1\t2\n").await?;
                        self.send(seq.wrapping_add(2), b"3\t4\n").await?;
                        self.send(seq.wrapping_add(3), &[]).await?;
                    }
                    InfileMove::Empty => self.send(seq.wrapping_add(1), &[]).await?,
                    InfileMove::Leave => return Err(Stop::Closed),
                },
                Progress::AuthContinue => {
                    return Err(Stop::Problem("authentication request mid-session".into()))
                }
                Progress::Done { .. } => return Ok(first.expect("a packet was read")),
            }
        }
    }

    fn query(&self, plan: u64) -> Vec<u8> {
        let mut payload = vec![COM_QUERY];
        payload.extend_from_slice(format!("/*{}:{plan}*/ SELECT 1", self.name).as_bytes());
        payload
    }

    /// Runs one step; `false` when the client has left.
    async fn step(&mut self, step: &Step) -> Result<bool, Stop> {
        match *step {
            Step::Query {
                plan,
                stalls,
                infile,
            } => {
                let payload = self.query(plan);
                if stalls {
                    let _ = self.send(0, &payload).await;
                    return Ok(false);
                }
                self.command(&payload, infile).await?;
            }
            Step::Prepare { slot, plan, stalls } => {
                if let Some(id) = self.stmts[usize::from(slot)].take() {
                    let mut close = vec![COM_STMT_CLOSE];
                    close.extend_from_slice(&id.to_le_bytes());
                    self.send(0, &close).await?;
                }
                let mut payload = vec![COM_STMT_PREPARE];
                payload.extend_from_slice(format!("/*{}:{plan}*/ SELECT ?", self.name).as_bytes());
                if stalls {
                    let _ = self.send(0, &payload).await;
                    return Ok(false);
                }
                let first = self.command(&payload, InfileMove::Empty).await?;
                if let Ok(ok) = StmtPrepareOk::decode(&first.payload) {
                    self.stmts[usize::from(slot)] = Some(ok.statement_id);
                }
            }
            Step::Execute { slot, plan, stalls } => {
                if self.stmts[usize::from(slot)].is_none() {
                    // Nothing prepared in that slot yet: prepare it first (plan 0, which no
                    // plan has: a plain STMT_PREPARE_OK).
                    let mut payload = vec![COM_STMT_PREPARE];
                    payload.extend_from_slice(format!("/*{}:0*/ SELECT ?", self.name).as_bytes());
                    let first = self.command(&payload, InfileMove::Empty).await?;
                    if let Ok(ok) = StmtPrepareOk::decode(&first.payload) {
                        self.stmts[usize::from(slot)] = Some(ok.statement_id);
                    }
                }
                let payload = match self.stmts[usize::from(slot)] {
                    Some(id) => execute_payload(id, plan),
                    None => self.query(plan),
                };
                if stalls {
                    let _ = self.send(0, &payload).await;
                    return Ok(false);
                }
                self.command(&payload, InfileMove::Send).await?;
            }
            Step::Close(slot) => {
                if let Some(id) = self.stmts[usize::from(slot)].take() {
                    let mut close = vec![COM_STMT_CLOSE];
                    close.extend_from_slice(&id.to_le_bytes());
                    self.send(0, &close).await?;
                }
            }
            Step::Ping => {
                self.command(&[COM_PING], InfileMove::Empty).await?;
            }
            Step::Quit => {
                let _ = self.send(0, &[COM_QUIT]).await;
                return Ok(false);
            }
            Step::Disconnect => return Ok(false),
            Step::Partial => {
                let payload = self.query(0);
                let mut m = BytesMut::new();
                encode_packet(&mut m, 0, &payload);
                let _ = self.stream.write_all(&m[..m.len() / 2]).await;
                return Ok(false);
            }
            Step::SendAndGo(plan) => {
                let payload = self.query(plan);
                let _ = self.send(0, &payload).await;
                return Ok(false);
            }
            Step::Set { text, plan } => {
                let mut payload = vec![COM_QUERY];
                payload.extend_from_slice(
                    format!("/*{}:{plan}*/ {}", self.name, SET_TEXTS[usize::from(text)]).as_bytes(),
                );
                if plans().get(&plan).is_some_and(|p| p.stalls()) {
                    let _ = self.send(0, &payload).await;
                    return Ok(false);
                }
                self.command(&payload, InfileMove::Empty).await?;
            }
        }
        Ok(true)
    }
}

fn scramble(plugin: &str, nonce: &[u8]) -> Vec<u8> {
    if plugin == auth::CACHING_SHA2_PASSWORD {
        auth::sha2_auth_response(PASSWORD.as_bytes(), nonce)
    } else {
        auth::native_auth_response(PASSWORD.as_bytes(), nonce)
    }
}

/// COM_STMT_EXECUTE of `id` with one VAR_STRING parameter: the plan number.
fn execute_payload(id: u32, plan: u64) -> Vec<u8> {
    let mut m = BytesMut::new();
    m.put_u8(COM_STMT_EXECUTE);
    m.put_u32_le(id);
    m.put_u8(0); // CURSOR_TYPE_NO_CURSOR
    m.put_u32_le(1); // iteration count
    m.put_u8(0); // NULL bitmap of one parameter
    m.put_u8(1); // new params bound
    m.put_u8(MYSQL_TYPE_VAR_STRING);
    m.put_u8(0);
    put_lenenc_bytes(&mut m, plan.to_string().as_bytes());
    m.to_vec()
}

/// The plan number in a COM_STMT_EXECUTE of a one-parameter statement, as
/// [`execute_payload`] writes it.
fn execute_plan(payload: &[u8]) -> Option<u64> {
    // command, id, flags, iterations, NULL bitmap, bound flag, type.
    let rest = payload.get(1 + 4 + 1 + 4 + 1..)?;
    let (&bound, rest) = rest.split_first()?;
    let rest = if bound == 1 { rest.get(2..)? } else { rest };
    let (len, used) = read_lenenc_int(rest).ok()?;
    let value = rest.get(used..used.checked_add(usize::try_from(len).ok()?)?)?;
    std::str::from_utf8(value).ok()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// The fake server

/// Server capabilities announced in the greeting (DEPRECATE_EOF too: poolguard does not take
/// it, and the fake server answers with whatever was negotiated).
const SERVER_CAPS: u32 = CLIENT_LONG_PASSWORD
    | CLIENT_FOUND_ROWS
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_LOCAL_FILES
    | CLIENT_PROTOCOL_41
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_DEPRECATE_EOF;

/// ER_QUERY_INTERRUPTED: what a statement stopped by KILL QUERY fails with.
const ER_QUERY_INTERRUPTED: u16 = 1317;

struct FakeServer {
    violations: Arc<Violations>,
    next_thread: AtomicU32,
    /// Each live connection's KILL QUERY line, by thread id.
    kills: Mutex<HashMap<u32, mpsc::UnboundedSender<()>>>,
}

impl FakeServer {
    async fn start(violations: Arc<Violations>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("fake server");
        let addr = listener.local_addr().expect("fake server address");
        let server = Arc::new(FakeServer {
            violations,
            next_thread: AtomicU32::new(100),
            kills: Mutex::new(HashMap::new()),
        });
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = tokio::spawn(server.clone().serve(stream));
                // A bug in the fake server would otherwise show only as refused logins.
                let violations = server.violations.clone();
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        if e.is_panic() {
                            violations.push(format!("the fake MySQL server panicked: {e}"));
                        }
                    }
                });
            }
        });
        addr
    }

    fn kills(&self) -> std::sync::MutexGuard<'_, HashMap<u32, mpsc::UnboundedSender<()>>> {
        self.kills.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn serve(self: Arc<Self>, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let thread = self.next_thread.fetch_add(1, Ordering::Relaxed);
        let (tx, kills) = mpsc::unbounded_channel();
        self.kills().insert(thread, tx);
        let mut conn = FakeConn {
            stream,
            buf: BytesMut::new(),
            codec: PacketCodec::new(MAX_LEN),
            out: BytesMut::new(),
            thread,
            caps: 0,
            seq: 0,
            status: SERVER_STATUS_AUTOCOMMIT,
            view: View::default(),
            violations: self.violations.clone(),
            server: self.clone(),
            stmts: HashMap::new(),
            next_stmt: 1,
            infile: None,
            stalled: false,
            kill_pending: false,
        };
        if conn.login().await {
            conn.serve(kills).await;
        }
        self.kills().remove(&thread);
    }
}

/// The fake server's own account of one connection.
#[derive(Debug, Default)]
struct View {
    /// SERVER_STATUS_IN_TRANS of the last status sent.
    in_trans: bool,
    /// A command is running and not yet answered (a stall).
    owed: bool,
    /// A LOCAL INFILE transfer was asked for and has not ended.
    infile: bool,
    /// A packet the proxy cannot parse was sent: the stream is out of step for good.
    broken: bool,
    /// The client whose marker was seen last.
    owner: Option<String>,
}

impl View {
    fn clean(&self) -> bool {
        !self.in_trans && !self.owed && !self.infile && !self.broken
    }
}

/// A statement prepared on a fake connection: who prepared it (the marker in its text).
struct Stmt {
    owner: Option<String>,
}

struct FakeConn {
    stream: TcpStream,
    buf: BytesMut,
    codec: PacketCodec,
    out: BytesMut,
    thread: u32,
    /// Capabilities negotiated with poolguard.
    caps: u32,
    /// The next sequence id to send.
    seq: u8,
    /// Status flags (autocommit, in transaction).
    status: u16,
    view: View,
    violations: Arc<Violations>,
    server: Arc<FakeServer>,
    stmts: HashMap<u32, Stmt>,
    next_stmt: u32,
    /// A LOCAL INFILE transfer is under way: the status of the OK that ends it.
    infile: Option<bool>,
    /// A command waits for KILL QUERY; later packets wait in `buf`.
    stalled: bool,
    /// A KILL QUERY came before the command it was for had started (it comes on another
    /// connection, which can overtake the command); kept, so that such a race does not cost
    /// an input the reclaim timeout.
    kill_pending: bool,
}

/// Finds the client marker in text sent to the server: `/*fz7:12*/` (client and plan).
fn marker(text: &str) -> (Option<String>, Option<u64>) {
    if let Some(rest) = text.split("/*").nth(1) {
        if let Some((body, _)) = rest.split_once("*/") {
            if let Some((who, plan)) = body.split_once(':') {
                return (Some(who.to_owned()), plan.trim().parse().ok());
            }
        }
    }
    (None, None)
}

impl FakeConn {
    /// Greeting, handshake response (mysql_native_password against [`PASSWORD`]), OK;
    /// `false` if the login failed.
    async fn login(&mut self) -> bool {
        let nonce: Vec<u8> = (0..20u32)
            .map(|i| b'a' + ((i + self.thread) % 26) as u8)
            .collect();
        let greeting = HandshakeV10 {
            server_version: "8.0.36-fake".into(),
            connection_id: self.thread,
            auth_plugin_data: nonce.clone(),
            capabilities: SERVER_CAPS,
            mariadb_capabilities: 0,
            charset: DEFAULT_COLLATION,
            status_flags: SERVER_STATUS_AUTOCOMMIT,
            auth_plugin_name: MYSQL_NATIVE_PASSWORD.into(),
        };
        let mut p = BytesMut::new();
        greeting.encode(&mut p);
        self.seq = 0;
        self.push(&p);
        if !self.flush().await {
            return false;
        }
        let Some(packet) = self.read().await else {
            return false;
        };
        let Ok(ClientHandshake::Response(r)) = decode_client_handshake(&packet.payload) else {
            return false;
        };
        self.caps = r.capabilities & SERVER_CAPS;
        self.seq = packet.next_seq();
        let expected = auth::native_auth_response(PASSWORD.as_bytes(), &nonce);
        if r.username != USER || r.auth_response != expected {
            self.err(1045, "28000", "Access denied");
            let _ = self.flush().await;
            return false;
        }
        self.ok_packet(SERVER_STATUS_AUTOCOMMIT, 0);
        self.flush().await
    }

    /// Reads one whole packet (login only; the command loop decodes from `buf`).
    async fn read(&mut self) -> Option<Packet> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(p)) => return Some(p),
                Ok(None) => {}
                Err(_) => return None,
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(n) if n > 0 => {}
                _ => return None,
            }
        }
    }

    async fn serve(&mut self, mut kills: mpsc::UnboundedReceiver<()>) {
        loop {
            while !self.stalled {
                match self.codec.decode(&mut self.buf) {
                    Ok(Some(p)) => {
                        if !self.on_packet(p).await {
                            let _ = self.flush().await;
                            return;
                        }
                        if !self.stalled && self.infile.is_none() && self.buf.is_empty() {
                            // Everything asked so far is answered: a KILL from now on is for
                            // later work.
                            self.kill_pending = false;
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
                Some(()) = kills.recv() => {
                    if self.stalled {
                        self.end_stall();
                    } else {
                        self.kill_pending = true;
                    }
                }
            }
        }
    }

    fn push(&mut self, payload: &[u8]) {
        let seq = self.seq;
        encode_packet(&mut self.out, seq, payload);
        self.seq = seq.wrapping_add(1);
    }

    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let ok = self.stream.write_all(&self.out).await.is_ok();
        self.out.clear();
        ok
    }

    fn set_trans(&mut self, trans: bool) {
        if trans {
            self.status |= SERVER_STATUS_IN_TRANS;
        } else {
            self.status &= !SERVER_STATUS_IN_TRANS;
        }
        self.view.in_trans = trans;
    }

    fn ok_packet(&mut self, status: u16, warnings: u16) {
        let mut p = BytesMut::new();
        OkPacket {
            warnings,
            ..OkPacket::with_status(status)
        }
        .encode(&mut p, self.caps);
        self.push(&p);
    }

    /// An OK ending the command, with the transaction open or not.
    fn ok(&mut self, trans: bool, warnings: u16) {
        self.set_trans(trans);
        let s = self.status;
        self.ok_packet(s, warnings);
    }

    fn err(&mut self, code: u16, state: &str, message: &str) {
        let mut p = BytesMut::new();
        encode_err(&mut p, code, state, message);
        self.push(&p);
    }

    /// The end of column definitions or rows: EOF, or an OK with 0xFE under DEPRECATE_EOF.
    fn eof(&mut self, status: u16) {
        let mut p = BytesMut::new();
        if self.caps & CLIENT_DEPRECATE_EOF != 0 {
            OkPacket::with_status(status).encode_as_eof(&mut p, self.caps);
        } else {
            EofPacket {
                warnings: 0,
                status_flags: Some(status),
            }
            .encode(&mut p);
        }
        self.push(&p);
    }

    fn column(&mut self, name: &str) {
        let mut p = BytesMut::new();
        ColumnDefinition {
            name: name.into(),
            org_name: name.into(),
            charset: 45,
            column_length: 64,
            column_type: MYSQL_TYPE_VAR_STRING,
            ..ColumnDefinition::default()
        }
        .encode(&mut p);
        self.push(&p);
    }

    /// Column count and definition of a one-column result set.
    fn result_head(&mut self) {
        let mut p = BytesMut::new();
        put_lenenc_int(&mut p, 1);
        self.push(&p);
        self.column("a");
        if self.caps & CLIENT_DEPRECATE_EOF == 0 {
            let s = self.status;
            self.eof(s);
        }
    }

    /// A one-column result set of `values`, text or binary rows, ending with `status`.
    fn result_set(&mut self, values: &[&str], binary: bool, status: u16) {
        self.result_head();
        for v in values {
            let mut p = BytesMut::new();
            if binary {
                p.put_u8(0);
                p.put_u8(0); // NULL bitmap: (1 column + 7 + 2) / 8 bytes
            }
            put_lenenc_bytes(&mut p, v.as_bytes());
            self.push(&p);
        }
        self.eof(status);
    }

    /// A command marked as `who`'s: if the connection changes hands here, it must be clean.
    fn arrived_from(&mut self, who: Option<String>) {
        let Some(who) = who else { return };
        if self.view.owner.as_deref() != Some(&who) {
            if !self.view.clean() {
                self.violations.push(format!(
                    "server connection {} handed from {:?} to {who} while {:?}",
                    self.thread, self.view.owner, self.view
                ));
            }
            self.view.owner = Some(who);
        }
    }

    /// KILL QUERY ended the stalled command: it fails, the transaction stays as it was.
    fn end_stall(&mut self) {
        self.stalled = false;
        self.kill_pending = false;
        self.view.owed = false;
        self.err(
            ER_QUERY_INTERRUPTED,
            "70100",
            "Query execution was interrupted",
        );
    }

    fn stall(&mut self, partial: bool) {
        if partial {
            let mut p = BytesMut::new();
            put_lenenc_int(&mut p, 1);
            self.push(&p);
            self.column("a");
        }
        self.view.owed = true;
        self.stalled = true;
        if self.kill_pending {
            self.end_stall();
        }
    }

    /// Handles one packet from poolguard; `false` to close the connection.
    async fn on_packet(&mut self, p: Packet) -> bool {
        self.seq = p.next_seq();
        if let Some(trans) = self.infile {
            if p.payload.is_empty() {
                self.infile = None;
                self.view.infile = false;
                self.ok(trans, 0);
            }
            return true;
        }
        let Some((&command, body)) = p.payload.split_first() else {
            self.err(1047, "08S01", "empty packet");
            return true;
        };
        match command {
            COM_QUIT => return false,
            COM_QUERY => {
                let text = String::from_utf8_lossy(body).into_owned();
                let (who, plan) = marker(&text);
                self.arrived_from(who);
                match plan.and_then(|id| plans().get(&id).copied()) {
                    Some(plan) => {
                        let plan = self.as_mysql_would(plan, &text);
                        return self.answer(plan, false).await;
                    }
                    None => self.internal_query(&text),
                }
            }
            COM_STMT_PREPARE => {
                let text = String::from_utf8_lossy(body).into_owned();
                let (who, plan) = marker(&text);
                self.arrived_from(who.clone());
                match plan.and_then(|id| plans().get(&id).copied()) {
                    None
                    | Some(Plan::Ok { .. } | Plan::Rows { .. } | Plan::Multi { .. })
                    | Some(Plan::Infile { .. }) => self.prepare_ok(who),
                    Some(Plan::Err { .. }) => self.err(1146, "42S02", "scripted error"),
                    Some(plan) => return self.answer(plan, false).await,
                }
            }
            COM_STMT_EXECUTE => {
                let id = body
                    .get(..4)
                    .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                let Some(stmt) = self.stmts.get(&id) else {
                    self.err(1243, "HY000", "Unknown prepared statement handler");
                    return true;
                };
                let who = stmt.owner.clone();
                self.arrived_from(who);
                let plan = execute_plan(&p.payload).and_then(|id| plans().get(&id).copied());
                let plan = plan.unwrap_or(Plan::Rows {
                    rows: 1,
                    trans: self.view.in_trans,
                });
                let plan = self.as_mysql_would(plan, "");
                return self.answer(plan, true).await;
            }
            COM_STMT_CLOSE => {
                if let Some(b) = body.get(..4) {
                    self.stmts
                        .remove(&u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                }
            }
            COM_STMT_RESET | COM_PING | COM_INIT_DB => {
                let s = self.status;
                self.ok_packet(s, 0);
            }
            COM_SET_OPTION => {
                let s = self.status;
                self.eof(s);
            }
            COM_RESET_CONNECTION => {
                self.stmts.clear();
                self.status = SERVER_STATUS_AUTOCOMMIT;
                self.ok(false, 0);
            }
            _ => self.err(1047, "08S01", "Unknown command"),
        }
        true
    }

    fn prepare_ok(&mut self, owner: Option<String>) {
        let id = self.next_stmt;
        self.next_stmt += 1;
        self.stmts.insert(id, Stmt { owner });
        let mut p = BytesMut::new();
        StmtPrepareOk {
            statement_id: id,
            num_columns: 1,
            num_params: 1,
            warnings: 0,
        }
        .encode(&mut p);
        self.push(&p);
        let s = self.status;
        self.column("?");
        if self.caps & CLIENT_DEPRECATE_EOF == 0 {
            self.eof(s);
        }
        self.column("a");
        if self.caps & CLIENT_DEPRECATE_EOF == 0 {
            self.eof(s);
        }
    }

    /// poolguard's own queries (sync SETs, ROLLBACK, KILL QUERY, polls), answered as MySQL
    /// would.
    fn internal_query(&mut self, text: &str) {
        let upper = text.trim_start().to_ascii_uppercase();
        if upper.starts_with("ROLLBACK") || upper.starts_with("COMMIT") {
            self.ok(false, 0);
        } else if let Some(id) = upper.strip_prefix("KILL QUERY ") {
            if let Some(line) = id
                .trim()
                .parse::<u32>()
                .ok()
                .and_then(|id| self.server.kills().get(&id).cloned())
            {
                let _ = line.send(());
            }
            let s = self.status;
            self.ok_packet(s, 0);
        } else if upper.starts_with("SELECT") {
            let value = if upper.contains("MAX_CONNECTIONS") {
                "100"
            } else if upper.contains("DATABASE()") {
                "fz"
            } else {
                "0"
            };
            let s = self.status;
            self.result_set(&[value], false, s);
        } else if upper.starts_with("BEGIN") || upper.starts_with("START TRANSACTION") {
            self.ok(true, 0);
        } else {
            if upper.contains("SET AUTOCOMMIT = 0") {
                self.status &= !SERVER_STATUS_AUTOCOMMIT;
            } else if upper.contains("SET AUTOCOMMIT = 1") {
                self.status |= SERVER_STATUS_AUTOCOMMIT;
                self.set_trans(false);
            }
            let s = self.status;
            self.ok_packet(s, 0);
        }
    }

    /// The plan with MySQL's meaning of `text` on top, for a command that succeeds: START
    /// TRANSACTION opens a transaction, COMMIT and `SET autocommit = 1` end it, and with
    /// autocommit off every statement leaves one open.
    fn as_mysql_would(&mut self, plan: Plan, text: &str) -> Plan {
        let succeeds = matches!(
            plan,
            Plan::Ok { .. } | Plan::Rows { .. } | Plan::Multi { .. } | Plan::Infile { .. }
        );
        if !succeeds {
            return plan;
        }
        let upper = text.to_ascii_uppercase();
        if upper.contains("SET AUTOCOMMIT = 0") {
            self.status &= !SERVER_STATUS_AUTOCOMMIT;
        }
        let forced = if upper.contains("SET AUTOCOMMIT = 1") {
            self.status |= SERVER_STATUS_AUTOCOMMIT;
            Some(false)
        } else if upper.contains("COMMIT") {
            Some(false)
        } else if upper.contains("START TRANSACTION") || self.status & SERVER_STATUS_AUTOCOMMIT == 0
        {
            Some(true)
        } else {
            None
        };
        let Some(forced) = forced else { return plan };
        match plan {
            Plan::Ok { warn, .. } => Plan::Ok {
                trans: forced,
                warn,
            },
            Plan::Rows { rows, .. } => Plan::Rows {
                rows,
                trans: forced,
            },
            Plan::Multi { .. } => Plan::Multi { trans: forced },
            Plan::Infile { .. } => Plan::Infile { trans: forced },
            other => other,
        }
    }

    /// Answers a marked command as its plan says (`binary`: a COM_STMT_EXECUTE); `false` to
    /// close.
    async fn answer(&mut self, plan: Plan, binary: bool) -> bool {
        match plan {
            Plan::Ok { trans, warn } => self.ok(trans, u16::from(warn)),
            Plan::Err { rollback } => {
                if rollback {
                    self.set_trans(false);
                }
                self.err(1213, "40001", "scripted error");
            }
            Plan::Rows { rows, trans } => {
                self.set_trans(trans);
                let values: Vec<String> = (0..rows).map(|i| i.to_string()).collect();
                let values: Vec<&str> = values.iter().map(String::as_str).collect();
                let s = self.status;
                self.result_set(&values, binary, s);
            }
            Plan::Multi { trans } => {
                let s = self.status | SERVER_MORE_RESULTS_EXISTS;
                self.result_set(&["m"], binary, s);
                self.ok(trans, 0);
            }
            Plan::Infile { trans } => {
                if binary {
                    self.ok(trans, 0);
                } else {
                    let mut p = BytesMut::new();
                    p.put_u8(LOCAL_INFILE_HEADER);
                    p.put_slice(b"/tmp/fz.tsv");
                    self.push(&p);
                    self.infile = Some(trans);
                    self.view.infile = true;
                }
            }
            Plan::Stall { partial } => self.stall(partial),
            Plan::Close { partial } => {
                if partial {
                    let mut p = BytesMut::new();
                    put_lenenc_int(&mut p, 1);
                    self.push(&p);
                    self.flush().await;
                }
                return false;
            }
            Plan::Broken { kind } => {
                match kind {
                    // An OK cut short: no status flags.
                    0 => self.push(&[OK_HEADER, 0]),
                    // An ERR cut short: no error code.
                    1 => self.push(&[ERR_HEADER, 0x10]),
                    // A result set of no columns.
                    2 => self.push(&[0xfc, 0, 0]),
                    // A result set ending with a pre-4.1 EOF, which has no status flags:
                    // under CLIENT_PROTOCOL_41 nothing says whether a transaction is open.
                    _ => {
                        self.result_head();
                        self.push(&[EOF_HEADER]);
                    }
                }
                self.view.broken = true;
            }
        }
        true
    }
}
