//! The fake MySQL server: it logs poolguard in, keeps per connection its own account of where
//! the conversation stands ([`View`]) and reports a connection that changes hands while that
//! account is not clean. Here: the listener, the connection state, login, the read loop and
//! the packets it answers with; what each command gets is in [`commands`].

mod commands;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{BufMut, BytesMut};
use poolguard_mysql::auth::{self, MYSQL_NATIVE_PASSWORD};
use poolguard_mysql::consts::*;
use poolguard_mysql::handshake::{decode_client_handshake, ClientHandshake, HandshakeV10};
use poolguard_mysql::lenenc::{put_lenenc_bytes, put_lenenc_int};
use poolguard_mysql::packet::encode_packet;
use poolguard_mysql::response::{encode_err, EofPacket, OkPacket};
use poolguard_mysql::resultset::{ColumnDefinition, MYSQL_TYPE_VAR_STRING};
use poolguard_mysql::{Packet, PacketCodec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{MAX_LEN, PASSWORD, USER};
use crate::fuzzing::session::Violations;

/// Server capabilities announced in the greeting (DEPRECATE_EOF too: poolguard does not take
/// it, and the fake server answers with whatever was negotiated).
const SERVER_CAPS: u32 = CLIENT_LONG_PASSWORD
    | CLIENT_FOUND_ROWS
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_LOCAL_FILES
    | CLIENT_PROTOCOL_41
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_DEPRECATE_EOF;

/// ER_QUERY_INTERRUPTED: what a statement stopped by KILL QUERY fails with.
const ER_QUERY_INTERRUPTED: u16 = 1317;

pub(super) struct FakeServer {
    violations: Arc<Violations>,
    next_thread: AtomicU32,
    /// Each live connection's KILL QUERY line, by thread id.
    kills: Mutex<HashMap<u32, mpsc::UnboundedSender<()>>>,
}

impl FakeServer {
    pub(super) async fn start(violations: Arc<Violations>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("fake server");
        let addr = listener.local_addr().expect("fake server address");
        let server = Arc::new(FakeServer {
            violations,
            next_thread: AtomicU32::new(100),
            kills: Mutex::new(HashMap::new()),
        });
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = tokio::spawn(server.clone().serve(stream));
                // A bug in the fake server would otherwise show only as refused logins.
                let violations = server.violations.clone();
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        if e.is_panic() {
                            violations.push(format!("the fake MySQL server panicked: {e}"));
                        }
                    }
                });
            }
        });
        addr
    }

    fn kills(&self) -> std::sync::MutexGuard<'_, HashMap<u32, mpsc::UnboundedSender<()>>> {
        self.kills.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn serve(self: Arc<Self>, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let thread = self.next_thread.fetch_add(1, Ordering::Relaxed);
        let (tx, kills) = mpsc::unbounded_channel();
        self.kills().insert(thread, tx);
        let mut conn = FakeConn {
            stream,
            buf: BytesMut::new(),
            codec: PacketCodec::new(MAX_LEN),
            out: BytesMut::new(),
            thread,
            caps: 0,
            seq: 0,
            status: SERVER_STATUS_AUTOCOMMIT,
            view: View::default(),
            violations: self.violations.clone(),
            server: self.clone(),
            stmts: HashMap::new(),
            next_stmt: 1,
            infile: None,
            stalled: false,
            kill_pending: false,
        };
        if conn.login().await {
            conn.serve(kills).await;
        }
        self.kills().remove(&thread);
    }
}

/// The fake server's own account of one connection.
#[derive(Debug, Default)]
pub(super) struct View {
    /// SERVER_STATUS_IN_TRANS of the last status sent.
    in_trans: bool,
    /// A command is running and not yet answered (a stall).
    owed: bool,
    /// A LOCAL INFILE transfer was asked for and has not ended.
    infile: bool,
    /// A packet the proxy cannot parse was sent: the stream is out of step for good.
    broken: bool,
    /// The client whose marker was seen last.
    owner: Option<String>,
}

impl View {
    fn clean(&self) -> bool {
        !self.in_trans && !self.owed && !self.infile && !self.broken
    }
}

