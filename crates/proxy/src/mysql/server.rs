//! Server connections to MySQL/MariaDB: connect, log in, and run poolguard's own commands.
//!
//! A [`ServerConn`] is what the pool holds. In the pool it is always between commands, outside
//! any transaction, with nothing unread: the session that returns it guarantees that, and
//! anything that cannot be brought back to that state is discarded instead. Its
//! [`SessionState`] is what poolguard knows the server session looks like, so the next client's
//! state can be synchronised onto it ([`super::sync`]).
//!
//! Login answers what the server asks for: mysql_native_password, caching_sha2_password (fast
//! path, and the full path: cleartext over TLS, RSA-OAEP without, see [`super::sha2`]), and
//! auth switches between them.
//!
//! TLS (`server_tls`, [`crate::tls::connect`]): when the greeting offers CLIENT_SSL and TLS is
//! wanted, poolguard sends the SSL request (the first 32 bytes of its handshake response, with
//! CLIENT_SSL), does the handshake, and sends the full response with the next sequence id over
//! TLS. A server without CLIENT_SSL gets plain TCP under `prefer` and a refusal under
//! `require` and `verify-*`.
//!
//! A [`MyConnector`] connects to its backend's write host ([`HostSet::write_host`]), read anew
//! for every connect, through that host's circuit breaker, exactly as the PostgreSQL connector
//! does; see [`ServerError::is_host_failure`] for what counts against a host.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use poolguard_mysql::auth::{self, CACHING_SHA2_PASSWORD, MYSQL_NATIVE_PASSWORD};
use poolguard_mysql::consts::*;
use poolguard_mysql::full_auth::{ClientStep, ServerPublicKey, Sha2Client};
use poolguard_mysql::handshake::{
    AuthMoreData, AuthSwitchRequest, HandshakeResponse41, HandshakeV10, SslRequest,
};
use poolguard_mysql::packet::{encode_packet, PacketCodec};
use poolguard_mysql::response::{ErrPacket, OkPacket};
use poolguard_mysql::resultset::decode_text_row;
use poolguard_mysql::stmt::StmtPrepareOk;
use poolguard_mysql::{Packet, Progress, ResponseTracker};
use poolguard_pool::{BreakerOpen, CloseReason, Connector};
use tokio::io::AsyncReadExt;

use crate::config::target::Target;
use crate::entry::ServerConnector;
use crate::hosts::{HostError, HostSet};
use crate::mysql::caps;
use crate::mysql::sha2;
use crate::mysql::stmts::ServerStatements;
use crate::mysql::sync::SessionState;
use crate::tls::connect::{ServerStream, ServerTls, TlsError};
use crate::tls::socket::{connect, ServerAddr, Socket};

/// Largest packet poolguard accepts from a server: the protocol's own maximum. Servers enforce
/// their `max_allowed_packet`; relayed frames are at most 16 MiB each regardless.
pub const SERVER_MAX_PACKET: usize = 1 << 30;

/// Why a server connection could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot reach MySQL at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("MySQL at {addr} did not answer within {timeout:?}")]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error("MySQL at {addr} refused: {} (error {})", .err.message, .err.code)]
    Refused { addr: String, err: ErrPacket },
    #[error("MySQL at {addr}: {problem}")]
    Protocol { addr: String, problem: String },
    /// TLS could not be set up: the server does not offer it where it is required, or the
    /// handshake or the certificate's verification failed.
    #[error("MySQL at {addr}: {source}")]
    Tls { addr: String, source: TlsError },
    #[error("server connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The host's circuit breaker is open: no connect was attempted.
    #[error("{0}")]
    Unavailable(BreakerOpen),
    /// A standby database without fallback found no replica to connect to.
    #[error("no read-only replica of backend {backend:?} is usable (standby_fallback = false)")]
    NoStandby { backend: String },
}

