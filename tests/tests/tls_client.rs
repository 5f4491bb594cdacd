//! TLS between clients and poolguard's PostgreSQL door, with real clients (psql, psycopg with
//! libpq 18) and certificates made by `openssl` for each test: verify-full against poolguard's
//! CA, SCRAM-SHA-256-PLUS channel binding, `client_tls = "require"` refusing plaintext (28000),
//! `disable` answering SSLRequest 'N', direct TLS (ALPN), client certificates, and a reload
//! that swaps the certificate without dropping a connected TLS client.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use poolguard_e2e::tls::Pki;
use poolguard_e2e::*;

/// psql over TLS, verifying poolguard's certificate for `localhost` against `pki`'s CA.
fn psql_tls(port: u16, pki: &Pki, extra: &str, commands: &[&str]) -> Output {
    let conninfo = format!(
        "host=localhost hostaddr=127.0.0.1 port={port} user={USER} dbname={DB} sslmode=verify-full sslrootcert={} {extra}",
        pki.file("ca.crt")
    );
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-At", "-v", "ON_ERROR_STOP=1"])
        .arg(conninfo);
    for c in commands {
        cmd.arg("-c").arg(c);
    }
    run_pg(&mut cmd)
}

/// psql to 127.0.0.1 with this `sslmode`, no certificate checks.
fn psql_sslmode(port: u16, sslmode: &str, sql: &str) -> Output {
    run_pg(
        psql_command(port)
            .env("PGSSLMODE", sslmode)
            .args(["-c", sql]),
    )
}

/// The client failed, saying `why` on stderr.
fn refused(out: Output, why: &str) {
    assert!(!out.status.success(), "not refused: {}", stdout(&out));
    assert!(stderr(&out).contains(why), "{}", stderr(&out));
}

/// The psycopg client (tests/clients/pg_tls.py) in `query` mode.
fn psycopg_tls(port: u16, pki: &Pki, extra: &[&str]) -> Output {
    let mut cmd = Command::new("python3");
    cmd.arg(client_script("pg_tls.py"))
        .args(["query", &port.to_string(), &pki.file("ca.crt")])
        .args(extra);
    run_within(&mut cmd, Duration::from_secs(60))
}

fn startup_packet() -> Vec<u8> {
    let body = format!("user\0{USER}\0database\0{DB}\0\0");
    let mut p = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    p.extend_from_slice(&196_608u32.to_be_bytes());
    p.extend_from_slice(body.as_bytes());
    p
}

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

fn proxy_with(pg: &PgSandbox, front: String) -> Proxy {
    Proxy::start(
        pg,
        &PoolSpec {
            front,
            ..Default::default()
        },
    )
}

