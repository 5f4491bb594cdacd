//! The connection phase of a MySQL client: admission, poolguard's greeting, the handshake
//! response, authentication (with an auth switch when the client picked another plugin), the
//! choice of pool, and the OK that starts the command phase.
//!
//! Every read here is bounded in size ([`MAX_HANDSHAKE_PACKET`]) and time (`[limits]
//! client_login_timeout`): an unauthenticated peer holds at most one small buffer for a few
//! seconds, and only while it holds one of the logins in progress the accept gate
//! ([`crate::gate`]) allows. Refusals are ERR
//! packets with the sequence id the client expects (before the greeting: the ERR replaces it,
//! as servers do for "Too many connections"); malformed handshakes get 1043.
//!
//! TLS (`[mysql] client_tls`): the greeting announces CLIENT_SSL; a client answering with an
//! SSLRequest gets the handshake and sends its HandshakeResponse (sequence 2) over TLS. Under
//! `require`, a HandshakeResponse in plaintext is refused with 3159
//! (ER_SECURE_TRANSPORT_REQUIRED, what a server with require_secure_transport sends), before
//! its password is looked at.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use poolguard_mysql::auth::{generate_nonce, MYSQL_NATIVE_PASSWORD};
use poolguard_mysql::consts::*;
use poolguard_mysql::handshake::{
    decode_client_handshake, AuthMoreData, AuthSwitchRequest, ClientHandshake, HandshakeResponse41,
    HandshakeV10,
};
use poolguard_mysql::packet::{encode_with, PacketCodec};
use poolguard_mysql::response::OkPacket;
use poolguard_mysql::Packet;
use poolguard_pool::Holder;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::{MysqlAuth, PoolMode, Protocol};
use crate::error::ProxyError;
use crate::gate::Admitted;
use crate::mysql::auth;
use crate::mysql::caps;
use crate::mysql::kill::Registration;
use crate::mysql::pools::{acquire_error, DbSlot, MyLease, MyPoolEntry};
use crate::mysql::server::ServerInfo;
use crate::mysql::session::Session;
use crate::mysql::sha2;
use crate::mysql::sync::SessionState;
use crate::mysql::wire::{err_before_greeting, send_fatal};
use crate::state::Shared;
use crate::stream::ClientStream;
use crate::tls::accept::ClientTls;

/// Handshake packets are small; anything bigger is hostile.
pub const MAX_HANDSHAKE_PACKET: usize = 64 * 1024;

/// Everything a session needs besides the socket, once the client is logged in.
pub struct LoggedIn {
    pub entry: Arc<MyPoolEntry>,
    pub holder: Holder,
    pub caps: u32,
    pub db_slot: DbSlot,
    pub lease: Option<MyLease>,
    pub registration: Registration,
    pub state: SessionState,
    pub mariadb: bool,
}

/// The client socket and its unread bytes during the connection phase. The slot is empty only
/// after a failed TLS handshake, which ends the login.
pub struct ClientIo<'a> {
    pub stream: &'a mut Option<ClientStream>,
    pub buf: &'a mut BytesMut,
    pub codec: PacketCodec,
}

