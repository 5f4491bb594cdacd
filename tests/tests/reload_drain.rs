//! Reload and drain through the real binary against a sandbox PostgreSQL.
//!
//! Reload: while pgbench runs on one database, SIGHUP adds a database and `POST /api/reload`
//! resizes one pool and removes another; pgbench sees zero failed transactions, the added
//! database serves at once, a transaction running on the removed one still commits and only its
//! next one is refused, and a broken file is refused with the old configuration kept.
//!
//! Drain: SIGTERM while one client is inside a transaction and another is between two: the
//! running transaction commits in full, the idle client's next transaction is refused with
//! "shutting down", new clients are refused, and poolguard exits 0 once the transaction ended.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use poolguard_e2e::admin::*;
use poolguard_e2e::*;

const BANK_POOL: &str = "pool=\"bank/app\"";

fn sandbox_with(databases: &[&str]) -> PgSandbox {
    let mut b = PgSandbox::builder()
        .max_connections(40)
        .user(USER, PASSWORD)
        .database(DB, USER);
    for d in databases {
        b = b.database(d, USER);
    }
    b.start().expect("start sandbox PostgreSQL")
}

/// A config with the `bank` pool of `bank_size` plus one pool per extra database.
fn config(pg: &PgSandbox, port: u16, admin: u16, bank_size: usize, extra: &[&str]) -> String {
    let spec = PoolSpec {
        pool_size: bank_size,
        budget: 20,
        limits: format!("\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"),
        ..PoolSpec::default()
    };
    let mut text = config_for(pg, port, &spec);
    for d in extra {
        text.push_str(&format!(
            "\n[[databases]]\nname = \"{d}\"\nbackend = \"pg\"\npool_mode = \"transaction\"\npool_size = 2\n"
        ));
    }
    text
}

fn psql_on(port: u16, db: &str, sql: &str) -> Output {
    run_pg(psql_command(port).args(["-d", db, "-c", sql]))
}

fn spawn_psql_file(port: u16, db: &str, script: &Path) -> Child {
    psql_command(port)
        .args(["-d", db, "-f"])
        .arg(script)
        .env("PGPASSWORD", PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn psql")
}

/// Backends of `app` on `db` that are running a statement containing `needle`.
fn running(pg: &PgSandbox, db: &str, needle: &str) -> u64 {
    pg.psql(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND datname = '{db}' \
             AND state = 'active' AND query LIKE '%{needle}%' AND pid <> pg_backend_pid()"
        ),
    )
    .ok()
    .and_then(|s| s.parse().ok())
    .unwrap_or(0)
}

fn count_rows(pg: &PgSandbox, db: &str, table: &str) -> String {
    pg.psql_as(USER, PASSWORD, db, &format!("SELECT count(*) FROM {table}"))
        .expect("count rows")
}

