//! A small etcd v3 client over etcd's JSON gateway (HTTP/1.1, `POST /v3/...`).
//!
//! Why the gateway and hyper rather than gRPC: etcd serves the same v3 API as JSON over plain
//! HTTP/1.1 on its client port (keys, values and revisions base64 or decimal strings), so the
//! whole client is a few POSTs; hyper is already in the tree (through axum), while a gRPC stack
//! (tonic, prost, protoc at build time) would be a large new dependency for eight calls.
//!
//! Invariants:
//! - Every unary call is bounded by the client's `timeout` (connect, request and body): the
//!   fleet's loop must keep its lease's keep-alive going, so nothing here may hang.
//! - One connection per call (`Connection: close` semantics): calls are a few per second, and a
//!   fresh connection cannot be left half-read by a timed-out call.
//! - Endpoints are tried in turn from the last one that answered; an error names the endpoint.
//! - Nothing is retried here: the caller decides (the share protocol retries on its next tick).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// What an etcd call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd {endpoint}: {what}")]
    Transport { endpoint: String, what: String },
    #[error("etcd {endpoint} answered {status}: {message}")]
    Refused {
        endpoint: String,
        status: u16,
        message: String,
    },
    #[error("etcd: unexpected answer: {0}")]
    Answer(String),
    #[error("etcd: no endpoint configured")]
    NoEndpoint,
}

impl EtcdError {
    /// etcd says the lease named in the request does not exist (it expired or was revoked).
    pub fn lease_not_found(&self) -> bool {
        matches!(self, EtcdError::Refused { message, .. } if message.contains("lease not found"))
    }
}

/// One key and its value, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub lease: i64,
}

/// A comparison of a transaction: the key's `mod_revision` equals this (0: the key is absent).
#[derive(Debug, Clone)]
pub struct ModRevisionIs {
    pub key: String,
    pub mod_revision: i64,
}

/// A put of a transaction (or on its own): `lease` 0 attaches none.
#[derive(Debug, Clone)]
pub struct Put {
    pub key: String,
    pub value: Vec<u8>,
    pub lease: i64,
}

/// An etcd client for a list of endpoints (`host:port` or `http://host:port`).
#[derive(Debug)]
pub struct Etcd {
    endpoints: Vec<String>,
    /// Index of the endpoint that answered last.
    current: AtomicUsize,
    timeout: Duration,
}

impl Etcd {
    pub fn new(endpoints: &[String], timeout: Duration) -> Etcd {
        let endpoints = endpoints
            .iter()
            .map(|e| {
                e.trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_owned()
            })
            .collect();
        Etcd {
            endpoints,
            current: AtomicUsize::new(0),
            timeout,
        }
    }

