//! The PostgreSQL admin console: a client that logs in (normal front-door authentication) to
//! database `pgbouncer` or `poolguard` as one of `[admin] users` gets PgBouncer's console
//! instead of a pool. Tables come from `poolguard_admin::console`; this file is the wire loop and
//! the commands that act (PAUSE, RESUME, RELOAD in `control`, KILL_CLIENT in `kill`).
//!
//! Protocol: simple query only. Each statement of a Query (split at `;`) is answered in order
//! with RowDescription + DataRows + CommandComplete, or an ErrorResponse that ends the Query
//! (as PostgreSQL does), then one ReadyForQuery 'I'; the session goes on after errors.
//! Extended-protocol messages get one ErrorResponse 0A000, the rest up to Sync is discarded,
//! and Sync answers ReadyForQuery (PgBouncer 1.18 errors too, then drops the client at Sync).
//!
//! Invariants: the console never takes a pool lease or a server connection; it holds a client
//! slot (counted in `max_client_connections`) and is listed as a client of pool `pgbouncer`,
//! so KILL_CLIENT reaches it like any other client.

mod context;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::stream::ClientStream;
use bytes::{BufMut, BytesMut};
use poolguard_admin::console::{self as render, Command, Table, CONSOLE_POOL, PGBOUNCER_VERSION};
use poolguard_admin::Source;
use poolguard_pg::backend::{self, ErrorFields};
use poolguard_pg::framing::{decode_frame, encode_frame};
use poolguard_pg::{frontend, tags};
use poolguard_pool::Holder;
use rand::Rng;
use tokio::io::AsyncReadExt;

use crate::error::ProxyError;
use crate::pg::login::write_error;
use crate::state::{ClientSlot, Shared};

/// Console statements are short; anything bigger is refused (FATAL 08P01).
const MAX_CONSOLE_MESSAGE: usize = 1024 * 1024;

/// SQLSTATE for a user who is not in `[admin] users` (invalid_authorization_specification).
const NOT_ADMIN: &str = "28000";

/// Whether a startup packet's database names the console (never a pooled database).
pub fn is_console_database(database: &str) -> bool {
    database == "pgbouncer" || database == "poolguard"
}

/// An authenticated admin, greeted and ready for statements.
pub struct Admin {
    slot: ClientSlot,
    holder: Holder,
    /// `[admin] users` (may change state), not only `stats_users`.
    may_change: bool,
}

