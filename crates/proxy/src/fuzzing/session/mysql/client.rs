//! The scripted MySQL clients: the steps each client takes ([`Step`], decoded from the fuzz
//! input) and a client connection to the proxy that runs them, checking that every answer it is
//! owed comes, well formed, within [`ANSWER_WITHIN`].

use std::net::SocketAddr;

use bytes::{BufMut, BytesMut};
use poolguard_mysql::auth;
use poolguard_mysql::consts::*;
use poolguard_mysql::handshake::{AuthSwitchRequest, HandshakeResponse41, HandshakeV10};
use poolguard_mysql::lenenc::{put_lenenc_bytes, read_lenenc_int};
use poolguard_mysql::packet::encode_packet;
use poolguard_mysql::resultset::MYSQL_TYPE_VAR_STRING;
use poolguard_mysql::stmt::StmtPrepareOk;
use poolguard_mysql::{Packet, PacketCodec, Progress, ResponseTracker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{new_plan, plans, MAX_LEN, PASSWORD, USER};
use crate::fuzzing::session::{Script, ANSWER_WITHIN};

/// What a client does when the server asks it for a LOCAL INFILE.
#[derive(Debug, Clone, Copy)]
pub(super) enum InfileMove {
    /// Two data packets, then the empty one.
    Send,
    /// The empty packet at once (no such file).
    Empty,
    /// Disconnects mid-transfer.
    Leave,
}

#[derive(Debug, Clone)]
pub(super) enum Step {
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
    pub(super) fn decode(s: &mut Script<'_>, ids: &mut Vec<u64>) -> Step {
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

pub(super) struct ClientScript {
    pub(super) name: String,
    pub(super) database: &'static str,
    pub(super) steps: Vec<Step>,
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
    pub(super) async fn run(self, proxy: SocketAddr) -> Result<(), String> {
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
pub(super) fn execute_plan(payload: &[u8]) -> Option<u64> {
    // command, id, flags, iterations, NULL bitmap, bound flag, type.
    let rest = payload.get(1 + 4 + 1 + 4 + 1..)?;
    let (&bound, rest) = rest.split_first()?;
    let rest = if bound == 1 { rest.get(2..)? } else { rest };
    let (len, used) = read_lenenc_int(rest).ok()?;
    let value = rest.get(used..used.checked_add(usize::try_from(len).ok()?)?)?;
    std::str::from_utf8(value).ok()?.parse().ok()
}
