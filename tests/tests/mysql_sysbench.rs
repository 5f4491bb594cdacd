//! sysbench `oltp_read_write` with 64 threads through a pool of 8 in transaction mode (server-side
//! prepared statements, as sysbench uses by default): it must finish without errors, and MariaDB
//! must never see more than 8 connections from the application account while it runs (sampled
//! from `information_schema.processlist` as root).
//!
//! sysbench retries InnoDB deadlocks (error 1213) and counts them as "ignored errors". Eight
//! concurrent read-write transactions on four small tables deadlock now and then on a direct
//! connection too, so the test allows exactly as many ignored errors as MariaDB itself counted
//! deadlocks (`Innodb_deadlocks`) during the run, and no other error.

use std::process::Command;
use std::time::Duration;

use poolguard_e2e::mysql::*;
use poolguard_e2e::*;

fn sysbench(port: u16, args: &[&str]) -> std::process::Output {
    run_within(
        Command::new("sysbench")
            .arg("oltp_read_write")
            .args([
                "--db-driver=mysql",
                "--mysql-host=127.0.0.1",
                &format!("--mysql-port={port}"),
                "--mysql-user=app",
                "--mysql-password=app-secret",
                "--mysql-db=bank",
                "--tables=4",
                "--table-size=5000",
            ])
            .args(args),
        Duration::from_secs(120),
    )
}

/// A number after `label` in sysbench's report.
fn figure(report: &str, label: &str) -> Option<f64> {
    let line = report.lines().find(|l| l.trim_start().starts_with(label))?;
    line[line.find(label)? + label.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Deadlocks MariaDB has detected since it started.
fn innodb_deadlocks(db: &MariaDbSandbox) -> u64 {
    let text = db
        .sql(
            "",
            "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
             WHERE VARIABLE_NAME = 'INNODB_DEADLOCKS'",
        )
        .expect("read Innodb_deadlocks");
    text.trim().parse().expect("a count")
}

#[test]
fn sysbench_64_threads_on_a_pool_of_8() {
    let db = mariadb(60);
    let spec = MyPoolSpec {
        pool_size: 8,
        budget: 10,
        limits: "acquire_timeout = \"30s\"".into(),
        ..MyPoolSpec::default()
    };
    let proxy = start_mysql_proxy(&db, &spec);
    let out = sysbench(proxy.port, &["--threads=4", "prepare"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));

    let deadlocks_before = innodb_deadlocks(&db);
    let sampler = MyPeakSampler::start(&db);
    let out = sysbench(proxy.port, &["--threads=64", "--time=10", "run"]);
    let (peak, samples) = sampler.finish();
    let deadlocks = innodb_deadlocks(&db) - deadlocks_before;
    let report = stdout(&out);
    assert!(out.status.success(), "{report}\n{}", stderr(&out));
    let transactions = figure(&report, "transactions:").unwrap_or(0.0);
    let ignored = figure(&report, "ignored errors:").unwrap_or(-1.0);
    let reconnects = figure(&report, "reconnects:").unwrap_or(-1.0);
    let tps = report
        .lines()
        .find(|l| l.trim_start().starts_with("transactions:"))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("?")
        .to_owned();
    println!(
        "sysbench oltp_read_write 64 threads / pool 8: {transactions} transactions ({tps} tps), ignored errors {ignored} (InnoDB deadlocks {deadlocks}), reconnects {reconnects}; peak app connections {peak} over {samples} samples"
    );
    assert!(transactions > 0.0, "{report}");
    assert_eq!(
        ignored, deadlocks as f64,
        "the only errors are the server's own deadlocks ({deadlocks}):\n{report}"
    );
    assert_eq!(reconnects, 0.0, "{report}");
    assert!(samples >= 5, "sampled while it ran ({samples})");
    // sysbench (libmariadb) asks for MariaDB's extended type information, so its pool is
    // `bank/app (extended types)`; the connection poolguard opened to learn the greeting stays
    // idle in `bank/app`, the pool of clients that do not ask.
    assert!(
        peak <= 8 + 1,
        "MariaDB saw {peak} app connections; the pool is 8, plus the greeting's"
    );
    assert!(!stderr(&out).contains("FATAL"), "{}", stderr(&out));
}