    /// Reads `key`, or every key starting with it when `prefix`. Returns the store's revision
    /// at the read and the keys (one consistent snapshot).
    pub async fn range(&self, key: &str, prefix: bool) -> Result<(i64, Vec<Kv>), EtcdError> {
        let mut body = json!({ "key": b64(key.as_bytes()) });
        if prefix {
            body["range_end"] = b64(&prefix_end(key.as_bytes())).into();
        }
        let answer = self.call("/v3/kv/range", &body).await?;
        let revision = int(&answer["header"]["revision"]);
        let kvs = match answer.get("kvs").and_then(Value::as_array) {
            Some(list) => list.iter().map(kv).collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        Ok((revision, kvs))
    }

    pub async fn put(&self, put: &Put) -> Result<(), EtcdError> {
        self.call("/v3/kv/put", &put_json(put)).await.map(drop)
    }

    pub async fn delete(&self, key: &str) -> Result<(), EtcdError> {
        let body = json!({ "key": b64(key.as_bytes()) });
        self.call("/v3/kv/deleterange", &body).await.map(drop)
    }

    /// Applies every put if every comparison holds; true if it did.
    pub async fn txn(&self, compare: &[ModRevisionIs], puts: &[Put]) -> Result<bool, EtcdError> {
        let compare: Vec<Value> = compare
            .iter()
            .map(|c| {
                json!({
                    "key": b64(c.key.as_bytes()),
                    "target": "MOD",
                    "result": "EQUAL",
                    "mod_revision": c.mod_revision.to_string(),
                })
            })
            .collect();
        let success: Vec<Value> = puts
            .iter()
            .map(|p| json!({ "request_put": put_json(p) }))
            .collect();
        let body = json!({ "compare": compare, "success": success });
        let answer = self.call("/v3/kv/txn", &body).await?;
        Ok(answer
            .get("succeeded")
            .and_then(Value::as_bool)
            .unwrap_or(false))
    }

    /// A new lease of `ttl` (whole seconds, at least 1); its id.
    pub async fn grant(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let secs = ttl.as_secs().max(1);
        let answer = self
            .call("/v3/lease/grant", &json!({ "TTL": secs.to_string() }))
            .await?;
        let id = int(&answer["ID"]);
        if id == 0 {
            return Err(EtcdError::Answer(format!(
                "lease grant without an ID: {answer}"
            )));
        }
        Ok(id)
    }

    /// Renews a lease; the TTL etcd granted, or `None` when the lease no longer exists.
    pub async fn keep_alive(&self, id: i64) -> Result<Option<Duration>, EtcdError> {
        let answer = self
            .call("/v3/lease/keepalive", &json!({ "ID": id.to_string() }))
            .await?;
        // The gateway streams `{"result": {...}}`; a lease gone has no (or a zero) TTL.
        let result = answer.get("result").unwrap_or(&answer);
        let ttl = int(&result["TTL"]);
        Ok((ttl > 0).then(|| Duration::from_secs(ttl.unsigned_abs())))
    }

    /// Ends a lease now: its keys go at once.
    pub async fn revoke(&self, id: i64) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", &json!({ "ID": id.to_string() }))
            .await
            .map(drop)
    }

    /// Watches every key under `prefix` from `start_revision` on.
    pub async fn watch(&self, prefix: &str, start_revision: i64) -> Result<Watch, EtcdError> {
        let body = json!({ "create_request": {
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix.as_bytes())),
            "start_revision": start_revision.to_string(),
        }});
        let (endpoint, response) = self.send("/v3/watch", &body).await?;
        Ok(Watch {
            endpoint,
            body: response.into_body(),
            buf: BytesMut::new(),
        })
    }

    /// One unary call: the JSON answer of the first endpoint that gives one.
    async fn call(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let (endpoint, response) = self.send(path, body).await?;
        let status = response.status().as_u16();
        let collected = tokio::time::timeout(self.timeout, response.into_body().collect())
            .await
            .map_err(|_| transport(&endpoint, "timed out reading the answer"))?
            .map_err(|e| transport(&endpoint, e))?
            .to_bytes();
        let mut answers = serde_json::Deserializer::from_slice(&collected).into_iter::<Value>();
        let answer = match answers.next() {
            Some(Ok(v)) => v,
            Some(Err(e)) => return Err(EtcdError::Answer(format!("{path}: {e}"))),
            None => Value::Null,
        };
        // A streaming call (keep-alive) may carry its error inside the first message.
        let error = answer
            .get("error")
            .filter(|e| e.is_object() || e.is_string());
        if status != 200 || error.is_some() {
            let message = answer
                .get("message")
                .or_else(|| error.and_then(|e| e.get("message")))
                .or(error)
                .map_or_else(
                    || answer.to_string(),
                    |m| m.as_str().map_or_else(|| m.to_string(), str::to_owned),
                );
            return Err(EtcdError::Refused {
                endpoint,
                status,
                message,
            });
        }
        Ok(answer)
    }

    /// Sends `body` to `path`, trying the endpoints in turn; the one that answered and its
    /// response (head read, body not yet).
    async fn send(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<(String, Response<Incoming>), EtcdError> {
        let n = self.endpoints.len();
        if n == 0 {
            return Err(EtcdError::NoEndpoint);
        }
        let first = self.current.load(Ordering::Relaxed);
        let mut last_error = EtcdError::NoEndpoint;
        for i in 0..n {
            let index = first.wrapping_add(i) % n;
            let Some(endpoint) = self.endpoints.get(index) else {
                continue;
            };
            match tokio::time::timeout(self.timeout, post(endpoint, path, body)).await {
                Ok(Ok(response)) => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok((endpoint.clone(), response));
                }
                Ok(Err(e)) => last_error = e,
                Err(_) => last_error = transport(endpoint, "timed out"),
            }
        }
        Err(last_error)
    }
}