/// ER_CON_COUNT_ERROR is not here on purpose: a full server answered, and poolguard's budget is
/// what keeps it from filling up. These say the server as a whole is not serving.
const HOST_FAILURE_CODES: [u16; 3] = [
    ER_SERVER_SHUTDOWN,   // 1053
    ER_HOST_IS_BLOCKED,   // 1129: every user from this address is refused
    ER_CONNECTION_KILLED, // 1927 (MariaDB): the server is going away
];

/// 1129 "Host is blocked because of many connection errors".
const ER_HOST_IS_BLOCKED: u16 = 1129;

impl HostError for ServerError {
    fn unavailable(open: BreakerOpen) -> Self {
        ServerError::Unavailable(open)
    }

    fn no_standby(backend: &str) -> Self {
        ServerError::NoStandby {
            backend: backend.to_owned(),
        }
    }

    /// Whether this failure says the host is unusable for everyone (it counts against the
    /// host's breaker and marks it down in health checks): unreachable, no answer in time, the
    /// connection dropped, the server shutting down, or TLS failing. A refused login (wrong password,
    /// unknown database) or a protocol surprise is about one user or the configuration: the
    /// host answered, so it is not counted.
    fn is_host_failure(&self) -> bool {
        match self {
            ServerError::Connect { .. } | ServerError::ConnectTimeout { .. } => true,
            // Nobody gets through to a host whose TLS fails: count it like a connect failure.
            ServerError::Io(_) | ServerError::Tls { .. } => true,
            ServerError::Refused { err, .. } => HOST_FAILURE_CODES.contains(&err.code),
            ServerError::Protocol { .. }
            | ServerError::Unavailable(_)
            | ServerError::NoStandby { .. } => false,
        }
    }
}

/// What a server's greeting said, shared by the pool (and the front door's own greeting).
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: String,
    pub capabilities: u32,
    /// MariaDB's extended capabilities from the greeting (0 from MySQL).
    pub mariadb_capabilities: u32,
    pub mariadb: bool,
    pub charset: u8,
}

/// The outcome of one of poolguard's own commands.
#[derive(Debug, Default)]
pub struct Reply {
    pub status: Option<u16>,
    pub error: Option<ErrPacket>,
    pub prepare_ok: Option<StmtPrepareOk>,
    /// Text rows of a result set (COM_QUERY only).
    pub rows: Vec<Vec<Option<String>>>,
}

/// A logged-in connection to MySQL or MariaDB.
pub struct ServerConn {
    pub stream: ServerStream,
    /// Bytes read from the server and not yet consumed.
    pub buf: BytesMut,
    pub addr: ServerAddr,
    /// The address as configured (`host:port`), which side connections to the same server
    /// use: TLS verifies the name in it, not the resolved address.
    pub host: Arc<str>,
    /// The server's thread id (what KILL QUERY takes).
    pub thread_id: u32,
    /// Capabilities negotiated on this connection.
    pub caps: u32,
    pub mariadb: bool,
    /// Status flags of the last OK/EOF seen.
    pub status: u16,
    pub state: SessionState,
    /// Statements prepared on this connection, by query text.
    pub stmts: ServerStatements,
    /// Logged in with a default schema. Without one, a schema chosen later (`USE`) cannot be
    /// undone (no MySQL command clears it), so such a connection is not reused with one.
    pub with_schema: bool,
}

impl ServerConn {
    /// Whether the connection to the server is TLS (caching_sha2 then sends the password in
    /// clear).
    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    pub fn in_transaction(&self) -> bool {
        self.status & SERVER_STATUS_IN_TRANS != 0
    }

    /// The proof for a connection no client command has touched since it left the pool (or
    /// logged in): what its own buffer and last status show.
    pub fn untouched(&self) -> poolguard_pool::Clean {
        poolguard_pool::Clean {
            idle: self.buf.is_empty(),
            no_transaction: !self.in_transaction(),
            nothing_owed: true,
            in_step: true,
        }
    }

    /// Notes status flags from an OK/EOF this connection sent.
    pub fn note_status(&mut self, status: u16) {
        self.status = status;
        self.state.autocommit = status & SERVER_STATUS_AUTOCOMMIT != 0;
    }

