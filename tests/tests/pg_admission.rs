//! Admission and fairness from the client's side, against a real PostgreSQL through the real
//! binary: the waiter cap and the rate limits refuse with 53400 at once, and a fair share keeps a
//! healthy application served at full success while another application leaks connections.
//!
//! Counts are asserted; latencies are measured and printed (for the issue note), never asserted.

#![allow(clippy::err_expect)] // tokio-postgres clients are not Debug, so expect_err is not available.

use std::time::{Duration, Instant};

use poolguard_e2e::admin::*;
use poolguard_e2e::pgc::{code, connect_to, message, scalar};
use poolguard_e2e::*;

fn conn_as(proxy: &Proxy, application: &str) -> String {
    format!("{} application_name={application}", proxy.conn_str())
}

fn with_admin(mut spec: PoolSpec, admin: u16) -> PoolSpec {
    spec.limits
        .push_str(&format!("\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"));
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_cap_refuses_the_next_client_with_53400() {
    let pg = sandbox(20);
    let admin = free_port();
    let spec = with_admin(
        PoolSpec {
            pool_size: 1,
            budget: 2,
            extra: "max_waiters = 1\nacquire_timeout = \"30s\"".into(),
            ..PoolSpec::default()
        },
        admin,
    );
    let proxy = Proxy::start(&pg, &spec);
    let holder = connect_to(&proxy.conn_str()).await.unwrap();
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();

    // One client waits for the only server...
    let waiting = connect_to(&proxy.conn_str()).await.unwrap();
    let waited = tokio::spawn(async move { scalar(&waiting, "SELECT 'served'").await });
    let waiters = |text: &str| metric(text, "poolguard_pool_waiters", &["pool=\"bank/app\""]);
    tokio::task::spawn_blocking(move || {
        wait_for(Duration::from_secs(20), "one waiter", || {
            (waiters(&http_get(admin, "/metrics")) == Some(1.0)).then_some(())
        })
    })
    .await
    .unwrap();

    // ...so the next one is refused at once, and says why.
    let refused = connect_to(&proxy.conn_str()).await.unwrap();
    let e = scalar(&refused, "SELECT 1").await.unwrap_err();
    assert_eq!(code(&e), "53400", "{e:?}");
    assert!(message(&e).contains("max_waiters"), "{e:?}");
    // The refusal cost the waiting client nothing.
    assert!(!waited.is_finished());
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(waited.await.unwrap().unwrap().as_deref(), Some("served"));
    let text = http_get(admin, "/metrics");
    assert_eq!(waiters(&text), Some(0.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_refuse_connections_and_transactions_over_their_rate() {
    let pg = sandbox(20);
    let spec = PoolSpec {
        pool_size: 2,
        extra: "acquire_timeout = \"2s\"".into(),
        // Rules go at top level; `limits` is the last table of the generated config.
        limits: r#"
[[rate_limits]]
per = "address"
connections_per_second = 0.001
burst = 3

[[rate_limits]]
per = "user"
transactions_per_second = 0.001
burst = 2
"#
        .into(),
        ..PoolSpec::default()
    };
    let proxy = Proxy::start(&pg, &spec);
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(
            connect_to(&proxy.conn_str())
                .await
                .expect("within the burst"),
        );
    }
    let e = connect_to(&proxy.conn_str())
        .await
        .err()
        .expect("the fourth connection from 127.0.0.1 is over the rate");
    assert_eq!(code(&e), "53400", "{e:?}");
    assert!(message(&e).contains("rate limit"), "{e:?}");

    // Two transactions fit the user's burst; the third would wait ~1000 s: refused at once.
    let c = &clients[0];
    assert_eq!(scalar(c, "SELECT 1").await.unwrap().as_deref(), Some("1"));
    assert_eq!(scalar(c, "SELECT 2").await.unwrap().as_deref(), Some("2"));
    let e = scalar(c, "SELECT 3").await.unwrap_err();
    assert_eq!(code(&e), "53400", "{e:?}");
    assert!(message(&e).contains("transactions"), "{e:?}");
}

/// What one healthy client saw: successes, failures, latencies of the successes.
#[derive(Default)]
struct Run {
    ok: usize,
    failed: usize,
    latencies: Vec<Duration>,
}

impl Run {
    fn percentile(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    }
}

/// `clients` healthy clients doing `each` short write transactions each.
async fn healthy_run(conn: &str, clients: usize, each: usize) -> Run {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let conn = conn.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            let Ok(c) = connect_to(&conn).await else {
                run.failed = each;
                return run;
            };
            for _ in 0..each {
                let start = Instant::now();
                match c
                    .batch_execute("BEGIN; INSERT INTO healthy VALUES (1); COMMIT")
                    .await
                {
                    Ok(()) => {
                        run.ok += 1;
                        run.latencies.push(start.elapsed());
                    }
                    Err(_) => run.failed += 1,
                }
            }
            run
        }));
    }
    let mut all = Run::default();
    for t in tasks {
        let r = t.await.unwrap();
        all.ok += r.ok;
        all.failed += r.failed;
        all.latencies.extend(r.latencies);
    }
    all
}

