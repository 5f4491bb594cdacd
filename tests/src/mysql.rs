//! MySQL end-to-end harness: a throwaway MariaDB (from `poolguard-sandbox`), the real
//! `poolguard` binary in front of it with a generated `[mysql]` config, a small blocking MySQL
//! client for precise protocol checks ([`MyClient`]), and helpers to drive real clients (the
//! `mariadb` command-line client, PyMySQL, SQLAlchemy, mysql2, sysbench).
//!
//! Mirrors the PostgreSQL side ([`crate::PoolSpec`], [`crate::config_for`], [`crate::Proxy`]).
//! Everything listens on 127.0.0.1 on free ports and is torn down on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::BytesMut;
use poolguard_mysql::auth;
use poolguard_mysql::consts::*;
use poolguard_mysql::handshake::{AuthSwitchRequest, HandshakeResponse41, HandshakeV10};
use poolguard_mysql::packet::{encode_packet, PacketCodec};
pub use poolguard_mysql::response::ErrPacket;
use poolguard_mysql::resultset::decode_text_row;
use poolguard_mysql::{Packet, Progress, ResponseTracker};
pub use poolguard_sandbox::MariaDbSandbox;

use crate::{free_port, Proxy, DB, PASSWORD, USER};

/// A sandbox MariaDB with account `app` / `app-secret` owning database `bank`, packets up to
/// 64 MiB allowed.
pub fn mariadb(max_connections: u32) -> MariaDbSandbox {
    MariaDbSandbox::builder()
        .max_connections(max_connections)
        .user(USER, PASSWORD)
        .database(DB, USER)
        .setting("max-allowed-packet", "64M")
        .start()
        .expect("start sandbox MariaDB")
}

/// A MySQL pool's settings for [`mysql_config_for`].
#[derive(Clone, Debug)]
pub struct MyPoolSpec {
    pub mode: &'static str,
    pub pool_size: usize,
    pub max_overflow: usize,
    pub budget: usize,
    /// Extra lines for the `[[databases]]` entry.
    pub extra: String,
    /// Extra top-level `[limits]` lines.
    pub limits: String,
    /// Extra `[mysql]` lines.
    pub front: String,
}

impl Default for MyPoolSpec {
    fn default() -> Self {
        MyPoolSpec {
            mode: "transaction",
            pool_size: 5,
            max_overflow: 0,
            budget: 10,
            extra: String::new(),
            limits: String::new(),
            front: String::new(),
        }
    }
}

pub fn mysql_config_for(db: &MariaDbSandbox, listen_port: u16, spec: &MyPoolSpec) -> String {
    format!(
        r#"
[mysql]
listen = "127.0.0.1:{listen_port}"
{front}

[[backends]]
name = "maria"
protocol = "mysql"
hosts = ["127.0.0.1:{db_port}"]
max_connections = {budget}

[[databases]]
name = "{DB}"
backend = "maria"
pool_mode = "{mode}"
pool_size = {size}
max_overflow = {overflow}
{extra}

[[users]]
name = "{USER}"
password = "{PASSWORD}"

[limits]
{limits}
"#,
        front = spec.front,
        db_port = db.port(),
        budget = spec.budget,
        mode = spec.mode,
        size = spec.pool_size,
        overflow = spec.max_overflow,
        extra = spec.extra,
        limits = spec.limits,
    )
}

/// Starts the real poolguard with a `[mysql]` front door for this MariaDB.
pub fn start_mysql_proxy(db: &MariaDbSandbox, spec: &MyPoolSpec) -> Proxy {
    let port = free_port();
    Proxy::start_with(&mysql_config_for(db, port, spec), port)
}

/// Connections MariaDB sees from account `app` (poolguard's, side connections, or direct).
pub fn maria_app_connections(db: &MariaDbSandbox) -> u64 {
    db.sql(
        "",
        "SELECT COUNT(*) FROM information_schema.processlist WHERE user = 'app'",
    )
    .ok()
    .and_then(|s| s.parse().ok())
    .unwrap_or(0)
}

