//! Clients spread over worker event loops (`--threads`, see `crates/proxy/src/workers.rs`):
//! each worker serves its share of the clients, and a transaction on a worker that made no
//! server connection of its own borrows one another worker made, without losing isolation or
//! an update.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use poolguard_e2e::*;

#[test]
fn transactions_on_three_workers_share_a_pool_of_two() {
    let pg = sandbox(20);
    let spec = PoolSpec {
        pool_size: 2,
        budget: 4,
        ..PoolSpec::default()
    };
    let port = free_port();
    let proxy = Proxy::start_with_env(
        &config_for(&pg, port, &spec),
        port,
        &[("POOLGUARD_THREADS", "3")],
    );
    let made = psql(
        proxy.port,
        "CREATE TABLE counter(id int PRIMARY KEY, n bigint NOT NULL); INSERT INTO counter VALUES (1, 0)",
    );
    assert!(made.status.success(), "{}", stderr(&made));
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("bump.sql");
    std::fs::write(
        &script,
        "BEGIN;\nUPDATE counter SET n = n + 1 WHERE id = 1;\nSELECT n FROM counter WHERE id = 1;\nCOMMIT;\n",
    )
    .unwrap();
    let sampler = PeakSampler::start(&pg);
    // One pgbench thread connects all six clients before any transaction runs, so all six are
    // connected at once and the least-loaded placement puts two on each worker.
    let run = run_within(
        Command::new("pgbench")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                USER,
                "-n",
                "-c",
                "6",
                "-j",
                "1",
                "-t",
                "100",
            ])
            .arg("-p")
            .arg(port.to_string())
            .arg("-f")
            .arg(&script)
            .arg(DB)
            .env("PGPASSWORD", PASSWORD),
        Duration::from_secs(120),
    );
    let (peak, _) = sampler.finish();
    assert!(run.status.success(), "{}\n{}", stdout(&run), stderr(&run));
    assert!(
        stdout(&run).contains("number of failed transactions: 0"),
        "{}",
        stdout(&run)
    );
    assert_eq!(
        pg.psql(DB, "SELECT n FROM counter WHERE id = 1").unwrap(),
        "600",
        "every committed update counted once"
    );
    assert!(
        peak <= 2,
        "server saw {peak} app connections for a pool of 2"
    );
    let log = proxy.log();
    let workers: BTreeSet<&str> = log
        .lines()
        .filter(|l| l.contains("client placed on worker"))
        .filter_map(|l| l.split("worker=").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap_or(rest))
        .collect();
    assert_eq!(
        workers,
        BTreeSet::from(["0", "1", "2"]),
        "clients placed on every worker"
    );
}