/// A watch's stream of answers.
pub struct Watch {
    endpoint: String,
    body: Incoming,
    buf: BytesMut,
}

impl Watch {
    /// Waits for the next answer that carries events; the number of events. An `Err` or the
    /// stream's end means the watch is over (the caller reads again and watches anew).
    pub async fn changed(&mut self) -> Result<usize, EtcdError> {
        loop {
            while let Some(answer) = self.next_answer()? {
                let result = answer.get("result").unwrap_or(&answer);
                if result.get("canceled").and_then(Value::as_bool) == Some(true) {
                    return Err(EtcdError::Answer(format!("watch canceled: {result}")));
                }
                let events = result
                    .get("events")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                if events > 0 {
                    return Ok(events);
                }
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(transport(&self.endpoint, e)),
                None => return Err(transport(&self.endpoint, "watch stream ended")),
            }
        }
    }

    /// The next complete JSON object in the buffer, if one is there.
    fn next_answer(&mut self) -> Result<Option<Value>, EtcdError> {
        let mut stream = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
        match stream.next() {
            Some(Ok(v)) => {
                let used = stream.byte_offset();
                self.buf.advance(used);
                Ok(Some(v))
            }
            Some(Err(e)) if e.is_eof() => Ok(None),
            Some(Err(e)) => Err(EtcdError::Answer(format!("watch: {e}"))),
            None => Ok(None),
        }
    }
}

async fn post(endpoint: &str, path: &str, body: &Value) -> Result<Response<Incoming>, EtcdError> {
    let stream = tokio::net::TcpStream::connect(endpoint)
        .await
        .map_err(|e| transport(endpoint, e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| transport(endpoint, e))?;
    // The connection task ends with the response body (or when the body is dropped).
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = Request::post(path)
        .header(hyper::header::HOST, endpoint)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| transport(endpoint, e))?;
    sender
        .send_request(request)
        .await
        .map_err(|e| transport(endpoint, e))
}

fn transport(endpoint: &str, what: impl std::fmt::Display) -> EtcdError {
    EtcdError::Transport {
        endpoint: endpoint.to_owned(),
        what: what.to_string(),
    }
}

fn put_json(p: &Put) -> Value {
    let mut v = json!({ "key": b64(p.key.as_bytes()), "value": b64(&p.value) });
    if p.lease != 0 {
        v["lease"] = p.lease.to_string().into();
    }
    v
}

fn kv(v: &Value) -> Result<Kv, EtcdError> {
    let decode = |field: &str| -> Result<Vec<u8>, EtcdError> {
        match v.get(field).and_then(Value::as_str) {
            Some(s) => B64
                .decode(s)
                .map_err(|e| EtcdError::Answer(format!("{field} is not base64: {e}"))),
            None => Ok(Vec::new()),
        }
    };
    Ok(Kv {
        key: String::from_utf8_lossy(&decode("key")?).into_owned(),
        value: decode("value")?,
        mod_revision: int(&v["mod_revision"]),
        lease: int(&v["lease"]),
    })
}

/// An int64 as the gateway writes it (a decimal string), or a number; 0 when absent.
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// The end of the range of keys starting with `prefix` (etcd's convention: the prefix with
/// its last byte below 0xff incremented, everything after it dropped).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): every key from the prefix on.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(&[]), vec![0]);
    }

    #[test]
    fn kv_decodes_the_gateway_form() {
        let v = json!({"key": b64(b"/k"), "value": b64(b"v"), "mod_revision": "7", "lease": "42"});
        assert_eq!(
            kv(&v).unwrap(),
            Kv {
                key: "/k".into(),
                value: b"v".to_vec(),
                mod_revision: 7,
                lease: 42
            }
        );
        assert!(kv(&json!({"key": "not base64!"})).is_err());
    }

    #[test]
    fn endpoints_accept_a_scheme() {
        let e = Etcd::new(&["http://127.0.0.1:2379/".into()], Duration::from_secs(1));
        assert_eq!(e.endpoints, ["127.0.0.1:2379"]);
    }
}
