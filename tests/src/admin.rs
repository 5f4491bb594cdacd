//! Admin-side helpers: the admin console's configuration, HTTP GET against `[admin] listen`,
//! reading one Prometheus sample, a tiny webhook receiver that records every POST body, and
//! waiting for a condition.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The admin console's user (`[admin] users`, database `pgbouncer` on the PostgreSQL door).
pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-secret";

/// Config lines for the end of a config (after `[limits]`): `[admin]` with its HTTP listener on
/// a free port and [`ADMIN`] on the console, and [`ADMIN`]'s `[[users]]` entry.
pub fn console_config() -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:{admin}"
users = ["{ADMIN}"]

[[users]]
name = "{ADMIN}"
password = "{ADMIN_PASSWORD}"
"#,
        admin = crate::free_port()
    )
}

/// `GET path` on 127.0.0.1:`port`; the body (panics on a non-200 status).
/// Sends [`ADMIN_TOKEN`], which a proxy without tokens ignores (reads are open on loopback).
pub fn http_get(port: u16, path: &str) -> String {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (status, body) = http_request_with(port, "GET", path, &[("Authorization", &auth)]);
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// `POST path` (empty body) on 127.0.0.1:`port`; the status code and the body.
pub fn http_post(port: u16, path: &str) -> (u16, String) {
    http_request(port, "POST", path)
}

/// The admin token the tests' proxies get (`POOLGUARD_ADMIN_TOKEN`) where they change state.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// `POST path` with the admin token; the status code and the body.
pub fn http_post_admin(port: u16, path: &str) -> (u16, String) {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    http_request_with(port, "POST", path, &[("Authorization", &auth)])
}

fn http_request(port: u16, method: &str, path: &str) -> (u16, String) {
    http_request_with(port, method, path, &[])
}

/// Any request with these headers (`Host: localhost` unless one is given); status and body.
pub fn http_request_with(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = String::new();
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str("Host: localhost\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    write!(
        s,
        "{method} {path} HTTP/1.1\r\n{head}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read admin answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("http answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// The value of the first sample of `name` whose labels contain every `labels` fragment.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|f| l.contains(f)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `f` every 200 ms until it returns `Some`, or panics after `limit` with `what`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An HTTP server on a free port that answers 200 to every POST and keeps the bodies.
pub struct WebhookReceiver {
    pub port: u16,
    pub bodies: Arc<Mutex<Vec<String>>>,
}

impl WebhookReceiver {
    pub fn start() -> WebhookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let keep = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut r = BufReader::new(stream);
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                if r.read_exact(&mut body).is_ok() {
                    keep.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&body).into_owned());
                }
                let mut s = r.into_inner();
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        WebhookReceiver { port, bodies }
    }

    pub fn received(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}