/// Samples [`maria_app_connections`] in the background; `finish()` gives (peak, samples).
pub struct MyPeakSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl MyPeakSampler {
    pub fn start(db: &MariaDbSandbox) -> MyPeakSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let (s, p, n) = (stop.clone(), peak.clone(), samples.clone());
        let (port, password) = (db.port(), db.root().1.to_owned());
        let handle =
            std::thread::spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    let out = Command::new("mariadb")
                    .args(["--no-defaults", "-N", "-B", "--protocol=TCP", "-h", "127.0.0.1"])
                    .arg(format!("--port={port}"))
                    .args(["-u", "root", "-e"])
                    .arg("SELECT COUNT(*) FROM information_schema.processlist WHERE user = 'app'")
                    .env("MYSQL_PWD", &password)
                    .output();
                    if let Ok(o) = out {
                        if let Ok(v) = String::from_utf8_lossy(&o.stdout).trim().parse::<u64>() {
                            p.fetch_max(v, Ordering::Relaxed);
                            n.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        MyPeakSampler {
            stop,
            peak,
            samples,
            handle: Some(handle),
        }
    }

    pub fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        (
            self.peak.load(Ordering::Relaxed),
            self.samples.load(Ordering::Relaxed),
        )
    }
}

/// The `mariadb` command-line client as `app` on `bank` (batch mode, no column names).
pub fn mariadb_cli(port: u16, sql: &str) -> Output {
    mariadb_cli_with(port, &[], sql)
}

/// [`mariadb_cli`] with extra options (`--ssl-ca=...` and the like).
pub fn mariadb_cli_with(port: u16, options: &[String], sql: &str) -> Output {
    run_within(
        Command::new("mariadb")
            .args([
                "--no-defaults",
                "-N",
                "-B",
                "--protocol=TCP",
                "-h",
                "127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .args(options)
            .args(["-u", USER, DB, "-e", sql])
            .env("MYSQL_PWD", PASSWORD),
        Duration::from_secs(30),
    )
}

pub use crate::run_within;

/// An error a MySQL server (or poolguard) answered with; I/O failures are code 2013.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MyError {
    pub code: u16,
    pub message: String,
}

impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.message)
    }
}

impl From<std::io::Error> for MyError {
    fn from(e: std::io::Error) -> Self {
        MyError {
            code: 2013,
            message: e.to_string(),
        }
    }
}

fn err_of(payload: &[u8]) -> MyError {
    match ErrPacket::decode(payload) {
        Ok(e) => MyError {
            code: e.code,
            message: e.message,
        },
        Err(e) => MyError {
            code: 2027,
            message: format!("malformed packet: {e}"),
        },
    }
}

pub type Rows = Vec<Vec<Option<String>>>;

/// A minimal blocking MySQL client (text protocol), for checks that need exact control.
pub struct MyClient {
    pub stream: TcpStream,
    buf: BytesMut,
    codec: PacketCodec,
    pub caps: u32,
    /// The connection id from the greeting.
    pub conn_id: u32,
}

impl MyClient {
    /// Logs in as `app` to `bank` through `port`.
    pub fn connect(port: u16) -> Result<MyClient, MyError> {
        MyClient::connect_as(port, USER, PASSWORD, Some(DB))
    }

    /// Logs in as `app` to `bank` through `port`, asking for the collation `charset` in the
    /// handshake.
    pub fn connect_in(port: u16, charset: u8) -> Result<MyClient, MyError> {
        MyClient::connect_with(port, USER, PASSWORD, Some(DB), charset, 0)
    }

    /// Logs in as `app` to `bank` asking, as MariaDB's own clients do, for the MariaDB extended
    /// capabilities `mariadb_caps` the greeting offers (none from a MySQL greeting).
    pub fn connect_mariadb(port: u16, mariadb_caps: u32) -> Result<MyClient, MyError> {
        MyClient::connect_with(
            port,
            USER,
            PASSWORD,
            Some(DB),
            DEFAULT_COLLATION,
            mariadb_caps,
        )
    }

    pub fn connect_as(
        port: u16,
        user: &str,
        password: &str,
        db: Option<&str>,
    ) -> Result<MyClient, MyError> {
        MyClient::connect_with(port, user, password, db, DEFAULT_COLLATION, 0)
    }

