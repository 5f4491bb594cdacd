//! Real PostgreSQL clients through poolguard in transaction mode: pgbench (simple and extended
//! protocol, 50 clients on a pool of 5), psycopg 3 and node-postgres.
//!
//! What is asserted: the clients succeed and see the right data, and the server never sees more
//! `app` connections than the pool size while 50 clients hammer it. No timing is asserted.

use std::process::{Command, Output};
use std::time::Duration;

use poolguard_e2e::*;

fn pgbench(port: u16, args: &[&str]) -> Output {
    run_within(
        Command::new("pgbench")
            .args(["-h", "127.0.0.1", "-U", USER])
            .arg("-p")
            .arg(port.to_string())
            .args(args)
            .arg(DB)
            .env("PGPASSWORD", PASSWORD)
            .env("PGCONNECT_TIMEOUT", "20"),
        Duration::from_secs(120),
    )
}

#[test]
fn pgbench_simple_and_extended_stay_within_pool_size() {
    let pg = sandbox(30);
    let spec = PoolSpec {
        pool_size: 5,
        budget: 10,
        ..PoolSpec::default()
    };
    let proxy = Proxy::start(&pg, &spec);

    // Initialise through poolguard: DDL, COPY FROM STDIN of pgbench_accounts, VACUUM, keys.
    let init = pgbench(proxy.port, &["-i", "-s", "1", "-q"]);
    assert!(
        init.status.success(),
        "pgbench -i through poolguard failed:\n{}\n{}",
        stdout(&init),
        stderr(&init)
    );
    assert_eq!(
        pg.psql(DB, "SELECT count(*) FROM pgbench_accounts")
            .unwrap(),
        "100000"
    );

    for mode in ["simple", "extended"] {
        let sampler = PeakSampler::start(&pg);
        let run = pgbench(
            proxy.port,
            &["-M", mode, "-c", "50", "-j", "2", "-T", "8", "-n"],
        );
        let (peak, samples) = sampler.finish();
        let report = stdout(&run);
        eprintln!(
            "pgbench -M {mode} -c 50 -j 2 -T 8 through poolguard (pool_size 5): peak app connections on the server = {peak} ({samples} samples)\n{report}"
        );
        assert!(
            run.status.success(),
            "pgbench -M {mode} failed ({}):\n{report}\n{}",
            run.status,
            stderr(&run)
        );
        if let Some(failed) = report_number(&report, "number of failed transactions:") {
            assert_eq!(failed, 0, "pgbench -M {mode} reported failures:\n{report}");
        }
        let processed =
            report_number(&report, "number of transactions actually processed:").unwrap_or(0);
        assert!(
            processed > 0,
            "pgbench -M {mode} processed nothing:\n{report}"
        );
        assert!(samples > 0, "the sampler never read pg_stat_activity");
        assert!(peak > 0, "the server never saw an app connection");
        assert!(
            peak <= spec.pool_size as u64,
            "the server saw {peak} app connections with pool_size {}",
            spec.pool_size
        );
    }

    // The data pgbench worked on is consistent: the branch balance is the sum of the history.
    let sums = pg
        .psql(
            DB,
            "SELECT (SELECT sum(bbalance) FROM pgbench_branches) = (SELECT coalesce(sum(delta), 0) FROM pgbench_history)",
        )
        .unwrap();
    assert_eq!(sums, "t", "branch balances disagree with pgbench_history");
}