impl ClientIo<'_> {
    /// Reads one logical packet; `Ok(None)` if the client closed the connection.
    pub async fn read(&mut self) -> Result<Option<Packet>, ProxyError> {
        loop {
            match self.codec.decode(self.buf) {
                Ok(Some(p)) => return Ok(Some(p)),
                Ok(None) => {}
                Err(e) if e.is_too_large() => {
                    return Err(ProxyError::PacketTooLarge(format!(
                        "poolguard: handshake packet too large ({e})"
                    )))
                }
                Err(e) => return Err(ProxyError::Handshake(format!("bad handshake: {e}"))),
            }
            self.buf.reserve(1024);
            let Some(stream) = self.stream.as_mut() else {
                return Ok(None);
            };
            match stream.read_buf(self.buf).await {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) => return Err(ProxyError::client_io(e)),
            }
        }
    }

    /// Reads one packet and not a byte past it (when nothing is buffered yet): after an
    /// SSLRequest the client starts its TLS handshake without waiting for an answer, and those
    /// bytes must stay in the socket for the TLS layer.
    pub async fn read_exactly_one(&mut self) -> Result<Option<Packet>, ProxyError> {
        if !self.buf.is_empty() {
            return self.read().await;
        }
        let Some(stream) = self.stream.as_mut() else {
            return Ok(None);
        };
        let mut header = [0u8; 4];
        match stream.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(ProxyError::client_io(e)),
        }
        let [l0, l1, l2, _seq] = header;
        let len = usize::from(l0) | usize::from(l1) << 8 | usize::from(l2) << 16;
        if len > MAX_HANDSHAKE_PACKET {
            return Err(ProxyError::PacketTooLarge(format!(
                "poolguard: handshake packet too large ({len} bytes)"
            )));
        }
        self.buf.extend_from_slice(&header);
        let body_start = self.buf.len();
        self.buf.resize(body_start.saturating_add(len), 0);
        let body = self.buf.get_mut(body_start..).unwrap_or_default();
        match stream.read_exact(body).await {
            Ok(_) => self.read().await,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(ProxyError::client_io(e)),
        }
    }

    pub async fn write(
        &mut self,
        seq: u8,
        f: impl FnOnce(&mut BytesMut),
    ) -> Result<(), ProxyError> {
        let mut out = BytesMut::new();
        encode_with(&mut out, seq, f);
        self.client()?
            .write_all(&out)
            .await
            .map_err(ProxyError::client_io)
    }

    /// Whether the client is on TLS (caching_sha2 may then take its password in clear).
    pub fn is_tls(&self) -> bool {
        self.stream.as_ref().is_some_and(ClientStream::is_tls)
    }

    fn client(&mut self) -> Result<&mut ClientStream, ProxyError> {
        self.stream
            .as_mut()
            .ok_or_else(|| ProxyError::client_io(std::io::ErrorKind::NotConnected.into()))
    }
}

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

/// Greets and logs the client in: a session ready to run, or `None` when the client was
/// refused or left.
async fn open_session(
    tcp: TcpStream,
    admitted: Admitted,
    shared: Arc<Shared>,
) -> Option<Box<Session>> {
    let _ = tcp.set_nodelay(true);
    let peer = admitted.peer;
    let mut client = ClientStream::Plain(tcp);
    let info = match shared.mysql.server_info(&shared).await {
        Ok(i) => i,
        Err(e) => {
            refuse_before_greeting(&mut client, peer, &e).await;
            return None;
        }
    };
    let mut buf = BytesMut::with_capacity(1024);
    let mut seq = 0u8;
    // Reachable here whatever the login does to it (TLS swaps the stream), for the refusal.
    let mut client = Some(client);
    let attempt = login(&mut client, &mut buf, peer, &shared, &info, &mut seq);
    let attempt = crate::gate::timed_login(&shared, admitted.login, attempt).await;
    let mut client = client?;
    let ready = match attempt {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => return None,
        Ok(Err(e)) => {
            let code = e.mysql_code(info.mariadb).to_string();
            shared.observe.count_error("mysql", code);
            tracing::info!(client = %peer, code = e.mysql_code(info.mariadb), error = %e, "MySQL client login refused");
            send_fatal(&mut client, seq, &e, info.mariadb).await;
            return None;
        }
        Err(timed_out) => {
            let e = ProxyError::Handshake(timed_out);
            let code = e.mysql_code(info.mariadb).to_string();
            shared.observe.count_error("mysql", code);
            send_fatal(&mut client, seq, &e, info.mariadb).await;
            return None;
        }
    };
    // Declared after `client`, so it drops first if anything fails before the session takes
    // both: the client is unlisted before its socket closes.
    let mut slot = admitted.slot;
    let pool = ready.entry.name();
    shared
        .observe
        .clients
        .describe(&mut slot, "mysql", &ready.holder, pool, client.fd());
    // A copy of what the client already sent (usually nothing, then no allocation), so the
    // login buffer is not kept for the session.
    let leftover = BytesMut::from(&buf[..]);
    drop(buf);
    Some(Box::new(Session::new(
        client, leftover, shared, ready, slot,
    )))
}

