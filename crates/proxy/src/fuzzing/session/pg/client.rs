//! The scripted PostgreSQL clients: the steps each client takes ([`Step`], decoded from the
//! fuzz input) and a client connection to the proxy that runs them, counting the
//! ReadyForQuery messages it is owed and reporting any not received within [`ANSWER_WITHIN`].

use std::net::SocketAddr;

use bytes::{BufMut, BytesMut};
use poolguard_pg::framing::decode_frame;
use poolguard_pg::startup;
use poolguard_pg::{frontend, md5auth};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{new_plan, MAX_LEN, PASSWORD, USER};
use crate::fuzzing::session::{Script, ANSWER_WITHIN};

/// What a client does with a COPY the server asked it for.
#[derive(Debug, Clone, Copy)]
pub(super) enum CopyMove {
    Done,
    Fail,
    Leave,
}

#[derive(Debug, Clone)]
pub(super) enum Step {
    /// A simple Query.
    Query {
        plan: u64,
        stalls: bool,
        copy: CopyMove,
    },
    /// Parse (named or not), Bind, Describe, Execute, and Sync unless `sync` is false.
    Extended {
        plan: u64,
        stalls: bool,
        statement: Option<u8>,
        reuse: bool,
        sync: bool,
    },
    /// A lone Sync.
    Sync,
    /// Close a named statement, then Sync.
    Close(u8),
    Terminate,
    Disconnect,
    /// Half a message, then gone.
    Partial,
    /// A query sent, the connection dropped without reading the answer.
    SendAndGo(u64),
}

impl Step {
    pub(super) fn decode(s: &mut Script<'_>, ids: &mut Vec<u64>) -> Step {
        match s.below(16) {
            0..=5 => {
                let (plan, p) = new_plan(s, ids);
                let copy = [
                    CopyMove::Done,
                    CopyMove::Done,
                    CopyMove::Fail,
                    CopyMove::Leave,
                ][s.below(4)];
                Step::Query {
                    plan,
                    stalls: p.stalls(),
                    copy,
                }
            }
            6..=9 => {
                let (plan, p) = new_plan(s, ids);
                let flags = s.byte();
                Step::Extended {
                    plan,
                    stalls: p.stalls(),
                    statement: (flags & 1 != 0).then_some((flags >> 4) % 3),
                    reuse: flags & 2 != 0,
                    sync: flags & 12 != 12,
                }
            }
            10 => Step::Sync,
            11 => Step::Close(s.byte() % 3),
            12 => Step::Terminate,
            13 => Step::Disconnect,
            14 => Step::Partial,
            _ => Step::SendAndGo(new_plan(s, ids).0),
        }
    }
}

pub(super) struct ClientScript {
    pub(super) name: String,
    pub(super) database: &'static str,
    pub(super) steps: Vec<Step>,
}

/// A client connection to the proxy and what it is owed.
struct Client {
    stream: TcpStream,
    buf: BytesMut,
    name: String,
    /// ReadyForQuery messages still owed (one per Query and per Sync sent).
    owed: usize,
    /// Named statements this client prepared.
    prepared: [bool; 3],
}

/// Why a client stopped early: the proxy closed it (often right), or it broke a rule.
enum Stop {
    Closed,
    Problem(String),
}

impl ClientScript {
    pub(super) async fn run(self, proxy: SocketAddr) -> Result<(), String> {
        let Some(mut c) = Client::login(proxy, &self.name, self.database).await? else {
            return Ok(());
        };
        for step in &self.steps {
            match c.step(step).await {
                Ok(true) => {}
                Ok(false) | Err(Stop::Closed) => return Ok(()),
                Err(Stop::Problem(p)) => return Err(format!("{}: {p}", self.name)),
            }
        }
        // Out of steps: leave politely half the time.
        if self.steps.len().is_multiple_of(2) {
            let mut m = BytesMut::new();
            frontend::terminate(&mut m);
            let _ = c.stream.write_all(&m).await;
        }
        Ok(())
    }
}

impl Client {
    /// Logs in through the proxy (md5); `None` if the proxy refused (it may, when a pool is
    /// exhausted).
    async fn login(
        proxy: SocketAddr,
        name: &str,
        database: &str,
    ) -> Result<Option<Client>, String> {
        let stream = TcpStream::connect(proxy)
            .await
            .map_err(|e| format!("connect to the proxy: {e}"))?;
        let _ = stream.set_nodelay(true);
        let mut c = Client {
            stream,
            buf: BytesMut::new(),
            name: name.to_owned(),
            owed: 1,
            prepared: [false; 3],
        };
        let mut m = BytesMut::new();
        startup::encode_startup(
            &mut m,
            &[
                ("user", USER),
                ("database", database),
                ("application_name", name),
            ],
        );
        if c.stream.write_all(&m).await.is_err() {
            return Ok(None);
        }
        loop {
            let (tag, body) = match c.read().await {
                Ok(f) => f,
                Err(Stop::Closed) => return Ok(None),
                Err(Stop::Problem(p)) => return Err(format!("{name} login: {p}")),
            };
            match tag {
                b'R' if body.len() >= 8 && body[..4] == [0, 0, 0, 5] => {
                    let salt = [body[4], body[5], body[6], body[7]];
                    let r = md5auth::md5_response(USER, PASSWORD, salt);
                    m.clear();
                    frontend::password_message(&mut m, r.as_bytes());
                    if c.stream.write_all(&m).await.is_err() {
                        return Ok(None);
                    }
                }
                b'Z' => {
                    c.owed = 0;
                    return Ok(Some(c));
                }
                b'E' => return Ok(None),
                _ => {}
            }
        }
    }

