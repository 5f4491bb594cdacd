//! A real Patroni failover behind poolguard: one etcd, two Patroni daemons (Debian's `patroni`
//! 3.0, PostgreSQL 15 in tempdirs), and poolguard with `[fleet] patroni_scope` and a backend
//! listing both nodes. A client writes through poolguard in a loop; the leader's Patroni gets
//! SIGTERM (it stops its PostgreSQL and releases the leader key, the replica promotes). Writes
//! resume through the same poolguard address on the promoted node; the time from the SIGTERM
//! to the first write acknowledged there is measured and printed, not asserted.
//!
//! Nothing waits for a fixed time: every wait polls a condition (Patroni's REST API, the
//! server's own views, the client's log) under a generous deadline.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use poolguard_e2e::admin::{http_get, metric, wait_for};
use poolguard_e2e::etcd::EtcdServer;
use poolguard_e2e::patroni::PatroniCluster;
use poolguard_e2e::pgc::{code, connect_to, message, scalar};
use poolguard_e2e::recorder::{Recorder, Records};
use poolguard_e2e::{free_port, stdout, Proxy, DB, PASSWORD, USER};

/// The writer stops by this much at the latest, whatever happens.
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// ... or after this many writes.
const MAX_WRITES: u64 = 20_000;

/// One write as the client saw it: where it landed (the server's port), or its error.
#[derive(Debug, Clone)]
struct Write {
    started: Instant,
    ended: Instant,
    note: String,
    landed: Result<u16, String>,
}

/// One client writing `INSERT ... RETURNING inet_server_port()` through poolguard back to back,
/// reconnecting after an error.
async fn write_loop(conn: String, stop: Arc<AtomicBool>, log: Records<Write>) {
    let deadline = Instant::now() + RUN_LIMIT;
    let mut client = None;
    for seq in 0..MAX_WRITES {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        let note = format!("w{seq}");
        let started = Instant::now();
        let landed =
            tokio::time::timeout(Duration::from_secs(20), write(&mut client, &conn, &note))
                .await
                .unwrap_or_else(|_| Err("no answer within 20s".into()));
        let pause = if landed.is_ok() { 10 } else { 50 };
        if landed.is_err() {
            client = None;
        }
        log.lock().unwrap().push(Write {
            started,
            ended: Instant::now(),
            note,
            landed,
        });
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

async fn write(
    client: &mut Option<tokio_postgres::Client>,
    conn: &str,
    note: &str,
) -> Result<u16, String> {
    let describe = |e: tokio_postgres::Error| format!("{} {}", code(&e), message(&e));
    if client.as_ref().is_none_or(|c| c.is_closed()) {
        *client = Some(connect_to(conn).await.map_err(describe)?);
    }
    let c = client.as_ref().ok_or("not connected")?;
    let sql = format!("INSERT INTO t (note) VALUES ('{note}') RETURNING inet_server_port()");
    scalar(c, &sql)
        .await
        .map_err(describe)?
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| "no port in the answer".into())
}

/// poolguard in front of both nodes, following the cluster's leader key.
fn proxy_config(cluster: &PatroniCluster, etcd: &EtcdServer, port: u16, admin: u16) -> String {
    let hosts: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("\"{}\"", n.addr()))
        .collect();
    format!(
        r#"
[admin]
listen = "127.0.0.1:{admin}"

[postgres]
listen = "127.0.0.1:{port}"

[[backends]]
name = "pg"
protocol = "postgres"
hosts = [{hosts}]
max_connections = 10
connect_timeout = "2s"
breaker_failures = 3
breaker_cooldown = "1s"

[[databases]]
name = "{DB}"
backend = "pg"
pool_mode = "transaction"
pool_size = 4

[[users]]
name = "{USER}"
password = "{PASSWORD}"

[limits]
acquire_timeout = "5s"

[fleet]
etcd_endpoints = ["{etcd}"]
instance = "poolguard-a"
lease_ttl = "3s"
patroni_scope = "{scope}"
"#,
        hosts = hosts.join(", "),
        etcd = etcd.endpoint(),
        scope = cluster.scope,
    )
}

/// `pg_is_in_recovery()` and `inet_server_port()` of the write host, asked through poolguard.
fn write_host_through(proxy: &Proxy, rt: &tokio::runtime::Runtime) -> Option<String> {
    rt.block_on(async {
        let c = connect_to(&proxy.conn_str()).await.ok()?;
        scalar(
            &c,
            "SELECT pg_is_in_recovery()::text || ' ' || inet_server_port()::text",
        )
        .await
        .ok()?
    })
}