#[test]
fn reload_adds_resizes_and_removes_pools_while_pgbench_runs() {
    let pg = sandbox_with(&["ledger", "archive"]);
    let (port, admin) = (free_port(), free_port());
    let proxy = Proxy::start_with_env(
        &config(&pg, port, admin, 3, &["archive"]),
        port,
        &[("POOLGUARD_ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    pg.psql_as(USER, PASSWORD, "archive", "CREATE TABLE t (n int)")
        .expect("create table on archive");
    pgbench_init(&pg);

    // A transaction on `archive` that is running when archive is removed.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("archive.sql");
    std::fs::write(
        &script,
        "BEGIN;\nINSERT INTO t VALUES (1);\nSELECT pg_sleep(4);\nINSERT INTO t VALUES (2);\nCOMMIT;\nSELECT 'after';\n",
    )
    .unwrap();
    let mut archive_client = spawn_psql_file(port, "archive", &script);

    let bench = std::thread::spawn(move || {
        run_within(
            Command::new("pgbench")
                .args(["-n", "-c", "4", "-j", "2", "-T", "10", "-h", "127.0.0.1"])
                .args(["-U", USER, "-p"])
                .arg(port.to_string())
                .arg(DB)
                .env("PGPASSWORD", PASSWORD),
            Duration::from_secs(120),
        )
    });
    wait_for(
        Duration::from_secs(30),
        "archive transaction running",
        || (running(&pg, "archive", "pg_sleep") == 1).then_some(()),
    );

    // 1. SIGHUP: `ledger` is added (archive still there).
    std::fs::write(
        proxy.config_path(),
        config(&pg, port, admin, 3, &["archive", "ledger"]),
    )
    .unwrap();
    proxy.signal("HUP");
    let ledger = wait_for(
        Duration::from_secs(20),
        "ledger served after SIGHUP",
        || {
            let out = psql_on(port, "ledger", "SELECT current_database()");
            out.status.success().then(|| stdout(&out))
        },
    );
    assert_eq!(ledger, "ledger");

    // 2. POST /api/reload: bank grows from 3 to 5, archive is removed.
    std::fs::write(
        proxy.config_path(),
        config(&pg, port, admin, 5, &["ledger"]),
    )
    .unwrap();
    let (status, body) = http_post_admin(admin, "/api/reload");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("1 removed"), "{body}");
    let caps = http_get(admin, "/metrics");
    assert_eq!(
        metric(&caps, "poolguard_pool_cap", &[BANK_POOL]),
        Some(5.0),
        "{caps}"
    );

    // 3. A broken file is refused; the running configuration keeps serving.
    std::fs::write(proxy.config_path(), "[[databases]]\nname = \n").unwrap();
    let (status, body) = http_post_admin(admin, "/api/reload");
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("running configuration stays"), "{body}");
    let out = psql_on(port, "ledger", "SELECT 1");
    assert!(
        out.status.success(),
        "ledger after a refused reload: {}",
        stderr(&out)
    );

    // The removed database: the running transaction committed whole, the next one was refused.
    let archived = archive_client.wait_with_output().unwrap();
    assert_eq!(
        count_rows(&pg, "archive", "t"),
        "2",
        "{}",
        stderr(&archived)
    );
    assert!(!archived.status.success());
    assert!(
        stderr(&archived).contains("reload removed this database"),
        "{}",
        stderr(&archived)
    );
    archive_client = spawn_psql_file(port, "archive", &script);
    let refused = archive_client.wait_with_output().unwrap();
    assert!(
        stderr(&refused).contains("does not exist in poolguard"),
        "{}",
        stderr(&refused)
    );

    let report = bench.join().unwrap();
    let text = stdout(&report);
    assert!(report.status.success(), "{text}\n{}", stderr(&report));
    assert!(
        report_number(&text, "number of transactions actually processed:").unwrap_or(0) > 0,
        "{text}"
    );
    assert_eq!(
        report_number(&text, "number of failed transactions:"),
        Some(0),
        "{text}"
    );
    // No server connection of the removed pool is left behind.
    wait_for(
        Duration::from_secs(20),
        "archive connections closed",
        || {
            let n: u64 = pg
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'archive' AND usename = 'app'",
            )
            .ok()?
            .parse()
            .ok()?;
            (n == 0).then_some(())
        },
    );
    assert!(proxy.log().contains("configuration reloaded"));
}

