//! A PostgreSQL client at the message level (blocking), for what no driver lets a test do on
//! purpose: an extended-protocol batch left without its Sync, messages in an odd order. It logs
//! in with SCRAM-SHA-256 (or cleartext/md5 when asked) using poolguard-pg's own client side.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use poolguard_pg::frontend;
use poolguard_pg::scram::ScramClient;

/// One backend message: its type byte and body.
#[derive(Debug, Clone)]
pub struct Msg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Msg {
    /// The SQLSTATE of an ErrorResponse ('C' field), if this is one.
    pub fn sqlstate(&self) -> Option<String> {
        self.field(b'C')
    }

    /// A field of an ErrorResponse/NoticeResponse.
    pub fn field(&self, code: u8) -> Option<String> {
        if self.tag != b'E' && self.tag != b'N' {
            return None;
        }
        self.body
            .split(|b| *b == 0)
            .find(|f| f.first() == Some(&code))
            .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
    }
}

pub struct RawPg {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The process id from the BackendKeyData the client was given at login.
    pub backend_pid: i32,
}

impl RawPg {
    /// Connects and logs in; panics on failure (a test helper).
    pub fn login(port: u16, user: &str, password: &str, database: &str) -> RawPg {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut c = RawPg {
            stream,
            buf: Vec::new(),
            backend_pid: 0,
        };
        let mut body = Vec::new();
        body.extend_from_slice(&196608i32.to_be_bytes());
        for (k, v) in [("user", user), ("database", database)] {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut m = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        m.extend_from_slice(&body);
        c.stream.write_all(&m).unwrap();
        let mut scram = ScramClient::new(password);
        loop {
            let msg = c.read().expect("login answer");
            match msg.tag {
                b'R' => {
                    let code = i32::from_be_bytes(msg.body[..4].try_into().unwrap());
                    let mut out = BytesMut::new();
                    match code {
                        0 => continue,
                        3 => frontend::password_message(&mut out, password.as_bytes()),
                        10 => frontend::sasl_initial_response(
                            &mut out,
                            "SCRAM-SHA-256",
                            &scram.client_first(),
                        ),
                        11 => {
                            let last = scram.handle_server_first(&msg.body[4..]).unwrap();
                            frontend::sasl_response(&mut out, &last);
                        }
                        12 => {
                            scram.verify_server_final(&msg.body[4..]).unwrap();
                            continue;
                        }
                        other => panic!("authentication request {other} not supported here"),
                    }
                    c.stream.write_all(&out).unwrap();
                }
                b'E' => panic!("login refused: {:?}", msg.field(b'M')),
                b'K' => c.backend_pid = i32::from_be_bytes(msg.body[..4].try_into().unwrap()),
                b'Z' => return c,
                _ => {}
            }
        }
    }

    /// The client's own port (what poolguard's SHOW CLIENTS shows as `port`).
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().expect("local address").port()
    }

    /// Runs a simple query: its columns, rows and notices, or its ErrorResponse (`None`: the
    /// connection closed first).
    pub fn query(&mut self, sql: &str) -> Result<Answer, Option<Msg>> {
        let mut m = BytesMut::new();
        frontend::query(&mut m, sql);
        if self.stream.write_all(&m).is_err() {
            return Err(None);
        }
        let mut answer = Answer::default();
        let mut error = None;
        loop {
            let Some(msg) = self.read() else {
                return Err(error);
            };
            let mut body = Body(&msg.body);
            match msg.tag {
                b'T' => {
                    for _ in 0..body.i16() {
                        answer.columns.push(body.cstr());
                        body.skip(18); // table, attribute, type, size, modifier, format
                    }
                }
                b'D' => {
                    let row = (0..body.i16())
                        .map(|_| {
                            let len = body.i32();
                            (len >= 0).then(|| body.text(len as usize))
                        })
                        .collect();
                    answer.rows.push(row);
                }
                b'N' => answer.notices.extend(msg.field(b'M')),
                b'E' => error = Some(msg),
                b'Z' => return error.map_or(Ok(answer), |e| Err(Some(e))),
                _ => {}
            }
        }
    }

    /// Sends raw frontend bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next backend message, or `None` when the connection closed.
    pub fn read(&mut self) -> Option<Msg> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() > len {
                    let tag = self.buf[0];
                    let body = self.buf[5..1 + len].to_vec();
                    self.buf.drain(..1 + len);
                    return Some(Msg { tag, body });
                }
            }
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Messages until (and including) the next ReadyForQuery, errors included, or the close.
    pub fn read_until_ready(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(m) = self.read() {
            let end = m.tag == b'Z';
            out.push(m);
            if end {
                break;
            }
        }
        out
    }

    /// Messages until (and including) the first ErrorResponse or ReadyForQuery, or the close.
    pub fn read_until_error_or_ready(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(m) = self.read() {
            let end = m.tag == b'E' || m.tag == b'Z';
            out.push(m);
            if end {
                break;
            }
        }
        out
    }
}

/// A simple query's answer ([`RawPg::query`]).
#[derive(Debug, Default)]
pub struct Answer {
    pub columns: Vec<String>,
    /// `None` for NULL.
    pub rows: Vec<Vec<Option<String>>>,
    /// The messages of its NoticeResponses.
    pub notices: Vec<String>,
}

impl Answer {
    /// The rows whose `column` is `value`.
    pub fn rows_where(&self, column: &str, value: &str) -> Vec<&Vec<Option<String>>> {
        let i = self.column(column);
        self.rows
            .iter()
            .filter(|r| r[i].as_deref() == Some(value))
            .collect()
    }

    /// `column` of a row, as text ("" for NULL).
    pub fn value(&self, row: &[Option<String>], column: &str) -> String {
        row[self.column(column)].clone().unwrap_or_default()
    }

    fn column(&self, name: &str) -> usize {
        self.columns
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name} in {:?}", self.columns))
    }
}

/// Reads a backend message's body front to back.
struct Body<'a>(&'a [u8]);

impl Body<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn skip(&mut self, n: usize) {
        self.take(n);
    }

    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2).try_into().unwrap())
    }

    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().unwrap())
    }

    fn text(&mut self, n: usize) -> String {
        String::from_utf8_lossy(self.take(n)).into_owned()
    }

    fn cstr(&mut self) -> String {
        let end = self.0.iter().position(|b| *b == 0).unwrap_or(self.0.len());
        let s = self.text(end);
        self.skip(1);
        s
    }
}
