//! Hostile clients cost a bounded amount ("fail closed"), against a real PostgreSQL through the
//! real binary:
//! - a flood of silent sockets is refused at accept beyond the login caps (53400), so a
//!   poolguard limited to 1,024 file descriptors keeps few of them and still serves psql;
//! - a message header announcing more than `max_message_size` is refused at the header (08P01)
//!   and costs no buffer (RSS is a bound, not a timing);
//! - an unknown user's SCRAM exchange shows a stable salt shaped like a real one and fails like
//!   a wrong password;
//! - a socket that never logs in is closed after `client_login_timeout`;
//! - a client's named statements are capped (54000).
//!
//! Nothing here depends on timing: waits are for events (an answer, end of file), with generous
//! upper bounds only so a broken build fails instead of hanging.

#![allow(clippy::err_expect)] // tokio-postgres clients are not Debug, so expect_err is not available.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use poolguard_e2e::fds::open_fds;
use poolguard_e2e::pgc::{code, connect_to, message};
use poolguard_e2e::*;
use poolguard_pg::backend::{parse_authentication, parse_error_notice, Authentication};
use poolguard_pg::framing::decode_frame;
use poolguard_pg::scram::ScramClient;
use poolguard_pg::{frontend, startup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Generous: only there so that a broken build fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(60);

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// Reads messages until one with `tag` arrives; errors on end of file first.
async fn read_until(s: &mut TcpStream, buf: &mut BytesMut, tag: u8) -> poolguard_pg::Frame {
    tokio::time::timeout(PATIENCE, async {
        loop {
            while let Some(f) = decode_frame(buf, 1 << 20).expect("well-framed answer") {
                if f.tag == tag {
                    return f;
                }
                assert_ne!(
                    f.tag,
                    b'E',
                    "unexpected error: {:?}",
                    parse_error_notice(&f.body)
                );
            }
            let n = s.read_buf(buf).await.expect("read");
            assert_ne!(n, 0, "poolguard closed the connection early");
        }
    })
    .await
    .expect("poolguard answered")
}

/// Everything until end of file, then the first ErrorResponse in it: (SQLSTATE, message).
async fn final_error(s: &mut TcpStream, mut buf: BytesMut) -> (String, String) {
    let mut rest = Vec::new();
    // An error (a reset after poolguard's answer) still leaves what was read in `rest`.
    let _ = tokio::time::timeout(PATIENCE, s.read_to_end(&mut rest))
        .await
        .expect("poolguard closed the connection");
    buf.extend_from_slice(&rest);
    while let Ok(Some(f)) = decode_frame(&mut buf, 1 << 20) {
        if f.tag == b'E' {
            let n = parse_error_notice(&f.body).expect("ErrorResponse");
            return (n.code, n.message);
        }
    }
    panic!("no ErrorResponse before end of file");
}

/// Sends a startup packet for `user` and reads up to the SCRAM server-first.
struct Scram {
    stream: TcpStream,
    buf: BytesMut,
    client: ScramClient,
    server_first: Vec<u8>,
}

impl Scram {
    async fn begin(port: u16, user: &str, password: &str) -> Scram {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut out = BytesMut::new();
        startup::encode_startup(&mut out, &[("user", user), ("database", DB)]);
        stream.write_all(&out).await.expect("send startup");
        let mut buf = BytesMut::new();
        let f = read_until(&mut stream, &mut buf, b'R').await;
        assert!(matches!(
            parse_authentication(&f.body),
            Ok(Authentication::Sasl { .. })
        ));
        let client = ScramClient::new(password);
        out.clear();
        frontend::sasl_initial_response(&mut out, "SCRAM-SHA-256", &client.client_first());
        stream.write_all(&out).await.expect("send client-first");
        let f = read_until(&mut stream, &mut buf, b'R').await;
        let Ok(Authentication::SaslContinue(server_first)) = parse_authentication(&f.body) else {
            panic!("expected SASLContinue");
        };
        Scram {
            stream,
            buf,
            client,
            server_first: server_first.to_vec(),
        }
    }

    /// The salt (base64) and iteration count poolguard announced.
    fn salt_and_iterations(&self) -> (String, String) {
        let text = String::from_utf8_lossy(&self.server_first);
        let attr = |k: &str| {
            text.split(',')
                .find_map(|p| p.strip_prefix(k))
                .unwrap_or_default()
                .to_owned()
        };
        (attr("s="), attr("i="))
    }

    /// Sends the client's proof; the stream, just past AuthenticationOk on success.
    async fn finish(mut self) -> (TcpStream, BytesMut) {
        let fin = self
            .client
            .handle_server_first(&self.server_first)
            .expect("client-final");
        let mut out = BytesMut::new();
        frontend::sasl_response(&mut out, &fin);
        self.stream
            .write_all(&out)
            .await
            .expect("send client-final");
        (self.stream, self.buf)
    }
}

/// A client logged in through raw messages, at its first ReadyForQuery.
async fn logged_in(port: u16) -> TcpStream {
    let (mut s, mut buf) = Scram::begin(port, USER, PASSWORD).await.finish().await;
    read_until(&mut s, &mut buf, b'Z').await;
    assert!(buf.is_empty());
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_flood_is_refused_at_accept_and_psql_still_logs_in() {
    let pg = sandbox(20);
    let spec = PoolSpec {
        // Long enough that no silent socket is timed out while the test runs: the counts
        // below are then exact, whatever the machine's speed.
        limits: "client_login_timeout = \"10m\"\nmax_logins_per_address = 32\nmax_logins_in_progress = 256".into(),
        ..Default::default()
    };
    let port = free_port();
    let proxy = Proxy::start_wrapped(
        &config_for(&pg, port, &spec),
        port,
        &["prlimit", "--nofile=1024:1024", "--"],
        &[],
    );
    let pid = proxy.pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default();
    assert!(nofile.contains(" 1024 "), "{nofile}");
    let fds_before = open_fds(pid);

    // The flood comes from another loopback address, so the per-address cap it meets is not
    // the one psql (from 127.0.0.1) meets.
    let target: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut silent = Vec::new();
    for _ in 0..1000 {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(([127, 0, 0, 2], 0).into())
            .expect("bind 127.0.0.2");
        silent.push(socket.connect(target).await.expect("connect"));
    }
    // Sockets beyond the cap get their refusal and end of file; the admitted ones hear
    // nothing (until client_login_timeout). Wait for exactly the refusals.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut held = Vec::new();
    for s in silent {
        let (mut read, write) = s.into_split();
        held.push(write);
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut answer = Vec::new();
            let _ = read.read_to_end(&mut answer).await;
            let _ = tx.send((answer, read));
        });
    }
    let mut refused = 0;
    let mut kept_open = Vec::new();
    while refused < 1000 - 32 {
        let (answer, read) = tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .expect("refusals arrive")
            .expect("channel open");
        assert_eq!(
            sqlstate_of(&answer).as_deref(),
            Some("53400"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        assert!(String::from_utf8_lossy(&answer).contains("max_logins_per_address = 32"));
        refused += 1;
        kept_open.push(read); // our side stays open: the count below is poolguard's doing
    }
    let fds_during = open_fds(pid);
    eprintln!(
        "1000 silent sockets: {refused} refused at accept; poolguard fds {fds_before} before, {fds_during} with the flood connected (limit 1024)"
    );
    assert!(
        fds_during <= fds_before + 32 + 4,
        "poolguard holds {fds_during} fds (was {fds_before}): the refused sockets were not closed"
    );

    // A real client still gets in: logins in progress are 32 of 256, none from its address.
    let out = psql(proxy.port, "SELECT 41 + 1");
    assert!(out.status.success(), "psql failed: {}", stderr(&out));
    assert_eq!(stdout(&out), "42");
    eprintln!(
        "after psql: poolguard fds {} (the pool keeps its server connection)",
        open_fds(pid)
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused_before_any_body_is_buffered() {
    let pg = sandbox(20);
    let spec = PoolSpec {
        front: "max_message_size = \"16MiB\"".into(),
        ..Default::default()
    };
    let proxy = Proxy::start(&pg, &spec);
    let pid = proxy.pid();
    // One ordinary client first, so the pool and its server connection exist before the
    // baseline: what follows is measured against a warm proxy.
    let mut warm = logged_in(proxy.port).await;
    let mut out = BytesMut::new();
    frontend::query(&mut out, "SELECT 1");
    warm.write_all(&out).await.expect("query");
    read_until(&mut warm, &mut BytesMut::new(), b'Z').await;
    let rss_before = rss_kib(pid);

    // In the relay: three logged-in clients each announce a 60 MiB Query and try to send all
    // of it. Buffered, that would be 180 MiB; refused at the header, poolguard reads at most
    // what one read brings before it closes, and the writes fail.
    for _ in 0..3 {
        let s = logged_in(proxy.port).await;
        let (mut read, mut write) = s.into_split();
        let writer = tokio::spawn(async move {
            let mut header = vec![b'Q'];
            header.extend_from_slice(&((60u32 << 20) + 4).to_be_bytes());
            write.write_all(&header).await?;
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..(60 * 1024 / 64) {
                write.write_all(&chunk).await?;
            }
            std::io::Result::Ok(())
        });
        let mut answer = Vec::new();
        // A reset after poolguard's answer still leaves what was read in `answer`.
        let _ = tokio::time::timeout(PATIENCE, read.read_to_end(&mut answer))
            .await
            .expect("poolguard closed the connection");
        let sent_all = writer.await.expect("writer");
        assert!(
            sent_all.is_err(),
            "poolguard read a 60 MiB body it should have refused"
        );
        assert_eq!(sqlstate_of(&answer).as_deref(), Some("08P01"));
        assert!(String::from_utf8_lossy(&answer).contains("max_message_size"));
    }
    // At login: a SASL response announcing 60 MiB is refused the same way.
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    let mut out = BytesMut::new();
    startup::encode_startup(&mut out, &[("user", USER), ("database", DB)]);
    out.extend_from_slice(b"p");
    out.extend_from_slice(&((60u32 << 20) + 4).to_be_bytes());
    s.write_all(&out).await.unwrap();
    let (code, message) = final_error(&mut s, BytesMut::new()).await;
    assert_eq!(code, "08P01", "{message}");

    let rss_after = rss_kib(pid);
    eprintln!(
        "poolguard RSS: {rss_before} KiB before, {rss_after} KiB after 3 x 60 MiB headers (max_message_size 16MiB)"
    );
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // The proxy still serves.
    let out = psql(proxy.port, "SELECT 1");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_looks_like_a_wrong_password() {
    let pg = sandbox(20);
    let proxy = Proxy::start(&pg, &PoolSpec::default());

    let first = Scram::begin(proxy.port, "mallory", "guess").await;
    let second = Scram::begin(proxy.port, "mallory", "guess").await;
    let real = Scram::begin(proxy.port, USER, "wrong").await;
    let (salt, iterations) = first.salt_and_iterations();
    let (real_salt, real_iterations) = real.salt_and_iterations();
    eprintln!("unknown user: s={salt} i={iterations}; {USER}: s={real_salt} i={real_iterations}");
    assert_eq!(
        second.salt_and_iterations(),
        (salt.clone(), iterations.clone()),
        "stable salt"
    );
    assert_eq!(salt.len(), real_salt.len(), "same salt length");
    assert_eq!(iterations, real_iterations, "same iteration count");
    assert_ne!(salt, real_salt);
    drop(second);

    let (mut s, buf) = first.finish().await;
    let unknown = final_error(&mut s, buf).await;
    let (mut s, buf) = real.finish().await;
    let wrong = final_error(&mut s, buf).await;
    assert_eq!(unknown.0, "28P01", "{unknown:?}");
    assert_eq!(
        (wrong.0, wrong.1.replace(USER, "mallory")),
        unknown,
        "the same answer, but for the name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_never_logs_in_is_closed() {
    let pg = sandbox(20);
    let spec = PoolSpec {
        limits: "client_login_timeout = \"1s\"".into(),
        ..Default::default()
    };
    let proxy = Proxy::start(&pg, &spec);
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    // Sends nothing. A generous bound only: the assertion is that poolguard closes it.
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut answer))
        .await
        .expect("poolguard closed the silent socket within 30 s")
        .expect("read");
    assert_eq!(sqlstate_of(&answer).as_deref(), Some("08P01"));
    assert!(String::from_utf8_lossy(&answer).contains("client_login_timeout"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statements_per_client_are_capped() {
    let pg = sandbox(20);
    let spec = PoolSpec {
        front: "max_client_prepared_statements = 3".into(),
        ..Default::default()
    };
    let proxy = Proxy::start(&pg, &spec);
    let c = connect_to(&proxy.conn_str()).await.expect("connect");
    let mut kept = Vec::new();
    for i in 0..3 {
        kept.push(c.prepare(&format!("SELECT {i}")).await.expect("prepare"));
    }
    let e = c
        .prepare("SELECT 3")
        .await
        .err()
        .expect("the fourth is refused");
    assert_eq!(code(&e), "54000", "{}", message(&e));
    assert!(message(&e).contains("max_client_prepared_statements = 3"));
    // The client stays usable, and a statement closed makes room again.
    let row = c.query_one(&kept[0], &[]).await.expect("still works");
    assert_eq!(row.get::<_, i32>(0), 0);
    drop(kept.pop());
    // tokio-postgres closes a dropped statement on its next request.
    c.simple_query("SELECT 1").await.expect("query");
    c.prepare("SELECT 4").await.expect("room again");
}