/// A statement prepared on a fake connection: who prepared it (the marker in its text).
struct Stmt {
    owner: Option<String>,
}

struct FakeConn {
    stream: TcpStream,
    buf: BytesMut,
    codec: PacketCodec,
    out: BytesMut,
    thread: u32,
    /// Capabilities negotiated with poolguard.
    caps: u32,
    /// The next sequence id to send.
    seq: u8,
    /// Status flags (autocommit, in transaction).
    status: u16,
    view: View,
    violations: Arc<Violations>,
    server: Arc<FakeServer>,
    stmts: HashMap<u32, Stmt>,
    next_stmt: u32,
    /// A LOCAL INFILE transfer is under way: the status of the OK that ends it.
    infile: Option<bool>,
    /// A command waits for KILL QUERY; later packets wait in `buf`.
    stalled: bool,
    /// A KILL QUERY came before the command it was for had started (it comes on another
    /// connection, which can overtake the command); kept, so that such a race does not cost
    /// an input the reclaim timeout.
    kill_pending: bool,
}

/// Finds the client marker in text sent to the server: `/*fz7:12*/` (client and plan).
fn marker(text: &str) -> (Option<String>, Option<u64>) {
    if let Some(rest) = text.split("/*").nth(1) {
        if let Some((body, _)) = rest.split_once("*/") {
            if let Some((who, plan)) = body.split_once(':') {
                return (Some(who.to_owned()), plan.trim().parse().ok());
            }
        }
    }
    (None, None)
}

impl FakeConn {
    /// Greeting, handshake response (mysql_native_password against [`PASSWORD`]), OK;
    /// `false` if the login failed.
    async fn login(&mut self) -> bool {
        let nonce: Vec<u8> = (0..20u32)
            .map(|i| b'a' + ((i + self.thread) % 26) as u8)
            .collect();
        let greeting = HandshakeV10 {
            server_version: "8.0.36-fake".into(),
            connection_id: self.thread,
            auth_plugin_data: nonce.clone(),
            capabilities: SERVER_CAPS,
            mariadb_capabilities: 0,
            charset: DEFAULT_COLLATION,
            status_flags: SERVER_STATUS_AUTOCOMMIT,
            auth_plugin_name: MYSQL_NATIVE_PASSWORD.into(),
        };
        let mut p = BytesMut::new();
        greeting.encode(&mut p);
        self.seq = 0;
        self.push(&p);
        if !self.flush().await {
            return false;
        }
        let Some(packet) = self.read().await else {
            return false;
        };
        let Ok(ClientHandshake::Response(r)) = decode_client_handshake(&packet.payload) else {
            return false;
        };
        self.caps = r.capabilities & SERVER_CAPS;
        self.seq = packet.next_seq();
        let expected = auth::native_auth_response(PASSWORD.as_bytes(), &nonce);
        if r.username != USER || r.auth_response != expected {
            self.err(1045, "28000", "Access denied");
            let _ = self.flush().await;
            return false;
        }
        self.ok_packet(SERVER_STATUS_AUTOCOMMIT, 0);
        self.flush().await
    }