    fn connect_with(
        port: u16,
        user: &str,
        password: &str,
        db: Option<&str>,
        charset: u8,
        mariadb_caps: u32,
    ) -> Result<MyClient, MyError> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        stream.set_nodelay(true)?;
        let mut c = MyClient {
            stream,
            buf: BytesMut::new(),
            codec: PacketCodec::new(1 << 30),
            caps: 0,
            conn_id: 0,
        };
        let greeting = c.read_packet()?;
        if greeting.payload.first() == Some(&ERR_HEADER) {
            return Err(err_of(&greeting.payload));
        }
        let hs = HandshakeV10::decode(&greeting.payload).map_err(|e| MyError {
            code: 2027,
            message: e.to_string(),
        })?;
        c.conn_id = hs.connection_id;
        c.caps = (CLIENT_LONG_PASSWORD
            | CLIENT_PROTOCOL_41
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH
            | CLIENT_TRANSACTIONS
            | CLIENT_MULTI_RESULTS
            | CLIENT_MULTI_STATEMENTS
            | CLIENT_CONNECT_WITH_DB)
            & hs.capabilities
            | CLIENT_PROTOCOL_41;
        // MariaDB's extended capabilities go with CLIENT_MYSQL clear, to a greeting that has it
        // clear.
        let mariadb_capabilities = if mariadb_caps != 0 && hs.capabilities & CLIENT_MYSQL == 0 {
            c.caps &= !CLIENT_MYSQL;
            mariadb_caps & hs.mariadb_capabilities
        } else {
            0
        };
        let response = HandshakeResponse41 {
            capabilities: c.caps,
            max_packet_size: 1 << 30,
            charset,
            mariadb_capabilities,
            username: user.to_owned(),
            auth_response: scramble(&hs.auth_plugin_name, password, &hs.auth_plugin_data),
            database: db.map(str::to_owned),
            auth_plugin_name: Some(hs.auth_plugin_name.clone()),
            ..HandshakeResponse41::default()
        };
        let mut payload = BytesMut::new();
        response.encode(&mut payload);
        c.write_packet(greeting.next_seq(), &payload)?;
        loop {
            let p = c.read_packet()?;
            match p.payload.first() {
                Some(&OK_HEADER) => return Ok(c),
                Some(&ERR_HEADER) => return Err(err_of(&p.payload)),
                Some(&EOF_HEADER) => {
                    let s = AuthSwitchRequest::decode(&p.payload).map_err(|e| MyError {
                        code: 2027,
                        message: e.to_string(),
                    })?;
                    let r = scramble(&s.plugin_name, password, &s.plugin_data);
                    c.write_packet(p.next_seq(), &r)?;
                }
                Some(&AUTH_MORE_DATA_HEADER) => {} // caching_sha2 fast auth success
                _ => {
                    return Err(MyError {
                        code: 2027,
                        message: "unexpected packet during login".into(),
                    })
                }
            }
        }
    }

    pub fn read_packet(&mut self) -> Result<Packet, MyError> {
        loop {
            if let Some(p) = self.codec.decode(&mut self.buf).map_err(|e| MyError {
                code: 2027,
                message: e.to_string(),
            })? {
                return Ok(p);
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(MyError {
                    code: 2013,
                    message: "connection closed".into(),
                });
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn write_packet(&mut self, seq: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        encode_packet(&mut out, seq, payload);
        self.stream.write_all(&out)
    }

    /// Sends a command and reads its whole response: the rows of every result set, or the
    /// error. `sql` is sent as COM_QUERY.
    pub fn query(&mut self, sql: &str) -> Result<Rows, MyError> {
        let mut payload = vec![COM_QUERY];
        payload.extend_from_slice(sql.as_bytes());
        self.command(&payload).map(|(rows, _)| rows)
    }

    /// The first column of the first row.
    pub fn scalar(&mut self, sql: &str) -> Result<Option<String>, MyError> {
        Ok(self
            .query(sql)?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .flatten())
    }

    /// Sends any command; returns its rows and final status flags.
    pub fn command(&mut self, payload: &[u8]) -> Result<(Rows, Option<u16>), MyError> {
        self.write_packet(0, payload)?;
        let mut tracker = ResponseTracker::new(payload[0], self.caps);
        let mut rows = Vec::new();
        let mut columns = 0;
        loop {
            let p = self.read_packet()?;
            let before = tracker.rows();
            let progress = tracker.feed(&p.payload).map_err(|e| MyError {
                code: 2027,
                message: e.to_string(),
            })?;
            if tracker.rows() > before {
                let row = decode_text_row(&p.payload, columns).map_err(|e| MyError {
                    code: 2027,
                    message: e.to_string(),
                })?;
                rows.push(
                    row.into_iter()
                        .map(|v| v.map(|b| String::from_utf8_lossy(b).into_owned()))
                        .collect(),
                );
            } else if let Some(&b) = p.payload.first() {
                if !matches!(b, 0x00 | 0xfb | 0xfe | 0xff) && columns == 0 {
                    columns = poolguard_mysql::lenenc::read_lenenc_int(&p.payload)
                        .map(|(n, _)| n as usize)
                        .unwrap_or(0);
                }
            }
            match progress {
                Progress::More => {}
                Progress::LocalInfileRequested => {
                    self.write_packet(p.seq.wrapping_add(1), &[])?;
                }
                Progress::AuthContinue => {
                    return Err(MyError {
                        code: 2027,
                        message: "unexpected auth request".into(),
                    })
                }
                Progress::Done {
                    status_flags,
                    error,
                } => {
                    if error.is_some() {
                        return Err(err_of(&p.payload));
                    }
                    return Ok((rows, status_flags));
                }
            }
            if tracker.is_done() {
                columns = 0;
            }
        }
    }
}

impl MyClient {
    /// Sends a command and returns every packet of its response (for binary results and
    /// commands the text helpers do not decode); an ERR becomes the error.
    pub fn command_packets(&mut self, payload: &[u8]) -> Result<Vec<Packet>, MyError> {
        self.write_packet(0, payload)?;
        let mut tracker = ResponseTracker::new(payload[0], self.caps);
        let mut packets = Vec::new();
        loop {
            let p = self.read_packet()?;
            let progress = tracker.feed(&p.payload).map_err(|e| MyError {
                code: 2027,
                message: e.to_string(),
            })?;
            if let Progress::Done { error: Some(_), .. } = progress {
                return Err(err_of(&p.payload));
            }
            let done = matches!(progress, Progress::Done { .. });
            packets.push(p);
            if done {
                return Ok(packets);
            }
        }
    }

    /// COM_STMT_PREPARE; returns the statement id the client was given.
    pub fn prepare(&mut self, sql: &str) -> Result<u32, MyError> {
        let mut payload = vec![COM_STMT_PREPARE];
        payload.extend_from_slice(sql.as_bytes());
        let packets = self.command_packets(&payload)?;
        let ok = packets.first().ok_or_else(|| MyError {
            code: 2027,
            message: "empty prepare response".into(),
        })?;
        poolguard_mysql::stmt::StmtPrepareOk::decode(&ok.payload)
            .map(|o| o.statement_id)
            .map_err(|e| MyError {
                code: 2027,
                message: e.to_string(),
            })
    }
}

fn scramble(plugin: &str, password: &str, nonce: &[u8]) -> Vec<u8> {
    if plugin == auth::CACHING_SHA2_PASSWORD {
        auth::sha2_auth_response(password.as_bytes(), nonce)
    } else {
        auth::native_auth_response(password.as_bytes(), nonce)
    }
}

/// Connects to the MySQL front door, reads the greeting, writes `bytes`, and returns every
/// packet poolguard answered until it closed the connection (bounded wait).
pub fn raw_after_greeting(port: u16, bytes: &[u8]) -> Vec<Packet> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let mut all = Vec::new();
    let _ = s.write_all(bytes);
    let _ = s.read_to_end(&mut all);
    let mut buf = BytesMut::from(&all[..]);
    let mut codec = PacketCodec::new(1 << 30);
    let mut packets = Vec::new();
    while let Ok(Some(p)) = codec.decode(&mut buf) {
        packets.push(p);
    }
    packets.into_iter().skip(1).collect()
}

/// The error code of the first ERR packet among `packets`.
pub fn err_code(packets: &[Packet]) -> Option<u16> {
    packets
        .iter()
        .find(|p| p.payload.first() == Some(&ERR_HEADER))
        .and_then(|p| ErrPacket::decode(&p.payload).ok())
        .map(|e| e.code)
}

/// Runs a Python script from tests/clients with the proxy's port as first argument.
pub fn python(script: &str, args: &[String], limit: Duration) -> Output {
    run_within(
        Command::new("python3")
            .arg(crate::client_script(script))
            .args(args),
        limit,
    )
}

/// Runs a Node.js script from tests/clients/node.
pub fn node(script: &str, args: &[String], limit: Duration) -> Output {
    run_within(
        Command::new("node")
            .arg(crate::client_script(&format!("node/{script}")))
            .args(args),
        limit,
    )
}