#[test]
fn writes_resume_on_the_node_patroni_promotes() {
    let etcd = EtcdServer::start();
    let set_up = Instant::now();
    let mut cluster = PatroniCluster::start(&etcd, 2);
    cluster.create_app_table();
    let (old, old_port) = {
        let leader = cluster.wait_leader(None);
        (leader.name.clone(), leader.pg_port)
    };
    eprintln!(
        "patroni: scope {} up in {:?}, leader {old} on port {old_port}",
        cluster.scope,
        set_up.elapsed()
    );

    let (port, admin) = (free_port(), free_port());
    let proxy = Proxy::start_with(&proxy_config(&cluster, &etcd, port, admin), port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(
        wait_for(
            Duration::from_secs(30),
            "the leader through poolguard",
            || write_host_through(&proxy, &rt)
        ),
        format!("false {old_port}")
    );
    let conn = format!("{} connect_timeout=10", proxy.conn_str());
    let writer = Recorder::start(move |stop, log| write_loop(conn, stop, log));
    writer.wait_for_record("a write on the leader", |w| w.landed == Ok(old_port));

    // The leader's Patroni stops: its PostgreSQL shuts down, the leader key goes, the replica
    // takes it and promotes.
    let stopped = Instant::now();
    cluster.node_mut(&old).terminate();
    let (new, new_port) = {
        let leader = cluster.wait_leader(Some(&old));
        (leader.name.clone(), leader.pg_port)
    };
    let promoted_seen = stopped.elapsed();
    let first = writer.wait_for_record("a write on the promoted node", |w| {
        w.landed == Ok(new_port) && w.ended >= stopped
    });
    // A few more writes on the new leader, so that the checks below see a steady state.
    let first_count = writer.records().len();
    wait_for(Duration::from_secs(60), "writes after the first", || {
        (writer.records().len() >= first_count + 20).then_some(())
    });
    let writes = writer.finish();
    assert!(
        cluster.node_mut(&old).wait_exit(Duration::from_secs(60)),
        "the old leader's patroni did not exit after SIGTERM"
    );

    // The errors in between, by kind (SQLSTATE and the message's start), first seen first.
    let mut failed: Vec<(String, usize, Duration)> = Vec::new();
    for w in writes
        .iter()
        .filter(|w| w.ended >= stopped && w.ended <= first.ended)
    {
        if let Err(e) = &w.landed {
            let kind: String = e.chars().take(60).collect();
            match failed.iter_mut().find(|(k, _, _)| *k == kind) {
                Some((_, n, _)) => *n += 1,
                None => failed.push((kind, 1, w.ended - stopped)),
            }
        }
    }
    eprintln!(
        "patroni failover: SIGTERM to {old}'s patroni -> {new} answered /leader within {promoted_seen:?}; \
         first write acknowledged on {new} (port {new_port}) through poolguard {:?} after the SIGTERM; \
         failed writes in between (kind, count, first seen after the SIGTERM): {failed:#?}",
        first.ended - stopped,
    );

    // The write host, asked through poolguard, is the promoted node and no longer in recovery.
    assert_eq!(
        write_host_through(&proxy, &rt).as_deref(),
        Some(format!("false {new_port}").as_str())
    );
    // Every write acknowledged after the first one on the new leader landed there too, and
    // every write acknowledged there is in its table.
    let stray: Vec<&Write> = writes
        .iter()
        .filter(|w| w.started >= first.ended && w.landed.is_ok())
        .filter(|w| w.landed != Ok(new_port))
        .collect();
    assert!(
        stray.is_empty(),
        "writes elsewhere after the failover: {stray:?}"
    );
    let on_new: HashSet<String> = stdout(&cluster.node_mut(&new).psql_app("SELECT note FROM t"))
        .lines()
        .map(str::to_owned)
        .collect();
    let acknowledged_there: Vec<&Write> =
        writes.iter().filter(|w| w.landed == Ok(new_port)).collect();
    let missing: Vec<&str> = acknowledged_there
        .iter()
        .map(|w| w.note.as_str())
        .filter(|n| !on_new.contains(*n))
        .collect();
    assert!(missing.is_empty(), "acknowledged but absent: {missing:?}");
    // Writes acknowledged by the old leader: informational (Patroni's business, not ours).
    let on_old: Vec<&Write> = writes.iter().filter(|w| w.landed == Ok(old_port)).collect();
    let kept = on_old.iter().filter(|w| on_new.contains(&w.note)).count();
    eprintln!(
        "{} writes acknowledged on {new}, all in its table; {kept} of the {} writes acknowledged \
         on {old} found there too",
        acknowledged_there.len(),
        on_old.len()
    );

    let failovers = metric(
        &http_get(admin, "/metrics"),
        "poolguard_backend_failovers_total",
        &["backend=\"pg\""],
    )
    .unwrap_or(0.0);
    assert!(failovers >= 1.0, "a failover counted, got {failovers}");
    assert!(
        proxy
            .log()
            .contains(&format!("addr={}", cluster.node_mut(&new).addr())),
        "poolguard logged the new leader"
    );
}