    /// Reads one logical packet (poolguard's own exchanges only: the relay reads frames).
    pub async fn read_packet(&mut self, codec: &mut PacketCodec) -> Result<Packet, ServerError> {
        loop {
            match codec.decode(&mut self.buf) {
                Ok(Some(p)) => return Ok(p),
                Ok(None) => {}
                Err(e) => return Err(self.protocol(e.to_string())),
            }
            self.buf.reserve(8192);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(ServerError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Writes one logical packet.
    pub async fn write_packet(&mut self, seq: u8, payload: &[u8]) -> Result<(), ServerError> {
        let mut out = BytesMut::with_capacity(payload.len().saturating_add(4));
        encode_packet(&mut out, seq, payload);
        self.stream.write_all(&out).await?;
        Ok(())
    }

    fn protocol(&self, problem: impl Into<String>) -> ServerError {
        ServerError::Protocol {
            addr: self.addr.to_string(),
            problem: problem.into(),
        }
    }

    /// Runs one command of poolguard's own to completion and returns its outcome. An ERR from
    /// the server is a normal [`Reply`]; the connection is still usable.
    pub async fn exec(&mut self, payload: &[u8]) -> Result<Reply, ServerError> {
        self.write_packet(0, payload).await?;
        let Some(mut tracker) = ResponseTracker::for_command(payload, self.caps) else {
            return Err(self.protocol("empty command"));
        };
        if tracker.is_done() {
            return Ok(Reply::default());
        }
        let mut codec = PacketCodec::new(SERVER_MAX_PACKET);
        let mut reply = Reply::default();
        let mut columns = 0usize;
        loop {
            let p = self.read_packet(&mut codec).await?;
            let rows_before = tracker.rows();
            let progress = tracker
                .feed(&p.payload)
                .map_err(|e| self.protocol(e.to_string()))?;
            if tracker.rows() > rows_before {
                let row = decode_text_row(&p.payload, columns)
                    .map_err(|e| self.protocol(e.to_string()))?;
                reply.rows.push(
                    row.into_iter()
                        .map(|v| v.map(|b| String::from_utf8_lossy(b).into_owned()))
                        .collect(),
                );
            } else if reply.rows.is_empty() && columns == 0 {
                columns = column_count(&p.payload).unwrap_or(0);
            }
            match progress {
                Progress::More => {}
                Progress::LocalInfileRequested => {
                    // poolguard's own commands never load files: end the transfer at once.
                    self.write_packet(p.seq.wrapping_add(1), &[]).await?;
                }
                Progress::AuthContinue => {
                    return Err(self.protocol("unexpected authentication request"))
                }
                Progress::Done {
                    status_flags,
                    error,
                } => {
                    if let Some(s) = status_flags {
                        self.note_status(s);
                    }
                    reply.status = status_flags;
                    reply.prepare_ok = tracker.prepare_ok().copied();
                    if error.is_some() {
                        reply.error = ErrPacket::decode(&p.payload).ok();
                    }
                    return Ok(reply);
                }
            }
        }
    }

    /// Runs a text query; an ERR becomes `ServerError::Refused`.
    pub async fn query(&mut self, sql: &str) -> Result<Reply, ServerError> {
        let mut payload = Vec::with_capacity(sql.len().saturating_add(1));
        payload.push(COM_QUERY);
        payload.extend_from_slice(sql.as_bytes());
        let reply = self.exec(&payload).await?;
        match reply.error {
            Some(err) => Err(ServerError::Refused {
                addr: self.addr.to_string(),
                err,
            }),
            None => Ok(reply),
        }
    }

    /// Best-effort polite close: COM_QUIT written without waiting.
    fn quit_now(&mut self) {
        self.stream.send_now(&[1, 0, 0, 0, COM_QUIT]);
    }
}

/// The column count of a result set's first packet, if `payload` is one.
fn column_count(payload: &[u8]) -> Option<usize> {
    match payload.first()? {
        0x00 | 0xfb | 0xfe | 0xff => None,
        _ => poolguard_mysql::lenenc::read_lenenc_int(payload)
            .ok()
            .and_then(|(n, _)| usize::try_from(n).ok()),
    }
}

/// Opens logged-in connections to a backend's write host for one (database, user) pool.
pub struct MyConnector {
    /// The backend's hosts; connects go to the write host of the moment.
    pub hosts: Arc<HostSet>,
    pub user: String,
    /// Replaced by a reload that changes the user's password (next login uses it).
    password: arc_swap::ArcSwap<String>,
    pub database: String,
    pub connect_timeout: Duration,
    /// How connections log in for this pool's clients (CLIENT_FOUND_ROWS, extended types).
    pub leg: caps::Leg,
    pub max_prepared_statements: usize,
    /// What the last successful login's greeting said.
    info: Mutex<Option<Arc<ServerInfo>>>,
    /// The write host, or the replicas (hosts with `@@global.read_only = 1`).
    pub target: Target,
    /// The backend's `server_rsa_public_key_file` (caching_sha2 without TLS); `None`: ask the
    /// server for its key.
    pub server_rsa_key: Option<Arc<ServerPublicKey>>,
}

impl MyConnector {
    /// A connector for one fixed host with no breaker (one-off connections: `check`, polls).
    pub fn new(
        host: String,
        tls: ServerTls,
        user: String,
        password: String,
        database: String,
        connect_timeout: Duration,
    ) -> Self {
        Self::for_hosts(
            HostSet::fixed(host, tls),
            user,
            password,
            database,
            connect_timeout,
        )
    }

    /// The greeting of the most recent login, if any server was opened yet.
    pub fn info(&self) -> Option<Arc<ServerInfo>> {
        self.info.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Opens a connection where the database's `target` says (the write host, or a replica),
    /// through that host's breaker, reporting the outcome to it (the pools' connects; also
    /// budget checks).
    pub async fn open(&self) -> Result<ServerConn, ServerError> {
        self.hosts
            .connect_target(self.target, |addr| self.open_at(addr))
            .await
    }

    /// Health check of one host, outside the pools and the breaker: log in there and ask
    /// whether it takes writes (`SELECT @@global.read_only` is 0 on a writable server).
    pub async fn probe_writable(&self, addr: &str) -> Result<bool, ServerError> {
        let mut conn = self.open_at(addr.to_owned()).await?;
        let reply = conn.query("SELECT @@global.read_only").await;
        conn.quit_now();
        let reply = reply?;
        match reply
            .rows
            .first()
            .and_then(|r| r.first())
            .and_then(|v| v.as_deref())
        {
            Some("0") => Ok(true),
            Some("1") => Ok(false),
            other => Err(conn.protocol(format!("@@global.read_only returned {other:?}"))),
        }
    }

    /// Connects and logs in to `addr`, within `connect_timeout` for each of the two steps,
    /// outside the breaker. Side connections that must reach one particular server use it: a
    /// `KILL QUERY <thread>` belongs on the server running that thread, which after a failover
    /// is not the write host (thread ids are per server).
    pub async fn open_at(&self, addr: String) -> Result<ServerConn, ServerError> {
        let timeout = self.connect_timeout;
        let (socket, peer) = match tokio::time::timeout(timeout, connect(&addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(ServerError::Connect { addr, source }),
            Err(_) => return Err(ServerError::ConnectTimeout { addr, timeout }),
        };
        let conn = ServerConn {
            stream: match socket {
                Socket::Tcp(s) => ServerStream::Plain(s),
                Socket::Unix(s) => ServerStream::Unix(s),
            },
            buf: BytesMut::with_capacity(8192),
            addr: peer,
            host: Arc::from(addr.as_str()),
            thread_id: 0,
            caps: 0,
            mariadb: false,
            status: SERVER_STATUS_AUTOCOMMIT,
            state: SessionState::new(
                (!self.database.is_empty()).then(|| Arc::from(self.database.as_str())),
                u16::from(DEFAULT_COLLATION),
                true,
            ),
            stmts: ServerStatements::new(self.max_prepared_statements),
            with_schema: !self.database.is_empty(),
        };
        match tokio::time::timeout(timeout, self.login(conn)).await {
            Ok(Ok((conn, info))) => {
                *self.info.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(info));
                Ok(conn)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ServerError::ConnectTimeout { addr, timeout }),
        }
    }

    /// Greeting, TLS if wanted and offered, handshake response, authentication. Takes the
    /// connection and gives it back: TLS replaces its stream half-way.
    async fn login(&self, mut conn: ServerConn) -> Result<(ServerConn, ServerInfo), ServerError> {
        let mut codec = PacketCodec::new(1 << 20);
        let greeting = conn.read_packet(&mut codec).await?;
        if greeting.payload.first() == Some(&ERR_HEADER) {
            return Err(refused(&conn, &greeting.payload));
        }
        let hs = HandshakeV10::decode(&greeting.payload)
            .map_err(|e| conn.protocol(format!("bad greeting: {e}")))?;
        if hs.capabilities & caps::REQUIRED_FROM_SERVER != caps::REQUIRED_FROM_SERVER {
            return Err(conn.protocol(
                "server lacks the 4.1 protocol with pluggable authentication; poolguard needs MySQL 5.5+ or MariaDB",
            ));
        }
        conn.thread_id = hs.connection_id;
        conn.mariadb = hs.is_mariadb();
        conn.caps = self.leg.server_caps() & hs.capabilities | CLIENT_PROTOCOL_41;
        // MariaDB reads extended capabilities only from a client that clears CLIENT_MYSQL.
        let mariadb_capabilities = if conn.caps & CLIENT_MYSQL == 0 {
            self.leg.server_mariadb_caps(hs.mariadb_capabilities)
        } else {
            0
        };
        // This pool's clients were promised column definitions with extended type
        // information (by another server's greeting): a server without it would send them a
        // layout they misread. Refused, never downgraded.
        if self.leg.extended_types && mariadb_capabilities & MARIADB_CLIENT_EXTENDED_TYPE_INFO == 0
        {
            return Err(conn.protocol(
                "server lacks MariaDB's extended type information, which this pool's clients were offered (its backend's servers differ in version); connect them to a backend whose servers all have it",
            ));
        }
        conn.state.multi_statements = conn.caps & CLIENT_MULTI_STATEMENTS != 0;
        let mut seq = greeting.next_seq();
        let tls = self.hosts.tls();
        // No TLS over a Unix socket (see `tls::socket`).
        let dest = match conn.stream {
            ServerStream::Unix(_) => None,
            _ => tls.dest(&conn.host).map_err(|e| tls_error(&conn, e))?,
        };
        let mut capabilities = conn.caps;
        match dest {
            Some(dest) if hs.capabilities & CLIENT_SSL != 0 => {
                capabilities |= CLIENT_SSL;
                let mut request = BytesMut::new();
                SslRequest {
                    capabilities,
                    max_packet_size: SERVER_MAX_PACKET as u32,
                    charset: DEFAULT_COLLATION,
                    // The server takes its capabilities from this first packet: the same as
                    // the handshake response's that follows.
                    mariadb_capabilities,
                }
                .encode(&mut request);
                conn.write_packet(seq, &request).await?;
                seq = seq.wrapping_add(1);
                if !conn.buf.is_empty() {
                    // Bytes ahead of the handshake would be unauthenticated.
                    return Err(conn.protocol("server sent data before the TLS handshake"));
                }
                conn.stream = match conn.stream {
                    ServerStream::Plain(tcp) => match dest.handshake(tcp).await {
                        Ok(s) => s,
                        Err(e) => return Err(tls_error_at(&conn.host, e)),
                    },
                    tls => tls,
                };
            }
            Some(dest) if dest.required() => return Err(tls_error(&conn, dest.not_offered())),
            Some(_) => self.hosts.note_plain_fallback(&conn.host),
            None => {}
        }
        let plugin = hs.auth_plugin_name.as_str();
        let response = HandshakeResponse41 {
            capabilities,
            max_packet_size: SERVER_MAX_PACKET as u32,
            charset: DEFAULT_COLLATION,
            mariadb_capabilities,
            username: self.user.clone(),
            auth_response: auth_response(plugin, &self.password.load(), &hs.auth_plugin_data),
            database: Some(self.database.clone()),
            auth_plugin_name: Some(login_plugin(plugin).to_owned()),
            connect_attrs: vec![
                ("_client_name".into(), "poolguard".into()),
                ("program_name".into(), "poolguard".into()),
            ],
        };
        let mut payload = BytesMut::new();
        response.encode(&mut payload);
        conn.write_packet(seq, &payload).await?;
        let sha2 = (login_plugin(plugin) == CACHING_SHA2_PASSWORD)
            .then(|| sha2::client_for(self, &conn, &hs.auth_plugin_data));
        self.finish_auth(&mut conn, &mut codec, sha2).await?;
        let info = ServerInfo {
            version: hs.server_version,
            capabilities: hs.capabilities,
            mariadb_capabilities: hs.mariadb_capabilities,
            mariadb: conn.mariadb,
            charset: hs.charset,
        };
        Ok((conn, info))
    }

    /// Answers auth switches and caching_sha2's AuthMoreData (`sha2`: the state of the
    /// caching_sha2 scramble in flight, if that is the plugin) until the server says OK or ERR.
    async fn finish_auth(
        &self,
        conn: &mut ServerConn,
        codec: &mut PacketCodec,
        mut sha2: Option<Sha2Client>,
    ) -> Result<(), ServerError> {
        // Each round costs the server a packet; a handful is all any real exchange needs.
        for _ in 0..8 {
            let p = conn.read_packet(codec).await?;
            match p.payload.first().copied() {
                Some(OK_HEADER) => {
                    let ok = OkPacket::decode(&p.payload, conn.caps)
                        .map_err(|e| conn.protocol(e.to_string()))?;
                    conn.note_status(ok.status_flags);
                    return Ok(());
                }
                Some(ERR_HEADER) => return Err(refused(conn, &p.payload)),
                Some(EOF_HEADER) => {
                    let switch = AuthSwitchRequest::decode(&p.payload)
                        .map_err(|e| conn.protocol(e.to_string()))?;
                    let name = switch.plugin_name.as_str();
                    if name != MYSQL_NATIVE_PASSWORD && name != CACHING_SHA2_PASSWORD {
                        return Err(conn.protocol(format!(
                            "server asks for authentication plugin {name:?}; poolguard speaks mysql_native_password and caching_sha2_password"
                        )));
                    }
                    let r = auth_response(name, &self.password.load(), &switch.plugin_data);
                    sha2 = (name == CACHING_SHA2_PASSWORD)
                        .then(|| sha2::client_for(self, conn, &switch.plugin_data));
                    conn.write_packet(p.next_seq(), &r).await?;
                }
                Some(AUTH_MORE_DATA_HEADER) => {
                    let more = AuthMoreData::decode(&p.payload)
                        .map_err(|e| conn.protocol(e.to_string()))?;
                    let Some(state) = sha2.as_mut() else {
                        return Err(conn.protocol("unexpected authentication data"));
                    };
                    // An owned pointer: no arc-swap guard held across the write below.
                    let password = self.password.load_full();
                    match state.on_more_data(&more.data, password.as_bytes()) {
                        Ok(ClientStep::Send(answer)) => {
                            conn.write_packet(p.next_seq(), &answer).await?
                        }
                        Ok(ClientStep::AwaitResult) => {}
                        Err(e) => {
                            return Err(conn.protocol(format!(
                                "caching_sha2_password full authentication for user {:?}: {e}",
                                self.user
                            )))
                        }
                    }
                }
                _ => return Err(conn.protocol("unexpected packet during login")),
            }
        }
        Err(conn.protocol("authentication did not finish"))
    }
}

/// The plugin poolguard answers a greeting with: the server's if poolguard speaks it, else
/// native (the server then switches).
fn login_plugin(plugin: &str) -> &str {
    if plugin == CACHING_SHA2_PASSWORD {
        CACHING_SHA2_PASSWORD
    } else {
        MYSQL_NATIVE_PASSWORD
    }
}

fn auth_response(plugin: &str, password: &str, nonce: &[u8]) -> Vec<u8> {
    if login_plugin(plugin) == CACHING_SHA2_PASSWORD {
        auth::sha2_auth_response(password.as_bytes(), nonce)
    } else {
        auth::native_auth_response(password.as_bytes(), nonce)
    }
}

fn tls_error(conn: &ServerConn, source: TlsError) -> ServerError {
    tls_error_at(&conn.host, source)
}

fn tls_error_at(host: &str, source: TlsError) -> ServerError {
    ServerError::Tls {
        addr: host.to_owned(),
        source,
    }
}

fn refused(conn: &ServerConn, payload: &[u8]) -> ServerError {
    match ErrPacket::decode(payload) {
        Ok(err) => ServerError::Refused {
            addr: conn.addr.to_string(),
            err,
        },
        Err(e) => conn.protocol(format!("malformed ERR packet: {e}")),
    }
}

impl Connector for MyConnector {
    /// Boxed: the pool moves its connections around (idle list, hand-over to a waiter, lease)
    /// on every transaction; a pointer moves for less than the whole record.
    type Conn = Box<ServerConn>;
    type Error = ServerError;

    fn connect(
        &self,
    ) -> impl std::future::Future<Output = Result<Box<ServerConn>, ServerError>> + Send {
        let open = self.open();
        async move { open.await.map(Box::new) }
    }

    /// Refuses at once while no host the database may use lets a connect through (no side
    /// effects on the breakers).
    fn admit(&self) -> Result<(), ServerError> {
        self.hosts.admit_target(self.target)
    }

    fn close(&self, mut conn: Box<ServerConn>, reason: CloseReason) {
        tracing::debug!(server = %conn.addr, thread = conn.thread_id, ?reason, "closing server connection");
        conn.quit_now();
    }
    /// Nothing buffered and nothing arrived while idle: a terminated backend's FATAL, or the
    /// server's close, makes the socket readable, which tokio already knows (no system call
    /// unless it is).
    fn is_alive(&self, conn: &mut Box<ServerConn>) -> bool {
        let alive = conn.buf.is_empty() && conn.stream.idle_and_open();
        if !alive {
            tracing::info!(server = %conn.addr, "pooled server connection closed or written to by the server while idle; closing it");
        }
        alive
    }
}

/// `SELECT @@max_connections` on a fresh connection (the budget check).
pub async fn read_max_connections(connector: &MyConnector) -> Result<u64, ServerError> {
    let mut conn = connector.open().await?;
    let reply = conn.query("SELECT @@max_connections").await?;
    conn.quit_now();
    reply
        .rows
        .first()
        .and_then(|r| r.first())
        .and_then(|v| v.as_deref())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| conn.protocol("SELECT @@max_connections returned no number"))
}

impl ServerConnector for MyConnector {
    /// A connector for a backend's host set (the pools' connectors).
    fn for_hosts(
        hosts: Arc<HostSet>,
        user: String,
        password: String,
        database: String,
        connect_timeout: Duration,
    ) -> Self {
        MyConnector {
            hosts,
            user,
            password: arc_swap::ArcSwap::from_pointee(password),
            database,
            connect_timeout,
            leg: caps::Leg::default(),
            max_prepared_statements: 100,
            info: Mutex::new(None),
            target: Target::Primary,
            server_rsa_key: None,
        }
    }

    /// A reload changed the user's password: the next login uses the new one (connections
    /// already open stay; the server does not ask again).
    fn set_password(&self, password: &str) {
        if self.password.load().as_str() != password {
            self.password
                .store(std::sync::Arc::new(password.to_owned()));
        }
    }
}