async fn refuse_before_greeting(client: &mut ClientStream, peer: SocketAddr, e: &ProxyError) {
    tracing::warn!(client = %peer, code = e.mysql_code(true), error = %e, "MySQL client refused before greeting");
    let mut out = BytesMut::new();
    err_before_greeting(&mut out, e, true);
    let _ = client.write_all(&out).await;
    let _ = client.shutdown().await;
}

/// Runs the connection phase. `Ok(None)`: the client left (port probes, health checks).
/// `seq` is kept at the sequence id the client expects next, for the ERR on failure.
async fn login(
    client: &mut Option<ClientStream>,
    buf: &mut BytesMut,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    info: &ServerInfo,
    seq: &mut u8,
) -> Result<Option<LoggedIn>, ProxyError> {
    let allow_infile = shared
        .config()
        .mysql
        .as_ref()
        .is_some_and(|f| f.allow_local_infile);
    let method = auth::method(&shared.config());
    let tls = shared
        .config()
        .mysql
        .as_ref()
        .map_or_else(ClientTls::disabled, |m| m.tls.clone());
    let mut offered = caps::offer(info.capabilities, allow_infile);
    if tls.offered() {
        offered |= CLIENT_SSL;
    }
    let conn_id = shared.mysql.kills.next_id();
    let nonce = generate_nonce();
    // MariaDB's extended capabilities travel only with CLIENT_MYSQL clear (a MariaDB server).
    let offered_mariadb = if offered & CLIENT_MYSQL == 0 {
        info.mariadb_capabilities & caps::MARIADB_OFFER
    } else {
        0
    };
    let greeting = HandshakeV10 {
        server_version: info.version.clone(),
        connection_id: conn_id,
        auth_plugin_data: nonce.to_vec(),
        capabilities: offered,
        mariadb_capabilities: offered_mariadb,
        charset: DEFAULT_COLLATION,
        status_flags: SERVER_STATUS_AUTOCOMMIT,
        auth_plugin_name: auth::plugin_name(method).to_owned(),
    };
    let mut io = ClientIo {
        stream: client,
        buf,
        codec: PacketCodec::new(MAX_HANDSHAKE_PACKET),
    };
    io.write(0, |b| greeting.encode(b)).await?;
    *seq = 1;
    let Some(response) = read_response(&mut io, seq, &tls).await? else {
        return Ok(None);
    };
    // A client asking for the compressed protocol, which poolguard does not offer, may switch
    // to compressed framing after the OK all the same (Connector/Python does) and then wait
    // forever for an answer it can read: refused now, while both still frame alike.
    if response.capabilities & CLIENT_COMPRESS != 0 && offered & CLIENT_COMPRESS == 0 {
        return Err(ProxyError::Handshake(
            "poolguard does not support the compressed protocol: connect without compression (compress=False, --skip-compress, useCompression=false)".into(),
        ));
    }
    // TLS is the connection's business, not the session's.
    let caps = caps::negotiated(response.capabilities, offered) & !CLIENT_SSL;
    // Before authentication: a connection storm must not cost a password check each.
    shared.admit_connection(crate::admission::Who {
        client: &peer.to_string(),
        user: &response.username,
        database: response.database.as_deref().unwrap_or_default(),
    })?;
    authenticate(&mut io, shared, method, &response, caps, &nonce, peer, seq).await?;
    let leg = caps::Leg::of(caps, response.mariadb_capabilities & offered_mariadb);
    let ready = admit(shared, &response, caps, leg, peer, conn_id, info.mariadb).await?;
    io.write(*seq, |b| {
        OkPacket::with_status(SERVER_STATUS_AUTOCOMMIT).encode(b, CLIENT_PROTOCOL_41)
    })
    .await?;
    let h = &ready.holder;
    tracing::info!(client = %peer, user = %h.user, database = %h.database, application = %h.application, conn_id, "MySQL client logged in");
    Ok(Some(ready))
}

