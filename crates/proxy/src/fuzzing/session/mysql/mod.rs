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
