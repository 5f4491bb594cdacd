//! `[fleet]`: several poolguard processes share one server's budget through a real etcd, a dead
//! instance's share comes back to the others when its lease expires, and the write host
//! follows Patroni's leader key.
//!
//! Everything runs on loopback: etcd (`EtcdServer`) and sandbox PostgreSQL servers on free
//! ports, the real `poolguard` binary. Nothing waits for a fixed time: every wait polls a
//! condition (metrics, the server's own counts) under a generous deadline.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use poolguard_e2e::admin::{http_get, metric, wait_for};
use poolguard_e2e::etcd::{block_on, EtcdServer};
use poolguard_e2e::pgc::{code, connect_to, message, scalar};
use poolguard_e2e::{
    config_for, free_port, sandbox, PeakSampler, PgSandbox, PoolSpec, Proxy, DB, PASSWORD, USER,
};

/// The fleet budget on the server in these tests.
const BUDGET: usize = 30;

/// One fleet instance: the proxy and its admin port.
struct Member {
    proxy: Proxy,
    admin: u16,
}

impl Member {
    /// An instance in front of `pg` (and `more_hosts` after it, for the Patroni test).
    fn start(
        etcd: &EtcdServer,
        pg: &PgSandbox,
        more_hosts: &[u16],
        instance: &str,
        extra_fleet: &str,
    ) -> Member {
        Member::start_with_ttl(etcd, pg, more_hosts, instance, extra_fleet, "3s")
    }

    /// [`Member::start`] with a lease TTL other than 3 s.
    fn start_with_ttl(
        etcd: &EtcdServer,
        pg: &PgSandbox,
        more_hosts: &[u16],
        instance: &str,
        extra_fleet: &str,
        lease_ttl: &str,
    ) -> Member {
        let (port, admin) = (free_port(), free_port());
        let spec = PoolSpec {
            pool_size: BUDGET,
            budget: BUDGET,
            extra: "acquire_timeout = \"60s\"".into(),
            ..PoolSpec::default()
        };
        let first = format!("\"127.0.0.1:{}\"", pg.port());
        let mut hosts = vec![first.clone()];
        hosts.extend(more_hosts.iter().map(|p| format!("\"127.0.0.1:{p}\"")));
        let config = format!(
            "[admin]\nlisten = \"127.0.0.1:{admin}\"\n{}\n[fleet]\netcd_endpoints = [\"{}\"]\ninstance = \"{instance}\"\nlease_ttl = \"{lease_ttl}\"\n{extra_fleet}\n",
            config_for(pg, port, &spec).replace(&first, &hosts.join(", ")),
            etcd.endpoint(),
        );
        Member {
            proxy: Proxy::start_with(&config, port),
            admin,
        }
    }

    fn metric(&self, name: &str) -> Option<f64> {
        metric(&http_get(self.admin, "/metrics"), name, &["backend=\"pg\""])
    }

    fn share(&self) -> usize {
        self.metric("poolguard_fleet_share").unwrap_or(0.0) as usize
    }

    fn members(&self) -> usize {
        self.metric("poolguard_fleet_members").unwrap_or(0.0) as usize
    }
}

/// Waits until every member sees `n` members and their shares sum to the whole budget.
fn wait_settled(members: &[&Member], n: usize) {
    wait_for(Duration::from_secs(60), "the fleet to settle", || {
        let all_seen = members.iter().all(|m| m.members() == n);
        let sum: usize = members.iter().map(|m| m.share()).sum();
        (all_seen && sum == BUDGET).then_some(())
    });
}

/// A sandbox whose server refuses role `app` a 31st connection on its own.
fn guarded_sandbox() -> PgSandbox {
    let pg = sandbox(60);
    pg.psql(
        "postgres",
        &format!("ALTER ROLE {USER} CONNECTION LIMIT {BUDGET}"),
    )
    .expect("role limit");
    pg
}

/// Errors clients saw (SQLSTATE and message), and transactions that succeeded.
#[derive(Default)]
struct Outcome {
    errors: Mutex<Vec<String>>,
    ok: AtomicU64,
}

