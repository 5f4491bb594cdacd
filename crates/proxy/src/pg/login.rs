//! The startup phase of a PostgreSQL client: encryption negotiation ([`super::negotiate`] when
//! the door offers TLS; 'N' otherwise), cancel requests, the startup packet, authentication against `[[users]]`, admission, and the greeting
//! (AuthenticationOk, ParameterStatus, BackendKeyData, ReadyForQuery).
//!
//! Every read here is bounded in size and time: an unauthenticated peer can hold at most one
//! small buffer for at most `[limits] client_login_timeout`, and only while it holds one of the
//! logins in progress the accept gate ([`crate::gate`]) allows. Failures are answered with an
//! ErrorResponse (FATAL, with its SQLSTATE) before the connection closes. Unknown users and
//! wrong passwords get the same exchange and the same answer (see [`authenticate`]).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use poolguard_pg::backend::{self, ErrorFields};
use poolguard_pg::framing::{decode_frame, Frame};
use poolguard_pg::scram::{ScramServer, ScramVerifier, MECHANISM, MECHANISM_PLUS};
use poolguard_pg::startup::{decode_startup, StartupRequest};
use poolguard_pg::{frontend, md5auth, tags};
use poolguard_pool::Holder;
use rand::Rng;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::stream::ClientStream;
use crate::tls::accept::ClientTls;

use crate::config::{ClientAuth, PoolMode, Protocol};
use crate::error::ProxyError;
use crate::gate::Admitted;
use crate::pg::params::{is_reported, ParamSet};
use crate::pg::session::{acquire_error, Session};
use crate::state::{ClientSlot, Shared};

/// Authentication messages are tiny; anything bigger is hostile.
const MAX_AUTH_MESSAGE: usize = 16 * 1024;

/// Serves one client connection from accept to close. Never panics on client input.
/// A plain `fn`: an `async fn` would keep its arguments in the task beside the futures it
/// hands them to (see [`crate::idle`]).
pub fn serve_client(
    client: TcpStream,
    admitted: Admitted,
    shared: Arc<Shared>,
    place: crate::workers::Place,
) -> impl std::future::Future<Output = ()> + Send {
    crate::idle::serve::<Session>(Box::pin(open_session(client, admitted, shared)), place)
}

/// Logs the client in: a session ready to run, or `None` when the client was refused, left, or
/// was an admin console client (served here).
async fn open_session(
    tcp: TcpStream,
    admitted: Admitted,
    shared: Arc<Shared>,
) -> Option<Box<Session>> {
    let _ = tcp.set_nodelay(true);
    let Admitted {
        peer,
        slot,
        login: permit,
    } = admitted;
    let mut buf = BytesMut::with_capacity(1024);
    let tls = shared
        .config()
        .postgres
        .as_ref()
        .map_or_else(ClientTls::disabled, |p| p.tls.clone());
    // The client stays reachable here whatever the login does to it (a TLS handshake swaps
    // the stream), so a refusal or a timeout can still be answered.
    let mut client = Some(ClientStream::Plain(tcp));
    let attempt = async {
        if !crate::pg::negotiate::negotiate(&mut client, &mut buf, &tls).await? {
            return Ok(None);
        }
        match client.as_mut() {
            Some(c) => login(c, &mut buf, peer, &shared, slot, &tls).await,
            None => Ok(None),
        }
    };
    // Boxed: the login's state (TLS handshake, SCRAM, startup parsing) is large and only lives
    // during login, while this task lives as long as the client.
    let attempt = crate::gate::timed_login(&shared, permit, Box::pin(attempt)).await;
    let mut client = client?;
    let mut ready = match attempt {
        Ok(Ok(Some(Login::Pool(r)))) => r,
        Ok(Ok(Some(Login::Console(admin)))) => {
            let leftover = buf.split();
            drop(buf);
            crate::pg::console::serve(client, leftover, shared, admin).await;
            return None;
        }
        Ok(Ok(None)) => return None,
        Ok(Err(e)) => {
            shared
                .observe
                .count_error("postgres", e.sqlstate().to_owned());
            tracing::info!(client = %peer, code = e.sqlstate(), error = %e, "client login refused");
            send_fatal(&mut client, &e).await;
            return None;
        }
        Err(timed_out) => {
            let e = ProxyError::Protocol(timed_out);
            shared
                .observe
                .count_error("postgres", e.sqlstate().to_owned());
            send_fatal(&mut client, &e).await;
            return None;
        }
    };
    // A copy of what the client already pipelined (usually nothing, then no allocation):
    // `buf.split()` would share, and so keep, the whole login buffer for the session.
    let leftover = BytesMut::from(&buf[..]);
    drop(buf);
    let pool = ready.entry.pool.name();
    let observe = &shared.observe;
    // `ready` (which holds the slot) was declared after `client`, so it drops first if
    // anything fails before the session takes both: unlisted before the socket closes.
    observe.clients.describe(
        &mut ready.slot,
        "postgres",
        &ready.holder,
        pool,
        client.fd(),
    );
    Some(Box::new(Session::new(client, leftover, shared, ready)))
}

