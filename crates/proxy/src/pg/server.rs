//! Server connections to PostgreSQL: connect, log in, and a few whole-exchange helpers.
//!
//! A [`ServerConn`] is what the pool holds. It is always at a message boundary and idle
//! (ReadyForQuery 'I') when it sits in the pool: the session that returns it guarantees that, and
//! anything that cannot be brought back to that state is discarded instead.
//! Login answers whatever the server asks: trust, cleartext, md5 or SCRAM-SHA-256.
//!
//! A [`PgConnector`] connects to its backend's write host ([`HostSet::write_host`]), read anew
//! for every connect, so a failover redirects the next connect. Each connect takes a pass from
//! that host's circuit breaker and reports whether the host failed ([`ServerError::is_host_failure`]:
//! network errors, timeouts, a server shutting down or starting up; not a refused login, which
//! only says something about one user). While the breaker is open, connects and acquires fail at
//! once with [`ServerError::Unavailable`] (57P03 to clients, with the retry hint).
//!
//! TLS (`server_tls`, [`crate::tls::connect`]): after the TCP connect and before the
//! StartupMessage, an SSLRequest; 'S' is followed by the handshake and everything after goes
//! over TLS, 'N' means plain under `prefer` and a refusal under `require` and `verify-*`.
//! Exactly one byte is read before the handshake, so nothing a man in the middle sends ahead
//! of it can be taken for the server's (CVE-2021-23222). A failed handshake or verification
//! counts against the host like a connect failure.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use poolguard_pg::backend::{self, Authentication, ErrorNotice};
use poolguard_pg::framing::{decode_frame, Frame, DEFAULT_MAX_MESSAGE_LEN};
use poolguard_pg::scram::ScramClient;
use poolguard_pg::{frontend, startup, tags};
use poolguard_pool::{BreakerOpen, CloseReason, Connector};

use crate::config::target::Target;
use crate::entry::ServerConnector;
use crate::hosts::{HostError, HostSet};
use crate::pg::cancel::ServerKey;
use crate::pg::credential::ServerCredential;
use crate::pg::params::{is_reported, ParamSet};
use crate::pg::prepared::{ServerStatements, UnnamedStatement};
use crate::tls::connect::{ServerStream, ServerTls, TlsDest, TlsError};
use crate::tls::socket::{connect, ServerAddr, Socket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a server connection could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot reach PostgreSQL at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("PostgreSQL at {addr} did not answer within {timeout:?}")]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error("PostgreSQL at {addr} refused the login: {} (SQLSTATE {})", .notice.message, .notice.code)]
    Refused { addr: String, notice: ErrorNotice },
    #[error("PostgreSQL at {addr}: {problem}")]
    Protocol { addr: String, problem: String },
    /// TLS could not be set up: the server declined it where it is required, or the
    /// handshake or the certificate's verification failed.
    #[error("PostgreSQL at {addr}: {source}")]
    Tls { addr: String, source: TlsError },
    #[error("server connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The host's circuit breaker is open: no connect was attempted.
    #[error("{0}")]
    Unavailable(BreakerOpen),
    /// A standby database without fallback found no standby to connect to.
    #[error("no standby of backend {backend:?} is usable (standby_fallback = false)")]
    NoStandby { backend: String },
}

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
    /// host's breaker and marks it down in health checks): it could not be reached, did not
    /// answer in time, dropped the connection, or refused with a connection-exception (08) or
    /// operator-intervention (57P: shutting down, starting up, in recovery) SQLSTATE, or TLS
    /// failed (declined where required, handshake, certificate). A refused
    /// login (bad password, unknown database, too many connections) or a protocol surprise
    /// is about this user or this configuration: the host answered, so it is not counted.
    fn is_host_failure(&self) -> bool {
        match self {
            ServerError::Connect { .. } | ServerError::ConnectTimeout { .. } => true,
            // Nobody gets through to a host whose TLS fails: count it like a connect failure.
            ServerError::Io(_) | ServerError::Tls { .. } => true,
            ServerError::Refused { notice, .. } => {
                notice.code.starts_with("57P") || notice.code.starts_with("08")
            }
            ServerError::Protocol { .. }
            | ServerError::Unavailable(_)
            | ServerError::NoStandby { .. } => false,
        }
    }
}

/// Parameters the server reported at login (server_version, TimeZone, ...), shared by the pool.
/// Shared texts: clients logged in from these copy references, not strings.
pub type ServerParams = Arc<Vec<(Arc<str>, Arc<str>)>>;

