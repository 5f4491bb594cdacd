//! Failover through the real binary: a sandbox primary and its streaming standby behind one
//! poolguard backend (primary first, health checks every 250 ms), clients running write
//! transactions in a loop. The primary is killed and the standby promoted; the clients resume
//! through the same poolguard address, and their writes land on the promoted server.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use poolguard_e2e::recorder::{Recorder, Records};
use poolguard_e2e::*;

mod hosts_common;
use hosts_common::{event_messages, primary_and_standby_config, primary_with_standby};

const WRITERS: usize = 4;
/// Every loop here ends by this much at the latest, whatever happens.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// One write transaction as a client saw it.
#[derive(Debug, Clone)]
struct Txn {
    started: Instant,
    ended: Instant,
    note: String,
    error: Option<String>,
}

/// Clients writing `BEGIN; INSERT ...; COMMIT` through poolguard, reconnecting after errors.
fn start_writers(conn_str: String) -> Recorder<Txn> {
    Recorder::start(move |stop, log| async move {
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| tokio::spawn(write_loop(w, conn_str.clone(), stop.clone(), log.clone())))
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    })
}

async fn write_loop(w: usize, conn_str: String, stop: Arc<AtomicBool>, log: Records<Txn>) {
    let deadline = Instant::now() + RUN_LIMIT;
    let mut client: Option<tokio_postgres::Client> = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        seq += 1;
        let note = format!("w{w}-{seq}");
        let started = Instant::now();
        let result = tokio::time::timeout(
            Duration::from_secs(20),
            one_write(&mut client, &conn_str, &note),
        )
        .await
        .unwrap_or_else(|_| Err("no answer within 20s".into()));
        let failed = result.is_err();
        if failed {
            client = None;
        }
        log.lock().unwrap().push(Txn {
            started,
            ended: Instant::now(),
            note,
            error: result.err(),
        });
        let pause = if failed { 50 } else { 20 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

async fn one_write(
    client: &mut Option<tokio_postgres::Client>,
    conn_str: &str,
    note: &str,
) -> Result<(), String> {
    if client.as_ref().is_none_or(|c| c.is_closed()) {
        let (c, conn) = tokio_postgres::connect(conn_str, tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        *client = Some(c);
    }
    let c = client.as_ref().expect("connected");
    let sql = format!("BEGIN; INSERT INTO t (note) VALUES ('{note}'); COMMIT");
    c.simple_query(&sql)
        .await
        .map(drop)
        .map_err(|e| match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        })
}

fn failover_config(primary: &PgSandbox, standby: &PgSandbox, port: u16, admin: u16) -> String {
    let spec = PoolSpec {
        pool_size: 4,
        limits: format!("acquire_timeout = \"5s\"\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"),
        ..PoolSpec::default()
    };
    primary_and_standby_config(primary, standby, port, &spec)
}

#[test]
fn writes_resume_on_the_promoted_standby_through_the_same_address() {
    let (mut primary, standby) = primary_with_standby();
    assert!(standby.is_in_recovery().unwrap());

    let (port, admin) = (free_port(), free_port());
    let proxy = Proxy::start_with(&failover_config(&primary, &standby, port, admin), port);
    let writers = start_writers(format!("{} connect_timeout=10", proxy.conn_str()));
    writers.wait_for_record("writes through poolguard to the primary", |t| {
        t.error.is_none()
    });
    std::thread::sleep(Duration::from_millis(500));

    primary.kill();
    let killed = Instant::now();
    // Let the clients run into the dead primary (errors, then the breaker's fast refusals).
    std::thread::sleep(Duration::from_secs(1));
    let promote_called = Instant::now();
    standby.promote().expect("promote the standby");
    let promoted = Instant::now();

    let first = writers.wait_for_record("a write after the promotion", |t| {
        t.error.is_none() && t.started >= promoted
    });
    std::thread::sleep(Duration::from_secs(1));
    let txns = writers.finish();

    let first_after_call = txns
        .iter()
        .filter(|t| t.error.is_none() && t.ended >= promote_called)
        .map(|t| t.ended)
        .min()
        .expect("a success after the promotion");
    eprintln!(
        "failover: pg_ctl promote took {:?}; first successful transaction {:?} after promote() \
         returned ({:?} after it was called, {:?} after the primary was killed)",
        promoted - promote_called,
        first.ended.saturating_duration_since(promoted),
        first_after_call - promote_called,
        first_after_call - killed,
    );
    let failed_between = txns
        .iter()
        .filter(|t| t.started >= killed && t.ended <= first_after_call)
        .filter_map(|t| t.error.clone())
        .collect::<Vec<_>>();
    eprintln!(
        "{} transactions failed between the kill and the first success; the last few: {:#?}",
        failed_between.len(),
        &failed_between[failed_between.len().saturating_sub(3)..]
    );
    // Nothing can be acknowledged between the kill and the promotion: the old primary is
    // gone and poolguard never sends writes to a read-only standby.
    assert!(
        !txns
            .iter()
            .any(|t| t.error.is_none() && t.started >= killed && t.ended < promote_called),
        "a write was acknowledged while no host was writable"
    );

    // Every write that started after the promotion and succeeded is on the promoted server.
    assert!(!standby.is_in_recovery().unwrap());
    let after: Vec<&Txn> = txns
        .iter()
        .filter(|t| t.error.is_none() && t.started >= promoted)
        .collect();
    assert!(!after.is_empty());
    let on_new_primary: HashSet<String> = standby
        .psql_as(USER, PASSWORD, DB, "SELECT note FROM t")
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let missing: Vec<&str> = after
        .iter()
        .map(|t| t.note.as_str())
        .filter(|n| !on_new_primary.contains(*n))
        .collect();
    assert!(missing.is_empty(), "acknowledged but absent: {missing:?}");
    eprintln!(
        "{} writes after the promotion, all on the promoted server",
        after.len()
    );

    let failovers = event_messages(admin, "failover");
    eprintln!("failover events: {failovers:#?}");
    assert_eq!(failovers.len(), 1, "{failovers:#?}");
    assert!(
        failovers[0].contains(&format!("from 127.0.0.1:{}", primary.port()))
            && failovers[0].contains(&format!("to 127.0.0.1:{}", standby.port())),
        "{}",
        failovers[0]
    );
    let log = proxy.log();
    assert!(
        log.contains("failover: writes move to another host"),
        "{log}"
    );
}