/// Where a logged-in client goes: a pool, or the admin console (`pg::console`).
#[allow(clippy::large_enum_variant)] // returned once per login and unpacked at once
pub enum Login {
    Pool(LoggedIn),
    Console(crate::pg::console::Admin),
}

/// Everything a session needs besides the socket, once the client is logged in.
pub struct LoggedIn {
    pub entry: Arc<crate::state::PgPoolEntry>,
    pub holder: Holder,
    pub registration: crate::pg::cancel::Registration,
    pub slot: crate::state::ClientSlot,
    pub lease: Option<crate::pg::session::PgLease>,
    /// The client's tracked parameters: the server's, overridden by its startup packet.
    pub params: crate::pg::params::ParamSet,
}

/// Writes an ErrorResponse with severity FATAL; the caller closes the connection after.
pub async fn send_fatal(client: &mut ClientStream, e: &ProxyError) {
    let mut m = BytesMut::new();
    write_error(&mut m, "FATAL", e);
    let _ = client.write_all(&m).await;
    let _ = client.shutdown().await;
}

pub fn write_error(buf: &mut BytesMut, severity: &str, e: &ProxyError) {
    let message = e.to_string();
    let (detail, hint) = match e {
        ProxyError::Server(n) => (n.detail.as_deref(), n.hint.as_deref()),
        _ => (None, None),
    };
    backend::error_response(
        buf,
        &ErrorFields {
            severity,
            code: e.sqlstate(),
            message: &message,
            detail,
            hint,
        },
    );
}

