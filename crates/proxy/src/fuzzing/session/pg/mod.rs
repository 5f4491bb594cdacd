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
//!
//! [`View`]: server::View

mod client;
mod server;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use super::{Rig, Script, MAX_CLIENTS};
use client::{ClientScript, Step};
use server::FakeServer;

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