    /// Reads one whole packet (login only; the command loop decodes from `buf`).
    async fn read(&mut self) -> Option<Packet> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(p)) => return Some(p),
                Ok(None) => {}
                Err(_) => return None,
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(n) if n > 0 => {}
                _ => return None,
            }
        }
    }

    async fn serve(&mut self, mut kills: mpsc::UnboundedReceiver<()>) {
        loop {
            while !self.stalled {
                match self.codec.decode(&mut self.buf) {
                    Ok(Some(p)) => {
                        if !self.on_packet(p).await {
                            let _ = self.flush().await;
                            return;
                        }
                        if !self.stalled && self.infile.is_none() && self.buf.is_empty() {
                            // Everything asked so far is answered: a KILL from now on is for
                            // later work.
                            self.kill_pending = false;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            if !self.flush().await {
                return;
            }
            tokio::select! {
                r = self.stream.read_buf(&mut self.buf) => match r {
                    Ok(n) if n > 0 => {}
                    _ => return,
                },
                Some(()) = kills.recv() => {
                    if self.stalled {
                        self.end_stall();
                    } else {
                        self.kill_pending = true;
                    }
                }
            }
        }
    }

    fn push(&mut self, payload: &[u8]) {
        let seq = self.seq;
        encode_packet(&mut self.out, seq, payload);
        self.seq = seq.wrapping_add(1);
    }

    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let ok = self.stream.write_all(&self.out).await.is_ok();
        self.out.clear();
        ok
    }

    fn set_trans(&mut self, trans: bool) {
        if trans {
            self.status |= SERVER_STATUS_IN_TRANS;
        } else {
            self.status &= !SERVER_STATUS_IN_TRANS;
        }
        self.view.in_trans = trans;
    }

    fn ok_packet(&mut self, status: u16, warnings: u16) {
        let mut p = BytesMut::new();
        OkPacket {
            warnings,
            ..OkPacket::with_status(status)
        }
        .encode(&mut p, self.caps);
        self.push(&p);
    }

    /// An OK ending the command, with the transaction open or not.
    fn ok(&mut self, trans: bool, warnings: u16) {
        self.set_trans(trans);
        let s = self.status;
        self.ok_packet(s, warnings);
    }

    fn err(&mut self, code: u16, state: &str, message: &str) {
        let mut p = BytesMut::new();
        encode_err(&mut p, code, state, message);
        self.push(&p);
    }

    /// The end of column definitions or rows: EOF, or an OK with 0xFE under DEPRECATE_EOF.
    fn eof(&mut self, status: u16) {
        let mut p = BytesMut::new();
        if self.caps & CLIENT_DEPRECATE_EOF != 0 {
            OkPacket::with_status(status).encode_as_eof(&mut p, self.caps);
        } else {
            EofPacket {
                warnings: 0,
                status_flags: Some(status),
            }
            .encode(&mut p);
        }
        self.push(&p);
    }

    fn column(&mut self, name: &str) {
        let mut p = BytesMut::new();
        ColumnDefinition {
            name: name.into(),
            org_name: name.into(),
            charset: 45,
            column_length: 64,
            column_type: MYSQL_TYPE_VAR_STRING,
            ..ColumnDefinition::default()
        }
        .encode(&mut p);
        self.push(&p);
    }

    /// Column count and definition of a one-column result set.
    fn result_head(&mut self) {
        let mut p = BytesMut::new();
        put_lenenc_int(&mut p, 1);
        self.push(&p);
        self.column("a");
        if self.caps & CLIENT_DEPRECATE_EOF == 0 {
            let s = self.status;
            self.eof(s);
        }
    }

    /// A one-column result set of `values`, text or binary rows, ending with `status`.
    fn result_set(&mut self, values: &[&str], binary: bool, status: u16) {
        self.result_head();
        for v in values {
            let mut p = BytesMut::new();
            if binary {
                p.put_u8(0);
                p.put_u8(0); // NULL bitmap: (1 column + 7 + 2) / 8 bytes
            }
            put_lenenc_bytes(&mut p, v.as_bytes());
            self.push(&p);
        }
        self.eof(status);
    }

    /// A command marked as `who`'s: if the connection changes hands here, it must be clean.
    fn arrived_from(&mut self, who: Option<String>) {
        let Some(who) = who else { return };
        if self.view.owner.as_deref() != Some(&who) {
            if !self.view.clean() {
                self.violations.push(format!(
                    "server connection {} handed from {:?} to {who} while {:?}",
                    self.thread, self.view.owner, self.view
                ));
            }
            self.view.owner = Some(who);
        }
    }

    /// KILL QUERY ended the stalled command: it fails, the transaction stays as it was.
    fn end_stall(&mut self) {
        self.stalled = false;
        self.kill_pending = false;
        self.view.owed = false;
        self.err(
            ER_QUERY_INTERRUPTED,
            "70100",
            "Query execution was interrupted",
        );
    }

    fn stall(&mut self, partial: bool) {
        if partial {
            let mut p = BytesMut::new();
            put_lenenc_int(&mut p, 1);
            self.push(&p);
            self.column("a");
        }
        self.view.owed = true;
        self.stalled = true;
        if self.kill_pending {
            self.end_stall();
        }
    }
}
