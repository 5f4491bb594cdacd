//! The circuit breaker of a backend host, through the real binary against a sandbox PostgreSQL
//! that is stopped while poolguard runs: after `breaker_failures` failed connects, clients get
//! 57P03 at once with a retry hint and no further connect is attempted; once the server is back
//! and the cool-down is over, one probe connect closes the breaker and clients are served again.
//! The transitions are events on `/api/events`.

use std::time::{Duration, Instant};

use poolguard_e2e::admin::*;
use poolguard_e2e::*;

mod hosts_common;
use hosts_common::event_messages;

const FAILURES: u32 = 3;

/// What one statement through poolguard came to.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Ok,
    /// SQLSTATE and message of the error poolguard (or the server) sent.
    Error(String, String),
    /// The connection was closed under the client (a server lost mid-use is FATAL).
    Closed(String),
}

struct Client {
    rt: tokio::runtime::Runtime,
    conn_str: String,
    client: Option<tokio_postgres::Client>,
}

impl Client {
    fn new(proxy: &Proxy) -> Client {
        Client {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            conn_str: format!("{} connect_timeout=10", proxy.conn_str()),
            client: None,
        }
    }

    /// `SELECT 1`, (re)connecting first if needed; bounded by a 20 s timeout.
    fn select_one(&mut self) -> Outcome {
        let conn_str = self.conn_str.clone();
        let mut client = self.client.take().filter(|c| !c.is_closed());
        let outcome = self.rt.block_on(async {
            if client.is_none() {
                match tokio_postgres::connect(&conn_str, tokio_postgres::NoTls).await {
                    Ok((c, conn)) => {
                        tokio::spawn(conn);
                        client = Some(c);
                    }
                    Err(e) => return describe(&e),
                }
            }
            let c = client.as_ref().expect("connected");
            match tokio::time::timeout(Duration::from_secs(20), c.simple_query("SELECT 1")).await {
                Ok(Ok(_)) => Outcome::Ok,
                Ok(Err(e)) => describe(&e),
                Err(_) => Outcome::Closed("no answer within 20s".into()),
            }
        });
        self.client = client;
        outcome
    }
}

fn describe(e: &tokio_postgres::Error) -> Outcome {
    match e.as_db_error() {
        Some(db) => Outcome::Error(db.code().code().to_owned(), db.message().to_owned()),
        None => Outcome::Closed(e.to_string()),
    }
}

fn is_refusal(o: &Outcome) -> bool {
    matches!(o, Outcome::Error(code, msg) if code == "57P03" && msg.contains("circuit breaker") && msg.contains("retry in"))
}

fn is_connect_failure(o: &Outcome) -> bool {
    matches!(o, Outcome::Error(code, msg) if code == "57P03" && msg.contains("cannot reach PostgreSQL"))
}

fn connect_errors(admin: u16) -> f64 {
    metric(
        &http_get(admin, "/metrics"),
        "poolguard_pool_server_connect_errors_total",
        &["pool=\"bank/app\""],
    )
    .unwrap_or(0.0)
}

#[test]
fn breaker_opens_refuses_without_connecting_and_recovers_after_the_cooldown() {
    let mut pg = sandbox(30);
    let admin = free_port();
    let port = free_port();
    let spec = PoolSpec {
        pool_size: 2,
        limits: format!("acquire_timeout = \"10s\"\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"),
        ..PoolSpec::default()
    };
    let config = config_for(&pg, port, &spec).replacen(
        "max_connections = 10\n",
        &format!(
            "max_connections = 10\nconnect_timeout = \"2s\"\nbreaker_failures = {FAILURES}\n\
             breaker_cooldown = \"3s\"\nbreaker_max_cooldown = \"6s\"\n"
        ),
        1,
    );
    assert!(config.contains("breaker_failures"), "{config}");
    let proxy = Proxy::start_with(&config, port);
    let mut client = Client::new(&proxy);
    assert_eq!(client.select_one(), Outcome::Ok);
    let errors_before = connect_errors(admin);

    pg.stop().unwrap();

    // Until the breaker opens, each statement costs one failed connect (the pool never
    // retries). The first statement may instead find the pooled server connection dead.
    let mut outcomes = Vec::new();
    for _ in 0..(FAILURES + 10) {
        let o = client.select_one();
        let refused = is_refusal(&o);
        outcomes.push(o);
        if refused {
            break;
        }
    }
    eprintln!("until the first refusal: {outcomes:#?}");
    assert!(
        outcomes.last().is_some_and(is_refusal),
        "no refusal with a retry hint"
    );
    let failed_connects = outcomes.iter().filter(|o| is_connect_failure(o)).count();
    assert_eq!(
        failed_connects, FAILURES as usize,
        "the breaker opens after exactly breaker_failures failed connects"
    );
    // Anything else is the pooled connection found dead: the server's own 57P01 relayed, or
    // poolguard's "server closed the connection" (57P03, FATAL), or the socket closing.
    assert!(
        outcomes.iter().all(|o| match o {
            Outcome::Error(code, _) => code.starts_with("57P"),
            Outcome::Closed(_) => true,
            Outcome::Ok => false,
        }),
        "{outcomes:#?}"
    );

    // While open: refused at once, 57P03 with the hint, and no connect attempt behind it.
    // A probe may happen if the cool-down runs out meanwhile; it shows up as a connect failure.
    let mut refusals = 0;
    let mut probes = 0;
    for _ in 0..20 {
        let o = client.select_one();
        if is_refusal(&o) {
            refusals += 1;
        } else if is_connect_failure(&o) {
            probes += 1;
        } else {
            panic!("unexpected while the server is down: {o:?}");
        }
    }
    let attempts = connect_errors(admin) - errors_before;
    eprintln!("breaker open: {refusals} refusals, {probes} probes, {attempts} connect attempts");
    assert!(refusals > 0);
    assert_eq!(
        attempts,
        f64::from(FAILURES) + f64::from(probes),
        "refusals took no connect attempt: connect errors = failures + probes"
    );

    pg.start_again().unwrap();
    let started = Instant::now();
    let mut recovered = None;
    for _ in 0..120 {
        match client.select_one() {
            Outcome::Ok => {
                recovered = Some(started.elapsed());
                break;
            }
            o => assert!(is_refusal(&o) || is_connect_failure(&o), "{o:?}"),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let recovered = recovered.expect("clients are served again after the cool-down");
    eprintln!("server back: first success {recovered:?} after the restart");
    for _ in 0..5 {
        assert_eq!(client.select_one(), Outcome::Ok);
    }

    let events = wait_for(Duration::from_secs(10), "breaker events", || {
        let ev = event_messages(admin, "breaker");
        ev.iter()
            .any(|m| m.contains("half-open -> closed"))
            .then_some(ev)
    });
    eprintln!("breaker events: {events:#?}");
    assert!(
        events.iter().any(|m| m.contains("closed -> open")),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|m| m.contains("open -> half-open")),
        "{events:#?}"
    );
    let log = proxy.log();
    assert!(log.contains("circuit breaker opened"), "{log}");
}