/// Reads the handshake response; `None` if the client left without one.
/// Reads the handshake response, after a TLS handshake if the client asks for one; `None` if
/// the client left without one (or its TLS handshake failed: no one to answer then).
async fn read_response(
    io: &mut ClientIo<'_>,
    seq: &mut u8,
    tls: &ClientTls,
) -> Result<Option<HandshakeResponse41>, ProxyError> {
    let mut on_tls = false;
    loop {
        let packet = match on_tls || !tls.offered() {
            true => io.read().await?,
            false => io.read_exactly_one().await?,
        };
        let Some(packet) = packet else {
            return Ok(None);
        };
        *seq = packet.next_seq();
        match decode_client_handshake(&packet.payload) {
            Ok(ClientHandshake::Response(_)) if tls.required() && !on_tls => {
                return Err(ProxyError::TlsRequired(
                    "Connections using insecure transport are prohibited: poolguard accepts only TLS connections on this port (client_tls = \"require\"); connect with --ssl / ssl-mode=REQUIRED".into(),
                ))
            }
            Ok(ClientHandshake::Response(r)) => return Ok(Some(r)),
            Ok(ClientHandshake::SslRequest(_)) if tls.offered() && !on_tls => {
                if !io.buf.is_empty() {
                    return Err(ProxyError::Handshake(
                        "bad handshake: data after the SSL request, before the TLS handshake"
                            .into(),
                    ));
                }
                if let Err(e) = tls.upgrade(io.stream).await {
                    tracing::info!(error = %e, "MySQL client TLS handshake failed");
                    return Ok(None);
                }
                on_tls = true;
            }
            Ok(ClientHandshake::SslRequest(_)) => {
                return Err(ProxyError::Handshake(
                    "poolguard's MySQL front door does not offer TLS; connect without SSL (e.g. --ssl=0, ssl-mode=DISABLED)".into(),
                ))
            }
            Err(e) => return Err(ProxyError::Handshake(format!("bad handshake response: {e}"))),
        }
    }
}

/// Chooses the pool of an authenticated client and admits it (session mode: with its server).
async fn admit(
    shared: &Arc<Shared>,
    response: &HandshakeResponse41,
    caps: u32,
    leg: caps::Leg,
    peer: SocketAddr,
    conn_id: u32,
    mariadb: bool,
) -> Result<LoggedIn, ProxyError> {
    let user = response.username.clone();
    let (db, db_slot) = choose_database(shared, response.database.as_deref())?;
    let entry = shared.mysql.pool(shared, &db, &user, leg);
    let application = response
        .attr("program_name")
        .or_else(|| response.attr("_client_name"))
        .unwrap_or_default();
    let holder = entry.holder(peer, &user, &db.name, application);
    // Session mode takes its server now, so refusals arrive at connect time.
    let lease = match db.pool_mode {
        PoolMode::Session => Some(
            entry
                .pool
                .acquire(holder.clone())
                .await
                .map_err(acquire_error)?,
        ),
        PoolMode::Transaction => {
            // A pool that never reached its server (a database named for the first time,
            // through the fallback entry perhaps) proves the database exists before the client
            // is told it logged in, as the server itself would (1049 otherwise). The
            // connection stays in the pool.
            if entry.pool.status().connects_total == 0 {
                let lease = entry
                    .pool
                    .acquire(holder.clone())
                    .await
                    .map_err(acquire_error)?;
                let proof = lease.untouched();
                lease.release(proof);
            }
            None
        }
    };
    let state = SessionState::new(
        entry.login_schema(&db),
        u16::from(response.charset),
        caps & CLIENT_MULTI_STATEMENTS != 0,
    );
    let registration = shared.mysql.kills.register(conn_id, holder.user.clone());
    Ok(LoggedIn {
        entry,
        holder,
        caps,
        db_slot,
        lease,
        registration,
        state,
        mariadb,
    })
}