    /// Reads one message from the proxy, within [`ANSWER_WITHIN`].
    async fn read(&mut self) -> Result<(u8, bytes::Bytes), Stop> {
        let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
        loop {
            match decode_frame(&mut self.buf, MAX_LEN) {
                Ok(Some(f)) => return Ok((f.tag, f.body)),
                Ok(None) => {}
                Err(e) => return Err(Stop::Problem(format!("the proxy sent a bad frame: {e}"))),
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Err(Stop::Closed),
                Ok(Ok(_)) => {}
                Err(_) => {
                    return Err(Stop::Problem(format!(
                        "no answer within {ANSWER_WITHIN:?} ({} ReadyForQuery owed)",
                        self.owed
                    )))
                }
            }
        }
    }

    async fn send(&mut self, m: &[u8]) -> Result<(), Stop> {
        self.stream.write_all(m).await.map_err(|_| Stop::Closed)
    }

    /// Reads until every ReadyForQuery owed has come, answering COPY requests with `copy`.
    async fn settle(&mut self, copy: CopyMove) -> Result<(), Stop> {
        while self.owed > 0 {
            let (tag, _) = self.read().await?;
            match tag {
                b'Z' => self.owed -= 1,
                b'G' => {
                    let mut m = BytesMut::new();
                    match copy {
                        CopyMove::Done => {
                            for row in ["1\n", "2\n"] {
                                m.put_u8(b'd');
                                m.put_i32(4 + row.len() as i32);
                                m.put_slice(row.as_bytes());
                            }
                            m.put_slice(&[b'c', 0, 0, 0, 4]);
                        }
                        CopyMove::Fail => {
                            m.put_u8(b'f');
                            m.put_i32(4 + 5);
                            m.put_slice(b"nope\0");
                        }
                        CopyMove::Leave => return Err(Stop::Closed),
                    }
                    self.send(&m).await?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Runs one step; `false` when the client has left.
    async fn step(&mut self, step: &Step) -> Result<bool, Stop> {
        let mut m = BytesMut::new();
        match *step {
            Step::Query { plan, stalls, copy } => {
                frontend::query(&mut m, format!("/*{}:{plan}*/ SELECT 1", self.name));
                self.send(&m).await?;
                self.owed += 1;
                if stalls {
                    return Ok(false);
                }
                self.settle(copy).await?;
            }
            Step::Extended {
                plan,
                stalls,
                statement,
                reuse,
                sync,
            } => {
                let name = statement.map_or(String::new(), |i| format!("s{i}"));
                let known = statement.is_some_and(|i| self.prepared[usize::from(i)]);
                if !(reuse && known) {
                    if let Some(i) = statement {
                        if known {
                            frontend::close(&mut m, b'S', &name);
                        }
                        self.prepared[usize::from(i)] = true;
                    }
                    let sql = format!("/*{}:{plan}*/ SELECT $1", self.name);
                    frontend::parse_message(&mut m, &name, &sql, &[]);
                }
                let value = plan.to_string();
                let mut rest = BytesMut::new();
                rest.put_i16(0);
                rest.put_i16(1);
                rest.put_i32(value.len() as i32);
                rest.put_slice(value.as_bytes());
                rest.put_i16(0);
                frontend::bind_with_rest(&mut m, "", &name, &rest);
                frontend::describe(&mut m, b'P', "");
                frontend::execute(&mut m, "", 0);
                if sync {
                    frontend::sync(&mut m);
                    self.owed += 1;
                } else {
                    frontend::flush(&mut m);
                }
                self.send(&m).await?;
                if stalls {
                    return Ok(false);
                }
                self.settle(CopyMove::Fail).await?;
            }
            Step::Sync => {
                frontend::sync(&mut m);
                self.send(&m).await?;
                self.owed += 1;
                self.settle(CopyMove::Fail).await?;
            }
            Step::Close(i) => {
                frontend::close(&mut m, b'S', format!("s{i}"));
                self.prepared[usize::from(i)] = false;
                frontend::sync(&mut m);
                self.send(&m).await?;
                self.owed += 1;
                self.settle(CopyMove::Fail).await?;
            }
            Step::Terminate => {
                frontend::terminate(&mut m);
                let _ = self.send(&m).await;
                return Ok(false);
            }
            Step::Disconnect => return Ok(false),
            Step::Partial => {
                frontend::query(&mut m, format!("/*{}:0*/ SELECT 1", self.name));
                let _ = self.send(&m[..m.len() / 2]).await;
                return Ok(false);
            }
            Step::SendAndGo(plan) => {
                frontend::query(&mut m, format!("/*{}:{plan}*/ SELECT 1", self.name));
                let _ = self.send(&m).await;
                return Ok(false);
            }
        }
        Ok(true)
    }
}