async fn read_more(client: &mut ClientStream, buf: &mut BytesMut) -> Result<(), ProxyError> {
    buf.reserve(512);
    match client.read_buf(buf).await {
        Ok(0) => Err(ProxyError::client_io(
            std::io::ErrorKind::UnexpectedEof.into(),
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(ProxyError::client_io(e)),
    }
}

async fn read_auth_message(
    client: &mut ClientStream,
    buf: &mut BytesMut,
    max_len: usize,
) -> Result<Frame, ProxyError> {
    loop {
        // The length is checked at the header, before any of the body is waited for.
        match decode_frame(buf, max_len) {
            Ok(Some(f)) if f.tag == tags::frontend::PASSWORD => return Ok(f),
            Ok(Some(f)) => {
                return Err(ProxyError::Protocol(format!(
                    "expected a password message during authentication, got message type {:?}",
                    f.tag as char
                )))
            }
            Ok(None) => read_more(client, buf).await?,
            Err(e) => {
                return Err(ProxyError::Protocol(format!(
                    "invalid authentication message: {e}"
                )))
            }
        }
    }
}

/// A startup packet poolguard cannot take, answered as PostgreSQL answers it: a length out of
/// bounds only logged and the connection closed without a word (the peer may not be speaking
/// the protocol at all; node-postgres, ended before its socket connected, sends a Terminate
/// first), an unknown protocol version 0A000, no user 28000, any other layout fault 08P01.
fn startup_refused(
    e: poolguard_pg::DecodeError,
    peer: SocketAddr,
) -> Result<Option<Login>, ProxyError> {
    use poolguard_pg::DecodeError;
    let notice = |code: &str, message: String| {
        ProxyError::Server(backend::ErrorNotice {
            severity: "FATAL".into(),
            code: code.into(),
            message,
            detail: None,
            hint: None,
        })
    };
    match e {
        DecodeError::BadLength(_) | DecodeError::TooLong { .. } => {
            tracing::info!(client = %peer, error = %e, "invalid length of startup packet: closed without an answer, as PostgreSQL does");
            Ok(None)
        }
        DecodeError::UnsupportedProtocol(v) => Err(notice(
            "0A000",
            format!(
                "unsupported frontend protocol {}.{}: server supports 3.0 to 3.0",
                v >> 16,
                v & 0xffff
            ),
        )),
        DecodeError::MissingUser => Err(notice(
            "28000",
            "no PostgreSQL user name specified in startup packet".into(),
        )),
        e => Err(ProxyError::Protocol(format!("invalid startup packet: {e}"))),
    }
}

/// Runs the startup phase. `Ok(None)` means the connection was fully handled (a cancel request,
/// or a client that left).
async fn login(
    client: &mut ClientStream,
    buf: &mut BytesMut,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    mut slot: ClientSlot,
    tls: &ClientTls,
) -> Result<Option<Login>, ProxyError> {
    let params = loop {
        match decode_startup(buf) {
            Ok(Some(StartupRequest::Ssl)) | Ok(Some(StartupRequest::GssEnc)) => {
                client
                    .write_all(b"N")
                    .await
                    .map_err(ProxyError::client_io)?;
            }
            Ok(Some(StartupRequest::Cancel { pid, secret })) => {
                // In a task of its own: the login timeout around this function must not drop
                // the cancel half-way, after the request reached the server and before the
                // postmaster acted on it, releasing the target's hold early (`crate::stop`).
                // Awaited all the same, so the client's connection closes when it is done,
                // as the postmaster's would. The cancel bounds itself (`send_cancel`).
                let cancels = shared.cancels.clone();
                let _ = tokio::spawn(async move { cancels.cancel(pid, secret).await }).await;
                return Ok(None);
            }
            Ok(Some(StartupRequest::Startup { .. })) if tls.required() && !client.is_tls() => {
                return Err(ProxyError::TlsRequired(
                    "poolguard accepts only TLS connections on this port (client_tls = \"require\"): connect with sslmode=require or stronger".into(),
                ));
            }
            Ok(Some(StartupRequest::Startup { params, .. })) => break params,
            Ok(None) => {
                if let Err(ProxyError::Io { .. }) = read_more(client, buf).await {
                    return Ok(None); // port probes and health checks that just connect
                }
            }
            Err(e) => return startup_refused(e, peer),
        }
    };
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let user = param("user").unwrap_or_default();
    let database = param("database").unwrap_or_else(|| user.clone());
    let application = param("application_name").unwrap_or_default();
    let span_fields = (peer, user.clone(), database.clone());
    tracing::debug!(client = %span_fields.0, user = %span_fields.1, database = %span_fields.2, "startup");

    // Before authentication: a connection storm must not cost a password hash each.
    shared.admit_connection(crate::admission::Who {
        client: &peer.to_string(),
        user: &user,
        database: &database,
    })?;
    let proven = authenticate(client, buf, shared, &user, &database).await?;
    // The console's names are never looked up as pooled databases.
    if crate::pg::console::is_console_database(&database) {
        let admin =
            crate::pg::console::admit(client, shared, slot, peer, &user, &database, &application);
        return Ok(admin.await?.map(Login::Console));
    }

    let db = shared
        .config()
        .database(Protocol::Postgres, &database)
        .ok_or_else(|| ProxyError::UnknownDatabase(database.clone()))?
        .into_owned();
    let entry = shared.pg_pool(&db, &user);
    // What the pool's server logins may use from here on (passthrough, looked-up secret).
    let credential = entry.pool.connector().credential();
    if let Some(secret) = &proven.looked_up {
        credential.set(secret);
    }
    if let Some((verifier, client_key)) = &proven.scram {
        credential.learn(verifier, *client_key);
    }
    shared.admit_to_pool(&mut slot, &entry)?;
    let holder = entry.holder(peer, &user, &database, &application);

    // Session mode takes its server now, so refusals arrive at connect time. Transaction mode
    // only needs the server's parameters to greet the client: open one if none was seen yet.
    let lease = match db.pool_mode {
        PoolMode::Session => Some(
            entry
                .pool
                .acquire(holder.clone())
                .await
                .map_err(acquire_error)?,
        ),
        PoolMode::Transaction => {
            if entry.pool.connector().params().is_none() {
                let lease = entry
                    .pool
                    .acquire(holder.clone())
                    .await
                    .map_err(acquire_error)?;
                // Only logged in to read its parameters: nothing was sent on it.
                let proof = lease.untouched();
                lease.release(proof);
            }
            None
        }
    };
    let server_params = match &lease {
        Some(l) => Some(l.params.clone()),
        None => entry.pool.connector().params(),
    }
    .unwrap_or_default();

    let registration = shared.cancels.register_as(lease.as_ref().map(|l| l.key.0));
    let mut client_params = ParamSet::default();
    for (k, v) in server_params.iter() {
        if is_reported(k) {
            client_params.set_shared(k, v);
        }
    }
    // The client's own choices win: they are what its session must have on every server.
    // Besides the reported parameters, any setting in the startup packet (directly or in
    // `options`, as `-c name=value`) follows the client to every server it uses, as it would
    // have held for its whole session on a server of its own.
    let options = params
        .iter()
        .filter(|(k, _)| k == "options")
        .flat_map(|(_, v)| crate::pg::params::options_settings(v));
    for (k, v) in params.iter().cloned().chain(options) {
        let setting =
            !NOT_SETTINGS.iter().any(|n| k.eq_ignore_ascii_case(n)) && !k.starts_with("_pq_"); // protocol extensions, not settings
        if k.eq_ignore_ascii_case("client_encoding") {
            // Reported back as the server names it ('utf-8' -> UTF8), as a server would.
            let v = crate::pg::params::canonical_encoding(&v).unwrap_or(&v);
            client_params.set(&k, v);
        } else if is_reported(&k) {
            client_params.set(&k, &v);
        } else if setting {
            client_params.set(&k, &crate::pg::params::startup_value(&v));
        }
    }
    client_params.set("application_name", &application);
    let mut out = BytesMut::with_capacity(512);
    backend::authentication_ok(&mut out);
    for (k, v) in server_params.iter() {
        let v = client_params.get(k).unwrap_or(v);
        backend::parameter_status(&mut out, k, v);
    }
    backend::backend_key_data(&mut out, registration.pid, registration.secret);
    backend::ready_for_query(&mut out, b'I');
    client
        .write_all(&out)
        .await
        .map_err(ProxyError::client_io)?;
    tracing::info!(client = %peer, user = %user, database = %database, application = %application, "client logged in");

    Ok(Some(Login::Pool(LoggedIn {
        entry,
        holder,
        registration,
        slot,
        lease,
        params: client_params,
    })))
}

/// Startup-packet keys that are not server settings (or that poolguard handles itself).
const NOT_SETTINGS: &[&str] = &[
    "user",
    "database",
    "options",
    "replication",
    "application_name",
];

/// Where a user's secret comes from.
enum Known {
    /// A `[[users]]` entry (its SCRAM verifier is precomputed in [`Shared`]).
    Configured(String),
    /// The database's `auth_query` found it.
    LookedUp(crate::pg::authquery::Found),
    /// No entry, no lookup, or the lookup found no user or no password.
    Unknown,
}

/// What a successful authentication leaves for the pool's server logins.
#[derive(Default)]
pub struct Proven {
    /// The secret `auth_query` found (the pool logs in with it, or by passthrough).
    pub looked_up: Option<String>,
    /// The verifier the client proved its password against, and its ClientKey (SCRAM
    /// passthrough; see [`crate::pg::credential`]).
    pub scram: Option<(ScramVerifier, [u8; 32])>,
}

/// `user`'s secret: its `[[users]]` entry, else the lookup of the database it asks for (never
/// for the admin console's names), run in that database or in its `auth_dbname`.
async fn find_secret(shared: &Shared, user: &str, database: &str) -> Result<Known, ProxyError> {
    let (lookup_db, auth) = {
        let config = shared.config();
        if let Some(u) = config.user(user) {
            return Ok(Known::Configured(u.password.clone()));
        }
        if crate::pg::console::is_console_database(database) {
            return Ok(Known::Unknown);
        }
        let Some(db) = config.database(Protocol::Postgres, database) else {
            return Ok(Known::Unknown);
        };
        let Some(auth) = db.auth.clone() else {
            return Ok(Known::Unknown);
        };
        let lookup_db = match &auth.database {
            Some(name) => config.database(Protocol::Postgres, name),
            None => Some(db),
        };
        match lookup_db {
            Some(d) => (d.into_owned(), auth),
            None => return Ok(Known::Unknown),
        }
    };
    let found = shared
        .auth_cache
        .lookup(shared, &lookup_db, &auth, user)
        .await?;
    Ok(found.map_or(Known::Unknown, Known::LookedUp))
}

/// Authenticates `user` with the configured method. An unknown user goes through the same
/// exchange as a known one and gets the same answer as a wrong password (28P01, the same
/// message): SCRAM against a stand-in verifier whose salt is stable per user name
/// ([`Shared::stand_in_verifier`]), md5 against a random password. A user whose secret is a
/// SCRAM verifier is asked for SCRAM even on an md5 door (as PostgreSQL does: md5 cannot be
/// checked against a verifier); one whose secret is an md5 hash cannot pass SCRAM.
async fn authenticate(
    client: &mut ClientStream,
    buf: &mut BytesMut,
    shared: &Shared,
    user: &str,
    database: &str,
) -> Result<Proven, ProxyError> {
    let known = find_secret(shared, user, database).await?;
    let (method, max_message_size) = shared
        .config()
        .postgres
        .as_ref()
        .map_or((ClientAuth::ScramSha256, MAX_AUTH_MESSAGE), |p| {
            (p.auth, p.max_message_size)
        });
    let max_len = MAX_AUTH_MESSAGE.min(max_message_size);
    let stored_scram = |s: &str| s.starts_with("SCRAM-SHA-256$");
    let scram = match &known {
        Known::Configured(p) => method == ClientAuth::ScramSha256 || stored_scram(p),
        Known::LookedUp(f) => method == ClientAuth::ScramSha256 || stored_scram(&f.secret),
        Known::Unknown => method == ClientAuth::ScramSha256,
    };
    let mut proven = Proven::default();
    let mut out = BytesMut::new();
    if scram {
        let verifier = match &known {
            // An md5 hash cannot check a SCRAM proof (PostgreSQL refuses the same way); the
            // client gets the stand-in's refusal, the log says why.
            Known::Configured(p) if md5auth::is_stored_md5(p) => None,
            Known::Configured(_) => shared.verifier(user),
            Known::LookedUp(f) => f.verifier.clone(),
            Known::Unknown => None,
        };
        let real = verifier.is_some();
        if !real && !matches!(known, Known::Unknown) {
            tracing::warn!(user, "the stored password cannot check SCRAM (an md5 hash logs in only with auth_method = \"md5\"; a verifier that does not parse, never)");
        }
        let verifier = verifier.unwrap_or_else(|| shared.stand_in_verifier(user));
        let (client_key, server_final) =
            scram_exchange(client, buf, user, verifier.clone(), max_len).await?;
        if real {
            proven.scram = Some((verifier, client_key));
        }
        backend::authentication_sasl_final(&mut out, &server_final);
    } else {
        let salt: [u8; 4] = rand::thread_rng().gen();
        backend::authentication_md5(&mut out, salt);
        client
            .write_all(&out)
            .await
            .map_err(ProxyError::client_io)?;
        out.clear();
        let msg = read_auth_message(client, buf, max_len).await?;
        let response = frontend::parse_password(&msg.body)
            .map_err(|e| ProxyError::Protocol(format!("invalid password message: {e}")))?;
        // An unknown user's answer is checked too, against a password no one has, so
        // both paths do the same work before the same refusal.
        let secret = match &known {
            Known::Configured(p) => p.clone(),
            Known::LookedUp(f) => f.secret.clone(),
            Known::Unknown => random_secret(),
        };
        if !md5auth::md5_verify(user, &secret, salt, response) {
            return Err(ProxyError::AuthFailed(user.to_owned()));
        }
    }
    match known {
        // A verifier-less secret (md5 hash) met SCRAM: the stand-in refused above already;
        // this keeps the rule in one place.
        Known::LookedUp(f) if scram && f.verifier.is_none() => {
            return Err(ProxyError::AuthFailed(user.to_owned()))
        }
        Known::LookedUp(f) => proven.looked_up = Some(f.secret),
        Known::Configured(_) if scram && proven.scram.is_none() => {
            return Err(ProxyError::AuthFailed(user.to_owned()))
        }
        Known::Configured(_) => {}
        Known::Unknown => return Err(ProxyError::AuthFailed(user.to_owned())),
    }
    // AuthenticationOk follows with the greeting; SASLFinal (if any) goes first.
    if !out.is_empty() {
        client
            .write_all(&out)
            .await
            .map_err(ProxyError::client_io)?;
    }
    Ok(proven)
}

/// One SCRAM-SHA-256 exchange against `verifier`: the client's ClientKey and the server-final
/// to send once the caller accepts the login. A wrong proof is 28P01.
async fn scram_exchange(
    client: &mut ClientStream,
    buf: &mut BytesMut,
    user: &str,
    verifier: ScramVerifier,
    max_len: usize,
) -> Result<([u8; 32], Vec<u8>), ProxyError> {
    let mut out = BytesMut::new();
    // On TLS, PLUS first (libpq takes the first it supports): binding the exchange to
    // poolguard's certificate defeats a man in the middle holding another one.
    let binding = client.channel_binding().map(<[u8]>::to_vec);
    let offer: &[&str] = match binding {
        Some(_) => &[MECHANISM_PLUS, MECHANISM],
        None => &[MECHANISM],
    };
    backend::authentication_sasl(&mut out, offer);
    client
        .write_all(&out)
        .await
        .map_err(ProxyError::client_io)?;
    let first = read_auth_message(client, buf, max_len).await?;
    let (mechanism, data) = frontend::parse_sasl_initial_response(&first.body)
        .map_err(|e| ProxyError::Protocol(format!("invalid SASL initial response: {e}")))?;
    if !offer.contains(&mechanism) {
        return Err(ProxyError::Protocol(format!(
            "client chose SASL mechanism {mechanism:?}; poolguard offers {}",
            offer.join(", ")
        )));
    }
    let mut scram = ScramServer::new(verifier);
    if let Some(data) = binding {
        scram = scram.with_channel_binding(data, mechanism == MECHANISM_PLUS);
    }
    let server_first = scram
        .handle_client_first(data.unwrap_or_default())
        .map_err(|e| ProxyError::Protocol(format!("SCRAM: {e}")))?;
    out.clear();
    backend::authentication_sasl_continue(&mut out, &server_first);
    client
        .write_all(&out)
        .await
        .map_err(ProxyError::client_io)?;
    let fin = read_auth_message(client, buf, max_len).await?;
    let server_final = scram.handle_client_final(&fin.body).map_err(|e| match e {
        // A wrong proof says only "authentication failed", as the server does; a broken
        // exchange (channel binding data that does not match this connection's, a foreign
        // nonce) is a protocol violation (08P01).
        poolguard_pg::scram::ScramError::WrongPassword => ProxyError::AuthFailed(user.to_owned()),
        other => ProxyError::Protocol(format!("SCRAM: {other}")),
    })?;
    let client_key = scram
        .client_key()
        .ok_or_else(|| ProxyError::Internal("SCRAM exchange done without a ClientKey".into()))?;
    Ok((client_key, server_final))
}

fn random_secret() -> String {
    let n: u128 = rand::thread_rng().gen();
    format!("{n:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connected client costs one task holding this future: keep an eye on its size.
    #[tokio::test]
    async fn client_task_size() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let shared = Shared::new(crate::config::Config::builtin_default("x"));
        let admitted = crate::gate::admit(&shared, &client, addr, crate::gate::Door::Postgres)
            .expect("admitted");
        let fut = serve_client(client, admitted, shared, crate::workers::Place::detached());
        println!("serve_client future: {} bytes", std::mem::size_of_val(&fut));
        println!("Session: {} bytes", std::mem::size_of::<Session>());
    }
}