#[test]
fn psycopg_through_transaction_mode() {
    let pg = sandbox(30);
    let proxy = Proxy::start(&pg, &PoolSpec::default());
    let out = run_within(
        Command::new("python3")
            .arg(client_script("pg_psycopg.py"))
            .arg(proxy.url()),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "pg_psycopg.py failed ({}):\n{}\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(stdout(&out), "OK");
    assert!(
        app_connections(&pg) <= 5,
        "more app connections than pool_size"
    );
}

#[test]
fn node_postgres_pool_through_transaction_mode() {
    let pg = sandbox(30);
    let spec = PoolSpec::default();
    let proxy = Proxy::start(&pg, &spec);
    let sampler = PeakSampler::start(&pg);
    let out = run_within(
        Command::new("node")
            .arg(client_script("node/pg_basic.js"))
            .arg(proxy.url())
            .current_dir(client_script("node")),
        Duration::from_secs(120),
    );
    let (peak, _) = sampler.finish();
    eprintln!("node-postgres pg.Pool max 20 through poolguard (pool_size 5): peak app connections = {peak}");
    assert!(
        out.status.success(),
        "pg_basic.js failed ({}):\n{}\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(stdout(&out), "OK");
    assert!(peak <= spec.pool_size as u64, "peak {peak} > pool_size");
}

/// Session mode: the client owns its server and sees its identity and parameters exactly
/// (BackendKeyData pid = pg_backend_pid() = NOTIFY sender; standard_conforming_strings as the
/// server uses it, set by SET and at startup), while cancels still route through poolguard.
#[test]
fn session_mode_shows_the_servers_own_identity() {
    let pg = sandbox(30);
    let spec = PoolSpec {
        mode: "session",
        pool_size: 3,
        ..PoolSpec::default()
    };
    let proxy = Proxy::start(&pg, &spec);
    let out = poolguard_e2e::mysql::python(
        "pg_session_identity.py",
        &[proxy.url()],
        std::time::Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    // Transaction mode: a pinned listener's own NOTIFYs name its BackendKeyData's process.
    let tx = Proxy::start(&pg, &PoolSpec::default());
    let out = poolguard_e2e::mysql::python(
        "pg_session_identity.py",
        &[tx.url(), "transaction".into()],
        std::time::Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out), "OK");
}

/// Transaction mode: settings in a client's startup packet (here `PGOPTIONS`, the `options`
/// parameter) follow it to every server its transactions run on, and reach no other client.
#[test]
fn startup_settings_follow_the_client_in_transaction_mode() {
    let pg = sandbox(30);
    let spec = PoolSpec {
        pool_size: 1,
        ..PoolSpec::default()
    };
    let proxy = Proxy::start(&pg, &spec);
    let with_options = |port: u16| {
        run_pg(
            psql_command(port)
                .env(
                    "PGOPTIONS",
                    "-c statement_timeout=1234 -c search_path=a,public",
                )
                .arg("-c")
                .arg("SHOW statement_timeout")
                .arg("-c")
                .arg("SHOW search_path"),
        )
    };
    let through = with_options(proxy.port);
    assert!(through.status.success(), "{}", stderr(&through));
    let direct = with_options(pg.port());
    assert_eq!(
        stdout(&through),
        stdout(&direct),
        "through poolguard vs direct"
    );
    assert!(
        stdout(&through).starts_with("1234ms\n"),
        "{}",
        stdout(&through)
    );
    // The next client on the same (only) server has the server's defaults.
    let plain = psql(proxy.port, "SHOW statement_timeout");
    assert_eq!(stdout(&plain), "0", "{}", stderr(&plain));
}

/// A reported parameter is announced (ParameterStatus) only when its value changes from what
/// the client was last told, as the server does: poolguard bringing a server that served
/// another application back to this client's `application_name` is nothing new to it (psycopg's
/// own suite traces a first query and saw a ParameterStatus the server would not send). The
/// same exchange against the server directly shows none either. Both modes, one server.
#[test]
fn no_parameter_status_for_a_value_the_client_already_has() {
    use bytes::BytesMut;
    use poolguard_e2e::rawpg::RawPg;
    let pg = sandbox(20);
    let first_query = |port: u16| {
        let mut other = RawPg::login(port, USER, PASSWORD, DB);
        other.query("SET application_name = 'another'").unwrap();
        drop(other);
        let mut c = RawPg::login(port, USER, PASSWORD, DB);
        let mut m = BytesMut::new();
        poolguard_pg::frontend::query(&mut m, "SELECT 1");
        c.send(&m);
        c.read_until_ready()
            .iter()
            .filter(|m| m.tag == b'S')
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(first_query(pg.port()), Vec::<String>::new(), "direct");
    for mode in ["session", "transaction"] {
        let proxy = Proxy::start(&pg, &PoolSpec::one_server(mode));
        assert_eq!(first_query(proxy.port), Vec::<String>::new(), "{mode}");
    }
}

/// A notification that reaches its listener after the notifying client has left still names
/// the pid that client was given (transaction mode, where that pid is poolguard's), as a
/// server names a backend that has exited. The listener holds a transaction open until the
/// notifier is gone (an event: the client gauge), so the notification comes after.
#[test]
fn a_notification_names_its_sender_after_the_sender_left() {
    use bytes::BytesMut;
    use poolguard_e2e::admin::{http_get, metric, wait_for};
    use poolguard_e2e::rawpg::RawPg;
    let pg = sandbox(20);
    let admin = free_port();
    let proxy = Proxy::start(&pg, &PoolSpec::with_admin(admin));
    let mut listener = RawPg::login(proxy.port, USER, PASSWORD, DB);
    listener.query("LISTEN chan").unwrap();
    listener.query("BEGIN").unwrap();
    let mut notifier = RawPg::login(proxy.port, USER, PASSWORD, DB);
    let sender = notifier.backend_pid;
    notifier.query("NOTIFY chan, 'hi'").unwrap();
    drop(notifier);
    wait_for(Duration::from_secs(30), "the notifier gone", || {
        (metric(
            &http_get(admin, "/metrics"),
            "poolguard_clients_connected",
            &[],
        ) == Some(1.0))
        .then_some(())
    });
    let mut m = BytesMut::new();
    poolguard_pg::frontend::query(&mut m, "COMMIT");
    listener.send(&m);
    let note = std::iter::from_fn(|| listener.read())
        .find(|m| m.tag == b'A')
        .expect("the notification");
    let pid = i32::from_be_bytes(note.body[..4].try_into().unwrap());
    assert_eq!(pid, sender, "the sender's pid as it was given");
}