#[test]
fn sigterm_lets_the_running_transaction_finish_and_refuses_new_ones() {
    let pg = sandbox_with(&[]);
    let (port, admin) = (free_port(), free_port());
    let mut proxy = Proxy::start_with(&config(&pg, port, admin, 3, &[]), port);
    pg.psql_as(USER, PASSWORD, DB, "CREATE TABLE t (n int)")
        .expect("create table");
    let dir = tempfile::tempdir().unwrap();

    let busy = dir.path().join("busy.sql");
    std::fs::write(
        &busy,
        "BEGIN;\nINSERT INTO t VALUES (1);\nSELECT pg_sleep(5);\nINSERT INTO t VALUES (2);\nCOMMIT;\n",
    )
    .unwrap();
    // Between two transactions, this client waits for a marker file to appear.
    let marker = dir.path().join("go");
    let between = dir.path().join("between.sql");
    std::fs::write(
        &between,
        format!(
            "SELECT 1;\n\\! touch {ready} && while [ ! -e {go} ]; do sleep 0.1; done\nINSERT INTO t VALUES (99);\n",
            ready = dir.path().join("ready").display(),
            go = marker.display()
        ),
    )
    .unwrap();
    let busy_client = spawn_psql_file(port, DB, &busy);
    let between_client = spawn_psql_file(port, DB, &between);
    wait_for(Duration::from_secs(30), "busy transaction running", || {
        (running(&pg, DB, "pg_sleep") == 1).then_some(())
    });
    wait_for(
        Duration::from_secs(30),
        "second client between transactions",
        || dir.path().join("ready").exists().then_some(()),
    );

    proxy.signal("TERM");
    // New clients are refused once the front door closed.
    wait_for(Duration::from_secs(20), "front door closed", || {
        (!psql(port, "SELECT 1").status.success()).then_some(())
    });
    std::fs::write(&marker, "").unwrap();
    let between_out = between_client.wait_with_output().unwrap();
    assert!(!between_out.status.success());
    assert!(
        stderr(&between_out).contains("shutting down"),
        "{}",
        stderr(&between_out)
    );

    let busy_out = busy_client.wait_with_output().unwrap();
    assert!(busy_out.status.success(), "{}", stderr(&busy_out));
    let status = proxy
        .wait_exit(Duration::from_secs(60))
        .expect("poolguard exits after the drain");
    assert!(status.success(), "{status}\n{}", proxy.log());
    // Both inserts of the running transaction committed; the refused one did not.
    assert_eq!(count_rows(&pg, DB, "t"), "2");
    let log = proxy.log();
    assert!(
        log.contains("1 running transaction(s) finished; nothing cut"),
        "{log}"
    );
}

/// psql on the admin console as `app` (an `[admin] users` entry in these tests).
fn console(port: u16, sql: &str) -> std::process::Child {
    psql_command(port)
        .args(["-d", "pgbouncer", "-c", sql])
        .env("PGPASSWORD", PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn psql on the console")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_waits_for_running_transactions_and_holds_new_ones_until_resume() {
    use poolguard_e2e::pgc::{connect_to, scalar};
    let pg = sandbox_with(&[]);
    let (port, admin) = (free_port(), free_port());
    let text = config(&pg, port, admin, 3, &[])
        .replace("[admin]\n", &format!("[admin]\nusers = [\"{USER}\"]\n"));
    let proxy = Proxy::start_with(&text, port);
    pg.psql_as(USER, PASSWORD, DB, "CREATE TABLE t (n int)")
        .unwrap();
    let metric_now =
        move |name: &'static str| metric(&http_get(admin, "/metrics"), name, &[BANK_POOL]);

    let running = connect_to(&proxy.conn_str()).await.unwrap();
    running
        .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let waiting = connect_to(&proxy.conn_str()).await.unwrap();

    // PAUSE returns only once the running transaction ended.
    let mut pause = console(port, "PAUSE");
    tokio::task::spawn_blocking(move || {
        wait_for(Duration::from_secs(20), "pool paused", || {
            (metric_now("poolguard_pool_paused") == Some(1.0)).then_some(())
        })
    })
    .await
    .unwrap();
    assert!(pause.try_wait().unwrap().is_none(), "PAUSE returned early");
    // A new transaction is held, not refused, while paused.
    let held = tokio::spawn(async move { scalar(&waiting, "SELECT count(*) FROM t").await });
    tokio::task::spawn_blocking(move || {
        wait_for(Duration::from_secs(20), "one held client", || {
            (metric_now("poolguard_pool_waiters") == Some(1.0)).then_some(())
        })
    })
    .await
    .unwrap();
    running
        .batch_execute("INSERT INTO t VALUES (2); COMMIT")
        .await
        .unwrap();
    let paused = tokio::task::spawn_blocking(move || pause.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(paused.status.success(), "{}", stderr(&paused));
    assert!(!held.is_finished(), "a held transaction ran during PAUSE");

    let resumed = tokio::task::spawn_blocking(move || console(port, "RESUME").wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    // The held client ran after RESUME and saw the whole committed transaction.
    assert_eq!(held.await.unwrap().unwrap().as_deref(), Some("2"));
    assert_eq!(metric_now("poolguard_pool_paused"), Some(0.0));
    assert!(proxy.log().contains("PAUSE"));
}