/// A logged-in connection to PostgreSQL.
pub struct ServerConn {
    pub stream: ServerStream,
    /// The TLS this connection was opened with, for the cancel requests sent to its server.
    pub tls: Option<TlsDest>,
    /// Bytes read from the server and not yet consumed.
    pub buf: BytesMut,
    pub addr: ServerAddr,
    /// The server's BackendKeyData, used to cancel its running query.
    pub key: (i32, i32),
    pub params: ServerParams,
    /// Statements poolguard has prepared on this connection.
    pub prepared: ServerStatements,
    /// The unnamed statement it holds, when known.
    pub unnamed: UnnamedStatement,
    /// The tracked parameters as this server currently has them.
    pub current: ParamSet,
    /// (session serial, parameter version) this server was last brought in line with: when
    /// the same session comes back with unchanged parameters, nothing needs comparing. The
    /// serial, unlike the client's process id, is never another session's.
    pub synced_for: Option<(u64, u64)>,
    /// The response queue's storage, kept here between leases (always empty: see
    /// [`crate::pg::pending::Pending::recycle`]).
    pub spare_pending: crate::pg::pending::Pending,
    /// [`ServerConn::cancel_key`], made once (after the login gave the key): a client holding
    /// this connection points its cancel target here, two reference counts per transaction
    /// instead of a copy of the address and TLS settings in every client's target.
    cancel: std::sync::OnceLock<Arc<ServerKey>>,
}

impl ServerConn {
    /// The proof for a connection nothing was sent on since it left the pool (where it went
    /// only proven clean) or logged in (ending at ReadyForQuery 'I'): no transaction can be
    /// open; its buffer shows whether the server said anything since.
    pub fn untouched(&self) -> poolguard_pool::Clean {
        poolguard_pool::Clean {
            idle: self.buf.is_empty(),
            no_transaction: true,
            nothing_owed: true,
            in_step: true,
        }
    }