/// `clients` clients through `port`, each running `SELECT pg_sleep(0.02)` transactions until
/// `rounds` are done (or, with `rounds` 0, until `stop`).
async fn load(port: u16, clients: usize, rounds: usize, stop: Arc<AtomicBool>, out: Arc<Outcome>) {
    let conn = format!("host=127.0.0.1 port={port} user={USER} password={PASSWORD} dbname={DB}");
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (conn, stop, out) = (conn.clone(), stop.clone(), out.clone());
        tasks.push(tokio::spawn(async move {
            let client = match connect_to(&conn).await {
                Ok(c) => c,
                Err(e) => {
                    out.errors.lock().unwrap().push(format!(
                        "connect: {} {}",
                        code(&e),
                        message(&e)
                    ));
                    return;
                }
            };
            let mut done = 0;
            while (rounds == 0 && !stop.load(Ordering::Relaxed)) || (rounds > 0 && done < rounds) {
                match client.simple_query("SELECT pg_sleep(0.02)").await {
                    Ok(_) => {
                        out.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        out.errors
                            .lock()
                            .unwrap()
                            .push(format!("{} {}", code(&e), message(&e)))
                    }
                }
                done += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// a. Three instances, one budget of 30: a spike of 150 clients through all three never
/// takes the server past 30 connections of role `app` (sampled throughout, and the server
/// itself refuses a 31st), and a load on one instance moves shares to it first.
#[test]
fn three_instances_share_one_budget_through_a_spike() {
    let etcd = EtcdServer::start();
    let pg = guarded_sandbox();
    let names = ["pg-a", "pg-b", "pg-c"];
    let members: Vec<Member> = names
        .iter()
        .map(|n| Member::start(&etcd, &pg, &[], n, ""))
        .collect();
    let refs: Vec<&Member> = members.iter().collect();
    wait_settled(&refs, 3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sampler = PeakSampler::start(&pg);
    let out = Arc::new(Outcome::default());

    // Load on A alone: its share grows past an even split while it lasts.
    let stop = Arc::new(AtomicBool::new(false));
    let a_load = rt.spawn(load(
        members[0].proxy.port,
        40,
        0,
        stop.clone(),
        out.clone(),
    ));
    let a_peak = wait_for(Duration::from_secs(60), "A's share to grow", || {
        let s = members[0].share();
        (s >= 20).then_some(s)
    });
    stop.store(true, Ordering::Relaxed);
    rt.block_on(a_load).unwrap();

    // The spike: 50 clients on each instance at once.
    let started = Instant::now();
    let spike: Vec<_> = members
        .iter()
        .map(|m| rt.spawn(load(m.proxy.port, 50, 10, stop.clone(), out.clone())))
        .collect();
    for t in spike {
        rt.block_on(t).unwrap();
    }
    let spike_took = started.elapsed();
    let (peak, samples) = sampler.finish();
    let errors = out.errors.lock().unwrap().clone();
    eprintln!(
        "fleet spike: A's share reached {a_peak}; spike of 150 clients x 10 transactions took {spike_took:?}; {} ok; server peak {peak} app connections over {samples} samples",
        out.ok.load(Ordering::Relaxed)
    );
    assert!(
        errors.is_empty(),
        "clients saw errors: {:?}",
        &errors[..errors.len().min(5)]
    );
    assert!(
        out.ok.load(Ordering::Relaxed) >= 1500,
        "every spike transaction succeeded"
    );
    assert!(samples > 0, "the monitor sampled the server");
    assert!(
        peak <= BUDGET as u64,
        "the server saw {peak} app connections (budget {BUDGET})"
    );
    // After the spike the shares still cover exactly the budget.
    wait_settled(&refs, 3);
}

/// b. One instance killed with SIGKILL: when its lease expires, its records go and the
/// survivors' shares grow to cover the whole budget.
#[test]
fn a_killed_instance_share_goes_to_the_survivors() {
    let etcd = EtcdServer::start();
    let pg = guarded_sandbox();
    let a = Member::start(&etcd, &pg, &[], "pg-a", "");
    let b = Member::start(&etcd, &pg, &[], "pg-b", "");
    let mut c = Member::start(&etcd, &pg, &[], "pg-c", "");
    wait_settled(&[&a, &b, &c], 3);
    let before = (a.share(), b.share(), c.share());
    c.proxy.signal("KILL");
    let killed = Instant::now();
    c.proxy.wait_exit(Duration::from_secs(10));
    wait_settled(&[&a, &b], 2);
    eprintln!(
        "fleet kill: shares {before:?} before; survivors {} + {} = {BUDGET} {:?} after SIGKILL (lease_ttl 3s)",
        a.share(),
        b.share(),
        killed.elapsed()
    );
    // And the survivors can use it: 30 transactions in parallel through A and B.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let out = Arc::new(Outcome::default());
    let stop = Arc::new(AtomicBool::new(false));
    let la = rt.spawn(load(a.proxy.port, 20, 5, stop.clone(), out.clone()));
    let lb = rt.spawn(load(b.proxy.port, 20, 5, stop, out.clone()));
    rt.block_on(la).unwrap();
    rt.block_on(lb).unwrap();
    assert!(out.errors.lock().unwrap().is_empty());
}

/// b'. SIGTERM: the drain ends by revoking the instance's lease, so its records leave etcd
/// before the process exits (the 60 s TTL would take a minute) and the survivor covers the
/// whole budget without waiting for it.
#[test]
fn a_terminated_instance_returns_its_share_at_once() {
    let etcd = EtcdServer::start();
    let pg = guarded_sandbox();
    let a = Member::start_with_ttl(&etcd, &pg, &[], "pg-a", "", "60s");
    let mut b = Member::start_with_ttl(&etcd, &pg, &[], "pg-b", "", "60s");
    wait_settled(&[&a, &b], 2);
    let before = (a.share(), b.share());
    b.proxy.signal("TERM");
    let signalled = Instant::now();
    let status = b.proxy.wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "poolguard exited after SIGTERM: {status:?}"
    );
    let exited = signalled.elapsed();
    let (_, kvs) = block_on(etcd.client().range("/poolguard/", true)).expect("etcd read");
    let left: Vec<&str> = kvs
        .iter()
        .map(|kv| kv.key.as_str())
        .filter(|k| k.ends_with("/members/pg-b"))
        .collect();
    assert!(left.is_empty(), "pg-b's records outlived it: {left:?}");
    let log = b.proxy.log();
    assert!(
        log.contains("fleet lease revoked, shares returned"),
        "{log}"
    );
    wait_settled(&[&a], 1);
    eprintln!(
        "fleet SIGTERM: shares {before:?}; pg-b exited {exited:?} after SIGTERM with its records gone; \
         pg-a covered the budget ({}) {:?} after the signal (lease_ttl 60s)",
        a.share(),
        signalled.elapsed()
    );
}

/// c (keys). The write host follows Patroni's leader key as Patroni writes it
/// (`/service/<scope>/leader` = member name, `/service/<scope>/members/<name>` JSON with
/// `conn_url`), with no health check involved: two independent servers stand in for the nodes.
#[test]
fn writes_follow_the_patroni_leader_key() {
    let etcd = EtcdServer::start();
    let (one, two) = (sandbox(40), sandbox(40));
    let member = |port: u16| {
        format!(
            r#"{{"conn_url":"postgres://127.0.0.1:{port}/postgres","api_url":"http://127.0.0.1:1/patroni","state":"running","role":"replica"}}"#
        )
    };
    etcd.put("/service/bank/members/node1", &member(one.port()));
    etcd.put("/service/bank/members/node2", &member(two.port()));
    etcd.put("/service/bank/leader", "node2");
    let m = Member::start(
        &etcd,
        &one,
        &[two.port()],
        "pg-a",
        "patroni_scope = \"bank\"",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server_port = |m: &Member| {
        rt.block_on(async {
            let c = connect_to(&m.proxy.conn_str()).await.ok()?;
            scalar(&c, "SELECT current_setting('port')").await.ok()?
        })
    };
    wait_for(
        Duration::from_secs(30),
        "writes on node2 (the leader at start)",
        || (server_port(&m)? == two.port().to_string()).then_some(()),
    );
    let moved = Instant::now();
    etcd.put("/service/bank/leader", "node1");
    wait_for(
        Duration::from_secs(30),
        "writes on node1 (the new leader)",
        || (server_port(&m)? == one.port().to_string()).then_some(()),
    );
    eprintln!(
        "patroni keys: writes moved to the new leader {:?} after the leader key changed",
        moved.elapsed()
    );
    let failovers = m.metric("poolguard_backend_failovers_total").unwrap_or(0.0);
    assert!(failovers >= 2.0, "two moves counted, got {failovers}");
}
