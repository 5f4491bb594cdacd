//! The PgBouncer-compatible admin console, without the protocol: parsing console statements into
//! [`Command`]s and rendering `SHOW` answers as [`Table`]s (column names and types, rows of
//! optional text) from a [`Snapshot`] and a [`Context`] (what the snapshot does not carry: the
//! configured databases, users and settings).
//!
//! The proxy's `pg::console` speaks the wire protocol and runs the commands that act (PAUSE,
//! RESUME, RELOAD, KILL_CLIENT); everything here is pure, so the tables are unit-tested
//! against the headers PgBouncer 1.18 sends.
//!
//! Invariants: the column names, their order and their wire types of `SHOW POOLS / CLIENTS /
//! SERVERS / STATS / DATABASES / LISTS / USERS / VERSION / CONFIG` are PgBouncer 1.18's (read
//! off a running 1.18.0; `STATS_TOTALS / STATS_AVERAGES` from its source), so
//! `pgbouncer_exporter` and psql habits keep working; every row has exactly as many values as
//! the table has columns.

mod tables;

use std::net::SocketAddr;
use std::time::SystemTime;

use crate::model::Snapshot;

pub use tables::split_host_port;

/// The console's own pseudo-pool: clients of the console are listed under this pool name (a
/// real pool's name is `database/user`, so it cannot collide), as PgBouncer lists its own.
pub const CONSOLE_POOL: &str = "pgbouncer";

/// The PgBouncer version the console answers as (`SHOW VERSION`, `server_version`).
pub const PGBOUNCER_VERSION: &str = "1.18.0";

/// The wire type of a column: what PgBouncer declares in its RowDescription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `text` (oid 25).
    Text,
    /// `int4` (oid 23): PgBouncer's counters in SHOW POOLS, CLIENTS, DATABASES, LISTS.
    Int4,
    /// `int8` (oid 20): poolguard's own ids.
    Int8,
    /// `numeric` (oid 1700): PgBouncer's SHOW STATS columns; poolguard's durations.
    Numeric,
}

impl Kind {
    /// The PostgreSQL type oid.
    pub fn oid(self) -> u32 {
        match self {
            Kind::Text => 25,
            Kind::Int4 => 23,
            Kind::Int8 => 20,
            Kind::Numeric => 1700,
        }
    }

    /// The type size for RowDescription (-1: variable).
    pub fn size(self) -> i16 {
        match self {
            Kind::Text | Kind::Numeric => -1,
            Kind::Int4 => 4,
            Kind::Int8 => 8,
        }
    }
}

/// One column of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
}

/// A `SHOW` answer: columns, then rows of text values (`None` is SQL NULL).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    /// The column names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.columns.iter().map(|c| c.name).collect()
    }
}

/// A configured database, as `SHOW DATABASES` lists it.
#[derive(Debug, Clone, Default)]
pub struct DatabaseInfo {
    /// The name clients connect to.
    pub name: String,
    /// "postgres" or "mysql".
    pub protocol: String,
    /// The backend's first host, "host:port".
    pub host: String,
    /// The database on the server.
    pub server_database: String,
    pub pool_size: usize,
    /// `max_overflow` (PgBouncer's reserve pool).
    pub reserve_pool: usize,
    /// "transaction" or "session".
    pub pool_mode: String,
    /// The backend budget (`[[backends]] max_connections`).
    pub max_connections: usize,
}

/// One `SHOW CONFIG` row.
#[derive(Debug, Clone, Default)]
pub struct ConfigEntry {
    pub key: String,
    pub value: Option<String>,
    pub default: Option<String>,
    pub changeable: bool,
}

/// What the console needs besides the snapshot.
#[derive(Debug, Clone)]
pub struct Context {
    /// poolguard's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The PostgreSQL front door (the console's own address).
    pub postgres_listen: Option<SocketAddr>,
    /// The MySQL front door.
    pub mysql_listen: Option<SocketAddr>,
    pub databases: Vec<DatabaseInfo>,
    /// `[[users]]` names.
    pub users: Vec<String>,
    /// `SHOW CONFIG` rows, in order.
    pub config: Vec<ConfigEntry>,
    /// Wall-clock time of the snapshot (connect times are shown as dates).
    pub now: SystemTime,
}