    /// Reads one whole message from the server.
    pub async fn read_frame(&mut self) -> Result<Frame, ServerError> {
        loop {
            match decode_frame(&mut self.buf, DEFAULT_MAX_MESSAGE_LEN) {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => return Err(self.protocol(e.to_string())),
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(ServerError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Records a ParameterStatus the server sent.
    pub fn note_parameter_status(&mut self, body: &[u8]) {
        if let Ok((k, v)) = backend::parse_parameter_status(body) {
            if is_reported(k) {
                self.current.set(k, v);
            }
        }
    }

    /// After DISCARD ALL: nothing prepared, extras back to their defaults.
    pub fn forget_session_state(&mut self) {
        self.synced_for = None;
        self.prepared.clear();
        self.unnamed.forget();
        self.current.retain_reported();
    }

    fn protocol(&self, problem: impl Into<String>) -> ServerError {
        ServerError::Protocol {
            addr: self.addr.to_string(),
            problem: problem.into(),
        }
    }

    /// Runs one simple query to completion and returns its rows as text. An error from the
    /// server is returned as `Refused`; the connection is still usable afterwards (it reached
    /// ReadyForQuery) and the returned status byte says whether a transaction is left open.
    pub async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<(Vec<Vec<Option<String>>>, u8), ServerError> {
        let mut out = BytesMut::new();
        frontend::query(&mut out, sql);
        // A simple query destroys the server's unnamed statement.
        self.unnamed.forget();
        self.stream.write_all(&out).await?;
        let mut rows = Vec::new();
        let mut failure = None;
        loop {
            let f = self.read_frame().await?;
            match f.tag {
                tags::backend::PARAMETER_STATUS => self.note_parameter_status(&f.body),
                tags::backend::DATA_ROW => rows.push(
                    parse_data_row(&f.body).ok_or_else(|| self.protocol("malformed DataRow"))?,
                ),
                tags::backend::ERROR_RESPONSE => {
                    failure = Some(
                        backend::parse_error_notice(&f.body)
                            .map_err(|e| self.protocol(e.to_string()))?,
                    )
                }
                tags::backend::READY_FOR_QUERY => {
                    let status = backend::parse_ready_for_query(&f.body)
                        .map_err(|e| self.protocol(e.to_string()))?;
                    return match failure {
                        Some(notice) => Err(ServerError::Refused {
                            addr: self.addr.to_string(),
                            notice,
                        }),
                        None => Ok((rows, status)),
                    };
                }
                tags::backend::COPY_IN => {
                    // Nothing poolguard runs copies in; refuse cleanly so we reach ReadyForQuery.
                    let mut m = BytesMut::new();
                    copy_fail(&mut m, "poolguard internal query does not copy");
                    self.stream.write_all(&m).await?;
                }
                _ => {}
            }
        }
    }

    /// Best-effort polite close: a Terminate written without waiting.
    fn terminate_now(&mut self) {
        let mut m = BytesMut::new();
        frontend::terminate(&mut m);
        self.stream.send_now(&m);
    }

    /// Where a cancel for this connection's running query goes, and how (its TLS).
    pub fn cancel_key(&self) -> Arc<ServerKey> {
        self.cancel
            .get_or_init(|| {
                Arc::new(ServerKey {
                    addr: self.addr.clone(),
                    pid: self.key.0,
                    secret: self.key.1,
                    tls: self.tls.clone(),
                })
            })
            .clone()
    }
}

fn tls_error(addr: &str, source: TlsError) -> ServerError {
    ServerError::Tls {
        addr: addr.to_owned(),
        source,
    }
}

/// PostgreSQL's way into TLS on a fresh connection to `addr`: an SSLRequest, one byte back
/// ('S' yes, 'N' no), then the handshake. Without `dest` (`server_tls = "disable"`) the stream
/// stays plain and nothing is sent. Returns the stream and, when it is TLS, the `dest` used.
pub async fn start_tls(
    mut tcp: TcpStream,
    dest: Option<TlsDest>,
    addr: &str,
) -> Result<(ServerStream, Option<TlsDest>), ServerError> {
    let Some(dest) = dest else {
        return Ok((ServerStream::Plain(tcp), None));
    };
    let mut m = BytesMut::new();
    startup::encode_ssl_request(&mut m);
    tcp.write_all(&m).await?;
    // One byte and no more: anything behind it would be unauthenticated (see module docs).
    match tcp.read_u8().await? {
        b'S' => match dest.handshake(tcp).await {
            Ok(stream) => Ok((stream, Some(dest))),
            Err(source) => Err(tls_error(addr, source)),
        },
        b'N' if dest.required() => Err(tls_error(addr, dest.not_offered())),
        b'N' => Ok((ServerStream::Plain(tcp), None)),
        other => Err(ServerError::Protocol {
            addr: addr.to_owned(),
            problem: format!("answered the SSLRequest with {other:#04x}, not 'S' or 'N'"),
        }),
    }
}

/// CopyFail ('f'): the error text ends the COPY on the server side.
pub fn copy_fail(buf: &mut BytesMut, reason: &str) {
    buf.extend_from_slice(b"f");
    let len = reason.len().saturating_add(5);
    buf.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    buf.extend_from_slice(reason.as_bytes());
    buf.extend_from_slice(&[0]);
}

/// Text values of a DataRow; `None` on malformed input.
fn parse_data_row(mut body: &[u8]) -> Option<Vec<Option<String>>> {
    if body.len() < 2 {
        return None;
    }
    let n = body.get_u16() as usize;
    let mut cols = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        if body.len() < 4 {
            return None;
        }
        let len = body.get_i32();
        if len < 0 {
            cols.push(None);
            continue;
        }
        let len = len as usize;
        if body.len() < len {
            return None;
        }
        let (value, rest) = body.split_at_checked(len)?;
        cols.push(Some(String::from_utf8_lossy(value).into_owned()));
        body = rest;
    }
    Some(cols)
}

/// Opens logged-in connections to a backend's write host for one (database, user) pool.
pub struct PgConnector {
    /// The backend's hosts; connects go to the write host of the moment.
    pub hosts: Arc<HostSet>,
    pub user: String,
    /// Password, md5 hash or SCRAM verifier and keys (passthrough); replaced by reloads,
    /// lookups and client logins, the next server login uses what it holds then.
    credential: ServerCredential,
    pub database: String,
    pub connect_timeout: Duration,
    /// Per-connection bound on poolguard's prepared statements (LRU beyond it).
    pub max_prepared_statements: usize,
    /// What the last successful login reported, for clients that log in before any server does.
    params: Mutex<Option<ServerParams>>,
    /// The write host, or the standbys. Connections of a standby database are opened with
    /// `default_transaction_read_only = on`, so a write fails the same way (25006) whether it
    /// reached a standby or the primary it fell back to.
    pub target: Target,
}

impl PgConnector {
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

    /// The secret its server logins use (see [`crate::pg::credential`]).
    pub fn credential(&self) -> &ServerCredential {
        &self.credential
    }

    /// Server parameters seen at the most recent login, if any server was opened yet.
    pub fn params(&self) -> Option<ServerParams> {
        self.params
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Connects where the database's `target` says, through that host's breaker, and reports
    /// the outcome to it.
    async fn open(&self) -> Result<ServerConn, ServerError> {
        self.hosts
            .connect_target(self.target, |addr| self.open_at(addr))
            .await
    }

    /// Health check of one host, outside the pools and the breaker: log in there and ask
    /// whether it takes writes (`SELECT pg_is_in_recovery()` is false on a primary).
    pub async fn probe_writable(&self, addr: &str) -> Result<bool, ServerError> {
        let mut conn = self.open_at(addr.to_owned()).await?;
        let reply = conn.simple_query("SELECT pg_is_in_recovery()").await;
        conn.terminate_now();
        let (rows, _) = reply?;
        match rows
            .first()
            .and_then(|r| r.first())
            .and_then(|v| v.as_deref())
        {
            Some("f") => Ok(true),
            Some("t") => Ok(false),
            other => Err(conn.protocol(format!("pg_is_in_recovery() returned {other:?}"))),
        }
    }

    /// Connects and logs in to `addr`, within `connect_timeout` for each of the two steps.
    async fn open_at(&self, addr: String) -> Result<ServerConn, ServerError> {
        let (socket, peer) = match tokio::time::timeout(self.connect_timeout, connect(&addr)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(ServerError::Connect { addr, source }),
            Err(_) => {
                return Err(ServerError::ConnectTimeout {
                    addr,
                    timeout: self.connect_timeout,
                })
            }
        };
        let (stream, tls) = match socket {
            // No TLS over a Unix socket (see `tls::socket`).
            Socket::Unix(s) => (ServerStream::Unix(s), None),
            Socket::Tcp(stream) => {
                let dest = self
                    .hosts
                    .tls()
                    .dest(&addr)
                    .map_err(|source| tls_error(&addr, source))?;
                let wanted = dest.is_some();
                let (stream, tls) = match tokio::time::timeout(
                    self.connect_timeout,
                    start_tls(stream, dest, &addr),
                )
                .await
                {
                    Ok(r) => r?,
                    Err(_) => {
                        return Err(ServerError::ConnectTimeout {
                            addr,
                            timeout: self.connect_timeout,
                        })
                    }
                };
                if wanted && tls.is_none() {
                    self.hosts.note_plain_fallback(&addr);
                }
                (stream, tls)
            }
        };
        let mut conn = ServerConn {
            stream,
            tls,
            buf: BytesMut::with_capacity(8192),
            addr: peer,
            key: (0, 0),
            params: Arc::new(Vec::new()),
            prepared: ServerStatements::new(self.max_prepared_statements),
            unnamed: UnnamedStatement::default(),
            current: ParamSet::default(),
            synced_for: None,
            spare_pending: Default::default(),
            cancel: Default::default(),
        };
        match tokio::time::timeout(self.connect_timeout, self.login(&mut conn)).await {
            Ok(Ok(())) => Ok(conn),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ServerError::ConnectTimeout {
                addr,
                timeout: self.connect_timeout,
            }),
        }
    }

    async fn login(&self, conn: &mut ServerConn) -> Result<(), ServerError> {
        let mut out = BytesMut::new();
        let mut startup_params = vec![
            ("user", self.user.as_str()),
            ("database", self.database.as_str()),
            ("application_name", "poolguard"),
        ];
        if matches!(self.target, Target::Standby { .. }) {
            startup_params.push(("default_transaction_read_only", "on"));
        }
        startup::encode_startup(&mut out, &startup_params);
        conn.stream.write_all(&out).await?;
        let mut scram: Option<ScramClient> = None;
        let mut params = Vec::new();
        loop {
            let f = conn.read_frame().await?;
            out.clear();
            match f.tag {
                tags::backend::AUTHENTICATION => {
                    let auth = backend::parse_authentication(&f.body)
                        .map_err(|e| conn.protocol(e.to_string()))?;
                    match auth {
                        Authentication::Ok => {}
                        // What the pool holds may not answer every method (passthrough):
                        // the refusal names the user and why (`pg::credential`).
                        Authentication::CleartextPassword => {
                            let p = self.credential.cleartext(&self.user);
                            frontend::password_message(
                                &mut out,
                                p.map_err(|e| conn.protocol(e))?.as_bytes(),
                            )
                        }
                        Authentication::Md5Password { salt } => {
                            let r = self.credential.md5_response(&self.user, salt);
                            frontend::password_message(
                                &mut out,
                                r.map_err(|e| conn.protocol(e))?.as_bytes(),
                            );
                        }
                        Authentication::Sasl { mechanisms } => {
                            if !mechanisms.iter().any(|m| m == "SCRAM-SHA-256") {
                                return Err(conn.protocol(format!(
                                    "server offers SASL mechanisms {mechanisms:?}, poolguard speaks SCRAM-SHA-256"
                                )));
                            }
                            let c = self
                                .credential
                                .scram_client(&self.user)
                                .map_err(|e| conn.protocol(e))?;
                            frontend::sasl_initial_response(
                                &mut out,
                                "SCRAM-SHA-256",
                                &c.client_first(),
                            );
                            scram = Some(c);
                        }
                        Authentication::SaslContinue(data) => {
                            let c = scram
                                .as_mut()
                                .ok_or_else(|| conn.protocol("SASL continue before SASL start"))?;
                            let reply = c
                                .handle_server_first(&data)
                                .map_err(|e| conn.protocol(format!("SCRAM: {e}")))?;
                            frontend::sasl_response(&mut out, &reply);
                        }
                        Authentication::SaslFinal(data) => {
                            let c = scram
                                .as_ref()
                                .ok_or_else(|| conn.protocol("SASL final before SASL start"))?;
                            c.verify_server_final(&data)
                                .map_err(|e| conn.protocol(format!("SCRAM: {e}")))?;
                        }
                        Authentication::Unsupported(code) => {
                            return Err(conn.protocol(format!(
                                "server asks for authentication method {code}, which poolguard does not speak"
                            )))
                        }
                    }
                    if !out.is_empty() {
                        conn.stream.write_all(&out).await?;
                    }
                }
                tags::backend::PARAMETER_STATUS => {
                    let (k, v) = backend::parse_parameter_status(&f.body)
                        .map_err(|e| conn.protocol(e.to_string()))?;
                    params.push((Arc::from(k), Arc::from(v)));
                    conn.note_parameter_status(&f.body);
                }
                tags::backend::BACKEND_KEY_DATA => {
                    conn.key = backend::parse_backend_key_data(&f.body)
                        .map_err(|e| conn.protocol(e.to_string()))?;
                }
                tags::backend::ERROR_RESPONSE => {
                    let notice = backend::parse_error_notice(&f.body)
                        .map_err(|e| conn.protocol(e.to_string()))?;
                    return Err(ServerError::Refused {
                        addr: conn.addr.to_string(),
                        notice,
                    });
                }
                tags::backend::READY_FOR_QUERY => {
                    let params = Arc::new(params);
                    conn.params = params.clone();
                    *self.params.lock().unwrap_or_else(|p| p.into_inner()) = Some(params);
                    return Ok(());
                }
                // NoticeResponse and anything else harmless during login.
                _ => {}
            }
        }
    }
}

impl Connector for PgConnector {
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
        tracing::debug!(server = %conn.addr, ?reason, "closing server connection");
        conn.terminate_now();
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

impl ServerConnector for PgConnector {
    /// A connector for a backend's host set (the pools' connectors).
    fn for_hosts(
        hosts: Arc<HostSet>,
        user: String,
        password: String,
        database: String,
        connect_timeout: Duration,
    ) -> Self {
        PgConnector {
            hosts,
            user,
            credential: ServerCredential::new(&password),
            database,
            connect_timeout,
            max_prepared_statements: 100,
            params: Mutex::new(None),
            target: Target::Primary,
        }
    }

    /// A reload changed the user's password: the next login uses the new one (connections
    /// already open stay; the server does not ask again).
    fn set_password(&self, password: &str) {
        self.credential.set(password);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_row_parsing_is_bounded() {
        assert_eq!(
            parse_data_row(b"\0\x02\0\0\0\x02hi\xff\xff\xff\xff"),
            Some(vec![Some("hi".into()), None])
        );
        assert_eq!(parse_data_row(b"\0\x01\0\0\0\x09hi"), None);
        assert_eq!(parse_data_row(b"\xff\xff"), None);
    }
}
