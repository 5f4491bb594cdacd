//! Binary upgrade: a second poolguard started with `run --takeover` takes the listening
//! sockets over from the running one through `[general] upgrade_socket`, and the old one
//! drains and exits, without a client noticing.
//!
//! PostgreSQL: two pgbench runs span the hand-off (transaction mode): one keeps its 10
//! connections (they stay on the old process until pgbench ends), one reconnects for every
//! transaction (`-C`: after the hand-off every connection lands on the new process). Both
//! report 0 failed transactions and exit 0; the server, sampled throughout, never sees more of
//! poolguard's connections than the budget, which it also enforces itself (`ALTER ROLE app
//! CONNECTION LIMIT`, so one more would fail a transaction). MySQL: a client connected before
//! the hand-off keeps working through it, a new one is served by the new process.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use poolguard_e2e::admin::*;
use poolguard_e2e::mysql::*;
use poolguard_e2e::*;

/// The backend budget, also the role's connection limit on the server.
const BUDGET: usize = 6;

/// Where the processes of one test meet: the upgrade socket's directory, the door's port, the
/// admin port, and the `[general]` and `[admin]` tables naming them.
struct Site {
    _dir: tempfile::TempDir,
    port: u16,
    admin: u16,
    tables: String,
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let tables = format!(
        "[general]\nupgrade_socket = \"{}\"\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n",
        dir.path().join("upgrade.sock").display()
    );
    Site {
        _dir: dir,
        port,
        admin,
        tables,
    }
}

fn pgbench(port: u16, args: &[&str]) -> Output {
    run_within(
        Command::new("pgbench")
            .args(["-n", "-h", "127.0.0.1", "-U", USER, "-p"])
            .arg(port.to_string())
            .args(args)
            .arg(DB)
            .env("PGPASSWORD", PASSWORD),
        Duration::from_secs(180),
    )
}

/// pgbench's "number of failed transactions: N" and "tps = X".
fn failed_and_tps(out: &Output) -> (Option<u64>, f64) {
    let text = stdout(out);
    let failed = report_number(&text, "number of failed transactions:");
    let tps = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    (failed, tps)
}