impl Default for Context {
    fn default() -> Self {
        Context {
            version: String::new(),
            postgres_listen: None,
            mysql_listen: None,
            databases: Vec::new(),
            users: Vec::new(),
            config: Vec::new(),
            now: SystemTime::UNIX_EPOCH,
        }
    }
}

/// What a `SHOW` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Pools,
    Clients,
    Servers,
    Stats,
    /// SHOW STATS's `total_*` columns, under PgBouncer's short names.
    StatsTotals,
    /// SHOW STATS's `avg_*` columns, under PgBouncer's short names.
    StatsAverages,
    Databases,
    Lists,
    Users,
    Version,
    Config,
    /// poolguard: leases grouped by application and client address (`/api/holders`).
    Holders,
    /// poolguard: leases held past their leak threshold.
    Leaks,
    /// poolguard: server connections closed instead of reused, per pool and reason.
    Discards,
}

/// A parsed console statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Show(Show),
    /// `SHOW HELP`: a NOTICE listing the commands.
    Help,
    Pause(Option<String>),
    Resume(Option<String>),
    Reload,
    KillClient(u64),
}

/// Why a statement was refused: a SQLSTATE and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub sqlstate: &'static str,
    pub message: String,
}

/// SQLSTATE for a statement the console does not know (syntax_error).
pub const UNKNOWN_COMMAND: &str = "42601";
/// SQLSTATE for a PgBouncer command poolguard does not implement (feature_not_supported).
pub const NOT_SUPPORTED: &str = "0A000";

/// PgBouncer commands poolguard knows by name but does not implement.
const PGBOUNCER_ONLY: &[&str] = &[
    "SET",
    "DISABLE",
    "ENABLE",
    "RECONNECT",
    "KILL",
    "SUSPEND",
    "SHUTDOWN",
    "WAIT_CLOSE",
];
const PGBOUNCER_ONLY_SHOW: &[&str] = &[
    "FDS",
    "SOCKETS",
    "ACTIVE_SOCKETS",
    "MEM",
    "DNS_HOSTS",
    "DNS_ZONES",
    "TOTALS",
    "PEERS",
    "PEER_POOLS",
    "STATE",
];

/// The `SHOW HELP` notice's detail.
pub const HELP: &str = "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n\tSHOW LISTS|STATS|STATS_TOTALS|STATS_AVERAGES\n\tSHOW HOLDERS|LEAKS|DISCARDS (poolguard)\n\tRELOAD\n\tPAUSE [<db>]\n\tRESUME [<db>]\n\tKILL_CLIENT <id> (id: SHOW CLIENTS ptr, SHOW LEAKS client_id)";