#[test]
fn verify_full_channel_binding_and_require() {
    let pki = Pki::new();
    let pg = sandbox(20);
    let admin = free_port();
    let proxy = Proxy::start(
        &pg,
        &PoolSpec {
            front: pki.front("require"),
            limits: format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\nusers = [\"{USER}\"]\n"),
            ..Default::default()
        },
    );

    // psql verifies poolguard's certificate and binds SCRAM to it.
    let out = psql_tls(
        proxy.port,
        &pki,
        "channel_binding=require",
        &["\\conninfo", "SELECT 40 + 2"],
    );
    assert!(out.status.success(), "psql over TLS: {}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("SSL connection (protocol: TLSv1.3"),
        "psql does not report TLS: {text}"
    );
    assert!(text.ends_with("42"), "{text}");

    // Megabytes both ways: TLS records that do not fit the socket at once are flushed.
    let big = "y".repeat(100_000);
    let out = psql_tls(
        proxy.port,
        &pki,
        "",
        &[
            "SELECT repeat('x', 4000000)",
            &format!("SELECT length('{big}')"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(
        text.len(),
        4_000_000 + 1 + 6,
        "{}",
        text.get(..20).unwrap_or("")
    );
    assert!(text.ends_with("\n100000"));

    // The admin console comes through the same door.
    let out = psql_tls(proxy.port, &pki, "dbname=pgbouncer", &["SHOW POOLS"]);
    assert!(out.status.success(), "console over TLS: {}", stderr(&out));
    assert!(stdout(&out).contains("bank|app"), "{}", stdout(&out));

    // psycopg (libpq 18) too, with PostgreSQL 17's direct TLS (no SSLRequest, ALPN).
    for extra in [
        &["channel_binding=require"][..],
        &["sslnegotiation=direct"][..],
    ] {
        let out = psycopg_tls(proxy.port, &pki, extra);
        assert_eq!(
            stdout(&out),
            "ssl=True value=42",
            "{extra:?}: {}",
            stderr(&out)
        );
    }

    // A plaintext client is refused with the message, and the SQLSTATE pg_hba gives (28000).
    refused(
        psql_sslmode(proxy.port, "disable", "SELECT 1"),
        "poolguard accepts only TLS connections on this port",
    );
    let answer = raw_exchange(proxy.port, &startup_packet());
    assert_eq!(sqlstate_of(&answer).as_deref(), Some("28000"));

    // Plaintext bytes after an SSLRequest are refused, never read into the TLS session.
    let mut injected = SSL_REQUEST.to_vec();
    injected.extend_from_slice(&startup_packet());
    let answer = raw_exchange(proxy.port, &injected);
    assert_eq!(sqlstate_of(&answer).as_deref(), Some("08P01"), "{answer:?}");
}

#[test]
fn disabled_door_answers_no_and_serves_plaintext() {
    let pg = sandbox(20);
    let proxy = proxy_with(&pg, String::new());
    refused(
        psql_sslmode(proxy.port, "require", "SELECT 1"),
        "server does not support SSL, but SSL was required",
    );
    let out = psql_sslmode(proxy.port, "prefer", "\\conninfo");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains("SSL"), "{}", stdout(&out));
    // 'N' to an SSLRequest, byte for byte.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&SSL_REQUEST).unwrap();
    let mut answer = [0u8; 1];
    std::io::Read::read_exact(&mut s, &mut answer).unwrap();
    assert_eq!(&answer, b"N");
}

#[test]
fn client_certificates_are_verified() {
    let pki = Pki::new();
    let pg = sandbox(20);
    let proxy = proxy_with(&pg, pki.front_verifying_clients());
    let with_cert = format!(
        "sslcert={} sslkey={}",
        pki.file("client.crt"),
        pki.file("client.key")
    );
    let out = psql_tls(proxy.port, &pki, &with_cert, &["SELECT 40 + 2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "42");
    // No certificate: the handshake fails (rustls: certificate required).
    let out = psql_tls(
        proxy.port,
        &pki,
        "sslcert=/nonexistent sslkey=/nonexistent",
        &["SELECT 1"],
    );
    assert!(
        !out.status.success(),
        "a client without a certificate got in"
    );
    // A certificate from another CA neither.
    let other = Pki::new();
    let foreign = format!(
        "sslcert={} sslkey={}",
        other.file("client.crt"),
        other.file("client.key")
    );
    let out = psql_tls(proxy.port, &pki, &foreign, &["SELECT 1"]);
    assert!(!out.status.success(), "a foreign certificate got in");
}

/// A psycopg client that stays connected and answers one query per line.
struct Held {
    child: std::process::Child,
    lines: BufReader<std::process::ChildStdout>,
}

impl Held {
    fn start(port: u16, pki: &Pki) -> Held {
        let mut child = Command::new("python3")
            .arg(client_script("pg_tls.py"))
            .args(["hold", &port.to_string(), &pki.file("ca.crt")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn pg_tls.py");
        let lines = BufReader::new(child.stdout.take().unwrap());
        let mut h = Held { child, lines };
        assert_eq!(h.line(), "ready ssl=True");
        h
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.lines.read_line(&mut l).expect("read from pg_tls.py");
        l.trim().to_owned()
    }

    fn query(&mut self, sql: &str) -> String {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{sql}").unwrap();
        stdin.flush().unwrap();
        self.line()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn reload_swaps_the_certificate_and_keeps_connected_clients() {
    let (old, new) = (Pki::new(), Pki::new());
    let pg = sandbox(20);
    let port = free_port();
    let spec = |front| PoolSpec {
        front,
        ..Default::default()
    };
    let proxy = Proxy::start_with(&config_for(&pg, port, &spec(old.front("allow"))), port);
    let mut held = Held::start(port, &old);
    assert_eq!(held.query("SELECT 'before'"), "before");

    std::fs::write(
        proxy.config_path(),
        config_for(&pg, port, &spec(new.front("allow"))),
    )
    .unwrap();
    proxy.signal("HUP");
    wait_for("the reload", || {
        proxy.log().contains("configuration reloaded")
    });
    // New connections get the new certificate: the new CA verifies it, the old one does not.
    let out = psycopg_tls(port, &new, &[]);
    assert_eq!(stdout(&out), "ssl=True value=42");
    let out = psycopg_tls(port, &old, &[]);
    assert!(
        stdout(&out).contains("CONNECT FAILED"),
        "the old CA still verifies: {}",
        stdout(&out)
    );
    // The client connected before the reload keeps its session.
    assert_eq!(held.query("SELECT 'after'"), "after");

    // A certificate that does not load is refused; the running one stays.
    let broken = new.path("broken.crt");
    std::fs::write(&broken, "not a certificate").unwrap();
    let bad_front = new
        .front("allow")
        .replace(&new.file("server.crt"), &broken.display().to_string());
    std::fs::write(proxy.config_path(), config_for(&pg, port, &spec(bad_front))).unwrap();
    proxy.signal("HUP");
    wait_for("the refused reload", || {
        proxy.log().contains("reload refused")
    });
    assert!(
        proxy.log().contains("broken.crt"),
        "the refusal does not name the file:\n{}",
        proxy.log()
    );
    let out = psycopg_tls(port, &new, &[]);
    assert_eq!(stdout(&out), "ssl=True value=42");
    assert_eq!(held.query("SELECT 'still'"), "still");
}