/// After authentication: refuses (FATAL 28000, `Ok(None)`) a user in neither `[admin] users`
/// nor `stats_users`,
/// otherwise greets the client as PgBouncer's console does.
pub async fn admit(
    client: &mut ClientStream,
    shared: &Shared,
    slot: ClientSlot,
    peer: SocketAddr,
    user: &str,
    database: &str,
    application: &str,
) -> Result<Option<Admin>, ProxyError> {
    let config = shared.config();
    let may_change = config.admin_users.iter().any(|u| u == user);
    let may_read = may_change || config.stats_users.iter().any(|u| u == user);
    drop(config);
    if !may_read {
        let message = format!(
            "user \"{user}\" is not an admin user: the admin console (database \"{database}\") is for [admin] users and stats_users only"
        );
        shared.observe.count_error("postgres", NOT_ADMIN.to_owned());
        tracing::info!(client = %peer, user, code = NOT_ADMIN, "admin console refused");
        let mut m = BytesMut::new();
        backend::error_response(&mut m, &ErrorFields::fatal(NOT_ADMIN, &message));
        let _ = client.write_all(&m).await;
        let _ = client.shutdown().await;
        return Ok(None);
    }
    let mut out = BytesMut::with_capacity(256);
    backend::authentication_ok(&mut out);
    let server_version = format!("{PGBOUNCER_VERSION}/bouncer");
    for (k, v) in [
        ("server_version", server_version.as_str()),
        ("client_encoding", "UTF8"),
        ("server_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("TimeZone", "GMT"),
        ("standard_conforming_strings", "on"),
        ("is_superuser", "on"),
        ("application_name", application),
    ] {
        backend::parameter_status(&mut out, k, v);
    }
    // Nothing to cancel on the console: a key nobody registered, as clients expect one.
    let (pid, secret) = rand::thread_rng().gen();
    backend::backend_key_data(&mut out, pid, secret);
    backend::ready_for_query(&mut out, b'I');
    client
        .write_all(&out)
        .await
        .map_err(ProxyError::client_io)?;
    tracing::info!(client = %peer, user, database, application, "admin console login");
    let holder = Holder::new(
        peer.to_string().into(),
        user.into(),
        database.into(),
        application.into(),
    );
    Ok(Some(Admin {
        slot,
        holder,
        may_change,
    }))
}

/// Runs the console until the client leaves, sends Terminate or breaks the protocol.
pub async fn serve(mut client: ClientStream, mut buf: BytesMut, shared: Arc<Shared>, admin: Admin) {
    let Admin {
        mut slot,
        holder,
        may_change,
    } = admin;
    let pool: Arc<str> = Arc::from(CONSOLE_POOL);
    // `slot` is a local and `client` a parameter: locals drop first, on every path out of
    // here (panics included), so the console is unlisted before its socket closes.
    shared
        .observe
        .clients
        .describe(&mut slot, "postgres", &holder, pool, client.fd());
    let mut console = Console {
        shared,
        may_change,
        out: BytesMut::new(),
        skipping: false,
    };
    loop {
        let frame = match decode_frame(&mut buf, MAX_CONSOLE_MESSAGE) {
            Ok(Some(f)) => f,
            Ok(None) => {
                // Everything decoded so far is answered (in one write) before waiting for more.
                if !console.out.is_empty() {
                    if client.write_all(&console.out).await.is_err() {
                        break;
                    }
                    console.out.clear();
                }
                buf.reserve(1024);
                match client.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
            Err(e) => {
                let e = ProxyError::Protocol(format!("invalid message on the admin console: {e}"));
                return crate::pg::login::send_fatal(&mut client, &e).await;
            }
        };
        match console.handle(frame.tag, &frame.body).await {
            Flow::Continue => {}
            Flow::Close => break,
            Flow::Fatal(e) => {
                let _ = client.write_all(&console.out).await;
                return crate::pg::login::send_fatal(&mut client, &e).await;
            }
        }
    }
    tracing::debug!(client = %holder.client, "admin console closed");
}

enum Flow {
    Continue,
    Close,
    Fatal(ProxyError),
}

struct Console {
    shared: Arc<Shared>,
    /// An `[admin] users` member: PAUSE, RESUME, RELOAD and KILL_CLIENT allowed (a
    /// `stats_users` member only reads).
    may_change: bool,
    out: BytesMut,
    /// An extended-protocol message was refused: discard until Sync.
    skipping: bool,
}

impl Console {
    async fn handle(&mut self, tag: u8, body: &[u8]) -> Flow {
        use tags::frontend as t;
        match tag {
            t::QUERY => match frontend::parse_query(body) {
                Ok(sql) => {
                    // The console's commands are ASCII; other bytes cannot name one.
                    self.query(&String::from_utf8_lossy(sql)).await;
                    backend::ready_for_query(&mut self.out, b'I');
                }
                Err(e) => return Flow::Fatal(ProxyError::Protocol(format!("invalid Query: {e}"))),
            },
            t::PARSE | t::BIND | t::DESCRIBE | t::EXECUTE | t::CLOSE => {
                if !self.skipping {
                    self.skipping = true;
                    self.refuse("extended query protocol not supported by the admin console; use simple queries (psql -c)");
                }
            }
            t::SYNC => {
                self.skipping = false;
                backend::ready_for_query(&mut self.out, b'I');
            }
            t::FUNCTION_CALL => {
                self.refuse("function calls are not supported by the admin console");
                backend::ready_for_query(&mut self.out, b'I');
            }
            // Flush, and COPY messages outside a COPY (PostgreSQL ignores those too).
            t::FLUSH | t::COPY_DATA | t::COPY_DONE | t::COPY_FAIL => {}
            t::TERMINATE => return Flow::Close,
            other => {
                return Flow::Fatal(ProxyError::Protocol(format!(
                    "unexpected message type {:?} on the admin console",
                    other as char
                )))
            }
        }
        Flow::Continue
    }

    fn refuse(&mut self, message: &str) {
        let e = ProxyError::FeatureNotSupported(message.to_owned());
        write_error(&mut self.out, "ERROR", &e);
    }

    /// Runs each statement in order; the first error ends the Query.
    async fn query(&mut self, sql: &str) {
        let statements = render::split_statements(sql);
        if statements.is_empty() {
            backend::empty_query_response(&mut self.out);
        }
        for statement in statements {
            let result = match render::parse(statement) {
                Ok(command) => self.run(command).await,
                Err(r) => {
                    let e = ErrorFields::error(r.sqlstate, &r.message);
                    backend::error_response(&mut self.out, &e);
                    Err(())
                }
            };
            if result.is_err() {
                return;
            }
        }
    }

    async fn run(&mut self, command: Command) -> Result<(), ()> {
        let changes_state = !matches!(command, Command::Show(_) | Command::Help);
        if changes_state && !self.may_change {
            // PgBouncer's words for a stats user asking for an admin command.
            let e = ErrorFields::error("42501", "admin access needed");
            backend::error_response(&mut self.out, &e);
            return Err(());
        }
        let shared = &self.shared;
        let done = match command {
            Command::Show(what) => {
                let table = render::render(what, &shared.snapshot(), &context::of(shared));
                write_table(&mut self.out, &table);
                backend::command_complete(&mut self.out, "SHOW");
                return Ok(());
            }
            Command::Help => {
                let notice = ErrorFields {
                    severity: "NOTICE",
                    ..ErrorFields::error("00000", "Console usage")
                };
                backend::notice_response(&mut self.out, &notice.with_detail(render::HELP));
                backend::command_complete(&mut self.out, "SHOW");
                return Ok(());
            }
            Command::Pause(db) => ("PAUSE", shared.pause(db.as_deref()).await),
            Command::Resume(db) => ("RESUME", shared.resume(db.as_deref())),
            Command::Reload => ("RELOAD", shared.reload()),
            Command::KillClient(id) => ("KILL_CLIENT", shared.kill_client(id)),
        };
        match done {
            (tag, Ok(summary)) => {
                tracing::info!(command = tag, summary = %summary, "admin console command");
                if !summary.is_empty() {
                    let notice = ErrorFields {
                        severity: "NOTICE",
                        ..ErrorFields::error("00000", &summary)
                    };
                    backend::notice_response(&mut self.out, &notice);
                }
                backend::command_complete(&mut self.out, tag);
                Ok(())
            }
            (tag, Err(e)) => {
                tracing::info!(command = tag, code = e.sqlstate(), error = %e, "admin console command refused");
                write_error(&mut self.out, "ERROR", &e);
                Err(())
            }
        }
    }
}

/// RowDescription with each column's PgBouncer type, then one DataRow per row (text format).
fn write_table(out: &mut BytesMut, table: &Table) {
    let mut body = BytesMut::new();
    body.put_i16(i16::try_from(table.columns.len()).unwrap_or(i16::MAX));
    for c in &table.columns {
        body.put_slice(c.name.as_bytes());
        body.put_u8(0);
        body.put_u32(0); // table oid
        body.put_i16(0); // column attribute number
        body.put_u32(c.kind.oid());
        body.put_i16(c.kind.size());
        body.put_i32(-1); // type modifier
        body.put_i16(0); // text format
    }
    encode_frame(out, b'T', &body);
    for row in &table.rows {
        let values: Vec<Option<&str>> = row.iter().map(Option::as_deref).collect();
        backend::data_row(out, &values);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poolguard_admin::console::{Column, Kind};

    #[test]
    fn row_description_carries_types() {
        let table = Table {
            columns: vec![
                Column {
                    name: "database",
                    kind: Kind::Text,
                },
                Column {
                    name: "cl_active",
                    kind: Kind::Int4,
                },
            ],
            rows: vec![vec![Some("bank".into()), None]],
        };
        let mut out = BytesMut::new();
        write_table(&mut out, &table);
        let expected: &[u8] = b"T\0\0\0\x3d\0\x02database\0\0\0\0\0\0\0\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0cl_active\0\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0D\0\0\0\x12\0\x02\0\0\0\x04bank\xff\xff\xff\xff";
        assert_eq!(&out[..], expected);
    }

    #[test]
    fn console_databases_are_not_pools() {
        assert!(is_console_database("pgbouncer"));
        assert!(is_console_database("poolguard"));
        assert!(!is_console_database("PgBouncer"));
    }
}