/// Splits a Query string into statements at `;` outside quotes; empty statements are dropped.
pub fn split_statements(query: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quote: Option<char> = None;
    for (i, c) in query.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, ';') => {
                out.push(&query[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&query[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Parses one statement (case-insensitive keywords; database names as written, unquoted).
pub fn parse(statement: &str) -> Result<Command, Refusal> {
    let words: Vec<&str> = statement.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let arg = |i: usize| words.get(i).map(|w| w.trim_matches('"').to_owned());
    let command = match upper.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["SHOW", what] => match what {
            "POOLS" => Command::Show(Show::Pools),
            "CLIENTS" => Command::Show(Show::Clients),
            "SERVERS" => Command::Show(Show::Servers),
            "STATS" => Command::Show(Show::Stats),
            "STATS_TOTALS" => Command::Show(Show::StatsTotals),
            "STATS_AVERAGES" => Command::Show(Show::StatsAverages),
            "DATABASES" => Command::Show(Show::Databases),
            "LISTS" => Command::Show(Show::Lists),
            "USERS" => Command::Show(Show::Users),
            "VERSION" => Command::Show(Show::Version),
            "CONFIG" => Command::Show(Show::Config),
            "HOLDERS" => Command::Show(Show::Holders),
            "LEAKS" => Command::Show(Show::Leaks),
            "DISCARDS" => Command::Show(Show::Discards),
            "HELP" => Command::Help,
            other if PGBOUNCER_ONLY_SHOW.contains(&other) => return Err(not_supported(statement)),
            _ => return Err(unknown(statement)),
        },
        ["PAUSE"] => Command::Pause(None),
        ["PAUSE", _] => Command::Pause(arg(1)),
        ["RESUME"] => Command::Resume(None),
        ["RESUME", _] => Command::Resume(arg(1)),
        ["RELOAD"] => Command::Reload,
        ["KILL_CLIENT", id] => match id.parse() {
            Ok(id) => Command::KillClient(id),
            Err(_) => {
                return Err(Refusal {
                    sqlstate: UNKNOWN_COMMAND,
                    message: format!(
                        "KILL_CLIENT takes a client id (a number, SHOW CLIENTS ptr), not {:?}",
                        words[1]
                    ),
                })
            }
        },
        [first, ..] if PGBOUNCER_ONLY.contains(&first) => return Err(not_supported(statement)),
        _ => return Err(unknown(statement)),
    };
    Ok(command)
}

fn unknown(statement: &str) -> Refusal {
    // PgBouncer's wording, so scripts matching on it keep working; its SQLSTATE is 08P01, ours
    // says what it is (syntax_error) and the session goes on.
    Refusal {
        sqlstate: UNKNOWN_COMMAND,
        message: format!("invalid command '{statement}', use SHOW HELP;"),
    }
}

fn not_supported(statement: &str) -> Refusal {
    Refusal {
        sqlstate: NOT_SUPPORTED,
        message: format!(
            "'{statement}' is a PgBouncer command poolguard does not implement; use SHOW HELP;"
        ),
    }
}

/// Renders a `SHOW` answer.
pub fn render(what: Show, snap: &Snapshot, ctx: &Context) -> Table {
    match what {
        Show::Pools => tables::pools(snap),
        Show::Clients => tables::clients(snap, ctx),
        Show::Servers => tables::servers(snap, ctx),
        Show::Stats => tables::stats(snap),
        Show::StatsTotals => tables::stats_totals(snap),
        Show::StatsAverages => tables::stats_averages(snap),
        Show::Databases => tables::databases(snap, ctx),
        Show::Lists => tables::lists(snap, ctx),
        Show::Users => tables::users(ctx),
        Show::Version => tables::version(ctx),
        Show::Config => tables::config(ctx),
        Show::Holders => tables::holders(snap),
        Show::Leaks => tables::leaks(snap),
        Show::Discards => tables::discards(snap),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_outside_quotes() {
        assert_eq!(
            split_statements(" show pools; SHOW clients ;; "),
            vec!["show pools", "SHOW clients"]
        );
        assert_eq!(
            split_statements("SET a = 'x;y'; RELOAD"),
            vec!["SET a = 'x;y'", "RELOAD"]
        );
        assert!(split_statements(" ; ").is_empty());
    }

    #[test]
    fn commands_parse_case_insensitively() {
        assert_eq!(parse("show Pools"), Ok(Command::Show(Show::Pools)));
        assert_eq!(parse("SHOW  HELP"), Ok(Command::Help));
        assert_eq!(parse("pause"), Ok(Command::Pause(None)));
        assert_eq!(parse("PAUSE Bank"), Ok(Command::Pause(Some("Bank".into()))));
        assert_eq!(
            parse("resume \"bank\""),
            Ok(Command::Resume(Some("bank".into())))
        );
        assert_eq!(parse("reload"), Ok(Command::Reload));
        assert_eq!(parse("kill_client 42"), Ok(Command::KillClient(42)));
        assert_eq!(parse("show leaks"), Ok(Command::Show(Show::Leaks)));
        assert_eq!(
            parse("show stats_averages"),
            Ok(Command::Show(Show::StatsAverages))
        );
        assert_eq!(
            parse("SHOW STATS_TOTALS"),
            Ok(Command::Show(Show::StatsTotals))
        );
    }

    #[test]
    fn refusals_carry_sqlstates() {
        assert_eq!(parse("SELECT 1").unwrap_err().sqlstate, UNKNOWN_COMMAND);
        assert_eq!(
            parse("SHOW FOO").unwrap_err().message,
            "invalid command 'SHOW FOO', use SHOW HELP;"
        );
        assert_eq!(parse("SHOW MEM").unwrap_err().sqlstate, NOT_SUPPORTED);
        assert_eq!(parse("SHOW TOTALS").unwrap_err().sqlstate, NOT_SUPPORTED);
        assert_eq!(parse("shutdown").unwrap_err().sqlstate, NOT_SUPPORTED);
        assert_eq!(
            parse("KILL_CLIENT x").unwrap_err().sqlstate,
            UNKNOWN_COMMAND
        );
        assert_eq!(parse("RELOAD now").unwrap_err().sqlstate, UNKNOWN_COMMAND);
    }
}