fn history_rows(pg: &PgSandbox) -> u64 {
    // As the superuser: a connection of `app` would count against its CONNECTION LIMIT.
    pg.psql(DB, "SELECT count(*) FROM pgbench_history")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn pgbench_runs_through_a_takeover_with_no_failure_and_within_the_budget() {
    let pg = sandbox(40);
    pgbench_init(&pg);
    pg.psql(
        "postgres",
        &format!("ALTER ROLE {USER} CONNECTION LIMIT {BUDGET}"),
    )
    .expect("role connection limit");

    let site = site();
    let (port, admin) = (site.port, site.admin);
    let spec = PoolSpec {
        pool_size: 4,
        budget: BUDGET,
        limits: "acquire_timeout = \"60s\"\n".into(),
        ..PoolSpec::default()
    };
    let config = format!("{}{}", site.tables, config_for(&pg, port, &spec));
    let mut old = Proxy::start_with(&config, port);
    let sampler = PeakSampler::start(&pg);

    // Before: a short baseline for the figures.
    let before = pgbench(port, &["-c", "10", "-j", "2", "-T", "3"]);
    let (_, tps_before) = failed_and_tps(&before);

    let steady = std::thread::spawn(move || pgbench(port, &["-c", "10", "-j", "2", "-T", "12"]));
    let reconnecting =
        std::thread::spawn(move || pgbench(port, &["-C", "-c", "4", "-j", "2", "-T", "10"]));
    // Take over once both are committing transactions.
    let start_rows = history_rows(&pg);
    wait_for(Duration::from_secs(60), "pgbench committing", || {
        (history_rows(&pg) > start_rows + 100).then_some(())
    });
    let asked = Instant::now();
    let mut new = Proxy::start_takeover(&config, port);
    let handoff = asked.elapsed();
    assert!(
        new.log().contains("took over from the running poolguard"),
        "{}",
        new.log()
    );

    let steady = steady.join().unwrap();
    let reconnecting = reconnecting.join().unwrap();
    for (name, out) in [("steady", &steady), ("reconnecting", &reconnecting)] {
        let (failed, _) = failed_and_tps(out);
        assert!(
            out.status.success(),
            "{name} pgbench failed:\n{}\n{}",
            stdout(out),
            stderr(out)
        );
        assert_eq!(failed, Some(0), "{name} pgbench:\n{}", stdout(out));
    }

    // The old process drains (its pgbench clients are gone) and exits on its own.
    let status = old.wait_exit(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "old poolguard: {status:?}\n{}",
        old.log()
    );
    assert!(old
        .log()
        .contains("handed the listening sockets to the new poolguard"));

    // Only the new process is left: it serves new clients and the admin port.
    let after = pgbench(port, &["-c", "10", "-j", "2", "-T", "3"]);
    let (failed_after, tps_after) = failed_and_tps(&after);
    assert_eq!(failed_after, Some(0), "{}", stdout(&after));
    wait_for(
        Duration::from_secs(30),
        "the new process's upgrade event",
        || {
            http_get(admin, "/api/events")
                .contains("upgrade complete")
                .then_some(())
        },
    );
    let (peak, samples) = sampler.finish();
    eprintln!(
        "upgrade figures: hand-off {handoff:?} (new process start included); tps before {tps_before:.0}, \
         through the takeover steady {:.0} + reconnecting {:.0}, after {tps_after:.0}; \
         server connections of {USER}: peak {peak} of budget {BUDGET} over {samples} samples",
        failed_and_tps(&steady).1,
        failed_and_tps(&reconnecting).1,
    );
    assert!(samples > 10, "the sampler ran: {samples}");
    assert!(peak <= BUDGET as u64, "peak {peak} > budget {BUDGET}");
    assert!(
        new.wait_exit(Duration::ZERO).is_none(),
        "the new process runs on"
    );
}

#[test]
fn a_mysql_client_keeps_working_through_a_takeover() {
    let db = mariadb(40);
    let site = site();
    let port = site.port;
    let spec = MyPoolSpec {
        budget: BUDGET,
        ..MyPoolSpec::default()
    };
    let config = format!("{}{}", site.tables, mysql_config_for(&db, port, &spec));
    let mut old = Proxy::start_with(&config, port);
    let mut before = MyClient::connect(port).expect("connect before");
    assert_eq!(before.scalar("SELECT 1").unwrap().as_deref(), Some("1"));

    let new = Proxy::start_takeover(&config, port);
    assert!(new.log().contains("took over from the running poolguard"));
    wait_for(
        Duration::from_secs(30),
        "the old process handed over",
        || {
            old.log()
                .contains("handed the listening sockets to the new poolguard")
                .then_some(())
        },
    );

    // The client from before is still served (by the old process, in a transaction too).
    before.query("BEGIN").unwrap();
    assert_eq!(before.scalar("SELECT 2").unwrap().as_deref(), Some("2"));
    before.query("COMMIT").unwrap();
    // A new client is served (by the new process: the old one accepts no more).
    let mut after = MyClient::connect(port).expect("connect after");
    assert_eq!(after.scalar("SELECT 3").unwrap().as_deref(), Some("3"));
    assert!(
        old.wait_exit(Duration::ZERO).is_none(),
        "the old process waits for its client"
    );

    drop(before);
    let status = old.wait_exit(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "old poolguard: {status:?}\n{}",
        old.log()
    );
    assert_eq!(after.scalar("SELECT 4").unwrap().as_deref(), Some("4"));
    let mut later = MyClient::connect(port).expect("connect after the old exited");
    assert_eq!(later.scalar("SELECT 5").unwrap().as_deref(), Some("5"));
}