/// Authenticates the client, switching it to poolguard's plugin if it answered with another.
#[allow(clippy::too_many_arguments)]
async fn authenticate(
    io: &mut ClientIo<'_>,
    shared: &Shared,
    method: MysqlAuth,
    response: &HandshakeResponse41,
    caps: u32,
    nonce: &[u8],
    peer: SocketAddr,
    seq: &mut u8,
) -> Result<(), ProxyError> {
    let ours = auth::plugin_name(method);
    let theirs = response
        .auth_plugin_name
        .as_deref()
        .unwrap_or(MYSQL_NATIVE_PASSWORD);
    let (answer, nonce) = if theirs == ours {
        (response.auth_response.clone(), nonce.to_vec())
    } else if caps & CLIENT_PLUGIN_AUTH != 0 {
        let (answer, fresh) = switch_plugin(io, ours, seq).await?;
        (answer, fresh)
    } else {
        return Err(ProxyError::AuthRefused(format!(
            "poolguard asks for {ours}, and this client cannot switch authentication plugins"
        )));
    };
    let peer_ip = peer.ip().to_string();
    if method == MysqlAuth::CachingSha2 && wants_full_auth(shared, &response.username, &answer) {
        // The scramble is not checked: the password itself comes next (MySQL's cold cache).
        return sha2::full_auth(io, shared, &response.username, &peer_ip, &nonce, seq).await;
    }
    auth::verify(
        &shared.config(),
        method,
        &response.username,
        &peer_ip,
        &nonce,
        &answer,
    )?;
    if method == MysqlAuth::CachingSha2 {
        io.write(*seq, |b| AuthMoreData::fast_auth_success().encode(b))
            .await?;
        *seq = seq.wrapping_add(1);
    }
    Ok(())
}

/// Whether this caching_sha2 login takes the full path (`[mysql] caching_sha2_full_auth`).
fn wants_full_auth(shared: &Shared, user: &str, answer: &[u8]) -> bool {
    let config = shared.config();
    let policy = config
        .mysql
        .as_ref()
        .map_or(crate::config::FullAuth::WhenNeeded, |m| m.full_auth);
    let stored = config.user(user).map(|u| u.password.as_str());
    shared
        .mysql
        .sha2
        .wants_full_auth(policy, user, stored, answer)
}

/// Sends an AuthSwitchRequest with a fresh nonce and reads the client's answer.
pub async fn switch_plugin(
    io: &mut ClientIo<'_>,
    plugin: &str,
    seq: &mut u8,
) -> Result<(Vec<u8>, Vec<u8>), ProxyError> {
    let fresh = generate_nonce().to_vec();
    let switch = AuthSwitchRequest {
        plugin_name: plugin.to_owned(),
        plugin_data: fresh.clone(),
    };
    io.write(*seq, |b| switch.encode(b)).await?;
    *seq = seq.wrapping_add(1);
    let answer = io
        .read()
        .await?
        .ok_or_else(|| ProxyError::client_io(std::io::ErrorKind::UnexpectedEof.into()))?;
    *seq = answer.next_seq();
    Ok((answer.payload.to_vec(), fresh))
}

/// The `[[databases]]` entry a client asked for (or the only MySQL one if it named none).
pub fn choose_database(
    shared: &Shared,
    asked: Option<&str>,
) -> Result<(crate::config::Database, DbSlot), ProxyError> {
    let config = shared.config();
    let db = match asked.filter(|d| !d.is_empty()) {
        // `*` is the fallback's pool name, not a database a client can ask for.
        Some(name) if name == crate::config::FALLBACK_DATABASE => {
            return Err(ProxyError::UnknownDatabase(name.to_owned()))
        }
        Some(name) => config
            .database(Protocol::Mysql, name)
            .ok_or_else(|| ProxyError::UnknownDatabase(name.to_owned()))?,
        None => {
            let mut mysql = config
                .databases
                .iter()
                .filter(|d| d.protocol == Protocol::Mysql);
            match (mysql.next(), mysql.next()) {
                (Some(only), None) if only.name != crate::config::FALLBACK_DATABASE => {
                    std::borrow::Cow::Borrowed(only)
                }
                // With a fallback entry, as on the server: logged in without a default schema.
                _ => config.database(Protocol::Mysql, "").ok_or_else(|| {
                    ProxyError::UnknownDatabase(
                        "(none given: poolguard pools per database, name one when connecting)"
                            .into(),
                    )
                })?,
            }
        }
    };
    let slot = shared.mysql.admit(&db)?;
    Ok((db.into_owned(), slot))
}