/// Six clients of application `leaky` each open a transaction and never end it.
async fn leak(proxy: &Proxy) -> Vec<tokio_postgres::Client> {
    // All at once: the clients held back by the share wait out the acquire timeout together.
    let tries = (0..6).map(|_| async {
        let c = connect_to(&conn_as(proxy, "leaky")).await.unwrap();
        let _started = c.batch_execute("BEGIN; SELECT 1").await;
        c
    });
    futures_util::future::join_all(tries).await
}

fn leak_spec(fair_share: bool) -> PoolSpec {
    let share = if fair_share {
        "fair_share = 0.5\nfair_share_by = \"application\"\n"
    } else {
        ""
    };
    // Unguarded, the healthy app must fail: a short wait shows it. Guarded, it must never fail,
    // however slow a loaded machine makes one of its transactions: a long wait.
    let wait = if fair_share { "20s" } else { "1s" };
    PoolSpec {
        pool_size: 4,
        budget: 6,
        extra: format!("{share}acquire_timeout = \"{wait}\"\nidle_in_transaction_timeout = \"0s\""),
        ..PoolSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fair_share_keeps_a_healthy_app_served_while_another_leaks() {
    let pg = sandbox(30);
    pg.psql_as(USER, PASSWORD, DB, "CREATE TABLE healthy (n int)")
        .unwrap();

    // Control: without a share, the leaker takes every server and the healthy app fails.
    let unguarded = Proxy::start(&pg, &leak_spec(false));
    let leaked = leak(&unguarded).await;
    let starved = healthy_run(&conn_as(&unguarded, "healthy"), 1, 3).await;
    drop(leaked);
    drop(unguarded);
    assert_eq!(
        starved.ok, 0,
        "without fair_share the leaker holds the whole pool"
    );

    let proxy = Proxy::start(&pg, &leak_spec(true));
    let healthy = conn_as(&proxy, "healthy");
    let alone = healthy_run(&healthy, 2, 100).await;
    let leaked = leak(&proxy).await;
    let beside = healthy_run(&healthy, 2, 100).await;
    eprintln!(
        "healthy app alone: {} ok / {} failed, p50 {:?}, p99 {:?}; beside a leaker: {} ok / {} failed, p50 {:?}, p99 {:?}",
        alone.ok,
        alone.failed,
        alone.percentile(0.5),
        alone.percentile(0.99),
        beside.ok,
        beside.failed,
        beside.percentile(0.5),
        beside.percentile(0.99)
    );
    assert_eq!((alone.ok, alone.failed), (200, 0));
    assert_eq!((beside.ok, beside.failed), (200, 0));
    // The leaker holds exactly its share: 2 of 4 servers are in its open transactions.
    let in_transaction = pg
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND state = 'idle in transaction'",
        )
        .unwrap();
    assert_eq!(in_transaction, "2");
    drop(leaked);
    assert_eq!(
        pg.psql_as(USER, PASSWORD, DB, "SELECT count(*) FROM healthy")
            .unwrap(),
        "400"
    );
}
